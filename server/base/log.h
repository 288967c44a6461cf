// Structured event logs: one line per event on stderr, with the IDs it concerns
// (job_id, latent_id, tenant, ...). Two formats, chosen once at start (i2s_server
// --log-format): "text", for people (`i2s_server: job_finished job_id=job_... state=...`),
// and "json", one JSON object per line for log pipelines
// (`{"time":"2026-12-01T11:46:32.123Z","event":"job_finished","job_id":"job_...",...}`).
// Never put secrets (tokens) in a field. Thread-safe: a line is written with one call.
#ifndef I2S_SERVER_BASE_LOG_H_
#define I2S_SERVER_BASE_LOG_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace i2s {

enum class LogFormat { kText, kJson };
void SetLogFormat(LogFormat format);
LogFormat GetLogFormat();

// Builds one event line; writes it when destroyed.
//   LogEvent("job_finished").Str("job_id", id).Int("steps", 100);
class LogEvent {
 public:
  explicit LogEvent(absl::string_view event);
  ~LogEvent();
  LogEvent(const LogEvent&) = delete;
  LogEvent& operator=(const LogEvent&) = delete;

  LogEvent& Str(absl::string_view key, absl::string_view value);
  LogEvent& Int(absl::string_view key, int64_t value);
  LogEvent& Num(absl::string_view key, double value);

  // The line as it will be written (without the newline), for tests.
  std::string Line() const;

 private:
  struct Field {
    std::string key, value;
    bool quoted;  // a string (JSON-quoted), not a number
  };
  std::string event_;
  std::vector<Field> fields_;
};

// A free-form note (start-up, shutdown, warnings): "i2s_server: <message>" as text, or
// {"time":...,"event":"note","message":...} as JSON.
void LogNote(absl::string_view message);

}  // namespace i2s

#endif  // I2S_SERVER_BASE_LOG_H_

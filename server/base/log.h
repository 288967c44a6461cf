// Structured event logs: one line per event on stderr, with the IDs it concerns
// (job_id, latent_id, tenant, ...). Two formats, chosen once at start (i2s_server
// --log-format): "text", for people (`i2s_server: job_finished job_id=job_... state=...`),
// and "json", one JSON object per line for log pipelines
// (`{"time":"2026-12-01T11:46:32.123Z","event":"job_finished","job_id":"job_...",...}`).
// Never put secrets (tokens) in a field. Thread-safe: a line is written with one call.
#ifndef I2S_SERVER_BASE_LOG_H_
#define I2S_SERVER_BASE_LOG_H_

#include <chrono>
#include <cstdint>
#include <mutex>
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

// A bound on the lines of one kind of event that callers can cause at will (refused calls):
// at most `burst` lines per `period`; the rest are dropped and counted, and the next line
// that is written says how many were (`suppressed=N`), so a flood of bad calls costs a few
// lines, not one each. Thread-safe.
//   if (int64_t dropped; auth_log.Admit(&dropped)) {
//     LogEvent e("auth_refused"); ...; if (dropped) e.Int("suppressed", dropped);
//   }
class LogRateLimit {
 public:
  using Clock = std::chrono::steady_clock;
  LogRateLimit(int burst, Clock::duration period) : burst_(burst), period_(period) {}

  // Whether a line may be written now; when it may, *suppressed is how many lines were
  // dropped since the last one written.
  bool Admit(int64_t* suppressed) { return Admit(Clock::now(), suppressed); }
  bool Admit(Clock::time_point now, int64_t* suppressed);

 private:
  const int burst_;
  const Clock::duration period_;
  std::mutex mu_;
  Clock::time_point window_start_{};
  int written_in_window_ = 0;
  int64_t dropped_ = 0;
};

// A free-form note (start-up, shutdown, warnings): "i2s_server: <message>" as text, or
// {"time":...,"event":"note","message":...} as JSON.
void LogNote(absl::string_view message);

}  // namespace i2s

#endif  // I2S_SERVER_BASE_LOG_H_

#include "server/base/log.h"

#include <atomic>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace i2s {
namespace {

std::atomic<LogFormat> g_format{LogFormat::kText};

// A JSON string literal (RFC 8259): quotes, backslashes and control characters escaped.
std::string JsonQuote(absl::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

// key=value for the text format: bare when it is one plain word, else JSON-quoted.
std::string TextValue(absl::string_view v, bool quoted) {
  if (!quoted) return std::string(v);
  bool plain = !v.empty();
  for (unsigned char c : v) {
    if (c <= ' ' || c == '"' || c == '=' || c >= 0x7f) plain = false;
  }
  return plain ? std::string(v) : JsonQuote(v);
}

}  // namespace

void SetLogFormat(LogFormat format) { g_format = format; }
LogFormat GetLogFormat() { return g_format; }

LogEvent::LogEvent(absl::string_view event) : event_(event) {}

LogEvent::~LogEvent() {
  const std::string line = Line() + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

LogEvent& LogEvent::Str(absl::string_view key, absl::string_view value) {
  fields_.push_back({std::string(key), std::string(value), true});
  return *this;
}

LogEvent& LogEvent::Int(absl::string_view key, int64_t value) {
  fields_.push_back({std::string(key), absl::StrCat(value), false});
  return *this;
}

LogEvent& LogEvent::Num(absl::string_view key, double value) {
  if (!std::isfinite(value)) return Str(key, absl::StrCat(value));  // JSON has no NaN
  fields_.push_back({std::string(key), absl::StrFormat("%.6g", value), false});
  return *this;
}

bool LogRateLimit::Admit(Clock::time_point now, int64_t* suppressed) {
  std::lock_guard<std::mutex> lock(mu_);
  if (written_in_window_ == 0 || now - window_start_ >= period_) {
    window_start_ = now;
    written_in_window_ = 0;
  }
  if (written_in_window_ >= burst_) {
    ++dropped_;
    return false;
  }
  ++written_in_window_;
  *suppressed = dropped_;
  dropped_ = 0;
  return true;
}

void LogNote(absl::string_view message) {
  if (g_format == LogFormat::kJson) {
    LogEvent("note").Str("message", message);
    return;
  }
  const std::string line = absl::StrCat("i2s_server: ", message, "\n");
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

std::string LogEvent::Line() const {
  if (g_format == LogFormat::kJson) {
    std::string out = absl::StrCat(
        "{\"time\":",
        JsonQuote(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone())),
        ",\"event\":", JsonQuote(event_));
    for (const Field& f : fields_) {
      absl::StrAppend(&out, ",", JsonQuote(f.key), ":", f.quoted ? JsonQuote(f.value) : f.value);
    }
    return out + "}";
  }
  std::string out = absl::StrCat("i2s_server: ", event_);
  for (const Field& f : fields_)
    absl::StrAppend(&out, " ", f.key, "=", TextValue(f.value, f.quoted));
  return out;
}

}  // namespace i2s

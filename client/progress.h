// What i2s_client shows while jobs run: the state of each followed job (JobView, built
// from its JobEvents), one line per job for a terminal (a live bar, redrawn in place by
// LiveDisplay) or for a log (plain text, no control codes), and the small formatters
// behind them. Nothing here talks to the server.
#ifndef I2S_CLIENT_PROGRESS_H_
#define I2S_CLIENT_PROGRESS_H_

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "i2s/v1/i2s.pb.h"

namespace i2s::client {

// How text may be drawn on a stream: colours (ANSI SGR) and Unicode bar glyphs.
struct TextStyle {
  bool color = false;
  bool unicode = false;
};

// "0.4s", "47s", "1m03s", "2h05m"; "-" for a negative or non-finite value.
std::string FormatDuration(double seconds);
// A bar `width` cells wide filled to `fraction` (clamped to [0, 1]).
std::string ProgressBar(double fraction, int width, bool unicode);
// Number of terminal cells of UTF-8 `text` without escape codes (one per code point).
int VisibleWidth(const std::string& text);

// The client's view of one job, updated event by event.
struct JobView {
  std::string label;   // what the user named: the image path, or the job ID
  std::string job_id;  // once known
  v1::JobState state = v1::JOB_STATE_UNSPECIFIED;  // UNSPECIFIED = not yet accepted
  int queue_position = 0;
  std::string device;
  int resumed_from_step = 0;
  int step = 0;
  int total_steps = 0;
  bool noise_phase = false;
  int batch_size = 0;
  double loss = 0, psnr_db = 0, steps_per_second = 0, eta_seconds = -1, elapsed_seconds = 0;
  std::string latent_id;    // once SUCCEEDED
  std::string stop_reason;  // once SUCCEEDED
  v1::EmbedMetrics final_metrics;
  std::string error;  // why it FAILED / was CANCELLED, or why following it failed
  int64_t last_sequence = 0;
  bool detached = false;  // the user stopped following it; it runs on

  bool finished() const {
    return state == v1::SUCCEEDED || state == v1::FAILED || state == v1::CANCELLED;
  }
  // Takes in one event of this job (heartbeats only advance nothing).
  void Apply(const v1::JobEvent& event);
  // Takes in a Job resource (GetJob), for a job followed from its current state.
  void ApplyJob(const v1::Job& job);
};

// One line for a live terminal display, at most `width` cells.
std::string LiveLine(const JobView& job, int label_width, int width, const TextStyle& style);
// A plain log line for a state change or progress, without control codes.
std::string LogLine(const JobView& job);

// Draws a block of lines on a terminal and redraws it in place. Not thread-safe: one
// thread draws. The stream must be a terminal (the caller checks).
class LiveDisplay {
 public:
  explicit LiveDisplay(std::FILE* out) : out_(out) {}
  // Replaces the block drawn last with `lines`.
  void Draw(const std::vector<std::string>& lines);
  // Erases the block (before a prompt); the next Draw starts afresh.
  void Erase();

 private:
  std::FILE* out_;
  int drawn_ = 0;
};

// Terminal width of `fd`, or `fallback` when it is not a terminal.
int TerminalWidth(int fd, int fallback = 100);

}  // namespace i2s::client

#endif  // I2S_CLIENT_PROGRESS_H_

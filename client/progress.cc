#include "client/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace i2s::client {

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "-";
  if (seconds < 10) return absl::StrFormat("%.1fs", seconds);
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  if (s < 60) return absl::StrFormat("%ds", s);
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
}

std::string ProgressBar(double fraction, int width, bool unicode) {
  if (!std::isfinite(fraction)) fraction = 0;
  fraction = std::clamp(fraction, 0.0, 1.0);
  const int full = static_cast<int>(fraction * width);
  std::string bar;
  if (unicode) {
    for (int i = 0; i < width; ++i) bar += i < full ? "\u2588" : "\u2591";  // █ ░
  } else {
    bar = "[";
    for (int i = 0; i < width - 2; ++i) {
      const int at = static_cast<int>(fraction * (width - 2));
      bar += i < at ? '=' : (i == at && fraction > 0 && fraction < 1 ? '>' : ' ');
    }
    bar += "]";
  }
  return bar;
}

int VisibleWidth(const std::string& text) {
  int width = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const unsigned char c = text[i];
    if (c == 0x1b) {  // skip an SGR sequence: ESC [ ... m
      while (i < text.size() && text[i] != 'm') ++i;
      continue;
    }
    if ((c & 0xC0) != 0x80) ++width;  // count UTF-8 lead bytes only
  }
  return width;
}

void JobView::Apply(const v1::JobEvent& event) {
  if (!event.job_id().empty()) job_id = event.job_id();
  if (event.sequence() > 0) last_sequence = std::max(last_sequence, event.sequence());
  switch (event.kind_case()) {
    case v1::JobEvent::kQueued:
      state = v1::QUEUED;
      queue_position = event.queued().position();
      break;
    case v1::JobEvent::kRunning:
      state = v1::RUNNING;
      queue_position = 0;
      device = event.running().device();
      resumed_from_step = event.running().resumed_from_step();
      if (resumed_from_step > step) step = resumed_from_step;
      break;
    case v1::JobEvent::kProgress: {
      const auto& p = event.progress();
      state = v1::RUNNING;
      queue_position = 0;
      step = p.step();
      total_steps = p.total_steps();
      noise_phase = p.noise_phase();
      batch_size = p.batch_size();
      loss = p.metrics().loss();
      psnr_db = p.metrics().psnr_db();
      steps_per_second = p.steps_per_second();
      eta_seconds = p.eta_seconds();
      elapsed_seconds = p.elapsed_seconds();
      break;
    }
    case v1::JobEvent::kSucceeded:
      state = v1::SUCCEEDED;
      latent_id = event.succeeded().latent_id();
      stop_reason = event.succeeded().stop_reason();
      final_metrics = event.succeeded().metrics();
      psnr_db = final_metrics.psnr_db();
      loss = final_metrics.loss();
      step = final_metrics.steps();
      break;
    case v1::JobEvent::kFailed:
      state = v1::FAILED;
      error = event.failed().message();
      break;
    case v1::JobEvent::kCancelled:
      state = v1::CANCELLED;
      step = event.cancelled().step();
      error = event.cancelled().message();
      break;
    case v1::JobEvent::kHeartbeat:
    case v1::JobEvent::KIND_NOT_SET:
      break;
  }
}

void JobView::ApplyJob(const v1::Job& job) {
  job_id = job.id();
  state = job.state();
  queue_position = job.queue_position();
  device = job.device();
  step = job.step();
  total_steps = job.total_steps();
  loss = job.metrics().loss();
  psnr_db = job.metrics().psnr_db();
  latent_id = job.latent_id();
  if (state == v1::SUCCEEDED) final_metrics = job.metrics();
  error = job.error_message();
  last_sequence = std::max(last_sequence, job.last_sequence());
}

namespace {

constexpr char kReset[] = "\x1b[0m";
constexpr char kGreen[] = "\x1b[32m";
constexpr char kRed[] = "\x1b[31m";
constexpr char kYellow[] = "\x1b[33m";
constexpr char kDim[] = "\x1b[2m";
constexpr char kBold[] = "\x1b[1m";

// A line assembled from pieces, each optionally coloured; cut to a width on render.
class Line {
 public:
  Line(int width, const TextStyle& style) : width_(width), style_(style) {}
  Line& Add(std::string text, const char* color = nullptr) {
    pieces_.push_back({std::move(text), color});
    return *this;
  }
  std::string Render() const {
    std::string out;
    int used = 0;
    for (const auto& [text, color] : pieces_) {
      const int w = VisibleWidth(text);
      std::string piece = text;
      if (used + w > width_) {  // cut at the width, on a code point boundary
        piece.clear();
        int cells = 0;
        for (size_t i = 0; i < text.size(); ++i) {
          const unsigned char c = text[i];
          if ((c & 0xC0) != 0x80 && cells++ >= width_ - used) break;
          piece += text[i];
        }
      }
      if (style_.color && color != nullptr) {
        absl::StrAppend(&out, color, piece, kReset);
      } else {
        out += piece;
      }
      used += VisibleWidth(piece);
      if (used >= width_) break;
    }
    return out;
  }

 private:
  int width_;
  TextStyle style_;
  std::vector<std::pair<std::string, const char*>> pieces_;
};

// `text` cut to `width` cells by dropping its start ("...ng/face.png"), then padded.
std::string Fitted(const std::string& text, int width, bool unicode) {
  if (VisibleWidth(text) <= width) return text;
  const std::string ellipsis = unicode ? "\u2026" : "...";
  const int keep = std::max(0, width - VisibleWidth(ellipsis));
  // The last `keep` code points.
  size_t start = text.size();
  for (int cells = 0; start > 0 && cells < keep;) {
    --start;
    if ((static_cast<unsigned char>(text[start]) & 0xC0) != 0x80) ++cells;
  }
  return ellipsis + text.substr(start);
}

std::string Padded(const std::string& text, int width) {
  const int w = VisibleWidth(text);
  return w >= width ? text : text + std::string(width - w, ' ');
}

}  // namespace

std::string LiveLine(const JobView& job, int label_width, int width, const TextStyle& style) {
  Line line(width, style);
  line.Add(Padded(Fitted(job.label, label_width, style.unicode), label_width), kBold).Add("  ");
  const std::string check = style.unicode ? "\u2713 " : "ok ";
  const std::string cross = style.unicode ? "\u2717 " : "x ";
  if (job.detached && !job.finished()) {
    line.Add(absl::StrCat("detached: ", job.job_id, " keeps running"), kYellow);
    return line.Render();
  }
  switch (job.state) {
    case v1::JOB_STATE_UNSPECIFIED:
      line.Add(job.error.empty() ? "submitting" : cross + job.error,
               job.error.empty() ? kDim : kRed);
      break;
    case v1::QUEUED:
      line.Add(absl::StrCat("queued, position ", job.queue_position), kYellow)
          .Add(absl::StrCat("  ", job.job_id), kDim);
      break;
    case v1::RUNNING: {
      if (job.total_steps == 0) {
        line.Add(absl::StrCat("starting on ", job.device), kDim)
            .Add(absl::StrCat("  ", job.job_id), kDim);
        break;
      }
      const int bar_width = width >= 110 ? 24 : 12;
      line.Add(ProgressBar(static_cast<double>(job.step) / job.total_steps, bar_width,
                           style.unicode),
               kGreen)
          .Add(absl::StrFormat(" %*d/%d", static_cast<int>(std::to_string(job.total_steps).size()),
                               job.step, job.total_steps))
          .Add(absl::StrFormat("  loss %.4f  PSNR %5.2f dB", job.loss, job.psnr_db))
          .Add(absl::StrFormat("  %.1f steps/s  ETA %s", job.steps_per_second,
                               FormatDuration(job.eta_seconds)));
      if (job.noise_phase) line.Add("  noise", kDim);
      if (job.batch_size > 1) line.Add(absl::StrCat("  batch ", job.batch_size), kDim);
      break;
    }
    case v1::SUCCEEDED:
      line.Add(check + job.latent_id, kGreen)
          .Add(absl::StrFormat("  PSNR %.2f dB  %d steps (%s)", job.final_metrics.psnr_db(),
                               job.final_metrics.steps(), job.stop_reason));
      break;
    case v1::FAILED:
      line.Add(cross + "failed: " + job.error, kRed);
      break;
    case v1::CANCELLED:
      line.Add(absl::StrCat("cancelled at step ", job.step), kYellow);
      break;
    default:
      break;
  }
  return line.Render();
}

std::string LogLine(const JobView& job) {
  const std::string who = job.label == job.job_id || job.job_id.empty()
                              ? job.label
                              : absl::StrCat(job.label, " (", job.job_id, ")");
  if (job.detached && !job.finished()) return absl::StrCat(who, ": detached; it keeps running");
  switch (job.state) {
    case v1::JOB_STATE_UNSPECIFIED:
      return absl::StrCat(who, ": submitting");
    case v1::QUEUED:
      return absl::StrCat(who, ": queued at position ", job.queue_position);
    case v1::RUNNING:
      if (job.total_steps == 0) return absl::StrCat(who, ": running on ", job.device);
      return absl::StrFormat("%s: step %d/%d  loss %.4f  PSNR %.2f dB  %.1f steps/s  ETA %s%s", who,
                             job.step, job.total_steps, job.loss, job.psnr_db, job.steps_per_second,
                             FormatDuration(job.eta_seconds),
                             job.noise_phase ? "  (noise phase)" : "");
    case v1::SUCCEEDED:
      return absl::StrFormat("%s: succeeded: %s  PSNR %.2f dB after %d steps (%s)", who,
                             job.latent_id, job.final_metrics.psnr_db(), job.final_metrics.steps(),
                             job.stop_reason);
    case v1::FAILED:
      return absl::StrCat(who, ": failed: ", job.error);
    case v1::CANCELLED:
      return absl::StrCat(who, ": cancelled at step ", job.step);
    default:
      return who;
  }
}

void LiveDisplay::Draw(const std::vector<std::string>& lines) {
  std::string out;
  if (drawn_ > 0) absl::StrAppend(&out, "\x1b[", drawn_, "F");  // to the block's first line
  for (const std::string& line : lines) absl::StrAppend(&out, "\x1b[2K", line, "\n");
  for (int i = static_cast<int>(lines.size()); i < drawn_; ++i) out += "\x1b[2K\n";
  const int extra = drawn_ - static_cast<int>(lines.size());
  if (extra > 0) absl::StrAppend(&out, "\x1b[", extra, "F");
  drawn_ = static_cast<int>(lines.size());
  std::fwrite(out.data(), 1, out.size(), out_);
  std::fflush(out_);
}

void LiveDisplay::Erase() {
  if (drawn_ == 0) return;
  std::string out = absl::StrCat("\x1b[", drawn_, "F");
  for (int i = 0; i < drawn_; ++i) out += "\x1b[2K\n";
  absl::StrAppend(&out, "\x1b[", drawn_, "F");
  drawn_ = 0;
  std::fwrite(out.data(), 1, out.size(), out_);
  std::fflush(out_);
}

int TerminalWidth(int fd, int fallback) {
  winsize ws{};
  if (isatty(fd) && ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return fallback;
}

}  // namespace i2s::client

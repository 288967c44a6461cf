#include "server/jobs/event_cursor.h"

#include <algorithm>
#include <iterator>

#include "server/jobs/scheduler_internal.h"

namespace i2s {

EventCursor::EventCursor(std::shared_ptr<Job> job, int64_t after_sequence, int coalesce_backlog)
    : job_(std::move(job)),
      coalesce_backlog_(coalesce_backlog),
      next_sequence_(after_sequence + 1) {}

EventCursor::~EventCursor() = default;

std::optional<JobEvent> EventCursor::Next() {
  std::lock_guard<std::mutex> lock(mu_);
  if (done_) return std::nullopt;
  std::lock_guard<std::mutex> job_lock(job_->mu);
  const std::deque<JobEvent>& events = job_->events;
  if (events.empty()) return std::nullopt;
  // The first event at or after the reader's position (the log may have dropped some).
  auto it =
      std::lower_bound(events.begin(), events.end(), next_sequence_,
                       [](const JobEvent& e, int64_t sequence) { return e.sequence < sequence; });
  if (it == events.end()) {
    // A reader who asked for events after the end of a finished job (a sequence number
    // from another replica's stream, say) still gets the end, never an endless wait.
    if (events.back().terminal()) {
      done_ = true;
      return events.back();
    }
    return std::nullopt;
  }
  const int64_t last = job_->next_sequence - 1;
  if (last - next_sequence_ + 1 > coalesce_backlog_) {
    // The first lifecycle event, or else the latest progress.
    while (std::next(it) != events.end() && it->kind == JobEvent::Kind::kProgress) ++it;
  }
  JobEvent ev = *it;
  next_sequence_ = ev.sequence + 1;
  if (ev.terminal()) done_ = true;
  return ev;
}

bool EventCursor::done() const {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

absl::Status EventCursor::closed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return closed_;
}

int64_t EventCursor::last_sequence() const {
  std::lock_guard<std::mutex> lock(mu_);
  return next_sequence_ - 1;
}

void EventCursor::SetWake(std::function<void()> wake) {
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    wake_ = std::move(wake);
  }
  Wake();
}

void EventCursor::Close() {
  std::lock_guard<std::mutex> lock(wake_mu_);
  wake_ = nullptr;
}

void EventCursor::Wake() {
  std::lock_guard<std::mutex> lock(wake_mu_);
  if (wake_) wake_();
}

void EventCursor::Shutdown(const absl::Status& why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_.ok()) closed_ = why;
  }
  Wake();
}

}  // namespace i2s

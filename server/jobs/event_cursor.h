// EventCursor: a reader's position in one job's event log (the scheduler's Job keeps the
// log; scheduler_internal.h).
#ifndef I2S_SERVER_JOBS_EVENT_CURSOR_H_
#define I2S_SERVER_JOBS_EVENT_CURSOR_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "absl/status/status.h"
#include "server/jobs/job.h"

namespace i2s {

class Job;

// A reader's position in one job's event stream. Next() hands out events in order,
// coalescing progress for a reader that is far behind; the wake callback is called
// (from the producing thread, without scheduler locks held) whenever there may be
// something new. Thread-safe.
class EventCursor {
 public:
  ~EventCursor();
  // The next event, or nullopt if none is ready.
  std::optional<JobEvent> Next();
  // True once the terminal event has been handed out.
  bool done() const;
  // Not OK once the stream cannot go on (the server is shutting down).
  absl::Status closed() const;
  int64_t last_sequence() const;
  // Sets the callback; it is called once right away if events are pending.
  void SetWake(std::function<void()> wake);
  // Detaches: no wake call is in progress or will be made after this returns.
  void Close();

 private:
  friend class Job;
  friend class Scheduler;
  EventCursor(std::shared_ptr<Job> job, int64_t after_sequence, int coalesce_backlog);
  void Wake();
  void Shutdown(const absl::Status& why);

  std::shared_ptr<Job> job_;
  const int coalesce_backlog_;
  mutable std::mutex mu_;  // guards the fields below
  int64_t next_sequence_;  // the first sequence not handed out
  bool done_ = false;
  absl::Status closed_;
  std::mutex wake_mu_;  // held while calling wake_
  std::function<void()> wake_;
};

}  // namespace i2s

#endif  // I2S_SERVER_JOBS_EVENT_CURSOR_H_

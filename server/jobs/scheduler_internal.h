// What the scheduler's files share (scheduler.cc: the calls; device_worker.cc: the device
// loop; store_writer.cc: the workers' store writes and final records; replication.cc:
// leases, expiry and other replicas' jobs): the in-memory Job with its event log, a
// worker's and a device task's state, and the helpers between records and events.
// Internal to server/jobs.
#ifndef I2S_SERVER_JOBS_SCHEDULER_INTERNAL_H_
#define I2S_SERVER_JOBS_SCHEDULER_INTERNAL_H_

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/engine/embed_batch.h"
#include "server/jobs/event_cursor.h"
#include "server/jobs/job.h"
#include "server/jobs/scheduler.h"
#include "server/store/store.h"

namespace i2s {
namespace scheduler_internal {

using Clock = std::chrono::steady_clock;

int64_t NowMs();

JobRecord WithoutBlobs(JobRecord r);

// The metrics of a finished job's stored result (JobRecord::result); zeros if unreadable.
LatentMetrics MetricsFromJson(const std::string& s);

// What an owner publishes of a running job for the other replicas (JobRecord::progress).
struct Progress {
  int step = 0;
  LatentMetrics metrics;
  std::string device;
  int64_t next_sequence = 0;  // of the owner's event log when published
};

std::string ProgressJson(const Progress& p);
std::optional<Progress> ProgressFromJson(const std::string& s);

// The terminal event of a finished job, rebuilt from its stored record.
JobEvent TerminalEventOf(const JobRecord& r, LatentStore* store);

}  // namespace scheduler_internal

// One job: its inputs, stored record, live progress and event log.
class Job {
 public:
  // The log keeps every lifecycle event and the newest `progress_kept` progress events.
  Job(JobRecord record, EmbedJobSpec spec, int progress_kept)
      : spec(std::move(spec)),
        record(std::move(record)),
        progress_kept_(std::max(1, progress_kept)) {
    id = this->record.id;
    tenant = this->record.tenant;
    next_sequence = this->record.next_sequence;
    total_steps = this->record.total_steps > 0
                      ? this->record.total_steps
                      : this->spec.options.steps + this->spec.options.noise_steps;
  }

  // Appends an event (sequence and time assigned here) and wakes the readers.
  void Emit(JobEvent ev) {
    std::vector<std::shared_ptr<EventCursor>> wake;
    {
      std::lock_guard<std::mutex> lock(mu);
      ev.job_id = id;
      ev.sequence = next_sequence++;
      ev.time_unix_ms = scheduler_internal::NowMs();
      // Only the newest preview is kept: replays get the metrics of recent steps but not
      // every picture.
      if (!ev.preview_png.empty()) {
        for (JobEvent& old : events) old.preview_png.clear();
      }
      if (ev.kind == JobEvent::Kind::kProgress && ++progress_events_ > progress_kept_) {
        // A bounded log: the oldest progress event goes (a reader that far behind is
        // coalesced to the newest progress anyway, EventCursor::Next). Lifecycle events
        // are few and all stay, so any replay is a history in order, with gaps only
        // between progress events.
        auto oldest = std::find_if(events.begin(), events.end(), [](const JobEvent& e) {
          return e.kind == JobEvent::Kind::kProgress;
        });
        events.erase(oldest);
        --progress_events_;
      }
      events.push_back(std::move(ev));
      for (auto it = cursors.begin(); it != cursors.end();) {
        if (auto c = it->lock()) {
          wake.push_back(std::move(c));
          ++it;
        } else {
          it = cursors.erase(it);
        }
      }
    }
    for (auto& c : wake) c->Wake();
  }

  std::vector<std::shared_ptr<EventCursor>> Cursors() {
    std::lock_guard<std::mutex> lock(mu);
    std::vector<std::shared_ptr<EventCursor>> out;
    for (auto& w : cursors) {
      if (auto c = w.lock()) out.push_back(std::move(c));
    }
    return out;
  }

  std::string tenant;  // never changes: read without mu
  std::string id;
  // Read without locks: set at creation, changed only by Retire (which drops its tensors
  // once no worker uses the job), under mu.
  EmbedJobSpec spec;
  std::optional<EmbedCheckpoint> resume;  // from the store, consumed when it starts

  std::mutex mu;                // guards the fields below
  JobRecord record;             // without blobs
  std::deque<JobEvent> events;  // in sequence order, with gaps where progress was dropped
  int64_t next_sequence = 1;
  int step = 0, total_steps = 0;
  LatentMetrics metrics;
  std::string device;
  bool cancel_requested = false;
  std::string cancel_reason;
  bool lost = false;  // another replica took it over (Abandon): nothing of it is stored
  std::vector<std::weak_ptr<EventCursor>> cursors;

  // The lease thread only.
  scheduler_internal::Clock::time_point claimed_at =
      scheduler_internal::Clock::now();  // when this process took the job
  int published_step = -1;               // of the last PublishProgress

  // Worker-thread only.
  EmbedBatch* batch = nullptr;
  int handle = -1;
  scheduler_internal::Clock::time_point started;
  int start_step = 0;
  double seconds_per_step = 0;  // exponential moving average
  scheduler_internal::Clock::time_point last_preview;
  std::string pending_preview;

 private:
  const int progress_kept_;
  int progress_events_ = 0;  // in `events` (guarded by mu)
};

struct Scheduler::Task {
  std::function<absl::Status(int)> fn;
  absl::Time deadline;
  std::function<void(absl::Status)> done;
  std::string tenant;
  std::function<bool()> cancelled;  // may be null
};

struct Scheduler::Worker {
  int index = 0;
  std::string device;
  // Image-steps per second over the last steps (EWMA), for the metrics.
  std::atomic<double> steps_per_second{0};
  std::thread thread;
  std::deque<std::shared_ptr<Task>> tasks;                     // guarded by mu_
  std::vector<std::shared_ptr<Job>> active;                    // guarded by mu_
  std::map<std::string, std::unique_ptr<EmbedBatch>> batches;  // worker thread only
  double last_step_seconds = 0;  // the last StepBatches' time (worker thread only)
};

}  // namespace i2s

#endif  // I2S_SERVER_JOBS_SCHEDULER_INTERNAL_H_

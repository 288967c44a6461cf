// The scheduler: embedding jobs from submission to stored latent.
//
// - A bounded FIFO queue of jobs (Submit fails with ResourceExhausted when full).
// - One worker thread per device. A worker keeps an active set of up to max_batch jobs
//   in EmbedBatches (one per model and option set) and advances every batch one
//   optimiser step per turn; jobs join from the queue and leave when done between steps
//   (continuous batching). Short tasks (renders, edits: RunTask) run between steps, ahead
//   of embedding work, so they never wait for an embedding to finish.
// - Every job's state lives in the Store; running jobs checkpoint every
//   checkpoint_every steps. Create() resumes what a previous process left queued or
//   running (from its last checkpoint). The workers' writes go through a bounded queue
//   to a writer thread, and no scheduler lock is held across a store call, so a slow
//   store does not slow the steps; what a write reports (a terminal event) follows it.
// - Each job keeps its event log in memory for WatchJob replays (EventCursor): every
//   lifecycle event and the newest coalesce_backlog progress events; the newest
//   keep_finished finished jobs keep theirs.
// - Replicas (a shared store, PostgreSQL): every unfinished job has an owner, the replica
//   that runs it, holding a lease it renews every lease_ms / 5. A replica claims what it
//   creates and what a dead replica left (an expired lease), and gives up a job whose
//   lease another replica, or a later process under its own replica ID, took (writes are
//   fenced by owner and lease epoch). Owners publish their jobs' progress every
//   follow_poll_ms; the other replicas serve GetJob and ListJobs from the store and follow
//   WatchJob by polling it; a CancelJob reaches the owner through the store.
//
// Thread-safe: every public method may be called from any thread (gRPC handlers). The
// registry and store are borrowed and must outlive the scheduler.
#ifndef I2S_SERVER_JOBS_SCHEDULER_H_
#define I2S_SERVER_JOBS_SCHEDULER_H_

#include <condition_variable>
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
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/base/metrics.h"
#include "server/jobs/event_cursor.h"
#include "server/jobs/job.h"
#include "server/jobs/model_registry.h"
#include "server/store/store.h"

namespace i2s {

// prefix + 16 random hex digits ("job_…", "lat_…"). Thread-safe.
std::string NewRandomId(absl::string_view prefix);

struct SchedulerOptions {
  int queue_limit = 64;         // queued (not running) jobs
  int tenant_queue_limit = 32;  // queued jobs of one tenant
  int max_batch = 8;            // images stepped together per device
  int checkpoint_every = 50;    // steps between checkpoints of a running job
  int keep_finished = 256;      // finished jobs whose event logs stay in memory
  // Fair use of the devices.
  // When a batch has room, admission takes the queued jobs' tenants in turn; a tenant with
  // this many jobs running on all devices is passed over while another tenant's job waits
  // (admitted anyway when none does). 0: no cap.
  int tenant_max_running = 4;
  // Device tasks (RunTask: renders and edits): at most task_queue_limit wait per device,
  // and tenant_task_limit of one tenant's on all devices; beyond them RunTask refuses.
  int task_queue_limit = 64;
  int tenant_task_limit = 16;
  // The share of device time tasks get while embedding steps wait too: between two
  // optimiser steps, tasks run for at most task_share / (1 - task_share) of the last step's
  // time (and always at least one), so neither renders nor jobs starve the other.
  double task_share = 0.5;
  // A reader this many events behind gets only the latest progress event (lifecycle
  // events are never skipped); a job's log keeps this many progress events.
  int coalesce_backlog = 256;
  // This server among the replicas sharing the store; unique per replica (the default
  // of --replica-id is the host name).
  std::string replica_id = "local";
  int lease_ms = 15000;      // a dead replica's jobs are taken over after this long
  int follow_poll_ms = 500;  // how often WatchJob of another replica's job polls the store
  // Retention (0 = kept for ever): finished jobs, with the request IDs naming them, are
  // deleted this long after they ended; request IDs this long after they were claimed.
  // The lease thread expires them every expire_every_ms.
  int64_t job_retention_ms = int64_t{7} * 24 * 3600 * 1000;
  int64_t request_id_retention_ms = int64_t{7} * 24 * 3600 * 1000;
  int expire_every_ms = 60000;
};

// A consistent snapshot of a job: its stored record plus live progress.
struct JobView {
  JobRecord record;        // blobs (spec, checkpoint, result) left empty
  int queue_position = 0;  // 1-based while queued
  int step = 0, total_steps = 0;
  LatentMetrics metrics;  // latest step
  std::string device;
  int64_t last_sequence = 0;
};

struct JobList {
  std::vector<JobView> jobs;
  std::string next_page_token;
};

class Job;

class Scheduler {
 public:
  // Claims and resumes unfinished jobs from `store` (all of them on a store that is not
  // shared; on a shared one, this replica's and those of expired leases) and starts one
  // worker per registry device, and the lease thread.
  // With `metrics`, registers its metrics there (queue, jobs, step times, steps/s and
  // batch occupancy per device, device memory); the registry must outlive the scheduler.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Create(const SchedulerOptions& options,
                                                           const ModelRegistry* registry,
                                                           Store* store,
                                                           MetricsRegistry* metrics = nullptr);
  ~Scheduler();  // Shutdown()

  struct Submission {
    std::string job_id;
    bool existing = false;  // a repeat of an earlier request_id: nothing was created
  };
  // Queues a job of `tenant` (spec validated by the caller; options are re-validated
  // here). ResourceExhausted when the queue, or the tenant's share of it, is full;
  // Unavailable when shutting down. request_ids are per tenant.
  absl::StatusOr<Submission> Submit(EmbedJobSpec spec, const std::string& request_id,
                                    const std::string& request_hash,
                                    const std::string& tenant = "");

  absl::StatusOr<JobView> GetJob(const std::string& id);
  // `tenant` set: only that tenant's jobs.
  absl::StatusOr<JobList> ListJobs(const Page& page, const std::vector<JobState>& states,
                                   const std::optional<std::string>& tenant = std::nullopt);
  // Cancels a queued or running job (a running one stops before its next step).
  // FailedPrecondition if it already ended.
  absl::StatusOr<JobView> Cancel(const std::string& id, const std::string& why = "CancelJob");
  // A cursor over the job's events with sequence > after_sequence. NotFound if unknown.
  absl::StatusOr<std::shared_ptr<EventCursor>> Watch(const std::string& id, int64_t after_sequence);

  // Runs `task(device_index)` on a worker between optimiser steps (within
  // options.task_share of the device's time while jobs run), then calls `done` with the
  // task's status: DeadlineExceeded without running it if it could not start before
  // `deadline`, Cancelled without running it if `cancelled` (may be null) says its caller
  // has gone, ResourceExhausted at once (on the calling thread) when the device's task
  // queue or `tenant`'s share of the queues is full, Unavailable when shutting down.
  // `done` must not block.
  void RunTask(std::function<absl::Status(int device_index)> task, absl::Time deadline,
               std::function<void(absl::Status)> done, const std::string& tenant = "",
               std::function<bool()> cancelled = nullptr);

  int queued() const;
  int running() const;
  const SchedulerOptions& options() const { return options_; }

  // Graceful stop: refuses new work, checkpoints running jobs (they resume on restart),
  // ends every cursor with Unavailable, joins the workers. Idempotent.
  void Shutdown();

 private:
  struct Worker;
  struct Task;
  Scheduler(const SchedulerOptions& options, const ModelRegistry* registry, Store* store);
  absl::Status Restore();
  // The migration of jobs stored before total_steps was a column (Store::
  // JobsWithoutTotalSteps): fills it in from each one's spec, which releases the spec of
  // the finished ones.
  absl::Status FillInTotalSteps();
  // Queues a job claimed from the store: resumes it from its checkpoint, or ends it
  // (failed: cannot resume; cancelled: a cancel was acknowledged before).
  absl::Status Resume(JobRecord r);
  // The lease thread: renews leases, hands cancels from other replicas to the jobs,
  // gives up lost jobs, publishes progress, adopts expired jobs, feeds followers.
  void HousekeeperLoop();
  void RenewAndAdopt();
  // Deletes what outlived its retention, in the store and in memory (finished jobs).
  void ExpireOld();
  // Publishes the progress of every running job that moved (shared stores; every
  // follow_poll_ms, so other replicas' watchers see it about as often as they poll).
  void PublishRunning();
  void PublishProgress(const std::shared_ptr<Job>& job);
  // Drops a job another replica now owns, without writing anything of it; its watchers
  // get Unavailable and can watch again.
  void Abandon(const std::shared_ptr<Job>& job, const std::string& owner);
  // WatchJob of a job that another replica runs: a mirror fed from the store.
  struct Follower {
    std::shared_ptr<Job> mirror;
    std::string progress;  // the last published progress seen
    JobState state = JobState::kQueued;
  };
  std::shared_ptr<Job> Follow(const JobRecord& r, int64_t after_sequence);
  void PollFollowers();
  void RegisterMetrics(MetricsRegistry* metrics);
  void CountFinished(JobState state);
  // A finished job whose final record the store refused (a full disk): it stays running
  // (no terminal event, GetJob says RUNNING) until a retry stores the record; then the
  // record is applied and the terminal event emitted. The writer retries every second;
  // what is unsaved at shutdown resumes on the next start. Nothing final is announced
  // before it is stored.
  struct Unsaved {
    std::shared_ptr<Job> job;
    JobRecord record;
    JobEvent event;
    absl::Status error;  // why the store refused the record
    // The latent of a succeeded job: stored with the record in one transaction, fenced by
    // the job's owner and lease epoch (Store::FinishJobWithLatent; an AlreadyExists of
    // this job's latent from an earlier try counts as stored).
    std::optional<LatentRecord> latent;
  };
  // Stores u.record, with u.latent if any, and, if that worked, applies the record to the
  // job, emits u.event and returns true; else sets u.error and returns false. A latent
  // the store can never take (InvalidArgument, or its ID taken by another job's) makes
  // the job fail instead. Fenced out (another replica or process holds the job now): the
  // job is abandoned, nothing of it stored, and it returns true.
  bool Conclude(Unsaved& u);
  // Conclude, or else log job_unsaved once and keep `u` in unsaved_ for the retries.
  void ConcludeOrKeep(Unsaved u);
  void RetryUnsaved();
  // The device workers' store writes (a job's start, checkpoints, final records) run on
  // the writer thread, in the order given, so a worker never waits for the store (unless
  // kWriteQueueLimit writes are already waiting). A final record is announced (terminal
  // event) by the writer once stored. The writer also retries unsaved_ every second.
  void Write(std::function<void()> write);
  void WriterLoop();
  // Makes `job` live, appends it to the queue and emits its `queued` event (mu_ held).
  void EnqueueLocked(const std::shared_ptr<Job>& job);
  void WorkerLoop(Worker* w);
  void StartJob(Worker* w, const std::shared_ptr<Job>& job);
  void StepBatches(Worker* w);
  void FinishJob(Worker* w, const std::shared_ptr<Job>& job, EmbedResult result);
  void CheckpointJob(const std::shared_ptr<Job>& job, const EmbedCheckpoint& checkpoint);
  void Retire(const std::shared_ptr<Job>& job);
  std::shared_ptr<Job> FindLive(const std::string& id);
  JobView ViewOf(Job& job);
  int QueuePositionLocked(const Job& job) const;
  // The next queued job to run (mu_ held): tenants in turn, each under
  // options_.tenant_max_running; null if none may start now.
  std::shared_ptr<Job> NextAdmissionLocked();
  // running_ and running_by_tenant_, as a job starts (+1) or leaves a worker (-1).
  void CountRunningLocked(const Job& job, int delta);

  const SchedulerOptions options_;
  const ModelRegistry* registry_;
  Store* store_;

  mutable std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  bool stopping_ = false;
  std::deque<std::shared_ptr<Job>> queue_;
  // Submissions between their queue check and their job's entry in queue_ (their store
  // writes run without mu_): they count against the queue limits.
  int submitting_ = 0;
  std::map<std::string, int> submitting_by_tenant_;
  std::map<std::string, std::shared_ptr<Job>> live_;  // queued, running, recently finished
  std::deque<std::string> finished_order_;            // retirement order of finished live_ jobs
  std::vector<std::unique_ptr<Worker>> workers_;
  int running_ = 0;
  std::map<std::string, int> running_by_tenant_;
  std::string last_admitted_tenant_;  // admission's turn among tenants
  std::vector<Unsaved> unsaved_;      // finished jobs whose final record is not stored yet
  std::vector<Follower> followers_;
  std::condition_variable housekeeper_cv_;
  std::thread housekeeper_;

  static constexpr size_t kWriteQueueLimit = 256;
  std::mutex writes_mu_;  // guards the two fields below
  std::deque<std::function<void()>> writes_;
  bool writes_stop_ = false;  // Shutdown: the writer drains the queue and ends
  std::condition_variable writes_cv_, writes_room_cv_;
  std::thread writer_;
  bool lease_warned_ = false;  // the lease thread logged that it cannot reach the store
  // The lease thread only: jobs it claimed that Resume could not queue (the store refused
  // its write), by ID, with the epoch they were claimed at; retried while it holds.
  std::map<std::string, int64_t> unresumed_;

  // Metrics (null without a registry); the objects belong to the registry.
  MetricsRegistry::Histogram* step_seconds_ = nullptr;
  MetricsRegistry::Counter* image_steps_ = nullptr;
  MetricsRegistry::Counter* jobs_finished_ = nullptr;
};

}  // namespace i2s

#endif  // I2S_SERVER_JOBS_SCHEDULER_H_

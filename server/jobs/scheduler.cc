#include "server/jobs/scheduler.h"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <iostream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/base/log.h"
#include "server/base/private_detail.h"
#include "server/engine/torch_util.h"
#include "server/jobs/scheduler_internal.h"

namespace i2s {

using scheduler_internal::MetricsFromJson;
using scheduler_internal::NowMs;
using scheduler_internal::ProgressFromJson;
using scheduler_internal::TerminalEventOf;
using scheduler_internal::WithoutBlobs;

std::string NewRandomId(absl::string_view prefix) {
  // 64 bits from the kernel's CSPRNG (getrandom), not a seeded generator whose later
  // outputs follow from a few observed IDs: another tenant's IDs cannot be predicted.
  uint64_t bits = 0;
  size_t got = 0;
  while (got < sizeof(bits)) {
    const ssize_t n = getrandom(reinterpret_cast<char*>(&bits) + got, sizeof(bits) - got, 0);
    if (n > 0) {
      got += static_cast<size_t>(n);
    } else if (n < 0 && errno != EINTR) {
      // Only on a kernel without getrandom (older than 3.17: ENOSYS); std::random_device
      // reads the same kernel source through /dev/urandom there.
      std::random_device device;
      bits = (static_cast<uint64_t>(device()) << 32) ^ device();
      break;
    }
  }
  char buf[17];
  snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(bits));
  return absl::StrCat(prefix, buf);
}

namespace {

// The view of a job that is not in memory: what its stored record says (and, for a job
// another replica runs, the progress it published).
JobView ViewOfRecord(JobRecord r) {
  JobView v;
  v.metrics = MetricsFromJson(r.result);
  v.step = v.metrics.steps;
  v.total_steps = std::max(0, r.total_steps);
  v.last_sequence = r.next_sequence - 1;
  if (!IsTerminal(r.state)) {
    if (auto p = ProgressFromJson(r.progress)) {
      v.step = p->step;
      v.metrics = p->metrics;
      v.device = p->device;
      v.last_sequence = std::max(v.last_sequence, p->next_sequence - 1);
    }
  }
  r.result.clear();
  r.progress.clear();
  v.record = std::move(r);
  return v;
}

}  // namespace

Scheduler::Scheduler(const SchedulerOptions& options, const ModelRegistry* registry, Store* store)
    : options_(options), registry_(registry), store_(store) {}

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Create(const SchedulerOptions& options,
                                                             const ModelRegistry* registry,
                                                             Store* store,
                                                             MetricsRegistry* metrics) {
  if (options.queue_limit < 1) return absl::InvalidArgumentError("queue_limit: must be >= 1");
  if (options.tenant_queue_limit < 1) {
    return absl::InvalidArgumentError("tenant_queue_limit: must be >= 1");
  }
  if (options.max_batch < 1) return absl::InvalidArgumentError("max_batch: must be >= 1");
  if (options.checkpoint_every < 1) {
    return absl::InvalidArgumentError("checkpoint_every: must be >= 1");
  }
  if (options.lease_ms < 500) return absl::InvalidArgumentError("lease_ms: must be >= 500");
  if (options.follow_poll_ms < 10) {
    return absl::InvalidArgumentError("follow_poll_ms: must be >= 10");
  }
  if (options.replica_id.empty()) return absl::InvalidArgumentError("replica_id: must be set");
  std::unique_ptr<Scheduler> s(new Scheduler(options, registry, store));
  RETURN_IF_ERROR(s->Restore());
  const auto names = registry->device_names();
  for (size_t i = 0; i < names.size(); ++i) {
    auto w = std::make_unique<Worker>();
    w->index = static_cast<int>(i);
    w->device = names[i];
    s->workers_.push_back(std::move(w));
  }
  if (metrics != nullptr) s->RegisterMetrics(metrics);
  for (auto& w : s->workers_) {
    Worker* raw = w.get();
    Scheduler* self = s.get();
    w->thread = std::thread([self, raw] { self->WorkerLoop(raw); });
  }
  Scheduler* self = s.get();
  s->writer_ = std::thread([self] { self->WriterLoop(); });
  s->housekeeper_ = std::thread([self] { self->HousekeeperLoop(); });
  return s;
}

Scheduler::~Scheduler() { Shutdown(); }

absl::Status Scheduler::FillInTotalSteps() {
  // Jobs with their specs (up to megabytes each): a few at a time.
  constexpr int kBatch = 8;
  int filled = 0;
  while (true) {
    ASSIGN_OR_RETURN(std::vector<JobRecord> jobs, store_->JobsWithoutTotalSteps(kBatch));
    for (const JobRecord& r : jobs) {
      auto spec = ParseSpec(r.spec);
      // An unreadable spec gives 0, what a job shows whose steps are unknown, and is not
      // tried again.
      const int total = spec.ok() ? spec->options.steps + spec->options.noise_steps : 0;
      absl::Status set = store_->SetTotalSteps(r.id, total);
      if (!set.ok() && !absl::IsNotFound(set)) return set;  // NotFound: expired meanwhile
      ++filled;
    }
    if (static_cast<int>(jobs.size()) < kBatch) break;
  }
  if (filled > 0) LogEvent("jobs_migrated").Int("jobs", filled).Str("column", "total_steps");
  return absl::OkStatus();
}

absl::Status Scheduler::Restore() {
  RETURN_IF_ERROR(Annotate(FillInTotalSteps(), "recording the total steps of older jobs"));
  // A shared store: the jobs of this replica's previous process too, whatever their
  // lease says; the claim moves their epoch on, so that process can no longer write them.
  ASSIGN_OR_RETURN(
      std::vector<JobRecord> claimed,
      store_->ClaimJobs(options_.replica_id, NowMs(), options_.lease_ms,
                        store_->shared() ? ClaimScope::kExpiredAndOwn : ClaimScope::kAll));
  for (JobRecord& r : claimed) RETURN_IF_ERROR(Resume(std::move(r)));
  return absl::OkStatus();
}

absl::Status Scheduler::Resume(JobRecord r) {
  auto spec = ParseSpec(r.spec);
  std::optional<EmbedCheckpoint> checkpoint;
  absl::Status bad = spec.status();
  if (bad.ok() && !r.checkpoint.empty()) {
    auto c = ParseCheckpoint(r.checkpoint);
    if (c.ok()) {
      checkpoint = *std::move(c);
    } else {
      bad = c.status();
    }
  }
  if (bad.ok() && !registry_->Find(spec->model).ok()) {
    bad = absl::FailedPreconditionError(
        absl::StrCat("model \"", spec->model, "\" is not served any more"));
  }
  if (!bad.ok()) {
    r.state = JobState::kFailed;
    r.error_code = static_cast<int>(bad.code());
    r.error_message = absl::StrCat("cannot resume after restart: ", bad.message());
    r.finished_unix_ms = NowMs();
    return store_->UpdateJob(r);
  }
  if (r.cancel_requested) {  // acknowledged before the restart: honoured, not resumed
    r.state = JobState::kCancelled;
    r.error_code = static_cast<int>(absl::StatusCode::kCancelled);
    r.error_message = "cancelled (CancelJob, acknowledged before the server restarted)";
    LogEvent("job_finished").Str("job_id", r.id).Str("tenant", r.tenant).Str("state", "cancelled");
    r.finished_unix_ms = NowMs();
    r.next_sequence += spec->options.steps + spec->options.noise_steps + 16;
    return store_->UpdateJob(WithoutBlobs(r));
  }
  // Events after the last stored checkpoint were lost with the process. A run emits
  // at most one event per step plus a few lifecycle ones, so skipping that many keeps
  // sequence numbers unique for re-attaching clients, even when no checkpoint of the
  // last run could be stored (a full disk).
  r.next_sequence +=
      spec->options.steps + spec->options.noise_steps + options_.checkpoint_every + 16;
  r.state = JobState::kQueued;
  RETURN_IF_ERROR(store_->UpdateJob(WithoutBlobs(r)));
  LogEvent("job_claimed")
      .Str("job_id", r.id)
      .Str("tenant", r.tenant)
      .Str("replica", options_.replica_id)
      .Int("checkpoint_step", checkpoint ? checkpoint->step : 0);
  auto job = std::make_shared<Job>(WithoutBlobs(r), *std::move(spec), options_.coalesce_backlog);
  job->resume = std::move(checkpoint);
  if (job->resume) job->step = job->resume->step;
  std::lock_guard<std::mutex> lock(mu_);
  EnqueueLocked(job);
  cv_.notify_all();
  return absl::OkStatus();
}

absl::StatusOr<Scheduler::Submission> Scheduler::Submit(EmbedJobSpec spec,
                                                        const std::string& request_id,
                                                        const std::string& request_hash,
                                                        const std::string& tenant) {
  RETURN_IF_ERROR(Annotate(spec.options.Validate(), "options"));
  ASSIGN_OR_RETURN(const ModelInfo* model, registry_->Find(spec.model));
  spec.model = model->name;
  // No scheduler lock across the store's round trips or the spec's serialisation: a
  // repeated request ID is looked up, and the job written (with its key, in one
  // transaction), while the workers go on; the queue's room is reserved meanwhile.
  if (!request_id.empty()) {
    auto found = store_->FindRequest(RequestScope("Embed", tenant), request_id, request_hash);
    if (found.ok()) return Submission{*found, true};
    if (!absl::IsNotFound(found.status())) return found.status();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return absl::UnavailableError("the server is shutting down");
    const int waiting = static_cast<int>(queue_.size()) + submitting_;
    if (waiting >= options_.queue_limit) {
      return absl::ResourceExhaustedError(
          absl::StrCat("queue full: ", waiting, " jobs waiting (limit ", options_.queue_limit,
                       ", --queue-limit); retry later"));
    }
    const int tenant_waiting =
        static_cast<int>(std::count_if(
            queue_.begin(), queue_.end(),
            [&tenant](const std::shared_ptr<Job>& j) { return j->tenant == tenant; })) +
        submitting_by_tenant_[tenant];
    if (tenant_waiting >= options_.tenant_queue_limit) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "queue full for tenant \"", tenant, "\": ", tenant_waiting, " jobs waiting (limit ",
          options_.tenant_queue_limit, ", --tenant-queue-limit); retry later"));
    }
    ++submitting_;
    ++submitting_by_tenant_[tenant];
  }
  // The reservation ends with this call, whatever its outcome.
  absl::Cleanup release = [this, &tenant] {
    std::lock_guard<std::mutex> lock(mu_);
    --submitting_;
    if (--submitting_by_tenant_[tenant] == 0) submitting_by_tenant_.erase(tenant);
  };
  JobRecord r;
  r.id = NewRandomId("job_");
  r.request_id = request_id;
  r.tenant = tenant;
  r.model = spec.model;
  r.state = JobState::kQueued;
  r.spec = SerializeSpec(spec);
  r.total_steps = spec.options.steps + spec.options.noise_steps;
  r.created_unix_ms = NowMs();
  r.owner = options_.replica_id;
  // The first lease: lease_ms from now (by the database's clock on PostgreSQL, see
  // store.h), at epoch 1 (ClaimJobs moves it on).
  r.lease_expires_unix_ms = r.created_unix_ms + options_.lease_ms;
  r.lease_epoch = 1;
  if (!request_id.empty()) {
    // The key and the job in one transaction; another call (here or on another replica)
    // may have claimed the key since the look-up above: its job is the answer then.
    ASSIGN_OR_RETURN(std::string claimed,
                     store_->CreateJobWithClaim(
                         r, RequestClaim{RequestScope("Embed", tenant), request_id, request_hash}));
    if (claimed != r.id) return Submission{claimed, true};
  } else {
    RETURN_IF_ERROR(store_->CreateJob(r));
  }
  auto job =
      std::make_shared<Job>(WithoutBlobs(std::move(r)), std::move(spec), options_.coalesce_backlog);
  LogEvent("job_queued")
      .Str("job_id", job->id)
      .Str("tenant", tenant)
      .Str("model", job->spec.model)
      .Int("steps", job->total_steps);
  {
    std::lock_guard<std::mutex> lock(mu_);
    // The reservation becomes the queued job, in one step.
    std::move(release).Cancel();
    --submitting_;
    if (--submitting_by_tenant_[tenant] == 0) submitting_by_tenant_.erase(tenant);
    // Stored, so accepted: after a shutdown that began meanwhile, the next start runs it.
    if (stopping_) return Submission{job->id, false};
    EnqueueLocked(job);
  }
  cv_.notify_all();
  return Submission{job->id, false};
}

void Scheduler::EnqueueLocked(const std::shared_ptr<Job>& job) {
  live_[job->id] = job;
  queue_.push_back(job);
  JobEvent ev;
  ev.kind = JobEvent::Kind::kQueued;
  ev.position = static_cast<int>(queue_.size());
  job->Emit(std::move(ev));
}

std::shared_ptr<Job> Scheduler::FindLive(const std::string& id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(id);
  return it == live_.end() ? nullptr : it->second;
}

int Scheduler::QueuePositionLocked(const Job& job) const {
  for (size_t i = 0; i < queue_.size(); ++i) {
    if (queue_[i].get() == &job) return static_cast<int>(i) + 1;
  }
  return 0;
}

JobView Scheduler::ViewOf(Job& j) {
  int position;
  {
    std::lock_guard<std::mutex> lock(mu_);
    position = QueuePositionLocked(j);
  }
  std::lock_guard<std::mutex> lock(j.mu);
  JobView v;
  v.record = j.record;
  v.queue_position = position;
  v.step = j.step;
  v.total_steps = j.total_steps;
  v.metrics = j.metrics;
  v.device = j.device;
  v.last_sequence = j.next_sequence - 1;
  return v;
}

absl::StatusOr<JobView> Scheduler::GetJob(const std::string& id) {
  if (auto job = FindLive(id)) return ViewOf(*job);
  ASSIGN_OR_RETURN(JobRecord r, store_->GetJob(id, /*with_blobs=*/false));
  return ViewOfRecord(std::move(r));
}

absl::StatusOr<JobList> Scheduler::ListJobs(const Page& page, const std::vector<JobState>& states,
                                            const std::optional<std::string>& tenant) {
  ASSIGN_OR_RETURN(JobPage p, store_->ListJobs(page, states, tenant));
  JobList out;
  out.next_page_token = p.next_page_token;
  for (JobRecord& r : p.jobs) {
    if (auto job = FindLive(r.id)) {
      out.jobs.push_back(ViewOf(*job));
      continue;
    }
    out.jobs.push_back(ViewOfRecord(std::move(r)));
  }
  return out;
}

absl::StatusOr<JobView> Scheduler::Cancel(const std::string& id, const std::string& why) {
  std::shared_ptr<Job> job;
  bool was_queued = false;
  size_t queue_position = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(id);
    if (it != live_.end()) {
      job = it->second;
      for (auto q = queue_.begin(); q != queue_.end(); ++q) {
        if (q->get() == job.get()) {
          queue_position = static_cast<size_t>(q - queue_.begin());
          queue_.erase(q);
          was_queued = true;
          break;
        }
      }
    }
  }
  if (job == nullptr) {
    ASSIGN_OR_RETURN(JobRecord r, store_->GetJob(id, /*with_blobs=*/false));
    if (IsTerminal(r.state)) {
      return absl::FailedPreconditionError(
          absl::StrCat("job \"", id, "\" already ended (", JobStateName(r.state), ")"));
    }
    // Another replica runs it: the request goes through the store, and the owner stops
    // the job at its next lease renewal (within lease_ms / 5).
    RETURN_IF_ERROR(Annotate(store_->MarkCancelRequested(id), "recording the cancel"));
    r.cancel_requested = true;
    return ViewOfRecord(std::move(r));
  }
  if (was_queued) {
    JobRecord r, before;
    {
      std::lock_guard<std::mutex> lock(job->mu);
      before = job->record;
      job->record.state = JobState::kCancelled;
      job->record.error_code = static_cast<int>(absl::StatusCode::kCancelled);
      job->record.error_message = absl::StrCat("cancelled while queued (", why, ")");
      job->record.finished_unix_ms = NowMs();
      job->record.next_sequence = job->next_sequence + 1;
      r = job->record;
    }
    if (absl::Status stored = store_->UpdateJob(r); !stored.ok()) {
      // Not stored, so not done: the job stays queued where it was, and the caller hears
      // why (a cancel it was told about must survive a restart).
      {
        std::lock_guard<std::mutex> lock(job->mu);
        job->record = before;
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        queue_.insert(
            queue_.begin() + static_cast<std::ptrdiff_t>(std::min(queue_position, queue_.size())),
            job);
      }
      cv_.notify_all();
      return Annotate(stored, "recording the cancel (the job is still queued)");
    }
    CountFinished(JobState::kCancelled);
    JobEvent ev;
    ev.kind = JobEvent::Kind::kCancelled;
    ev.step = job->step;
    ev.status = absl::CancelledError(r.error_message);
    job->Emit(std::move(ev));
    Retire(job);
    return ViewOf(*job);
  }
  {
    std::lock_guard<std::mutex> lock(job->mu);
    if (IsTerminal(job->record.state)) {
      return absl::FailedPreconditionError(
          absl::StrCat("job \"", id, "\" already ended (", JobStateName(job->record.state), ")"));
    }
    job->cancel_requested = true;
    job->cancel_reason = why;
    job->record.cancel_requested = true;
  }
  cv_.notify_all();
  // Recorded, so the cancel is honoured even if the process dies before the next step.
  RETURN_IF_ERROR(Annotate(store_->MarkCancelRequested(id),
                           "recording the cancel (the job still stops at its next step)"));
  return ViewOf(*job);
}

absl::StatusOr<std::shared_ptr<EventCursor>> Scheduler::Watch(const std::string& id,
                                                              int64_t after_sequence) {
  if (after_sequence < 0) {
    return absl::InvalidArgumentError("after_sequence: must be >= 0");
  }
  std::shared_ptr<Job> job = FindLive(id);
  std::optional<JobState> follow;  // set: `job` mirrors another replica's job
  if (job == nullptr) {
    ASSIGN_OR_RETURN(JobRecord r, store_->GetJob(id, /*with_blobs=*/false));
    if (!IsTerminal(r.state)) {
      job = Follow(r, after_sequence);  // another replica runs it
      follow = r.state;
    } else {
      // An older job: its log is gone; replay is the terminal event rebuilt from the store.
      r.next_sequence = std::max<int64_t>(r.next_sequence - 1, 1);
      job = std::make_shared<Job>(WithoutBlobs(r), EmbedJobSpec{}, options_.coalesce_backlog);
      job->Emit(TerminalEventOf(r, store_));
    }
  }
  auto cursor =
      std::shared_ptr<EventCursor>(new EventCursor(job, after_sequence, options_.coalesce_backlog));
  {
    std::lock_guard<std::mutex> lock(job->mu);
    job->cursors.push_back(cursor);
  }
  bool stopping;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping = stopping_;
    // Registered once its reader is attached: a mirror without readers is dropped.
    if (follow && !stopping) followers_.push_back({job, "", *follow});
  }
  if (stopping) cursor->Shutdown(absl::UnavailableError("the server is shutting down"));
  return cursor;
}

void Scheduler::RunTask(std::function<absl::Status(int)> fn, absl::Time deadline,
                        std::function<void(absl::Status)> done, const std::string& tenant,
                        std::function<bool()> cancelled) {
  auto task = std::make_shared<Task>();
  task->fn = std::move(fn);
  task->deadline = deadline;
  task->done = std::move(done);
  task->tenant = tenant;
  task->cancelled = std::move(cancelled);
  absl::Status refused;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      refused = absl::UnavailableError("the server is shutting down");
    } else {
      Worker* best = workers_[0].get();
      int tenant_tasks = 0;
      for (auto& w : workers_) {
        if (w->tasks.size() + w->active.size() < best->tasks.size() + best->active.size()) {
          best = w.get();
        }
        for (const auto& t : w->tasks) tenant_tasks += t->tenant == tenant ? 1 : 0;
      }
      if (static_cast<int>(best->tasks.size()) >= options_.task_queue_limit) {
        refused = absl::ResourceExhaustedError(
            absl::StrCat("device queue full: ", best->tasks.size(),
                         " renders and edits waiting for ", best->device, " (limit ",
                         options_.task_queue_limit, ", --device-queue-limit); retry later"));
      } else if (tenant_tasks >= options_.tenant_task_limit) {
        refused = absl::ResourceExhaustedError(
            absl::StrCat("device queue full for tenant \"", tenant, "\": ", tenant_tasks,
                         " renders and edits waiting (limit ", options_.tenant_task_limit,
                         ", --tenant-device-queue-limit); retry later"));
      } else {
        best->tasks.push_back(std::move(task));
      }
    }
  }
  if (task != nullptr) {  // not queued
    task->done(refused);
    return;
  }
  cv_.notify_all();
}

void Scheduler::CountRunningLocked(const Job& job, int delta) {
  running_ += delta;
  int& n = running_by_tenant_[job.tenant];
  n += delta;
  if (n <= 0) running_by_tenant_.erase(job.tenant);
}

std::shared_ptr<Job> Scheduler::NextAdmissionLocked() {
  // Tenants in turn: the first tenant after the last admitted one (by name, cyclically)
  // with a queued job, its oldest. Tenants under options_.tenant_max_running go first; one
  // at its cap is admitted only when no other tenant waits (the cap shares the devices,
  // it does not leave them idle).
  const int cap = options_.tenant_max_running;
  std::shared_ptr<Job> after[2], first[2];  // [0] under the cap, [1] any
  for (const auto& job : queue_) {
    bool under = true;
    if (cap > 0) {
      auto it = running_by_tenant_.find(job->tenant);
      under = it == running_by_tenant_.end() || it->second < cap;
    }
    for (int k = under ? 0 : 1; k < 2; ++k) {
      if (job->tenant > last_admitted_tenant_ &&
          (after[k] == nullptr || job->tenant < after[k]->tenant)) {
        after[k] = job;
      }
      if (first[k] == nullptr || job->tenant < first[k]->tenant) first[k] = job;
    }
  }
  std::shared_ptr<Job> pick = after[0] != nullptr   ? after[0]
                              : first[0] != nullptr ? first[0]
                              : after[1] != nullptr ? after[1]
                                                    : first[1];
  if (pick == nullptr) return nullptr;
  queue_.erase(std::find(queue_.begin(), queue_.end(), pick));
  last_admitted_tenant_ = pick->tenant;
  CountRunningLocked(*pick, +1);
  return pick;
}

void Scheduler::CountFinished(JobState state) {
  if (jobs_finished_ != nullptr) jobs_finished_->Inc({JobStateName(state)});
}

void Scheduler::RegisterMetrics(MetricsRegistry* m) {
  using Series = std::vector<std::pair<MetricsRegistry::Labels, double>>;
  m->AddGauge("i2s_queue_length", "Embedding jobs waiting for a device.", {}, [this] {
    return Series{{{}, static_cast<double>(queued())}};
  });
  m->AddGauge("i2s_jobs", "Embedding jobs of this process by state (queued, running).", {"state"},
              [this] {
                return Series{{{"queued"}, static_cast<double>(queued())},
                              {{"running"}, static_cast<double>(running())}};
              });
  jobs_finished_ = m->AddCounter("i2s_jobs_finished_total",
                                 "Embedding jobs that ended, by final state.", {"state"});
  step_seconds_ =
      m->AddHistogram("i2s_embed_step_seconds", "Time of one optimiser step of a batch, by device.",
                      {"device"}, MetricsRegistry::ExponentialBuckets(0.001, 2, 16));
  image_steps_ =
      m->AddCounter("i2s_embed_image_steps_total",
                    "Optimiser steps taken, one per image per step, by device.", {"device"});
  m->AddGauge(
      "i2s_device_steps_per_second",
      "Image-steps per second over the last steps (moving average), by device.", {"device"},
      [this] {
        Series out;
        std::lock_guard<std::mutex> lock(mu_);
        for (const auto& w : workers_) {  // an idle device does 0 steps/s
          out.push_back({{w->device}, w->active.empty() ? 0.0 : w->steps_per_second.load()});
        }
        return out;
      });
  m->AddGauge(
      "i2s_batch_occupancy", "Images being optimised on the device, as a fraction of --max-batch.",
      {"device"}, [this] {
        Series out;
        std::lock_guard<std::mutex> lock(mu_);
        for (const auto& w : workers_) {
          out.push_back({{w->device}, static_cast<double>(w->active.size()) / options_.max_batch});
        }
        return out;
      });
  m->AddGauge("i2s_device_memory_bytes",
              "Device memory held by LibTorch's allocator, by device (CUDA only).", {"device"},
              [this] {
                Series out;
                for (const auto& w : workers_) {
                  auto bytes = DeviceMemoryInUse(registry_->devices()[w->index]);
                  if (bytes.ok()) out.push_back({{w->device}, static_cast<double>(*bytes)});
                }
                return out;
              });
}

int Scheduler::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(queue_.size());
}

int Scheduler::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return running_;
}

void Scheduler::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  housekeeper_cv_.notify_all();
  if (housekeeper_.joinable()) housekeeper_.join();
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.join();
  }
  {
    // The workers' last writes (checkpoints of the running jobs) are in the queue.
    std::lock_guard<std::mutex> lock(writes_mu_);
    writes_stop_ = true;
  }
  writes_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
  RetryUnsaved();  // a last try; what is still unsaved resumes on the next start
  std::vector<std::shared_ptr<Job>> jobs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, job] : live_) jobs.push_back(job);
    for (Follower& f : followers_) jobs.push_back(f.mirror);
    followers_.clear();
  }
  for (auto& job : jobs) {
    for (auto& c : job->Cursors()) {
      c->Shutdown(absl::UnavailableError(
          "the server is shutting down; the job resumes from its checkpoint when it restarts "
          "(WatchJob to follow it)"));
    }
  }
}

}  // namespace i2s

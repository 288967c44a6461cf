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
#include "server/base/log.h"
#include "server/base/private_detail.h"
#include "server/base/status_macros.h"
#include "server/engine/torch_util.h"
#include "server/formats/npy.h"
#include "server/imaging/image_io.h"
#include "server/imaging/prepare.h"

namespace i2s {
namespace {

using Clock = std::chrono::steady_clock;

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

}  // namespace

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

// The latent of job "job_X" is "lat_X": a job re-run after a crash between storing its
// latent and recording success finds its latent already there instead of making two.
std::string LatentIdForJob(const std::string& job_id) {
  return absl::StrCat("lat_", job_id.substr(job_id.find('_') + 1));
}

LatentMetrics MetricsOf(const StepMetrics& m, int steps) {
  return LatentMetrics{m.loss, m.mse, m.perceptual, m.psnr, steps, m.lpips};
}

std::string MetricsJson(const LatentMetrics& m) {
  return nlohmann::json{{"loss", m.loss}, {"mse", m.mse},     {"perceptual", m.perceptual},
                        {"psnr", m.psnr}, {"steps", m.steps}, {"lpips", m.lpips}}
      .dump();
}

LatentMetrics MetricsFromJson(const std::string& s) {
  LatentMetrics m;
  if (s.empty()) return m;
  try {
    auto j = nlohmann::json::parse(s);
    m.loss = j.at("loss");
    m.mse = j.at("mse");
    m.perceptual = j.at("perceptual");
    m.psnr = j.at("psnr");
    m.steps = j.at("steps");
    m.lpips = j.value("lpips", -1.0);
  } catch (const std::exception&) {
  }
  return m;
}

JobRecord WithoutBlobs(JobRecord r) {
  // Released, not just emptied: clear() keeps a spec's megabytes allocated.
  std::string().swap(r.spec);
  std::string().swap(r.checkpoint);
  return r;
}

// What an owner publishes of a running job for the other replicas (JobRecord::progress).
struct Progress {
  int step = 0;
  LatentMetrics metrics;
  std::string device;
  int64_t next_sequence = 0;  // of the owner's event log when published
};

std::string ProgressJson(const Progress& p) {
  return nlohmann::json{{"step", p.step},         {"loss", p.metrics.loss},
                        {"mse", p.metrics.mse},   {"perceptual", p.metrics.perceptual},
                        {"psnr", p.metrics.psnr}, {"lpips", p.metrics.lpips},
                        {"device", p.device},     {"next_sequence", p.next_sequence}}
      .dump();
}

std::optional<Progress> ProgressFromJson(const std::string& s) {
  if (s.empty()) return std::nullopt;
  try {
    auto j = nlohmann::json::parse(s);
    Progress p;
    p.step = j.at("step");
    p.metrics.loss = j.at("loss");
    p.metrics.mse = j.at("mse");
    p.metrics.perceptual = j.at("perceptual");
    p.metrics.psnr = j.at("psnr");
    p.metrics.lpips = j.value("lpips", -1.0);
    p.metrics.steps = p.step;
    p.device = j.at("device");
    p.next_sequence = j.at("next_sequence");
    return p;
  } catch (const std::exception&) {
    return std::nullopt;  // written by another release: shown without progress
  }
}

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

// The terminal event of a finished job, rebuilt from its stored record.
JobEvent TerminalEventOf(const JobRecord& r, LatentStore* store) {
  JobEvent ev;
  ev.metrics = MetricsFromJson(r.result);
  ev.step = ev.metrics.steps;
  if (r.state == JobState::kSucceeded) {
    ev.kind = JobEvent::Kind::kSucceeded;
    ev.latent_id = r.latent_id;
    // The alignment, if any, lives on with the latent (params_json).
    auto latent = store->GetLatent(r.latent_id, /*with_values=*/false);
    if (latent.ok()) ev.alignment_json = AlignmentOfLatentParams(latent->params_json);
  } else {
    ev.kind =
        r.state == JobState::kCancelled ? JobEvent::Kind::kCancelled : JobEvent::Kind::kFailed;
    ev.status = absl::Status(static_cast<absl::StatusCode>(r.error_code), r.error_message);
  }
  return ev;
}

}  // namespace

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
      ev.time_unix_ms = NowMs();
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
  Clock::time_point claimed_at = Clock::now();  // when this process took the job
  int published_step = -1;                      // of the last PublishProgress

  // Worker-thread only.
  EmbedBatch* batch = nullptr;
  int handle = -1;
  Clock::time_point started;
  int start_step = 0;
  double seconds_per_step = 0;  // exponential moving average
  Clock::time_point last_preview;
  std::string pending_preview;

 private:
  const int progress_kept_;
  int progress_events_ = 0;  // in `events` (guarded by mu)
};

// ----------------------------------------------------------------------- EventCursor

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

// ------------------------------------------------------------------------- Scheduler

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

bool Scheduler::Conclude(Unsaved& u) {
  absl::Status saved;
  if (u.latent.has_value()) {
    // The latent and the final record together, fenced by owner and lease epoch (an
    // AlreadyExists of this job's latent from an earlier try counts as stored).
    saved = store_->FinishJobWithLatent(u.record, *u.latent);
    if (absl::IsInvalidArgument(saved) || absl::IsAlreadyExists(saved)) {
      // The latent can never be stored (refused as such, or its ID taken by another
      // job's): the job fails instead, by the same fenced write of its record.
      const absl::Status shown = PublicStatus(Annotate(saved, "storing the latent"));
      u.record.state = JobState::kFailed;
      u.record.latent_id.clear();
      u.record.error_code = static_cast<int>(shown.code());
      u.record.error_message = std::string(shown.message());
      JobEvent failed;
      failed.kind = JobEvent::Kind::kFailed;
      failed.step = u.event.step;
      failed.metrics = u.event.metrics;
      failed.status = shown;
      u.event = std::move(failed);
      u.latent.reset();
      saved = store_->UpdateJob(u.record);
    }
  } else {
    saved = store_->UpdateJob(u.record);
  }
  if (absl::IsFailedPrecondition(saved)) {  // fenced: another replica owns the job now
    Abandon(u.job, "another replica");
    return true;
  }
  if (!saved.ok()) {
    u.error = std::move(saved);
    return false;
  }
  const std::shared_ptr<Job>& job = u.job;
  {
    std::lock_guard<std::mutex> lock(job->mu);
    job->record = std::move(u.record);
    job->record.result.clear();
  }
  CountFinished(job->record.state);
  {
    LogEvent done("job_finished");
    done.Str("job_id", job->id)
        .Str("tenant", job->tenant)
        .Str("state", JobStateName(job->record.state));
    if (!u.event.latent_id.empty()) done.Str("latent_id", u.event.latent_id);
    done.Int("steps", u.event.step)
        .Num("seconds", (job->record.finished_unix_ms - job->record.started_unix_ms) / 1000.0);
    if (!u.event.status.ok()) done.Str("error", u.event.status.message());
  }
  job->Emit(std::move(u.event));
  Retire(job);
  return true;
}

void Scheduler::ConcludeOrKeep(Unsaved u) {
  if (Conclude(u)) return;
  LogEvent("job_unsaved")
      .Str("job_id", u.record.id)
      .Str("tenant", u.record.tenant)
      .Str("state", JobStateName(u.record.state))
      .Str("error", u.error.message())
      .Str("note", "the job stays running until its final state is stored; retried every second");
  std::lock_guard<std::mutex> lock(mu_);
  unsaved_.push_back(std::move(u));
}

void Scheduler::RetryUnsaved() {
  std::vector<Unsaved> pending;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending.swap(unsaved_);
  }
  std::vector<Unsaved> still;
  for (Unsaved& u : pending) {
    const std::string id = u.record.id;
    if (Conclude(u)) {
      LogEvent("job_stored").Str("job_id", id);
    } else {
      still.push_back(std::move(u));
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (Unsaved& u : still) unsaved_.push_back(std::move(u));
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

void Scheduler::WorkerLoop(Worker* w) {
  while (true) {
    std::deque<std::shared_ptr<Task>> tasks;
    std::vector<std::shared_ptr<Job>> admit;
    bool stop;
    {
      std::unique_lock<std::mutex> lock(mu_);
      const auto ready = [&] {
        return stopping_ || !w->tasks.empty() || !w->active.empty() || !queue_.empty();
      };
      cv_.wait(lock, ready);
      stop = stopping_;
      tasks.swap(w->tasks);
      while (!stop && static_cast<int>(w->active.size() + admit.size()) < options_.max_batch) {
        std::shared_ptr<Job> next = NextAdmissionLocked();
        if (next == nullptr) break;
        admit.push_back(std::move(next));
      }
    }
    // Tasks between steps, within their share of the device while jobs wait for steps
    // (the first always runs); the rest go back to the front of the queue for the next
    // turn. A task whose deadline passed or whose caller left is answered unrun.
    const bool steps_wait = !w->active.empty() || !admit.empty();
    const double share = std::clamp(options_.task_share, 0.01, 0.99);
    const double budget = steps_wait ? w->last_step_seconds * share / (1 - share)
                                     : std::numeric_limits<double>::infinity();
    double spent = 0;
    int ran = 0;
    while (!tasks.empty()) {
      std::shared_ptr<Task> t = std::move(tasks.front());
      tasks.pop_front();
      if (stop) {
        t->done(absl::UnavailableError("the server is shutting down"));
      } else if (absl::Now() > t->deadline) {
        t->done(absl::DeadlineExceededError("the deadline passed while waiting for the device"));
      } else if (t->cancelled != nullptr && t->cancelled()) {
        t->done(absl::CancelledError("the caller went away before the device was free"));
      } else if (ran > 0 && spent >= budget) {
        tasks.push_front(std::move(t));
        std::lock_guard<std::mutex> lock(mu_);
        w->tasks.insert(w->tasks.begin(), std::make_move_iterator(tasks.begin()),
                        std::make_move_iterator(tasks.end()));
        tasks.clear();
      } else {
        const auto started = Clock::now();
        t->done(TorchCall("device task", [&] { return t->fn(w->index); }));
        spent += std::chrono::duration<double>(Clock::now() - started).count();
        ++ran;
      }
    }
    if (stop) {
      // Graceful stop: running jobs checkpoint and go back to queued for the next start.
      for (auto& job : w->active) {
        auto c = job->batch->Checkpoint(job->handle);
        if (c.ok()) CheckpointJob(job, *c);
        JobRecord r;
        {
          std::lock_guard<std::mutex> lock(job->mu);
          job->record.state = JobState::kQueued;
          job->record.next_sequence = job->next_sequence;
          r = job->record;
        }
        Write([this, r] { (void)store_->UpdateJob(r); });
      }
      std::lock_guard<std::mutex> lock(mu_);
      w->active.clear();
      w->batches.clear();
      return;
    }
    for (auto& job : admit) StartJob(w, job);
    const auto stepped = Clock::now();
    StepBatches(w);
    if (!w->batches.empty()) {
      w->last_step_seconds = std::chrono::duration<double>(Clock::now() - stepped).count();
    }
  }
}

void Scheduler::StartJob(Worker* w, const std::shared_ptr<Job>& job) {
  Generator* g = registry_->generator(w->index, job->spec.model);
  EmbedOptions opts = job->spec.options;
  opts.preview_every = 1;  // every step offers a preview; each job takes what it asked for
  opts.checkpoint_every = options_.checkpoint_every;
  // Jobs of one model share steps when the shared part of their options agrees; steps,
  // learning rates, loss weights and stop rules are each job's own (EmbedTarget::options).
  const std::string key = absl::StrCat(job->spec.model, "|", SharedOptionsKey(opts));
  auto& batch = w->batches[key];
  absl::Status status;
  if (batch == nullptr) {
    auto created =
        EmbedBatch::Create(g, registry_->vgg(w->index), opts, registry_->lpips(w->index));
    if (created.ok()) {
      batch = *std::move(created);
    } else {
      status = created.status();
    }
  }
  int handle = -1;
  if (status.ok()) {
    EmbedTarget target;
    target.image = job->spec.image;
    target.init_latent = job->spec.init_latent;
    target.seed = job->spec.seed;
    target.options = opts;
    auto added = batch->Add(target, job->resume, "job");
    job->resume.reset();
    if (added.ok()) {
      handle = *added;
    } else {
      status = added.status();
    }
  }
  if (batch != nullptr && batch->empty()) w->batches.erase(key);
  if (!status.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    CountRunningLocked(*job, -1);
  }
  if (!status.ok()) {
    EmbedResult failed;
    failed.reason = StopReason::kFailed;
    failed.status = status;
    FinishJob(nullptr, job, std::move(failed));
    return;
  }
  job->batch = w->batches[key].get();
  job->handle = handle;
  job->started = Clock::now();
  job->last_preview = Clock::time_point();
  JobRecord r;
  int resumed_from;
  {
    std::lock_guard<std::mutex> lock(job->mu);
    resumed_from = job->step;
    job->start_step = job->step;
    job->device = w->device;
    job->record.state = JobState::kRunning;
    if (job->record.started_unix_ms == 0) job->record.started_unix_ms = NowMs();
    r = job->record;
  }
  Write([this, r] { (void)store_->UpdateJob(r); });
  {
    std::lock_guard<std::mutex> lock(mu_);
    w->active.push_back(job);
  }
  JobEvent ev;
  ev.kind = JobEvent::Kind::kRunning;
  ev.device = w->device;
  ev.resumed_from_step = resumed_from;
  job->Emit(std::move(ev));
  LogEvent("job_started")
      .Str("job_id", job->id)
      .Str("tenant", job->tenant)
      .Str("device", w->device)
      .Int("resumed_from_step", resumed_from);
}

void Scheduler::CheckpointJob(const std::shared_ptr<Job>& job, const EmbedCheckpoint& c) {
  int64_t next, epoch;
  std::string owner;
  {
    std::lock_guard<std::mutex> lock(job->mu);
    next = job->next_sequence;
    owner = job->record.owner;
    epoch = job->record.lease_epoch;
  }
  // Copies: on the CPU, the checkpoint's tensors are the optimiser's own, which the next
  // step changes in place while the writer serialises them.
  EmbedCheckpoint copy = c;
  const auto own = [](torch::Tensor& t) {
    if (t.defined()) t = t.clone();
  };
  own(copy.latent);
  own(copy.adam_m);
  own(copy.adam_v);
  for (auto* maps : {&copy.noise, &copy.noise_m, &copy.noise_v}) {
    for (torch::Tensor& t : *maps) own(t);
  }
  Write([this, id = job->id, copy = std::move(copy), next, owner, epoch] {
    (void)store_->SaveCheckpoint(id, copy.step, SerializeCheckpoint(copy), next, owner, epoch);
  });
}

void Scheduler::StepBatches(Worker* w) {
  std::map<std::pair<EmbedBatch*, int>, std::shared_ptr<Job>> by_handle;
  std::vector<std::shared_ptr<Job>> active;
  {
    std::lock_guard<std::mutex> lock(mu_);
    active = w->active;
  }
  for (auto& job : active) {
    by_handle[{job->batch, job->handle}] = job;
    bool cancel;
    std::string why;
    {
      std::lock_guard<std::mutex> lock(job->mu);
      cancel = job->cancel_requested;
      why = job->cancel_reason;
    }
    if (cancel) {
      job->batch->Cancel(job->handle,
                         absl::CancelledError(absl::StrCat(
                             "cancelled at step ", job->batch->step(job->handle), " (", why, ")")));
    }
  }
  for (auto it = w->batches.begin(); it != w->batches.end();) {
    EmbedBatch* batch = it->second.get();
    auto job_of = [&](int handle) { return by_handle[{batch, handle}]; };
    const int batch_size = batch->num_running();
    if (batch_size > 0) {
      EmbedCallbacks cb;
      cb.on_preview = [&](int handle, int step, const torch::Tensor& rgb01) {
        auto job = job_of(handle);
        const int every = job->spec.preview_every;
        if (every <= 0 || step % every != 0) return;
        // At most one preview a second: a fast small model must not flood the stream.
        if (Clock::now() - job->last_preview < std::chrono::seconds(1)) return;
        auto png = EncodeRgb8(GeneratorOutputToRgb8(rgb01 * 2 - 1), EncodeFormat::kPng);
        if (png.ok()) {
          job->pending_preview = *std::move(png);
          job->last_preview = Clock::now();
        }
      };
      cb.on_checkpoint = [&](int handle, const EmbedCheckpoint& c) {
        CheckpointJob(job_of(handle), c);
      };
      std::vector<StepMetrics> metrics;
      auto t0 = Clock::now();
      absl::Status status = batch->Step(cb, &metrics);
      const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      if (step_seconds_ != nullptr) {
        step_seconds_->Observe({w->device}, seconds);
        image_steps_->Inc({w->device}, static_cast<double>(metrics.size()));
      }
      if (seconds > 0) {
        const double rate = static_cast<double>(metrics.size()) / seconds;
        const double old = w->steps_per_second.load();
        w->steps_per_second.store(old == 0 ? rate : 0.8 * old + 0.2 * rate);
      }
      if (!status.ok()) {
        // A device error (out of memory, ...): every job of this batch fails with it.
        for (auto& [key, job] : by_handle) {
          if (key.first == batch) batch->Cancel(key.second, status);
        }
      }
      for (const StepMetrics& m : metrics) {
        auto job = job_of(m.image);
        job->seconds_per_step =
            job->seconds_per_step == 0 ? seconds : 0.9 * job->seconds_per_step + 0.1 * seconds;
        JobEvent ev;
        ev.kind = JobEvent::Kind::kProgress;
        ev.step = m.step;
        ev.total_steps = job->total_steps;
        ev.noise_phase = m.noise_phase;
        ev.batch_size = batch_size;
        ev.metrics = MetricsOf(m, m.step);
        ev.elapsed_seconds = std::chrono::duration<double>(Clock::now() - job->started).count();
        ev.steps_per_second = job->seconds_per_step > 0 ? 1 / job->seconds_per_step : 0;
        ev.eta_seconds = ev.steps_per_second > 0
                             ? std::max(0, job->total_steps - m.step) / ev.steps_per_second
                             : 0;
        ev.preview_png = std::move(job->pending_preview);
        job->pending_preview.clear();
        {
          std::lock_guard<std::mutex> lock(job->mu);
          job->step = m.step;
          job->metrics = ev.metrics;
        }
        job->Emit(std::move(ev));
      }
    }
    for (int handle : batch->Finished()) {
      auto job = job_of(handle);
      auto result = batch->Take(handle);
      if (!result.ok()) {
        EmbedResult failed;
        failed.reason = StopReason::kFailed;
        failed.status = result.status();
        result = std::move(failed);
      }
      FinishJob(w, job, *std::move(result));
    }
    it = batch->empty() ? w->batches.erase(it) : std::next(it);
  }
}

void Scheduler::FinishJob(Worker* w, const std::shared_ptr<Job>& job, EmbedResult result) {
  std::optional<LatentRecord> latent;  // the result of a succeeded job
  bool lost;
  {
    std::lock_guard<std::mutex> lock(job->mu);
    lost = job->lost;
  }
  if (lost) {  // Abandon: another replica runs it; nothing of this run is stored
    job->batch = nullptr;
    if (w != nullptr) {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = std::find(w->active.begin(), w->active.end(), job);
      if (it != w->active.end()) {
        w->active.erase(it);
        CountRunningLocked(*job, -1);
      }
    }
    return;
  }
  JobEvent ev;
  LatentMetrics metrics = MetricsOf(result.final, result.steps);
  if (result.result_lpips >= 0) metrics.lpips = result.result_lpips;  // of the latent stored
  ev.metrics = metrics;
  ev.step = result.steps;
  absl::Status status = result.status;
  if (status.ok() && result.reason != StopReason::kCancelled &&
      result.reason != StopReason::kFailed) {
    const ModelInfo* model = *registry_->Find(job->spec.model);
    LatentRecord rec;
    rec.id = LatentIdForJob(job->id);
    rec.tenant = job->tenant;
    rec.model = model->name;
    rec.fingerprint = model->fingerprint;
    rec.num_layers = model->num_layers;
    rec.latent_size = model->latent_size;
    rec.values = TensorToFloatArray(result.latent).values;
    // The latent's own maps where the embedding optimised them.
    if (job->spec.options.noise_steps > 0 ||
        job->spec.options.schedule == EmbedSchedule::kStyleGan2Projector) {
      std::vector<std::pair<std::string, FloatArray>> maps;
      for (size_t l = 0; l < result.noise.size(); ++l) {
        maps.emplace_back(absl::StrCat("noise_", l), TensorToFloatArray(result.noise[l]));
      }
      auto npz = SerializeNpz(maps);
      if (npz.ok()) rec.noise_npz = *std::move(npz);
    }
    rec.noise_seed = job->spec.seed;
    rec.source = "embed";
    rec.job_id = job->id;
    rec.metrics = metrics;
    rec.created_unix_ms = NowMs();
    rec.labels = job->spec.labels;
    if (!job->spec.alignment_json.empty()) {
      rec.params_json = LatentParamsWithAlignment(job->spec.alignment_json);
    }
    ev.kind = JobEvent::Kind::kSucceeded;
    ev.latent_id = rec.id;
    ev.stop_reason = StopReasonName(result.reason);
    ev.alignment_json = job->spec.alignment_json;
    if (job->spec.return_aligned_image && !job->spec.alignment_json.empty()) {
      auto png = EncodeRgb8(UnitImageToRgb8(job->spec.image), EncodeFormat::kPng);
      if (png.ok()) ev.aligned_png = *std::move(png);
    }
    if (job->spec.return_reconstruction && w != nullptr) {
      Generator* g = registry_->generator(w->index, job->spec.model);
      std::vector<torch::Tensor> noise;
      for (const auto& n : result.noise) noise.push_back(n.to(g->device()));
      auto img = g->Synthesize(result.latent.unsqueeze(0), noise);
      if (img.ok()) {
        auto png = EncodeRgb8(GeneratorOutputToRgb8((*img)[0]), EncodeFormat::kPng);
        if (png.ok()) ev.reconstruction_png = *std::move(png);
      }
    }
    // Stored with the final record, in one transaction fenced by the lease (Conclude): a
    // replica that lost the job stores neither.
    latent = std::move(rec);
  } else if (status.ok()) {
    status = absl::InternalError("embedding stopped without a status");
  }
  JobRecord r;  // the final record, applied to the job once stored (ConcludeOrKeep)
  {
    std::lock_guard<std::mutex> lock(job->mu);
    job->step = result.steps;
    job->metrics = metrics;
    r = job->record;
  }
  r.finished_unix_ms = NowMs();
  r.result = MetricsJson(metrics);
  if (status.ok()) {
    r.state = JobState::kSucceeded;
    r.latent_id = ev.latent_id;
  } else {
    // What callers will read (GetJob, the events, after a restart too): a store error's
    // private text goes to the log instead (private_detail.h).
    const absl::Status shown = PublicStatus(status);
    r.state = absl::IsCancelled(shown) ? JobState::kCancelled : JobState::kFailed;
    r.error_code = static_cast<int>(shown.code());
    r.error_message = std::string(shown.message());
    ev.kind = absl::IsCancelled(shown) ? JobEvent::Kind::kCancelled : JobEvent::Kind::kFailed;
    ev.status = shown;
  }
  job->batch = nullptr;
  if (w != nullptr) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = w->active.begin(); it != w->active.end(); ++it) {
      if (it->get() == job.get()) {
        w->active.erase(it);
        CountRunningLocked(*job, -1);
        break;
      }
    }
  }
  // The terminal event takes the next sequence number; the record says what follows it.
  {
    std::lock_guard<std::mutex> lock(job->mu);
    r.next_sequence = job->next_sequence + 1;
  }
  // Stored, then announced, by the writer: the worker goes on stepping the other jobs.
  auto u = std::make_shared<Unsaved>(
      Unsaved{job, std::move(r), std::move(ev), absl::OkStatus(), std::move(latent)});
  Write([this, u] { ConcludeOrKeep(std::move(*u)); });
}

void Scheduler::Write(std::function<void()> write) {
  std::unique_lock<std::mutex> lock(writes_mu_);
  // Full: the worker waits here (the store is behind by a whole queue of writes).
  writes_room_cv_.wait(lock, [this] { return writes_.size() < kWriteQueueLimit; });
  writes_.push_back(std::move(write));
  writes_cv_.notify_one();
}

void Scheduler::WriterLoop() {
  auto next_retry = Clock::now() + std::chrono::seconds(1);
  std::unique_lock<std::mutex> lock(writes_mu_);
  while (true) {
    writes_cv_.wait_until(lock, next_retry, [this] { return !writes_.empty() || writes_stop_; });
    if (!writes_.empty()) {
      std::function<void()> write = std::move(writes_.front());
      writes_.pop_front();
      writes_room_cv_.notify_all();
      lock.unlock();
      write();
      lock.lock();
      continue;
    }
    if (writes_stop_) return;  // and nothing left to write
    lock.unlock();
    RetryUnsaved();  // finished jobs the store refused: every second
    lock.lock();
    next_retry = Clock::now() + std::chrono::seconds(1);
  }
}

void Scheduler::Retire(const std::shared_ptr<Job>& job) {
  {
    // A finished job keeps its record, metrics and event log for GetJob and WatchJob, not
    // its inputs: the image (12 MiB at 1024x1024) and the init latent go now.
    std::lock_guard<std::mutex> lock(job->mu);
    job->spec.image = torch::Tensor();
    job->spec.init_latent = torch::Tensor();
    job->resume.reset();
  }
  std::lock_guard<std::mutex> lock(mu_);
  finished_order_.push_back(job->id);
  while (static_cast<int>(finished_order_.size()) > options_.keep_finished) {
    live_.erase(finished_order_.front());
    finished_order_.pop_front();
  }
}

// ------------------------------------------------------------- leases and replicas

void Scheduler::HousekeeperLoop() {
  const auto renew_every = std::chrono::milliseconds(std::max(100, options_.lease_ms / 5));
  const auto poll_every = std::chrono::milliseconds(options_.follow_poll_ms);
  const auto expire_every = std::chrono::milliseconds(options_.expire_every_ms);
  auto next_renew = Clock::now() + renew_every;
  auto next_expiry = Clock::now();  // once at start: what expired while the server was down
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    housekeeper_cv_.wait_until(lock, std::min({next_renew, next_expiry, Clock::now() + poll_every}),
                               [this] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    if (Clock::now() >= next_renew) {
      RenewAndAdopt();
      next_renew = Clock::now() + renew_every;
    }
    if (Clock::now() >= next_expiry) {
      ExpireOld();
      // What expired, and the specs and checkpoints of the jobs that ended since.
      if (absl::Status reclaimed = store_->ReclaimSpace(); !reclaimed.ok()) {
        LogEvent("reclaim_failed").Str("error", reclaimed.message());
      }
      next_expiry = Clock::now() + expire_every;
    }
    PollFollowers();
    if (store_->shared()) PublishRunning();
    lock.lock();
  }
}

void Scheduler::ExpireOld() {
  if (options_.job_retention_ms <= 0 && options_.request_id_retention_ms <= 0) return;
  const int64_t now = NowMs();
  const int64_t jobs_before = options_.job_retention_ms > 0 ? now - options_.job_retention_ms : 0;
  const int64_t requests_before =
      options_.request_id_retention_ms > 0 ? now - options_.request_id_retention_ms : 0;
  constexpr int kBatch = 500;  // rows per transaction: other writers wait at most one batch
  const auto stopping = [this] {
    std::lock_guard<std::mutex> lock(mu_);
    return stopping_;
  };
  Expired total;
  for (bool more = true; more && !stopping();) {
    absl::StatusOr<Expired> expired = store_->ExpireOld(jobs_before, requests_before, kBatch);
    if (!expired.ok()) {
      LogEvent("expiry_failed").Str("error", expired.status().message());
      break;  // tried again at the next round
    }
    total.jobs += expired->jobs;
    total.request_ids += expired->request_ids;
    more = expired->jobs == kBatch || expired->request_ids >= kBatch;
  }
  if (jobs_before > 0) {
    // What the store no longer has, memory drops too (finished jobs retire in the order
    // they ended).
    std::lock_guard<std::mutex> lock(mu_);
    while (!finished_order_.empty()) {
      auto it = live_.find(finished_order_.front());
      if (it != live_.end()) {
        std::lock_guard<std::mutex> job_lock(it->second->mu);
        if (it->second->record.finished_unix_ms >= jobs_before) break;
        live_.erase(it);
      }
      finished_order_.pop_front();
    }
  }
  if (total.jobs > 0 || total.request_ids > 0) {
    LogEvent("expired").Int("jobs", total.jobs).Int("request_ids", total.request_ids);
  }
}

void Scheduler::RenewAndAdopt() {
  const Clock::time_point since = Clock::now();
  auto leases = store_->RenewLeases(options_.replica_id, NowMs(), options_.lease_ms);
  if (!leases.ok()) {
    // Work goes on (the writes are fenced); if the outage outlasts the lease, other
    // replicas take the jobs over and this one gives them up once it sees that.
    if (!lease_warned_) {
      LogEvent("lease_renewal_failed")
          .Str("replica", options_.replica_id)
          .Str("error", leases.status().message());
      lease_warned_ = true;
    }
    return;
  }
  if (lease_warned_) {
    LogEvent("lease_renewed").Str("replica", options_.replica_id);
    lease_warned_ = false;
  }
  std::map<std::string, JobLease> owned;  // by job ID
  for (const JobLease& l : *leases) owned[l.id] = l;
  // Another process under this replica's name (a restart with the same --replica-id while
  // this one still ran) claimed the job at a later epoch: its writes are the job's now.
  const auto newer_process = [this](int64_t epoch) {
    return absl::StrCat(options_.replica_id, " (another process with this replica ID, lease epoch ",
                        epoch, ")");
  };
  std::vector<std::shared_ptr<Job>> jobs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [id, job] : live_) jobs.push_back(job);
  }
  for (auto& job : jobs) {
    JobState state;
    bool cancel, lost;
    int64_t epoch;
    {
      std::lock_guard<std::mutex> lock(job->mu);
      state = job->record.state;
      cancel = job->cancel_requested;
      lost = job->lost;
      epoch = job->record.lease_epoch;
    }
    if (IsTerminal(state) || lost) continue;
    auto it = owned.find(job->id);
    if (it == owned.end()) {
      if (job->claimed_at >= since) continue;  // taken after the renewal began
      // Not ours any more, or just finished: the record tells which.
      auto r = store_->GetJob(job->id, /*with_blobs=*/false);
      if (r.ok() && !IsTerminal(r->state)) {
        if (r->owner != options_.replica_id) {
          Abandon(job, r->owner);
        } else if (r->lease_epoch != epoch) {
          Abandon(job, newer_process(r->lease_epoch));
        }
      }
      continue;
    }
    if (it->second.lease_epoch != epoch) {
      Abandon(job, newer_process(it->second.lease_epoch));
      continue;
    }
    if (it->second.cancel_requested && !cancel) {  // a CancelJob that another replica recorded
      (void)Cancel(job->id, "CancelJob through another replica");
    }
  }
  if (!store_->shared()) return;
  const auto stopping = [this] {
    std::lock_guard<std::mutex> lock(mu_);
    return stopping_;
  };
  // Jobs claimed in an earlier round that Resume could not queue (the store refused its
  // write): still this process's while they keep the epoch it claimed them at.
  for (auto u = unresumed_.begin(); u != unresumed_.end() && !stopping();) {
    auto held = owned.find(u->first);
    absl::StatusOr<JobRecord> r = absl::NotFoundError("not held at that epoch");
    if (held != owned.end() && held->second.lease_epoch == u->second) r = store_->GetJob(u->first);
    const bool gone = absl::IsNotFound(r.status()) ||
                      (r.ok() && (r->owner != options_.replica_id || r->lease_epoch != u->second ||
                                  IsTerminal(r->state)));
    if (gone || (r.ok() && Resume(*std::move(r)).ok())) {
      u = unresumed_.erase(u);  // another process's or finished now, or queued here at last
    } else {
      ++u;  // tried again next round
    }
  }
  // Jobs of replicas that died (expired leases) or jobs nobody owns; never this replica's
  // live ones, which keep their epoch.
  auto claimed =
      store_->ClaimJobs(options_.replica_id, NowMs(), options_.lease_ms, ClaimScope::kExpired);
  if (!claimed.ok()) return;
  for (JobRecord& r : *claimed) {
    if (stopping()) return;
    if (std::shared_ptr<Job> stale = FindLive(r.id); stale != nullptr) {
      // Its lease ran out before this replica renewed it, and this claim took it back at
      // a later epoch, which the run here does not hold: that run stops, and the job
      // resumes from its checkpoint.
      Abandon(stale, options_.replica_id);
    }
    const std::string id = r.id;
    const int64_t epoch = r.lease_epoch;
    absl::Status resumed = Resume(std::move(r));
    if (!resumed.ok()) {
      LogEvent("job_claim_failed").Str("job_id", id).Str("error", resumed.message());
      unresumed_[id] = epoch;
    }
  }
}

void Scheduler::PublishRunning() {
  std::vector<std::shared_ptr<Job>> running;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& w : workers_)
      running.insert(running.end(), w->active.begin(), w->active.end());
  }
  for (const auto& job : running) PublishProgress(job);
}

void Scheduler::PublishProgress(const std::shared_ptr<Job>& job) {
  Progress p;
  std::string owner;
  int64_t epoch;
  {
    std::lock_guard<std::mutex> lock(job->mu);
    if (job->step == job->published_step) return;
    p.step = job->step;
    p.metrics = job->metrics;
    p.device = job->device;
    p.next_sequence = job->next_sequence;
    owner = job->record.owner;
    epoch = job->record.lease_epoch;
  }
  if (store_->SaveProgress(job->id, owner, epoch, ProgressJson(p)).ok()) {
    job->published_step = p.step;
  }
}

void Scheduler::Abandon(const std::shared_ptr<Job>& job, const std::string& owner) {
  {
    std::lock_guard<std::mutex> lock(job->mu);
    if (job->lost) return;
    job->lost = true;
    job->cancel_requested = true;  // a running job stops at its next step
    job->cancel_reason = "lease lost";
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto q = std::find(queue_.begin(), queue_.end(), job);
    if (q != queue_.end()) queue_.erase(q);
    live_.erase(job->id);
  }
  LogEvent("job_lost")
      .Str("job_id", job->id)
      .Str("tenant", job->tenant)
      .Str("replica", options_.replica_id)
      .Str("owner", owner);
  for (auto& c : job->Cursors()) {
    c->Shutdown(absl::UnavailableError(
        absl::StrCat("job \"", job->id, "\" is now run by ", owner,
                     " (this replica lost its lease on it); WatchJob again to follow it there")));
  }
}

std::shared_ptr<Job> Scheduler::Follow(const JobRecord& r, int64_t after_sequence) {
  JobRecord view = WithoutBlobs(r);
  // The mirror numbers its events after everything the reader has seen, so a reader
  // that moves between replicas never gets a sequence number it already has.
  const std::optional<Progress> progress = ProgressFromJson(r.progress);
  view.next_sequence = std::max(
      {view.next_sequence, after_sequence + 1, progress ? progress->next_sequence : int64_t{0}});
  auto mirror = std::make_shared<Job>(view, EmbedJobSpec{}, options_.coalesce_backlog);
  JobEvent ev;
  ev.kind = r.state == JobState::kRunning ? JobEvent::Kind::kRunning : JobEvent::Kind::kQueued;
  if (progress) ev.device = progress->device;
  mirror->Emit(std::move(ev));
  return mirror;
}

void Scheduler::PollFollowers() {
  std::vector<Follower> followers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    followers = followers_;
  }
  std::vector<Job*> done;
  for (Follower& f : followers) {
    Job& mirror = *f.mirror;
    if (mirror.Cursors().empty()) {  // every watcher left
      done.push_back(&mirror);
      continue;
    }
    auto r = store_->GetJob(mirror.id, /*with_blobs=*/false);
    if (!r.ok()) continue;  // the store is away: try again at the next poll
    if (IsTerminal(r->state)) {
      mirror.Emit(TerminalEventOf(*r, store_));
      done.push_back(&mirror);
      continue;
    }
    if (r->state != f.state) {
      f.state = r->state;
      JobEvent ev;
      ev.kind = r->state == JobState::kRunning ? JobEvent::Kind::kRunning : JobEvent::Kind::kQueued;
      if (auto p = ProgressFromJson(r->progress)) ev.device = p->device;
      mirror.Emit(std::move(ev));
    }
    if (r->progress != f.progress) {
      f.progress = r->progress;
      if (auto p = ProgressFromJson(r->progress)) {
        JobEvent ev;
        ev.kind = JobEvent::Kind::kProgress;
        ev.step = p->step;
        ev.total_steps = mirror.total_steps;
        ev.metrics = p->metrics;
        {
          std::lock_guard<std::mutex> lock(mirror.mu);
          mirror.step = p->step;
          mirror.metrics = p->metrics;
          mirror.device = p->device;
        }
        mirror.Emit(std::move(ev));
      }
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  for (Follower& f : followers_) {
    for (const Follower& seen : followers) {
      if (seen.mirror == f.mirror) {
        f.progress = seen.progress;
        f.state = seen.state;
      }
    }
  }
  followers_.erase(std::remove_if(followers_.begin(), followers_.end(),
                                  [&done](const Follower& f) {
                                    return std::find(done.begin(), done.end(), f.mirror.get()) !=
                                           done.end();
                                  }),
                   followers_.end());
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

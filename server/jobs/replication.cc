// Leases and replicas: the lease thread (Scheduler::HousekeeperLoop) renews this replica's
// leases, hands cancels from other replicas to the jobs, gives up lost jobs, publishes
// progress, adopts expired jobs, feeds the watchers of other replicas' jobs, and expires
// what outlived its retention.
#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/base/log.h"
#include "server/base/private_detail.h"
#include "server/jobs/scheduler_internal.h"

namespace i2s {

using scheduler_internal::Clock;
using scheduler_internal::NowMs;
using scheduler_internal::Progress;
using scheduler_internal::ProgressFromJson;
using scheduler_internal::ProgressJson;
using scheduler_internal::TerminalEventOf;
using scheduler_internal::WithoutBlobs;

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

}  // namespace i2s

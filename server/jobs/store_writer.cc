// The workers' store writes, on the writer thread in the order given (Scheduler::Write),
// and a finished job's final record: stored, then announced (Conclude), or kept for the
// retries (RetryUnsaved).
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/base/log.h"
#include "server/base/private_detail.h"
#include "server/jobs/scheduler_internal.h"

namespace i2s {

using scheduler_internal::Clock;

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
    if (Clock::now() >= next_retry) {
      // Finished jobs the store refused: every second, however busy the queue is.
      lock.unlock();
      RetryUnsaved();
      lock.lock();
      next_retry = Clock::now() + std::chrono::seconds(1);
    }
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
  }
}

}  // namespace i2s

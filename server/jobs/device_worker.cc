// The device worker: one thread per device runs its device tasks, admits queued jobs and
// steps their EmbedBatches (Scheduler::WorkerLoop and what it calls).
#include <algorithm>
#include <chrono>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/base/log.h"
#include "server/base/private_detail.h"
#include "server/engine/torch_util.h"
#include "server/formats/npy.h"
#include "server/imaging/image_io.h"
#include "server/imaging/prepare.h"
#include "server/jobs/scheduler_internal.h"

namespace i2s {

using scheduler_internal::Clock;
using scheduler_internal::NowMs;

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

}  // namespace

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
    target.mse_mask = job->spec.mse_mask;
    target.perceptual_mask = job->spec.perceptual_mask;
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
    if (!job->spec.alignment_json.empty() || !job->spec.masks_json.empty()) {
      rec.params_json = LatentParamsWithAlignment(job->spec.alignment_json, job->spec.masks_json);
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

void Scheduler::Retire(const std::shared_ptr<Job>& job) {
  {
    // A finished job keeps its record, metrics and event log for GetJob and WatchJob, not
    // its inputs: the image (12 MiB at 1024x1024) and the init latent go now.
    std::lock_guard<std::mutex> lock(job->mu);
    job->spec.image = torch::Tensor();
    job->spec.init_latent = torch::Tensor();
    job->spec.mse_mask = torch::Tensor();
    job->spec.perceptual_mask = torch::Tensor();
    job->resume.reset();
  }
  std::lock_guard<std::mutex> lock(mu_);
  finished_order_.push_back(job->id);
  while (static_cast<int>(finished_order_.size()) > options_.keep_finished) {
    live_.erase(finished_order_.front());
    finished_order_.pop_front();
  }
}

}  // namespace i2s

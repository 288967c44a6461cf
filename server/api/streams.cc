#include "server/api/streams.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "server/api/convert.h"
#include "server/api/status.h"
#include "server/engine/edits.h"

namespace i2s {

// ------------------------------------------------------------------ StreamHeartbeats

StreamHeartbeats::StreamHeartbeats(double interval_seconds)
    : interval_seconds_(interval_seconds), thread_([this] { Loop(); }) {}

StreamHeartbeats::~StreamHeartbeats() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void StreamHeartbeats::Register(EventStreamReactor* stream) {
  std::lock_guard<std::mutex> lock(mu_);
  streams_.insert(stream);
}

void StreamHeartbeats::Unregister(EventStreamReactor* stream) {
  std::lock_guard<std::mutex> lock(mu_);
  streams_.erase(stream);
}

void StreamHeartbeats::Loop() {
  const double interval = interval_seconds_;
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, std::chrono::duration<double>(std::min(interval / 4, 1.0)));
    for (EventStreamReactor* r : streams_) r->Heartbeat(interval);
  }
}

// ---------------------------------------------------------------- EventStreamReactor

EventStreamReactor::EventStreamReactor(StreamHeartbeats* heartbeats, Scheduler* scheduler,
                                       bool cancel_on_disconnect, ConcurrencyLimiter::Lease lease)
    : lease_(std::move(lease)),
      heartbeats_(heartbeats),
      scheduler_(scheduler),
      cancel_on_disconnect_(cancel_on_disconnect),
      last_write_(std::chrono::steady_clock::now()) {
  heartbeats_->Register(this);
}

EventStreamReactor::EventStreamReactor(StreamHeartbeats* heartbeats, Scheduler* scheduler,
                                       std::shared_ptr<EventCursor> cursor, std::string job_id,
                                       bool cancel_on_disconnect, int resolution,
                                       ConcurrencyLimiter::Lease lease)
    : EventStreamReactor(heartbeats, scheduler, cancel_on_disconnect, std::move(lease)) {
  Attach(std::move(cursor), std::move(job_id), resolution);
}

void EventStreamReactor::Attach(std::shared_ptr<EventCursor> cursor, std::string job_id,
                                int resolution) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cursor_ = std::move(cursor);
    job_id_ = std::move(job_id);
    resolution_ = resolution;
    pinned_ = true;
  }
  cursor_->SetWake([this] { Pump(); });
  bool cancelled;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled = cancelled_;
  }
  if (cancelled) OnCancel();  // the client left while the job was being made
  Unpin();
}

void EventStreamReactor::Fail(const absl::Status& status) {
  std::lock_guard<std::mutex> lock(mu_);
  lease_.Release();
  FinishLocked(ToGrpcStatus(status));
}

void EventStreamReactor::OnWriteDone(bool ok) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!ok) {
      FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
  }
  Pump();
}

void EventStreamReactor::OnCancel() {
  std::shared_ptr<EventCursor> cursor;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled_ = true;
    cursor = cursor_;
  }
  if (cursor == nullptr) return;  // pending: the pool's task answers (Attach or Fail)
  if (cancel_on_disconnect_ && !cursor->done()) {
    (void)scheduler_->Cancel(job_id_, "client disconnected");
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (!writing_) FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "call cancelled"));
}

void EventStreamReactor::OnDone() {
  heartbeats_->Unregister(this);
  if (cursor_ != nullptr) cursor_->Close();
  bool pinned;
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    pinned = pinned_;
  }
  if (!pinned) delete this;  // else Attach's Unpin does
}

void EventStreamReactor::Pump() {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_ || writing_ || cursor_ == nullptr) return;
  if (auto ev = cursor_->Next()) {
    ToProto(*ev, resolution_, &msg_);
    StartWriteLocked();
    return;
  }
  if (cursor_->done()) {
    FinishLocked(grpc::Status::OK);
  } else if (absl::Status closed = cursor_->closed(); !closed.ok()) {
    FinishLocked(ToGrpcStatus(closed));
  }
}

void EventStreamReactor::Heartbeat(double interval_seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_ || writing_ || cursor_ == nullptr) return;
  if (std::chrono::steady_clock::now() - last_write_ <
      std::chrono::duration<double>(interval_seconds)) {
    return;
  }
  msg_.Clear();
  msg_.set_job_id(job_id_);
  msg_.set_sequence(cursor_->last_sequence());
  msg_.set_time_unix_ms(absl::ToUnixMillis(absl::Now()));
  msg_.mutable_heartbeat();
  StartWriteLocked();
}

void EventStreamReactor::StartWriteLocked() {
  writing_ = true;
  last_write_ = std::chrono::steady_clock::now();
  StartWrite(&msg_);
}

void EventStreamReactor::FinishLocked(const grpc::Status& status) {
  if (finished_) return;
  finished_ = true;
  Finish(status);
}

void EventStreamReactor::Unpin() {
  bool done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pinned_ = false;
    done = done_;
  }
  if (done) delete this;
}

// ---------------------------------------------------------------------- MorphReactor

MorphReactor::MorphReactor(Scheduler* scheduler, const ModelRegistry* registry, std::string tenant,
                           const ModelInfo* model, Frames frames, RenderSettings render,
                           absl::Time call_deadline, absl::Duration device_wait,
                           ConcurrencyLimiter::Lease lease, Paste paste)
    : lease_(std::move(lease)),
      scheduler_(scheduler),
      registry_(registry),
      tenant_(std::move(tenant)),
      model_(model),
      frames_(std::move(frames)),
      render_(std::move(render)),
      call_deadline_(call_deadline),
      device_wait_(device_wait),
      paste_(std::move(paste)) {
  RenderNext();
}

void MorphReactor::OnWriteDone(bool ok) {
  if (!ok) {
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
    return;
  }
  if (++index_ == static_cast<int>(frames_.alphas.size())) {
    Finish(grpc::Status::OK);
  } else {
    RenderNext();
  }
}

void MorphReactor::RenderNext() {
  if (cancelled_) {
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "call cancelled"));
    return;
  }
  scheduler_->RunTask(
      [this](int device) -> absl::Status {
        ASSIGN_OR_RETURN(torch::Tensor w, frames_.latent(index_));
        frame_.Clear();
        frame_.set_index(index_);
        frame_.set_frames(static_cast<int>(frames_.alphas.size()));
        frame_.set_alpha(frames_.alphas[index_]);
        ASSIGN_OR_RETURN(
            EncodedImage image,
            RenderLatent(*registry_->generator(device, model_->name), w, frames_.noise_source,
                         render_, "render", paste_.plan != nullptr ? &raw_ : nullptr));
        ToProto(image, frame_.mutable_image());
        return absl::OkStatus();
      },
      std::min(call_deadline_, absl::Now() + device_wait_),
      [this](absl::Status status) {
        if (!status.ok()) {
          Finish(ToGrpcStatus(Annotate(status, absl::StrCat("frame ", index_))));
        } else if (paste_.plan == nullptr) {
          StartWrite(&frame_);
        } else {
          absl::Status queued = paste_.pool->Submit(tenant_, [this] {
            absl::Status pasted = RunPaste(*paste_.plan, {raw_}, paste_.limits, paste_.max_bytes,
                                           frame_.mutable_pasted());
            raw_ = torch::Tensor();
            if (!pasted.ok()) {
              Finish(ToGrpcStatus(pasted));  // the photo's fault, not the frame's
            } else {
              StartWrite(&frame_);
            }
          });
          if (!queued.ok()) Finish(ToGrpcStatus(queued));
        }
      },
      tenant_, [this] { return cancelled_.load(); });
}

}  // namespace i2s

// The server-streaming calls' reactors (callback API, style rule 8): one write in flight,
// the next started from OnWriteDone (or the producer's wake-up), OnCancel handled, Finish
// called exactly once, nothing blocking inside a reaction. Each holds a stream slot
// (ConcurrencyLimiter::Lease) until it is done.
#ifndef I2S_SERVER_API_STREAMS_H_
#define I2S_SERVER_API_STREAMS_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "i2s/v1/i2s.grpc.pb.h"
#include "server/api/auth.h"
#include "server/api/paste_back.h"
#include "server/api/work_pool.h"
#include "server/jobs/model_registry.h"
#include "server/jobs/scheduler.h"
#include "server/latents/render.h"

namespace i2s {

class EventStreamReactor;

// Heartbeats on quiet event streams: a thread that, every min(interval / 4, 1 s), lets
// each registered stream send one if it wrote nothing for `interval_seconds`.
// Thread-safe; the destructor stops and joins the thread (the streams must be gone or
// outlive it).
class StreamHeartbeats {
 public:
  explicit StreamHeartbeats(double interval_seconds);
  ~StreamHeartbeats();

  void Register(EventStreamReactor* stream);
  void Unregister(EventStreamReactor* stream);

 private:
  void Loop();

  const double interval_seconds_;
  std::mutex mu_;
  std::set<EventStreamReactor*> streams_;  // under mu_
  bool stop_ = false;                      // under mu_
  std::condition_variable cv_;
  std::thread thread_;
};

// Writes one job's events to a client (Embed, WatchJob): one write in flight, the next
// from OnWriteDone or from the cursor's wake-up, never queued here, so a slow reader costs
// the worker nothing; heartbeats on quiet streams; Finish exactly once.
// An Embed's stream starts pending (no job yet: its image is being decoded on the
// WorkPool); the pool's task then attaches the job's cursor or fails the call. A client
// that goes away meanwhile is answered by that task, so the reactor outlives it.
// Deletes itself in OnDone. `heartbeats` and `scheduler` must outlive it.
class EventStreamReactor : public grpc::ServerWriteReactor<v1::JobEvent> {
 public:
  // Pending: Attach or Fail follows. With `cancel_on_disconnect`, a client that goes away
  // cancels the job.
  EventStreamReactor(StreamHeartbeats* heartbeats, Scheduler* scheduler, bool cancel_on_disconnect,
                     ConcurrencyLimiter::Lease lease);
  // Attached at once (WatchJob).
  EventStreamReactor(StreamHeartbeats* heartbeats, Scheduler* scheduler,
                     std::shared_ptr<EventCursor> cursor, std::string job_id,
                     bool cancel_on_disconnect, int resolution, ConcurrencyLimiter::Lease lease);

  // The job's events from here on (once). The reactor stays pinned until Attach returns:
  // the first wake-up may finish the call at once, and OnDone must not delete the reactor
  // while Attach still uses it (Unpin deletes it then).
  void Attach(std::shared_ptr<EventCursor> cursor, std::string job_id, int resolution);

  // Ends a pending stream with `status` (the job could not be made). Its stream slot is
  // given back first: the caller may open the next stream as soon as it hears the status,
  // before gRPC gets to OnDone.
  void Fail(const absl::Status& status);

  // Sends a heartbeat if the stream wrote nothing for `interval_seconds` and no write is
  // in flight (StreamHeartbeats' thread).
  void Heartbeat(double interval_seconds);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  // Starts the next write if there is an event and no write in flight; finishes the call
  // when the job's log is done or its cursor was closed.
  void Pump();
  void StartWriteLocked();
  void FinishLocked(const grpc::Status& status);
  void Unpin();

  ConcurrencyLimiter::Lease lease_;  // a slot of --max-streams, given back on OnDone
  StreamHeartbeats* const heartbeats_;
  Scheduler* const scheduler_;
  const bool cancel_on_disconnect_;
  std::mutex mu_;
  // Set once by Attach (under mu_), then read without it only by the threads that Attach
  // started (the cursor's wake-ups, gRPC's callbacks after it).
  std::shared_ptr<EventCursor> cursor_;
  std::string job_id_;
  int resolution_ = 0;
  bool writing_ = false, finished_ = false, cancelled_ = false;
  bool pinned_ = false, done_ = false;  // Attach in progress; OnDone came
  std::chrono::steady_clock::time_point last_write_;
  v1::JobEvent msg_;
};

// Morph frames, rendered one at a time on the device between optimiser steps
// (Scheduler::RunTask): frame i+1 only after frame i was written. Each frame's task
// must start before the call's deadline and within `device_wait` (DEADLINE_EXCEEDED
// otherwise) and is dropped unrun once the call is cancelled. Deletes itself in OnDone;
// `scheduler`, `registry` and `model` must outlive it.
class MorphReactor : public grpc::ServerWriteReactor<v1::MorphFrame> {
 public:
  // With `paste`, each frame is also pasted into the plan's photo on `pool` (RunPaste,
  // within `limits` and `max_bytes`) before it is written.
  struct Paste {
    std::shared_ptr<const PastePlan> plan;
    WorkPool* pool = nullptr;
    DecodeLimits limits;
    int64_t max_bytes = 0;
  };
  // The frames: frame i renders latent(i) ([L, D], made on the device task) with the
  // noise of `noise_source`, and reports alphas[i].
  struct Frames {
    LatentInput noise_source;
    std::vector<double> alphas;
    std::function<absl::StatusOr<torch::Tensor>(int index)> latent;
  };
  MorphReactor(Scheduler* scheduler, const ModelRegistry* registry, std::string tenant,
               const ModelInfo* model, Frames frames, RenderSettings render,
               absl::Time call_deadline, absl::Duration device_wait,
               ConcurrencyLimiter::Lease lease, Paste paste);

  void OnWriteDone(bool ok) override;
  void OnCancel() override { cancelled_ = true; }
  void OnDone() override { delete this; }

 private:
  void RenderNext();

  ConcurrencyLimiter::Lease lease_;
  Scheduler* const scheduler_;
  const ModelRegistry* const registry_;
  const std::string tenant_;
  const ModelInfo* model_;
  const Frames frames_;
  const RenderSettings render_;
  const absl::Time call_deadline_;
  const absl::Duration device_wait_;
  const Paste paste_;
  torch::Tensor raw_;  // the frame's render, kept for the paste
  int index_ = 0;
  std::atomic<bool> cancelled_{false};
  v1::MorphFrame frame_;
};

}  // namespace i2s

#endif  // I2S_SERVER_API_STREAMS_H_

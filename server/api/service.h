// The gRPC service i2s.v1.ImageToStyleGan on the callback API: translation between the
// proto and the domain (jobs, store, engine), field-level validation, one status mapping.
// Device work (renders, edits) goes to the Scheduler's workers via RunTask, so no gRPC
// thread blocks on the GPU; streams keep one write in flight and never block a worker.
//
// Thread-safe. Borrows the registry, scheduler and store (they must outlive it).
#ifndef I2S_SERVER_API_SERVICE_H_
#define I2S_SERVER_API_SERVICE_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include "i2s/v1/i2s.grpc.pb.h"
#include "server/api/auth.h"
#include "server/api/connection_options.h"
#include "server/imaging/align.h"
#include "server/jobs/model_registry.h"
#include "server/jobs/scheduler.h"
#include "server/store/store.h"

namespace i2s {

struct ServiceLimits {
  int64_t max_message_bytes = 64 << 20;  // sent (renders, aligned images), and the cap below
  int64_t max_image_bytes = 32 << 20;
  // What a request may be: the largest (an Embed or AlignFace) is an image and its
  // options, under max_image_bytes + 1 MiB. Messages are read whole before a call's token
  // is checked, so this is also what a caller without a token can make the server hold
  // per call (docs/SECURITY.md, Connections).
  int64_t max_receive_message_bytes() const {
    return std::min(max_message_bytes, max_image_bytes + (int64_t{1} << 20));
  }
  int64_t max_image_pixels = 50'000'000;
  int max_steps = 100000;
  int max_morph_frames = 240;
  double heartbeat_seconds = 10;  // a quiet event stream gets a heartbeat this often
  // Admission, per tenant (one tenant, "", without authentication).
  double rate_limit = 200;       // calls per second per tenant; 0 = unlimited
  int rate_burst = 400;          // calls at once before the rate applies
  int max_streams = 1024;        // open Embed/WatchJob/Morph streams, all tenants
  int tenant_max_streams = 256;  // open streams of one tenant
  // Image decodes and alignments (Embed, AlignFace) run on a pool of this many threads,
  // off the gRPC threads: each holds the decoded photo and alignment buffers (the bound of
  // their memory: docs/SECURITY.md, Limits).
  int max_concurrent_images = 4;
  int image_queue_limit = 128;  // calls waiting for a pool thread (they hold no gRPC thread)
  int tenant_max_images = 32;   // of one tenant, waiting or running
  // A render or edit waits at most this long for a device (or until its call's deadline,
  // if sooner); then DEADLINE_EXCEEDED. Calls without a deadline get this one.
  double device_wait_seconds = 60;
  // Applied by main to the server builder; here so that ServerInfo reports them.
  ConnectionOptions connections;
};

class EventStreamReactor;

class Service final : public i2s::v1::ImageToStyleGan::CallbackService {
 public:
  // `face_detector` (may be null: AlignOptions.AUTO is then FAILED_PRECONDITION) and
  // `auth` (null: no authentication, one tenant "") are not owned and must outlive the
  // service.
  Service(const ModelRegistry* registry, Scheduler* scheduler, Store* store, ServiceLimits limits,
          std::string version, const FaceDetector* face_detector = nullptr,
          Authenticator* auth = nullptr);
  ~Service() override;

  // Adds the service's gauges (open streams, image decodes in progress) to `metrics`.
  void RegisterMetrics(MetricsRegistry* metrics);

  // New creating calls get Unavailable from now on (graceful shutdown).
  void StopAccepting() { accepting_ = false; }

  using CallbackServerContext = grpc::CallbackServerContext;
  grpc::ServerWriteReactor<v1::JobEvent>* Embed(CallbackServerContext* ctx,
                                                const v1::EmbedRequest* req) override;
  grpc::ServerWriteReactor<v1::JobEvent>* WatchJob(CallbackServerContext* ctx,
                                                   const v1::WatchJobRequest* req) override;
  grpc::ServerUnaryReactor* GetJob(CallbackServerContext* ctx, const v1::GetJobRequest* req,
                                   v1::Job* resp) override;
  grpc::ServerUnaryReactor* ListJobs(CallbackServerContext* ctx, const v1::ListJobsRequest* req,
                                     v1::ListJobsResponse* resp) override;
  grpc::ServerUnaryReactor* CancelJob(CallbackServerContext* ctx, const v1::CancelJobRequest* req,
                                      v1::Job* resp) override;
  grpc::ServerUnaryReactor* GetLatent(CallbackServerContext* ctx, const v1::GetLatentRequest* req,
                                      v1::Latent* resp) override;
  grpc::ServerUnaryReactor* ListLatents(CallbackServerContext* ctx,
                                        const v1::ListLatentsRequest* req,
                                        v1::ListLatentsResponse* resp) override;
  grpc::ServerUnaryReactor* DeleteLatent(CallbackServerContext* ctx,
                                         const v1::DeleteLatentRequest* req,
                                         v1::DeleteLatentResponse* resp) override;
  grpc::ServerUnaryReactor* ImportLatent(CallbackServerContext* ctx,
                                         const v1::ImportLatentRequest* req,
                                         v1::Latent* resp) override;
  grpc::ServerUnaryReactor* ExportLatent(CallbackServerContext* ctx,
                                         const v1::ExportLatentRequest* req,
                                         v1::ExportLatentResponse* resp) override;
  grpc::ServerUnaryReactor* Synthesize(CallbackServerContext* ctx, const v1::SynthesizeRequest* req,
                                       v1::SynthesizeResponse* resp) override;
  grpc::ServerWriteReactor<v1::MorphFrame>* Morph(CallbackServerContext* ctx,
                                                  const v1::MorphRequest* req) override;
  grpc::ServerUnaryReactor* StyleMix(CallbackServerContext* ctx, const v1::StyleMixRequest* req,
                                     v1::EditResponse* resp) override;
  grpc::ServerUnaryReactor* ExpressionTransfer(CallbackServerContext* ctx,
                                               const v1::ExpressionTransferRequest* req,
                                               v1::EditResponse* resp) override;
  grpc::ServerUnaryReactor* AlignFace(CallbackServerContext* ctx, const v1::AlignFaceRequest* req,
                                      v1::AlignFaceResponse* resp) override;
  grpc::ServerUnaryReactor* GetServerInfo(CallbackServerContext* ctx,
                                          const v1::GetServerInfoRequest* req,
                                          v1::ServerInfo* resp) override;
  grpc::ServerUnaryReactor* GetUsage(CallbackServerContext* ctx, const v1::GetUsageRequest* req,
                                     v1::GetUsageResponse* resp) override;

 private:
  friend class EventStreamReactor;
  friend class MorphReactor;
  struct Impl;
  absl::StatusOr<std::pair<std::string, const ModelInfo*>> SubmitEmbed(const Caller& caller,
                                                                       const v1::EmbedRequest& req);
  void Register(EventStreamReactor* r);
  void Unregister(EventStreamReactor* r);
  void HeartbeatLoop();

  std::unique_ptr<Impl> impl_;
  std::atomic<bool> accepting_{true};
  std::mutex streams_mu_;
  std::set<EventStreamReactor*> streams_;
  bool stop_heartbeats_ = false;
  std::condition_variable heartbeat_cv_;
  std::thread heartbeat_thread_;
};

}  // namespace i2s

#endif  // I2S_SERVER_API_SERVICE_H_

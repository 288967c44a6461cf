// The gRPC service i2s.v1.ImageToStyleGan on the callback API: translation between the
// proto and the domain (jobs, latents, store, engine), field-level validation, one status
// mapping. Device work (renders, edits) goes to the Scheduler's workers via RunTask, so no
// gRPC thread blocks on the GPU; streams keep one write in flight and never block a worker.
//
// The handlers are grouped by what they serve: service_jobs.cc (Embed, WatchJob, GetJob,
// ListJobs, CancelJob), service_latents.cc (Get/List/Delete/Import/ExportLatent),
// service_render.cc (Synthesize, Morph, StyleMix, ExpressionTransfer), service_align.cc
// (AlignFace), service_paste.cc (PasteBack, with paste_back.h) and service_info.cc
// (GetServerInfo, GetUsage); service.cc holds what they
// share (internal/service_impl.h), convert.h the proto <-> domain translation, streams.h
// the stream reactors.
//
// Thread-safe. Borrows the registry, scheduler and store (they must outlive it).
#ifndef I2S_SERVER_API_SERVICE_H_
#define I2S_SERVER_API_SERVICE_H_

#include <atomic>
#include <memory>
#include <string>
#include <utility>

#include "i2s/v1/i2s.grpc.pb.h"
#include "server/api/auth.h"
#include "server/api/service_limits.h"
#include "server/base/metrics.h"
#include "server/imaging/face_detector.h"
#include "server/jobs/model_registry.h"
#include "server/jobs/scheduler.h"
#include "server/store/store.h"

namespace i2s {

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
  grpc::ServerUnaryReactor* LocalBlend(CallbackServerContext* ctx, const v1::LocalBlendRequest* req,
                                       v1::LocalBlendResponse* resp) override;
  grpc::ServerUnaryReactor* ImportDirection(CallbackServerContext* ctx,
                                            const v1::ImportDirectionRequest* req,
                                            v1::ImportDirectionResponse* resp) override;
  grpc::ServerUnaryReactor* ComputeDirection(CallbackServerContext* ctx,
                                             const v1::ComputeDirectionRequest* req,
                                             v1::Direction* resp) override;
  grpc::ServerUnaryReactor* ListDirections(CallbackServerContext* ctx,
                                           const v1::ListDirectionsRequest* req,
                                           v1::ListDirectionsResponse* resp) override;
  grpc::ServerUnaryReactor* GetDirection(CallbackServerContext* ctx,
                                         const v1::GetDirectionRequest* req,
                                         v1::Direction* resp) override;
  grpc::ServerUnaryReactor* DeleteDirection(CallbackServerContext* ctx,
                                            const v1::DeleteDirectionRequest* req,
                                            v1::DeleteDirectionResponse* resp) override;
  grpc::ServerUnaryReactor* ApplyDirections(CallbackServerContext* ctx,
                                            const v1::ApplyDirectionsRequest* req,
                                            v1::EditResponse* resp) override;
  grpc::ServerWriteReactor<v1::MorphFrame>* DirectionFrames(
      CallbackServerContext* ctx, const v1::DirectionFramesRequest* req) override;
  grpc::ServerUnaryReactor* AlignFace(CallbackServerContext* ctx, const v1::AlignFaceRequest* req,
                                      v1::AlignFaceResponse* resp) override;
  grpc::ServerUnaryReactor* PasteBack(CallbackServerContext* ctx, const v1::PasteBackRequest* req,
                                      v1::PasteBackResponse* resp) override;
  grpc::ServerUnaryReactor* GetServerInfo(CallbackServerContext* ctx,
                                          const v1::GetServerInfoRequest* req,
                                          v1::ServerInfo* resp) override;
  grpc::ServerUnaryReactor* GetUsage(CallbackServerContext* ctx, const v1::GetUsageRequest* req,
                                     v1::GetUsageResponse* resp) override;

 private:
  struct Impl;  // internal/service_impl.h
  // The work of an Embed after admission, on a WorkPool thread: checks, the init latent,
  // decoding and alignment, the job's creation. The job's ID and model.
  absl::StatusOr<std::pair<std::string, const ModelInfo*>> SubmitEmbed(const Caller& caller,
                                                                       const v1::EmbedRequest& req);

  std::unique_ptr<Impl> impl_;
  std::atomic<bool> accepting_{true};
};

}  // namespace i2s

#endif  // I2S_SERVER_API_SERVICE_H_

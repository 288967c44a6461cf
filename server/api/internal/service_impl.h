// What every handler of the Service shares (its files: service_*.cc): the borrowed
// registry, scheduler and store, the limits, admission (authentication, rate, stream
// slots, the image WorkPool), and the lookups that see only what the caller may see.
// Private to server/api.
#ifndef I2S_SERVER_API_INTERNAL_SERVICE_IMPL_H_
#define I2S_SERVER_API_INTERNAL_SERVICE_IMPL_H_

#include <grpcpp/grpcpp.h>
#include <torch/torch.h>

#include <chrono>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "i2s/v1/i2s.pb.h"
#include "server/api/auth.h"
#include "server/api/paste_back.h"
#include "server/api/service.h"
#include "server/api/streams.h"
#include "server/api/work_pool.h"
#include "server/base/log.h"
#include "server/imaging/face_detector.h"
#include "server/imaging/image_header.h"
#include "server/latents/render.h"

namespace i2s {

struct Service::Impl {
  Impl(const ModelRegistry* registry, Scheduler* scheduler, Store* store, ServiceLimits limits,
       std::string version, const FaceDetector* face_detector, Authenticator* auth);

  // The limits of an image a request carries (checked from its header before decoding).
  DecodeLimits decode_limits() const;

  // Every call starts here: who is calling (UNAUTHENTICATED without a valid token), and
  // is the tenant within its request rate. The token is never logged or echoed.
  absl::StatusOr<Caller> Admit(const grpc::CallbackServerContext* ctx);

  // A stored latent the caller may see (NotFound otherwise).
  absl::StatusOr<LatentRecord> LatentFor(const Caller& caller, const std::string& id,
                                         bool with_values);

  // A job the caller may see (NotFound otherwise).
  absl::StatusOr<JobView> JobFor(const Caller& caller, const std::string& id);

  // The tenant filter of a listing: the caller's own, or every tenant's for an admin
  // that asks for all_tenants.
  static absl::StatusOr<std::optional<std::string>> ListingTenant(const Caller& caller,
                                                                  bool all_tenants);

  // The model filter of a listing: the fingerprint of the model named, or "" (every model)
  // when `model` is empty. NotFound naming "model".
  absl::StatusOr<std::string> ListingFingerprint(const std::string& model) const;

  // The model a call works with: `name` if given, else the model of the first stored
  // latent among `refs`, else the default.
  absl::StatusOr<const ModelInfo*> ModelFor(const Caller& caller, const std::string& name,
                                            std::initializer_list<const v1::LatentRef*> refs);

  // A request's latent (a stored one the caller may see, of `model`; or inline values of
  // the model's shape) with its noise source. Errors name `field`. Inline values get
  // `inline_noise_seed`.
  absl::StatusOr<LatentInput> Resolve(const Caller& caller, const v1::LatentRef& ref,
                                      const ModelInfo& model, const std::string& field,
                                      uint64_t inline_noise_seed);

  // When a device task must have started: the call's deadline, and at most
  // --device-wait-seconds from now (calls without a deadline get that one).
  absl::Time TaskDeadline(absl::Time call_deadline) const;

  // Renders w on a device worker (between optimiser steps) into `image`, then finishes
  // the call. `image` belongs to the call and lives until Finish.
  // The call's tenant shares the device queues (SchedulerOptions); a task waits at most
  // --device-wait-seconds, or until the call's deadline, and is dropped unrun if the call
  // is cancelled meanwhile.
  // With `paste` (and `pasted`, which also belongs to the call), the render is then pasted
  // into the plan's photo on the image WorkPool (RunPaste) before the call finishes.
  void RenderAndFinish(grpc::CallbackServerContext* ctx, grpc::ServerUnaryReactor* reactor,
                       const std::string& tenant, const ModelInfo* model, torch::Tensor w,
                       LatentInput noise_source, RenderSettings render, v1::Image* image,
                       std::shared_ptr<const PastePlan> paste = nullptr,
                       v1::Image* pasted = nullptr);

  // A request's `paste_into` for the latent `applied_to` (photo limits checked now), or
  // null when the request has none.
  absl::StatusOr<std::shared_ptr<const PastePlan>> PastePlanFor(bool has_paste_into,
                                                                const v1::PasteInto& paste_into,
                                                                const LatentInput& applied_to);

  // Pastes `renders` as `plan` says on the image WorkPool, then finishes the call.
  void PasteAndFinish(grpc::ServerUnaryReactor* reactor, const std::string& tenant,
                      std::shared_ptr<const PastePlan> plan,
                      std::shared_ptr<std::vector<torch::Tensor>> renders, v1::Image* out);

  const ModelRegistry* registry;
  Scheduler* scheduler;
  Store* store;
  ServiceLimits limits;
  std::string version;
  const FaceDetector* face_detector;  // may be null
  Authenticator open_auth;            // no token file: every caller is tenant ""
  Authenticator* auth;
  RateLimiter rate;
  ConcurrencyLimiter streams;  // open event and morph streams
  // Decodes and alignments (Embed, AlignFace), off the gRPC threads; reset first by
  // ~Service, so no task outlives what it uses.
  std::unique_ptr<WorkPool> image_pool;
  // auth_refused lines: 20 per 10 s, the rest counted in the next line's `suppressed`.
  LogRateLimit auth_log{20, std::chrono::seconds(10)};
  StreamHeartbeats heartbeats;  // of the open event streams
};

// A finished unary call: the reactor with its status.
grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, const absl::Status& status);

// The call's deadline (InfiniteFuture for none, which gRPC gives as a far-off time).
absl::Time DeadlineOf(const grpc::CallbackServerContext* ctx);

}  // namespace i2s

#endif  // I2S_SERVER_API_INTERNAL_SERVICE_IMPL_H_

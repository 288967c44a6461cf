// The Service's RPCs that return pictures of latents: Synthesize, Morph (a stream of
// frames) and the edits StyleMix and ExpressionTransfer (rendered, and stored with
// store_result). The edits' arithmetic is the engine's (edits.h); rendering and storing
// are server/latents'; the renders run as device tasks.
#include <nlohmann/json.hpp>
#include <utility>

#include "common/defaults.h"
#include "common/status_macros.h"
#include "server/api/convert.h"
#include "server/api/error_writer.h"
#include "server/api/internal/service_impl.h"
#include "server/api/request_check.h"
#include "server/api/service.h"
#include "server/api/status.h"
#include "server/engine/edits.h"
#include "server/latents/new_latent.h"

namespace i2s {

grpc::ServerUnaryReactor* Service::Synthesize(CallbackServerContext* ctx,
                                              const v1::SynthesizeRequest* req,
                                              v1::SynthesizeResponse* resp) {
  auto caller = impl_->Admit(ctx);
  if (!caller.ok()) return Done(ctx, caller.status());
  absl::Status bad = CheckSynthesizeRequest(*req);
  if (!bad.ok()) return Done(ctx, bad);
  auto model = impl_->ModelFor(*caller, req->model(), {&req->latent()});
  if (!model.ok()) return Done(ctx, model.status());
  auto latent =
      impl_->Resolve(*caller, req->latent(), **model, "latent", req->render().noise_seed());
  if (!latent.ok()) return Done(ctx, latent.status());
  auto paste = impl_->PastePlanFor(req->has_paste_into(), req->paste_into(), *latent);
  if (!paste.ok()) return Done(ctx, paste.status());
  auto* reactor = ctx->DefaultReactor();
  const torch::Tensor w = latent->w;
  impl_->RenderAndFinish(ctx, reactor, caller->tenant, *model, w, *std::move(latent),
                         RenderSettingsOf(req->render()), resp->mutable_image(), *paste,
                         resp->mutable_pasted());
  return reactor;
}

grpc::ServerWriteReactor<v1::MorphFrame>* Service::Morph(CallbackServerContext* ctx,
                                                         const v1::MorphRequest* req) {
  auto start = [&]() -> absl::StatusOr<MorphReactor*> {
    ASSIGN_OR_RETURN(Caller caller, impl_->Admit(ctx));
    RETURN_IF_ERROR(
        CheckMorphRequest(*req, {impl_->limits.max_steps, impl_->limits.max_morph_frames}));
    ASSIGN_OR_RETURN(const ModelInfo* model,
                     impl_->ModelFor(caller, req->model(), {&req->a(), &req->b()}));
    const int frames = req->frames() == 0 ? defaults::kMorphFrames : req->frames();
    const uint64_t seed = req->render().noise_seed();
    ASSIGN_OR_RETURN(LatentInput a, impl_->Resolve(caller, req->a(), *model, "a", seed));
    ASSIGN_OR_RETURN(LatentInput b, impl_->Resolve(caller, req->b(), *model, "b", seed));
    ASSIGN_OR_RETURN(std::shared_ptr<const PastePlan> plan,
                     impl_->PastePlanFor(req->has_paste_into(), req->paste_into(), a));
    ASSIGN_OR_RETURN(ConcurrencyLimiter::Lease lease, impl_->streams.Acquire(caller.tenant));
    MorphReactor::Paste paste{plan, impl_->image_pool.get(), impl_->decode_limits(),
                              impl_->limits.max_message_bytes};
    MorphReactor::Frames sequence;
    sequence.alphas = MorphAlphas(frames, /*include_endpoints=*/true);
    sequence.latent = [a = a.w, b = b.w,
                       alphas = sequence.alphas](int i) -> absl::StatusOr<torch::Tensor> {
      ASSIGN_OR_RETURN(torch::Tensor w, i2s::Morph(a, b, {alphas[i]}));
      return w[0];
    };
    sequence.noise_source = std::move(a);
    return new MorphReactor(impl_->scheduler, impl_->registry, caller.tenant, model,
                            std::move(sequence), RenderSettingsOf(req->render()), DeadlineOf(ctx),
                            absl::Seconds(impl_->limits.device_wait_seconds), std::move(lease),
                            std::move(paste));
  };
  auto reactor = start();
  if (!reactor.ok()) return new ErrorWriter<v1::MorphFrame>(reactor.status());
  return *reactor;
}

grpc::ServerUnaryReactor* Service::StyleMix(CallbackServerContext* ctx,
                                            const v1::StyleMixRequest* req,
                                            v1::EditResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  auto prepare = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Caller caller, impl_->Admit(ctx));
    if (req->store_result() && !accepting_) {
      return absl::UnavailableError("the server is shutting down");
    }
    RETURN_IF_ERROR(CheckStyleMixRequest(*req));
    ASSIGN_OR_RETURN(const ModelInfo* model,
                     impl_->ModelFor(caller, req->model(), {&req->content(), &req->style()}));
    if (req->crossover() > model->num_layers) {
      return Field("crossover", absl::StrCat("must be in [0, ", model->num_layers, "]"));
    }
    const uint64_t seed = req->render().noise_seed();
    ASSIGN_OR_RETURN(LatentInput content,
                     impl_->Resolve(caller, req->content(), *model, "content", seed));
    ASSIGN_OR_RETURN(LatentInput style,
                     impl_->Resolve(caller, req->style(), *model, "style", seed));
    ASSIGN_OR_RETURN(std::shared_ptr<const PastePlan> paste,
                     impl_->PastePlanFor(req->has_paste_into(), req->paste_into(), content));
    ASSIGN_OR_RETURN(torch::Tensor mixed, i2s::StyleMix(content.w, style.w, req->crossover()));
    mixed = mixed[0].contiguous();
    if (req->store_result()) {
      ASSIGN_OR_RETURN(
          LatentRecord stored,
          StoreNewLatent(impl_->store, caller.tenant,
                         {"StyleMix", req->request_id(), RequestHash(*req)},
                         EditResult(*model, mixed, content, "stylemix", {content.id, style.id},
                                    nlohmann::json{{"crossover", req->crossover()}}.dump(),
                                    LabelsOf(req->labels()))));
      ToProto(stored, resp->mutable_latent());
    }
    impl_->RenderAndFinish(ctx, reactor, caller.tenant, model, mixed, content,
                           RenderSettingsOf(req->render()), resp->mutable_image(), paste,
                           resp->mutable_pasted());
    return absl::OkStatus();
  };
  absl::Status s = prepare();
  if (!s.ok()) reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

grpc::ServerUnaryReactor* Service::ExpressionTransfer(CallbackServerContext* ctx,
                                                      const v1::ExpressionTransferRequest* req,
                                                      v1::EditResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  auto prepare = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Caller caller, impl_->Admit(ctx));
    if (req->store_result() && !accepting_) {
      return absl::UnavailableError("the server is shutting down");
    }
    RETURN_IF_ERROR(CheckExpressionTransferRequest(*req));
    ASSIGN_OR_RETURN(const ModelInfo* model,
                     impl_->ModelFor(caller, req->model(),
                                     {&req->target(), &req->neutral(), &req->expression()}));
    const int last = req->has_last_layer() ? req->last_layer() : model->num_layers - 1;
    if (req->first_layer() < 0 || req->first_layer() >= model->num_layers) {
      return Field("first_layer", absl::StrCat("must be in [0, ", model->num_layers - 1, "]"));
    }
    if (last < req->first_layer() || last >= model->num_layers) {
      return Field("last_layer",
                   absl::StrCat("must be in [first_layer, ", model->num_layers - 1, "]"));
    }
    const uint64_t seed = req->render().noise_seed();
    ASSIGN_OR_RETURN(LatentInput target,
                     impl_->Resolve(caller, req->target(), *model, "target", seed));
    ASSIGN_OR_RETURN(LatentInput neutral,
                     impl_->Resolve(caller, req->neutral(), *model, "neutral", seed));
    ASSIGN_OR_RETURN(LatentInput expr,
                     impl_->Resolve(caller, req->expression(), *model, "expression", seed));
    ASSIGN_OR_RETURN(std::shared_ptr<const PastePlan> paste,
                     impl_->PastePlanFor(req->has_paste_into(), req->paste_into(), target));
    ASSIGN_OR_RETURN(torch::Tensor w,
                     i2s::ExpressionTransfer(target.w, neutral.w, expr.w, req->strength(),
                                             req->first_layer(), last));
    w = w.reshape({model->num_layers, model->latent_size}).contiguous();
    if (req->store_result()) {
      const nlohmann::json params = {
          {"lambda", req->strength()}, {"first_layer", req->first_layer()}, {"last_layer", last}};
      ASSIGN_OR_RETURN(LatentRecord stored,
                       StoreNewLatent(impl_->store, caller.tenant,
                                      {"ExpressionTransfer", req->request_id(), RequestHash(*req)},
                                      EditResult(*model, w, target, "expression",
                                                 {target.id, neutral.id, expr.id}, params.dump(),
                                                 LabelsOf(req->labels()))));
      ToProto(stored, resp->mutable_latent());
    }
    impl_->RenderAndFinish(ctx, reactor, caller.tenant, model, w, target,
                           RenderSettingsOf(req->render()), resp->mutable_image(), paste,
                           resp->mutable_pasted());
    return absl::OkStatus();
  };
  absl::Status s = prepare();
  if (!s.ok()) reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

}  // namespace i2s

// The Service's spatially local edits (Image2StyleGAN++): LocalBlend, a region of one
// latent's image taken into another's through the generator's activations. The blend is
// the engine's (Generator::SynthesizeBlend, local_blend.h); the render runs as a device
// task like Synthesize's.
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/defaults.h"
#include "common/status_macros.h"
#include "server/api/convert.h"
#include "server/api/internal/service_impl.h"
#include "server/api/request_check.h"
#include "server/api/service.h"
#include "server/api/status.h"
#include "server/engine/local_blend.h"
#include "server/imaging/image_io.h"
#include "server/imaging/mask.h"

namespace i2s {

grpc::ServerUnaryReactor* Service::LocalBlend(CallbackServerContext* ctx,
                                              const v1::LocalBlendRequest* req,
                                              v1::LocalBlendResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  auto prepare = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Caller caller, impl_->Admit(ctx));
    RETURN_IF_ERROR(CheckLocalBlendRequest(*req));
    ASSIGN_OR_RETURN(const ModelInfo* model,
                     impl_->ModelFor(caller, req->model(), {&req->base(), &req->source()}));
    const int r = model->resolution;
    if (req->start_layer() >= model->num_layers) {
      return Field("start_layer", absl::StrCat("must be in [0, ", model->num_layers - 1, "]"));
    }
    const int feather =
        req->has_feather() ? req->feather() : std::max(1, r / defaults::kLocalBlendFeatherDivisor);
    if (feather > r) return Field("feather", absl::StrCat("must be in [0, ", r, "]"));
    // The mask's size is checked from its header, so only a mask of the render's size
    // (small next to a photo) is decoded, here.
    ASSIGN_OR_RETURN(const ImageHeader header,
                     CheckImageLimits(req->mask(), impl_->decode_limits(), "mask"));
    if (header.width != r || header.height != r) {
      return Field("mask", absl::StrCat(header.width, "x", header.height, ", but the model's ",
                                        "renders are ", r, "x", r));
    }
    ASSIGN_OR_RETURN(torch::Tensor mask, DecodeMask(req->mask(), impl_->decode_limits(), "mask"));
    if (!(mask.sum().item<double>() > 0)) return Field("mask", "selects no pixel (all black)");
    ASSIGN_OR_RETURN(torch::Tensor feathered, FeatherMask(mask.unsqueeze(0), feather));
    const uint64_t seed = req->render().noise_seed();
    ASSIGN_OR_RETURN(LatentInput base, impl_->Resolve(caller, req->base(), *model, "base", seed));
    ASSIGN_OR_RETURN(LatentInput source,
                     impl_->Resolve(caller, req->source(), *model, "source", seed));
    ASSIGN_OR_RETURN(std::shared_ptr<const PastePlan> paste,
                     impl_->PastePlanFor(req->has_paste_into(), req->paste_into(), base));
    // The mask used, as a grey PNG: black exactly where the image is base's.
    ASSIGN_OR_RETURN(std::string png, EncodeRgb8(UnitImageToRgb8(feathered[0].expand({3, r, r})),
                                                 EncodeFormat::kPng));
    resp->mutable_mask()->set_data(std::move(png));
    resp->mutable_mask()->set_format(v1::PNG);
    resp->mutable_mask()->set_width(r);
    resp->mutable_mask()->set_height(r);
    RenderSettings render = RenderSettingsOf(req->render());
    render.blend = {source.w, feathered, req->start_layer()};
    const torch::Tensor w = base.w;
    impl_->RenderAndFinish(ctx, reactor, caller.tenant, model, w, std::move(base), render,
                           resp->mutable_image(), paste, resp->mutable_pasted());
    return absl::OkStatus();
  };
  absl::Status s = prepare();
  if (!s.ok()) reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

}  // namespace i2s

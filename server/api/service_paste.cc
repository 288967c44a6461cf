// The Service's PasteBack: stored or inline latents rendered on a device worker, then
// pasted into the caller's photo and encoded on the image WorkPool (paste_back.h).
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/api/convert.h"
#include "server/api/internal/service_impl.h"
#include "server/api/paste_back.h"
#include "server/api/request_check.h"
#include "server/api/service.h"
#include "server/api/status.h"

namespace i2s {

grpc::ServerUnaryReactor* Service::PasteBack(CallbackServerContext* ctx,
                                             const v1::PasteBackRequest* req,
                                             v1::PasteBackResponse* resp) {
  struct Face {
    const ModelInfo* model;
    LatentInput latent;
    RenderSettings render;
  };
  auto faces = std::make_shared<std::vector<Face>>();
  std::string tenant;
  auto prepare = [&]() -> absl::StatusOr<std::shared_ptr<const PastePlan>> {
    ASSIGN_OR_RETURN(Caller caller, impl_->Admit(ctx));
    tenant = caller.tenant;
    RETURN_IF_ERROR(CheckPasteBackRequest(*req));
    RETURN_IF_ERROR(CheckImageLimits(req->photo(), impl_->decode_limits(), "photo").status());
    PastePlan plan = PastePlanOf(req->photo(), req->options(), "photo");
    for (int i = 0; i < req->faces_size(); ++i) {
      const v1::PasteFace& f = req->faces(i);
      const std::string field = absl::StrCat("faces[", i, "]");
      ASSIGN_OR_RETURN(const ModelInfo* model, impl_->ModelFor(caller, f.model(), {&f.latent()}));
      ASSIGN_OR_RETURN(
          LatentInput latent,
          impl_->Resolve(caller, f.latent(), *model, field + ".latent", f.render().noise_seed()));
      ASSIGN_OR_RETURN(PasteTarget target, PasteTargetOf(latent, f.transform(), field));
      plan.targets.push_back(target);
      faces->push_back({model, std::move(latent), RenderSettingsOf(f.render())});
    }
    return std::make_shared<const PastePlan>(std::move(plan));
  };
  auto plan = prepare();
  if (!plan.ok()) return Done(ctx, plan.status());
  auto* reactor = ctx->DefaultReactor();
  auto renders = std::make_shared<std::vector<torch::Tensor>>();
  impl_->scheduler->RunTask(
      [this, faces, renders](int device) -> absl::Status {
        for (size_t i = 0; i < faces->size(); ++i) {
          const Face& f = (*faces)[i];
          ASSIGN_OR_RETURN(
              torch::Tensor out,
              RenderRaw(*impl_->registry->generator(device, f.model->name), f.latent.w, f.latent,
                        f.render.noise, absl::StrCat("faces[", i, "].render")));
          renders->push_back(std::move(out));
        }
        return absl::OkStatus();
      },
      impl_->TaskDeadline(DeadlineOf(ctx)),
      [this, reactor, tenant, plan = *plan, renders, resp](absl::Status s) {
        if (!s.ok()) {
          reactor->Finish(ToGrpcStatus(s));
          return;
        }
        impl_->PasteAndFinish(reactor, tenant, plan, renders, resp->mutable_photo());
      },
      tenant, [ctx] { return ctx->IsCancelled(); });
  return reactor;
}

}  // namespace i2s

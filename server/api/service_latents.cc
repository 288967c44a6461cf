// The Service's latent RPCs: GetLatent, ListLatents, DeleteLatent, ImportLatent,
// ExportLatent.
#include <utility>

#include "common/status_macros.h"
#include "server/api/convert.h"
#include "server/api/internal/service_impl.h"
#include "server/api/request_check.h"
#include "server/api/service.h"
#include "server/base/log.h"
#include "server/latents/latent_file.h"
#include "server/latents/new_latent.h"

namespace i2s {

grpc::ServerUnaryReactor* Service::GetLatent(CallbackServerContext* ctx,
                                             const v1::GetLatentRequest* req, v1::Latent* resp) {
  auto caller = impl_->Admit(ctx);
  if (!caller.ok()) return Done(ctx, caller.status());
  if (req->latent_id().empty()) return Done(ctx, Field("latent_id", "empty"));
  auto rec = impl_->LatentFor(*caller, req->latent_id(), req->include_values());
  if (rec.ok()) ToProto(*rec, resp);
  return Done(ctx, rec.status());
}

grpc::ServerUnaryReactor* Service::ListLatents(CallbackServerContext* ctx,
                                               const v1::ListLatentsRequest* req,
                                               v1::ListLatentsResponse* resp) {
  auto caller = impl_->Admit(ctx);
  if (!caller.ok()) return Done(ctx, caller.status());
  auto tenant = Impl::ListingTenant(*caller, req->all_tenants());
  if (!tenant.ok()) return Done(ctx, tenant.status());
  auto page = PageOf(req->page_size(), req->page_token());
  if (!page.ok()) return Done(ctx, page.status());
  auto fingerprint = impl_->ListingFingerprint(req->model());
  if (!fingerprint.ok()) return Done(ctx, fingerprint.status());
  auto list = impl_->store->ListLatents(*page, *fingerprint, *tenant);
  if (list.ok()) {
    for (const LatentRecord& r : list->latents) ToProto(r, resp->add_latents());
    resp->set_next_page_token(list->next_page_token);
  }
  return Done(ctx, list.status());
}

grpc::ServerUnaryReactor* Service::DeleteLatent(CallbackServerContext* ctx,
                                                const v1::DeleteLatentRequest* req,
                                                v1::DeleteLatentResponse* resp) {
  auto caller = impl_->Admit(ctx);
  if (!caller.ok()) return Done(ctx, caller.status());
  if (req->latent_id().empty()) return Done(ctx, Field("latent_id", "empty"));
  auto owned = impl_->LatentFor(*caller, req->latent_id(), /*with_values=*/false);
  if (!owned.ok()) return Done(ctx, owned.status());
  absl::Status deleted = impl_->store->DeleteLatent(req->latent_id());
  if (deleted.ok()) {
    LogEvent("latent_deleted").Str("latent_id", req->latent_id()).Str("tenant", caller->tenant);
  }
  return Done(ctx, deleted);
}

grpc::ServerUnaryReactor* Service::ImportLatent(CallbackServerContext* ctx,
                                                const v1::ImportLatentRequest* req,
                                                v1::Latent* resp) {
  auto run = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Caller caller, impl_->Admit(ctx));
    if (!accepting_) return absl::UnavailableError("the server is shutting down");
    RETURN_IF_ERROR(CheckImportLatentRequest(*req));
    auto found = impl_->registry->Find(req->model());
    if (!found.ok()) return Annotate(found.status(), "model");
    ASSIGN_OR_RETURN(LatentRecord rec, ImportedLatent(req->npy(), **found, "npy"));
    rec.noise_seed = req->noise_seed();
    rec.labels = LabelsOf(req->labels());
    ASSIGN_OR_RETURN(
        LatentRecord stored,
        StoreNewLatent(impl_->store, caller.tenant,
                       {"ImportLatent", req->request_id(), RequestHash(*req)}, std::move(rec)));
    ToProto(stored, resp);
    return absl::OkStatus();
  };
  return Done(ctx, run());
}

grpc::ServerUnaryReactor* Service::ExportLatent(CallbackServerContext* ctx,
                                                const v1::ExportLatentRequest* req,
                                                v1::ExportLatentResponse* resp) {
  auto caller = impl_->Admit(ctx);
  if (!caller.ok()) return Done(ctx, caller.status());
  if (req->latent_id().empty()) return Done(ctx, Field("latent_id", "empty"));
  if (!v1::LatentFileFormat_IsValid(req->format())) {
    return Done(ctx, Field("format", absl::StrCat("unknown format ", req->format())));
  }
  auto rec = impl_->LatentFor(*caller, req->latent_id(), /*with_values=*/true);
  if (!rec.ok()) return Done(ctx, rec.status());
  const bool projected_w = req->format() == v1::LATENT_FILE_PROJECTED_W;
  auto file = LatentFile(*rec, projected_w);
  if (!file.ok()) return Done(ctx, file.status());
  if (projected_w) {
    resp->set_projected_w_npz(*std::move(file));
  } else {
    resp->set_npy(*std::move(file));
  }
  rec->values.clear();  // the file has them
  rec->noise_npz.clear();
  ToProto(*rec, resp->mutable_latent());
  return Done(ctx, absl::OkStatus());
}

}  // namespace i2s

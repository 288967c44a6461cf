// The Service's RPCs about the server and its tenants: GetServerInfo (models, devices,
// limits, quotas, the caller) and GetUsage (what a tenant keeps, against its quotas).
#include <utility>
#include <vector>

#include "common/status_macros.h"
#include "server/api/convert.h"
#include "server/api/internal/service_impl.h"
#include "server/api/request_check.h"
#include "server/api/service.h"

namespace i2s {

grpc::ServerUnaryReactor* Service::GetServerInfo(CallbackServerContext* ctx,
                                                 const v1::GetServerInfoRequest* req,
                                                 v1::ServerInfo* resp) {
  auto caller = impl_->Admit(ctx);
  if (!caller.ok()) return Done(ctx, caller.status());
  resp->set_version(impl_->version);
  resp->set_caller_tenant(caller->tenant);
  resp->set_caller_admin(caller->admin);
  resp->set_auth_required(impl_->auth->required());
  resp->set_has_lpips(impl_->registry->has_lpips());
  for (const ModelInfo& m : impl_->registry->models()) ToProto(m, resp->add_models());
  for (const std::string& d : impl_->registry->device_names()) resp->add_devices(d);
  const SchedulerOptions& s = impl_->scheduler->options();
  ToProto(impl_->limits, s, resp->mutable_limits());
  ToProto(impl_->store->quota(), s, resp->mutable_limits()->mutable_quotas());
  resp->set_queued_jobs(impl_->scheduler->queued());
  resp->set_running_jobs(impl_->scheduler->running());
  if (impl_->face_detector != nullptr) {
    resp->set_face_detector(impl_->face_detector->description());
  }
  return Done(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* Service::GetUsage(CallbackServerContext* ctx,
                                            const v1::GetUsageRequest* req,
                                            v1::GetUsageResponse* resp) {
  auto run = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Caller caller, impl_->Admit(ctx));
    if (req->all_tenants() && !req->tenant().empty()) {
      return Field("tenant", "must be empty with all_tenants");
    }
    std::vector<TenantUsage> usage;
    if (req->all_tenants()) {
      if (!caller.admin) return absl::PermissionDeniedError("all_tenants: needs an admin token");
      ASSIGN_OR_RETURN(usage, impl_->store->AllUsage());
    } else {
      const std::string& tenant = req->tenant().empty() ? caller.tenant : req->tenant();
      if (!caller.CanAccess(tenant)) {
        return absl::PermissionDeniedError("tenant: another tenant's usage needs an admin token");
      }
      ASSIGN_OR_RETURN(TenantUsage one, impl_->store->Usage(tenant));
      usage.push_back(std::move(one));
    }
    for (const TenantUsage& u : usage) ToProto(u, resp->add_usage());
    ToProto(impl_->store->quota(), impl_->scheduler->options(), resp->mutable_quotas());
    return absl::OkStatus();
  };
  return Done(ctx, run());
}

}  // namespace i2s

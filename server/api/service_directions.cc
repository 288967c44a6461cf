// The Service's semantic directions: ImportDirection, ComputeDirection, ListDirections,
// GetDirection, DeleteDirection (kept in the store per tenant and model, by name), and the
// edits along them: ApplyDirections (rendered, stored with store_result) and
// DirectionFrames (a stream, as Morph's). The arithmetic is the engine's (directions.h).
#include <nlohmann/json.hpp>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/api/convert.h"
#include "server/api/error_writer.h"
#include "server/api/internal/service_impl.h"
#include "server/api/request_check.h"
#include "server/api/service.h"
#include "server/api/status.h"
#include "server/api/streams.h"
#include "server/base/log.h"
#include "server/base/sha256.h"
#include "server/engine/directions.h"
#include "server/latents/new_latent.h"

namespace i2s {
namespace {

LatentLayout LayoutOf(const ModelInfo& m) { return {m.num_layers, m.latent_size}; }

DirectionRecord RecordOf(const Direction& d, const ModelInfo& model, const std::string& tenant,
                         std::string params_json) {
  DirectionRecord r;
  r.tenant = tenant;
  r.fingerprint = model.fingerprint;
  r.name = d.name;
  r.model = model.name;
  r.num_layers = d.vector.dim() == 1 ? 1 : static_cast<int>(d.vector.size(0));
  r.latent_size = static_cast<int>(d.vector.size(-1));
  torch::Tensor flat = d.vector.to(torch::kCPU, torch::kFloat32).contiguous().view({-1});
  r.values.assign(flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel());
  r.sigma = d.sigma;
  r.source = d.source_format;
  r.params_json = std::move(params_json);
  r.created_unix_ms = absl::ToUnixMillis(absl::Now());
  return r;
}

void DirectionToProto(const DirectionRecord& r, v1::Direction* out) {
  ToProto(r, out);
  double sum = 0;
  for (float v : r.values) sum += double(v) * v;
  if (!r.values.empty()) out->set_norm(std::sqrt(sum));
}

// Stores `d` for the tenant (ImportDirection, ComputeDirection) and answers with what is
// stored: the earlier record when the same content was stored before under its name.
absl::Status StoreDirection(Store* store, const Direction& d, const ModelInfo& model,
                            const std::string& tenant, std::string params_json,
                            v1::Direction* out) {
  absl::Status put = store->PutDirection(RecordOf(d, model, tenant, std::move(params_json)));
  if (absl::IsAlreadyExists(put)) return Annotate(put, "name");
  RETURN_IF_ERROR(put);
  ASSIGN_OR_RETURN(DirectionRecord stored, store->GetDirection(tenant, model.fingerprint, d.name,
                                                               /*with_values=*/false));
  DirectionToProto(stored, out);
  out->set_norm(torch::norm(d.vector).item<double>());
  return absl::OkStatus();
}

// A stored direction of `model` for the caller, as the engine's Direction; errors name
// `field`.
absl::StatusOr<Direction> LoadDirection(Store* store, const std::string& tenant,
                                        const ModelInfo& model, const std::string& name,
                                        const std::string& field) {
  auto rec = store->GetDirection(tenant, model.fingerprint, name);
  if (absl::IsNotFound(rec.status())) {
    return absl::NotFoundError(absl::StrCat(field, ": no direction \"", name, "\" for model \"",
                                            model.name,
                                            "\" (directions are per model: see "
                                            "ListDirections)"));
  }
  RETURN_IF_ERROR(rec.status());
  Direction d;
  d.name = rec->name;
  d.sigma = rec->sigma;
  d.source_format = rec->source;
  torch::Tensor v = torch::from_blob(rec->values.data(), {static_cast<int64_t>(rec->values.size())},
                                     torch::kFloat32)
                        .clone();
  d.vector = rec->num_layers == 1 ? v : v.view({rec->num_layers, rec->latent_size});
  RETURN_IF_ERROR(ValidateDirection(d, LayoutOf(model), field));
  return d;
}

absl::StatusOr<std::vector<Direction>> LoadDirections(
    Store* store, const std::string& tenant, const ModelInfo& model,
    const google::protobuf::RepeatedPtrField<std::string>& names, const std::string& field) {
  std::vector<Direction> out;
  for (int i = 0; i < names.size(); ++i) {
    ASSIGN_OR_RETURN(Direction d, LoadDirection(store, tenant, model, names[i],
                                                absl::StrCat(field, "[", i, "]")));
    out.push_back(std::move(d));
  }
  return out;
}

// An engine error about the directions in the request's terms: the engine names
// "conditions" and "directions[i]", the request condition_on and steps[i].
absl::Status InRequestTerms(const absl::Status& s) {
  if (s.ok()) return s;
  const absl::string_view m = s.message();
  for (const auto& [engine, request] :
       {std::pair<absl::string_view, absl::string_view>{"conditions", "condition_on"},
        {"directions[", "steps["}}) {
    if (absl::StartsWith(m, engine)) {
      return absl::Status(s.code(), absl::StrCat(request, m.substr(engine.size())));
    }
  }
  return s;
}

// The edited rows [first, last] of a request, checked against the model.
absl::StatusOr<ApplyDirectionsOptions> RowsOf(int first, bool has_last, int last,
                                              const ModelInfo& model) {
  if (first >= model.num_layers) {
    return Field("first_layer", absl::StrCat("must be in [0, ", model.num_layers - 1, "]"));
  }
  if (has_last && last >= model.num_layers) {
    return Field("last_layer",
                 absl::StrCat("must be in [first_layer, ", model.num_layers - 1, "]"));
  }
  ApplyDirectionsOptions o;
  o.first_layer = first;
  o.last_layer = has_last ? last : model.num_layers - 1;
  return o;
}

}  // namespace

grpc::ServerUnaryReactor* Service::ImportDirection(CallbackServerContext* ctx,
                                                   const v1::ImportDirectionRequest* req,
                                                   v1::ImportDirectionResponse* resp) {
  auto run = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Caller caller, impl_->Admit(ctx));
    RETURN_IF_ERROR(CheckImportDirectionRequest(*req));
    ASSIGN_OR_RETURN(const ModelInfo* model, impl_->ModelFor(caller, req->model(), {}));
    DirectionImportOptions o;
    o.layout = LayoutOf(*model);
    o.name = req->name();
    o.components.assign(req->components().begin(), req->components().end());
    ASSIGN_OR_RETURN(std::vector<Direction> found, ImportDirections(req->file(), o));
    const std::string sha = absl::StrCat("sha256:", Sha256Hex(req->file()));
    // One by one: on an error the ones before it stay stored, and a repeat of the call
    // (the same content is no error) stores the rest.
    for (size_t i = 0; i < found.size(); ++i) {
      const Direction& d = found[i];
      RETURN_IF_ERROR(CheckDirectionName(d.name, "name"));
      nlohmann::json params{{"file_sha256", sha}};
      if (d.source_format == kGanSpaceFormat) {  // in the order asked for, or all in order
        params["component"] = o.components.empty() ? static_cast<int>(i) : o.components[i];
      }
      RETURN_IF_ERROR(StoreDirection(impl_->store, d, *model, caller.tenant, params.dump(),
                                     resp->add_directions()));
    }
    LogEvent("directions_imported")
        .Str("tenant", caller.tenant)
        .Str("model", model->name)
        .Int("count", static_cast<int64_t>(found.size()));
    return absl::OkStatus();
  };
  return Done(ctx, run());
}

grpc::ServerUnaryReactor* Service::ComputeDirection(CallbackServerContext* ctx,
                                                    const v1::ComputeDirectionRequest* req,
                                                    v1::Direction* resp) {
  auto run = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Caller caller, impl_->Admit(ctx));
    RETURN_IF_ERROR(CheckComputeDirectionRequest(*req));
    ASSIGN_OR_RETURN(const ModelInfo* model,
                     impl_->ModelFor(caller, req->model(), {&req->from_latents(0)}));
    std::vector<torch::Tensor> sides[2];
    nlohmann::json ids[2] = {nlohmann::json::array(), nlohmann::json::array()};
    const google::protobuf::RepeatedPtrField<v1::LatentRef>* refs[2] = {&req->from_latents(),
                                                                        &req->to_latents()};
    const char* fields[2] = {"from_latents", "to_latents"};
    for (int s = 0; s < 2; ++s) {
      for (int i = 0; i < refs[s]->size(); ++i) {
        ASSIGN_OR_RETURN(LatentInput in, impl_->Resolve(caller, (*refs[s])[i], *model,
                                                        absl::StrCat(fields[s], "[", i, "]"), 0));
        sides[s].push_back(in.w);
        ids[s].push_back(in.id);
      }
    }
    ASSIGN_OR_RETURN(Direction d,
                     MeanDifferenceDirection(torch::stack(sides[0]), torch::stack(sides[1]),
                                             req->collapse_to_w(), req->name()));
    nlohmann::json params{
        {"from_latents", ids[0]}, {"to_latents", ids[1]}, {"collapse_to_w", req->collapse_to_w()}};
    RETURN_IF_ERROR(StoreDirection(impl_->store, d, *model, caller.tenant, params.dump(), resp));
    return absl::OkStatus();
  };
  return Done(ctx, run());
}

grpc::ServerUnaryReactor* Service::ListDirections(CallbackServerContext* ctx,
                                                  const v1::ListDirectionsRequest* req,
                                                  v1::ListDirectionsResponse* resp) {
  auto run = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Caller caller, impl_->Admit(ctx));
    ASSIGN_OR_RETURN(std::optional<std::string> tenant,
                     Impl::ListingTenant(caller, req->all_tenants()));
    ASSIGN_OR_RETURN(Page page, PageOf(req->page_size(), req->page_token()));
    ASSIGN_OR_RETURN(std::string fingerprint, impl_->ListingFingerprint(req->model()));
    ASSIGN_OR_RETURN(DirectionPage list, impl_->store->ListDirections(page, fingerprint, tenant));
    for (const DirectionRecord& r : list.directions) DirectionToProto(r, resp->add_directions());
    resp->set_next_page_token(list.next_page_token);
    return absl::OkStatus();
  };
  return Done(ctx, run());
}

grpc::ServerUnaryReactor* Service::GetDirection(CallbackServerContext* ctx,
                                                const v1::GetDirectionRequest* req,
                                                v1::Direction* resp) {
  auto run = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Caller caller, impl_->Admit(ctx));
    RETURN_IF_ERROR(CheckDirectionName(req->name(), "name"));
    ASSIGN_OR_RETURN(const ModelInfo* model, impl_->ModelFor(caller, req->model(), {}));
    auto rec = impl_->store->GetDirection(caller.tenant, model->fingerprint, req->name(),
                                          /*with_values=*/true);
    if (absl::IsNotFound(rec.status())) return Annotate(rec.status(), "name");
    RETURN_IF_ERROR(rec.status());
    DirectionToProto(*rec, resp);
    if (!req->include_values()) resp->clear_values();
    return absl::OkStatus();
  };
  return Done(ctx, run());
}

grpc::ServerUnaryReactor* Service::DeleteDirection(CallbackServerContext* ctx,
                                                   const v1::DeleteDirectionRequest* req,
                                                   v1::DeleteDirectionResponse* resp) {
  auto run = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Caller caller, impl_->Admit(ctx));
    RETURN_IF_ERROR(CheckDirectionName(req->name(), "name"));
    ASSIGN_OR_RETURN(const ModelInfo* model, impl_->ModelFor(caller, req->model(), {}));
    absl::Status deleted =
        impl_->store->DeleteDirection(caller.tenant, model->fingerprint, req->name());
    if (absl::IsNotFound(deleted)) return Annotate(deleted, "name");
    RETURN_IF_ERROR(deleted);
    LogEvent("direction_deleted")
        .Str("tenant", caller.tenant)
        .Str("model", model->name)
        .Str("name", req->name());
    return absl::OkStatus();
  };
  return Done(ctx, run());
}

grpc::ServerUnaryReactor* Service::ApplyDirections(CallbackServerContext* ctx,
                                                   const v1::ApplyDirectionsRequest* req,
                                                   v1::EditResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  auto prepare = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(Caller caller, impl_->Admit(ctx));
    if (req->store_result() && !accepting_) {
      return absl::UnavailableError("the server is shutting down");
    }
    RETURN_IF_ERROR(CheckApplyDirectionsRequest(*req));
    ASSIGN_OR_RETURN(const ModelInfo* model,
                     impl_->ModelFor(caller, req->model(), {&req->latent()}));
    ASSIGN_OR_RETURN(ApplyDirectionsOptions options,
                     RowsOf(req->first_layer(), req->has_last_layer(), req->last_layer(), *model));
    ASSIGN_OR_RETURN(LatentInput latent, impl_->Resolve(caller, req->latent(), *model, "latent",
                                                        req->render().noise_seed()));
    std::vector<Direction> directions;
    std::vector<double> alphas;
    nlohmann::json steps = nlohmann::json::array();
    for (int i = 0; i < req->steps_size(); ++i) {
      const v1::DirectionStep& s = req->steps(i);
      ASSIGN_OR_RETURN(Direction d, LoadDirection(impl_->store, caller.tenant, *model, s.name(),
                                                  absl::StrCat("steps[", i, "].name")));
      steps.push_back({{"name", s.name()}, {"alpha", s.alpha()}, {"sigma", d.sigma}});
      directions.push_back(std::move(d));
      alphas.push_back(s.alpha());
    }
    ASSIGN_OR_RETURN(options.conditions, LoadDirections(impl_->store, caller.tenant, *model,
                                                        req->condition_on(), "condition_on"));
    auto applied = i2s::ApplyDirections(latent.w, directions, alphas, options);
    RETURN_IF_ERROR(InRequestTerms(applied.status()));
    torch::Tensor edited = *std::move(applied);
    edited = edited[0].contiguous();
    ASSIGN_OR_RETURN(std::shared_ptr<const PastePlan> paste,
                     impl_->PastePlanFor(req->has_paste_into(), req->paste_into(), latent));
    if (req->store_result()) {
      nlohmann::json params{
          {"steps", steps},
          {"first_layer", options.first_layer},
          {"last_layer", options.last_layer},
          {"condition_on", nlohmann::json(std::vector<std::string>(req->condition_on().begin(),
                                                                   req->condition_on().end()))}};
      ASSIGN_OR_RETURN(LatentRecord stored,
                       StoreNewLatent(impl_->store, caller.tenant,
                                      {"ApplyDirections", req->request_id(), RequestHash(*req)},
                                      EditResult(*model, edited, latent, "directions", {latent.id},
                                                 params.dump(), LabelsOf(req->labels()))));
      ToProto(stored, resp->mutable_latent());
    }
    impl_->RenderAndFinish(ctx, reactor, caller.tenant, model, edited, latent,
                           RenderSettingsOf(req->render()), resp->mutable_image(), paste,
                           resp->mutable_pasted());
    return absl::OkStatus();
  };
  absl::Status s = prepare();
  if (!s.ok()) reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

grpc::ServerWriteReactor<v1::MorphFrame>* Service::DirectionFrames(
    CallbackServerContext* ctx, const v1::DirectionFramesRequest* req) {
  auto start = [&]() -> absl::StatusOr<MorphReactor*> {
    ASSIGN_OR_RETURN(Caller caller, impl_->Admit(ctx));
    RETURN_IF_ERROR(CheckDirectionFramesRequest(
        *req, {impl_->limits.max_steps, impl_->limits.max_morph_frames}));
    ASSIGN_OR_RETURN(const ModelInfo* model,
                     impl_->ModelFor(caller, req->model(), {&req->latent()}));
    ASSIGN_OR_RETURN(ApplyDirectionsOptions options,
                     RowsOf(req->first_layer(), req->has_last_layer(), req->last_layer(), *model));
    ASSIGN_OR_RETURN(LatentInput latent, impl_->Resolve(caller, req->latent(), *model, "latent",
                                                        req->render().noise_seed()));
    ASSIGN_OR_RETURN(Direction direction, LoadDirection(impl_->store, caller.tenant, *model,
                                                        req->direction(), "direction"));
    ASSIGN_OR_RETURN(options.conditions, LoadDirections(impl_->store, caller.tenant, *model,
                                                        req->condition_on(), "condition_on"));
    // The first frame now, so that a bad combination fails the call before it streams.
    RETURN_IF_ERROR(InRequestTerms(
        i2s::ApplyDirections(latent.w, {direction}, {req->alphas(0)}, options).status()));
    ASSIGN_OR_RETURN(ConcurrencyLimiter::Lease lease, impl_->streams.Acquire(caller.tenant));
    MorphReactor::Frames frames;
    frames.alphas.assign(req->alphas().begin(), req->alphas().end());
    frames.latent = [w = latent.w, direction, options,
                     alphas = frames.alphas](int i) -> absl::StatusOr<torch::Tensor> {
      ASSIGN_OR_RETURN(torch::Tensor edited,
                       i2s::ApplyDirections(w, {direction}, {alphas[i]}, options));
      return edited[0];
    };
    frames.noise_source = std::move(latent);
    return new MorphReactor(impl_->scheduler, impl_->registry, caller.tenant, model,
                            std::move(frames), RenderSettingsOf(req->render()), DeadlineOf(ctx),
                            absl::Seconds(impl_->limits.device_wait_seconds), std::move(lease),
                            MorphReactor::Paste{});
  };
  auto reactor = start();
  if (!reactor.ok()) return new ErrorWriter<v1::MorphFrame>(reactor.status());
  return *reactor;
}

}  // namespace i2s

#include "server/api/service.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "server/api/convert.h"
#include "server/api/internal/service_impl.h"
#include "server/api/request_check.h"
#include "server/api/status.h"

namespace i2s {
namespace {

WorkPool::Options ImagePoolOptions(const ServiceLimits& limits) {
  WorkPool::Options o;
  o.threads = limits.max_concurrent_images;
  o.queue_limit = limits.image_queue_limit;
  o.tenant_limit = limits.tenant_max_images;
  o.what = "image decodes and alignments";
  return o;
}

// The NotFound of an ID that does not exist, also given for one of another tenant (the
// store's wording, so the two cannot be told apart).
absl::Status LatentNotFound(const std::string& id) {
  return absl::NotFoundError(absl::StrCat("latent \"", id, "\" not found"));
}
absl::Status JobNotFound(const std::string& id) {
  return absl::NotFoundError(absl::StrCat("job \"", id, "\" not found"));
}

}  // namespace

grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, const absl::Status& status) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

absl::Time DeadlineOf(const grpc::CallbackServerContext* ctx) {
  auto d = ctx->deadline();
  if (d > std::chrono::system_clock::now() + std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(d);
}

// ------------------------------------------------------------------------ Service

Service::Service(const ModelRegistry* registry, Scheduler* scheduler, Store* store,
                 ServiceLimits limits, std::string version, const FaceDetector* face_detector,
                 Authenticator* auth)
    : impl_(std::make_unique<Impl>(registry, scheduler, store, limits, std::move(version),
                                   face_detector, auth)) {}

Service::~Service() {
  impl_->image_pool.reset();  // runs what is queued (calls are answered), joins
}

void Service::RegisterMetrics(MetricsRegistry* m) {
  using Series = std::vector<std::pair<MetricsRegistry::Labels, double>>;
  m->AddGauge("i2s_open_streams", "Open Embed, WatchJob and Morph streams.", {}, [this] {
    return Series{{{}, static_cast<double>(impl_->streams.in_use())}};
  });
  m->AddGauge("i2s_images_in_progress", "Image decodes and alignments running now.", {}, [this] {
    return Series{{{}, static_cast<double>(impl_->image_pool->running())}};
  });
  m->AddGauge("i2s_images_waiting", "Image decodes and alignments waiting for a thread.", {},
              [this] {
                return Series{{{}, static_cast<double>(impl_->image_pool->waiting())}};
              });
}

// --------------------------------------------------------------------- Service::Impl

Service::Impl::Impl(const ModelRegistry* registry, Scheduler* scheduler, Store* store,
                    ServiceLimits limits, std::string version, const FaceDetector* face_detector,
                    Authenticator* auth)
    : registry(registry),
      scheduler(scheduler),
      store(store),
      limits(limits),
      version(std::move(version)),
      face_detector(face_detector),
      auth(auth != nullptr ? auth : &open_auth),
      rate(limits.rate_limit, limits.rate_burst),
      streams(limits.max_streams, limits.tenant_max_streams, "open streams", "--max-streams",
              "--tenant-max-streams"),
      image_pool(std::make_unique<WorkPool>(ImagePoolOptions(limits))),
      heartbeats(limits.heartbeat_seconds) {}

DecodeLimits Service::Impl::decode_limits() const {
  DecodeLimits dl;
  dl.max_bytes = limits.max_image_bytes;
  dl.max_pixels = limits.max_image_pixels;
  return dl;
}

absl::StatusOr<Caller> Service::Impl::Admit(const grpc::CallbackServerContext* ctx) {
  std::vector<absl::string_view> authorization;
  auto [begin, end] = ctx->client_metadata().equal_range("authorization");
  for (auto it = begin; it != end; ++it) {
    authorization.emplace_back(it->second.data(), it->second.size());
  }
  auto authenticated = auth->Authenticate(authorization);
  if (!authenticated.ok()) {  // the reason names no token; the peer says who tried
    // Anyone can cause these, as fast as they like: a bounded number of lines.
    if (int64_t dropped = 0; auth_log.Admit(&dropped)) {
      LogEvent e("auth_refused");
      e.Str("peer", ctx->peer()).Str("reason", authenticated.status().message());
      if (dropped > 0) e.Int("suppressed", dropped);
    }
    return authenticated.status();
  }
  Caller caller = *std::move(authenticated);
  RETURN_IF_ERROR(rate.Admit(caller.tenant));
  return caller;
}

absl::StatusOr<LatentRecord> Service::Impl::LatentFor(const Caller& caller, const std::string& id,
                                                      bool with_values) {
  ASSIGN_OR_RETURN(LatentRecord rec, store->GetLatent(id, with_values));
  if (!caller.CanAccess(rec.tenant)) return LatentNotFound(id);
  return rec;
}

absl::StatusOr<JobView> Service::Impl::JobFor(const Caller& caller, const std::string& id) {
  ASSIGN_OR_RETURN(JobView view, scheduler->GetJob(id));
  if (!caller.CanAccess(view.record.tenant)) return JobNotFound(id);
  return view;
}

absl::StatusOr<std::optional<std::string>> Service::Impl::ListingTenant(const Caller& caller,
                                                                        bool all_tenants) {
  if (!all_tenants) return std::optional<std::string>(caller.tenant);
  if (!caller.admin) {
    return absl::PermissionDeniedError("all_tenants: needs an admin token");
  }
  return std::optional<std::string>();
}

absl::StatusOr<std::string> Service::Impl::ListingFingerprint(const std::string& model) const {
  if (model.empty()) return std::string();
  auto m = registry->Find(model);
  if (!m.ok()) return Annotate(m.status(), "model");
  return (*m)->fingerprint;
}

absl::StatusOr<const ModelInfo*> Service::Impl::ModelFor(
    const Caller& caller, const std::string& name,
    std::initializer_list<const v1::LatentRef*> refs) {
  if (!name.empty()) {
    auto m = registry->Find(name);
    if (!m.ok()) return Annotate(m.status(), "model");
    return m;
  }
  for (const v1::LatentRef* ref : refs) {
    if (ref->has_latent_id() && !ref->latent_id().empty()) {
      auto rec = LatentFor(caller, ref->latent_id(), /*with_values=*/false);
      if (!rec.ok()) continue;  // reported when the ref is resolved
      for (const ModelInfo& m : registry->models()) {
        if (m.fingerprint == rec->fingerprint) return &m;
      }
      return absl::FailedPreconditionError(
          absl::StrCat("latent \"", rec->id, "\" belongs to model \"", rec->model, "\" (",
                       rec->fingerprint, "), which this server does not serve"));
    }
  }
  return registry->Find("");
}

absl::StatusOr<LatentInput> Service::Impl::Resolve(const Caller& caller, const v1::LatentRef& ref,
                                                   const ModelInfo& model, const std::string& field,
                                                   uint64_t inline_noise_seed) {
  LatentInput r;
  const int64_t L = model.num_layers, D = model.latent_size;
  switch (ref.kind_case()) {
    case v1::LatentRef::kLatentId: {
      auto rec = LatentFor(caller, ref.latent_id(), /*with_values=*/true);
      if (!rec.ok()) return Annotate(rec.status(), field);
      if (rec->fingerprint != model.fingerprint) {
        return absl::FailedPreconditionError(absl::StrCat(
            field, ": latent \"", rec->id, "\" was made with model \"", rec->model, "\" (",
            rec->fingerprint, "), not \"", model.name, "\" (", model.fingerprint, ")"));
      }
      r.w = torch::from_blob(rec->values.data(), {L, D}, torch::kFloat32).clone();
      r.id = rec->id;
      r.noise_npz = std::move(rec->noise_npz);
      r.noise_seed = rec->noise_seed;
      r.alignment_json = AlignmentOfLatentParams(rec->params_json);
      return r;
    }
    case v1::LatentRef::kValues: {
      const v1::LatentValues& v = ref.values();
      if (v.num_layers() != L || v.latent_size() != D) {
        return Field(field + ".values",
                     absl::StrCat("shape [", v.num_layers(), ", ", v.latent_size(), "], model \"",
                                  model.name, "\" needs [", L, ", ", D, "]"));
      }
      if (v.values_size() != L * D) {
        return Field(field + ".values.values",
                     absl::StrCat(v.values_size(), " numbers, expected ", L * D));
      }
      r.w =
          torch::from_blob(const_cast<float*>(v.values().data()), {L, D}, torch::kFloat32).clone();
      r.noise_seed = inline_noise_seed;
      return r;
    }
    case v1::LatentRef::KIND_NOT_SET:
      break;
  }
  return CheckLatentRef(ref, field);  // not set: the check names what is missing
}

absl::Time Service::Impl::TaskDeadline(absl::Time call_deadline) const {
  return std::min(call_deadline, absl::Now() + absl::Seconds(limits.device_wait_seconds));
}

void Service::Impl::RenderAndFinish(grpc::CallbackServerContext* ctx,
                                    grpc::ServerUnaryReactor* reactor, const std::string& tenant,
                                    const ModelInfo* model, torch::Tensor w,
                                    LatentInput noise_source, RenderSettings render,
                                    v1::Image* image, std::shared_ptr<const PastePlan> paste,
                                    v1::Image* pasted) {
  // With a paste, the render stays here for it (one tensor).
  auto raw = std::make_shared<std::vector<torch::Tensor>>(paste != nullptr ? 1 : 0);
  scheduler->RunTask(
      [this, model, w = std::move(w), noise_source = std::move(noise_source), render, image,
       raw](int device) -> absl::Status {
        ASSIGN_OR_RETURN(EncodedImage encoded,
                         RenderLatent(*registry->generator(device, model->name), w, noise_source,
                                      render, "render", raw->empty() ? nullptr : &raw->front()));
        ToProto(encoded, image);
        return absl::OkStatus();
      },
      TaskDeadline(DeadlineOf(ctx)),
      [this, reactor, tenant, paste, raw, pasted](absl::Status s) {
        if (!s.ok() || paste == nullptr) {
          reactor->Finish(ToGrpcStatus(s));
          return;
        }
        PasteAndFinish(reactor, tenant, paste, raw, pasted);
      },
      tenant, [ctx] { return ctx->IsCancelled(); });
}

absl::StatusOr<std::shared_ptr<const PastePlan>> Service::Impl::PastePlanFor(
    bool has_paste_into, const v1::PasteInto& p, const LatentInput& applied_to) {
  if (!has_paste_into) return nullptr;
  RETURN_IF_ERROR(CheckImageLimits(p.photo(), decode_limits(), "paste_into.photo").status());
  PastePlan plan = PastePlanOf(p.photo(), p.options(), "paste_into.photo");
  ASSIGN_OR_RETURN(PasteTarget target, PasteTargetOf(applied_to, p.transform(), "paste_into"));
  plan.targets.push_back(target);
  return std::make_shared<const PastePlan>(std::move(plan));
}

void Service::Impl::PasteAndFinish(grpc::ServerUnaryReactor* reactor, const std::string& tenant,
                                   std::shared_ptr<const PastePlan> plan,
                                   std::shared_ptr<std::vector<torch::Tensor>> renders,
                                   v1::Image* out) {
  absl::Status queued = image_pool->Submit(tenant, [this, reactor, plan, renders, out] {
    reactor->Finish(
        ToGrpcStatus(RunPaste(*plan, *renders, decode_limits(), limits.max_message_bytes, out)));
  });
  if (!queued.ok()) reactor->Finish(ToGrpcStatus(queued));
}

}  // namespace i2s

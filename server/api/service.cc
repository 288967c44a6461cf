#include "server/api/service.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/api/error_writer.h"
#include "server/api/request_check.h"
#include "server/api/status.h"
#include "server/api/work_pool.h"
#include "server/base/log.h"
#include "server/base/private_detail.h"
#include "server/base/sha256.h"
#include "server/base/status_macros.h"
#include "server/engine/edits.h"
#include "server/engine/torch_util.h"
#include "server/formats/npy.h"
#include "server/imaging/image_io.h"
#include "server/imaging/prepare.h"
#include "server/jobs/job.h"

namespace i2s {
namespace {

using v1::ImageFormat;

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

// AIP-155: the same request_id with the same request is a repeat; the hash covers the
// whole request, serialised deterministically (map order fixed).
std::string RequestHash(const google::protobuf::Message& m) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream raw(&bytes);
    google::protobuf::io::CodedOutputStream out(&raw);
    out.SetSerializationDeterministic(true);
    m.SerializeToCodedStream(&out);
  }
  return Sha256Hex(bytes);
}

absl::Time DeadlineOf(const grpc::CallbackServerContext* ctx) {
  auto d = ctx->deadline();
  if (d > std::chrono::system_clock::now() + std::chrono::hours(24 * 365)) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(d);
}

void ToProto(const LatentMetrics& m, v1::EmbedMetrics* out) {
  out->set_loss(m.loss);
  out->set_mse(m.mse);
  out->set_perceptual(m.perceptual);
  out->set_psnr_db(m.psnr);
  out->set_steps(m.steps);
  if (m.lpips >= 0) out->set_lpips(m.lpips);
}

void ToProto(Point2 p, v1::Point* out) {
  out->set_x(p.x);
  out->set_y(p.y);
}

void ToProto(const AlignmentInfo& a, v1::Alignment* out) {
  out->set_method(a.method);
  out->set_confidence(a.confidence);
  out->set_source_width(a.source_width);
  out->set_source_height(a.source_height);
  out->set_size(a.size);
  if (a.method != "none") {
    const FaceLandmarks& l = a.landmarks;
    for (Point2 p : {l.eye_left, l.eye_right, l.mouth_left, l.mouth_right}) {
      ToProto(p, out->add_landmarks());
    }
  }
  for (Point2 p : a.quad) ToProto(p, out->add_quad());
  for (double t : a.transform.m) out->add_transform(t);
  out->set_note(a.note);
}

// An AlignmentInfoToJson record (a job spec's, a latent's) -> the alignment field of
// `parent`, left unset when there is none (or it cannot be read); true if set.
template <typename Message>
bool SetAlignment(const std::string& json, Message* parent) {
  if (json.empty()) return false;
  auto info = AlignmentInfoFromJson(json);
  if (!info.ok()) return false;
  ToProto(*info, parent->mutable_alignment());
  return true;
}

void ToProto(const LatentRecord& r, v1::Latent* out) {
  out->set_id(r.id);
  out->set_tenant(r.tenant);
  out->set_model(r.model);
  out->set_fingerprint(r.fingerprint);
  out->set_num_layers(r.num_layers);
  out->set_latent_size(r.latent_size);
  for (float v : r.values) out->add_values(v);
  out->set_source(r.source);
  out->set_job_id(r.job_id);
  for (const auto& p : r.parents) out->add_parents(p);
  out->set_params_json(r.params_json);
  if (r.metrics) ToProto(*r.metrics, out->mutable_metrics());
  out->set_created_unix_ms(r.created_unix_ms);
  for (const auto& [k, v] : r.labels) (*out->mutable_labels())[k] = v;
  out->set_has_noise(r.has_noise || !r.noise_npz.empty());
  out->set_noise_seed(r.noise_seed);
  if (r.source == "embed") {
    SetAlignment(AlignmentOfLatentParams(r.params_json), out);
  }
}

v1::JobState ToProto(JobState s) { return static_cast<v1::JobState>(static_cast<int>(s)); }

void ToProto(const JobView& v, v1::Job* out) {
  out->set_id(v.record.id);
  out->set_tenant(v.record.tenant);
  out->set_request_id(v.record.request_id);
  out->set_model(v.record.model);
  out->set_state(ToProto(v.record.state));
  out->set_queue_position(v.queue_position);
  out->set_step(v.step);
  out->set_total_steps(v.total_steps);
  ToProto(v.metrics, out->mutable_metrics());
  out->set_latent_id(v.record.latent_id);
  out->set_error_code(v.record.error_code);
  out->set_error_message(v.record.error_message);
  out->set_created_unix_ms(v.record.created_unix_ms);
  out->set_started_unix_ms(v.record.started_unix_ms);
  out->set_finished_unix_ms(v.record.finished_unix_ms);
  out->set_device(v.device);
  out->set_last_sequence(v.last_sequence);
}

void SetPng(const std::string& png, int size, v1::Image* out) {
  out->set_format(v1::PNG);
  out->set_data(png);
  out->set_width(size);
  out->set_height(size);
}

void ToProto(const JobEvent& e, int resolution, v1::JobEvent* out) {
  out->Clear();
  out->set_job_id(e.job_id);
  out->set_sequence(e.sequence);
  out->set_time_unix_ms(e.time_unix_ms);
  switch (e.kind) {
    case JobEvent::Kind::kQueued:
      out->mutable_queued()->set_position(e.position);
      break;
    case JobEvent::Kind::kRunning:
      out->mutable_running()->set_device(e.device);
      out->mutable_running()->set_resumed_from_step(e.resumed_from_step);
      break;
    case JobEvent::Kind::kProgress: {
      auto* p = out->mutable_progress();
      p->set_step(e.step);
      p->set_total_steps(e.total_steps);
      p->set_noise_phase(e.noise_phase);
      ToProto(e.metrics, p->mutable_metrics());
      p->set_elapsed_seconds(e.elapsed_seconds);
      p->set_steps_per_second(e.steps_per_second);
      p->set_eta_seconds(e.eta_seconds);
      p->set_batch_size(e.batch_size);
      if (!e.preview_png.empty()) SetPng(e.preview_png, resolution, p->mutable_preview());
      break;
    }
    case JobEvent::Kind::kSucceeded: {
      auto* s = out->mutable_succeeded();
      s->set_latent_id(e.latent_id);
      ToProto(e.metrics, s->mutable_metrics());
      s->set_stop_reason(e.stop_reason);
      if (!e.reconstruction_png.empty()) {
        SetPng(e.reconstruction_png, resolution, s->mutable_reconstruction());
      }
      if (SetAlignment(e.alignment_json, s) && !e.aligned_png.empty()) {
        SetPng(e.aligned_png, resolution, s->mutable_alignment()->mutable_aligned());
      }
      break;
    }
    case JobEvent::Kind::kFailed:
      out->mutable_failed()->set_code(static_cast<int>(e.status.code()));
      out->mutable_failed()->set_message(std::string(PublicStatus(e.status).message()));
      break;
    case JobEvent::Kind::kCancelled:
      out->mutable_cancelled()->set_step(e.step);
      out->mutable_cancelled()->set_message(std::string(PublicStatus(e.status).message()));
      break;
  }
}

// A finished unary call: the reactor with its status.
grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, const absl::Status& status) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// An input latent resolved to values (and noise) for one model.
struct Resolved {
  torch::Tensor w;        // [L, D] CPU float32
  std::string id;         // empty for inline values
  std::string noise_npz;  // the stored latent's own maps, if any
  uint64_t noise_seed = 0;
};

// The NotFound of an ID that does not exist, also given for one of another tenant (the
// store's wording, so the two cannot be told apart).
absl::Status LatentNotFound(const std::string& id) {
  return absl::NotFoundError(absl::StrCat("latent \"", id, "\" not found"));
}
absl::Status JobNotFound(const std::string& id) {
  return absl::NotFoundError(absl::StrCat("job \"", id, "\" not found"));
}

}  // namespace

struct Service::Impl {
  Impl(const ModelRegistry* registry, Scheduler* scheduler, Store* store, ServiceLimits limits,
       std::string version, const FaceDetector* face_detector, Authenticator* auth)
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
        image_pool(std::make_unique<WorkPool>(ImagePoolOptions(limits))) {}

  static WorkPool::Options ImagePoolOptions(const ServiceLimits& limits) {
    WorkPool::Options o;
    o.threads = limits.max_concurrent_images;
    o.queue_limit = limits.image_queue_limit;
    o.tenant_limit = limits.tenant_max_images;
    o.what = "image decodes and alignments";
    return o;
  }

  DecodeLimits decode_limits() const {
    DecodeLimits dl;
    dl.max_bytes = limits.max_image_bytes;
    dl.max_pixels = limits.max_image_pixels;
    return dl;
  }

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

  // Every call starts here: who is calling (UNAUTHENTICATED without a valid token), and
  // is the tenant within its request rate. The token is never logged or echoed.
  absl::StatusOr<Caller> Admit(const grpc::CallbackServerContext* ctx) {
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

  // A stored latent the caller may see (NotFound otherwise).
  absl::StatusOr<LatentRecord> LatentFor(const Caller& caller, const std::string& id,
                                         bool with_values) {
    ASSIGN_OR_RETURN(LatentRecord rec, store->GetLatent(id, with_values));
    if (!caller.CanAccess(rec.tenant)) return LatentNotFound(id);
    return rec;
  }

  // A job the caller may see (NotFound otherwise).
  absl::StatusOr<JobView> JobFor(const Caller& caller, const std::string& id) {
    ASSIGN_OR_RETURN(JobView view, scheduler->GetJob(id));
    if (!caller.CanAccess(view.record.tenant)) return JobNotFound(id);
    return view;
  }

  // The quotas and retention in force (the store's and the scheduler's).
  void FillQuotas(v1::Quotas* out) const {
    const StorageQuota& q = store->quota();
    out->set_max_latents(q.max_latents);
    out->set_max_latent_bytes(q.max_latent_bytes);
    out->set_max_jobs(q.max_jobs);
    out->set_max_job_bytes(q.max_job_bytes);
    const SchedulerOptions& s = scheduler->options();
    out->set_job_retention_seconds(static_cast<double>(s.job_retention_ms) / 1000);
    out->set_request_id_retention_seconds(static_cast<double>(s.request_id_retention_ms) / 1000);
  }

  // The tenant filter of a listing: the caller's own, or every tenant's for an admin
  // that asks for all_tenants.
  static absl::StatusOr<std::optional<std::string>> ListingTenant(const Caller& caller,
                                                                  bool all_tenants) {
    if (!all_tenants) return std::optional<std::string>(caller.tenant);
    if (!caller.admin) {
      return absl::PermissionDeniedError("all_tenants: needs an admin token");
    }
    return std::optional<std::string>();
  }

  // A request's AlignOptions (and resize) -> PrepareOptions for a target of `size`.
  absl::StatusOr<PrepareOptions> PrepareOptionsOf(const v1::AlignOptions& a, v1::ResizeMode resize,
                                                  int size) {
    RETURN_IF_ERROR(CheckAlignOptions(a, resize));
    PrepareOptions p;
    p.size = size;
    p.fit = resize == v1::PAD ? FitMode::kPad : FitMode::kCenterCrop;
    switch (a.mode()) {
      case v1::AlignOptions::ALIGN_MODE_UNSPECIFIED:
      case v1::AlignOptions::NONE:
        p.mode = AlignMode::kNone;
        break;
      case v1::AlignOptions::LANDMARKS:
        p.mode = AlignMode::kLandmarks;
        break;
      case v1::AlignOptions::AUTO:
        p.mode = AlignMode::kAuto;
        break;
      default:
        return Field("align.mode", "unknown mode");
    }
    if (p.mode == AlignMode::kLandmarks) {
      for (const v1::Point& pt : a.landmarks()) p.points.push_back({pt.x(), pt.y()});
    }
    if (a.min_confidence() > 0) p.min_confidence = a.min_confidence();
    p.fit_when_no_face = a.on_no_face() == v1::AlignOptions::RESIZE;
    p.no_face_hint = "set align.on_no_face = RESIZE";
    p.padding = !a.no_padding();
    return p;
  }

  // The model a call works with: `name` if given, else the model of the first stored
  // latent among `refs`, else the default.
  absl::StatusOr<const ModelInfo*> ModelFor(const Caller& caller, const std::string& name,
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

  absl::StatusOr<Resolved> Resolve(const Caller& caller, const v1::LatentRef& ref,
                                   const ModelInfo& model, const std::string& field,
                                   uint64_t inline_noise_seed) {
    Resolved r;
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
        r.w = torch::from_blob(const_cast<float*>(v.values().data()), {L, D}, torch::kFloat32)
                  .clone();
        r.noise_seed = inline_noise_seed;
        return r;
      }
      case v1::LatentRef::KIND_NOT_SET:
        break;
    }
    return CheckLatentRef(ref, field);  // not set: the check names what is missing
  }

  // Noise maps of a resolved latent for `mode` (RenderOptions.noise_mode), on `device`.
  absl::StatusOr<std::vector<torch::Tensor>> NoiseOf(const Resolved& r, const Generator& g,
                                                     v1::NoiseMode mode) {
    switch (mode) {
      case v1::NOISE_NONE:
        return std::vector<torch::Tensor>{};
      case v1::NOISE_SEEDED:
        return g.MakeNoise(r.noise_seed, 1);
      case v1::NOISE_CONSTANT:
        if (g.ConstantNoise().empty()) {
          return Field("render.noise_mode", absl::StrCat("NOISE_CONSTANT: this ", g.architecture(),
                                                         " model has no constant noise maps"));
        }
        return g.ConstantNoise();
      case v1::NOISE_LATENT:
        if (r.noise_npz.empty()) {
          return Field("render.noise_mode",
                       "NOISE_LATENT: the latent has no noise maps of its "
                       "own (only embeddings with noise_steps do)");
        }
        break;
      default:  // NOISE_AUTO
        if (r.noise_npz.empty()) return g.DefaultNoise(r.noise_seed, 1);
        break;
    }
    ASSIGN_OR_RETURN(auto maps, ParseNpz(r.noise_npz));
    std::vector<torch::Tensor> out;
    for (auto& [name, a] : maps) out.push_back(FloatArrayToTensor(a).to(g.device()));
    return out;
  }

  // Generator output [3, R, R] -> the requested format.
  static absl::Status Encode(const torch::Tensor& image, const v1::RenderOptions& o,
                             v1::Image* out) {
    const int64_t size = image.size(-1);
    out->set_width(static_cast<int>(size));
    out->set_height(static_cast<int>(size));
    if (o.format() == v1::RAW_FLOAT32) {
      out->set_format(v1::RAW_FLOAT32);
      out->set_data(SerializeNpy(TensorToFloatArray(image)));
      return absl::OkStatus();
    }
    const bool jpeg = o.format() == v1::JPEG;
    ASSIGN_OR_RETURN(std::string bytes, EncodeRgb8(GeneratorOutputToRgb8(image),
                                                   jpeg ? EncodeFormat::kJpeg : EncodeFormat::kPng,
                                                   o.jpeg_quality() == 0 ? 90 : o.jpeg_quality()));
    out->set_format(jpeg ? v1::JPEG : v1::PNG);
    out->set_data(std::move(bytes));
    return absl::OkStatus();
  }

  // Renders w [L, D] with noise on the device and encodes it.
  absl::Status Render(int device, const ModelInfo& model, const torch::Tensor& w,
                      const Resolved& noise_source, const v1::RenderOptions& o, v1::Image* out) {
    Generator* g = registry->generator(device, model.name);
    ASSIGN_OR_RETURN(auto noise, NoiseOf(noise_source, *g, o.noise_mode()));
    ASSIGN_OR_RETURN(torch::Tensor img, g->Synthesize(w.unsqueeze(0), noise));
    return Encode(img[0].cpu(), o, out);
  }

  // Renders w on a device worker (between optimiser steps) into `image`, then finishes
  // the call. `render` and `image` belong to the call and live until Finish.
  // The call's tenant shares the device queues (SchedulerOptions); a task waits at most
  // --device-wait-seconds, or until the call's deadline, and is dropped unrun if the call
  // is cancelled meanwhile.
  void RenderAndFinish(grpc::CallbackServerContext* ctx, grpc::ServerUnaryReactor* reactor,
                       const std::string& tenant, const ModelInfo* model, torch::Tensor w,
                       Resolved noise_source, const v1::RenderOptions* render, v1::Image* image) {
    scheduler->RunTask(
        [this, model, w = std::move(w), noise_source = std::move(noise_source), render,
         image](int device) { return Render(device, *model, w, noise_source, *render, image); },
        TaskDeadline(DeadlineOf(ctx)),
        [reactor](absl::Status s) { reactor->Finish(ToGrpcStatus(s)); }, tenant,
        [ctx] { return ctx->IsCancelled(); });
  }

  // When a device task must have started: the call's deadline, and at most
  // --device-wait-seconds from now (calls without a deadline get that one).
  absl::Time TaskDeadline(absl::Time call_deadline) const {
    return std::min(call_deadline, absl::Now() + absl::Seconds(limits.device_wait_seconds));
  }

  // Stores `rec` under a new ID (created now) and returns it in `out` without values.
  // With a request_id seen before for the same request, stores nothing and returns the
  // first result instead.
  absl::Status PutNewLatent(const Caller& caller, const std::string& method,
                            const std::string& request_id, const std::string& request_hash,
                            LatentRecord rec, v1::Latent* out) {
    rec.id = NewRandomId("lat_");
    rec.tenant = caller.tenant;
    rec.created_unix_ms = NowMs();
    if (!request_id.empty()) {
      // The key and the latent in one transaction (never a key naming nothing).
      ASSIGN_OR_RETURN(
          std::string claimed,
          store->PutLatentWithClaim(
              rec, RequestClaim{RequestScope(method, caller.tenant), request_id, request_hash}));
      if (claimed != rec.id) {
        ASSIGN_OR_RETURN(LatentRecord earlier, store->GetLatent(claimed, false));
        ToProto(earlier, out);
        return absl::OkStatus();
      }
    } else {
      RETURN_IF_ERROR(store->PutLatent(rec));
    }
    LogEvent("latent_stored")
        .Str("latent_id", rec.id)
        .Str("tenant", rec.tenant)
        .Str("source", rec.source)
        .Str("model", rec.model);
    rec.values.clear();
    rec.noise_npz.clear();
    ToProto(rec, out);
    return absl::OkStatus();
  }

  // Stores an edit's result (with the noise of its first input) as a new latent.
  absl::Status StoreResult(const Caller& caller, const std::string& method,
                           const std::string& request_id, const std::string& request_hash,
                           const ModelInfo& model, const torch::Tensor& w, const Resolved& first,
                           const std::string& source, std::vector<std::string> parents,
                           const nlohmann::json& params,
                           const google::protobuf::Map<std::string, std::string>& labels,
                           v1::Latent* out) {
    LatentRecord rec;
    rec.model = model.name;
    rec.fingerprint = model.fingerprint;
    rec.num_layers = model.num_layers;
    rec.latent_size = model.latent_size;
    rec.values = TensorToFloatArray(w).values;
    rec.noise_npz = first.noise_npz;
    rec.noise_seed = first.noise_seed;
    rec.source = source;
    rec.parents = std::move(parents);
    rec.params_json = params.dump();
    for (const auto& [k, v] : labels) rec.labels[k] = v;
    return PutNewLatent(caller, method, request_id, request_hash, std::move(rec), out);
  }
};

// ----------------------------------------------------------------- event streams

// Writes one job's events to a client: one write in flight, the next from OnWriteDone
// or from the cursor's wake-up; heartbeats on quiet streams; Finish exactly once.
// An Embed's stream starts pending (no job yet: its image is being decoded on the
// WorkPool); the pool's task then attaches the job's cursor or fails the call. A client
// that goes away meanwhile is answered by that task, so the reactor outlives it.
class EventStreamReactor : public grpc::ServerWriteReactor<v1::JobEvent> {
 public:
  // Pending: Attach or Fail follows.
  EventStreamReactor(Service* service, bool cancel_on_disconnect, ConcurrencyLimiter::Lease lease)
      : lease_(std::move(lease)),
        service_(service),
        cancel_on_disconnect_(cancel_on_disconnect),
        last_write_(std::chrono::steady_clock::now()) {
    service_->Register(this);
  }
  EventStreamReactor(Service* service, std::shared_ptr<EventCursor> cursor, std::string job_id,
                     bool cancel_on_disconnect, int resolution, ConcurrencyLimiter::Lease lease)
      : EventStreamReactor(service, cancel_on_disconnect, std::move(lease)) {
    Attach(std::move(cursor), std::move(job_id), resolution);
  }

  // The job's events from here on (once). The reactor stays pinned until Attach returns:
  // the first wake-up may finish the call at once, and OnDone must not delete the reactor
  // while Attach still uses it (Unpin deletes it then).
  void Attach(std::shared_ptr<EventCursor> cursor, std::string job_id, int resolution) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      cursor_ = std::move(cursor);
      job_id_ = std::move(job_id);
      resolution_ = resolution;
      pinned_ = true;
    }
    cursor_->SetWake([this] { Pump(); });
    bool cancelled;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled = cancelled_;
    }
    if (cancelled) OnCancel();  // the client left while the job was being made
    Unpin();
  }

  // Ends a pending stream with `status` (the job could not be made). Its stream slot is
  // given back first: the caller may open the next stream as soon as it hears the status,
  // before gRPC gets to OnDone.
  void Fail(const absl::Status& status) {
    std::lock_guard<std::mutex> lock(mu_);
    lease_.Release();
    FinishLocked(ToGrpcStatus(status));
  }

  void OnWriteDone(bool ok) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      writing_ = false;
      if (!ok) {
        FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
        return;
      }
    }
    Pump();
  }

  void OnCancel() override {
    std::shared_ptr<EventCursor> cursor;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
      cursor = cursor_;
    }
    if (cursor == nullptr) return;  // pending: the pool's task answers (Attach or Fail)
    if (cancel_on_disconnect_ && !cursor->done()) {
      (void)service_->impl_->scheduler->Cancel(job_id_, "client disconnected");
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (!writing_) FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "call cancelled"));
  }

  void OnDone() override {
    service_->Unregister(this);
    if (cursor_ != nullptr) cursor_->Close();
    bool pinned;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      pinned = pinned_;
    }
    if (!pinned) delete this;  // else Attach's Unpin does
  }

  void Pump() {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_ || writing_ || cursor_ == nullptr) return;
    if (auto ev = cursor_->Next()) {
      ToProto(*ev, resolution_, &msg_);
      StartWriteLocked();
      return;
    }
    if (cursor_->done()) {
      FinishLocked(grpc::Status::OK);
    } else if (absl::Status closed = cursor_->closed(); !closed.ok()) {
      FinishLocked(ToGrpcStatus(closed));
    }
  }

  void Heartbeat(double interval_seconds) {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_ || writing_ || cursor_ == nullptr) return;
    if (std::chrono::steady_clock::now() - last_write_ <
        std::chrono::duration<double>(interval_seconds)) {
      return;
    }
    msg_.Clear();
    msg_.set_job_id(job_id_);
    msg_.set_sequence(cursor_->last_sequence());
    msg_.set_time_unix_ms(NowMs());
    msg_.mutable_heartbeat();
    StartWriteLocked();
  }

 private:
  void StartWriteLocked() {
    writing_ = true;
    last_write_ = std::chrono::steady_clock::now();
    StartWrite(&msg_);
  }
  void FinishLocked(const grpc::Status& status) {
    if (finished_) return;
    finished_ = true;
    Finish(status);
  }

  void Unpin() {
    bool done;
    {
      std::lock_guard<std::mutex> lock(mu_);
      pinned_ = false;
      done = done_;
    }
    if (done) delete this;
  }

  ConcurrencyLimiter::Lease lease_;  // a slot of --max-streams, given back on OnDone
  Service* service_;
  const bool cancel_on_disconnect_;
  std::mutex mu_;
  // Set once by Attach (under mu_), then read without it only by the threads that Attach
  // started (the cursor's wake-ups, gRPC's callbacks after it).
  std::shared_ptr<EventCursor> cursor_;
  std::string job_id_;
  int resolution_ = 0;
  bool writing_ = false, finished_ = false, cancelled_ = false;
  bool pinned_ = false, done_ = false;  // Attach in progress; OnDone came
  std::chrono::steady_clock::time_point last_write_;
  v1::JobEvent msg_;
};

// Morph frames, rendered one at a time on the device between optimiser steps.
class MorphReactor : public grpc::ServerWriteReactor<v1::MorphFrame> {
 public:
  MorphReactor(Service::Impl* impl, std::string tenant, const ModelInfo* model, Resolved a,
               Resolved b, int frames, v1::RenderOptions render, absl::Time deadline,
               ConcurrencyLimiter::Lease lease)
      : lease_(std::move(lease)),
        impl_(impl),
        tenant_(std::move(tenant)),
        model_(model),
        a_(std::move(a)),
        b_(std::move(b)),
        frames_(frames),
        render_(std::move(render)),
        deadline_(deadline) {
    RenderNext();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    if (++index_ == frames_) {
      Finish(grpc::Status::OK);
    } else {
      RenderNext();
    }
  }
  void OnCancel() override { cancelled_ = true; }
  void OnDone() override { delete this; }

 private:
  void RenderNext() {
    if (cancelled_) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "call cancelled"));
      return;
    }
    const double alpha = frames_ == 1 ? 0 : static_cast<double>(index_) / (frames_ - 1);
    impl_->scheduler->RunTask(
        [this, alpha](int device) -> absl::Status {
          ASSIGN_OR_RETURN(torch::Tensor w, i2s::Morph(a_.w, b_.w, {alpha}));
          frame_.Clear();
          frame_.set_index(index_);
          frame_.set_frames(frames_);
          frame_.set_alpha(alpha);
          return impl_->Render(device, *model_, w[0], a_, render_, frame_.mutable_image());
        },
        impl_->TaskDeadline(deadline_),
        [this](absl::Status status) {
          if (!status.ok()) {
            Finish(ToGrpcStatus(Annotate(status, absl::StrCat("frame ", index_))));
          } else {
            StartWrite(&frame_);
          }
        },
        tenant_, [this] { return cancelled_.load(); });
  }

  ConcurrencyLimiter::Lease lease_;
  Service::Impl* impl_;
  const std::string tenant_;
  const ModelInfo* model_;
  Resolved a_, b_;
  const int frames_;
  const v1::RenderOptions render_;
  const absl::Time deadline_;
  int index_ = 0;
  std::atomic<bool> cancelled_{false};
  v1::MorphFrame frame_;
};

// ----------------------------------------------------------------------- Service

Service::Service(const ModelRegistry* registry, Scheduler* scheduler, Store* store,
                 ServiceLimits limits, std::string version, const FaceDetector* face_detector,
                 Authenticator* auth)
    : impl_(std::make_unique<Impl>(registry, scheduler, store, limits, std::move(version),
                                   face_detector, auth)) {
  heartbeat_thread_ = std::thread([this] { HeartbeatLoop(); });
}

Service::~Service() {
  impl_->image_pool.reset();  // runs what is queued (calls are answered), joins
  {
    std::lock_guard<std::mutex> lock(streams_mu_);
    stop_heartbeats_ = true;
  }
  heartbeat_cv_.notify_all();
  heartbeat_thread_.join();
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

void Service::Register(EventStreamReactor* r) {
  std::lock_guard<std::mutex> lock(streams_mu_);
  streams_.insert(r);
}

void Service::Unregister(EventStreamReactor* r) {
  std::lock_guard<std::mutex> lock(streams_mu_);
  streams_.erase(r);
}

void Service::HeartbeatLoop() {
  const double interval = impl_->limits.heartbeat_seconds;
  std::unique_lock<std::mutex> lock(streams_mu_);
  while (!stop_heartbeats_) {
    heartbeat_cv_.wait_for(lock, std::chrono::duration<double>(std::min(interval / 4, 1.0)));
    for (EventStreamReactor* r : streams_) r->Heartbeat(interval);
  }
}

// The work of an Embed after admission, on a WorkPool thread: checks, the init latent,
// decoding and alignment, the job's creation. The job's ID and model.
absl::StatusOr<std::pair<std::string, const ModelInfo*>> Service::SubmitEmbed(
    const Caller& caller, const v1::EmbedRequest& req) {
  if (!accepting_) return absl::UnavailableError("the server is shutting down");
  auto found = impl_->registry->Find(req.model());
  if (!found.ok()) return Annotate(found.status(), "model");
  const ModelInfo* model = *found;
  EmbedJobSpec spec;
  spec.model = model->name;
  spec.seed = req.seed();
  for (const auto& [k, v] : req.labels()) spec.labels[k] = v;
  spec.preview_every = req.preview_every();
  spec.return_reconstruction = req.return_reconstruction();
  ASSIGN_OR_RETURN(PrepareOptions prepare,
                   impl_->PrepareOptionsOf(req.align(), req.resize(), model->resolution));
  spec.return_aligned_image = req.return_aligned_image();

  // Options (checked by CheckEmbedOptions): unset fields keep the schedule's defaults.
  const v1::EmbedOptions& o = req.options();
  EmbedOptions& e = spec.options;
  if (o.schedule() == v1::STYLEGAN2_PROJECTOR) {
    e = EmbedOptions::StyleGan2Projector();
    if (o.has_lr_rampup()) e.lr_rampup = o.lr_rampup();
    if (o.has_lr_rampdown()) e.lr_rampdown = o.lr_rampdown();
    if (o.has_w_noise()) e.w_noise_factor = o.w_noise();
    if (o.has_w_noise_ramp()) e.w_noise_ramp = o.w_noise_ramp();
    if (o.has_noise_regularize()) e.noise_regularize = o.noise_regularize();
  }
  if (o.has_w_lpips()) e.w_lpips = o.w_lpips();
  if (e.w_lpips > 0 && !impl_->registry->has_lpips()) {
    return absl::FailedPreconditionError(
        "options.w_lpips: this server has no LPIPS (start it with --lpips; "
        "ServerInfo.has_lpips)");
  }
  if (o.has_steps()) e.steps = o.steps();
  if (o.has_noise_steps()) e.noise_steps = o.noise_steps();
  if (o.has_lr()) e.lr = o.lr();
  if (o.has_noise_lr()) e.noise_lr = o.noise_lr();
  if (o.has_w_mse()) e.w_mse = o.w_mse();
  if (o.has_w_perceptual()) e.w_perceptual = o.w_perceptual();
  if (o.has_target_psnr_db()) e.target_psnr = o.target_psnr_db();
  if (o.has_plateau_window()) e.plateau_window = o.plateau_window();
  if (o.has_perceptual_resolution()) e.perceptual_resolution = o.perceptual_resolution();
  if (o.space() != v1::LATENT_SPACE_UNSPECIFIED) {
    e.space = o.space() == v1::W ? LatentSpace::kW : LatentSpace::kWPlus;
  }
  switch (o.init()) {
    case v1::LATENT_INIT_UNSPECIFIED:
    case v1::MEAN_W:
      e.init = LatentInit::kMeanW;
      break;
    case v1::ZEROS:
      e.init = LatentInit::kZeros;
      break;
    case v1::UNIFORM:
      e.init = LatentInit::kUniform;
      break;
    case v1::FROM_LATENT: {
      e.init = LatentInit::kGiven;
      v1::LatentRef ref;
      ref.set_latent_id(o.init_latent_id());
      ASSIGN_OR_RETURN(Resolved r,
                       impl_->Resolve(caller, ref, *model, "options.init_latent_id", 0));
      spec.init_latent = r.w;
      break;
    }
    default:
      return Field("options.init", "unknown init");
  }

  // The size limits were checked from the header by Embed; decoding and alignment run
  // here, on a WorkPool thread (--max-concurrent-images of them bound the memory).
  ASSIGN_OR_RETURN(torch::Tensor image,
                   DecodeRgbImage(req.image(), impl_->decode_limits(), "image"));
  // Alignment: a face detection, then a resampling: 50 ms for a 512x512 photo, 0.4 s at
  // 2048x2048 (docs/PERFORMANCE.md).
  ASSIGN_OR_RETURN(PreparedImage prepared,
                   PrepareImage(image, prepare, impl_->face_detector, "align"));
  image = torch::Tensor();
  spec.image = prepared.image.contiguous();
  if (prepared.alignment) spec.alignment_json = AlignmentInfoToJson(*prepared.alignment);
  const std::string hash = req.request_id().empty() ? "" : RequestHash(req);
  ASSIGN_OR_RETURN(
      Scheduler::Submission sub,
      impl_->scheduler->Submit(std::move(spec), req.request_id(), hash, caller.tenant));
  return std::make_pair(sub.job_id, model);
}

grpc::ServerWriteReactor<v1::JobEvent>* Service::Embed(CallbackServerContext* ctx,
                                                       const v1::EmbedRequest* req) {
  auto caller = impl_->Admit(ctx);
  if (!caller.ok()) return new ErrorWriter<v1::JobEvent>(caller.status());
  auto lease = impl_->streams.Acquire(caller->tenant);
  if (!lease.ok()) return new ErrorWriter<v1::JobEvent>(lease.status());
  if (!accepting_) {
    return new ErrorWriter<v1::JobEvent>(absl::UnavailableError("the server is shutting down"));
  }
  // What needs only the request is checked here, at once; the rest on the pool.
  const ServiceLimits& lim = impl_->limits;
  absl::Status bad = CheckEmbedRequest(*req, {lim.max_steps, lim.max_morph_frames});
  if (bad.ok()) bad = CheckImageLimits(req->image(), impl_->decode_limits(), "image").status();
  if (!bad.ok()) return new ErrorWriter<v1::JobEvent>(bad);
  // The stream is pending until the pool's task has made the job; this gRPC thread goes
  // back to gRPC now. The request lives until the reactor's OnDone, after the task.
  auto* reactor = new EventStreamReactor(this, req->cancel_on_disconnect(), *std::move(lease));
  absl::Status queued =
      impl_->image_pool->Submit(caller->tenant, [this, ctx, req, reactor, caller = *caller] {
        if (ctx->IsCancelled()) {  // the caller left while it waited: nothing to do
          reactor->Fail(absl::CancelledError("the call was cancelled before its image was read"));
          return;
        }
        auto submitted = SubmitEmbed(caller, *req);
        if (!submitted.ok()) {
          reactor->Fail(submitted.status());
          return;
        }
        auto cursor = impl_->scheduler->Watch(submitted->first, 0);
        if (!cursor.ok()) {
          reactor->Fail(cursor.status());
          return;
        }
        reactor->Attach(*std::move(cursor), submitted->first, submitted->second->resolution);
      });
  if (!queued.ok()) reactor->Fail(queued);
  return reactor;
}

grpc::ServerWriteReactor<v1::JobEvent>* Service::WatchJob(CallbackServerContext* ctx,
                                                          const v1::WatchJobRequest* req) {
  auto caller = impl_->Admit(ctx);
  if (!caller.ok()) return new ErrorWriter<v1::JobEvent>(caller.status());
  if (absl::Status bad = CheckWatchJobRequest(*req); !bad.ok()) {
    return new ErrorWriter<v1::JobEvent>(bad);
  }
  auto view = impl_->JobFor(*caller, req->job_id());
  if (!view.ok()) return new ErrorWriter<v1::JobEvent>(view.status());
  auto lease = impl_->streams.Acquire(caller->tenant);
  if (!lease.ok()) return new ErrorWriter<v1::JobEvent>(lease.status());
  auto cursor = impl_->scheduler->Watch(req->job_id(), req->after_sequence());
  if (!cursor.ok()) return new ErrorWriter<v1::JobEvent>(cursor.status());
  auto model = impl_->registry->Find(view->record.model);
  const int resolution = model.ok() ? (*model)->resolution : 0;
  return new EventStreamReactor(this, *std::move(cursor), req->job_id(), false, resolution,
                                *std::move(lease));
}

grpc::ServerUnaryReactor* Service::GetJob(CallbackServerContext* ctx, const v1::GetJobRequest* req,
                                          v1::Job* resp) {
  auto caller = impl_->Admit(ctx);
  if (!caller.ok()) return Done(ctx, caller.status());
  if (req->job_id().empty()) return Done(ctx, Field("job_id", "empty"));
  auto view = impl_->JobFor(*caller, req->job_id());
  if (view.ok()) ToProto(*view, resp);
  return Done(ctx, view.status());
}

grpc::ServerUnaryReactor* Service::ListJobs(CallbackServerContext* ctx,
                                            const v1::ListJobsRequest* req,
                                            v1::ListJobsResponse* resp) {
  auto caller = impl_->Admit(ctx);
  if (!caller.ok()) return Done(ctx, caller.status());
  auto tenant = Impl::ListingTenant(*caller, req->all_tenants());
  if (!tenant.ok()) return Done(ctx, tenant.status());
  auto page = PageOf(req->page_size(), req->page_token());
  if (!page.ok()) return Done(ctx, page.status());
  auto states = JobStatesOf(req->states());
  if (!states.ok()) return Done(ctx, states.status());
  auto list = impl_->scheduler->ListJobs(*page, *states, *tenant);
  if (list.ok()) {
    for (const JobView& v : list->jobs) ToProto(v, resp->add_jobs());
    resp->set_next_page_token(list->next_page_token);
  }
  return Done(ctx, list.status());
}

grpc::ServerUnaryReactor* Service::CancelJob(CallbackServerContext* ctx,
                                             const v1::CancelJobRequest* req, v1::Job* resp) {
  auto caller = impl_->Admit(ctx);
  if (!caller.ok()) return Done(ctx, caller.status());
  if (req->job_id().empty()) return Done(ctx, Field("job_id", "empty"));
  auto owned = impl_->JobFor(*caller, req->job_id());
  if (!owned.ok()) return Done(ctx, owned.status());
  auto view = impl_->scheduler->Cancel(req->job_id());
  if (view.ok()) ToProto(*view, resp);
  return Done(ctx, view.status());
}

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
  std::string fingerprint;
  if (!req->model().empty()) {
    auto m = impl_->registry->Find(req->model());
    if (!m.ok()) return Done(ctx, Annotate(m.status(), "model"));
    fingerprint = (*m)->fingerprint;
  }
  auto list = impl_->store->ListLatents(*page, fingerprint, *tenant);
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
    const ModelInfo& model = **found;
    auto array = ParseLatentBytes(req->npy());
    if (!array.ok()) return Annotate(array.status(), "npy");
    const int64_t L = model.num_layers, D = model.latent_size;
    std::vector<float> values;
    if (array->shape == std::vector<int64_t>{L, D} ||
        array->shape == std::vector<int64_t>{1, L, D}) {  // [1, L, D]: NVIDIA's projected_w
      values = array->values;
    } else if (array->shape == std::vector<int64_t>{D}) {
      for (int64_t l = 0; l < L; ++l)
        values.insert(values.end(), array->values.begin(), array->values.end());
    } else {
      return Field("npy", absl::StrCat("shape ", array->ShapeString(), ", model \"", model.name,
                                       "\" needs [", L, ", ", D, "] (or [1, ", L, ", ", D, "] or [",
                                       D, "])"));
    }
    for (float v : values) {
      if (!std::isfinite(v)) return Field("npy", "contains NaN or Inf");
    }
    LatentRecord rec;
    rec.model = model.name;
    rec.fingerprint = model.fingerprint;
    rec.num_layers = static_cast<int>(L);
    rec.latent_size = static_cast<int>(D);
    rec.values = std::move(values);
    rec.noise_seed = req->noise_seed();
    rec.source = "import";
    for (const auto& [k, v] : req->labels()) rec.labels[k] = v;
    return impl_->PutNewLatent(caller, "ImportLatent", req->request_id(), RequestHash(*req),
                               std::move(rec), resp);
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
  FloatArray a;
  a.shape = {rec->num_layers, rec->latent_size};
  a.values = std::move(rec->values);
  if (req->format() == v1::LATENT_FILE_PROJECTED_W) {
    a.shape.insert(a.shape.begin(), 1);
    auto npz = SerializeProjectedW(a);
    if (!npz.ok()) return Done(ctx, npz.status());
    resp->set_projected_w_npz(*std::move(npz));
  } else {
    resp->set_npy(SerializeNpy(a));
  }
  rec->noise_npz.clear();
  ToProto(*rec, resp->mutable_latent());
  return Done(ctx, absl::OkStatus());
}

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
  auto* reactor = ctx->DefaultReactor();
  const torch::Tensor w = latent->w;
  impl_->RenderAndFinish(ctx, reactor, caller->tenant, *model, w, *std::move(latent),
                         &req->render(), resp->mutable_image());
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
    const int frames = req->frames() == 0 ? 16 : req->frames();
    const uint64_t seed = req->render().noise_seed();
    ASSIGN_OR_RETURN(Resolved a, impl_->Resolve(caller, req->a(), *model, "a", seed));
    ASSIGN_OR_RETURN(Resolved b, impl_->Resolve(caller, req->b(), *model, "b", seed));
    ASSIGN_OR_RETURN(ConcurrencyLimiter::Lease lease, impl_->streams.Acquire(caller.tenant));
    return new MorphReactor(impl_.get(), caller.tenant, model, std::move(a), std::move(b), frames,
                            req->render(), DeadlineOf(ctx), std::move(lease));
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
    ASSIGN_OR_RETURN(Resolved content,
                     impl_->Resolve(caller, req->content(), *model, "content", seed));
    ASSIGN_OR_RETURN(Resolved style, impl_->Resolve(caller, req->style(), *model, "style", seed));
    ASSIGN_OR_RETURN(torch::Tensor mixed, i2s::StyleMix(content.w, style.w, req->crossover()));
    mixed = mixed[0].contiguous();
    if (req->store_result()) {
      RETURN_IF_ERROR(impl_->StoreResult(caller, "StyleMix", req->request_id(), RequestHash(*req),
                                         *model, mixed, content, "stylemix", {content.id, style.id},
                                         {{"crossover", req->crossover()}}, req->labels(),
                                         resp->mutable_latent()));
    }
    impl_->RenderAndFinish(ctx, reactor, caller.tenant, model, mixed, content, &req->render(),
                           resp->mutable_image());
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
    ASSIGN_OR_RETURN(Resolved target,
                     impl_->Resolve(caller, req->target(), *model, "target", seed));
    ASSIGN_OR_RETURN(Resolved neutral,
                     impl_->Resolve(caller, req->neutral(), *model, "neutral", seed));
    ASSIGN_OR_RETURN(Resolved expr,
                     impl_->Resolve(caller, req->expression(), *model, "expression", seed));
    ASSIGN_OR_RETURN(torch::Tensor w,
                     i2s::ExpressionTransfer(target.w, neutral.w, expr.w, req->strength(),
                                             req->first_layer(), last));
    w = w.reshape({model->num_layers, model->latent_size}).contiguous();
    if (req->store_result()) {
      RETURN_IF_ERROR(impl_->StoreResult(
          caller, "ExpressionTransfer", req->request_id(), RequestHash(*req), *model, w, target,
          "expression", {target.id, neutral.id, expr.id},
          {{"lambda", req->strength()}, {"first_layer", req->first_layer()}, {"last_layer", last}},
          req->labels(), resp->mutable_latent()));
    }
    impl_->RenderAndFinish(ctx, reactor, caller.tenant, model, w, target, &req->render(),
                           resp->mutable_image());
    return absl::OkStatus();
  };
  absl::Status s = prepare();
  if (!s.ok()) reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

grpc::ServerUnaryReactor* Service::AlignFace(CallbackServerContext* ctx,
                                             const v1::AlignFaceRequest* req,
                                             v1::AlignFaceResponse* resp) {
  auto caller = impl_->Admit(ctx);
  if (!caller.ok()) return Done(ctx, caller.status());
  absl::Status bad = CheckAlignFaceRequest(*req);
  if (bad.ok()) bad = CheckImageLimits(req->image(), impl_->decode_limits(), "image").status();
  if (!bad.ok()) return Done(ctx, bad);
  // Decoding and alignment on the WorkPool; this gRPC thread goes back to gRPC now.
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  auto run = [this, req, resp]() -> absl::Status {
    int size = req->size();
    if (size == 0) {
      auto found = impl_->registry->Find(req->model());
      if (!found.ok()) return Annotate(found.status(), "model");
      size = (*found)->resolution;
    }
    ASSIGN_OR_RETURN(PrepareOptions prepare,
                     impl_->PrepareOptionsOf(req->align(), req->resize(), size));
    ASSIGN_OR_RETURN(torch::Tensor image,
                     DecodeRgbImage(req->image(), impl_->decode_limits(), "image"));
    ASSIGN_OR_RETURN(PreparedImage prepared,
                     PrepareImage(image, prepare, impl_->face_detector, "align"));
    v1::Alignment* out = resp->mutable_alignment();
    ToProto(*prepared.alignment, out);
    ASSIGN_OR_RETURN(std::string png,
                     EncodeRgb8(UnitImageToRgb8(prepared.image), EncodeFormat::kPng));
    SetPng(png, size, out->mutable_aligned());
    return absl::OkStatus();
  };
  absl::Status queued = impl_->image_pool->Submit(caller->tenant, [ctx, reactor, run] {
    reactor->Finish(
        ToGrpcStatus(ctx->IsCancelled()
                         ? absl::CancelledError("the call was cancelled before its image was read")
                         : run()));
  });
  if (!queued.ok()) reactor->Finish(ToGrpcStatus(queued));
  return reactor;
}

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
  for (const ModelInfo& m : impl_->registry->models()) {
    auto* out = resp->add_models();
    out->set_name(m.name);
    out->set_fingerprint(m.fingerprint);
    out->set_architecture(m.architecture);
    out->set_resolution(m.resolution);
    out->set_num_layers(m.num_layers);
    out->set_latent_size(m.latent_size);
    out->set_is_default(m.is_default);
    out->set_is_demo(m.is_demo);
    out->set_num_noise_maps(m.num_noise_maps);
    out->set_mapping_layers(m.mapping_layers);
    for (int64_t c : m.channels) out->add_channels(static_cast<int32_t>(c));
    out->set_conv_clamp(m.conv_clamp);
    out->set_source(m.source);
    out->set_has_file_mean_w(m.has_file_mean_w);
  }
  for (const std::string& d : impl_->registry->device_names()) resp->add_devices(d);
  const ServiceLimits& l = impl_->limits;
  const SchedulerOptions& s = impl_->scheduler->options();
  auto* limits = resp->mutable_limits();
  limits->set_queue_limit(s.queue_limit);
  limits->set_max_batch(s.max_batch);
  limits->set_max_message_bytes(l.max_message_bytes);
  limits->set_max_receive_message_bytes(l.max_receive_message_bytes());
  limits->set_tenant_max_running(s.tenant_max_running);
  limits->set_device_queue_limit(s.task_queue_limit);
  limits->set_tenant_device_queue_limit(s.tenant_task_limit);
  limits->set_device_task_share(s.task_share);
  limits->set_device_wait_seconds(l.device_wait_seconds);
  limits->set_max_image_bytes(l.max_image_bytes);
  limits->set_max_image_pixels(l.max_image_pixels);
  limits->set_max_steps(l.max_steps);
  limits->set_max_morph_frames(l.max_morph_frames);
  limits->set_checkpoint_every(s.checkpoint_every);
  limits->set_tenant_queue_limit(s.tenant_queue_limit);
  limits->set_rate_limit(l.rate_limit);
  limits->set_rate_burst(l.rate_burst);
  limits->set_max_streams(l.max_streams);
  limits->set_tenant_max_streams(l.tenant_max_streams);
  limits->set_max_concurrent_images(l.max_concurrent_images);
  limits->set_image_queue_limit(l.image_queue_limit);
  limits->set_tenant_max_images(l.tenant_max_images);
  limits->set_max_streams_per_connection(l.connections.max_streams_per_connection);
  limits->set_max_connection_idle_seconds(l.connections.max_idle_seconds);
  limits->set_max_connection_age_seconds(l.connections.max_age_seconds);
  limits->set_max_health_watchers(l.connections.max_health_watchers);
  impl_->FillQuotas(limits->mutable_quotas());
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
    for (const TenantUsage& u : usage) {
      v1::TenantUsage* out = resp->add_usage();
      out->set_tenant(u.tenant);
      out->set_latents(u.latents);
      out->set_latent_bytes(u.latent_bytes);
      out->set_jobs(u.jobs);
      out->set_unfinished_jobs(u.unfinished_jobs);
      out->set_job_bytes(u.job_bytes);
      out->set_request_ids(u.request_ids);
    }
    impl_->FillQuotas(resp->mutable_quotas());
    return absl::OkStatus();
  };
  return Done(ctx, run());
}

}  // namespace i2s

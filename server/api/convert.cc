#include "server/api/convert.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include "common/defaults.h"
#include "common/status_macros.h"
#include "server/api/request_check.h"
#include "server/base/private_detail.h"
#include "server/base/sha256.h"

namespace i2s {
namespace {

void ToProto(Point2 p, v1::Point* out) {
  out->set_x(p.x);
  out->set_y(p.y);
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

v1::JobState ToProto(JobState s) { return static_cast<v1::JobState>(static_cast<int>(s)); }

}  // namespace

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

std::map<std::string, std::string> LabelsOf(
    const google::protobuf::Map<std::string, std::string>& labels) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : labels) out[k] = v;
  return out;
}

absl::StatusOr<EmbedOptions> EmbedOptionsOf(const v1::EmbedOptions& o) {
  // Unset fields keep the schedule's defaults.
  EmbedOptions e;
  if (o.schedule() == v1::STYLEGAN2_PROJECTOR) {
    e = EmbedOptions::StyleGan2Projector();
    if (o.has_lr_rampup()) e.lr_rampup = o.lr_rampup();
    if (o.has_lr_rampdown()) e.lr_rampdown = o.lr_rampdown();
    if (o.has_w_noise()) e.w_noise_factor = o.w_noise();
    if (o.has_w_noise_ramp()) e.w_noise_ramp = o.w_noise_ramp();
    if (o.has_noise_regularize()) e.noise_regularize = o.noise_regularize();
  }
  if (o.has_w_lpips()) e.w_lpips = o.w_lpips();
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
    case v1::FROM_LATENT:
      e.init = LatentInit::kGiven;
      break;
    default:
      return Field("options.init", "unknown init");
  }
  return e;
}

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
  p.face = a.face();
  return p;
}

RenderSettings RenderSettingsOf(const v1::RenderOptions& o) {
  RenderSettings s;
  switch (o.noise_mode()) {
    case v1::NOISE_NONE:
      s.noise = NoiseMode::kNone;
      break;
    case v1::NOISE_SEEDED:
      s.noise = NoiseMode::kSeeded;
      break;
    case v1::NOISE_CONSTANT:
      s.noise = NoiseMode::kConstant;
      break;
    case v1::NOISE_LATENT:
      s.noise = NoiseMode::kLatent;
      break;
    default:  // NOISE_AUTO
      s.noise = NoiseMode::kAuto;
      break;
  }
  s.encoding = o.format() == v1::RAW_FLOAT32 ? ImageEncoding::kRawFloat32
               : o.format() == v1::JPEG      ? ImageEncoding::kJpeg
                                             : ImageEncoding::kPng;
  s.jpeg_quality = o.jpeg_quality() == 0 ? defaults::kJpegQuality : o.jpeg_quality();
  return s;
}

void ToProto(const LatentMetrics& m, v1::EmbedMetrics* out) {
  out->set_loss(m.loss);
  out->set_mse(m.mse);
  out->set_perceptual(m.perceptual);
  out->set_psnr_db(m.psnr);
  out->set_steps(m.steps);
  if (m.lpips >= 0) out->set_lpips(m.lpips);
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
  out->set_face(a.face);
}

void ToProto(const FaceDetection& d, v1::DetectedFace* out) {
  for (Point2 p : d.face_box) ToProto(p, out->add_box());
  const FaceLandmarks& l = d.landmarks;
  for (Point2 p : {l.eye_left, l.eye_right, d.nose, l.mouth_left, l.mouth_right}) {
    ToProto(p, out->add_landmarks());
  }
  out->set_confidence(d.confidence);
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
  // An embedding's own alignment, or for an edit that of the latent it was applied to.
  SetAlignment(AlignmentOfLatentParams(r.params_json), out);
}

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

void ToProto(const EncodedImage& image, v1::Image* out) {
  out->set_width(image.width);
  out->set_height(image.height);
  switch (image.encoding) {
    case ImageEncoding::kRawFloat32:
      out->set_format(v1::RAW_FLOAT32);
      break;
    case ImageEncoding::kJpeg:
      out->set_format(v1::JPEG);
      break;
    case ImageEncoding::kPng:
      out->set_format(v1::PNG);
      break;
  }
  out->set_data(image.data);
}

void ToProto(const ModelInfo& m, v1::ModelInfo* out) {
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

void ToProto(const TenantUsage& u, v1::TenantUsage* out) {
  out->set_tenant(u.tenant);
  out->set_latents(u.latents);
  out->set_latent_bytes(u.latent_bytes);
  out->set_jobs(u.jobs);
  out->set_unfinished_jobs(u.unfinished_jobs);
  out->set_job_bytes(u.job_bytes);
  out->set_request_ids(u.request_ids);
  out->set_directions(u.directions);
  out->set_direction_bytes(u.direction_bytes);
}

void ToProto(const DirectionRecord& r, v1::Direction* out) {
  out->set_name(r.name);
  out->set_model(r.model);
  out->set_fingerprint(r.fingerprint);
  out->set_num_layers(r.num_layers);
  out->set_latent_size(r.latent_size);
  out->mutable_values()->Assign(r.values.begin(), r.values.end());
  out->set_sigma(r.sigma);
  out->set_source(r.source);
  out->set_params_json(r.params_json);
  out->set_created_unix_ms(r.created_unix_ms);
  out->set_tenant(r.tenant);
}

void ToProto(const StorageQuota& q, const SchedulerOptions& s, v1::Quotas* out) {
  out->set_max_latents(q.max_latents);
  out->set_max_directions(q.max_directions);
  out->set_max_latent_bytes(q.max_latent_bytes);
  out->set_max_jobs(q.max_jobs);
  out->set_max_job_bytes(q.max_job_bytes);
  out->set_job_retention_seconds(static_cast<double>(s.job_retention_ms) / 1000);
  out->set_request_id_retention_seconds(static_cast<double>(s.request_id_retention_ms) / 1000);
}

void ToProto(const ServiceLimits& l, const SchedulerOptions& s, v1::Limits* out) {
  out->set_queue_limit(s.queue_limit);
  out->set_max_batch(s.max_batch);
  out->set_max_message_bytes(l.max_message_bytes);
  out->set_max_receive_message_bytes(l.max_receive_message_bytes());
  out->set_tenant_max_running(s.tenant_max_running);
  out->set_device_queue_limit(s.task_queue_limit);
  out->set_tenant_device_queue_limit(s.tenant_task_limit);
  out->set_device_task_share(s.task_share);
  out->set_device_wait_seconds(l.device_wait_seconds);
  out->set_max_image_bytes(l.max_image_bytes);
  out->set_max_image_pixels(l.max_image_pixels);
  out->set_max_steps(l.max_steps);
  out->set_max_morph_frames(l.max_morph_frames);
  out->set_checkpoint_every(s.checkpoint_every);
  out->set_tenant_queue_limit(s.tenant_queue_limit);
  out->set_rate_limit(l.rate_limit);
  out->set_rate_burst(l.rate_burst);
  out->set_max_streams(l.max_streams);
  out->set_tenant_max_streams(l.tenant_max_streams);
  out->set_max_concurrent_images(l.max_concurrent_images);
  out->set_image_queue_limit(l.image_queue_limit);
  out->set_tenant_max_images(l.tenant_max_images);
  out->set_max_streams_per_connection(l.connections.max_streams_per_connection);
  out->set_max_connection_idle_seconds(l.connections.max_idle_seconds);
  out->set_max_connection_age_seconds(l.connections.max_age_seconds);
  out->set_max_health_watchers(l.connections.max_health_watchers);
}

}  // namespace i2s

#include "server/api/request_check.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/defaults.h"
#include "common/status_macros.h"

namespace i2s {
namespace {

bool InRange(double x, double lo, double hi) { return std::isfinite(x) && x >= lo && x <= hi; }

}  // namespace

absl::Status Field(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", problem));
}

absl::Status CheckRequestId(const std::string& id) {
  if (id.size() > 128) return Field("request_id", "at most 128 characters");
  return absl::OkStatus();
}

absl::Status CheckLabels(const google::protobuf::Map<std::string, std::string>& labels) {
  if (labels.size() > 64) return Field("labels", "at most 64 labels");
  for (const auto& [k, v] : labels) {
    if (k.empty() || k.size() > 63) return Field("labels", "keys must have 1-63 characters");
    if (v.size() > 256) return Field(absl::StrCat("labels[", k, "]"), "at most 256 characters");
  }
  return absl::OkStatus();
}

absl::StatusOr<Page> PageOf(int32_t size, const std::string& token) {
  if (size < 0 || size > defaults::kMaxPageSize) {
    return Field("page_size", absl::StrCat("must be in [0, ", defaults::kMaxPageSize,
                                           "] (0 = ", defaults::kPageSize, ")"));
  }
  Page p;
  p.page_size = size == 0 ? defaults::kPageSize : size;
  p.page_token = token;
  return p;
}

absl::StatusOr<std::vector<JobState>> JobStatesOf(const google::protobuf::RepeatedField<int>& s) {
  std::vector<JobState> states;
  for (int state : s) {
    if (state < static_cast<int>(JobState::kQueued) ||
        state > static_cast<int>(JobState::kCancelled)) {
      return Field("states", absl::StrCat("unknown state ", state));
    }
    states.push_back(static_cast<JobState>(state));
  }
  return states;
}

absl::Status CheckRenderOptions(const v1::RenderOptions& o, const std::string& field) {
  if (!v1::ImageFormat_IsValid(o.format())) return Field(field + ".format", "unknown format");
  if (o.jpeg_quality() < 0 || o.jpeg_quality() > 100) {
    return Field(field + ".jpeg_quality",
                 absl::StrCat("must be in [0, 100] (0 = ", defaults::kJpegQuality, ")"));
  }
  if (!v1::NoiseMode_IsValid(o.noise_mode())) {
    return Field(field + ".noise_mode", absl::StrCat("unknown mode ", o.noise_mode()));
  }
  return absl::OkStatus();
}

absl::Status CheckEmbedOptions(const v1::EmbedOptions& o, int max_steps) {
  const std::string steps_range = absl::StrCat("must be in [0, ", max_steps, "]");
  if (o.has_steps() && (o.steps() < 0 || o.steps() > max_steps)) {
    return Field("options.steps", steps_range);
  }
  if (o.has_noise_steps() && (o.noise_steps() < 0 || o.noise_steps() > max_steps)) {
    return Field("options.noise_steps", steps_range);
  }
  // Unset fields keep the defaults (the projector's steps where it is the schedule).
  const bool projector = o.schedule() == v1::STYLEGAN2_PROJECTOR;
  const int64_t steps =
      o.has_steps() ? o.steps() : (projector ? defaults::kProjectorSteps : defaults::kSteps);
  const int64_t noise_steps = o.has_noise_steps() ? o.noise_steps() : defaults::kNoiseSteps;
  if (steps + noise_steps < 1 || steps + noise_steps > max_steps) {
    return Field("options.steps",
                 absl::StrCat("steps + noise_steps must be in [1, ", max_steps, "]"));
  }
  if (o.has_lr() && !InRange(o.lr(), 1e-9, 10)) return Field("options.lr", "must be in (0, 10]");
  if (o.has_noise_lr() && !InRange(o.noise_lr(), 1e-9, 10)) {
    return Field("options.noise_lr", "must be in (0, 10]");
  }
  if (o.has_w_mse() && !InRange(o.w_mse(), 0, 1e6)) {
    return Field("options.w_mse", "must be in [0, 1e6]");
  }
  if (o.has_w_perceptual() && !InRange(o.w_perceptual(), 0, 1e6)) {
    return Field("options.w_perceptual", "must be in [0, 1e6]");
  }
  if (!v1::EmbedSchedule_IsValid(o.schedule())) {
    return Field("options.schedule", absl::StrCat("unknown schedule ", o.schedule()));
  }
  if (o.has_w_lpips() && !InRange(o.w_lpips(), 0, 1e6)) {
    return Field("options.w_lpips", "must be in [0, 1e6]");
  }
  // Unset weights are the schedule's defaults.
  const double w_mse =
      o.has_w_mse() ? o.w_mse() : (projector ? defaults::kProjectorWMse : defaults::kWMse);
  const double w_perceptual =
      o.has_w_perceptual() ? o.w_perceptual()
                           : (projector ? defaults::kProjectorWPerceptual : defaults::kWPerceptual);
  const double w_lpips =
      o.has_w_lpips() ? o.w_lpips() : (projector ? defaults::kProjectorWLpips : defaults::kWLpips);
  if (w_mse == 0 && w_perceptual == 0 && w_lpips == 0) {
    return Field("options.w_mse", "w_mse, w_perceptual and w_lpips cannot all be 0");
  }
  struct ProjectorField {
    bool set;
    double value, lo, hi;
    const char* name;
  };
  for (const ProjectorField& f : {
           ProjectorField{o.has_lr_rampup(), o.lr_rampup(), 0, 1, "lr_rampup"},
           ProjectorField{o.has_lr_rampdown(), o.lr_rampdown(), 0, 1, "lr_rampdown"},
           ProjectorField{o.has_w_noise(), o.w_noise(), 0, 10, "w_noise"},
           ProjectorField{o.has_w_noise_ramp(), o.w_noise_ramp(), 0, 1, "w_noise_ramp"},
           ProjectorField{o.has_noise_regularize(), o.noise_regularize(), 0, 1e9,
                          "noise_regularize"},
       }) {
    if (!f.set) continue;
    if (!projector) {
      return Field(absl::StrCat("options.", f.name), "only used with schedule STYLEGAN2_PROJECTOR");
    }
    if (!InRange(f.value, f.lo, f.hi)) {
      return Field(absl::StrCat("options.", f.name),
                   absl::StrCat("must be in [", f.lo, ", ", f.hi, "]"));
    }
  }
  if (o.has_target_psnr_db() && !InRange(o.target_psnr_db(), 0, 100)) {
    return Field("options.target_psnr_db", "must be in [0, 100]");
  }
  if (o.has_plateau_window() && (o.plateau_window() < 0 || o.plateau_window() > max_steps)) {
    return Field("options.plateau_window", steps_range);
  }
  if (o.has_perceptual_resolution() &&
      (o.perceptual_resolution() < 8 || o.perceptual_resolution() > 1024)) {
    return Field("options.perceptual_resolution", "must be in [8, 1024]");
  }
  if (!v1::LatentSpace_IsValid(o.space())) return Field("options.space", "unknown space");
  if (!v1::LatentInit_IsValid(o.init())) return Field("options.init", "unknown init");
  if (o.init() == v1::FROM_LATENT && o.init_latent_id().empty()) {
    return Field("options.init_latent_id", "required when init is FROM_LATENT");
  }
  if (o.init() != v1::FROM_LATENT && !o.init_latent_id().empty()) {
    return Field("options.init_latent_id", "only used with init FROM_LATENT");
  }
  return absl::OkStatus();
}

absl::Status CheckAlignOptions(const v1::AlignOptions& a, v1::ResizeMode resize) {
  if (!v1::ResizeMode_IsValid(resize)) return Field("resize", "unknown mode");
  if (!v1::AlignOptions::Mode_IsValid(a.mode())) return Field("align.mode", "unknown mode");
  if (a.mode() != v1::AlignOptions::LANDMARKS && a.landmarks_size() > 0) {
    return Field("align.landmarks", "only used with mode LANDMARKS");
  }
  for (int i = 0; i < a.landmarks_size(); ++i) {
    const v1::Point& p = a.landmarks(i);
    if (!std::isfinite(p.x()) || !std::isfinite(p.y())) {
      return Field(absl::StrCat("align.landmarks[", i, "]"), "must be finite");
    }
  }
  if (!InRange(a.min_confidence(), 0, 1)) {
    return Field("align.min_confidence", absl::StrCat("must be in [0, 1] (0 = the default, ",
                                                      defaults::kMinConfidence, ")"));
  }
  if (!v1::AlignOptions::NoFace_IsValid(a.on_no_face())) {
    return Field("align.on_no_face", "unknown value");
  }
  if (a.face() != 0 && a.mode() != v1::AlignOptions::AUTO) {
    return Field("align.face", "only used with mode AUTO");
  }
  if (a.face() < 0 || a.face() >= defaults::kMaxFaces) {
    return Field("align.face", absl::StrCat("must be in [0, ", defaults::kMaxFaces - 1,
                                            "] (faces counted from 0, largest first)"));
  }
  return absl::OkStatus();
}

absl::Status CheckLatentRef(const v1::LatentRef& ref, const std::string& field) {
  switch (ref.kind_case()) {
    case v1::LatentRef::kLatentId:
      if (ref.latent_id().empty()) return Field(field + ".latent_id", "empty");
      return absl::OkStatus();
    case v1::LatentRef::kValues:
      for (float x : ref.values().values()) {
        if (!std::isfinite(x)) return Field(field + ".values.values", "contains NaN or Inf");
      }
      return absl::OkStatus();
    case v1::LatentRef::KIND_NOT_SET:
      break;
  }
  return Field(field, "missing: give latent_id or values");
}

absl::Status CheckEmbedRequest(const v1::EmbedRequest& r, const RequestLimits& limits) {
  RETURN_IF_ERROR(CheckRequestId(r.request_id()));
  RETURN_IF_ERROR(CheckLabels(r.labels()));
  if (r.preview_every() < 0) return Field("preview_every", "must be >= 0");
  RETURN_IF_ERROR(CheckAlignOptions(r.align(), r.resize()));
  const auto mode = r.align().mode();
  if (r.return_aligned_image() && mode != v1::AlignOptions::LANDMARKS &&
      mode != v1::AlignOptions::AUTO) {
    return Field("return_aligned_image", "needs align.mode LANDMARKS or AUTO");
  }
  if (!v1::MaskFrame_IsValid(r.mask_frame())) {
    return Field("mask_frame", "unknown value (MASK_FRAME_PHOTO or MASK_FRAME_ALIGNED)");
  }
  return CheckEmbedOptions(r.options(), limits.max_steps);
}

absl::Status CheckWatchJobRequest(const v1::WatchJobRequest& r) {
  if (r.job_id().empty()) return Field("job_id", "empty");
  // Sequences start at 1; 0 replays from the start. A negative one is a client's bug.
  if (r.after_sequence() < 0) return Field("after_sequence", "must be >= 0");
  return absl::OkStatus();
}

namespace {

absl::Status CheckTransform(const google::protobuf::RepeatedField<double>& t,
                            const std::string& field) {
  if (!t.empty() && t.size() != 6) {
    return Field(field, absl::StrCat("6 numbers (Alignment.transform), got ", t.size()));
  }
  for (int i = 0; i < t.size(); ++i) {
    if (!std::isfinite(t[i])) return Field(absl::StrCat(field, "[", i, "]"), "must be finite");
  }
  return absl::OkStatus();
}

// PasteOptions under `field` ("options", "paste_into.options").
absl::Status CheckPasteOptions(const v1::PasteOptions& o, const std::string& field) {
  if (!v1::PasteOptions::Region_IsValid(o.region())) {
    return Field(field + ".region", "unknown value");
  }
  if (!v1::PasteOptions::Blend_IsValid(o.blend())) return Field(field + ".blend", "unknown value");
  if (!std::isfinite(o.feather()) || o.feather() < 0 || o.feather() > 0.5) {
    return Field(field + ".feather",
                 absl::StrCat("must be in [0, 0.5] (0 = ", defaults::kPasteFeather, ")"));
  }
  if (o.hard_edge() && o.feather() != 0) {
    return Field(field + ".feather", "must be 0 with hard_edge");
  }
  if (o.format() != v1::IMAGE_FORMAT_UNSPECIFIED && o.format() != v1::PNG &&
      o.format() != v1::JPEG) {
    return Field(field + ".format", "PNG or JPEG (the photo is returned as an 8-bit image)");
  }
  if (o.jpeg_quality() < 0 || o.jpeg_quality() > 100) {
    return Field(field + ".jpeg_quality",
                 absl::StrCat("must be in [1, 100] (0 = ", defaults::kJpegQuality, ")"));
  }
  return absl::OkStatus();
}

// `paste_into` of the render RPCs.
absl::Status CheckPasteInto(bool has, const v1::PasteInto& p) {
  if (!has) return absl::OkStatus();
  if (p.photo().empty()) return Field("paste_into.photo", "required: the photo to paste into");
  RETURN_IF_ERROR(CheckTransform(p.transform(), "paste_into.transform"));
  return CheckPasteOptions(p.options(), "paste_into.options");
}

}  // namespace

absl::Status CheckSynthesizeRequest(const v1::SynthesizeRequest& r) {
  RETURN_IF_ERROR(CheckRenderOptions(r.render(), "render"));
  RETURN_IF_ERROR(CheckPasteInto(r.has_paste_into(), r.paste_into()));
  return CheckLatentRef(r.latent(), "latent");
}

absl::Status CheckPasteBackRequest(const v1::PasteBackRequest& r) {
  if (r.photo().empty()) return Field("photo", "required: the photo to paste into");
  if (r.faces_size() < 1 || r.faces_size() > defaults::kMaxPasteFaces) {
    return Field("faces",
                 absl::StrCat("1 to ", defaults::kMaxPasteFaces, " faces, got ", r.faces_size()));
  }
  for (int i = 0; i < r.faces_size(); ++i) {
    const v1::PasteFace& f = r.faces(i);
    const std::string field = absl::StrCat("faces[", i, "]");
    RETURN_IF_ERROR(CheckLatentRef(f.latent(), field + ".latent"));
    RETURN_IF_ERROR(CheckTransform(f.transform(), field + ".transform"));
    RETURN_IF_ERROR(CheckRenderOptions(f.render(), field + ".render"));
  }
  return CheckPasteOptions(r.options(), "options");
}

absl::Status CheckMorphRequest(const v1::MorphRequest& r, const RequestLimits& limits) {
  RETURN_IF_ERROR(CheckRenderOptions(r.render(), "render"));
  const int frames = r.frames() == 0 ? defaults::kMorphFrames : r.frames();
  if (frames < 2 || frames > limits.max_morph_frames) {
    return Field("frames", absl::StrCat("must be in [2, ", limits.max_morph_frames,
                                        "] (0 = ", defaults::kMorphFrames, ")"));
  }
  RETURN_IF_ERROR(CheckPasteInto(r.has_paste_into(), r.paste_into()));
  RETURN_IF_ERROR(CheckLatentRef(r.a(), "a"));
  return CheckLatentRef(r.b(), "b");
}

absl::Status CheckStyleMixRequest(const v1::StyleMixRequest& r) {
  RETURN_IF_ERROR(CheckRequestId(r.request_id()));
  RETURN_IF_ERROR(CheckLabels(r.labels()));
  RETURN_IF_ERROR(CheckRenderOptions(r.render(), "render"));
  if (r.crossover() < 0) return Field("crossover", "must be >= 0");
  RETURN_IF_ERROR(CheckPasteInto(r.has_paste_into(), r.paste_into()));
  RETURN_IF_ERROR(CheckLatentRef(r.content(), "content"));
  return CheckLatentRef(r.style(), "style");
}

absl::Status CheckDirectionName(const std::string& name, const std::string& field) {
  if (name.empty()) return Field(field, "empty (a direction's name)");
  if (name.size() > 64) return Field(field, absl::StrCat(name.size(), " characters (at most 64)"));
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.') {
      return Field(field, "only letters, digits, '_', '-' and '.'");
    }
  }
  return absl::OkStatus();
}

namespace {

absl::Status CheckConditions(const google::protobuf::RepeatedPtrField<std::string>& names,
                             const std::string& field) {
  if (names.size() > defaults::kMaxDirectionSteps) {
    return Field(field, absl::StrCat("at most ", defaults::kMaxDirectionSteps, " directions"));
  }
  for (int i = 0; i < names.size(); ++i) {
    RETURN_IF_ERROR(CheckDirectionName(names[i], absl::StrCat(field, "[", i, "]")));
  }
  return absl::OkStatus();
}

absl::Status CheckAlpha(double alpha, const std::string& field) {
  if (!std::isfinite(alpha) || std::abs(alpha) > defaults::kMaxDirectionAlpha) {
    return Field(field, absl::StrCat("must be finite, in [-", defaults::kMaxDirectionAlpha, ", ",
                                     defaults::kMaxDirectionAlpha, "]"));
  }
  return absl::OkStatus();
}

absl::Status CheckLatentRefs(const google::protobuf::RepeatedPtrField<v1::LatentRef>& refs,
                             const std::string& field) {
  if (refs.empty() || refs.size() > defaults::kMaxDirectionLatents) {
    return Field(field, absl::StrCat("1 to ", defaults::kMaxDirectionLatents, " latents, got ",
                                     refs.size()));
  }
  for (int i = 0; i < refs.size(); ++i) {
    RETURN_IF_ERROR(CheckLatentRef(refs[i], absl::StrCat(field, "[", i, "]")));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckImportDirectionRequest(const v1::ImportDirectionRequest& r) {
  RETURN_IF_ERROR(CheckDirectionName(r.name(), "name"));
  if (r.file().empty()) return Field("file", "empty: a .npy or GANSpace .npz file");
  if (r.components_size() > 4096) return Field("components", "at most 4096");
  for (int i = 0; i < r.components_size(); ++i) {
    if (r.components(i) < 0) return Field(absl::StrCat("components[", i, "]"), "must be >= 0");
  }
  return absl::OkStatus();
}

absl::Status CheckComputeDirectionRequest(const v1::ComputeDirectionRequest& r) {
  RETURN_IF_ERROR(CheckDirectionName(r.name(), "name"));
  RETURN_IF_ERROR(CheckLatentRefs(r.from_latents(), "from_latents"));
  return CheckLatentRefs(r.to_latents(), "to_latents");
}

absl::Status CheckApplyDirectionsRequest(const v1::ApplyDirectionsRequest& r) {
  RETURN_IF_ERROR(CheckRequestId(r.request_id()));
  RETURN_IF_ERROR(CheckLabels(r.labels()));
  RETURN_IF_ERROR(CheckRenderOptions(r.render(), "render"));
  if (r.steps().empty() || r.steps_size() > defaults::kMaxDirectionSteps) {
    return Field("steps", absl::StrCat("1 to ", defaults::kMaxDirectionSteps, " steps, got ",
                                       r.steps_size()));
  }
  for (int i = 0; i < r.steps_size(); ++i) {
    const std::string field = absl::StrCat("steps[", i, "]");
    RETURN_IF_ERROR(CheckDirectionName(r.steps(i).name(), field + ".name"));
    RETURN_IF_ERROR(CheckAlpha(r.steps(i).alpha(), field + ".alpha"));
  }
  RETURN_IF_ERROR(CheckConditions(r.condition_on(), "condition_on"));
  if (r.first_layer() < 0) return Field("first_layer", "must be >= 0");
  if (r.has_last_layer() && r.last_layer() < r.first_layer()) {
    return Field("last_layer", "must be >= first_layer");
  }
  RETURN_IF_ERROR(CheckPasteInto(r.has_paste_into(), r.paste_into()));
  return CheckLatentRef(r.latent(), "latent");
}

absl::Status CheckDirectionFramesRequest(const v1::DirectionFramesRequest& r,
                                         const RequestLimits& limits) {
  RETURN_IF_ERROR(CheckRenderOptions(r.render(), "render"));
  RETURN_IF_ERROR(CheckDirectionName(r.direction(), "direction"));
  if (r.alphas().empty() || r.alphas_size() > limits.max_morph_frames) {
    return Field("alphas",
                 absl::StrCat("1 to ", limits.max_morph_frames, " frames, got ", r.alphas_size()));
  }
  for (int i = 0; i < r.alphas_size(); ++i) {
    RETURN_IF_ERROR(CheckAlpha(r.alphas(i), absl::StrCat("alphas[", i, "]")));
  }
  RETURN_IF_ERROR(CheckConditions(r.condition_on(), "condition_on"));
  if (r.first_layer() < 0) return Field("first_layer", "must be >= 0");
  if (r.has_last_layer() && r.last_layer() < r.first_layer()) {
    return Field("last_layer", "must be >= first_layer");
  }
  return CheckLatentRef(r.latent(), "latent");
}

absl::Status CheckLocalBlendRequest(const v1::LocalBlendRequest& r) {
  RETURN_IF_ERROR(CheckRenderOptions(r.render(), "render"));
  if (r.mask().empty()) return Field("mask", "required: an image over the render (white = source)");
  if (r.start_layer() < 0) return Field("start_layer", "must be >= 0");
  if (r.has_feather() && r.feather() < 0) return Field("feather", "must be >= 0");
  RETURN_IF_ERROR(CheckPasteInto(r.has_paste_into(), r.paste_into()));
  RETURN_IF_ERROR(CheckLatentRef(r.base(), "base"));
  return CheckLatentRef(r.source(), "source");
}

absl::Status CheckExpressionTransferRequest(const v1::ExpressionTransferRequest& r) {
  RETURN_IF_ERROR(CheckRequestId(r.request_id()));
  RETURN_IF_ERROR(CheckLabels(r.labels()));
  RETURN_IF_ERROR(CheckRenderOptions(r.render(), "render"));
  if (!InRange(r.strength(), -100, 100)) return Field("strength", "must be in [-100, 100]");
  if (r.first_layer() < 0) return Field("first_layer", "must be >= 0");
  if (r.has_last_layer() && r.last_layer() < r.first_layer()) {
    return Field("last_layer", "must be >= first_layer");
  }
  RETURN_IF_ERROR(CheckPasteInto(r.has_paste_into(), r.paste_into()));
  RETURN_IF_ERROR(CheckLatentRef(r.target(), "target"));
  RETURN_IF_ERROR(CheckLatentRef(r.neutral(), "neutral"));
  return CheckLatentRef(r.expression(), "expression");
}

absl::Status CheckImportLatentRequest(const v1::ImportLatentRequest& r) {
  RETURN_IF_ERROR(CheckRequestId(r.request_id()));
  RETURN_IF_ERROR(CheckLabels(r.labels()));
  if (r.npy().empty()) return Field("npy", "empty");
  return absl::OkStatus();
}

absl::Status CheckAlignFaceRequest(const v1::AlignFaceRequest& r) {
  // 1024 is the largest StyleGAN; the work buffers of a padded alignment grow with the
  // square of the size (at 1024, 0.73 GB for a face 4000 px wide mostly outside a
  // 512x512 photo, measured with i2s_tool align).
  if (r.size() != 0 && (r.size() < 8 || r.size() > 1024)) {
    return Field("size", "must be in [8, 1024], or 0 for the model's resolution");
  }
  RETURN_IF_ERROR(CheckAlignOptions(r.align(), r.resize()));
  const auto mode = r.align().mode();
  if (mode != v1::AlignOptions::LANDMARKS && mode != v1::AlignOptions::AUTO) {
    return Field("align.mode", "must be LANDMARKS or AUTO");
  }
  return absl::OkStatus();
}

absl::Status CheckListLatentsRequest(const v1::ListLatentsRequest& r) {
  return PageOf(r.page_size(), r.page_token()).status();
}

absl::Status CheckListJobsRequest(const v1::ListJobsRequest& r) {
  RETURN_IF_ERROR(PageOf(r.page_size(), r.page_token()).status());
  return JobStatesOf(r.states()).status();
}

}  // namespace i2s

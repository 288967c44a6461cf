#include "server/jobs/job.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/engine/torch_util.h"
#include "server/formats/npy.h"
#include "server/formats/zip.h"

namespace i2s {
namespace {

using nlohmann::json;

json OptionsToJson(const EmbedOptions& o) {
  return json{{"steps", o.steps},
              {"lr", o.lr},
              {"beta1", o.beta1},
              {"beta2", o.beta2},
              {"eps", o.eps},
              {"w_mse", o.w_mse},
              {"w_perceptual", o.w_perceptual},
              {"perceptual_resolution", o.perceptual_resolution},
              {"relu", {o.use_relu1_1, o.use_relu1_2, o.use_relu3_2, o.use_relu4_2}},
              {"space", o.space == LatentSpace::kW ? "w" : "w+"},
              {"init", static_cast<int>(o.init)},
              {"mean_w_samples", o.mean_w_samples},
              {"uniform_range", o.uniform_range},
              {"target_psnr", o.target_psnr},
              {"plateau_window", o.plateau_window},
              {"plateau_rel_eps", o.plateau_rel_eps},
              {"noise_steps", o.noise_steps},
              {"noise_lr", o.noise_lr},
              {"noise_w_mse", o.noise_w_mse},
              {"noise_w_perceptual", o.noise_w_perceptual},
              {"preview_every", o.preview_every},
              {"checkpoint_every", o.checkpoint_every},
              {"w_lpips", o.w_lpips},
              {"schedule", EmbedScheduleName(o.schedule)},
              {"lr_rampup", o.lr_rampup},
              {"lr_rampdown", o.lr_rampdown},
              {"w_noise_factor", o.w_noise_factor},
              {"w_noise_ramp", o.w_noise_ramp},
              {"noise_regularize", o.noise_regularize}};
}

EmbedOptions OptionsFromJson(const json& j) {
  EmbedOptions o;
  o.steps = j.at("steps");
  o.lr = j.at("lr");
  o.beta1 = j.at("beta1");
  o.beta2 = j.at("beta2");
  o.eps = j.at("eps");
  o.w_mse = j.at("w_mse");
  o.w_perceptual = j.at("w_perceptual");
  o.perceptual_resolution = j.at("perceptual_resolution");
  const json& relu = j.at("relu");
  o.use_relu1_1 = relu.at(0);
  o.use_relu1_2 = relu.at(1);
  o.use_relu3_2 = relu.at(2);
  o.use_relu4_2 = relu.at(3);
  o.space = j.at("space") == "w" ? LatentSpace::kW : LatentSpace::kWPlus;
  o.init = static_cast<LatentInit>(j.at("init").get<int>());
  o.mean_w_samples = j.at("mean_w_samples");
  o.uniform_range = j.at("uniform_range");
  o.target_psnr = j.at("target_psnr");
  o.plateau_window = j.at("plateau_window");
  o.plateau_rel_eps = j.at("plateau_rel_eps");
  o.noise_steps = j.at("noise_steps");
  o.noise_lr = j.at("noise_lr");
  o.noise_w_mse = j.at("noise_w_mse");
  o.noise_w_perceptual = j.at("noise_w_perceptual");
  o.preview_every = j.at("preview_every");
  o.checkpoint_every = j.at("checkpoint_every");
  // Absent from specs written before LPIPS and the projector: the engine's defaults.
  o.w_lpips = j.value("w_lpips", o.w_lpips);
  o.schedule = j.value("schedule", std::string("image2stylegan")) == "stylegan2_projector"
                   ? EmbedSchedule::kStyleGan2Projector
                   : EmbedSchedule::kImage2StyleGan;
  o.lr_rampup = j.value("lr_rampup", o.lr_rampup);
  o.lr_rampdown = j.value("lr_rampdown", o.lr_rampdown);
  o.w_noise_factor = j.value("w_noise_factor", o.w_noise_factor);
  o.w_noise_ramp = j.value("w_noise_ramp", o.w_noise_ramp);
  o.noise_regularize = j.value("noise_regularize", o.noise_regularize);
  return o;
}

void AddTensor(ZipWriter& zip, const std::string& name, const torch::Tensor& t) {
  // Members are small next to the 4 GiB zip limit (a 1024 image is 12 MiB).
  (void)zip.Add(name + ".npy", SerializeNpy(TensorToFloatArray(t)));
}

absl::StatusOr<torch::Tensor> GetTensor(const ZipArchive& zip, const std::string& name,
                                        bool required) {
  const ZipEntry* e = zip.Find(name + ".npy");
  if (e == nullptr) {
    if (required) return absl::DataLossError(absl::StrCat("member ", name, ".npy missing"));
    return torch::Tensor();
  }
  ASSIGN_OR_RETURN(FloatArray a, ParseNpy(e->data));
  return FloatArrayToTensor(a);
}

template <typename F>
auto JsonCall(F&& f) -> absl::StatusOr<decltype(f())> {
  try {
    return f();
  } catch (const std::exception& e) {
    return absl::DataLossError(absl::StrCat("bad JSON: ", e.what()));
  }
}

}  // namespace

std::string OptionsKey(const EmbedOptions& options) { return OptionsToJson(options).dump(); }

std::string SerializeSpec(const EmbedJobSpec& spec) {
  json j{{"model", spec.model},
         {"options", OptionsToJson(spec.options)},
         {"seed", spec.seed},
         {"labels", spec.labels},
         {"preview_every", spec.preview_every},
         {"return_reconstruction", spec.return_reconstruction}};
  if (!spec.alignment_json.empty()) {
    j["alignment"] = json::parse(spec.alignment_json);
    j["return_aligned_image"] = spec.return_aligned_image;
  }
  if (!spec.masks_json.empty()) j["masks"] = json::parse(spec.masks_json);
  ZipWriter zip;
  (void)zip.Add("spec.json", j.dump());
  AddTensor(zip, "image", spec.image);
  if (spec.init_latent.defined()) AddTensor(zip, "init_latent", spec.init_latent);
  if (spec.mse_mask.defined()) AddTensor(zip, "mse_mask", spec.mse_mask);
  if (spec.perceptual_mask.defined()) AddTensor(zip, "perceptual_mask", spec.perceptual_mask);
  return zip.Finish();
}

absl::StatusOr<EmbedJobSpec> ParseSpec(absl::string_view bytes) {
  ASSIGN_OR_RETURN(ZipArchive zip, ZipArchive::Parse(bytes));
  const ZipEntry* e = zip.Find("spec.json");
  if (e == nullptr) return absl::DataLossError("job spec: spec.json missing");
  EmbedJobSpec spec;
  RETURN_IF_ERROR(JsonCall([&] {
                    json j = json::parse(e->data);
                    spec.model = j.at("model");
                    spec.options = OptionsFromJson(j.at("options"));
                    spec.seed = j.at("seed");
                    spec.labels = j.at("labels").get<std::map<std::string, std::string>>();
                    spec.preview_every = j.at("preview_every");
                    spec.return_reconstruction = j.at("return_reconstruction");
                    // Specs written before alignment existed have neither key.
                    if (j.contains("alignment")) {
                      spec.alignment_json = j.at("alignment").dump();
                      spec.return_aligned_image = j.value("return_aligned_image", false);
                    }
                    if (j.contains("masks")) spec.masks_json = j.at("masks").dump();
                    return 0;
                  }).status());
  ASSIGN_OR_RETURN(spec.image, GetTensor(zip, "image", true));
  ASSIGN_OR_RETURN(spec.init_latent, GetTensor(zip, "init_latent", false));
  ASSIGN_OR_RETURN(spec.mse_mask, GetTensor(zip, "mse_mask", false));
  ASSIGN_OR_RETURN(spec.perceptual_mask, GetTensor(zip, "perceptual_mask", false));
  return spec;
}

std::string SerializeCheckpoint(const EmbedCheckpoint& c) {
  // best_loss may be +inf (no step yet in this phase): JSON has no inf, so a flag.
  json j{{"step", c.step},
         {"best_step", c.best_step},
         {"best_loss", std::isfinite(c.best_loss) ? c.best_loss : 0.0},
         {"best_loss_finite", std::isfinite(c.best_loss)},
         {"layers", c.noise.size()}};
  ZipWriter zip;
  (void)zip.Add("meta.json", j.dump());
  AddTensor(zip, "latent", c.latent);
  AddTensor(zip, "adam_m", c.adam_m);
  AddTensor(zip, "adam_v", c.adam_v);
  for (size_t l = 0; l < c.noise.size(); ++l) {
    AddTensor(zip, absl::StrCat("noise_", l), c.noise[l]);
    AddTensor(zip, absl::StrCat("noise_m_", l), c.noise_m[l]);
    AddTensor(zip, absl::StrCat("noise_v_", l), c.noise_v[l]);
  }
  return zip.Finish();
}

absl::StatusOr<EmbedCheckpoint> ParseCheckpoint(absl::string_view bytes) {
  ASSIGN_OR_RETURN(ZipArchive zip, ZipArchive::Parse(bytes));
  const ZipEntry* e = zip.Find("meta.json");
  if (e == nullptr) return absl::DataLossError("checkpoint: meta.json missing");
  EmbedCheckpoint c;
  size_t layers = 0;
  RETURN_IF_ERROR(JsonCall([&] {
                    json j = json::parse(e->data);
                    c.step = j.at("step");
                    c.best_step = j.at("best_step");
                    c.best_loss = j.at("best_loss_finite").get<bool>()
                                      ? j.at("best_loss").get<double>()
                                      : std::numeric_limits<double>::infinity();
                    layers = j.at("layers");
                    return 0;
                  }).status());
  ASSIGN_OR_RETURN(c.latent, GetTensor(zip, "latent", true));
  ASSIGN_OR_RETURN(c.adam_m, GetTensor(zip, "adam_m", true));
  ASSIGN_OR_RETURN(c.adam_v, GetTensor(zip, "adam_v", true));
  for (size_t l = 0; l < layers; ++l) {
    ASSIGN_OR_RETURN(torch::Tensor n, GetTensor(zip, absl::StrCat("noise_", l), true));
    ASSIGN_OR_RETURN(torch::Tensor m, GetTensor(zip, absl::StrCat("noise_m_", l), true));
    ASSIGN_OR_RETURN(torch::Tensor v, GetTensor(zip, absl::StrCat("noise_v_", l), true));
    c.noise.push_back(n);
    c.noise_m.push_back(m);
    c.noise_v.push_back(v);
  }
  return c;
}

}  // namespace i2s

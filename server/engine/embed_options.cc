#include "server/engine/embed_options.h"

#include <cmath>

#include "absl/strings/str_format.h"

namespace i2s {

std::string SharedOptionsKey(const EmbedOptions& o) {
  // %a: the exact doubles.
  return absl::StrFormat("%s|%d|%d%d%d%d|%a,%a,%a|%s", o.space == LatentSpace::kW ? "w" : "w+",
                         o.perceptual_resolution, o.use_relu1_1, o.use_relu1_2, o.use_relu3_2,
                         o.use_relu4_2, o.beta1, o.beta2, o.eps, EmbedScheduleName(o.schedule));
}

absl::Status EmbedOptions::Validate() const {
  auto bad = [](absl::string_view what) { return absl::InvalidArgumentError(std::string(what)); };
  if (steps < 0 || noise_steps < 0 || steps + noise_steps < 1) {
    return bad("steps: need steps >= 0, noise_steps >= 0 and at least one step in all");
  }
  if (!(lr > 0) || !(noise_lr > 0) || !std::isfinite(lr) || !std::isfinite(noise_lr)) {
    return bad("lr: must be positive and finite");
  }
  if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1) || !(eps > 0)) {
    return bad("adam: need 0 <= beta < 1 and eps > 0");
  }
  if (w_mse < 0 || w_perceptual < 0 || noise_w_mse < 0 || noise_w_perceptual < 0 ||
      (w_mse == 0 && w_perceptual == 0 && w_lpips == 0)) {
    return bad("loss weights: must be >= 0 and not all zero");
  }
  if (perceptual_resolution < 8) return bad("perceptual_resolution: must be >= 8");
  if (!use_relu1_1 && !use_relu1_2 && !use_relu3_2 && !use_relu4_2 && w_perceptual > 0) {
    return bad("perceptual layers: none selected");
  }
  if (mean_w_samples < 1) return bad("mean_w_samples: must be >= 1");
  if (!(uniform_range > 0)) return bad("uniform_range: must be > 0");
  if (target_psnr < 0 || plateau_window < 0 || plateau_rel_eps < 0) {
    return bad("stop rules: target_psnr, plateau_window and plateau_rel_eps must be >= 0");
  }
  if (preview_every < 0 || checkpoint_every < 0) return bad("preview/checkpoint interval: < 0");
  if (!(w_lpips >= 0) || !std::isfinite(w_lpips)) return bad("w_lpips: must be >= 0 and finite");
  if (schedule == EmbedSchedule::kStyleGan2Projector) {
    auto fraction = [](double x) { return x >= 0 && x <= 1; };
    if (!fraction(lr_rampup) || !fraction(lr_rampdown)) {
      return bad("lr_rampup, lr_rampdown: must be fractions of the steps in [0, 1]");
    }
    if (!(w_noise_factor >= 0) || !std::isfinite(w_noise_factor) || !fraction(w_noise_ramp)) {
      return bad("w_noise: factor must be >= 0 and finite, ramp in [0, 1]");
    }
    if (!(noise_regularize >= 0) || !std::isfinite(noise_regularize)) {
      return bad("noise_regularize: must be >= 0 and finite");
    }
  }
  return absl::OkStatus();
}

EmbedOptions EmbedOptions::StyleGan2Projector() {
  EmbedOptions o;
  o.schedule = EmbedSchedule::kStyleGan2Projector;
  o.space = LatentSpace::kW;
  o.steps = defaults::kProjectorSteps;
  o.lr = defaults::kProjectorLr;
  o.w_mse = defaults::kProjectorWMse;
  o.w_perceptual = defaults::kProjectorWPerceptual;
  o.w_lpips = defaults::kProjectorWLpips;
  return o;
}

}  // namespace i2s

// The optimisation recipes of the W/W+ phase beside Image2StyleGAN's constant-rate Adam:
// StyleGAN2's projector (Karras et al. 2020, `projector.py` of stylegan2-ada-pytorch; facts
// in shared/specs/stylegan2.md section 4). With t = step / steps (step 0-based):
//   learning rate  lr * min(1, t / rampup) * (0.5 - 0.5 cos(pi * min(1, (1 - t) / rampdown)))
//   w noise        w + N(0, 1) * sigma_w * factor * max(0, 1 - t / ramp)^2
//   noise maps     optimised with w, penalised by their autocorrelation over a pyramid
//                  (NoiseRegularizer) and renormalised to zero mean, unit variance after
//                  every step (RenormalizeNoise).
#ifndef I2S_SERVER_ENGINE_EMBED_SCHEDULE_H_
#define I2S_SERVER_ENGINE_EMBED_SCHEDULE_H_

#include <torch/torch.h>

#include <vector>

namespace i2s {

enum class EmbedSchedule {
  kImage2StyleGan,      // Adam at a constant rate, fixed noise maps (the paper)
  kStyleGan2Projector,  // the ramps above, noise maps optimised and regularised
};
const char* EmbedScheduleName(EmbedSchedule schedule);

// Multiplier of the base learning rate at W-phase step `step` (0-based) of `steps`.
double ProjectorLrScale(int step, int steps, double rampup, double rampdown);
// Standard deviation of the noise added to w at that step, in units of sigma_w.
double ProjectorWNoiseScale(int step, int steps, double factor, double ramp);

// Per-sample sum over the maps [B, 1, H, W] and each map's 2x average-pooled pyramid
// (down to 8x8) of the squared mean products with the map shifted by one pixel along
// each axis (circularly): [B].
torch::Tensor NoiseRegularizer(const std::vector<torch::Tensor>& maps);
// Each sample of `map` [B, 1, H, W] to zero mean and unit mean square, in place.
void RenormalizeNoise(torch::Tensor& map);

}  // namespace i2s

#endif  // I2S_SERVER_ENGINE_EMBED_SCHEDULE_H_

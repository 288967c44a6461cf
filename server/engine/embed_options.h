// The options of an embedding (Image2StyleGAN's and the StyleGAN2 projector's recipes,
// embed_schedule.h), their checks, and which of them the images of one batch must share.
#ifndef I2S_SERVER_ENGINE_EMBED_OPTIONS_H_
#define I2S_SERVER_ENGINE_EMBED_OPTIONS_H_

#include <string>

#include "absl/status/status.h"
#include "common/defaults.h"
#include "server/engine/embed_schedule.h"

namespace i2s {

enum class LatentSpace { kWPlus, kW };
enum class LatentInit { kMeanW, kZeros, kUniform, kGiven };

struct EmbedOptions {
  // The defaults of the API (common/defaults.h, where each has its why).
  int steps = defaults::kSteps;
  double lr = defaults::kLr;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double w_mse = defaults::kWMse, w_perceptual = defaults::kWPerceptual;
  // Images are bilinearly downsampled to this size for VGG (the generator's resolution
  // if that is smaller).
  int perceptual_resolution = defaults::kPerceptualResolution;
  // Which of relu1_1, relu1_2, relu3_2, relu4_2 enter the perceptual term.
  bool use_relu1_1 = true, use_relu1_2 = true, use_relu3_2 = true, use_relu4_2 = true;
  LatentSpace space = LatentSpace::kWPlus;
  LatentInit init = LatentInit::kMeanW;
  // kMeanW: the file's mean w where it has one (Generator::FileMeanW: rosinality's
  // latent_avg, NVIDIA's w_avg, the StyleGAN1 port's truncation.avg_latent), else the
  // mean of the mapping network over this many seeded z (NVIDIA's projector uses
  // 10,000); cached per generator fingerprint.
  int mean_w_samples = defaults::kMeanWSamples;
  // kUniform: U(-uniform_range, uniform_range), seeded by the target's seed.
  double uniform_range = defaults::kUniformRange;
  // Stop rules (an image stops at the first that holds): steps, target PSNR (dB, 0 =
  // off), plateau (loss improved by less than plateau_rel_eps relative over
  // plateau_window steps; 0 = off).
  double target_psnr = defaults::kTargetPsnrDb;
  int plateau_window = defaults::kPlateauWindow;
  double plateau_rel_eps = defaults::kPlateauRelEps;
  // Image2StyleGAN++ noise phase: steps with W+ fixed, optimising the noise maps.
  int noise_steps = defaults::kNoiseSteps;
  double noise_lr = defaults::kNoiseLr;
  double noise_w_mse = 1.0, noise_w_perceptual = 0.0;  // the paper's second phase is pixel loss
  int preview_every = 0;                               // call on_preview every K steps (0 = never)
  int checkpoint_every = 0;  // call on_checkpoint every K steps (0 = never)

  // LPIPS term of the W/W+ phase (needs an Lpips), on images area-downsampled to
  // perceptual_resolution and masked by the perceptual mask.
  double w_lpips = defaults::kWLpips;
  EmbedSchedule schedule = EmbedSchedule::kImage2StyleGan;
  // kStyleGan2Projector only (the defaults are NVIDIA projector.py's): ramps as fractions
  // of `steps`, w noise in units of sigma_w (the spread of the mapping's output over
  // mean_w_samples z), the noise maps' regulariser weight.
  double lr_rampup = defaults::kLrRampup, lr_rampdown = defaults::kLrRampdown;
  double w_noise_factor = defaults::kWNoise, w_noise_ramp = defaults::kWNoiseRamp;
  double noise_regularize = defaults::kNoiseRegularize;

  // NVIDIA's projector as a whole: W, defaults::kProjectorSteps steps, kProjectorLr,
  // LPIPS only, the schedule above.
  static EmbedOptions StyleGan2Projector();
  absl::Status Validate() const;
};

// What every image of one EmbedBatch shares, as a string: the latent space, the
// perceptual resolution and VGG layers, Adam's betas and eps, and the schedule (they
// shape the batch's computation). Everything else may differ per image (EmbedTarget::
// options); a scheduler batches jobs of one model whose keys are equal.
std::string SharedOptionsKey(const EmbedOptions& options);

}  // namespace i2s

#endif  // I2S_SERVER_ENGINE_EMBED_OPTIONS_H_

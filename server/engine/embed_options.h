// The options of an embedding (Image2StyleGAN's and the StyleGAN2 projector's recipes,
// embed_schedule.h), their checks, and which of them the images of one batch must share.
#ifndef I2S_SERVER_ENGINE_EMBED_OPTIONS_H_
#define I2S_SERVER_ENGINE_EMBED_OPTIONS_H_

#include <string>

#include "absl/status/status.h"
#include "server/engine/embed_schedule.h"

namespace i2s {

enum class LatentSpace { kWPlus, kW };
enum class LatentInit { kMeanW, kZeros, kUniform, kGiven };

struct EmbedOptions {
  int steps = 1000;  // W+ phase steps (the reference: 1500, the paper: 5000)
  double lr = 0.01;  // Adam, as in the paper and the reference
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double w_mse = 1.0, w_perceptual = 1.0;
  // Images are bilinearly downsampled to this size for VGG (the generator's resolution
  // if that is smaller); the reference uses 256 for 1024 images.
  int perceptual_resolution = 256;
  // Which of relu1_1, relu1_2, relu3_2, relu4_2 enter the perceptual term.
  bool use_relu1_1 = true, use_relu1_2 = true, use_relu3_2 = true, use_relu4_2 = true;
  LatentSpace space = LatentSpace::kWPlus;
  LatentInit init = LatentInit::kMeanW;
  // kMeanW: the file's mean w where it has one (Generator::FileMeanW: rosinality's
  // latent_avg, NVIDIA's w_avg, the StyleGAN1 port's truncation.avg_latent), else the
  // mean of the mapping network over this many seeded z (NVIDIA's projector uses
  // 10,000); cached per generator fingerprint.
  int mean_w_samples = 10000;
  // kUniform: U(-uniform_range, uniform_range), seeded by the target's seed.
  double uniform_range = 1.0;
  // Stop rules (an image stops at the first that holds): steps, target PSNR (dB, 0 =
  // off), plateau (loss improved by less than plateau_rel_eps relative over
  // plateau_window steps; 0 = off).
  double target_psnr = 0;
  int plateau_window = 0;
  double plateau_rel_eps = 1e-4;
  // Image2StyleGAN++ noise phase: steps with W+ fixed, optimising the noise maps.
  int noise_steps = 0;
  double noise_lr = 0.1;
  double noise_w_mse = 1.0, noise_w_perceptual = 0.0;  // the paper's second phase is pixel loss
  int preview_every = 0;                               // call on_preview every K steps (0 = never)
  int checkpoint_every = 0;  // call on_checkpoint every K steps (0 = never)

  // LPIPS term of the W/W+ phase (needs an Lpips), on images area-downsampled to
  // perceptual_resolution and masked by the perceptual mask.
  double w_lpips = 0;
  EmbedSchedule schedule = EmbedSchedule::kImage2StyleGan;
  // kStyleGan2Projector only (the defaults are NVIDIA projector.py's): ramps as fractions
  // of `steps`, w noise in units of sigma_w (the spread of the mapping's output over
  // mean_w_samples z), the noise maps' regulariser weight.
  double lr_rampup = 0.05, lr_rampdown = 0.25;
  double w_noise_factor = 0.05, w_noise_ramp = 0.75;
  double noise_regularize = 1e5;

  // NVIDIA's projector as a whole: W, 1000 steps, lr 0.1, LPIPS only, the schedule above.
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

// Generator weight files as users have them: which network a file holds, decided from
// its content (never from its name), its weights in the canonical layout of that
// architecture, and the Generator built from them.
//
//   StyleGAN1: the PyTorch port's state dict (`g_mapping.*`, `g_synthesis.*`), torch.save
//              zip or legacy; unchanged from StyleGan1Generator::Load (same fingerprints).
//   StyleGAN2: rosinality checkpoints (torch.save zip or legacy): `{g_ema, latent_avg}`
//              as convert_weight.py writes, train.py's `{g, d, g_ema, g_optim, d_optim,
//              args, ada_aug_p}` (no latent_avg), or a bare `g_ema` state dict;
//              NVIDIA stylegan2-ada-pytorch / stylegan3-repo StyleGAN2 `.pkl` files
//              (`G_ema`, its `mapping.w_avg` and conv_clamp), renamed onto rosinality's
//              layout (shared/specs/stylegan2.md; the correspondence is listed in
//              model_files.cc). The fingerprint is taken over that canonical layout, so
//              the same weights in either format share it.
// Refused with an error that says what the file holds: StyleGAN3 networks, conditional
// models (c_dim > 0), StyleGAN2 architectures other than `skip`, the original TensorFlow
// pickles, and anything else. Thread-safe (no shared state).
#ifndef I2S_SERVER_ENGINE_MODEL_FILES_H_
#define I2S_SERVER_ENGINE_MODEL_FILES_H_

#include <torch/torch.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/engine/generator.h"
#include "server/engine/stylegan1.h"
#include "server/engine/stylegan2.h"
#include "server/engine/weights.h"

namespace i2s {

enum class GeneratorArch { kStyleGan1, kStyleGan2 };
const char* GeneratorArchName(GeneratorArch arch);  // "stylegan1", "stylegan2"
absl::StatusOr<GeneratorArch> ParseGeneratorArch(absl::string_view name);

struct GeneratorFile {
  GeneratorArch arch = GeneratorArch::kStyleGan1;
  // What the file was, for `i2s_tool info` and the logs, e.g. "NVIDIA pickle (G_ema)".
  std::string container;
  StateDict weights;      // canonical layout of `arch`
  torch::Tensor mean_w;   // StyleGAN2: latent_avg / w_avg [latent], or undefined
  double conv_clamp = 0;  // StyleGAN2 (NVIDIA files): 0 = none
};

// Reads and identifies a generator file; errors are prefixed with the path.
absl::StatusOr<GeneratorFile> ReadGeneratorFile(const std::string& path);

struct GeneratorOptions {
  StyleGan1Options stylegan1;
  StyleGan2Options stylegan2;
};

absl::StatusOr<std::unique_ptr<Generator>> CreateGenerator(const GeneratorFile& file,
                                                           torch::Device device,
                                                           const GeneratorOptions& options = {});
// ReadGeneratorFile + CreateGenerator; errors are prefixed with the path.
absl::StatusOr<std::unique_ptr<Generator>> LoadGenerator(const std::string& path,
                                                         torch::Device device,
                                                         const GeneratorOptions& options = {});

// A model with seeded random weights (the demo model, `i2s_tool random-model`): the same
// size rule for both architectures, channels min(2 * fmap_base / res, fmap_max) at
// resolution res (StyleGAN1's published rule; the StyleGAN2 weights are in rosinality's
// layout with those channel counts).
GeneratorFile RandomGeneratorFile(GeneratorArch arch, int resolution, int fmap_base, uint64_t seed,
                                  int fmap_max = 512);

}  // namespace i2s

#endif  // I2S_SERVER_ENGINE_MODEL_FILES_H_

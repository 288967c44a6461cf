// What the rendering commands (synth, morph, stylemix, expression, map) and `embed` share:
// noise maps from --noise, latent files in and out, and rendered images out.
#ifndef I2S_TOOLS_I2S_TOOL_LATENT_FILES_H_
#define I2S_TOOLS_I2S_TOOL_LATENT_FILES_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/engine/generator.h"

namespace i2s::tool {

// --noise: "auto" (the file's constant maps where it has them, StyleGAN2; else random),
// "const", "random" (seeded by --noise-seed), "zero", or an .npz of noise0..noise{N-1}.
absl::StatusOr<std::vector<torch::Tensor>> MakeNoise(const Generator& g, const std::string& spec,
                                                     uint64_t seed, int batch);

struct NoiseArgs {
  std::string noise = "auto";
  uint64_t noise_seed = 0;
};
void AddNoiseOptions(CLI::App* cmd, NoiseArgs* n);

// --out must name a .png or an .npy.
absl::Status CheckImageOut(const std::string& out);
// Renders W+ [N, L, D] and writes OUT.npy (raw NCHW) or PNGs (OUT-i.png when N > 1).
absl::Status RenderAndWrite(Generator& g, const torch::Tensor& w, const NoiseArgs& n,
                            const std::string& out, absl::string_view what);

// A latent file by its name: OUT.npz is NVIDIA's projected_w.npz (member `w`,
// [1, L, 512] for one latent, [N, L, 512] for several), anything else .npy.
absl::Status WriteLatent(const std::string& path, const torch::Tensor& w);
// A latent file (.npy or projected_w.npz) as W+ [N, L, D] for `g`; errors name `flag`.
absl::StatusOr<torch::Tensor> ReadLatent(const std::string& path, const Generator& g,
                                         absl::string_view flag);

}  // namespace i2s::tool

#endif  // I2S_TOOLS_I2S_TOOL_LATENT_FILES_H_

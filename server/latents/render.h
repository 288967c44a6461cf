// A latent turned into a picture: its noise inputs chosen (RenderSettings.noise), the
// generator run, the image encoded. What Synthesize, Morph and the edits return; they
// run it as a device task (Scheduler::RunTask). No gRPC: the API converts RenderOptions.
#ifndef I2S_SERVER_LATENTS_RENDER_H_
#define I2S_SERVER_LATENTS_RENDER_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/generator.h"

namespace i2s {

// A latent ready to render or edit: its values and what its noise maps come from.
struct LatentInput {
  torch::Tensor w;        // [L, D] CPU float32
  std::string id;         // the stored latent's ID; empty for inline values
  std::string noise_npz;  // the stored latent's own maps (.npz), if any
  uint64_t noise_seed = 0;
  // How the stored latent's photo was aligned (AlignmentInfoToJson), if it was: its own
  // for an embedding, the one it was applied to for an edit. Empty otherwise.
  std::string alignment_json;
};

// Where a render's noise maps come from.
enum class NoiseMode {
  kAuto,      // the latent's own maps if it has them, else the model's default
  kSeeded,    // drawn from the latent's noise seed
  kConstant,  // the weight file's constant maps (StyleGAN2 only)
  kLatent,    // the latent's own maps (only embeddings with noise steps have them)
  kNone,      // no noise
};

enum class ImageEncoding { kPng, kJpeg, kRawFloat32 };

// Image2StyleGAN++'s local edit (Generator::SynthesizeBlend): the rendered latent's image
// with `with`'s content where `mask` says, blended from W+ row `start_layer` on.
struct RenderBlend {
  torch::Tensor with;  // [L, D] CPU float32
  torch::Tensor mask;  // [1, 1, R, R] in [0, 1] (already feathered)
  int start_layer = 0;
};

struct RenderSettings {
  NoiseMode noise = NoiseMode::kAuto;
  ImageEncoding encoding = ImageEncoding::kPng;
  int jpeg_quality = 90;  // 1..100, kJpeg only
  // A local edit instead of a plain render, when blend.with is defined.
  RenderBlend blend;
};

struct EncodedImage {
  ImageEncoding encoding = ImageEncoding::kPng;
  std::string data;  // PNG or JPEG bytes, or a .npy of the float image [3, H, W]
  int width = 0, height = 0;
};

// The noise maps of `source` for `mode` on g's device. InvalidArgument "<field>: ..." when
// the mode asks for maps the model or the latent does not have.
absl::StatusOr<std::vector<torch::Tensor>> NoiseFor(const LatentInput& source, const Generator& g,
                                                    NoiseMode mode, const std::string& field);

// Generator output [3, R, R] (in [-1, 1]) -> `encoding`.
absl::StatusOr<EncodedImage> EncodeImage(const torch::Tensor& image, ImageEncoding encoding,
                                         int jpeg_quality);

// Renders w [L, D] with the noise of `noise_source` on g's device: the generator's output
// [3, R, R] on the CPU. Errors about the noise name `field`.noise_mode. Runs on the
// generator's device: call it from a device task. With blend.with, the local edit.
absl::StatusOr<torch::Tensor> RenderRaw(Generator& g, const torch::Tensor& w,
                                        const LatentInput& noise_source, NoiseMode noise,
                                        const std::string& field = "render",
                                        const RenderBlend& blend = {});

// The same render encoded as `settings` say. With `raw`, the generator's output is kept
// there too (for paste-back, which works on it after the call).
absl::StatusOr<EncodedImage> RenderLatent(Generator& g, const torch::Tensor& w,
                                          const LatentInput& noise_source,
                                          const RenderSettings& settings,
                                          const std::string& field = "render",
                                          torch::Tensor* raw = nullptr);

}  // namespace i2s

#endif  // I2S_SERVER_LATENTS_RENDER_H_

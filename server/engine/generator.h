// The Generator interface: what the embedder, the edits and the service need of a
// StyleGAN-family network. Implementations are immutable after construction; their
// const methods and Synthesize/Map may be called from several threads at once only if
// the device allows it (one worker per device is the intended use).
#ifndef I2S_SERVER_ENGINE_GENERATOR_H_
#define I2S_SERVER_ENGINE_GENERATOR_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace i2s {

// log2 of a power of two (the smallest l with 2^l >= v otherwise).
int Log2Ceil(int v);

// The checks every StyleGAN generator's configuration shares: a power-of-two resolution
// from 8 to 1024, one positive channel count per synthesis block (4x4 up to the
// resolution), and a positive latent size and mapping depth. Errors are InvalidArgument.
absl::Status CheckGeneratorShape(int resolution, const std::vector<int64_t>& channels,
                                 int latent_size, int mapping_layers);

class Generator {
 public:
  virtual ~Generator() = default;

  virtual int resolution() const = 0;
  // Rows of W+ (one per style input): 2 * log2(resolution) - 2, 18 at 1024.
  virtual int num_layers() const = 0;
  virtual int latent_size() const = 0;  // 512 for the published models
  // "stylegan1" or "stylegan2": what GetServerInfo and `i2s_tool info` report.
  virtual const char* architecture() const = 0;
  // The configuration read from the weights, for GetServerInfo and `i2s_tool info`:
  // mapping layers, feature maps per synthesis block (4x4 first), and StyleGAN2's
  // conv_clamp (0 = none).
  virtual int mapping_layers() const = 0;
  virtual std::vector<int64_t> channels() const = 0;
  virtual double conv_clamp() const { return 0; }
  // WeightsFingerprint() of the weights the generator was built from.
  virtual const std::string& fingerprint() const = 0;
  virtual torch::Device device() const = 0;

  // The unchecked forward passes, differentiable in `wplus`, for the hot loop of the
  // embedder: inputs must already be valid and on device(); they throw on misuse.
  //   wplus [B, num_layers, latent] -> image [B, 3, R, R], roughly in [-1, 1];
  //   noise: empty for no noise, else num_noise_maps() maps of shape [1 or B, 1, H, W]
  //   (H = W = NoiseResolution(i)), as MakeNoise returns.
  virtual torch::Tensor Forward(const torch::Tensor& wplus,
                                const std::vector<torch::Tensor>& noise) = 0;
  //   z [B, latent] -> w [B, latent]
  virtual torch::Tensor ForwardMapping(const torch::Tensor& z) = 0;

  // Image2StyleGAN++'s local edit by activation blending (Abdal et al., CVPR 2020,
  // "local edits"): a's image with b's content where `mask` says so. Unchecked like
  // Forward (and as differentiable); SynthesizeBlend is the checked version.
  //   wa, wb [B, num_layers, latent]; noise as Forward's (all three paths use the same);
  //   mask [1 or B, 1, R, R] in [0, 1] at the output resolution R (1: b, 0: a);
  //   start_layer in [0, num_layers): the first blended block is b0 = LayerBlock(start_layer).
  // Three synthesis paths: a (wa's rows throughout), b (wb's rows throughout) and the
  // blended one, which is a's path up to and including block b0. After each block i >= b0
  // (at r = 4 << i pixels) the blended path's activations x become lerp(x, x_b, m_r) =
  // m_r * x_b + (1 - m_r) * x, with m_r the mask averaged over (R / r)^2 cells
  // (MaskAtResolution), and the path goes on with wa's rows; StyleGAN2's skip (RGB) image
  // is blended the same way. Blocks before b0 are never blended (wb's early rows reach
  // the image only through x_b). The image is lerp(Forward(wa), blended image, m) at
  // full resolution (BlendActivations: the ends selected, not computed), so:
  //   - where m == 0 it is Forward(wa, noise) bit for bit (the same operations on the same
  //     inputs: on the CPU always, on CUDA where its kernels are deterministic), although
  //     the blended path's convolutions and coarse cells reach past the mask's support;
  //   - a mask of ones gives Forward(wb, noise) exactly, for any start_layer (the last
  //     block hands on x_b);
  //   - a grey m counts twice at full resolution: from the last block (start_layer =
  //     num_layers - 1) a uniform m = c gives a + c^2 (b - a), up to rounding.
  // Costs up to 3 forward passes (fewer blocks from a later b0). -> image [B, 3, R, R].
  virtual torch::Tensor ForwardBlend(const torch::Tensor& wa, const torch::Tensor& wb,
                                     const std::vector<torch::Tensor>& noise, int start_layer,
                                     const torch::Tensor& mask) = 0;
  // The synthesis block (block i works at 4 << i pixels square, i < log2(R) - 1) whose
  // convolutions take W+ row `layer`: layer / 2 for StyleGAN1 (two rows per block);
  // (layer + 1) / 2 for StyleGAN2 (row 0: the 4x4 convolution; rows 2i - 1, 2i: block
  // i's convolutions), whose last row, read only by the last ToRGB, maps to the last block.
  virtual int LayerBlock(int layer) const { return layer / 2; }

  // Checked versions: shapes, dtype, finiteness and noise maps are validated
  // (InvalidArgument naming the argument); inputs are moved to device(); runs without
  // autograd. Exceptions from LibTorch become Internal.
  absl::StatusOr<torch::Tensor> Synthesize(const torch::Tensor& wplus,
                                           const std::vector<torch::Tensor>& noise);
  absl::StatusOr<torch::Tensor> Map(const torch::Tensor& z);
  // ForwardBlend checked: wa as Synthesize's wplus, wb of wa's shape, noise as
  // Synthesize's, start_layer in [0, num_layers), mask [1 or B, 1, R, R], finite, in
  // [0, 1]. Errors are InvalidArgument naming the argument.
  absl::StatusOr<torch::Tensor> SynthesizeBlend(const torch::Tensor& wa, const torch::Tensor& wb,
                                                const std::vector<torch::Tensor>& noise,
                                                int start_layer, const torch::Tensor& mask);

  // Noise maps [batch, 1, H, W] from a seeded generator (drawn on the CPU, so the same
  // seed gives the same maps on every device), on device().
  std::vector<torch::Tensor> MakeNoise(uint64_t seed, int batch = 1) const;

  // The noise inputs depend on the architecture: StyleGAN1 has one map per style input
  // (num_layers, H = 4 << (i / 2)); StyleGAN2 has 2 * log2(R) - 3 (one per convolution,
  // H = 4 << ((i + 1) / 2)).
  virtual int num_noise_maps() const { return num_layers(); }
  virtual int NoiseResolution(int i) const { return 4 << (i / 2); }
  // The file's own constant noise maps [1, 1, H, W] on device() (StyleGAN2's `noises.*` /
  // `noise_const`: how its authors' projectors render), or empty when the file has none.
  virtual std::vector<torch::Tensor> ConstantNoise() const { return {}; }
  // The maps a latent without maps of its own is rendered and embedded with: the file's
  // constant maps where it has them (StyleGAN2), else MakeNoise(seed) (StyleGAN1). Fresh
  // tensors (callers may optimise them in place).
  std::vector<torch::Tensor> DefaultNoise(uint64_t seed, int batch = 1) const;
  // The file's mean w [latent] on device() (`latent_avg`, `w_avg`,
  // `truncation.avg_latent`), or an undefined tensor when the file has none.
  virtual torch::Tensor FileMeanW() const { return {}; }
};

}  // namespace i2s

#endif  // I2S_SERVER_ENGINE_GENERATOR_H_

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

class Generator {
 public:
  virtual ~Generator() = default;

  virtual int resolution() const = 0;
  // Rows of W+ (one per style input): 2 * log2(resolution) - 2, 18 at 1024.
  virtual int num_layers() const = 0;
  virtual int latent_size() const = 0;  // 512 for the published models
  // WeightsFingerprint() of the weights the generator was built from.
  virtual const std::string& fingerprint() const = 0;
  virtual torch::Device device() const = 0;

  // The unchecked forward passes, differentiable in `wplus`, for the hot loop of the
  // embedder: inputs must already be valid and on device(); they throw on misuse.
  //   wplus [B, num_layers, latent] -> image [B, 3, R, R], roughly in [-1, 1];
  //   noise: empty for no noise, else num_layers maps of shape [1 or B, 1, H, W]
  //   (H = W = 4 << (layer / 2)), as MakeNoise returns.
  virtual torch::Tensor Forward(const torch::Tensor& wplus,
                                const std::vector<torch::Tensor>& noise) = 0;
  //   z [B, latent] -> w [B, latent]
  virtual torch::Tensor ForwardMapping(const torch::Tensor& z) = 0;

  // Checked versions: shapes, dtype, finiteness and noise maps are validated
  // (InvalidArgument naming the argument); inputs are moved to device(); runs without
  // autograd. Exceptions from LibTorch become Internal.
  absl::StatusOr<torch::Tensor> Synthesize(const torch::Tensor& wplus,
                                           const std::vector<torch::Tensor>& noise);
  absl::StatusOr<torch::Tensor> Map(const torch::Tensor& z);

  // Per-layer noise maps [batch, 1, H, W] from a seeded generator (drawn on the CPU, so
  // the same seed gives the same maps on every device), on device().
  std::vector<torch::Tensor> MakeNoise(uint64_t seed, int batch = 1) const;
  int NoiseResolution(int layer) const { return 4 << (layer / 2); }
};

}  // namespace i2s

#endif  // I2S_SERVER_ENGINE_GENERATOR_H_

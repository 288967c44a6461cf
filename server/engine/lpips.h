// LPIPS, the learned perceptual distance of Zhang et al. (CVPR 2018), version 0.1 with the
// VGG16 trunk, as the `lpips` package computes it and as StyleGAN2's projector and the
// inversion benchmarks report it:
//   x -> 2x - 1 -> (x - shift) / scale            shift (-.030, -.088, -.188),
//                                                 scale (.458, .448, .450)
//   VGG16 ReLU outputs relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (torchvision indices
//   3, 8, 15, 22, 29), each divided by its per-pixel channel norm (+1e-10);
//   d = sum_k mean_hw( lin_k . (f_k(a) - f_k(b))^2 )   lin_k: 1x1 conv, 1 output, no bias.
// Two files: the VGG16 users already supply (torchvision layout; LPIPS needs every conv up
// to conv5_3, features.0 .. features.28) and the calibration `lin` layers that ship in
// PyPI's `lpips` wheel as lpips/weights/v0.1/vgg.pth (keys lin{0..4}.model.1.weight,
// [1, C, 1, 1]; scripts/fetch-lpips). Inputs are images in [0, 1] at any size >= 16
// (four poolings leave a pixel); callers choose the resolution (the projector uses 256).
// Thread-compatible.
#ifndef I2S_SERVER_ENGINE_LPIPS_H_
#define I2S_SERVER_ENGINE_LPIPS_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/weights.h"

namespace i2s {

// The five channel-normalised feature maps of a batch, [B, C_k, H_k, W_k].
using LpipsFeatures = std::vector<torch::Tensor>;

class Lpips {
 public:
  // `vgg`: torchvision VGG16 tensors (classifier.* ignored); `lin`: the calibration file.
  static absl::StatusOr<std::unique_ptr<Lpips>> Create(const StateDict& vgg, const StateDict& lin,
                                                       torch::Device device);
  static absl::StatusOr<std::unique_ptr<Lpips>> Load(const std::string& vgg_path,
                                                     const std::string& lin_path,
                                                     torch::Device device);
  // Random calibration weights (non-negative, like the trained ones), for tests.
  static StateDict RandomLinWeights(uint64_t seed);

  // WeightsFingerprint over the trunk and calibration tensors together.
  const std::string& fingerprint() const { return fingerprint_; }
  torch::Device device() const { return device_; }

  // Unchecked, differentiable (inputs on device(), [B, 3, H, W] in [0, 1]).
  LpipsFeatures Features(const torch::Tensor& image) const;
  torch::Tensor Distance(const LpipsFeatures& a, const LpipsFeatures& b) const;  // [B]
  // Checked, without gradients: a and b [B, 3, H, W] (or [3, H, W]) of the same shape.
  absl::StatusOr<torch::Tensor> Measure(const torch::Tensor& a, const torch::Tensor& b) const;

 private:
  Lpips(torch::Device device, std::string fingerprint)
      : device_(device), fingerprint_(std::move(fingerprint)) {}
  torch::Device device_;
  std::string fingerprint_;
  std::vector<torch::Tensor> conv_w_, conv_b_;  // the 13 convs
  std::vector<torch::Tensor> lin_;              // [1, C_k, 1, 1]
  torch::Tensor shift_, scale_;                 // [1, 3, 1, 1]
};

// Area-averaged downsampling to `size` (NVIDIA's projector and the benchmarks measure at
// 256); images at or below `size` are returned as they are.
torch::Tensor DownsampleArea(const torch::Tensor& images, int64_t size);

}  // namespace i2s

#endif  // I2S_SERVER_ENGINE_LPIPS_H_

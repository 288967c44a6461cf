// VGG16 perceptual features in torchvision's layout (`features.N.weight|bias`), as
// Image2StyleGAN's loss uses them: the ReLU outputs after conv1_1, conv1_2, conv3_2 and
// conv4_2 (feature indices 1, 3, 13, 20). Only features.0 .. features.19 are used; the
// rest of the published file (features.21 .. 28, classifier.*) is accepted and ignored.
// Thread-compatible.
#ifndef I2S_SERVER_ENGINE_VGG16_H_
#define I2S_SERVER_ENGINE_VGG16_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/weights.h"

namespace i2s {

struct Vgg16Options {
  // Normalise inputs with ImageNet's mean/std before the first conv. Off by default, as
  // in the reference Image2StyleGAN implementation, which feeds [0, 1] RGB directly.
  bool imagenet_normalize = false;
};

struct Vgg16Features {
  torch::Tensor relu1_1, relu1_2, relu3_2, relu4_2;
};

// The keys of torchvision's file that the features do not use (features.21 .. 28,
// classifier.*): accepted, never loaded, and not part of the fingerprint.
bool IsUnusedVgg16Key(const std::string& key);
// The classifier's keys (classifier.0/3/6 weight and bias), which no loss here uses.
bool IsVgg16ClassifierKey(const std::string& key);

// Random weights in torchvision's layout: features.0..19 (or all 13 convs with
// `all_features`), He-normal weights and small biases. Deterministic for a seed.
StateDict RandomVgg16Weights(uint64_t seed, bool all_features = false);

class Vgg16Impl : public torch::nn::Module {
 public:
  Vgg16Impl(WeightMap& weights, const Vgg16Options& options, absl::Status* status);
  // image [B, 3, H, W] in [0, 1] (H, W >= 8 so that three poolings leave a pixel).
  Vgg16Features forward(const torch::Tensor& image);

 private:
  Vgg16Options options_;
  std::vector<torch::Tensor> weights_, biases_;  // the nine convs up to conv4_2
  torch::Tensor mean_, std_;
};
TORCH_MODULE(Vgg16);

class Vgg16Extractor {
 public:
  static absl::StatusOr<std::unique_ptr<Vgg16Extractor>> Create(const StateDict& weights,
                                                                const Vgg16Options& options,
                                                                torch::Device device);
  static absl::StatusOr<std::unique_ptr<Vgg16Extractor>> Load(const std::string& path,
                                                              const Vgg16Options& options,
                                                              torch::Device device);

  // WeightsFingerprint of the used tensors (features.0 .. 19) only, so the full
  // torchvision file and a trimmed copy of it identify the same extractor.
  const std::string& fingerprint() const { return fingerprint_; }
  torch::Device device() const { return device_; }
  // Unchecked, differentiable forward pass (inputs on device()).
  Vgg16Features Forward(const torch::Tensor& image) { return module_->forward(image); }
  // Checked: image must be [B, 3, H, W] float, H, W >= 8.
  absl::StatusOr<Vgg16Features> Extract(const torch::Tensor& image);

 private:
  Vgg16Extractor(torch::Device device, std::string fingerprint)
      : device_(device), fingerprint_(std::move(fingerprint)) {}
  torch::Device device_;
  std::string fingerprint_;
  Vgg16 module_{nullptr};
};

}  // namespace i2s

#endif  // I2S_SERVER_ENGINE_VGG16_H_

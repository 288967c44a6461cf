#include "server/engine/vgg16.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <regex>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/engine/torch_util.h"

namespace i2s {
namespace {

// torchvision vgg16 `features` indices of the convs up to conv4_2, with channels.
struct ConvSpec {
  int index, in, out;
};
constexpr ConvSpec kConvs[] = {{0, 3, 64},     {2, 64, 64},    {5, 64, 128},
                               {7, 128, 128},  {10, 128, 256}, {12, 256, 256},
                               {14, 256, 256}, {17, 256, 512}, {19, 512, 512}};
// The other convs of the published file (conv4_3, conv5_x), not needed for the loss.
constexpr ConvSpec kUnusedConvs[] = {
    {21, 512, 512}, {24, 512, 512}, {26, 512, 512}, {28, 512, 512}};

}  // namespace

bool IsUnusedVgg16Key(const std::string& key) {
  static const std::regex kPattern(
      R"((features\.(21|24|26|28)|classifier\.(0|3|6))\.(weight|bias))");
  return std::regex_match(key, kPattern);
}

bool IsVgg16ClassifierKey(const std::string& key) {
  static const std::regex kPattern(R"(classifier\.(0|3|6)\.(weight|bias))");
  return std::regex_match(key, kPattern);
}

StateDict RandomVgg16Weights(uint64_t seed, bool all_features) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  StateDict sd;
  auto add = [&](const ConvSpec& c) {
    sd.emplace_back(absl::StrCat("features.", c.index, ".weight"),
                    torch::randn({c.out, c.in, 3, 3}, gen) * std::sqrt(2.0 / (c.in * 9)));
    sd.emplace_back(absl::StrCat("features.", c.index, ".bias"), torch::randn({c.out}, gen) * 0.01);
  };
  for (const ConvSpec& c : kConvs) add(c);
  if (all_features) {
    for (const ConvSpec& c : kUnusedConvs) add(c);
  }
  return sd;
}

Vgg16Impl::Vgg16Impl(WeightMap& m, const Vgg16Options& options, absl::Status* status)
    : options_(options) {
  for (const ConvSpec& c : kConvs) {
    auto w = m.Take(absl::StrCat("features.", c.index, ".weight"), {c.out, c.in, 3, 3});
    auto b = m.Take(absl::StrCat("features.", c.index, ".bias"), {c.out});
    if (!w.ok() || !b.ok()) {
      *status = w.ok() ? b.status() : w.status();
      return;
    }
    weights_.push_back(register_buffer(absl::StrCat("w", c.index), *w));
    biases_.push_back(register_buffer(absl::StrCat("b", c.index), *b));
  }
  // ImageNet statistics, as torchvision's pretrained models expect.
  mean_ = register_buffer("mean", torch::tensor({0.485f, 0.456f, 0.406f}).view({1, 3, 1, 1}));
  std_ = register_buffer("std", torch::tensor({0.229f, 0.224f, 0.225f}).view({1, 3, 1, 1}));
}

Vgg16Features Vgg16Impl::forward(const torch::Tensor& image) {
  torch::Tensor x = options_.imagenet_normalize ? (image - mean_) / std_ : image;
  auto conv = [&](int i) { x = torch::relu(torch::conv2d(x, weights_[i], biases_[i], 1, 1)); };
  auto pool = [&] { x = torch::max_pool2d(x, 2, 2); };
  Vgg16Features f;
  conv(0);
  f.relu1_1 = x;
  conv(1);
  f.relu1_2 = x;
  pool();
  conv(2);
  conv(3);
  pool();
  conv(4);
  conv(5);
  f.relu3_2 = x;
  conv(6);
  pool();
  conv(7);
  conv(8);
  f.relu4_2 = x;
  return f;
}

absl::StatusOr<std::unique_ptr<Vgg16Extractor>> Vgg16Extractor::Create(const StateDict& weights,
                                                                       const Vgg16Options& options,
                                                                       torch::Device device) {
  StateDict used;
  for (const auto& entry : weights) {
    if (!IsUnusedVgg16Key(entry.first)) used.push_back(entry);
  }
  std::unique_ptr<Vgg16Extractor> e(new Vgg16Extractor(device, WeightsFingerprint(used)));
  WeightMap m(used);
  RETURN_IF_ERROR(TorchCall("building VGG16", [&]() -> absl::Status {
    absl::Status status;
    e->module_ = Vgg16(m, options, &status);
    RETURN_IF_ERROR(status);
    RETURN_IF_ERROR(m.CheckAllUsed([](const std::string&) { return false; }));
    e->module_->to(device);
    e->module_->eval();
    return absl::OkStatus();
  }));
  return e;
}

absl::StatusOr<std::unique_ptr<Vgg16Extractor>> Vgg16Extractor::Load(const std::string& path,
                                                                     const Vgg16Options& options,
                                                                     torch::Device device) {
  ASSIGN_OR_RETURN(LoadedWeights w, LoadWeights(path, IsUnusedVgg16Key));
  auto e = Create(w.tensors, options, device);
  if (!e.ok()) return Annotate(e.status(), path);
  return e;
}

absl::StatusOr<Vgg16Features> Vgg16Extractor::Extract(const torch::Tensor& image) {
  if (!image.defined() || image.dim() != 4 || image.size(1) != 3 || image.size(2) < 8 ||
      image.size(3) < 8 || !image.is_floating_point()) {
    return absl::InvalidArgumentError(
        absl::StrCat("image: shape ", image.defined() ? ShapeString(image.sizes()) : "undefined",
                     ", expected float [B, 3, H, W] with H, W >= 8"));
  }
  return TorchCall("VGG16 features", [&] {
    torch::NoGradGuard no_grad;
    return Forward(image.to(device_, torch::kFloat32));
  });
}

}  // namespace i2s

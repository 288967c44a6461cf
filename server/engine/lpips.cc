#include "server/engine/lpips.h"

#include <ATen/CPUGeneratorImpl.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/engine/torch_util.h"
#include "server/engine/vgg16.h"

namespace i2s {
namespace {

namespace F = torch::nn::functional;

struct Conv {
  int index, in, out;
  bool tap;  // the ReLU after it is one of LPIPS's five layers
};
// torchvision's vgg16.features, every conv; a 2x2 max pool precedes 5, 10, 17 and 24.
constexpr Conv kConvs[] = {{0, 3, 64, false},    {2, 64, 64, true},     {5, 64, 128, false},
                           {7, 128, 128, true},  {10, 128, 256, false}, {12, 256, 256, false},
                           {14, 256, 256, true}, {17, 256, 512, false}, {19, 512, 512, false},
                           {21, 512, 512, true}, {24, 512, 512, false}, {26, 512, 512, false},
                           {28, 512, 512, true}};
constexpr int kTapChannels[] = {64, 128, 256, 512, 512};

}  // namespace

torch::Tensor DownsampleArea(const torch::Tensor& images, int64_t size) {
  if (images.size(-1) <= size && images.size(-2) <= size) return images;
  return F::interpolate(
      images,
      F::InterpolateFuncOptions().size(std::vector<int64_t>{size, size}).mode(torch::kArea));
}

StateDict Lpips::RandomLinWeights(uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  StateDict sd;
  for (int k = 0; k < 5; ++k) {
    sd.emplace_back(absl::StrCat("lin", k, ".model.1.weight"),
                    torch::rand({1, kTapChannels[k], 1, 1}, gen) * 0.2);
  }
  return sd;
}

absl::StatusOr<std::unique_ptr<Lpips>> Lpips::Create(const StateDict& vgg, const StateDict& lin,
                                                     torch::Device device) {
  StateDict used;
  for (const auto& entry : vgg) {
    if (!IsVgg16ClassifierKey(entry.first)) used.push_back(entry);
  }
  StateDict both = used;
  for (const auto& [key, value] : lin) both.emplace_back("lpips_lin/" + key, value);
  std::unique_ptr<Lpips> l(new Lpips(device, WeightsFingerprint(both)));
  RETURN_IF_ERROR(TorchCall("building LPIPS", [&]() -> absl::Status {
    WeightMap trunk(used);
    for (const Conv& c : kConvs) {
      const std::string w = absl::StrCat("features.", c.index, ".weight");
      const std::string b = absl::StrCat("features.", c.index, ".bias");
      if (!trunk.Has(w) || !trunk.Has(b)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "VGG16 weights: LPIPS needs every convolution up to conv5_3 (features.0 .. "
            "features.28); missing ",
            trunk.Has(w) ? b : w, " (a trimmed VGG16 file serves the Image2StyleGAN loss only)"));
      }
      ASSIGN_OR_RETURN(torch::Tensor wt, trunk.Take(w, {c.out, c.in, 3, 3}));
      ASSIGN_OR_RETURN(torch::Tensor bt, trunk.Take(b, {c.out}));
      l->conv_w_.push_back(wt.to(device));
      l->conv_b_.push_back(bt.to(device));
    }
    RETURN_IF_ERROR(
        Annotate(trunk.CheckAllUsed([](const std::string&) { return false; }), "VGG16 weights"));
    WeightMap calib(lin);
    for (int k = 0; k < 5; ++k) {
      auto t = calib.Take(absl::StrCat("lin", k, ".model.1.weight"), {1, kTapChannels[k], 1, 1});
      if (!t.ok()) return Annotate(t.status(), "LPIPS calibration (lpips/weights/v0.1/vgg.pth)");
      l->lin_.push_back(t->to(device));
    }
    RETURN_IF_ERROR(Annotate(calib.CheckAllUsed([](const std::string&) { return false; }),
                             "LPIPS calibration (lpips/weights/v0.1/vgg.pth)"));
    l->shift_ = torch::tensor({-.030f, -.088f, -.188f}).view({1, 3, 1, 1}).to(device);
    l->scale_ = torch::tensor({.458f, .448f, .450f}).view({1, 3, 1, 1}).to(device);
    return absl::OkStatus();
  }));
  return l;
}

absl::StatusOr<std::unique_ptr<Lpips>> Lpips::Load(const std::string& vgg_path,
                                                   const std::string& lin_path,
                                                   torch::Device device) {
  ASSIGN_OR_RETURN(LoadedWeights vgg, LoadWeights(vgg_path, IsVgg16ClassifierKey));
  ASSIGN_OR_RETURN(LoadedWeights lin, LoadWeights(lin_path));
  auto l = Create(vgg.tensors, lin.tensors, device);
  if (!l.ok()) return Annotate(l.status(), absl::StrCat(vgg_path, " + ", lin_path));
  return l;
}

LpipsFeatures Lpips::Features(const torch::Tensor& image) const {
  torch::Tensor x = ((image * 2 - 1) - shift_) / scale_;
  LpipsFeatures out;
  for (size_t i = 0; i < std::size(kConvs); ++i) {
    const int index = kConvs[i].index;
    if (index == 5 || index == 10 || index == 17 || index == 24) x = torch::max_pool2d(x, 2, 2);
    x = torch::relu(torch::conv2d(x, conv_w_[i], conv_b_[i], 1, 1));
    if (kConvs[i].tap) {
      torch::Tensor norm = x.square().sum(1, true).sqrt();
      out.push_back(x / (norm + 1e-10));
    }
  }
  return out;
}

torch::Tensor Lpips::Distance(const LpipsFeatures& a, const LpipsFeatures& b) const {
  torch::Tensor total;
  for (size_t k = 0; k < lin_.size(); ++k) {
    torch::Tensor d = torch::conv2d((a[k] - b[k]).square(), lin_[k]).mean({1, 2, 3});
    total = total.defined() ? total + d : d;
  }
  return total;
}

absl::StatusOr<torch::Tensor> Lpips::Measure(const torch::Tensor& a, const torch::Tensor& b) const {
  auto check = [](const torch::Tensor& t, const char* name) -> absl::Status {
    if (!t.defined() || (t.dim() != 3 && t.dim() != 4) || t.size(-3) != 3 || t.size(-1) < 16 ||
        t.size(-2) < 16 || !t.is_floating_point()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": shape ", t.defined() ? ShapeString(t.sizes()) : "undefined",
                       ", expected float [B, 3, H, W] or [3, H, W] with H, W >= 16"));
    }
    return CheckFinite(t, name);
  };
  RETURN_IF_ERROR(check(a, "a"));
  RETURN_IF_ERROR(check(b, "b"));
  if (a.sizes() != b.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat("b: shape ", ShapeString(b.sizes()),
                                                   " differs from a's ", ShapeString(a.sizes())));
  }
  return TorchCall("LPIPS", [&] {
    torch::NoGradGuard no_grad;
    torch::Tensor x = (a.dim() == 3 ? a.unsqueeze(0) : a).to(device_, torch::kFloat32);
    torch::Tensor y = (b.dim() == 3 ? b.unsqueeze(0) : b).to(device_, torch::kFloat32);
    return Distance(Features(x), Features(y)).cpu();
  });
}

}  // namespace i2s

#include "server/engine/local_blend.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/engine/torch_util.h"

namespace i2s {

torch::Tensor MaskAtResolution(const torch::Tensor& mask, int64_t size) {
  if (mask.size(2) == size && mask.size(3) == size) return mask;
  return torch::adaptive_avg_pool2d(mask, {size, size});
}

torch::Tensor BlendActivations(const torch::Tensor& a, const torch::Tensor& b,
                               const torch::Tensor& m) {
  // The ends are selected, not computed, so that even the sign of a zero and a non-finite
  // value on the other side cannot leak through.
  return torch::where(m <= 0, a, torch::where(m >= 1, b, torch::lerp(a, b, m)));
}

absl::StatusOr<torch::Tensor> FeatherMask(const torch::Tensor& mask, int feather) {
  return TorchCall("FeatherMask", [&]() -> absl::StatusOr<torch::Tensor> {
    torch::NoGradGuard no_grad;
    if (!mask.defined()) return absl::InvalidArgumentError("mask: missing");
    if (!mask.is_floating_point()) {
      return absl::InvalidArgumentError("mask: expected a floating-point tensor");
    }
    if (mask.dim() != 4 || mask.size(0) < 1 || mask.size(1) != 1 || mask.size(2) < 1 ||
        mask.size(3) < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("mask: shape ", ShapeString(mask.sizes()), ", expected [N, 1, H, W]"));
    }
    absl::Status finite = CheckFinite(mask, "mask");
    if (!finite.ok()) return finite;
    if (mask.min().item<double>() < 0 || mask.max().item<double>() > 1) {
      return absl::InvalidArgumentError("mask: values must lie in [0, 1]");
    }
    const int64_t widest = std::max(mask.size(2), mask.size(3));
    if (feather < 0 || feather > widest) {
      return absl::InvalidArgumentError(
          absl::StrCat("feather: ", feather, " is outside [0, ", widest, "]"));
    }
    torch::Tensor out = mask.to(torch::kFloat32).contiguous();
    // Round k holds max over d(p, q) <= k of mask(q) - d(p, q) * step: the 3x3 maximum
    // reaches one pixel further (max pooling pads with -inf, so the edge is no source).
    const double step = 1.0 / (feather + 1);
    for (int k = 0; k < feather; ++k) {
      out = torch::max(out, torch::max_pool2d(out, {3, 3}, {1, 1}, {1, 1}) - step);
    }
    return out;  // >= mask >= 0 throughout
  });
}

}  // namespace i2s

#include "server/engine/edits.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/engine/torch_util.h"

namespace i2s {
namespace {

// Accepts [L, D] or [N, L, D]; returns [N, L, D] float32 on the input's device.
absl::StatusOr<torch::Tensor> AsBatch(const torch::Tensor& w, absl::string_view name) {
  if (!w.defined()) return absl::InvalidArgumentError(absl::StrCat(name, ": missing"));
  if (!w.is_floating_point()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": expected a floating-point tensor"));
  }
  if (w.dim() != 2 && w.dim() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": shape ", ShapeString(w.sizes()), ", expected [L, D] or [N, L, D]"));
  }
  RETURN_IF_ERROR(CheckFinite(w, name));
  torch::Tensor b = w.dim() == 2 ? w.unsqueeze(0) : w;
  return b.to(torch::kFloat32);
}

absl::Status SameLayout(const torch::Tensor& a, const torch::Tensor& b, absl::string_view name_a,
                        absl::string_view name_b) {
  if (a.size(1) != b.size(1) || a.size(2) != b.size(2)) {
    return absl::InvalidArgumentError(absl::StrCat(name_b, ": shape ", ShapeString(b.sizes()),
                                                   " does not match ", name_a, " ",
                                                   ShapeString(a.sizes())));
  }
  if (a.size(0) != b.size(0) && a.size(0) != 1 && b.size(0) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(name_b, ": batch ", b.size(0),
                                                   " does not match ", name_a, " batch ", a.size(0),
                                                   " (nor is 1)"));
  }
  if (a.device() != b.device()) {
    return absl::InvalidArgumentError(absl::StrCat(name_b, ": on another device than ", name_a));
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<double> MorphAlphas(int frames, bool include_endpoints) {
  std::vector<double> alphas;
  for (int i = 0; i < frames; ++i) {
    if (include_endpoints) {
      alphas.push_back(frames == 1 ? 0.0 : static_cast<double>(i) / (frames - 1));
    } else {
      alphas.push_back(static_cast<double>(i + 1) / (frames + 1));
    }
  }
  return alphas;
}

absl::StatusOr<torch::Tensor> Morph(const torch::Tensor& w0, const torch::Tensor& w1,
                                    const std::vector<double>& alphas) {
  ASSIGN_OR_RETURN(torch::Tensor a, AsBatch(w0, "w0"));
  ASSIGN_OR_RETURN(torch::Tensor b, AsBatch(w1, "w1"));
  if (a.size(0) != 1 || b.size(0) != 1) {
    return absl::InvalidArgumentError("w0, w1: morph takes one latent each ([L, D] or [1, L, D])");
  }
  RETURN_IF_ERROR(SameLayout(a, b, "w0", "w1"));
  if (alphas.empty()) return absl::InvalidArgumentError("alphas: empty");
  for (double alpha : alphas) {
    if (!std::isfinite(alpha)) return absl::InvalidArgumentError("alphas: not finite");
  }
  torch::Tensor t = torch::tensor(std::vector<float>(alphas.begin(), alphas.end()))
                        .to(a.device())
                        .view({-1, 1, 1});
  return torch::lerp(a, b, t);
}

absl::StatusOr<torch::Tensor> StyleMixMask(const torch::Tensor& content, const torch::Tensor& style,
                                           const std::vector<bool>& use_style) {
  ASSIGN_OR_RETURN(torch::Tensor c, AsBatch(content, "content"));
  ASSIGN_OR_RETURN(torch::Tensor s, AsBatch(style, "style"));
  RETURN_IF_ERROR(SameLayout(c, s, "content", "style"));
  if (static_cast<int64_t>(use_style.size()) != c.size(1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer mask: ", use_style.size(), " entries, expected ", c.size(1)));
  }
  std::vector<float> m(use_style.begin(), use_style.end());
  torch::Tensor mask = torch::tensor(m).to(c.device()).view({1, -1, 1});
  return torch::where(mask > 0.5f, s, c);
}

absl::StatusOr<torch::Tensor> StyleMix(const torch::Tensor& content, const torch::Tensor& style,
                                       int crossover) {
  if (!content.defined() || content.dim() < 2) return AsBatch(content, "content").status();
  const int64_t layers = content.size(content.dim() - 2);
  if (crossover < 0 || crossover > layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("crossover: ", crossover, " is outside [0, ", layers, "]"));
  }
  std::vector<bool> use_style(layers);
  for (int64_t l = 0; l < layers; ++l) use_style[l] = l >= crossover;
  return StyleMixMask(content, style, use_style);
}

absl::StatusOr<torch::Tensor> ExpressionTransfer(const torch::Tensor& w1,
                                                 const torch::Tensor& neutral,
                                                 const torch::Tensor& expression, double lambda,
                                                 int first_layer, int last_layer) {
  ASSIGN_OR_RETURN(torch::Tensor a, AsBatch(w1, "w1"));
  ASSIGN_OR_RETURN(torch::Tensor n, AsBatch(neutral, "neutral"));
  ASSIGN_OR_RETURN(torch::Tensor e, AsBatch(expression, "expression"));
  RETURN_IF_ERROR(SameLayout(a, n, "w1", "neutral"));
  RETURN_IF_ERROR(SameLayout(a, e, "w1", "expression"));
  if (!std::isfinite(lambda)) return absl::InvalidArgumentError("lambda: not finite");
  const int64_t layers = a.size(1);
  if (last_layer < 0) last_layer = static_cast<int>(layers) - 1;
  if (first_layer < 0 || first_layer > last_layer || last_layer >= layers) {
    return absl::InvalidArgumentError(absl::StrCat("layers: [", first_layer, ", ", last_layer,
                                                   "] is not a range inside [0, ", layers - 1,
                                                   "]"));
  }
  torch::Tensor rows = torch::zeros({1, layers, 1}, a.options());
  rows.narrow(1, first_layer, last_layer - first_layer + 1).fill_(1.0);
  return a + lambda * rows * (e - n);
}

}  // namespace i2s

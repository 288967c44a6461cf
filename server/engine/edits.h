// Latent edits of Image2StyleGAN, as pure functions on W+ tensors [N, L, D] (a single
// latent may be given as [L, D]). Inputs are validated (shapes, NaN/Inf, ranges) and
// errors name the argument. Thread-safe. Render results with Generator::Synthesize.
#ifndef I2S_SERVER_ENGINE_EDITS_H_
#define I2S_SERVER_ENGINE_EDITS_H_

#include <torch/torch.h>

#include <vector>

#include "absl/status/statusor.h"

namespace i2s {

// `frames` blend factors in [0, 1]: evenly spaced from 0 to 1 inclusive when
// `include_endpoints`, else strictly inside (i / (frames + 1)).
std::vector<double> MorphAlphas(int frames, bool include_endpoints);

// w = (1 - a) * w0 + a * w1 for each alpha: [L, D] or [1, L, D] inputs -> [A, L, D].
absl::StatusOr<torch::Tensor> Morph(const torch::Tensor& w0, const torch::Tensor& w1,
                                    const std::vector<double>& alphas);

// Rows [0, crossover) from `content`, rows [crossover, L) from `style`. Inputs [N, L, D]
// (or [L, D]); N of one side may be 1 (broadcast). 0 <= crossover <= L.
absl::StatusOr<torch::Tensor> StyleMix(const torch::Tensor& content, const torch::Tensor& style,
                                       int crossover);
// Row l from `style` where use_style[l], else from `content`; use_style has L entries.
absl::StatusOr<torch::Tensor> StyleMixMask(const torch::Tensor& content, const torch::Tensor& style,
                                           const std::vector<bool>& use_style);

// w = w1 + lambda * (expression - neutral) on rows [first_layer, last_layer] (inclusive),
// w1 unchanged elsewhere. last_layer = -1 means the last row.
absl::StatusOr<torch::Tensor> ExpressionTransfer(const torch::Tensor& w1,
                                                 const torch::Tensor& neutral,
                                                 const torch::Tensor& expression, double lambda,
                                                 int first_layer = 0, int last_layer = -1);

}  // namespace i2s

#endif  // I2S_SERVER_ENGINE_EDITS_H_

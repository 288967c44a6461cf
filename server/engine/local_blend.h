// Masks for Image2StyleGAN++'s local edits (Generator::ForwardBlend): the mask at each
// synthesis block's resolution, the blend itself, and feathering a hard mask so that an
// edit fades out instead of ending at a seam. Pure functions of their tensors (any
// device); thread-safe.
#ifndef I2S_SERVER_ENGINE_LOCAL_BLEND_H_
#define I2S_SERVER_ENGINE_LOCAL_BLEND_H_

#include <torch/torch.h>

#include "absl/status/statusor.h"

namespace i2s {

// mask [N, 1, R, R] -> [N, 1, size, size], each value the mean of its (R / size)^2 cell
// (adaptive_avg_pool2d; size must divide R). A cell is 0 only where its whole area is 0.
torch::Tensor MaskAtResolution(const torch::Tensor& mask, int64_t size);

// lerp(a, b, m) = a + m * (b - a), broadcasting m [N or 1, 1, H, W] over the channels,
// with a's own bits where m == 0 and b's where m == 1 (selected, not computed), so
// pixels outside the mask are a's exactly.
torch::Tensor BlendActivations(const torch::Tensor& a, const torch::Tensor& b,
                               const torch::Tensor& m);

// mask [N, 1, H, W] in [0, 1] -> float32 of the same shape on its device, an outward
// linear ramp in the chessboard (Chebyshev) distance d: out(p) = max(0, max over q with
// d(p, q) <= feather of mask(q) - d(p, q) / (feather + 1)), up to float rounding. So
// out >= mask (an edit keeps its whole region), out == 1 where mask == 1, and for a
// binary mask out = 1 - d / (feather + 1) at distance d <= feather from the nearest 1
// and exactly 0 beyond: the feathered region (the support of out, the pixels where
// ForwardBlend may differ from a) is the mask's support grown by exactly `feather`
// pixels, the ramp falls monotonically away from it, and feather 0 returns the mask
// unchanged. Monotone in the mask. Deterministic (feather rounds of 3x3 max pooling,
// O(feather * H * W)). feather in [0, max(H, W)]; errors (InvalidArgument) name `mask`
// or `feather`.
absl::StatusOr<torch::Tensor> FeatherMask(const torch::Tensor& mask, int feather);

}  // namespace i2s

#endif  // I2S_SERVER_ENGINE_LOCAL_BLEND_H_

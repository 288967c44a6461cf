// Image2StyleGAN++ masks over an embedding's target: decoded from image files (white
// counts, black does not, grey weighs), and carried from the photo's frame into the
// target's by the transform that made the target (alignment or fit-to-square).
// Thread-safe (no state).
#ifndef I2S_SERVER_IMAGING_MASK_H_
#define I2S_SERVER_IMAGING_MASK_H_

#include <torch/torch.h>

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/imaging/align.h"
#include "server/imaging/image_header.h"

namespace i2s {

// An encoded mask (PNG, JPEG or BMP, with DecodeRgbImage's limits and checks, errors
// naming `field`) -> weights [1, H, W] in [0, 1]: the 8-bit luma of each pixel
// (0.299 R + 0.587 G + 0.114 B, rounded in integers) / 255, so white is exactly 1, black
// exactly 0, and a black-and-white mask stays binary.
absl::StatusOr<torch::Tensor> DecodeMask(absl::string_view bytes, const DecodeLimits& limits,
                                         const std::string& field);

// Every weight is exactly 0 or 1.
bool IsBinaryMask(const torch::Tensor& mask);

// mask [1, H, W] over a photo -> [1, size, size] over the target that `photo_to_target`
// made from it (AlignmentInfo::transform, or FitTransform). Shrunk first by area when
// the target is smaller than the photo, then resampled bilinearly; beyond the photo's
// edge the mask's edge goes on (as FFHQ's padding continues the photo). A binary mask
// stays binary and only shrinks: a target pixel counts only where every photo pixel it
// was resampled from counts, and one pixel more (so what lies under a black region does
// not reach a counted target pixel). A grey mask is resampled as an image.
torch::Tensor WarpMask(const torch::Tensor& mask, const Similarity& photo_to_target, int size);

// photo [3, H, W] with its pixels where `keep` [1, H, W] is 0 set to mid grey (0.5): what
// a mask leaves out can then not reach the target through the resampling around it.
torch::Tensor ClearUnmasked(const torch::Tensor& photo, const torch::Tensor& keep);

}  // namespace i2s

#endif  // I2S_SERVER_IMAGING_MASK_H_

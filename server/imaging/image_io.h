// Image files <-> tensors, through OpenCV. Thread-safe (no shared state).
#ifndef I2S_SERVER_IMAGING_IMAGE_IO_H_
#define I2S_SERVER_IMAGING_IMAGE_IO_H_

#include <torch/torch.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace i2s {

// Generator output [3, H, W] (roughly [-1, 1]) -> 8-bit RGB [H, W, 3] on the CPU:
// round(clamp((x + 1) / 2, 0, 1) * 255), the usual StyleGAN convention.
torch::Tensor GeneratorOutputToRgb8(const torch::Tensor& image);

// Decodes an image file (PNG, JPEG, ... as OpenCV reads them; alpha is dropped, gray is
// expanded) to float RGB [3, H, W] in [0, 1].
absl::StatusOr<torch::Tensor> ReadRgbImage(const std::string& path);
// A grayscale mask file to [1, H, W] in [0, 1] (white = 1).
absl::StatusOr<torch::Tensor> ReadMaskImage(const std::string& path);

// How an image of another size or aspect is brought to the model's square resolution.
enum class FitMode {
  kCenterCrop,  // crop the longer side to a centred square, then resize
  kPad,         // pad the shorter side symmetrically with edge replication, then resize
};
// image [C, H, W] float -> [C, size, size]; area interpolation when shrinking, bicubic
// when enlarging (values clamped to [0, 1]).
absl::StatusOr<torch::Tensor> FitToSquare(const torch::Tensor& image, int size, FitMode mode);

// Writes an 8-bit RGB [H, W, 3] tensor; the format follows the extension (.png, .jpg).
absl::Status WriteRgb8Image(const std::string& path, const torch::Tensor& rgb8);

}  // namespace i2s

#endif  // I2S_SERVER_IMAGING_IMAGE_IO_H_

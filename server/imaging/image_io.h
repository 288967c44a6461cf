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

// Writes an 8-bit RGB [H, W, 3] tensor; the format follows the extension (.png, .jpg).
absl::Status WriteRgb8Image(const std::string& path, const torch::Tensor& rgb8);

}  // namespace i2s

#endif  // I2S_SERVER_IMAGING_IMAGE_IO_H_

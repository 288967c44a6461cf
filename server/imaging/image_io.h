// Images <-> tensors, through OpenCV: files, and encoded bytes held in memory (an upload, a
// response body). Thread-safe (no shared state).
#ifndef I2S_SERVER_IMAGING_IMAGE_IO_H_
#define I2S_SERVER_IMAGING_IMAGE_IO_H_

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/defaults.h"
#include "server/imaging/image_header.h"

namespace i2s {

// Generator output [3, H, W] (roughly [-1, 1]) -> 8-bit RGB [H, W, 3] on the CPU:
// round(clamp((x + 1) / 2, 0, 1) * 255), the usual StyleGAN convention.
torch::Tensor GeneratorOutputToRgb8(const torch::Tensor& image);
// Float RGB [3, H, W] in [0, 1] (a decoded or aligned photo) -> 8-bit RGB [H, W, 3] on the
// CPU: round(clamp(x, 0, 1) * 255).
torch::Tensor UnitImageToRgb8(const torch::Tensor& image);

// Decodes an image file (PNG, JPEG, ... as OpenCV reads them; alpha is dropped, gray is
// expanded) to float RGB [3, H, W] in [0, 1]. For trusted local files only: no size limits
// and every format OpenCV knows; untrusted bytes go through DecodeRgbImage.
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

// ---- Encoded images in memory (untrusted input) ----

// Encoded PNG, JPEG or BMP bytes -> float RGB [3, H, W] in [0, 1] on the CPU (alpha
// dropped, gray expanded, 16-bit samples scaled by 1/65535; JPEG EXIF orientation applied,
// as ReadRgbImage does). Checks, in this order, each an InvalidArgument that names `field`
// and the numbers involved: empty input; more than limits.max_bytes; the header
// (ReadImageHeader); width * height above limits.max_pixels, before any decoding; then
// decoding: a JPEG without its end-of-image marker (libjpeg would silently pad a truncated
// one with gray), the decoder failing, or a decoded size other than the header's (or its
// transpose, which EXIF orientation produces). Only these three formats ever reach
// cv::imdecode, so a lying header cannot make OpenCV allocate past the pixel limit: the
// decoders size their buffers from the same header fields parsed here.
absl::StatusOr<torch::Tensor> DecodeRgbImage(absl::string_view bytes, const DecodeLimits& limits,
                                             const std::string& field = "image");
// The same checks and decoding, to 8-bit RGB [H, W, 3] (16-bit samples scaled by 1/257):
// a photo to be changed in place and encoded again (paste-back) at a third of the memory.
absl::StatusOr<torch::Tensor> DecodeRgb8Image(absl::string_view bytes, const DecodeLimits& limits,
                                              const std::string& field = "image");

enum class EncodeFormat { kPng, kJpeg };
// 8-bit RGB [H, W, 3] (as GeneratorOutputToRgb8 returns; moved to the CPU if needed) ->
// encoded PNG or JPEG bytes. jpeg_quality (1..100) applies to kJpeg only. InvalidArgument
// for another shape or dtype, a bad quality, or a size the format cannot hold (JPEG: 65535).
absl::StatusOr<std::string> EncodeRgb8(const torch::Tensor& rgb8, EncodeFormat format,
                                       int jpeg_quality = defaults::kJpegQuality);

}  // namespace i2s

#endif  // I2S_SERVER_IMAGING_IMAGE_IO_H_

#include "server/imaging/image_io.h"

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"

namespace i2s {

torch::Tensor GeneratorOutputToRgb8(const torch::Tensor& image) {
  return ((image.detach().to(torch::kCPU, torch::kFloat32) + 1) / 2 * 255)
      .round()
      .clamp(0, 255)
      .to(torch::kUInt8)
      .permute({1, 2, 0})
      .contiguous();
}

absl::Status WriteRgb8Image(const std::string& path, const torch::Tensor& rgb8) {
  if (rgb8.dim() != 3 || rgb8.size(2) != 3 || rgb8.scalar_type() != torch::kUInt8) {
    return absl::InvalidArgumentError("WriteRgb8Image: expected uint8 [H, W, 3]");
  }
  torch::Tensor c = rgb8.contiguous();
  try {
    cv::Mat rgb(static_cast<int>(c.size(0)), static_cast<int>(c.size(1)), CV_8UC3,
                c.data_ptr<uint8_t>());
    cv::Mat bgr;
    cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
    if (!cv::imwrite(path, bgr)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": cannot write image (unknown extension or unwritable path)"));
    }
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace i2s

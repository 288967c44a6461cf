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

namespace {

// [C, H, W] float tensor <-> cv::Mat of C float channels (HWC).
cv::Mat ToMat(const torch::Tensor& chw) {
  torch::Tensor hwc = chw.permute({1, 2, 0}).contiguous();
  cv::Mat m(static_cast<int>(hwc.size(0)), static_cast<int>(hwc.size(1)),
            CV_32FC(static_cast<int>(hwc.size(2))), hwc.data_ptr<float>());
  return m.clone();
}

torch::Tensor FromMat(const cv::Mat& m) {
  cv::Mat c = m.isContinuous() ? m : m.clone();
  return torch::from_blob(c.data, {c.rows, c.cols, c.channels()}, torch::kFloat32)
      .permute({2, 0, 1})
      .contiguous()
      .clone();
}

absl::StatusOr<cv::Mat> Decode(const std::string& path, int flags) {
  cv::Mat m;
  try {
    m = cv::imread(path, flags);
  } catch (const cv::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", e.what()));
  }
  if (m.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": cannot read or decode the image (missing file or unknown format)"));
  }
  double scale = m.depth() == CV_16U ? 1.0 / 65535 : m.depth() == CV_8U ? 1.0 / 255 : 1.0;
  cv::Mat f;
  m.convertTo(f, CV_32F, scale);
  return f;
}

}  // namespace

absl::StatusOr<torch::Tensor> ReadRgbImage(const std::string& path) {
  auto bgr = Decode(path, cv::IMREAD_COLOR | cv::IMREAD_ANYDEPTH);
  if (!bgr.ok()) return bgr.status();
  cv::Mat rgb;
  cv::cvtColor(*bgr, rgb, cv::COLOR_BGR2RGB);
  return FromMat(rgb).clamp(0, 1);
}

absl::StatusOr<torch::Tensor> ReadMaskImage(const std::string& path) {
  auto gray = Decode(path, cv::IMREAD_GRAYSCALE | cv::IMREAD_ANYDEPTH);
  if (!gray.ok()) return gray.status();
  return FromMat(*gray).clamp(0, 1);
}

absl::StatusOr<torch::Tensor> FitToSquare(const torch::Tensor& image, int size, FitMode mode) {
  if (image.dim() != 3 || image.size(1) < 1 || image.size(2) < 1 || size < 1) {
    return absl::InvalidArgumentError("FitToSquare: expected [C, H, W] and a positive size");
  }
  try {
    cv::Mat m = ToMat(image.to(torch::kCPU, torch::kFloat32));
    const int h = m.rows, w = m.cols;
    if (mode == FitMode::kCenterCrop) {
      const int side = std::min(h, w);
      m = m(cv::Rect((w - side) / 2, (h - side) / 2, side, side)).clone();
    } else {
      const int side = std::max(h, w);
      cv::copyMakeBorder(m, m, (side - h) / 2, side - h - (side - h) / 2, (side - w) / 2,
                         side - w - (side - w) / 2, cv::BORDER_REPLICATE);
    }
    cv::Mat out;
    cv::resize(m, out, cv::Size(size, size), 0, 0,
               m.rows > size ? cv::INTER_AREA : cv::INTER_CUBIC);
    return FromMat(out).clamp(0, 1);
  } catch (const cv::Exception& e) {
    return absl::InternalError(absl::StrCat("FitToSquare: ", e.what()));
  }
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

#include "server/imaging/mask.h"

#include <algorithm>
#include <cmath>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/imaging/image_io.h"

namespace i2s {

absl::StatusOr<torch::Tensor> DecodeMask(absl::string_view bytes, const DecodeLimits& limits,
                                         const std::string& field) {
  ASSIGN_OR_RETURN(torch::Tensor rgb8, DecodeRgb8Image(bytes, limits, field));
  torch::Tensor c = rgb8.to(torch::kInt32);
  torch::Tensor luma =
      (c.select(2, 0) * 299 + c.select(2, 1) * 587 + c.select(2, 2) * 114 + 500).div(1000, "floor");
  return (luma.to(torch::kFloat32) / 255).unsqueeze(0).contiguous();
}

bool IsBinaryMask(const torch::Tensor& mask) {
  return mask.eq(0).logical_or(mask.eq(1)).all().item<bool>();
}

torch::Tensor WarpMask(const torch::Tensor& mask, const Similarity& photo_to_target, int size) {
  const bool binary = IsBinaryMask(mask);
  torch::Tensor m = mask.to(torch::kCPU, torch::kFloat32).squeeze(0).contiguous();
  cv::Mat src(static_cast<int>(m.size(0)), static_cast<int>(m.size(1)), CV_32F, m.data_ptr());
  // target <- photo, as OpenCV's forward matrix.
  const auto& t = photo_to_target.m;
  cv::Matx23d fwd(t[0], t[1], t[2], t[3], t[4], t[5]);
  cv::Mat work = src;
  const double scale = photo_to_target.Scale();
  const int shrink = scale > 0 ? static_cast<int>(std::floor(0.5 / scale)) * 2 : 1;
  if (shrink >= 2) {
    // Area shrink first (bilinear sampling alone would skip photo pixels), and the
    // transform follows: photo x = (x' + 0.5) * fx - 0.5.
    const int w = std::max(1, (src.cols + shrink - 1) / shrink);
    const int h = std::max(1, (src.rows + shrink - 1) / shrink);
    cv::resize(src, work, cv::Size(w, h), 0, 0, cv::INTER_AREA);
    const double fx = double(src.cols) / w, fy = double(src.rows) / h;
    const cv::Matx33d s(fx, 0, 0.5 * fx - 0.5, 0, fy, 0.5 * fy - 0.5, 0, 0, 1);
    fwd = fwd * s;
  }
  cv::Mat out;
  cv::warpAffine(work, out, cv::Mat(fwd), cv::Size(size, size), cv::INTER_LINEAR,
                 cv::BORDER_REPLICATE);
  torch::Tensor r =
      torch::from_blob(out.data, {1, size, size}, torch::kFloat32).clone().clamp(0, 1);
  if (binary) {
    // Counted only where every source pixel counted (interpolation weights sum to 1 up to
    // rounding), with one more target pixel of margin for the alignment's supersampled
    // footprint, which is wider than one bilinear sample.
    r = r.ge(1 - 1e-4).to(torch::kFloat32);
    r = -torch::max_pool2d(-r.unsqueeze(0), 3, 1, 1).squeeze(0);
  }
  return r;
}

torch::Tensor ClearUnmasked(const torch::Tensor& photo, const torch::Tensor& keep) {
  return torch::where(keep.gt(0), photo, torch::full({}, 0.5, photo.options()));
}

}  // namespace i2s

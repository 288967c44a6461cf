#include "server/imaging/paste.h"

#include <algorithm>
#include <cmath>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/photo.hpp>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace i2s {
namespace {

// The face ellipse of PasteRegion::kFace, in fractions of the aligned side. In the FFHQ
// crop the eyes sit near y = 0.47 and x = 0.5 -/+ 0.125, the mouth near y = 0.72 (the quad
// of ComputeFfhqQuad is about four eye distances wide, centred 0.1 of the eye-to-mouth
// vector below the eyes): this covers forehead to chin and cheek to cheek.
constexpr double kFaceCx = 0.5, kFaceCy = 0.56;
constexpr double kFaceAx = 0.33, kFaceAy = 0.40;
// Shrink the render first when it is more than this much larger than the face in the photo
// (bilinear sampling aliases beyond it).
constexpr double kShrinkAbove = 1.25;

// The Poisson blend's solution is the render plus a membrane: the harmonic function whose
// values on the mask's border are the photo minus the render there. The membrane is smooth,
// so it is solved (OpenCV's seamlessClone, whose solver grows with the area: 5.7 s for a
// 1250 px face here) on a copy shrunk to at most kMembraneSide pixels, and enlarged back.
constexpr int kMembraneSide = 256;

// Adds the membrane to `render` (float RGB, the size of `photo`), inside weight > 0.
absl::Status Seamless(const cv::Mat& photo, const cv::Mat& weight, cv::Mat* render) {
  const int w = photo.cols, h = photo.rows;
  const double k = std::min(1.0, double(kMembraneSide) / std::max(w, h));
  const cv::Size small(std::max(3, int(std::lround(w * k))), std::max(3, int(std::lround(h * k))));
  cv::Mat photo_small, render_small, mask;
  cv::resize(photo, photo_small, small, 0, 0, cv::INTER_AREA);
  cv::resize(*render, render_small, small, 0, 0, cv::INTER_AREA);
  render_small.convertTo(render_small, CV_8UC3);
  cv::resize(weight, mask, small, 0, 0, cv::INTER_NEAREST);
  mask = mask > 0;
  // seamlessClone wants a mask clear of the image border; it places the mask's bounding
  // box centred on `centre`, so the centre is that box's own (in its integer arithmetic)
  // and the result lands where the mask is.
  mask.row(0).setTo(0), mask.row(small.height - 1).setTo(0);
  mask.col(0).setTo(0), mask.col(small.width - 1).setTo(0);
  if (cv::countNonZero(mask) == 0) return absl::OkStatus();
  const cv::Rect box = cv::boundingRect(mask);
  const cv::Point centre(box.x + box.width / 2, box.y + box.height / 2);
  cv::Mat cloned, membrane;
  cv::seamlessClone(render_small, photo_small, mask, centre, cloned, cv::NORMAL_CLONE);
  cv::subtract(cloned, render_small, membrane, cv::noArray(), CV_32FC3);
  cv::resize(membrane, membrane, cv::Size(w, h), 0, 0, cv::INTER_LINEAR);
  *render += membrane;
  return absl::OkStatus();
}

double Smoothstep(double t) {
  t = std::clamp(t, 0.0, 1.0);
  return t * t * (3 - 2 * t);
}

absl::Status CheckRgb8(const torch::Tensor& t, const char* what) {
  if (!t.defined() || t.dim() != 3 || t.size(2) != 3 || t.scalar_type() != torch::kUInt8 ||
      !t.device().is_cpu() || !t.is_contiguous() || t.size(0) < 1 || t.size(1) < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("PasteInto: ", what, " must be a contiguous 8-bit RGB [H, W, 3] CPU tensor"));
  }
  return absl::OkStatus();
}

}  // namespace

double PasteMaskWeight(double u, double v, int size, const PasteOptions& options) {
  const double s = size;
  double inside;  // distance inside the region's outline, in aligned pixels
  if (options.region == PasteRegion::kCrop) {
    inside = std::min({u + 0.5, s - 0.5 - u, v + 0.5, s - 0.5 - v});
  } else {
    const double du = ((u + 0.5) / s - kFaceCx) / kFaceAx;
    const double dv = ((v + 0.5) / s - kFaceCy) / kFaceAy;
    inside = (1 - std::hypot(du, dv)) * std::min(kFaceAx, kFaceAy) * s;
  }
  if (inside <= 0) return 0;
  const double band = options.feather * s;
  return band <= 0 ? 1.0 : Smoothstep(inside / band);
}

absl::Status PasteInto(torch::Tensor& photo, const torch::Tensor& render,
                       const Similarity& to_aligned, const PasteOptions& options) {
  if (absl::Status s = CheckRgb8(photo, "the photo"); !s.ok()) return s;
  if (absl::Status s = CheckRgb8(render, "the render"); !s.ok()) return s;
  const int S = static_cast<int>(render.size(0));
  if (render.size(1) != S || S < 8) {
    return absl::InvalidArgumentError("PasteInto: the render must be square, at least 8x8");
  }
  if (!std::isfinite(options.feather) || options.feather < 0 || options.feather > 0.5) {
    return absl::InvalidArgumentError("feather: must be in [0, 0.5]");
  }
  const auto& m = to_aligned.m;
  const double scale = to_aligned.Scale();
  const bool similarity =
      std::abs(m[0] - m[4]) <= 1e-6 * scale && std::abs(m[1] + m[3]) <= 1e-6 * scale;
  if (!std::all_of(m.begin(), m.end(), [](double x) { return std::isfinite(x); }) ||
      !(scale > 1e-6 && scale < 1e6) || !similarity) {
    return absl::InvalidArgumentError("transform: not an invertible similarity");
  }
  const int H = static_cast<int>(photo.size(0)), W = static_cast<int>(photo.size(1));

  // The photo pixels the aligned square covers.
  const Similarity back = to_aligned.Inverse();
  double lx = 1e300, ly = 1e300, hx = -1e300, hy = -1e300;
  for (Point2 c : {Point2{-0.5, -0.5}, Point2{S - 0.5, -0.5}, Point2{-0.5, S - 0.5},
                   Point2{S - 0.5, S - 0.5}}) {
    const Point2 p = back.Apply(c);
    lx = std::min(lx, p.x), ly = std::min(ly, p.y), hx = std::max(hx, p.x), hy = std::max(hy, p.y);
  }
  const int x0 = static_cast<int>(std::clamp(std::floor(lx), 0.0, double(W)));
  const int y0 = static_cast<int>(std::clamp(std::floor(ly), 0.0, double(H)));
  const int x1 = static_cast<int>(std::clamp(std::ceil(hx) + 1, 0.0, double(W)));
  const int y1 = static_cast<int>(std::clamp(std::ceil(hy) + 1, 0.0, double(H)));
  if (x1 <= x0 || y1 <= y0) return absl::OkStatus();  // the face lies outside the photo
  const int w = x1 - x0, h = y1 - y0;

  try {
    cv::Mat render8(S, S, CV_8UC3, const_cast<uint8_t*>(render.data_ptr<uint8_t>()));
    cv::Mat source;
    render8.convertTo(source, CV_32FC3);
    // Where each photo pixel of the box samples the (maybe shrunk) render.
    Similarity sample = to_aligned;
    int interpolation = scale < 1 ? cv::INTER_CUBIC : cv::INTER_LINEAR;
    if (scale > kShrinkAbove) {
      const int side = std::max(1, static_cast<int>(std::lround(S / scale)));
      cv::resize(source, source, cv::Size(side, side), 0, 0, cv::INTER_AREA);
      const double k = double(side) / S;  // u' = (u + 0.5) k - 0.5
      sample.m = {m[0] * k, m[1] * k, (m[2] + 0.5) * k - 0.5,
                  m[3] * k, m[4] * k, (m[5] + 0.5) * k - 0.5};
      interpolation = cv::INTER_LINEAR;
    }
    const auto& t = sample.m;
    const cv::Mat box_to_source =
        (cv::Mat_<double>(2, 3) << t[0], t[1], t[0] * x0 + t[1] * y0 + t[2], t[3], t[4],
         t[3] * x0 + t[4] * y0 + t[5]);
    cv::Mat warped;
    cv::warpAffine(source, warped, box_to_source, cv::Size(w, h),
                   interpolation | cv::WARP_INVERSE_MAP, cv::BORDER_REPLICATE);

    cv::Mat weight(h, w, CV_32F);
    for (int y = 0; y < h; ++y) {
      float* row = weight.ptr<float>(y);
      for (int x = 0; x < w; ++x) {
        const Point2 a = to_aligned.Apply({double(x + x0), double(y + y0)});
        row[x] = static_cast<float>(PasteMaskWeight(a.x, a.y, S, options));
      }
    }
    cv::Mat whole(H, W, CV_8UC3, photo.data_ptr<uint8_t>());
    cv::Mat region = whole(cv::Rect(x0, y0, w, h));

    if (options.blend == PasteBlend::kSeamless && w > 2 && h > 2) {
      RETURN_IF_ERROR(Seamless(region, weight, &warped));
    }

    for (int y = 0; y < h; ++y) {
      const float* wrow = weight.ptr<float>(y);
      const cv::Vec3f* rrow = warped.ptr<cv::Vec3f>(y);
      cv::Vec3b* prow = region.ptr<cv::Vec3b>(y);
      for (int x = 0; x < w; ++x) {
        const float a = wrow[x];
        if (a <= 0) continue;
        for (int c = 0; c < 3; ++c) {
          prow[x][c] = cv::saturate_cast<uint8_t>(prow[x][c] + (rrow[x][c] - prow[x][c]) * a);
        }
      }
    }
  } catch (const cv::Exception& e) {
    return absl::InternalError(absl::StrCat("PasteInto: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace i2s

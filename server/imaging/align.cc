#include "server/imaging/align.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/imaging/image_io.h"

namespace i2s {
namespace {

// numpy's flipud(v) * [-1, 1] in the FFHQ script: a quarter turn (x right, y down: clockwise
// on screen), which takes the eye line to the direction of the mouth.
Point2 Rot90(Point2 v) { return {-v.y, v.x}; }
bool Finite(Point2 p) { return std::isfinite(p.x) && std::isfinite(p.y); }
// numpy's rint, which the FFHQ script rounds with: halves go to the even neighbour.
long RoundHalfEven(double v) { return static_cast<long>(std::nearbyint(v)); }

absl::Status Invalid(const std::string& field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

// [3, H, W] float RGB in [0, 1] -> HWC float RGB in [0, 255] (the FFHQ script's scale, so
// its constants apply unchanged).
absl::StatusOr<cv::Mat> ToMat255(const torch::Tensor& image, const std::string& who) {
  if (!image.defined() || image.dim() != 3 || image.size(0) != 3 || image.size(1) < 1 ||
      image.size(2) < 1 || image.size(1) > (1 << 15) || image.size(2) > (1 << 15)) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, ": expected a float RGB image [3, H, W] (H, W in [1, 32768])"));
  }
  // Straight into the Mat's own buffer, scaled there: the photo costs one float copy here,
  // not three (docs/SECURITY.md, Limits); the values are those of x * 255.
  const torch::Tensor chw = image.detach().to(torch::kCPU, torch::kFloat32);
  cv::Mat m(static_cast<int>(chw.size(1)), static_cast<int>(chw.size(2)), CV_32FC3);
  torch::Tensor hwc = torch::from_blob(m.data, {m.rows, m.cols, 3}, torch::kFloat32);
  hwc.copy_(chw.permute({1, 2, 0}));
  hwc.mul_(255);
  return m;
}

torch::Tensor FromMat255(const cv::Mat& m) {
  cv::Mat c = m.isContinuous() ? m : m.clone();
  return (torch::from_blob(c.data, {c.rows, c.cols, 3}, torch::kFloat32)
              .permute({2, 0, 1})
              .clone() /
          255)
      .clamp(0, 1)
      .contiguous();
}

// scipy.ndimage.gaussian_filter(img, [s, s, 0]) (truncate 4, mode 'reflect' = OpenCV's
// BORDER_REFLECT). A wide blur is computed on a copy shrunk by an integer factor and
// enlarged again: the result is smooth at that scale, and FFHQ's sigma reaches 80 px at
// 1024 output, which at full size costs seconds.
cv::Mat GaussianLikeScipy(const cv::Mat& img, double sigma) {
  cv::Mat out;
  const int factor = sigma > 8 ? static_cast<int>(sigma / 4) : 1;
  if (factor <= 1) {
    const int radius = static_cast<int>(4 * sigma + 0.5);
    cv::GaussianBlur(img, out, cv::Size(2 * radius + 1, 2 * radius + 1), sigma, sigma,
                     cv::BORDER_REFLECT);
    return out;
  }
  cv::Mat small;
  cv::resize(img, small, cv::Size(std::max(1, img.cols / factor), std::max(1, img.rows / factor)),
             0, 0, cv::INTER_AREA);
  const double s = sigma / factor;
  const int radius = static_cast<int>(4 * s + 0.5);
  cv::GaussianBlur(small, small, cv::Size(2 * radius + 1, 2 * radius + 1), s, s,
                   cv::BORDER_REFLECT);
  cv::resize(small, out, img.size(), 0, 0, cv::INTER_LINEAR);
  return out;
}

// np.median(img, axis=(0, 1)) of an HWC float image.
cv::Scalar ChannelMedians(const cv::Mat& img) {
  std::vector<cv::Mat> channels;
  cv::split(img, channels);
  cv::Scalar result;
  for (int c = 0; c < 3; ++c) {
    std::vector<float> v;
    cv::Mat flat = channels[c].reshape(1, 1);
    v.assign(flat.ptr<float>(), flat.ptr<float>() + flat.total());
    const size_t n = v.size(), mid = n / 2;
    std::nth_element(v.begin(), v.begin() + mid, v.end());
    double m = v[mid];
    if (n % 2 == 0) m = (m + *std::max_element(v.begin(), v.begin() + mid)) / 2;
    result[c] = m;
  }
  return result;
}

// Continuous coordinates p' = (sx p.x + tx, sy p.y + ty): where an original-image point is
// in the working image after the shrink, crop and pad steps.
struct AxisMap {
  double sx = 1, sy = 1, tx = 0, ty = 0;
  // Pixel-index point of the original -> pixel-index point of the working image.
  Point2 Index(Point2 p) const {
    return {sx * (p.x + 0.5) + tx - 0.5, sy * (p.y + 0.5) + ty - 0.5};
  }
};

}  // namespace

absl::StatusOr<FaceLandmarks> FaceLandmarksFromPoints(const std::vector<Point2>& points,
                                                      const std::string& field) {
  // Photos are at most 32768 pixels a side (ToMat255); 1e6 leaves room for faces that
  // reach past the photo while keeping every size below finite, int-sized numbers.
  constexpr double kFar = 1e6;
  for (size_t i = 0; i < points.size(); ++i) {
    if (!Finite(points[i])) return Invalid(absl::StrCat(field, "[", i, "]"), "not a finite point");
    if (std::abs(points[i].x) > kFar || std::abs(points[i].y) > kFar) {
      return Invalid(absl::StrCat(field, "[", i, "]"), "more than 1e6 pixels from the photo");
    }
  }
  FaceLandmarks lm;
  if (points.size() == 5) {
    lm = {points[0], points[1], points[3], points[4]};
  } else if (points.size() == 68) {
    Point2 a, b;
    for (int i = 36; i < 42; ++i) a = a + points[i] * (1.0 / 6);
    for (int i = 42; i < 48; ++i) b = b + points[i] * (1.0 / 6);
    lm = {a, b, points[48], points[54]};
  } else {
    return Invalid(field, absl::StrCat("expected 5 points (eye, eye, nose, mouth corner, mouth "
                                       "corner) or 68 (iBUG 300-W), got ",
                                       points.size()));
  }
  const Point2 e = lm.eye_right - lm.eye_left;
  const Point2 m = Mid(lm.mouth_left, lm.mouth_right) - Mid(lm.eye_left, lm.eye_right);
  if (Norm(e) < 1) return Invalid(field, "the eyes are less than a pixel apart");
  // Distance of the mouth centre from the eye line.
  const double side = Cross(e, m) / Norm(e);
  if (std::abs(side) < 1) return Invalid(field, "the mouth lies on the line through the eyes");
  if (side < 0) {  // upright means the mouth is a quarter turn clockwise from the eye line
    std::swap(lm.eye_left, lm.eye_right);
    std::swap(lm.mouth_left, lm.mouth_right);
  }
  return lm;
}

FfhqQuad ComputeFfhqQuad(const FaceLandmarks& lm) {
  const Point2 eye_avg = Mid(lm.eye_left, lm.eye_right);
  const Point2 eye_to_eye = lm.eye_right - lm.eye_left;
  const Point2 eye_to_mouth = Mid(lm.mouth_left, lm.mouth_right) - eye_avg;
  FfhqQuad q;
  Point2 x = eye_to_eye - Rot90(eye_to_mouth);
  x = x * (1 / Norm(x));
  x = x * std::max(Norm(eye_to_eye) * 2.0, Norm(eye_to_mouth) * 1.8);
  q.x = x;
  q.y = Rot90(x);
  q.center = eye_avg + eye_to_mouth * 0.1;
  q.corners = {q.center - q.x - q.y, q.center - q.x + q.y, q.center + q.x + q.y,
               q.center + q.x - q.y};
  q.size = Norm(x) * 2;
  return q;
}

Similarity Similarity::Inverse() const {
  const double det = m[0] * m[4] - m[1] * m[3];
  Similarity r;
  r.m = {m[4] / det, -m[1] / det, 0, -m[3] / det, m[0] / det, 0};
  r.m[2] = -(r.m[0] * m[2] + r.m[1] * m[5]);
  r.m[5] = -(r.m[3] * m[2] + r.m[4] * m[5]);
  return r;
}

double Similarity::Scale() const { return std::sqrt(std::abs(m[0] * m[4] - m[1] * m[3])); }

double Similarity::RotationDegrees() const {
  // The photo's x axis lands along (a, d) in the aligned image; y points down, so a
  // counter-clockwise turn on screen has a negative angle there.
  return -std::atan2(m[3], m[0]) * 180 / M_PI;
}

namespace {

// The map from working-image index coordinates, where the quad corners are `c`, to the
// aligned image of side `size`: corner 0 -> the top-left corner of the output, 3 -> top
// right, 1 -> bottom left (the PIL QUAD convention, which samples at pixel centres).
Similarity WorkingToAligned(const std::array<Point2, 4>& c, int size, const AxisMap& axes) {
  const Point2 ex = c[3] - c[0], ey = c[1] - c[0];
  const double det = ex.x * ey.y - ey.x * ex.y;
  // (a, b) = B^-1 (p - c0), with B = [ex ey]; u = S a - 0.5, v = S b - 0.5.
  const double i00 = ey.y / det, i01 = -ey.x / det, i10 = -ex.y / det, i11 = ex.x / det;
  // p = D q + g for an original index point q (AxisMap::Index).
  const double gx = axes.sx * 0.5 + axes.tx - 0.5 - c[0].x;
  const double gy = axes.sy * 0.5 + axes.ty - 0.5 - c[0].y;
  Similarity s;
  s.m = {size * i00 * axes.sx, size * i01 * axes.sy, size * (i00 * gx + i01 * gy) - 0.5,
         size * i10 * axes.sx, size * i11 * axes.sy, size * (i10 * gx + i11 * gy) - 0.5};
  return s;
}

}  // namespace

Similarity FfhqTransform(const FaceLandmarks& landmarks, int output_size) {
  return WorkingToAligned(ComputeFfhqQuad(landmarks).corners, output_size, AxisMap{});
}

absl::StatusOr<AlignedFace> AlignFfhq(const torch::Tensor& image, const FaceLandmarks& landmarks,
                                      const AlignOptions& options) {
  const int S = options.output_size;
  if (S < 1 || S > 8192) return absl::InvalidArgumentError("output_size: must be in [1, 8192]");
  ASSIGN_OR_RETURN(cv::Mat img, ToMat255(image, "image"));
  AlignedFace out;
  out.landmarks = landmarks;
  out.quad = ComputeFfhqQuad(landmarks);
  double qsize = out.quad.size;
  if (!std::isfinite(qsize) || qsize < 1 || qsize > 1e7) {
    return absl::InvalidArgumentError("landmarks: the face must be between 1 and 1e7 pixels wide");
  }
  AxisMap axes;
  auto working_quad = [&] {
    std::array<Point2, 4> c;
    for (int i = 0; i < 4; ++i) c[i] = axes.Index(out.quad.corners[i]);
    return c;
  };
  auto bounds = [](const std::array<Point2, 4>& c) {
    double x0 = c[0].x, y0 = c[0].y, x1 = c[0].x, y1 = c[0].y;
    for (const Point2& p : c) {
      x0 = std::min(x0, p.x), y0 = std::min(y0, p.y);
      x1 = std::max(x1, p.x), y1 = std::max(y1, p.y);
    }
    return std::array<double, 4>{std::floor(x0), std::floor(y0), std::ceil(x1), std::ceil(y1)};
  };
  try {
    // Shrink.
    const int shrink = static_cast<int>(std::floor(qsize / S * 0.5));
    if (shrink > 1) {
      const int w = std::max(1, static_cast<int>(RoundHalfEven(img.cols / double(shrink))));
      const int h = std::max(1, static_cast<int>(RoundHalfEven(img.rows / double(shrink))));
      axes.sx = double(w) / img.cols;
      axes.sy = double(h) / img.rows;
      cv::resize(img, img, cv::Size(w, h), 0, 0, cv::INTER_AREA);
      qsize /= shrink;
    }
    // Crop.
    const int border = std::max(static_cast<int>(RoundHalfEven(qsize * 0.1)), 3);
    std::array<double, 4> b = bounds(working_quad());
    const double cx0 = std::max(b[0] - border, 0.0), cy0 = std::max(b[1] - border, 0.0);
    const double cx1 = std::min(b[2] + border, double(img.cols));
    const double cy1 = std::min(b[3] + border, double(img.rows));
    if (cx1 - cx0 < 1 || cy1 - cy0 < 1) {
      return absl::InvalidArgumentError("landmarks: the face they describe lies outside the image");
    }
    if (cx1 - cx0 < img.cols || cy1 - cy0 < img.rows) {
      img = img(cv::Rect(int(cx0), int(cy0), int(cx1 - cx0), int(cy1 - cy0))).clone();
      axes.tx -= cx0;
      axes.ty -= cy0;
    }
    // Pad.
    b = bounds(working_quad());
    std::array<int, 4> pad = {static_cast<int>(std::max(-b[0] + border, 0.0)),
                              static_cast<int>(std::max(-b[1] + border, 0.0)),
                              static_cast<int>(std::max(b[2] - img.cols + border, 0.0)),
                              static_cast<int>(std::max(b[3] - img.rows + border, 0.0))};
    if (options.padding && *std::max_element(pad.begin(), pad.end()) > border - 4) {
      const int least = std::max(1, static_cast<int>(RoundHalfEven(qsize * 0.3)));
      // Each side is at least 30% of the quad, so no side is 0 in the mask below; capped
      // so that a face far outside the photo cannot ask for an unbounded canvas.
      const int most = static_cast<int>(4 * qsize) + 4 * border;
      for (int& p : pad) p = std::min(std::max(p, least), most);
      cv::copyMakeBorder(img, img, pad[1], pad[3], pad[0], pad[2], cv::BORDER_REFLECT_101);
      axes.tx += pad[0];
      axes.ty += pad[1];
      const int h = img.rows, w = img.cols;
      // As FFHQ: blend towards the blur, then towards the median of that result.
      cv::Mat blurred = GaussianLikeScipy(img, qsize * 0.02);
      // 1 at the outer edge of the padding, 0 well inside the photo.
      auto mask = [&](int x, int y) {
        const double mx = 1 - std::min(double(x) / pad[0], double(w - 1 - x) / pad[2]);
        const double my = 1 - std::min(double(y) / pad[1], double(h - 1 - y) / pad[3]);
        return std::max(mx, my);
      };
      for (int y = 0; y < h; ++y) {
        auto* row = img.ptr<cv::Vec3f>(y);
        const auto* brow = blurred.ptr<cv::Vec3f>(y);
        for (int x = 0; x < w; ++x) {
          const float to_blur = static_cast<float>(std::clamp(mask(x, y) * 3 + 1, 0.0, 1.0));
          for (int c = 0; c < 3; ++c) row[x][c] += (brow[x][c] - row[x][c]) * to_blur;
        }
      }
      blurred.release();
      const cv::Scalar median = ChannelMedians(img);
      for (int y = 0; y < h; ++y) {
        auto* row = img.ptr<cv::Vec3f>(y);
        for (int x = 0; x < w; ++x) {
          const double to_median = std::clamp(mask(x, y), 0.0, 1.0);
          for (int c = 0; c < 3; ++c) {
            const double v = row[x][c] + (median[c] - row[x][c]) * to_median;
            row[x][c] = static_cast<float>(std::clamp(v, 0.0, 255.0));
          }
        }
      }
    }
    // Transform: sample the quad at a multiple of the output size, then box-filter down.
    const std::array<Point2, 4> c = working_quad();
    const int k = std::clamp(static_cast<int>(std::ceil(qsize / S)), 1, 4);
    const int T = S * k;
    const Point2 ex = (c[3] - c[0]) * (1.0 / T), ey = (c[1] - c[0]) * (1.0 / T);
    const Point2 o = c[0] + (ex + ey) * 0.5;
    cv::Mat inverse = (cv::Mat_<double>(2, 3) << ex.x, ey.x, o.x, ex.y, ey.y, o.y);
    cv::Mat warped;
    cv::warpAffine(img, warped, inverse, cv::Size(T, T), cv::INTER_LINEAR | cv::WARP_INVERSE_MAP,
                   cv::BORDER_CONSTANT, cv::Scalar(0, 0, 0));
    if (k > 1) cv::resize(warped, warped, cv::Size(S, S), 0, 0, cv::INTER_AREA);
    out.image = FromMat255(warped);
    out.transform = WorkingToAligned(c, S, axes);
  } catch (const cv::Exception& e) {
    return absl::InternalError(absl::StrCat("AlignFfhq: ", e.what()));
  }
  return out;
}

}  // namespace i2s

#include "server/imaging/align.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <fstream>
#include <mutex>
#include <opencv2/core.hpp>
#include <opencv2/face.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/objdetect.hpp>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "server/engine/mtcnn.h"
#include "server/imaging/image_io.h"

namespace i2s {
namespace {

Point2 operator+(Point2 a, Point2 b) { return {a.x + b.x, a.y + b.y}; }
Point2 operator-(Point2 a, Point2 b) { return {a.x - b.x, a.y - b.y}; }
Point2 operator*(Point2 a, double s) { return {a.x * s, a.y * s}; }
double Cross(Point2 a, Point2 b) { return a.x * b.y - a.y * b.x; }
double Norm(Point2 a) { return std::hypot(a.x, a.y); }
Point2 Mid(Point2 a, Point2 b) { return (a + b) * 0.5; }
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

// ---------------------------------------------------------------------- detection

namespace {

// Eye centres and mouth centre relative to a Haar frontal-face box (x, y as fractions of
// its width and height), used where the eye or smile cascade finds nothing. Measured on
// python3-skimage's astronaut against hand-placed landmarks (tests/README of align_test).
constexpr double kEyeX[2] = {0.315, 0.685};
constexpr double kEyeY = 0.395;
constexpr double kMouthY = 0.76;
// Mouth width / eye distance, for corners around an estimated mouth centre (only their
// mean enters the FFHQ quad).
constexpr double kMouthWidthOverEyes = 0.95;

// float RGB [3, H, W] in [0, 1] -> 8-bit cv::Mat converted by `code` (from RGB).
cv::Mat ToMat8(const torch::Tensor& image, int code) {
  torch::Tensor hwc = UnitImageToRgb8(image);
  cv::Mat rgb(static_cast<int>(hwc.size(0)), static_cast<int>(hwc.size(1)), CV_8UC3,
              hwc.data_ptr<uint8_t>());
  cv::Mat out;
  cv::cvtColor(rgb, out, code);  // a new buffer: `hwc` goes away
  return out;
}

cv::Mat ToGray8(const torch::Tensor& image) { return ToMat8(image, cv::COLOR_RGB2GRAY); }
cv::Mat ToBgr8(const torch::Tensor& image) { return ToMat8(image, cv::COLOR_RGB2BGR); }

Point2 Apply2x3(const cv::Mat& m, Point2 p) {
  return {m.at<double>(0, 0) * p.x + m.at<double>(0, 1) * p.y + m.at<double>(0, 2),
          m.at<double>(1, 0) * p.x + m.at<double>(1, 1) * p.y + m.at<double>(1, 2)};
}

Point2 Center(const cv::Rect& r) { return {r.x + r.width / 2.0 - 0.5, r.y + r.height / 2.0 - 0.5}; }

// The eye centre inside an eye cascade's box: the box centre is biased by eyebrows and lids,
// so the darkest spot of the smoothed middle of the box (the iris and pupil) is taken, as
// the intensity-weighted centre of the darkest tenth around it.
Point2 Pupil(const cv::Mat& gray, const cv::Rect& eye) {
  const cv::Rect core(eye.x + int(0.2 * eye.width), eye.y + int(0.3 * eye.height),
                      std::max(1, int(0.6 * eye.width)), std::max(1, int(0.5 * eye.height)));
  cv::Mat region;
  gray(core).convertTo(region, CV_32F);
  const double sigma = std::max(1.0, eye.width / 12.0);
  cv::GaussianBlur(region, region, cv::Size(0, 0), sigma);
  double lo, hi;
  cv::minMaxLoc(region, &lo, &hi);
  if (hi - lo < 8) return Center(eye);  // flat: nothing to go by
  const double cut = lo + 0.1 * (hi - lo);
  double sx = 0, sy = 0, sw = 0;
  for (int y = 0; y < region.rows; ++y) {
    const float* row = region.ptr<float>(y);
    for (int x = 0; x < region.cols; ++x) {
      if (row[x] <= cut) {
        const double w = cut - row[x] + 1e-3;
        sx += w * x, sy += w * y, sw += w;
      }
    }
  }
  return {core.x + sx / sw, core.y + sy / sw};
}

// The largest of `rects` whose centre satisfies `keep`, or -1.
template <typename Keep>
int Largest(const std::vector<cv::Rect>& rects, Keep keep) {
  int best = -1;
  for (int i = 0; i < static_cast<int>(rects.size()); ++i) {
    if (keep(rects[i]) && (best < 0 || rects[i].area() > rects[best].area())) best = i;
  }
  return best;
}

}  // namespace

struct FaceDetector::Impl {
  FaceDetectorOptions options;
  mutable std::mutex mu;  // OpenCV's cascades and networks keep state per call
  mutable cv::CascadeClassifier face, eye, eye_glasses, smile;
  cv::Ptr<cv::FaceDetectorYN> yunet;
  cv::Ptr<cv::face::Facemark> facemark;
  std::string description;

  // Haar pass on an upright gray image: the faces, then eyes and mouth inside each; the
  // most confident face. False when there is no face at all.
  bool DetectUpright(const cv::Mat& gray, FaceDetection* d) const;
  // Eyes and mouth inside face box `f` (`votes` neighbouring windows agreed on it).
  void Examine(const cv::Mat& gray, const cv::Rect& f, int votes, FaceDetection* d) const;
  absl::StatusOr<FaceDetection> DetectHaar(const torch::Tensor& image) const;
  absl::StatusOr<FaceDetection> DetectYunet(const torch::Tensor& image) const;
  absl::StatusOr<FaceDetection> DetectMtcnn(const torch::Tensor& image) const;
  std::unique_ptr<Mtcnn> mtcnn;  // set: MTCNN instead of the cascades
};

FaceDetector::FaceDetector(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FaceDetector::~FaceDetector() = default;
std::string FaceDetector::description() const { return impl_->description; }

absl::StatusOr<std::unique_ptr<FaceDetector>> FaceDetector::Create(
    const FaceDetectorOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  if (!options.mtcnn_dir.empty()) {
    if (!options.landmark_model.empty()) {
      return absl::InvalidArgumentError(
          "a landmark model and MTCNN are alternatives: MTCNN finds its own landmarks");
    }
    ASSIGN_OR_RETURN(impl->mtcnn, Mtcnn::Load(options.mtcnn_dir));
    impl->description = absl::StrCat("mtcnn (", options.mtcnn_dir, ", ",
                                     impl->mtcnn->fingerprint().substr(0, 19), ")");
    return std::unique_ptr<FaceDetector>(new FaceDetector(std::move(impl)));
  }
  auto load = [&](cv::CascadeClassifier& c, const char* name) -> absl::Status {
    const std::string path = absl::StrCat(options.cascade_dir, "/", name);
    if (!std::ifstream(path).good()) {
      return absl::NotFoundError(
          absl::StrCat(path,
                       ": Haar cascade not found (Debian's opencv-data installs them under "
                       "/usr/share/opencv4/haarcascades)"));
    }
    try {
      if (!c.load(path)) return absl::InvalidArgumentError(absl::StrCat(path, ": not a cascade"));
    } catch (const cv::Exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": not a cascade: ", e.what()));
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(load(impl->face, "haarcascade_frontalface_default.xml"));
  RETURN_IF_ERROR(load(impl->eye, "haarcascade_eye.xml"));
  RETURN_IF_ERROR(load(impl->eye_glasses, "haarcascade_eye_tree_eyeglasses.xml"));
  RETURN_IF_ERROR(load(impl->smile, "haarcascade_smile.xml"));
  impl->description = absl::StrCat("haar cascades (", options.cascade_dir, ")");
  const std::string& model = options.landmark_model;
  if (!model.empty()) {
    if (!std::ifstream(model).good()) {
      return absl::NotFoundError(absl::StrCat(model, ": landmark model not found"));
    }
    try {
      if (absl::EndsWithIgnoreCase(model, ".onnx")) {
        impl->yunet = cv::FaceDetectorYN::create(model, "", cv::Size(320, 320), 0.6f, 0.3f, 50);
        if (impl->yunet.empty()) {
          return absl::InvalidArgumentError(absl::StrCat(model, ": not a YuNet face detector"));
        }
        impl->description = absl::StrCat("yunet (", model, "), then ", impl->description);
      } else {
        cv::face::FacemarkLBF::Params params;
        params.verbose = false;
        cv::Ptr<cv::face::FacemarkLBF> lbf = cv::face::FacemarkLBF::create(params);
        lbf->loadModel(model);
        impl->facemark = lbf;
        impl->description = absl::StrCat("facemark-lbf (", model, ") in ", impl->description);
      }
    } catch (const cv::Exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(
          model,
          ": cannot load the landmark model (a YuNet .onnx or a Facemark LBF .yaml): ", e.what()));
    }
  }
  return std::unique_ptr<FaceDetector>(new FaceDetector(std::move(impl)));
}

// The largest face MTCNN finds.
absl::StatusOr<FaceDetection> FaceDetector::Impl::DetectMtcnn(const torch::Tensor& image) const {
  ASSIGN_OR_RETURN(std::vector<MtcnnFace> faces, mtcnn->Detect(image));
  if (faces.empty()) return absl::NotFoundError("image: no face found");
  const MtcnnFace& f = faces[0];
  std::vector<Point2> points;
  for (const auto& p : f.landmarks) points.push_back({p[0], p[1]});
  FaceDetection d;
  ASSIGN_OR_RETURN(d.landmarks, FaceLandmarksFromPoints(points, "mtcnn landmarks"));
  d.confidence = f.confidence;
  d.method = "mtcnn";
  d.faces_found = static_cast<int>(faces.size());
  d.face_box = {Point2{f.box[0], f.box[1]}, Point2{f.box[2], f.box[1]}, Point2{f.box[2], f.box[3]},
                Point2{f.box[0], f.box[3]}};
  return d;
}

bool FaceDetector::Impl::DetectUpright(const cv::Mat& gray, FaceDetection* d) const {
  std::vector<cv::Rect> faces;
  std::vector<int> votes;
  const int min_side = std::min(gray.cols, gray.rows);
  const int min_face = std::max(24, min_side / 12);
  face.detectMultiScale(gray, faces, votes, 1.1, 3, 0, cv::Size(min_face, min_face));
  if (faces.empty()) return false;
  // The candidates with the most votes (at most kCandidates) are looked at closely; the
  // one with the most confidence wins, the larger on a tie.
  constexpr int kCandidates = 6;
  std::vector<int> order(faces.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return votes[a] > votes[b]; });
  if (order.size() > kCandidates) order.resize(kCandidates);
  bool any = false;
  for (int fi : order) {
    FaceDetection c;
    Examine(gray, faces[fi], votes[fi], &c);
    c.faces_found = static_cast<int>(faces.size());
    if (!any || c.confidence > d->confidence + 1e-9 ||
        (std::abs(c.confidence - d->confidence) <= 1e-9 &&
         faces[fi].area() >
             (d->face_box[2].x - d->face_box[0].x) * (d->face_box[2].y - d->face_box[0].y))) {
      *d = c;
      any = true;
    }
  }
  return any;
}

void FaceDetector::Impl::Examine(const cv::Mat& gray, const cv::Rect& f, int votes,
                                 FaceDetection* d) const {
  d->face_box = {Point2{double(f.x), double(f.y)}, Point2{double(f.x), double(f.br().y)},
                 Point2{double(f.br().x), double(f.br().y)}, Point2{double(f.br().x), double(f.y)}};
  const double fw = f.width, fh = f.height;
  double confidence = 0.4 * std::min(1.0, votes / 20.0);

  // Eyes: in the upper part of the face, one on each side of its middle.
  const cv::Rect upper(f.x, f.y + int(0.15 * fh), f.width, int(0.45 * fh));
  Point2 eyes[2] = {{f.x + kEyeX[0] * fw, f.y + kEyeY * fh},
                    {f.x + kEyeX[1] * fw, f.y + kEyeY * fh}};
  bool found[2] = {false, false};
  for (cv::CascadeClassifier* cascade : {&eye, &eye_glasses}) {
    std::vector<cv::Rect> cands;
    cascade->detectMultiScale(gray(upper), cands, 1.05, 3, 0,
                              cv::Size(int(fw * 0.1), int(fw * 0.1)),
                              cv::Size(int(fw * 0.4), int(fw * 0.4)));
    for (cv::Rect& r : cands) r += upper.tl();
    for (int side = 0; side < 2; ++side) {
      if (found[side]) continue;
      const int i = Largest(cands, [&](const cv::Rect& r) {
        const double cx = (Center(r).x - f.x) / fw;
        return side == 0 ? (cx > 0.12 && cx < 0.48) : (cx > 0.52 && cx < 0.88);
      });
      if (i >= 0) {
        eyes[side] = Pupil(gray, cands[i]);
        found[side] = true;
      }
    }
    if (found[0] && found[1]) break;
  }
  confidence += 0.2 * found[0] + 0.2 * found[1];
  const Point2 eye_avg = Mid(eyes[0], eyes[1]);
  const Point2 e2e = eyes[1] - eyes[0];

  // Mouth: the smile cascade in the lower part, accepted where a mouth can be.
  Point2 mouth = {f.x + 0.5 * fw, f.y + kMouthY * fh};
  {
    const int top = f.y + int(0.55 * fh);
    const cv::Rect lower(f.x + int(0.15 * fw), top, int(0.7 * fw),
                         std::min(int(0.45 * fh), gray.rows - top));
    std::vector<cv::Rect> cands;
    if (lower.height > 8) {
      smile.detectMultiScale(gray(lower), cands, 1.1, 12, 0,
                             cv::Size(int(fw * 0.25), int(fh * 0.1)));
    }
    for (cv::Rect& r : cands) r += lower.tl();
    const double eye_dist = Norm(e2e);
    const int i = Largest(cands, [&](const cv::Rect& r) {
      const Point2 m = Center(r) - eye_avg;
      const double below = Cross(e2e, m) / eye_dist;  // distance below the eye line
      return below > 0.6 * eye_dist && below < 1.5 * eye_dist;
    });
    if (i >= 0) {
      mouth = Center(cands[i]);
      confidence += 0.2;
    }
  }
  const Point2 half = e2e * (0.5 * kMouthWidthOverEyes);
  d->landmarks = {eyes[0], eyes[1], mouth - half, mouth + half};
  d->confidence = confidence;
  d->method = "haar";
}

absl::StatusOr<FaceDetection> FaceDetector::Impl::DetectHaar(const torch::Tensor& image) const {
  cv::Mat gray = ToGray8(image);
  // Detection works on at most 1024 pixels on the long side (cascades need no more).
  const double scale = std::min(1.0, 1024.0 / std::max(gray.cols, gray.rows));
  if (scale < 1) {
    cv::resize(gray, gray, cv::Size(), scale, scale, cv::INTER_AREA);
  }
  cv::equalizeHist(gray, gray);
  const cv::Point2f centre(gray.cols / 2.0f, gray.rows / 2.0f);
  // Rotations are tried until a face with both eyes is found; else the most confident.
  constexpr double kConfident = 0.75;
  std::optional<FaceDetection> best;
  for (double angle : options.rotations) {
    cv::Mat rotated = gray, forward;
    if (angle != 0) {
      forward = cv::getRotationMatrix2D(centre, angle, 1.0);
      // Grow the canvas so no corner of the photo is lost.
      const double c = std::abs(std::cos(angle * M_PI / 180)),
                   s = std::abs(std::sin(angle * M_PI / 180));
      const int w = int(gray.cols * c + gray.rows * s + 0.5),
                h = int(gray.cols * s + gray.rows * c + 0.5);
      forward.at<double>(0, 2) += (w - gray.cols) / 2.0;
      forward.at<double>(1, 2) += (h - gray.rows) / 2.0;
      cv::warpAffine(gray, rotated, forward, cv::Size(w, h), cv::INTER_LINEAR,
                     cv::BORDER_REPLICATE);
    }
    FaceDetection d;
    if (!DetectUpright(rotated, &d)) continue;
    cv::Mat back = cv::Mat::eye(2, 3, CV_64F);
    if (angle != 0) cv::invertAffineTransform(forward, back);
    auto to_photo = [&](Point2 p) {
      const Point2 q = Apply2x3(back, p);
      return Point2{(q.x + 0.5) / scale - 0.5, (q.y + 0.5) / scale - 0.5};
    };
    for (Point2* p : {&d.landmarks.eye_left, &d.landmarks.eye_right, &d.landmarks.mouth_left,
                      &d.landmarks.mouth_right}) {
      *p = to_photo(*p);
    }
    for (Point2& p : d.face_box) p = to_photo(p);
    d.rotation_degrees = angle;
    if (!best || d.confidence > best->confidence) best = d;
    if (best->confidence >= kConfident) break;
  }
  if (!best) return absl::NotFoundError("image: no face found");
  return *best;
}

absl::StatusOr<FaceDetection> FaceDetector::Impl::DetectYunet(const torch::Tensor& image) const {
  cv::Mat bgr = ToBgr8(image);
  yunet->setInputSize(bgr.size());
  cv::Mat faces;
  yunet->detect(bgr, faces);
  if (faces.empty() || faces.rows == 0) return absl::NotFoundError("image: no face found");
  // Rows: x, y, w, h, then (x, y) of right eye, left eye, nose tip, right and left mouth
  // corners, then the score. The largest face wins.
  int best = 0;
  for (int i = 1; i < faces.rows; ++i) {
    if (faces.at<float>(i, 2) * faces.at<float>(i, 3) >
        faces.at<float>(best, 2) * faces.at<float>(best, 3)) {
      best = i;
    }
  }
  auto at = [&](int k) { return Point2{faces.at<float>(best, k), faces.at<float>(best, k + 1)}; };
  std::vector<Point2> five = {at(4), at(6), at(8), at(10), at(12)};
  ASSIGN_OR_RETURN(FaceLandmarks lm, FaceLandmarksFromPoints(five, "yunet landmarks"));
  FaceDetection d;
  d.landmarks = lm;
  d.confidence = std::clamp<double>(faces.at<float>(best, 14), 0, 1);
  d.method = "yunet";
  d.faces_found = faces.rows;
  const double x = faces.at<float>(best, 0), y = faces.at<float>(best, 1);
  const double w = faces.at<float>(best, 2), h = faces.at<float>(best, 3);
  d.face_box = {Point2{x, y}, Point2{x, y + h}, Point2{x + w, y + h}, Point2{x + w, y}};
  return d;
}

absl::StatusOr<FaceDetection> FaceDetector::Detect(const torch::Tensor& image,
                                                   double min_confidence) const {
  ASSIGN_OR_RETURN(FaceDetection d, DetectAny(image));
  if (d.confidence < min_confidence) {
    return absl::NotFoundError(
        absl::StrFormat("image: no face found (the best candidate has confidence %.2f, below "
                        "the minimum %.2f)",
                        d.confidence, min_confidence));
  }
  return d;
}

absl::StatusOr<FaceDetection> FaceDetector::DetectAny(const torch::Tensor& image) const {
  if (!image.defined() || image.dim() != 3 || image.size(0) != 3 || image.size(1) < 1 ||
      image.size(2) < 1) {
    return absl::InvalidArgumentError("image: expected a float RGB image [3, H, W]");
  }
  std::lock_guard<std::mutex> lock(impl_->mu);
  try {
    if (impl_->mtcnn != nullptr) return impl_->DetectMtcnn(image);
    if (!impl_->yunet.empty()) return impl_->DetectYunet(image);
    ASSIGN_OR_RETURN(FaceDetection d, impl_->DetectHaar(image));
    if (!impl_->facemark.empty() && d.rotation_degrees == 0) {
      // 68 landmarks inside the face box found upright.
      cv::Mat bgr = ToBgr8(image);
      const cv::Rect box(cv::Point(int(d.face_box[0].x), int(d.face_box[0].y)),
                         cv::Point(int(d.face_box[2].x), int(d.face_box[2].y)));
      std::vector<cv::Rect> faces = {box};
      std::vector<std::vector<cv::Point2f>> shapes;
      if (impl_->facemark->fit(bgr, faces, shapes) && !shapes.empty() && shapes[0].size() == 68) {
        std::vector<Point2> pts;
        for (const auto& p : shapes[0]) pts.push_back({p.x, p.y});
        auto lm = FaceLandmarksFromPoints(pts, "facemark landmarks");
        if (lm.ok()) {
          d.landmarks = *lm;
          d.confidence = 0.9;
          d.method = "facemark-lbf";
        }
      }
    }
    return d;
  } catch (const cv::Exception& e) {
    return absl::InternalError(absl::StrCat("face detection: ", e.what()));
  }
}

}  // namespace i2s

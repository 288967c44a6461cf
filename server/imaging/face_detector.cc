#include "server/imaging/face_detector.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
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

// Eye centres and mouth centre relative to a Haar frontal-face box (x, y as fractions of
// its width and height), used where the eye or smile cascade finds nothing. Measured on
// python3-skimage's astronaut against hand-placed landmarks (tests/README of align_test).
constexpr double kEyeX[2] = {0.315, 0.685};
constexpr double kEyeY = 0.395;
constexpr double kMouthY = 0.76;
// Mouth width / eye distance, for corners around an estimated mouth centre (only their
// mean enters the FFHQ quad).
constexpr double kMouthWidthOverEyes = 0.95;
// Where the cascades put the nose tip: this fraction of the way from the eye centre to the
// mouth centre (it only fills the fifth landmark of AlignFaceResponse.faces).
constexpr double kNoseAlongEyesToMouth = 0.6;

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

  // Haar pass on an upright gray image: the faces (the kMaxFaces with the most votes),
  // then eyes and mouth inside each. Empty when there is no face at all.
  std::vector<FaceDetection> DetectUpright(const cv::Mat& gray) const;
  // Eyes and mouth inside face box `f` (`votes` neighbouring windows agreed on it).
  void Examine(const cv::Mat& gray, const cv::Rect& f, int votes, FaceDetection* d) const;
  // Each returns every face it sees, in no particular order (empty: none).
  std::vector<FaceDetection> DetectHaar(const torch::Tensor& image) const;
  void FitFacemark(const torch::Tensor& image, std::vector<FaceDetection>* faces) const;
  absl::StatusOr<std::vector<FaceDetection>> DetectYunet(const torch::Tensor& image) const;
  absl::StatusOr<std::vector<FaceDetection>> DetectMtcnn(const torch::Tensor& image) const;
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

std::string ResolveMtcnnDir(const std::string& flag, bool other_chosen) {
  if (flag == "none") return "";
  if (flag != "auto") return flag;
  if (other_chosen) return "";
  const char* env = std::getenv("I2S_MTCNN_DIR");
  if (env != nullptr && *env != '\0') return env;
  if (std::ifstream(absl::StrCat(kMtcnnInstallDir, "/pnet.pt")).good()) return kMtcnnInstallDir;
  return "";
}

double FaceDetection::Area() const {
  // The shoelace formula: the box may be turned.
  double twice = 0;
  for (int i = 0; i < 4; ++i) twice += Cross(face_box[i], face_box[(i + 1) % 4]);
  return std::abs(twice) / 2;
}

absl::StatusOr<std::vector<FaceDetection>> FaceDetector::Impl::DetectMtcnn(
    const torch::Tensor& image) const {
  ASSIGN_OR_RETURN(std::vector<MtcnnFace> found, mtcnn->Detect(image));
  std::vector<FaceDetection> faces;
  for (const MtcnnFace& f : found) {
    std::vector<Point2> points;
    for (const auto& p : f.landmarks) points.push_back({p[0], p[1]});
    FaceDetection d;
    ASSIGN_OR_RETURN(d.landmarks, FaceLandmarksFromPoints(points, "mtcnn landmarks"));
    d.nose = points[2];
    d.confidence = f.confidence;
    d.method = "mtcnn";
    d.face_box = {Point2{f.box[0], f.box[1]}, Point2{f.box[0], f.box[3]},
                  Point2{f.box[2], f.box[3]}, Point2{f.box[2], f.box[1]}};
    faces.push_back(d);
  }
  return faces;
}

std::vector<FaceDetection> FaceDetector::Impl::DetectUpright(const cv::Mat& gray) const {
  std::vector<cv::Rect> found;
  std::vector<int> votes;
  const int min_side = std::min(gray.cols, gray.rows);
  const int min_face = std::max(24, min_side / 12);
  face.detectMultiScale(gray, found, votes, 1.1, 3, 0, cv::Size(min_face, min_face));
  // The candidates with the most votes are looked at closely.
  std::vector<int> order(found.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return votes[a] > votes[b]; });
  if (order.size() > static_cast<size_t>(kMaxFaces)) order.resize(kMaxFaces);
  std::vector<FaceDetection> faces;
  for (int fi : order) {
    FaceDetection c;
    Examine(gray, found[fi], votes[fi], &c);
    faces.push_back(c);
  }
  return faces;
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
  d->nose = eye_avg + (mouth - eye_avg) * kNoseAlongEyesToMouth;
  d->confidence = confidence;
  d->method = "haar";
}

std::vector<FaceDetection> FaceDetector::Impl::DetectHaar(const torch::Tensor& image) const {
  cv::Mat gray = ToGray8(image);
  // Detection works on at most 1024 pixels on the long side (cascades need no more).
  const double scale = std::min(1.0, 1024.0 / std::max(gray.cols, gray.rows));
  if (scale < 1) {
    cv::resize(gray, gray, cv::Size(), scale, scale, cv::INTER_AREA);
  }
  cv::equalizeHist(gray, gray);
  const cv::Point2f centre(gray.cols / 2.0f, gray.rows / 2.0f);
  // Rotations are tried until a face with both eyes is found; the pass with the most
  // confident face wins, and all of its faces are kept.
  constexpr double kConfident = 0.75;
  std::vector<FaceDetection> best;
  double best_confidence = -1;
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
    std::vector<FaceDetection> faces = DetectUpright(rotated);
    if (faces.empty()) continue;
    cv::Mat back = cv::Mat::eye(2, 3, CV_64F);
    if (angle != 0) cv::invertAffineTransform(forward, back);
    auto to_photo = [&](Point2 p) {
      const Point2 q = Apply2x3(back, p);
      return Point2{(q.x + 0.5) / scale - 0.5, (q.y + 0.5) / scale - 0.5};
    };
    double most = 0;
    for (FaceDetection& d : faces) {
      for (Point2* p : {&d.landmarks.eye_left, &d.landmarks.eye_right, &d.landmarks.mouth_left,
                        &d.landmarks.mouth_right, &d.nose}) {
        *p = to_photo(*p);
      }
      for (Point2& p : d.face_box) p = to_photo(p);
      d.rotation_degrees = angle;
      most = std::max(most, d.confidence);
    }
    if (most > best_confidence) {
      best = std::move(faces);
      best_confidence = most;
    }
    if (best_confidence >= kConfident) break;
  }
  return best;
}

// 68 landmarks inside each face box the cascades found upright.
void FaceDetector::Impl::FitFacemark(const torch::Tensor& image,
                                     std::vector<FaceDetection>* faces) const {
  std::vector<cv::Rect> boxes;
  std::vector<FaceDetection*> upright;
  for (FaceDetection& d : *faces) {
    if (d.rotation_degrees != 0) continue;
    boxes.emplace_back(cv::Point(int(d.face_box[0].x), int(d.face_box[0].y)),
                       cv::Point(int(d.face_box[2].x), int(d.face_box[2].y)));
    upright.push_back(&d);
  }
  if (boxes.empty()) return;
  cv::Mat bgr = ToBgr8(image);
  std::vector<std::vector<cv::Point2f>> shapes;
  if (!facemark->fit(bgr, boxes, shapes) || shapes.size() != boxes.size()) return;
  for (size_t i = 0; i < shapes.size(); ++i) {
    if (shapes[i].size() != 68) continue;
    std::vector<Point2> pts;
    for (const auto& p : shapes[i]) pts.push_back({p.x, p.y});
    auto lm = FaceLandmarksFromPoints(pts, "facemark landmarks");
    if (!lm.ok()) continue;
    upright[i]->landmarks = *lm;
    upright[i]->nose = pts[30];
    upright[i]->confidence = 0.9;
    upright[i]->method = "facemark-lbf";
  }
}

absl::StatusOr<std::vector<FaceDetection>> FaceDetector::Impl::DetectYunet(
    const torch::Tensor& image) const {
  cv::Mat bgr = ToBgr8(image);
  yunet->setInputSize(bgr.size());
  cv::Mat rows;
  yunet->detect(bgr, rows);
  // Rows: x, y, w, h, then (x, y) of right eye, left eye, nose tip, right and left mouth
  // corners, then the score.
  std::vector<FaceDetection> faces;
  for (int i = 0; i < rows.rows; ++i) {
    auto at = [&](int k) { return Point2{rows.at<float>(i, k), rows.at<float>(i, k + 1)}; };
    std::vector<Point2> five = {at(4), at(6), at(8), at(10), at(12)};
    auto lm = FaceLandmarksFromPoints(five, "yunet landmarks");
    if (!lm.ok()) continue;  // a degenerate face: not one to align
    FaceDetection d;
    d.landmarks = *lm;
    d.nose = five[2];
    d.confidence = std::clamp<double>(rows.at<float>(i, 14), 0, 1);
    d.method = "yunet";
    const double x = rows.at<float>(i, 0), y = rows.at<float>(i, 1);
    const double w = rows.at<float>(i, 2), h = rows.at<float>(i, 3);
    d.face_box = {Point2{x, y}, Point2{x, y + h}, Point2{x + w, y + h}, Point2{x + w, y}};
    faces.push_back(d);
  }
  return faces;
}

absl::StatusOr<FaceDetection> FaceDetector::Detect(const torch::Tensor& image,
                                                   double min_confidence) const {
  ASSIGN_OR_RETURN(std::vector<FaceDetection> faces, DetectAll(image, min_confidence));
  return faces.front();
}

absl::StatusOr<std::vector<FaceDetection>> FaceDetector::DetectAll(const torch::Tensor& image,
                                                                   double min_confidence) const {
  ASSIGN_OR_RETURN(std::vector<FaceDetection> seen, DetectAny(image));
  std::vector<FaceDetection> faces;
  double best = -1;
  for (const FaceDetection& d : seen) {
    best = std::max(best, d.confidence);
    if (d.confidence >= min_confidence) faces.push_back(d);
  }
  if (faces.empty()) {
    if (seen.empty()) return absl::NotFoundError("image: no face found");
    return absl::NotFoundError(
        absl::StrFormat("image: no face found (the best candidate has confidence %.2f, below "
                        "the minimum %.2f)",
                        best, min_confidence));
  }
  // Largest first; on equal areas the more confident.
  std::stable_sort(faces.begin(), faces.end(), [](const FaceDetection& a, const FaceDetection& b) {
    const double aa = a.Area(), ab = b.Area();
    return aa != ab ? aa > ab : a.confidence > b.confidence;
  });
  if (faces.size() > static_cast<size_t>(kMaxFaces)) faces.resize(kMaxFaces);
  for (FaceDetection& d : faces) d.faces_found = static_cast<int>(seen.size());
  return faces;
}

absl::StatusOr<std::vector<FaceDetection>> FaceDetector::DetectAny(
    const torch::Tensor& image) const {
  if (!image.defined() || image.dim() != 3 || image.size(0) != 3 || image.size(1) < 1 ||
      image.size(2) < 1) {
    return absl::InvalidArgumentError("image: expected a float RGB image [3, H, W]");
  }
  std::lock_guard<std::mutex> lock(impl_->mu);
  try {
    if (impl_->mtcnn != nullptr) return impl_->DetectMtcnn(image);
    if (!impl_->yunet.empty()) return impl_->DetectYunet(image);
    std::vector<FaceDetection> faces = impl_->DetectHaar(image);
    if (!impl_->facemark.empty()) impl_->FitFacemark(image, &faces);
    return faces;
  } catch (const cv::Exception& e) {
    return absl::InternalError(absl::StrCat("face detection: ", e.what()));
  }
}

}  // namespace i2s

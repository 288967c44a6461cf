#include "server/imaging/align.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "server/imaging/face_detector.h"
#include "server/imaging/image_io.h"
#include "server/imaging/prepare.h"

namespace i2s {
namespace {

// Photos shipped by Debian's python3-skimage, which nobody here made.
constexpr char kAstronaut[] = "/usr/lib/python3/dist-packages/skimage/data/astronaut.png";
constexpr char kCoffee[] = "/usr/lib/python3/dist-packages/skimage/data/coffee.png";
constexpr char kChelsea[] = "/usr/lib/python3/dist-packages/skimage/data/chelsea.png";

// The astronaut's landmarks, placed by hand on 8x enlargements of the 512x512 photo
// (iris centres and the corners of the lips; about +-1.5 px).
const FaceLandmarks kAstronautLandmarks = {
    {203.5, 101.0}, {246.5, 103.1}, {202.5, 140.0}, {245.0, 140.6}};

double Dist(Point2 a, Point2 b) { return std::hypot(a.x - b.x, a.y - b.y); }

torch::Tensor LoadOrSkip(const char* path) {
  if (!std::filesystem::exists(path)) return {};
  auto image = ReadRgbImage(path);
  EXPECT_TRUE(image.ok()) << image.status();
  return image.ok() ? *image : torch::Tensor();
}

// A similarity of the plane: rotate by `degrees` (counter-clockwise on screen) and scale
// about `center`, then move by (dx, dy). As a cv 2x3 matrix.
cv::Mat Motion(Point2 center, double degrees, double scale, double dx, double dy) {
  cv::Mat m = cv::getRotationMatrix2D(cv::Point2f(center.x, center.y), degrees, scale);
  m.at<double>(0, 2) += dx;
  m.at<double>(1, 2) += dy;
  return m;
}

Point2 Move(const cv::Mat& m, Point2 p) {
  return {m.at<double>(0, 0) * p.x + m.at<double>(0, 1) * p.y + m.at<double>(0, 2),
          m.at<double>(1, 0) * p.x + m.at<double>(1, 1) * p.y + m.at<double>(1, 2)};
}

FaceLandmarks Move(const cv::Mat& m, const FaceLandmarks& lm) {
  return {Move(m, lm.eye_left), Move(m, lm.eye_right), Move(m, lm.mouth_left),
          Move(m, lm.mouth_right)};
}

// `image` [3, H, W] moved by `m` onto a w x h canvas (edges reflected, so the copy has no
// black corners for a detector to trip on).
torch::Tensor Warp(const torch::Tensor& image, const cv::Mat& m, int w, int h) {
  torch::Tensor hwc = image.permute({1, 2, 0}).contiguous();
  cv::Mat src(int(hwc.size(0)), int(hwc.size(1)), CV_32FC3, hwc.data_ptr<float>());
  cv::Mat dst;
  cv::warpAffine(src, dst, m, cv::Size(w, h), cv::INTER_LINEAR, cv::BORDER_REFLECT_101);
  return torch::from_blob(dst.data, {h, w, 3}, torch::kFloat32).permute({2, 0, 1}).clone();
}

// A w x h black image with Gaussian dots at the landmarks: red left eye, green right eye,
// blue mouth corners.
torch::Tensor DotImage(const FaceLandmarks& lm, int w, int h, double sigma) {
  auto ys = torch::arange(h, torch::kFloat64).view({h, 1});
  auto xs = torch::arange(w, torch::kFloat64).view({1, w});
  auto dot = [&](Point2 p) {
    return torch::exp(-((xs - p.x).pow(2) + (ys - p.y).pow(2)) / (2 * sigma * sigma));
  };
  return torch::stack({dot(lm.eye_left), dot(lm.eye_right),
                       (dot(lm.mouth_left) + dot(lm.mouth_right)).clamp_max(1)})
      .to(torch::kFloat32);
}

// Intensity-weighted centre of channel `c` of [3, S, S], over columns [x0, x1).
Point2 Centroid(const torch::Tensor& image, int c, int x0, int x1) {
  torch::Tensor ch = image[c].slice(1, x0, x1).to(torch::kFloat64);
  ch = torch::where(ch > 0.05, ch, torch::zeros_like(ch));
  const int64_t h = ch.size(0), w = ch.size(1);
  auto ys = torch::arange(h, torch::kFloat64).view({h, 1});
  auto xs = torch::arange(w, torch::kFloat64).view({1, w});
  const double total = ch.sum().item<double>();
  return {(ch * xs).sum().item<double>() / total + x0, (ch * ys).sum().item<double>() / total};
}

TEST(FfhqQuadTest, FollowsThePublishedConstruction) {
  // Upright face, eye distance 40, eye-to-mouth 40: x = 2 * 40 along the eye line.
  const FaceLandmarks lm = {{100, 100}, {140, 100}, {105, 140}, {135, 140}};
  const FfhqQuad q = ComputeFfhqQuad(lm);
  EXPECT_DOUBLE_EQ(q.center.x, 120);
  EXPECT_DOUBLE_EQ(q.center.y, 104);  // eye centre + 0.1 * eye-to-mouth
  EXPECT_DOUBLE_EQ(q.size, 160);
  const Point2 expected[4] = {{40, 24}, {40, 184}, {200, 184}, {200, 24}};
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(q.corners[i].x, expected[i].x, 1e-9) << i;
    EXPECT_NEAR(q.corners[i].y, expected[i].y, 1e-9) << i;
  }
  // A long face: 1.8 * eye-to-mouth wins over 2 * eye distance.
  const FfhqQuad tall = ComputeFfhqQuad({{100, 100}, {120, 100}, {105, 160}, {115, 160}});
  EXPECT_NEAR(tall.size, 2 * 1.8 * 60, 1e-9);
}

TEST(FfhqQuadTest, EyesLandAtTheCanonicalPlaces) {
  // Upright, eye distance d, eye-to-mouth m (2d > 1.8m): the quad is 4d wide, so the eyes
  // sit S/4 apart around the middle, 0.1 m above the centre.
  const FaceLandmarks lm = {{300, 200}, {360, 200}, {310, 254}, {350, 254}};
  for (int size : {64, 256, 1024}) {
    const Similarity t = FfhqTransform(lm, size);
    const double v = size / 2.0 - 0.1 * 54 * size / (4 * 60.0) - 0.5;
    EXPECT_NEAR(t.Apply(lm.eye_left).x, size * 3 / 8.0 - 0.5, 1e-9);
    EXPECT_NEAR(t.Apply(lm.eye_right).x, size * 5 / 8.0 - 0.5, 1e-9);
    EXPECT_NEAR(t.Apply(lm.eye_left).y, v, 1e-9);
    EXPECT_NEAR(t.Apply(lm.eye_right).y, v, 1e-9);
    EXPECT_NEAR(t.Scale(), size / 240.0, 1e-12);
    EXPECT_NEAR(t.RotationDegrees(), 0, 1e-9);
    const Similarity back = t.Inverse();
    EXPECT_NEAR(back.Apply(t.Apply(lm.mouth_left)).x, lm.mouth_left.x, 1e-9);
    EXPECT_NEAR(back.Apply(t.Apply(lm.mouth_left)).y, lm.mouth_left.y, 1e-9);
  }
}

TEST(LandmarksTest, FiveAndSixtyEightPointLayouts) {
  std::vector<Point2> five = {{10, 10}, {30, 10}, {20, 20}, {12, 30}, {28, 30}};
  auto lm = FaceLandmarksFromPoints(five);
  ASSERT_TRUE(lm.ok()) << lm.status();
  EXPECT_DOUBLE_EQ(lm->eye_left.x, 10);
  EXPECT_DOUBLE_EQ(lm->mouth_right.x, 28);
  // Eyes given the other way round (the person's left first): put back upright.
  std::swap(five[0], five[1]);
  lm = FaceLandmarksFromPoints(five);
  ASSERT_TRUE(lm.ok());
  EXPECT_DOUBLE_EQ(lm->eye_left.x, 10);
  // 68 points: eyes are the means of 36..41 and 42..47, mouth corners 48 and 54.
  std::vector<Point2> pts(68, Point2{0, 50});
  for (int i = 36; i < 42; ++i) pts[i] = {9.0 + (i % 2) * 2, 10};  // mean x 10
  for (int i = 42; i < 48; ++i) pts[i] = {29.0 + (i % 2) * 2, 12};
  pts[48] = {12, 30};
  pts[54] = {28, 31};
  lm = FaceLandmarksFromPoints(pts);
  ASSERT_TRUE(lm.ok()) << lm.status();
  EXPECT_NEAR(lm->eye_left.x, 10, 1e-12);
  EXPECT_NEAR(lm->eye_right.y, 12, 1e-12);
  EXPECT_DOUBLE_EQ(lm->mouth_right.y, 31);
}

TEST(LandmarksTest, BadPointsNameTheField) {
  auto bad = FaceLandmarksFromPoints({{1, 2}, {3, 4}}, "align.landmarks");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(bad.status().message(), "align.landmarks: expected 5 points"))
      << bad.status();
  bad = FaceLandmarksFromPoints({{10, 10}, {10.5, 10}, {0, 0}, {10, 30}, {11, 30}}, "lm");
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "less than a pixel")) << bad.status();
  bad = FaceLandmarksFromPoints({{10, 10}, {30, 10}, {0, 0}, {5, 10}, {40, 10}}, "lm");
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "line through the eyes")) << bad.status();
  bad = FaceLandmarksFromPoints({{10, 10}, {1e300, 10}, {0, 0}, {5, 30}, {40, 30}}, "lm");
  EXPECT_TRUE(absl::StartsWith(bad.status().message(), "lm[1]: more than 1e6")) << bad.status();
  bad = FaceLandmarksFromPoints({{NAN, 10}, {30, 10}, {0, 0}, {5, 30}, {40, 30}}, "lm");
  EXPECT_TRUE(absl::StartsWith(bad.status().message(), "lm[0]: not a finite point"))
      << bad.status();
}

// Dots drawn at known landmarks, the face turned, scaled and moved: after alignment each dot
// is where the returned transform says (within a pixel), and that is FFHQ's canonical place.
TEST(AlignTest, DotsLandWhereTheTransformSays) {
  const FaceLandmarks upright = {{-20, 0}, {20, 0}, {-16, 38}, {16, 38}};
  struct Case {
    double degrees, scale, x, y;
    int out;
  };
  for (const Case& c :
       {Case{0, 3, 200, 150, 128}, Case{23, 2.5, 180, 170, 128}, Case{-67, 4, 230, 140, 64},
        Case{140, 1.5, 200, 150, 128}, Case{10, 12, 330, 160, 128}}) {
    SCOPED_TRACE(testing::Message() << "rotation " << c.degrees << " scale " << c.scale);
    const cv::Mat m = Motion({0, 0}, c.degrees, c.scale, c.x, c.y);
    const FaceLandmarks lm = Move(m, upright);
    const int w = c.scale > 10 ? 700 : 400, h = c.scale > 10 ? 750 : 300;
    torch::Tensor image = DotImage(lm, w, h, 1.2 * c.scale);
    AlignOptions options;
    options.output_size = c.out;
    // The quads reach past these canvases; FFHQ's padding would mirror the dots into the
    // crop, so the geometry is checked on black (PaddingHasNoHardEdge covers padding).
    options.padding = false;
    auto aligned = AlignFfhq(image, lm, options);
    ASSERT_TRUE(aligned.ok()) << aligned.status();
    ASSERT_EQ(aligned->image.sizes(), (std::vector<int64_t>{3, c.out, c.out}));
    const Similarity& t = aligned->transform;
    const Point2 seen[4] = {
        Centroid(aligned->image, 0, 0, c.out), Centroid(aligned->image, 1, 0, c.out),
        Centroid(aligned->image, 2, 0, c.out / 2), Centroid(aligned->image, 2, c.out / 2, c.out)};
    const Point2 where[4] = {lm.eye_left, lm.eye_right, lm.mouth_left, lm.mouth_right};
    const Similarity ideal = FfhqTransform(lm, c.out);
    for (int i = 0; i < 4; ++i) {
      SCOPED_TRACE(i);
      EXPECT_LT(Dist(seen[i], t.Apply(where[i])), 1.0);
      // The exact transform differs from the ideal one only by the shrink step's rounding.
      EXPECT_LT(Dist(t.Apply(where[i]), ideal.Apply(where[i])), 0.5);
    }
    // The eyes are level and S/4 apart, whatever the photo's rotation.
    EXPECT_NEAR(t.Apply(lm.eye_left).y, t.Apply(lm.eye_right).y, 1e-6);
    EXPECT_NEAR(t.Apply(lm.eye_right).x - t.Apply(lm.eye_left).x, c.out / 4.0, 0.05 * c.out / 64);
    EXPECT_NEAR(std::remainder(t.RotationDegrees() + c.degrees, 360), 0, 1e-6);  // turned back
  }
}

// Copies of a real photo turned, scaled and moved (their landmarks moved with them) align
// to the same crop.
TEST(AlignTest, MovedCopiesOfAPhotoAlignToTheSameCrop) {
  torch::Tensor photo = LoadOrSkip(kAstronaut);
  if (!photo.defined()) GTEST_SKIP() << kAstronaut << " missing (python3-skimage)";
  AlignOptions options;
  options.output_size = 128;
  auto reference = AlignFfhq(photo, kAstronautLandmarks, options);
  ASSERT_TRUE(reference.ok()) << reference.status();
  struct Case {
    double degrees, scale, dx, dy;
  };
  for (const Case& c : {Case{12, 1.0, 0, 0}, Case{-30, 0.8, 40, -20}, Case{0, 1.6, -60, 150},
                        Case{90, 0.6, 10, 10}}) {
    SCOPED_TRACE(testing::Message() << "rotation " << c.degrees << " scale " << c.scale);
    const cv::Mat m = Motion({256, 256}, c.degrees, c.scale, c.dx, c.dy);
    const int side = static_cast<int>(512 * std::max(1.0, c.scale));
    torch::Tensor moved = Warp(photo, m, side, side);
    auto aligned = AlignFfhq(moved, Move(m, kAstronautLandmarks), options);
    ASSERT_TRUE(aligned.ok()) << aligned.status();
    // The face (the middle half of the crop) matches; resampling twice blurs a little.
    auto middle = [](const torch::Tensor& t) { return t.slice(1, 32, 96).slice(2, 32, 96); };
    const double diff =
        (middle(aligned->image) - middle(reference->image)).abs().mean().item<double>();
    EXPECT_LT(diff, 0.03);
  }
}

TEST(AlignTest, PaddingHasNoHardEdge) {
  torch::Tensor photo = LoadOrSkip(kAstronaut);
  if (!photo.defined()) GTEST_SKIP() << kAstronaut << " missing (python3-skimage)";
  // The face moved to the top-left corner: FFHQ pads what the quad needs.
  const cv::Mat m = Motion({0, 0}, 0, 1.0, -150, -60);
  torch::Tensor moved = Warp(photo, m, 300, 300);
  const FaceLandmarks lm = Move(m, kAstronautLandmarks);
  AlignOptions options;
  options.output_size = 128;
  auto padded = AlignFfhq(moved, lm, options);
  ASSERT_TRUE(padded.ok()) << padded.status();
  options.padding = false;
  auto black = AlignFfhq(moved, lm, options);
  ASSERT_TRUE(black.ok()) << black.status();
  // Where the crop leaves the photo: an all-white photo aligned without padding.
  auto inside = AlignFfhq(torch::ones_like(moved), lm, options);
  ASSERT_TRUE(inside.ok()) << inside.status();
  const torch::Tensor outside = inside->image[0] < 0.001;
  const int64_t n_outside = outside.sum().item<int64_t>();
  EXPECT_GT(n_outside, 1000);  // the quad reaches well past the photo
  // Without padding that part is black; with padding it is filled, never black.
  const torch::Tensor brightness = padded->image.mean(0);
  EXPECT_EQ(black->image.mean(0).masked_select(outside).max().item<float>(), 0);
  EXPECT_GT(brightness.masked_select(outside).mean().item<float>(), 0.2);
  EXPECT_LT((brightness.masked_select(outside) < 0.005).sum().item<int64_t>(), n_outside / 100);
  // No hard edge where the photo ends: across that boundary neighbouring pixels differ
  // little with padding, a lot without.
  auto edge_step = [&](const torch::Tensor& image) {
    const torch::Tensor b = image.mean(0);
    const torch::Tensor cross_x = outside.slice(1, 1) != outside.slice(1, 0, -1);
    const torch::Tensor cross_y = outside.slice(0, 1) != outside.slice(0, 0, -1);
    const torch::Tensor dx = (b.slice(1, 1) - b.slice(1, 0, -1)).abs().masked_select(cross_x);
    const torch::Tensor dy = (b.slice(0, 1) - b.slice(0, 0, -1)).abs().masked_select(cross_y);
    return torch::cat({dx, dy}).mean().item<double>();
  };
  EXPECT_LT(edge_step(padded->image), 0.03);
  EXPECT_GT(edge_step(black->image), 0.1);
}

TEST(AlignTest, RejectsBadInput) {
  AlignOptions options;
  options.output_size = 0;
  torch::Tensor image = torch::zeros({3, 50, 50});
  EXPECT_EQ(AlignFfhq(image, kAstronautLandmarks, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.output_size = 64;
  EXPECT_EQ(AlignFfhq(torch::zeros({50, 50}), kAstronautLandmarks, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A face far outside the photo.
  const FaceLandmarks far = {{5000, 5000}, {5040, 5000}, {5005, 5040}, {5035, 5040}};
  auto outside = AlignFfhq(image, far, options);
  EXPECT_EQ(outside.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(outside.status().message(), "landmarks:")) << outside.status();
}

class DetectorTest : public testing::Test {
 protected:
  void SetUp() override {
    auto d = FaceDetector::Create({});
    if (!d.ok() && absl::IsNotFound(d.status())) GTEST_SKIP() << d.status() << " (opencv-data)";
    ASSERT_TRUE(d.ok()) << d.status();
    detector_ = *std::move(d);
  }
  std::unique_ptr<FaceDetector> detector_;
};

TEST_F(DetectorTest, FindsTheAstronautsFace) {
  torch::Tensor photo = LoadOrSkip(kAstronaut);
  if (!photo.defined()) GTEST_SKIP() << kAstronaut << " missing (python3-skimage)";
  auto found = detector_->Detect(photo);
  ASSERT_TRUE(found.ok()) << found.status();
  const FaceLandmarks& lm = found->landmarks;
  EXPECT_LT(Dist(lm.eye_left, kAstronautLandmarks.eye_left), 5);
  EXPECT_LT(Dist(lm.eye_right, kAstronautLandmarks.eye_right), 5);
  // Aligned from the detected landmarks, the hand-placed eyes land within a few pixels of
  // where aligning from the hand-placed landmarks puts them (FFHQ's canonical place).
  const int S = 256;
  AlignOptions options;
  options.output_size = S;
  auto aligned = AlignFfhq(photo, lm, options);
  ASSERT_TRUE(aligned.ok()) << aligned.status();
  const Similarity canonical = FfhqTransform(kAstronautLandmarks, S);
  for (Point2 eye : {kAstronautLandmarks.eye_left, kAstronautLandmarks.eye_right}) {
    EXPECT_LT(Dist(aligned->transform.Apply(eye), canonical.Apply(eye)), 4.0);
  }
  EXPECT_GE(found->confidence, 0.8);
  EXPECT_EQ(found->method, "haar");
}

TEST_F(DetectorTest, MovedCopiesOfTheAstronautAlignToTheSamePlace) {
  torch::Tensor photo = LoadOrSkip(kAstronaut);
  if (!photo.defined()) GTEST_SKIP() << kAstronaut << " missing (python3-skimage)";
  const int S = 256;
  struct Case {
    double degrees, scale, dx, dy;
  };
  for (const Case& c : {Case{10, 1.0, 0, 0}, Case{-25, 0.8, 30, -20}, Case{0, 1.5, -80, 40},
                        Case{35, 1.2, 20, 20}, Case{-45, 0.9, 0, 0}}) {
    SCOPED_TRACE(testing::Message() << "rotation " << c.degrees << " scale " << c.scale);
    const cv::Mat m = Motion({256, 256}, c.degrees, c.scale, c.dx, c.dy);
    const int side = static_cast<int>(512 * std::max(1.0, c.scale));
    torch::Tensor moved = Warp(photo, m, side, side);
    auto found = detector_->Detect(moved);
    ASSERT_TRUE(found.ok()) << found.status();
    AlignOptions options;
    options.output_size = S;
    auto aligned = AlignFfhq(moved, found->landmarks, options);
    ASSERT_TRUE(aligned.ok()) << aligned.status();
    const FaceLandmarks truth = Move(m, kAstronautLandmarks);
    const Similarity canonical = FfhqTransform(truth, S);
    for (Point2 eye : {truth.eye_left, truth.eye_right}) {
      EXPECT_LT(Dist(aligned->transform.Apply(eye), canonical.Apply(eye)), 6.0);
    }
  }
}

TEST_F(DetectorTest, PhotosWithoutAFaceAreNotFound) {
  for (const char* path : {kCoffee, kChelsea}) {
    torch::Tensor photo = LoadOrSkip(path);
    if (!photo.defined()) GTEST_SKIP() << path << " missing (python3-skimage)";
    auto found = detector_->Detect(photo);
    EXPECT_EQ(found.status().code(), absl::StatusCode::kNotFound) << path;
    EXPECT_TRUE(absl::StartsWith(found.status().message(), "image: no face found"))
        << found.status();
    // Asked for less certainty, the cascades' best guess comes back, marked as weak.
    auto weak = detector_->Detect(photo, 0.0);
    if (weak.ok()) {
      EXPECT_LT(weak->confidence, FaceDetector::kDefaultMinConfidence);
    }
  }
  auto noise = detector_->Detect(torch::rand({3, 200, 300}, torch::Generator()));
  EXPECT_EQ(noise.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(detector_->Detect(torch::zeros({3, 0, 5})).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(DetectorTest, PrepareImageAlignsOrFallsBack) {
  torch::Tensor coffee = LoadOrSkip(kCoffee);
  if (!coffee.defined()) GTEST_SKIP() << kCoffee << " missing (python3-skimage)";
  PrepareOptions p;
  p.size = 64;
  // No alignment: exactly the fit.
  auto plain = PrepareImage(coffee, p, detector_.get());
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->alignment.has_value());
  EXPECT_TRUE(torch::equal(plain->image, *FitToSquare(coffee, 64, FitMode::kCenterCrop)));
  // Automatic, no face: an error that says what to do, or the fit with its transform.
  p.mode = AlignMode::kAuto;
  auto refused = PrepareImage(coffee, p, detector_.get());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(refused.status().message(), p.no_face_hint)) << refused.status();
  p.fit_when_no_face = true;
  auto fitted = PrepareImage(coffee, p, detector_.get());
  ASSERT_TRUE(fitted.ok()) << fitted.status();
  EXPECT_TRUE(torch::equal(fitted->image, plain->image));
  const AlignmentInfo& info = *fitted->alignment;
  EXPECT_EQ(info.method, "none");
  // 600x400: the middle 400x400 (x from 100) becomes 64x64; pixel edges map to edges.
  EXPECT_NEAR(info.transform.Apply({99.5, -0.5}).x, -0.5, 1e-9);
  EXPECT_NEAR(info.transform.Apply({499.5, 399.5}).y, 63.5, 1e-9);
  EXPECT_NEAR(info.quad[2].x, 499.5, 1e-9);
  // Without a detector, AUTO is a precondition failure naming the field.
  auto none = PrepareImage(coffee, p, nullptr, "align");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StartsWith(none.status().message(), "align.mode:")) << none.status();
  // The record survives its JSON form.
  torch::Tensor photo = LoadOrSkip(kAstronaut);
  if (!photo.defined()) GTEST_SKIP() << kAstronaut << " missing (python3-skimage)";
  auto aligned = PrepareImage(photo, p, detector_.get());
  ASSERT_TRUE(aligned.ok()) << aligned.status();
  auto back = AlignmentInfoFromJson(AlignmentInfoToJson(*aligned->alignment));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->method, "haar");
  EXPECT_EQ(back->transform.m, aligned->alignment->transform.m);
  EXPECT_EQ(back->landmarks.mouth_right.y, aligned->alignment->landmarks.mouth_right.y);
  EXPECT_EQ(AlignmentOfLatentParams(LatentParamsWithAlignment(AlignmentInfoToJson(*back))),
            AlignmentInfoToJson(*back));
  EXPECT_EQ(AlignmentOfLatentParams(R"({"lambda": 1})"), "");
  EXPECT_EQ(AlignmentInfoFromJson("{").status().code(), absl::StatusCode::kDataLoss);
}

TEST(DetectorCreateTest, MissingFilesAreNamed) {
  FaceDetectorOptions options;
  options.cascade_dir = "/nonexistent/cascades";
  auto d = FaceDetector::Create(options);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(d.status().message(),
                                "/nonexistent/cascades/haarcascade_frontalface_default.xml"))
      << d.status();
  options = {};
  if (!std::filesystem::exists(options.cascade_dir)) GTEST_SKIP() << "opencv-data missing";
  options.landmark_model = "/nonexistent/model.onnx";
  d = FaceDetector::Create(options);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(d.status().message(), "/nonexistent/model.onnx")) << d.status();
  // A file that is no model at all: a clear error at start-up, for either kind.
  const std::string junk = testing::TempDir() + "/junk-model";
  for (const char* ext : {".onnx", ".yaml"}) {
    FILE* f = fopen((junk + ext).c_str(), "w");
    ASSERT_NE(f, nullptr);
    fputs("not a model\n", f);
    fclose(f);
    options.landmark_model = junk + ext;
    d = FaceDetector::Create(options);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << ext << " " << d.status();
    EXPECT_TRUE(absl::StrContains(d.status().message(), junk + ext)) << d.status();
  }
}

}  // namespace
}  // namespace i2s

// Paste-back (paste.h): the warp's round trip against a known similarity, the photo left
// exactly as it was outside the mask, and a blend without a visible seam, measured.
#include "server/imaging/paste.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "server/imaging/align.h"
#include "server/imaging/image_io.h"

namespace i2s {
namespace {

// A photo shipped by Debian's python3-skimage, which nobody here made, with its landmarks
// placed by hand (align_test.cc).
constexpr char kAstronaut[] = "/usr/lib/python3/dist-packages/skimage/data/astronaut.png";
const FaceLandmarks kAstronautLandmarks = {
    {203.5, 101.0}, {246.5, 103.1}, {202.5, 140.0}, {245.0, 140.6}};

// Landmarks of a face turned by `degrees` about (cx, cy), eyes `eyes` apart.
FaceLandmarks TurnedFace(double cx, double cy, double eyes, double degrees) {
  const double a = degrees * M_PI / 180, c = std::cos(a), s = std::sin(a);
  auto at = [&](double x, double y) { return Point2{cx + c * x + s * y, cy - s * x + c * y}; };
  return {at(-eyes / 2, 0), at(eyes / 2, 0), at(-eyes * 0.45, eyes), at(eyes * 0.45, eyes)};
}

// The intensity-weighted centre of channel 0 of an 8-bit RGB photo.
Point2 Centroid(const torch::Tensor& photo) {
  torch::Tensor v = photo.select(2, 0).to(torch::kFloat64);
  const double sum = v.sum().item<double>();
  torch::Tensor ys = torch::arange(v.size(0), torch::kFloat64).unsqueeze(1);
  torch::Tensor xs = torch::arange(v.size(1), torch::kFloat64).unsqueeze(0);
  return {(v * xs).sum().item<double>() / sum, (v * ys).sum().item<double>() / sum};
}

// A black render with a Gaussian spot (sigma 3) at (u, v).
torch::Tensor SpotRender(int size, double u, double v) {
  torch::Tensor ys = torch::arange(size, torch::kFloat64).unsqueeze(1);
  torch::Tensor xs = torch::arange(size, torch::kFloat64).unsqueeze(0);
  torch::Tensor spot = torch::exp(-((xs - u).pow(2) + (ys - v).pow(2)) / (2 * 9.0));
  torch::Tensor rgb = (spot * 255).round().to(torch::kUInt8).unsqueeze(2);
  return rgb.expand({size, size, 3}).contiguous();
}

// The mask's weight at each pixel of `photo` ([H, W, 3]) for a `size` render aligned by
// `to_aligned`: [H, W].
torch::Tensor MaskWeights(const torch::Tensor& photo, const Similarity& to_aligned, int size,
                          const PasteOptions& options) {
  torch::Tensor w = torch::zeros({photo.size(0), photo.size(1)}, torch::kFloat64);
  auto acc = w.accessor<double, 2>();
  for (int y = 0; y < w.size(0); ++y) {
    for (int x = 0; x < w.size(1); ++x) {
      const Point2 a = to_aligned.Apply({double(x), double(y)});
      acc[y][x] = PasteMaskWeight(a.x, a.y, size, options);
    }
  }
  return w;
}

// How visible a seam is, in 8-bit levels: over the pairs of neighbouring pixels (right and
// down) that the mask weighs differently (the outline, and the feathered band inside it),
// the mean of how much more the two differ in `after` than in `before` (any channel).
double SeamStep(const torch::Tensor& before, const torch::Tensor& after,
                const torch::Tensor& weight) {
  const torch::Tensor a = after.to(torch::kFloat64), b = before.to(torch::kFloat64);
  auto step = [](const torch::Tensor& t, int dim) {
    const int64_t n = t.size(dim);
    return (t.narrow(dim, 1, n - 1) - t.narrow(dim, 0, n - 1)).abs();
  };
  double sum = 0;
  int64_t count = 0;
  for (int dim : {0, 1}) {
    const torch::Tensor across = step(weight, dim) > 0;
    const torch::Tensor extra = (step(a, dim) - step(b, dim)).amax(2).masked_select(across);
    sum += extra.sum().item<double>();
    count += extra.numel();
  }
  return count == 0 ? 0 : sum / count;
}

TEST(PasteTest, KnownWarpRoundTripsWithinHalfAPixel) {
  // Faces smaller than the render (the render is shrunk first), about its size, and
  // larger (upsampled), each turned: a spot placed in the aligned frame lands in the photo
  // where the inverse of the transform puts it.
  for (double eyes : {24.0, 64.0, 150.0}) {
    for (double degrees : {0.0, 17.0, -33.0}) {
      const FaceLandmarks face = TurnedFace(400, 300, eyes, degrees);
      const int S = 256;
      const Similarity to_aligned = FfhqTransform(face, S);
      for (Point2 spot : {Point2{128, 140}, Point2{101.3, 118.8}, Point2{150.5, 170.25}}) {
        torch::Tensor photo = torch::zeros({720, 900, 3}, torch::kUInt8);
        PasteOptions options;
        ASSERT_TRUE(PasteInto(photo, SpotRender(S, spot.x, spot.y), to_aligned, options).ok());
        const Point2 want = to_aligned.Inverse().Apply(spot);
        const Point2 got = Centroid(photo);
        EXPECT_LT(std::hypot(got.x - want.x, got.y - want.y), 0.5)
            << "eyes " << eyes << " px, " << degrees << " degrees, spot (" << spot.x << ", "
            << spot.y << "): at (" << got.x << ", " << got.y << "), expected (" << want.x << ", "
            << want.y << ")";
      }
    }
  }
}

class AstronautPasteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kAstronaut)) GTEST_SKIP() << kAstronaut << " (python3-skimage)";
    auto photo = ReadRgbImage(kAstronaut);
    ASSERT_TRUE(photo.ok()) << photo.status();
    photo_ = UnitImageToRgb8(*photo).contiguous();
    AlignOptions align;
    align.output_size = 256;
    auto aligned = AlignFfhq(*photo, kAstronautLandmarks, align);
    ASSERT_TRUE(aligned.ok()) << aligned.status();
    aligned_ = UnitImageToRgb8(aligned->image).contiguous();
    to_aligned_ = aligned->transform;
  }
  torch::Tensor Weights(const PasteOptions& options) const {
    return MaskWeights(photo_, to_aligned_, static_cast<int>(aligned_.size(0)), options);
  }
  torch::Tensor photo_, aligned_;
  Similarity to_aligned_;
};

TEST_F(AstronautPasteTest, TheAlignedPhotoPastedBackLeavesThePhotoOutsideTheMaskExactly) {
  for (PasteBlend blend : {PasteBlend::kFeather, PasteBlend::kSeamless}) {
    PasteOptions options;
    options.blend = blend;
    torch::Tensor pasted = photo_.clone();
    ASSERT_TRUE(PasteInto(pasted, aligned_, to_aligned_, options).ok());
    const torch::Tensor w = Weights(options);
    const torch::Tensor outside = (w == 0).unsqueeze(2).expand_as(photo_);
    EXPECT_TRUE(torch::equal(pasted.masked_select(outside), photo_.masked_select(outside)));
    EXPECT_GT(outside.logical_not().sum().item<int64_t>(), 3 * 100 * 100)
        << "the mask covers the face";
    // Inside, the photo comes back through alignment and the inverse warp: resampled twice.
    const torch::Tensor inside = (w == 1).unsqueeze(2).expand_as(photo_);
    const torch::Tensor diff = (pasted.masked_select(inside).to(torch::kFloat64) -
                                photo_.masked_select(inside).to(torch::kFloat64)) /
                               255;
    const double psnr = -10 * std::log10(diff.pow(2).mean().item<double>());
    EXPECT_GT(psnr, 30) << "blend " << static_cast<int>(blend);
    std::printf("identity paste, blend %d: PSNR inside the mask %.2f dB\n", static_cast<int>(blend),
                psnr);
  }
}

TEST_F(AstronautPasteTest, FeatheringLeavesNoSeamWhereAHardEdgeDoes) {
  // A render 40 levels brighter than the photo: pasted with a hard edge the step shows in
  // full; feathered, no neighbouring pixels differ by more than a few levels beyond the
  // photo's own steps.
  torch::Tensor brighter = (aligned_.to(torch::kInt32) + 40).clamp(0, 255).to(torch::kUInt8);
  PasteOptions hard;
  hard.feather = 0;
  torch::Tensor a = photo_.clone();
  ASSERT_TRUE(PasteInto(a, brighter, to_aligned_, hard).ok());
  const double hard_step = SeamStep(photo_, a, Weights(hard));
  EXPECT_GE(hard_step, 25);
  PasteOptions soft;
  torch::Tensor b = photo_.clone();
  ASSERT_TRUE(PasteInto(b, brighter, to_aligned_, soft).ok());
  const double soft_step = SeamStep(photo_, b, Weights(soft));
  EXPECT_LE(soft_step, 4);
  std::printf("seam step: hard edge %.2f, feathered %.2f levels\n", hard_step, soft_step);
}

TEST_F(AstronautPasteTest, SeamlessBlendTakesThePhotosLightAcrossTheBorder) {
  // The same render with a colour cast: the Poisson blend keeps the render's gradients and
  // the photo's values on the border, so the cast goes and the result is the photo again
  // (within resampling); feathering alone keeps the cast inside.
  torch::Tensor cast = aligned_.to(torch::kInt32);
  cast.select(2, 0).add_(30);
  cast.select(2, 2).sub_(20);
  cast = cast.clamp(0, 255).to(torch::kUInt8).contiguous();
  auto error_inside = [&](const PasteOptions& options) {
    torch::Tensor pasted = photo_.clone();
    EXPECT_TRUE(PasteInto(pasted, cast, to_aligned_, options).ok());
    const torch::Tensor inside = (Weights(options) == 1).unsqueeze(2).expand_as(photo_);
    return (pasted.masked_select(inside).to(torch::kFloat64) -
            photo_.masked_select(inside).to(torch::kFloat64))
        .abs()
        .mean()
        .item<double>();
  };
  PasteOptions feather, seamless;
  seamless.blend = PasteBlend::kSeamless;
  EXPECT_GT(error_inside(feather), 15);
  EXPECT_LT(error_inside(seamless), 8);
  EXPECT_LT(error_inside(seamless), error_inside(feather) / 2);
  torch::Tensor pasted = photo_.clone();
  ASSERT_TRUE(PasteInto(pasted, cast, to_aligned_, seamless).ok());
  const double step = SeamStep(photo_, pasted, Weights(seamless));
  EXPECT_LE(step, 4);
  std::printf("seamless: mean error inside %.2f levels (feathered %.2f), seam step %.2f\n",
              error_inside(seamless), error_inside(feather), step);
}

TEST_F(AstronautPasteTest, SeamlessBlendOfALargeFace) {
  // The astronaut enlarged 4x (the face's square about 800 px): the membrane is solved on a
  // shrunk copy and enlarged back; the cast still goes and no seam shows.
  auto photo = ReadRgbImage(kAstronaut);
  ASSERT_TRUE(photo.ok());
  const torch::Tensor big = torch::nn::functional::interpolate(
                                photo->unsqueeze(0), torch::nn::functional::InterpolateFuncOptions()
                                                         .size(std::vector<int64_t>{2048, 2048})
                                                         .mode(torch::kBicubic)
                                                         .align_corners(false))[0]
                                .clamp(0, 1);
  FaceLandmarks lm = kAstronautLandmarks;
  for (Point2* p : {&lm.eye_left, &lm.eye_right, &lm.mouth_left, &lm.mouth_right}) {
    *p = {(p->x + 0.5) * 4 - 0.5, (p->y + 0.5) * 4 - 0.5};
  }
  AlignOptions align;
  align.output_size = 256;
  auto aligned = AlignFfhq(big, lm, align);
  ASSERT_TRUE(aligned.ok()) << aligned.status();
  const torch::Tensor big8 = UnitImageToRgb8(big).contiguous();
  torch::Tensor cast = UnitImageToRgb8(aligned->image).to(torch::kInt32);
  cast.select(2, 0).add_(30);
  cast = cast.clamp(0, 255).to(torch::kUInt8).contiguous();
  PasteOptions seamless;
  seamless.blend = PasteBlend::kSeamless;
  torch::Tensor pasted = big8.clone();
  ASSERT_TRUE(PasteInto(pasted, cast, aligned->transform, seamless).ok());
  const torch::Tensor w = MaskWeights(big8, aligned->transform, 256, seamless);
  const torch::Tensor inside = (w == 1).unsqueeze(2).expand_as(big8);
  const double error = (pasted.masked_select(inside).to(torch::kFloat64) -
                        big8.masked_select(inside).to(torch::kFloat64))
                           .abs()
                           .mean()
                           .item<double>();
  const double step = SeamStep(big8, pasted, w);
  std::printf("large face, seamless: mean error inside %.2f levels, seam step %.2f\n", error, step);
  EXPECT_LT(error, 6);
  EXPECT_LE(step, 4);
}

TEST(PasteTest, AFaceOutsideThePhotoChangesNothing) {
  torch::Tensor photo = torch::full({100, 120, 3}, 77, torch::kUInt8);
  const Similarity to_aligned = FfhqTransform(TurnedFace(900, 900, 40, 0), 64);
  ASSERT_TRUE(PasteInto(photo, SpotRender(64, 32, 32), to_aligned, PasteOptions()).ok());
  EXPECT_TRUE(torch::equal(photo, torch::full({100, 120, 3}, 77, torch::kUInt8)));
}

TEST(PasteTest, BadInputsAreRefused) {
  torch::Tensor photo = torch::zeros({100, 120, 3}, torch::kUInt8);
  const torch::Tensor render = SpotRender(64, 32, 32);
  const Similarity ok = FfhqTransform(TurnedFace(60, 40, 20, 0), 64);
  torch::Tensor gray = torch::zeros({100, 120}, torch::kUInt8);
  EXPECT_EQ(PasteInto(gray, render, ok, {}).code(), absl::StatusCode::kInvalidArgument);
  torch::Tensor floats = torch::zeros({100, 120, 3});
  EXPECT_EQ(PasteInto(floats, render, ok, {}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PasteInto(photo, render.narrow(0, 0, 60).contiguous(), ok, {}).code(),
            absl::StatusCode::kInvalidArgument);
  Similarity sheared = ok;
  sheared.m[1] += 0.3;
  EXPECT_EQ(PasteInto(photo, render, sheared, {}).code(), absl::StatusCode::kInvalidArgument);
  Similarity singular;
  singular.m = {0, 0, 1, 0, 0, 1};
  EXPECT_EQ(PasteInto(photo, render, singular, {}).code(), absl::StatusCode::kInvalidArgument);
  PasteOptions wide;
  wide.feather = 0.9;
  const absl::Status s = PasteInto(photo, render, ok, wide);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("feather"), std::string::npos) << s;
}

}  // namespace
}  // namespace i2s

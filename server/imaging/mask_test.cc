// Masks for masked embedding: decoding, and the warp into the target's frame.
#include "server/imaging/mask.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "absl/strings/match.h"
#include "server/imaging/image_io.h"
#include "server/imaging/prepare.h"

namespace i2s {
namespace {

std::string Png(const torch::Tensor& rgb8) { return *EncodeRgb8(rgb8, EncodeFormat::kPng); }

// A [1, H, W] binary mask, white inside [x0, x1) x [y0, y1).
torch::Tensor Rect(int h, int w, int x0, int y0, int x1, int y1) {
  torch::Tensor m = torch::zeros({1, h, w});
  m.narrow(1, y0, y1 - y0).narrow(2, x0, x1 - x0).fill_(1);
  return m;
}

TEST(MaskTest, DecodesWhiteAsOneBlackAsZeroAndGreyAsItsLuma) {
  torch::Tensor rgb = torch::zeros({2, 2, 3}, torch::kUInt8);
  rgb[0][0].fill_(255);
  rgb[0][1].fill_(128);
  rgb[1][1][0] = 255;  // pure red: luma 0.299
  auto m = DecodeMask(Png(rgb), DecodeLimits{}, "mask");
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->sizes(), (std::vector<int64_t>{1, 2, 2}));
  EXPECT_EQ((*m)[0][0][0].item<float>(), 1.0f);
  EXPECT_EQ((*m)[0][1][0].item<float>(), 0.0f);
  EXPECT_FLOAT_EQ((*m)[0][0][1].item<float>(), 128.0f / 255);
  EXPECT_FLOAT_EQ((*m)[0][1][1].item<float>(), 76.0f / 255);  // round(255 * 0.299)
  EXPECT_FALSE(IsBinaryMask(*m));
  EXPECT_TRUE(IsBinaryMask(Rect(4, 4, 1, 1, 3, 3)));
  auto bad = DecodeMask("not an image", DecodeLimits{}, "perceptual_mask");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(bad.status().message(), "perceptual_mask:"));
}

TEST(MaskTest, ABinaryMaskStaysBinaryAndOnlyShrinks) {
  const torch::Tensor photo = Rect(64, 80, 20, 10, 60, 50);
  const std::vector<std::pair<Similarity, int>> cases = {
      {Similarity{}, 64},
      {FitTransform(80, 64, 32, FitMode::kCenterCrop), 32},
      {FitTransform(80, 64, 16, FitMode::kPad), 16}};
  for (const auto& [t, size] : cases) {
    torch::Tensor m = WarpMask(photo, t, size);
    ASSERT_TRUE(IsBinaryMask(m));
    ASSERT_GT(m.sum().item<double>(), 0);
    // Every counted target pixel's footprint in the photo, with a pixel to spare, is white.
    const Similarity back = t.Inverse();
    const double reach = 1 / t.Scale();
    auto acc = m.accessor<float, 3>();
    for (int v = 0; v < size; ++v) {
      for (int u = 0; u < size; ++u) {
        if (acc[0][v][u] == 0) continue;
        const Point2 p = back.Apply({double(u), double(v)});
        EXPECT_GE(p.x - reach / 2, 20 - 0.5) << u << "," << v;
        EXPECT_LE(p.x + reach / 2, 60 - 0.5) << u << "," << v;
        EXPECT_GE(p.y - reach / 2, 10 - 0.5) << u << "," << v;
        EXPECT_LE(p.y + reach / 2, 50 - 0.5) << u << "," << v;
      }
    }
  }
  // The identity keeps the rectangle less one pixel all round.
  torch::Tensor same = WarpMask(photo, Similarity{}, 64);
  EXPECT_TRUE(torch::equal(same.narrow(1, 0, 64).narrow(2, 0, 64), Rect(64, 64, 21, 11, 59, 49)));
}

TEST(MaskTest, AGreyMaskIsResampledAsAnImage) {
  torch::Tensor half = torch::full({1, 40, 40}, 0.5);
  torch::Tensor m = WarpMask(half, FitTransform(40, 40, 16, FitMode::kCenterCrop), 16);
  EXPECT_NEAR(m.min().item<double>(), 0.5, 1e-5);
  EXPECT_NEAR(m.max().item<double>(), 0.5, 1e-5);
  // A ramp stays a ramp.
  torch::Tensor ramp = torch::linspace(0, 1, 40).expand({1, 40, 40}).contiguous();
  torch::Tensor r = WarpMask(ramp, FitTransform(40, 40, 20, FitMode::kCenterCrop), 20);
  torch::Tensor row = r[0][10];
  EXPECT_TRUE((row.narrow(0, 1, 19) >= row.narrow(0, 0, 19)).all().item<bool>());
  EXPECT_NEAR(row[10].item<double>(), 20.5 / 39, 0.02);
}

TEST(MaskTest, FitTransformIsWhereFitToSquarePutsThePixels) {
  // A white square fitted by FitToSquare and by the transform lands in the same place.
  for (FitMode fit : {FitMode::kCenterCrop, FitMode::kPad}) {
    torch::Tensor m = Rect(60, 90, 40, 20, 56, 36);
    torch::Tensor fitted = *FitToSquare(m, 30, fit);
    torch::Tensor warped = WarpMask(m * 0.999, FitTransform(90, 60, 30, fit), 30);  // grey
    auto centre = [](const torch::Tensor& t) {
      torch::Tensor w = t[0] / t.sum();
      torch::Tensor xs = torch::arange(t.size(2)).to(torch::kFloat32);
      torch::Tensor ys = torch::arange(t.size(1)).to(torch::kFloat32);
      return std::pair{(w.sum(0) * xs).sum().item<double>(), (w.sum(1) * ys).sum().item<double>()};
    };
    auto [fx, fy] = centre(fitted);
    auto [wx, wy] = centre(warped);
    EXPECT_NEAR(fx, wx, 0.1);
    EXPECT_NEAR(fy, wy, 0.1);
  }
}

TEST(MaskTest, WhatKeepLeavesOutNeverReachesThePreparedImage) {
  torch::Tensor photo =
      torch::rand({3, 48, 64}, torch::Generator(at::detail::createCPUGenerator(3)));
  torch::Tensor other = photo.clone();
  other.narrow(1, 20, 10).narrow(2, 30, 12).uniform_(0, 1);
  PrepareOptions o;
  o.size = 16;
  o.keep = 1 - Rect(48, 64, 30, 20, 42, 30);
  auto a = PrepareImage(photo, o, nullptr);
  auto b = PrepareImage(other, o, nullptr);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(torch::equal(a->image, b->image));
  o.keep = torch::Tensor();
  auto c = PrepareImage(photo, o, nullptr);
  auto d = PrepareImage(other, o, nullptr);
  EXPECT_FALSE(torch::equal(c->image, d->image));
  const double s = 16.0 / 48;
  EXPECT_NEAR(c->transform.m[0], s, 1e-12);
  EXPECT_NEAR(c->transform.m[2], -8 * s + 0.5 * s - 0.5, 1e-12);  // centre crop at x = 8
}

}  // namespace
}  // namespace i2s

#include "server/engine/local_blend.h"

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/engine/generator.h"
#include "server/engine/stylegan1.h"
#include "server/engine/stylegan2.h"

namespace i2s {
namespace {

using torch::indexing::Slice;

// Both architectures at 32x32 (4 blocks, 8 W+ rows) with few channels.
std::unique_ptr<Generator> MakeGenerator(const std::string& arch) {
  if (arch == "stylegan1") {
    StyleGan1Config c = StyleGan1Config::FromFmap(32, 128, 16);
    c.latent_size = 16;
    c.mapping_layers = 2;
    auto g = StyleGan1Generator::Create(RandomStyleGan1Weights(c, 5), torch::kCPU);
    EXPECT_TRUE(g.ok()) << g.status();
    return g.ok() ? *std::move(g) : nullptr;
  }
  auto g = StyleGan2Generator::Create(
      RandomStyleGan2Weights(StyleGan2Config::Rosinality(32, 1, 16, 2, 32), 5), torch::Tensor(), 0,
      torch::kCPU);
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? *std::move(g) : nullptr;
}

class LocalBlendTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    torch::manual_seed(3);
    g_ = MakeGenerator(GetParam());
    ASSERT_NE(g_, nullptr);
    const int64_t l = g_->num_layers(), d = g_->latent_size();
    wa_ = torch::randn({2, l, d});
    wb_ = torch::randn({2, l, d});
    noise_ = g_->MakeNoise(11, 2);
  }
  int64_t R() const { return g_->resolution(); }
  torch::Tensor Blend(const torch::Tensor& mask, int start_layer) {
    torch::NoGradGuard no_grad;
    return g_->ForwardBlend(wa_, wb_, noise_, start_layer, mask);
  }
  torch::Tensor Render(const torch::Tensor& w) {
    torch::NoGradGuard no_grad;
    return g_->Forward(w, noise_);
  }
  // 1 on rows [r0, r1) x columns [c0, c1), 0 elsewhere.
  torch::Tensor Box(int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    torch::Tensor m = torch::zeros({1, 1, R(), R()});
    m.index_put_({Slice(), Slice(), Slice(r0, r1), Slice(c0, c1)}, 1.0);
    return m;
  }

  std::unique_ptr<Generator> g_;
  torch::Tensor wa_, wb_;
  std::vector<torch::Tensor> noise_;
};

TEST_P(LocalBlendTest, ZeroMaskIsForwardOfA) {
  const torch::Tensor a = Render(wa_);
  for (int start = 0; start < g_->num_layers(); ++start) {
    EXPECT_TRUE(torch::equal(Blend(torch::zeros({1, 1, R(), R()}), start), a)) << start;
  }
}

TEST_P(LocalBlendTest, MaskOfOnesIsForwardOfB) {
  const torch::Tensor b = Render(wb_);
  const torch::Tensor ones = torch::ones({1, 1, R(), R()});
  EXPECT_TRUE(torch::allclose(Blend(ones, 0), b, 0, 1e-5));
  // Every scale blends to b's activations at m == 1, so the last block hands on b's.
  EXPECT_TRUE(torch::equal(Blend(ones, 0), b));
  EXPECT_TRUE(torch::equal(Blend(ones, g_->num_layers() - 1), b));
}

TEST_P(LocalBlendTest, PixelsOutsideTheMaskAreForwardOfABitForBit) {
  const torch::Tensor a = Render(wa_);
  torch::Tensor mask = FeatherMask(Box(8, 20, 10, 24), 3).value();
  // A grey mask, per sample: the second sample's mask is the first's shifted right.
  mask = torch::cat({mask, torch::roll(mask, 5, 3)}, 0) * 0.8;
  for (int start : {0, 3, g_->num_layers() - 1}) {
    const torch::Tensor out = Blend(mask, start);
    const torch::Tensor outside = (mask == 0).expand_as(out);
    EXPECT_TRUE(torch::equal(out.masked_select(outside), a.masked_select(outside))) << start;
    // The changed pixels lie inside the mask's support, and the edit shows there.
    const torch::Tensor changed = (out != a).any(1, /*keepdim=*/true);
    EXPECT_FALSE((changed & (mask == 0)).any().item<bool>()) << start;
    EXPECT_GT(changed.sum().item<int64_t>(), (mask > 0).sum().item<int64_t>() / 2) << start;
    EXPECT_TRUE(torch::isfinite(out).all().item<bool>());
  }
}

TEST_P(LocalBlendTest, LeftHalfMaskChangesTheLeftHalfTowardsB) {
  const torch::Tensor a = Render(wa_), b = Render(wb_);
  const torch::Tensor out = Blend(Box(0, R(), 0, R() / 2), 0);
  const torch::Tensor left = out.index({Slice(), Slice(), Slice(), Slice(0, R() / 2)});
  const torch::Tensor right = out.index({Slice(), Slice(), Slice(), Slice(R() / 2)});
  EXPECT_TRUE(torch::equal(right, a.index({Slice(), Slice(), Slice(), Slice(R() / 2)})));
  const torch::Tensor a_left = a.index({Slice(), Slice(), Slice(), Slice(0, R() / 2)});
  const torch::Tensor b_left = b.index({Slice(), Slice(), Slice(), Slice(0, R() / 2)});
  // Every left pixel changed, and the left half is nearer b's than a's.
  EXPECT_TRUE((left != a_left).any(1).all().item<bool>());
  EXPECT_LT((left - b_left).abs().mean().item<double>(),
            0.5 * (left - a_left).abs().mean().item<double>());
}

TEST_P(LocalBlendTest, BlendFromTheLastBlockMixesTheFinishedImages) {
  // The last block is at full resolution and what follows it (StyleGAN1's ToRGB, or
  // nothing but the skip sum) is affine, so one blend there and the final one make
  // a + c^2 (b - a). An earlier start lets a's later rows rework b's content.
  const torch::Tensor a = Render(wa_), b = Render(wb_);
  const torch::Tensor mask = torch::full({1, 1, R(), R()}, 0.5);
  const torch::Tensor late = Blend(mask, g_->num_layers() - 1);
  EXPECT_TRUE(torch::allclose(late, 0.75 * a + 0.25 * b, 0, 1e-5));
  const torch::Tensor early = Blend(mask, 0);
  EXPECT_GT((early - late).abs().max().item<double>(), 1e-2);
  EXPECT_TRUE(torch::isfinite(early).all().item<bool>());
}

TEST_P(LocalBlendTest, GradientsOfPixelsOutsideTheMaskDoNotReachWb) {
  const torch::Tensor mask = FeatherMask(Box(8, 16, 8, 16), 2).value();
  const torch::Tensor wb = wb_.clone().requires_grad_(true);
  const torch::Tensor wa = wa_.clone().requires_grad_(true);
  const torch::Tensor out = g_->ForwardBlend(wa, wb, noise_, 1, mask);
  (out * (mask == 0)).sum().backward();
  EXPECT_TRUE(torch::equal(wb.grad(), torch::zeros_like(wb)));
  EXPECT_GT(wa.grad().abs().sum().item<double>(), 0);
  wb.mutable_grad().zero_();
  const torch::Tensor out2 = g_->ForwardBlend(wa, wb, noise_, 1, mask);
  (out2 * mask).sum().backward();
  EXPECT_GT(wb.grad().abs().sum().item<double>(), 0);
}

TEST_P(LocalBlendTest, SynthesizeBlendChecksAndAgreesWithForwardBlend) {
  const torch::Tensor mask = Box(0, R(), 0, R() / 2);
  auto out = g_->SynthesizeBlend(wa_, wb_, noise_, 2, mask);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(torch::equal(*out, Blend(mask, 2)));
  EXPECT_FALSE(out->requires_grad());
  // No noise maps at all is allowed, as for Synthesize.
  EXPECT_TRUE(g_->SynthesizeBlend(wa_, wb_, {}, 0, mask).ok());

  auto expect_error = [&](const absl::StatusOr<torch::Tensor>& r, const std::string& name) {
    ASSERT_FALSE(r.ok()) << name;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_EQ(std::string(r.status().message()).rfind(name + ":", 0), 0u) << r.status();
  };
  expect_error(g_->SynthesizeBlend(wa_.narrow(1, 0, 3), wb_, noise_, 0, mask), "wa");
  expect_error(g_->SynthesizeBlend(torch::Tensor(), wb_, noise_, 0, mask), "wa");
  expect_error(g_->SynthesizeBlend(wa_, wb_.narrow(0, 0, 1), noise_, 0, mask), "wb");
  torch::Tensor nan_wb = wb_.clone();
  nan_wb[0][0][0] = NAN;
  expect_error(g_->SynthesizeBlend(wa_, nan_wb, noise_, 0, mask), "wb");
  expect_error(g_->SynthesizeBlend(wa_, wb_, {noise_[0]}, 0, mask), "noise");
  expect_error(g_->SynthesizeBlend(wa_, wb_, noise_, -1, mask), "start_layer");
  expect_error(g_->SynthesizeBlend(wa_, wb_, noise_, g_->num_layers(), mask), "start_layer");
  expect_error(g_->SynthesizeBlend(wa_, wb_, noise_, 0, torch::Tensor()), "mask");
  expect_error(g_->SynthesizeBlend(wa_, wb_, noise_, 0, torch::ones({1, 1, R() / 2, R() / 2})),
               "mask");
  expect_error(g_->SynthesizeBlend(wa_, wb_, noise_, 0, torch::ones({3, 1, R(), R()})), "mask");
  expect_error(g_->SynthesizeBlend(wa_, wb_, noise_, 0, torch::ones({1, R(), R()})), "mask");
  expect_error(g_->SynthesizeBlend(wa_, wb_, noise_, 0, mask * 1.5), "mask");
  expect_error(g_->SynthesizeBlend(wa_, wb_, noise_, 0, mask - 0.5), "mask");
  expect_error(g_->SynthesizeBlend(wa_, wb_, noise_, 0, mask.to(torch::kInt32)), "mask");
}

TEST_P(LocalBlendTest, LayerBlockCoversEveryBlock) {
  const int blocks = Log2Ceil(g_->resolution()) - 1;
  EXPECT_EQ(g_->LayerBlock(0), 0);
  EXPECT_EQ(g_->LayerBlock(g_->num_layers() - 1), blocks - 1);
  for (int l = 1; l < g_->num_layers(); ++l) {
    EXPECT_GE(g_->LayerBlock(l), g_->LayerBlock(l - 1));
    EXPECT_LE(g_->LayerBlock(l), g_->LayerBlock(l - 1) + 1);
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, LocalBlendTest, ::testing::Values("stylegan1", "stylegan2"),
                         [](const auto& info) { return info.param; });

TEST(LocalBlendLayerTest, RowsMapToTheirBlocks) {
  auto g1 = MakeGenerator("stylegan1");
  auto g2 = MakeGenerator("stylegan2");
  ASSERT_NE(g1, nullptr);
  ASSERT_NE(g2, nullptr);
  // StyleGAN1: rows 2i, 2i + 1 -> block i.
  EXPECT_EQ((std::vector<int>{g1->LayerBlock(0), g1->LayerBlock(1), g1->LayerBlock(2),
                              g1->LayerBlock(7)}),
            (std::vector<int>{0, 0, 1, 3}));
  // StyleGAN2: row 0 -> the 4x4 conv; rows 2i - 1, 2i -> block i's convs; the last row
  // (the last ToRGB's) -> the last block.
  EXPECT_EQ((std::vector<int>{g2->LayerBlock(0), g2->LayerBlock(1), g2->LayerBlock(2),
                              g2->LayerBlock(6), g2->LayerBlock(7)}),
            (std::vector<int>{0, 1, 1, 3, 3}));
}

TEST(BlendActivationsTest, EndsAreSelectedExactly) {
  const torch::Tensor a = torch::tensor({-0.0f, 1.0f, 2.0f, NAN}).view({1, 1, 1, 4});
  const torch::Tensor b = torch::tensor({1.0f, INFINITY, -0.0f, 3.0f}).view({1, 1, 1, 4});
  const torch::Tensor m = torch::tensor({0.0f, 0.0f, 1.0f, 1.0f}).view({1, 1, 1, 4});
  const torch::Tensor out = BlendActivations(a, b, m);
  EXPECT_TRUE(std::signbit(out[0][0][0][0].item<float>()));
  EXPECT_EQ(out[0][0][0][1].item<float>(), 1.0f);
  EXPECT_TRUE(std::signbit(out[0][0][0][2].item<float>()));
  EXPECT_EQ(out[0][0][0][3].item<float>(), 3.0f);
  const torch::Tensor half = BlendActivations(torch::zeros({2, 3, 4, 4}), torch::ones({2, 3, 4, 4}),
                                              torch::full({1, 1, 4, 4}, 0.25));
  EXPECT_TRUE(torch::allclose(half, torch::full({2, 3, 4, 4}, 0.25)));
}

TEST(MaskAtResolutionTest, AveragesCells) {
  torch::Tensor m = torch::zeros({1, 1, 8, 8});
  m.index_put_({0, 0, Slice(0, 2), Slice(0, 1)}, 1.0);  // half of the top-left 2x2 cell
  const torch::Tensor at4 = MaskAtResolution(m, 4);
  EXPECT_EQ(at4.sizes(), torch::IntArrayRef({1, 1, 4, 4}));
  EXPECT_FLOAT_EQ(at4[0][0][0][0].item<float>(), 0.5f);
  EXPECT_EQ(at4.sum().item<float>(), 0.5f);
  EXPECT_TRUE(torch::equal(MaskAtResolution(m, 8), m));
}

TEST(FeatherMaskTest, RampGrowsTheSupportByTheWidth) {
  torch::Tensor m = torch::zeros({1, 1, 32, 32});
  m.index_put_({0, 0, Slice(10, 20), Slice(12, 18)}, 1.0);
  const int f = 4;
  auto out = FeatherMask(m, f);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->sizes(), m.sizes());
  // The support: the box grown by exactly f pixels in the chessboard distance.
  torch::Tensor grown = torch::zeros_like(m);
  grown.index_put_({0, 0, Slice(10 - f, 20 + f), Slice(12 - f, 18 + f)}, 1.0);
  EXPECT_TRUE(torch::equal(*out > 0, grown > 0));
  // 1 inside, never below the mask, at most 1.
  EXPECT_TRUE(torch::equal(out->masked_select(m == 1), m.masked_select(m == 1)));
  EXPECT_TRUE((*out >= m).all().item<bool>());
  EXPECT_LE(out->max().item<float>(), 1.0f);
  // The ramp: 1 - d / (f + 1) at chessboard distance d, falling monotonically outwards.
  for (int d = 1; d <= f; ++d) {
    EXPECT_NEAR((*out)[0][0][15][18 - 1 + d].item<float>(), 1.0 - d / (f + 1.0), 1e-6) << d;
    EXPECT_NEAR((*out)[0][0][10 - d][12 - d].item<float>(), 1.0 - d / (f + 1.0), 1e-6) << d;
  }
  const torch::Tensor row = (*out)[0][0][15];
  for (int x = 18; x < 31; ++x) EXPECT_GE(row[x].item<float>(), row[x + 1].item<float>()) << x;
  for (int x = 1; x < 12; ++x) EXPECT_LE(row[x - 1].item<float>(), row[x].item<float>()) << x;
  // Wider feathering grows the region and never lowers a value.
  auto wider = FeatherMask(m, f + 2);
  ASSERT_TRUE(wider.ok());
  EXPECT_TRUE((*wider >= *out).all().item<bool>());
  EXPECT_GT((*wider > 0).sum().item<int64_t>(), (*out > 0).sum().item<int64_t>());
  // Deterministic, and the identity at width 0.
  EXPECT_TRUE(torch::equal(FeatherMask(m, f).value(), *out));
  EXPECT_TRUE(torch::equal(FeatherMask(m, 0).value(), m));
}

TEST(FeatherMaskTest, GreyMasksAndBatches) {
  torch::Tensor m = torch::zeros({2, 1, 16, 16});
  m.index_put_({0, 0, 8, 8}, 0.5);
  m.index_put_({1, 0, 2, 3}, 1.0);
  auto out = FeatherMask(m, 3);
  ASSERT_TRUE(out.ok()) << out.status();
  // A grey value spreads only while it stays positive: 0.5 - d / 4 > 0 for d < 2.
  EXPECT_EQ(((*out)[0] > 0).sum().item<int64_t>(), 9);
  EXPECT_FLOAT_EQ((*out)[0][0][8][8].item<float>(), 0.5f);
  EXPECT_FLOAT_EQ((*out)[0][0][7][9].item<float>(), 0.25f);
  // Samples stay apart, and the image edge is no source.
  EXPECT_EQ(((*out)[1] > 0).sum().item<int64_t>(), 6 * 7);
  // Monotone in the mask.
  auto more = FeatherMask(torch::clamp(m + 0.25, 0, 1), 3);
  ASSERT_TRUE(more.ok());
  EXPECT_TRUE((*more >= *out).all().item<bool>());
}

TEST(FeatherMaskTest, ErrorsNameTheArgument) {
  auto expect_error = [](const absl::StatusOr<torch::Tensor>& r, const std::string& name) {
    ASSERT_FALSE(r.ok()) << name;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_EQ(std::string(r.status().message()).rfind(name + ":", 0), 0u) << r.status();
  };
  const torch::Tensor m = torch::zeros({1, 1, 8, 8});
  expect_error(FeatherMask(torch::Tensor(), 1), "mask");
  expect_error(FeatherMask(torch::zeros({1, 8, 8}), 1), "mask");
  expect_error(FeatherMask(torch::zeros({1, 2, 8, 8}), 1), "mask");
  expect_error(FeatherMask(m + 2, 1), "mask");
  expect_error(FeatherMask(m - 1, 1), "mask");
  expect_error(FeatherMask(m / 0, 1), "mask");
  expect_error(FeatherMask(m.to(torch::kUInt8), 1), "mask");
  expect_error(FeatherMask(m, -1), "feather");
  expect_error(FeatherMask(m, 9), "feather");
  EXPECT_TRUE(FeatherMask(m, 8).ok());
}

}  // namespace
}  // namespace i2s

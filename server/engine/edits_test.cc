#include "server/engine/edits.h"

#include <limits>

#include "gtest/gtest.h"
#include "server/engine/stylegan1.h"

namespace i2s {
namespace {

TEST(EditsTest, MorphAlgebraAndEndpoints) {
  torch::Tensor a = torch::randn({6, 8}), b = torch::randn({6, 8});
  EXPECT_EQ(MorphAlphas(5, true), (std::vector<double>{0, 0.25, 0.5, 0.75, 1}));
  EXPECT_EQ(MorphAlphas(3, false), (std::vector<double>{0.25, 0.5, 0.75}));
  auto m = Morph(a, b, MorphAlphas(5, true));
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->sizes(), torch::IntArrayRef({5, 6, 8}));
  EXPECT_TRUE(torch::equal((*m)[0], a));
  EXPECT_TRUE(torch::allclose((*m)[4], b));
  EXPECT_TRUE(torch::allclose((*m)[1], 0.75 * a + 0.25 * b, 1e-6, 1e-6));
  EXPECT_FALSE(Morph(a, torch::randn({5, 8}), {0.5}).ok());
  EXPECT_FALSE(Morph(a, b, {}).ok());
  auto nan = Morph(a, b, {std::numeric_limits<double>::quiet_NaN()});
  ASSERT_FALSE(nan.ok());
  EXPECT_EQ(nan.status().message(), "alphas: not finite");
}

TEST(EditsTest, StyleMixTakesRowsFromEachSide) {
  torch::Tensor c = torch::zeros({2, 6, 4}), s = torch::ones({1, 6, 4});
  auto mixed = StyleMix(c, s, 4);
  ASSERT_TRUE(mixed.ok()) << mixed.status();
  EXPECT_EQ(mixed->sizes(), torch::IntArrayRef({2, 6, 4}));
  EXPECT_EQ(mixed->sum(2).select(0, 1)[3].item<float>(), 0.f);
  EXPECT_EQ(mixed->sum(2).select(0, 1)[4].item<float>(), 4.f);
  EXPECT_TRUE(torch::equal(*StyleMix(c, s, 0), s.expand({2, 6, 4})));
  EXPECT_TRUE(torch::equal(*StyleMix(c, s, 6), c));
  auto bad = StyleMix(c, s, 7);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "crossover: 7 is outside [0, 6]");
  auto mask = StyleMixMask(c, s, {true, false, true, false, false, false});
  ASSERT_TRUE(mask.ok());
  EXPECT_EQ((*mask)[0].sum(1)[2].item<float>(), 4.f);
  EXPECT_EQ((*mask)[0].sum(1)[1].item<float>(), 0.f);
  EXPECT_FALSE(StyleMixMask(c, s, {true}).ok());
}

TEST(EditsTest, ExpressionTransferOnChosenRows) {
  torch::Tensor w1 = torch::randn({6, 4}), n = torch::randn({6, 4}), e = torch::randn({6, 4});
  auto all = ExpressionTransfer(w1, n, e, 1.5);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_TRUE(torch::allclose((*all)[0], w1 + 1.5 * (e - n), 1e-6, 1e-6));
  auto some = ExpressionTransfer(w1, n, e, 2.0, 2, 3);
  ASSERT_TRUE(some.ok());
  EXPECT_TRUE(torch::equal((*some)[0][0], w1[0]));
  EXPECT_TRUE(torch::equal((*some)[0][4], w1[4]));
  EXPECT_TRUE(torch::allclose((*some)[0][2], w1[2] + 2.0 * (e[2] - n[2]), 1e-6, 1e-6));
  auto bad = ExpressionTransfer(w1, n, e, 1.0, 4, 2);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "layers: [4, 2] is not a range inside [0, 5]");
  EXPECT_FALSE(ExpressionTransfer(w1, n, e, std::numeric_limits<double>::infinity()).ok());
  auto wrong = ExpressionTransfer(w1, torch::randn({5, 4}), e, 1.0);
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("neutral"), std::string::npos);
}

TEST(EditsTest, RenderedMorphEndpointsEqualRendersOfInputs) {
  auto g = StyleGan1Generator::Create(
      RandomStyleGan1Weights(StyleGan1Config::FromFmap(16, 256, 32), 3), torch::kCPU);
  ASSERT_TRUE(g.ok());
  torch::Tensor a = torch::randn({6, 512}), b = torch::randn({6, 512});
  auto frames = Morph(a, b, MorphAlphas(3, true));
  ASSERT_TRUE(frames.ok());
  auto noise = (*g)->MakeNoise(1, 1);
  auto video = (*g)->Synthesize(*frames, noise);
  auto ra = (*g)->Synthesize(a.unsqueeze(0), noise);
  auto rb = (*g)->Synthesize(b.unsqueeze(0), noise);
  ASSERT_TRUE(video.ok() && ra.ok() && rb.ok());
  EXPECT_LT((video->narrow(0, 0, 1) - *ra).abs().max().item<float>(), 1e-4);
  EXPECT_LT((video->narrow(0, 2, 1) - *rb).abs().max().item<float>(), 1e-4);
}

}  // namespace
}  // namespace i2s

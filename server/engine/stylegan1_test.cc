#include "server/engine/stylegan1.h"

#include <string>

#include "gtest/gtest.h"

namespace i2s {
namespace {

StyleGan1Config Tiny() { return StyleGan1Config::FromFmap(16, 256, 32); }

std::unique_ptr<StyleGan1Generator> MakeTiny(uint64_t seed = 7) {
  auto g = StyleGan1Generator::Create(RandomStyleGan1Weights(Tiny(), seed), torch::kCPU);
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? *std::move(g) : nullptr;
}

TEST(StyleGan1ConfigTest, PublishedLayoutHas116KeysAnd26MValues) {
  StyleGan1Config c = StyleGan1Config::FromFmap(1024, 8192, 512);
  EXPECT_EQ(c.num_layers(), 18);
  EXPECT_EQ(c.channels, (std::vector<int64_t>{512, 512, 512, 512, 256, 128, 64, 32, 16}));
  auto keys = StyleGan1Keys(c);
  EXPECT_EQ(keys.size(), 116u);
  int64_t values = 0;
  for (const auto& [name, shape] : keys) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    values += n;
  }
  // The spec's "about 26.2 M float32 values".
  EXPECT_GT(values, 26'100'000);
  EXPECT_LT(values, 26'300'000);
  EXPECT_EQ(keys.back().first, "g_synthesis.torgb.bias");
}

TEST(StyleGan1ConfigTest, InfersConfigFromKeys) {
  auto c = InferStyleGan1Config(RandomStyleGan1Weights(Tiny(), 1));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->resolution, 16);
  EXPECT_EQ(c->channels, Tiny().channels);
  EXPECT_EQ(c->latent_size, 512);
  EXPECT_EQ(c->mapping_layers, 8);
}

// The phase-split upsampling convolutions compute the reference's nearest-upsample +
// 3x3 (8 .. 64) and transposed 4x4 (128, 256) convolutions: same images and same
// gradients with respect to W+, up to float rounding, with and without noise, batched.
TEST(StyleGan1Test, PhaseSplitUpsamplingMatchesTheReferenceConvolutions) {
  const StateDict sd = RandomStyleGan1Weights(StyleGan1Config::FromFmap(256, 512, 64), 11);
  StyleGan1Options reference;
  reference.upsample = UpsampleConv::kReference;
  auto fast = StyleGan1Generator::Create(sd, torch::kCPU);
  auto ref = StyleGan1Generator::Create(sd, torch::kCPU, reference);
  ASSERT_TRUE(fast.ok() && ref.ok());
  torch::manual_seed(5);
  for (bool with_noise : {false, true}) {
    torch::Tensor w = torch::randn({3, (*fast)->num_layers(), 512});
    const auto noise = with_noise ? (*fast)->MakeNoise(9, 3) : std::vector<torch::Tensor>{};
    torch::Tensor wa = w.clone().requires_grad_(true), wb = w.clone().requires_grad_(true);
    torch::Tensor a = (*fast)->Forward(wa, noise), b = (*ref)->Forward(wb, noise);
    ASSERT_EQ(a.sizes(), torch::IntArrayRef({3, 3, 256, 256}));
    const double scale = b.abs().max().item<double>();
    EXPECT_GT(scale, 0.1);
    EXPECT_LT((a - b).abs().max().item<double>(), 1e-5 * scale) << "noise " << with_noise;
    torch::Tensor probe = torch::randn_like(a);
    (a * probe).sum().backward();
    (b * probe).sum().backward();
    // Gradients through 14 instance-normalised layers of random weights are ill
    // conditioned: the reference alone, in float32, is 1.1e-3 (relative norm) off its
    // float64 result for a 256x256 model of fmap_base 512 (tests/oracle/stylegan1_ref.py).
    const double gnorm = wb.grad().norm().item<double>();
    EXPECT_GT(gnorm, 0);
    EXPECT_LT((wa.grad() - wb.grad()).norm().item<double>(), 3e-3 * gnorm)
        << "noise " << with_noise;
  }
  EXPECT_STREQ(UpsampleConvName(UpsampleConv::kPhaseSplit), "phase-split");
}

TEST(StyleGan1Test, ShapesAndDeterminism) {
  auto g = MakeTiny();
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->num_layers(), 6);
  EXPECT_EQ(g->resolution(), 16);
  torch::Tensor w = torch::randn({2, 6, 512});
  auto noise = g->MakeNoise(3, 2);
  ASSERT_EQ(noise.size(), 6u);
  EXPECT_EQ(noise[5].sizes(), torch::IntArrayRef({2, 1, 16, 16}));
  EXPECT_TRUE(torch::equal(noise[4], g->MakeNoise(3, 2)[4]));
  auto a = g->Synthesize(w, noise);
  auto b = g->Synthesize(w, noise);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->sizes(), torch::IntArrayRef({2, 3, 16, 16}));
  EXPECT_TRUE(torch::equal(*a, *b));
  auto without_noise = g->Synthesize(w, {});
  ASSERT_TRUE(without_noise.ok());
  EXPECT_GT((*a - *without_noise).abs().max().item<float>(), 1e-3) << "noise must matter";
}

TEST(StyleGan1Test, BatchMembersAreIndependent) {
  auto g = MakeTiny();
  torch::Tensor w = torch::randn({3, 6, 512});
  auto noise = g->MakeNoise(11, 3);
  auto batch = g->Synthesize(w, noise);
  ASSERT_TRUE(batch.ok());
  for (int i = 0; i < 3; ++i) {
    std::vector<torch::Tensor> one;
    for (const auto& n : noise) one.push_back(n.narrow(0, i, 1));
    auto single = g->Synthesize(w.narrow(0, i, 1), one);
    ASSERT_TRUE(single.ok());
    EXPECT_LT((*single - batch->narrow(0, i, 1)).abs().max().item<float>(), 1e-4) << i;
  }
}

TEST(StyleGan1Test, RejectsBadInputsNamingTheArgument) {
  auto g = MakeTiny();
  auto wrong_rows = g->Synthesize(torch::zeros({1, 5, 512}), {});
  ASSERT_FALSE(wrong_rows.ok());
  EXPECT_EQ(wrong_rows.status().message(), "wplus: shape [1, 5, 512], expected [N, 6, 512]");
  torch::Tensor nan = torch::zeros({1, 6, 512});
  nan[0][2][3] = std::numeric_limits<float>::quiet_NaN();
  auto with_nan = g->Synthesize(nan, {});
  ASSERT_FALSE(with_nan.ok());
  EXPECT_EQ(with_nan.status().message(), "wplus: contains NaN or Inf");
  auto few_maps = g->Synthesize(torch::zeros({1, 6, 512}), {torch::zeros({1, 1, 4, 4})});
  ASSERT_FALSE(few_maps.ok());
  EXPECT_NE(few_maps.status().message().find("noise"), std::string::npos);
  auto noise = g->MakeNoise(1);
  noise[3] = torch::zeros({1, 1, 4, 4});
  auto bad_map = g->Synthesize(torch::zeros({1, 6, 512}), noise);
  ASSERT_FALSE(bad_map.ok());
  EXPECT_EQ(bad_map.status().message(), "noise[3]: shape [1, 1, 4, 4], expected [1 or 1, 1, 8, 8]");
  auto bad_z = g->Map(torch::zeros({2, 7}));
  ASSERT_FALSE(bad_z.ok());
  EXPECT_EQ(bad_z.status().message(), "z: shape [2, 7], expected [N, 512]");
  auto ints = g->Synthesize(torch::zeros({1, 6, 512}, torch::kInt64), {});
  EXPECT_FALSE(ints.ok());
}

TEST(StyleGan1Test, WeightErrorsNameTheKey) {
  StateDict sd = RandomStyleGan1Weights(Tiny(), 1);
  StateDict missing;
  for (auto& e : sd) {
    if (e.first != "g_synthesis.blocks.8x8.epi2.style_mod.lin.bias") missing.push_back(e);
  }
  auto g1 = StyleGan1Generator::Create(missing, torch::kCPU);
  ASSERT_FALSE(g1.ok());
  EXPECT_EQ(g1.status().message(), "missing key 'g_synthesis.blocks.8x8.epi2.style_mod.lin.bias'");

  StateDict misshaped = sd;
  for (auto& e : misshaped) {
    if (e.first == "g_synthesis.blocks.16x16.conv1.weight") e.second = torch::zeros({32, 32, 1, 1});
  }
  auto g2 = StyleGan1Generator::Create(misshaped, torch::kCPU);
  ASSERT_FALSE(g2.ok());
  EXPECT_EQ(g2.status().message(),
            "key 'g_synthesis.blocks.16x16.conv1.weight' has shape [32, 32, 1, 1], expected [32, "
            "32, 3, 3]");

  StateDict extra = sd;
  extra.emplace_back("g_synthesis.blocks.16x16.surprise", torch::zeros({1}));
  auto g3 = StyleGan1Generator::Create(extra, torch::kCPU);
  ASSERT_FALSE(g3.ok());
  EXPECT_EQ(g3.status().message(), "unexpected key 'g_synthesis.blocks.16x16.surprise'");

  StateDict ints = sd;
  ints[0].second = ints[0].second.to(torch::kInt64);
  auto g4 = StyleGan1Generator::Create(ints, torch::kCPU);
  ASSERT_FALSE(g4.ok());
  EXPECT_NE(g4.status().message().find("g_mapping.dense0.weight"), std::string::npos);

  auto g5 =
      StyleGan1Generator::Create({{"features.0.weight", torch::zeros({64, 3, 3, 3})}}, torch::kCPU);
  ASSERT_FALSE(g5.ok());
  EXPECT_EQ(g5.status().message(), "missing key 'g_mapping.dense0.weight'");
}

TEST(StyleGan1Test, AcceptsTruncationAverage) {
  StateDict sd = RandomStyleGan1Weights(Tiny(), 1);
  sd.emplace_back("truncation.avg_latent", torch::ones({512}));
  auto g = StyleGan1Generator::Create(sd, torch::kCPU);
  ASSERT_TRUE(g.ok()) << g.status();
  ASSERT_TRUE((*g)->avg_latent().defined());
  EXPECT_EQ((*g)->avg_latent().sum().item<float>(), 512.f);
}

TEST(StyleGan1Test, MappingIsDeterministicAndBatched) {
  auto g = MakeTiny();
  torch::Tensor z = torch::randn({4, 512});
  auto w = g->Map(z);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->sizes(), torch::IntArrayRef({4, 512}));
  auto w1 = g->Map(z.narrow(0, 1, 1));
  ASSERT_TRUE(w1.ok());
  EXPECT_LT((*w1 - w->narrow(0, 1, 1)).abs().max().item<float>(), 1e-4);
  // Pixel norm makes the mapping invariant to the scale of z.
  auto scaled = g->Map(z * 3);
  ASSERT_TRUE(scaled.ok());
  EXPECT_LT((*scaled - *w).abs().max().item<float>(), 1e-3);
}

}  // namespace
}  // namespace i2s

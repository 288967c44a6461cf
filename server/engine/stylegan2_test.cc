#include "server/engine/stylegan2.h"

#include <string>

#include "gtest/gtest.h"

namespace i2s {
namespace {

// 16x16, channels 64 / 8 = 64 at 4..16, latent 32, 2 mapping layers.
StyleGan2Config Tiny() { return StyleGan2Config::Rosinality(16, 2, 32, 2, 8); }

std::unique_ptr<StyleGan2Generator> Make(const StateDict& sd, ModulatedConv m) {
  StyleGan2Options o;
  o.modconv = m;
  auto g = StyleGan2Generator::Create(sd, torch::Tensor(), 0, torch::kCPU, o);
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? *std::move(g) : nullptr;
}

TEST(StyleGan2ConfigTest, PublishedConfigFHas171KeysAnd18Ws) {
  StyleGan2Config c = StyleGan2Config::Rosinality(1024, 2);
  EXPECT_EQ(c.num_layers(), 18);
  EXPECT_EQ(c.num_noise_maps(), 17);
  EXPECT_EQ(c.channels, (std::vector<int64_t>{512, 512, 512, 512, 512, 256, 128, 64, 32}));
  auto keys = StyleGan2Keys(c);
  EXPECT_EQ(keys.size(), 171u);  // the spec's count for the 1024 config-f g_ema
  int64_t values = 0;
  for (const auto& [name, shape] : keys) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    values += n;
  }
  // config-f's 30.37 M parameters plus 2.80 M values of constant noise buffers.
  EXPECT_GT(values, 33'000'000);
  EXPECT_LT(values, 33'300'000);
  EXPECT_EQ(StyleGan2Config::Rosinality(256, 1).channels,
            (std::vector<int64_t>{512, 512, 512, 512, 256, 128, 64}));
}

TEST(StyleGan2ConfigTest, InfersConfigFromKeys) {
  auto c = InferStyleGan2Config(RandomStyleGan2Weights(Tiny(), 1));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->resolution, 16);
  EXPECT_EQ(c->channels, Tiny().channels);
  EXPECT_EQ(c->latent_size, 32);
  EXPECT_EQ(c->mapping_layers, 2);
}

TEST(StyleGan2ConfigTest, ErrorsNameTheKey) {
  StateDict sd = RandomStyleGan2Weights(Tiny(), 1);
  for (auto& [key, t] : sd) {
    if (key == "convs.1.activate.bias") t = torch::zeros({3});
  }
  auto g = StyleGan2Generator::Create(sd, torch::Tensor(), 0, torch::kCPU);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(std::string(g.status().message()).find("convs.1.activate.bias"), std::string::npos)
      << g.status();
  sd = RandomStyleGan2Weights(Tiny(), 1);
  sd.emplace_back("extra.weight", torch::zeros({1}));
  g = StyleGan2Generator::Create(sd, torch::Tensor(), 0, torch::kCPU);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(std::string(g.status().message()).find("extra.weight"), std::string::npos);
  sd = RandomStyleGan2Weights(Tiny(), 1);
  for (auto& [key, t] : sd) {
    if (key == "to_rgbs.0.upsample.kernel") t = torch::ones({4, 4}) / 4;
  }
  g = StyleGan2Generator::Create(sd, torch::Tensor(), 0, torch::kCPU);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(std::string(g.status().message()).find("to_rgbs.0.upsample.kernel"), std::string::npos);
}

TEST(StyleGan2Test, NoiseMapsFollowTheArchitecture) {
  auto g = Make(RandomStyleGan2Weights(Tiny(), 3), ModulatedConv::kShared);
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->num_layers(), 6);
  ASSERT_EQ(g->num_noise_maps(), 5);
  const std::vector<int64_t> sizes{4, 8, 8, 16, 16};
  auto noise = g->MakeNoise(1, 2);
  ASSERT_EQ(noise.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(g->NoiseResolution(i), sizes[i]);
    EXPECT_EQ(noise[i].sizes(), torch::IntArrayRef({2, 1, sizes[i], sizes[i]}));
    EXPECT_EQ(g->ConstantNoise()[i].sizes(), torch::IntArrayRef({1, 1, sizes[i], sizes[i]}));
  }
  // The checked entry point refuses StyleGAN1's count of maps.
  auto wrong = g->Synthesize(torch::zeros({1, 6, 32}), std::vector<torch::Tensor>(6));
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  auto img = g->Synthesize(torch::randn({2, 6, 32}), g->ConstantNoise());
  ASSERT_TRUE(img.ok()) << img.status();
  EXPECT_EQ(img->sizes(), torch::IntArrayRef({2, 3, 16, 16}));
  EXPECT_TRUE(torch::isfinite(*img).all().item<bool>());
}

// The shared-weight modulated convolution (activations scaled around one convolution)
// and the grouped per-sample weights compute the same function: images and gradients
// with respect to W+ and the noise, batched, at a size where both upsampling paths run.
TEST(StyleGan2Test, SharedAndGroupedModulatedConvolutionsAgree) {
  const StateDict sd = RandomStyleGan2Weights(StyleGan2Config::Rosinality(64, 1, 64, 2, 16), 11);
  auto shared = Make(sd, ModulatedConv::kShared);
  auto grouped = Make(sd, ModulatedConv::kGrouped);
  ASSERT_TRUE(shared && grouped);
  torch::manual_seed(5);
  torch::Tensor w = torch::randn({3, shared->num_layers(), 64});
  const auto noise = shared->MakeNoise(9, 3);
  std::vector<torch::Tensor> na, nb;
  for (const auto& n : noise) {
    na.push_back(n.clone().requires_grad_(true));
    nb.push_back(n.clone().requires_grad_(true));
  }
  torch::Tensor wa = w.clone().requires_grad_(true), wb = w.clone().requires_grad_(true);
  torch::Tensor a = shared->Forward(wa, na), b = grouped->Forward(wb, nb);
  EXPECT_EQ(a.sizes(), torch::IntArrayRef({3, 3, 64, 64}));
  EXPECT_LT((a - b).abs().max().item<float>(), 1e-4 * b.abs().max().item<float>());
  // Images of a healthy random model: not constant, mostly in [-1, 1].
  EXPECT_GT(a.std().item<float>(), 0.05);
  EXPECT_GT((a.abs() <= 1).to(torch::kFloat32).mean().item<float>(), 0.8);
  torch::Tensor probe = torch::randn_like(a);
  (a * probe).sum().backward();
  (b * probe).sum().backward();
  auto rel = [](const torch::Tensor& x, const torch::Tensor& y) {
    return ((x - y).norm() / y.norm()).item<double>();
  };
  EXPECT_LT(rel(wa.grad(), wb.grad()), 1e-4);
  EXPECT_LT(rel(na[3].grad(), nb[3].grad()), 1e-4);
  // Every image of the batch depends only on its own row.
  torch::NoGradGuard no_grad;
  torch::Tensor solo = shared->Forward(w.narrow(0, 1, 1), {});
  torch::Tensor batch = shared->Forward(w, {});
  EXPECT_LT((solo - batch.narrow(0, 1, 1)).abs().max().item<float>(), 1e-5);
}

TEST(StyleGan2Test, ConvClampBoundsTheActivations) {
  const StateDict sd = RandomStyleGan2Weights(Tiny(), 4);
  auto free = StyleGan2Generator::Create(sd, torch::Tensor(), 0, torch::kCPU);
  auto clamped = StyleGan2Generator::Create(sd, torch::Tensor(), 0.05, torch::kCPU);
  ASSERT_TRUE(free.ok() && clamped.ok());
  EXPECT_NE((*free)->fingerprint(), (*clamped)->fingerprint());  // another function
  torch::NoGradGuard no_grad;
  torch::Tensor w = torch::randn({1, 6, 32});
  torch::Tensor a = (*free)->Forward(w, {}), b = (*clamped)->Forward(w, {});
  EXPECT_GT((a - b).abs().max().item<float>(), 1e-3);
  // Each of the three ToRGB outputs is within +-0.05, so the skip sum is within 3x0.05
  // times the upsampling's largest gain (1).
  EXPECT_LE(b.abs().max().item<float>(), 3 * 0.05 + 1e-5);
  EXPECT_FALSE(StyleGan2Generator::Create(sd, torch::Tensor(), -1, torch::kCPU).ok());
}

TEST(StyleGan2Test, MeanWFromTheFile) {
  const StateDict sd = RandomStyleGan2Weights(Tiny(), 4);
  auto g = StyleGan2Generator::Create(sd, torch::full({32}, 0.5), 0, torch::kCPU);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_TRUE(torch::equal((*g)->FileMeanW(), torch::full({32}, 0.5)));
  auto bad = StyleGan2Generator::Create(sd, torch::zeros({31}), 0, torch::kCPU);
  EXPECT_FALSE(bad.ok());
  auto none = Make(sd, ModulatedConv::kShared);
  EXPECT_FALSE(none->FileMeanW().defined());
}

}  // namespace
}  // namespace i2s

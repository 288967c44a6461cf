// CUDA checks: built only when LibTorch has CUDA (I2S_HAVE_CUDA), skipped without a GPU.
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "server/engine/stylegan1.h"
#include "server/engine/stylegan2.h"
#include "server/engine/vgg16.h"

namespace i2s {
namespace {

class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(CudaTest, GeneratorMatchesCpu) {
  // 256 covers both upsampling paths (nearest <= 64, fused >= 128).
  StateDict sd = RandomStyleGan1Weights(StyleGan1Config::FromFmap(256, 2048, 256), 3);
  auto cpu = StyleGan1Generator::Create(sd, torch::kCPU);
  auto gpu = StyleGan1Generator::Create(sd, torch::Device(torch::kCUDA, 0));
  ASSERT_TRUE(cpu.ok() && gpu.ok());
  EXPECT_EQ((*cpu)->fingerprint(), (*gpu)->fingerprint());
  torch::Tensor w = torch::randn({2, (*cpu)->num_layers(), 512});
  auto a = (*cpu)->Synthesize(w, (*cpu)->MakeNoise(4, 2));
  auto b = (*gpu)->Synthesize(w, (*gpu)->MakeNoise(4, 2));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(b->is_cuda());
  // TF32 may be on for convolutions on Ampere+; the bound allows for it.
  EXPECT_LT((*a - b->cpu()).abs().max().item<float>(), 5e-2);
}

TEST_F(CudaTest, Vgg16MatchesCpu) {
  StateDict sd = RandomVgg16Weights(5);
  auto cpu = Vgg16Extractor::Create(sd, {}, torch::kCPU);
  auto gpu = Vgg16Extractor::Create(sd, {}, torch::Device(torch::kCUDA, 0));
  ASSERT_TRUE(cpu.ok() && gpu.ok());
  torch::Tensor img = torch::rand({2, 3, 64, 64});
  auto a = (*cpu)->Extract(img);
  auto b = (*gpu)->Extract(img);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_LT((a->relu4_2 - b->relu4_2.cpu()).abs().max().item<float>(),
            2e-2 * std::max(1.f, a->relu4_2.abs().max().item<float>()));
}

// Outside its mask a local edit is the base latent's render bit for bit: on CUDA this
// holds where the kernels are deterministic; this is where that is measured.
TEST_F(CudaTest, LocalBlendKeepsTheBaseOutsideTheMask) {
  const torch::Device cuda(torch::kCUDA, 0);
  std::vector<std::unique_ptr<Generator>> generators;
  auto g1 = StyleGan1Generator::Create(
      RandomStyleGan1Weights(StyleGan1Config::FromFmap(128, 1024, 256), 3), cuda);
  ASSERT_TRUE(g1.ok()) << g1.status();
  generators.push_back(*std::move(g1));
  const StyleGan2Config c2 = StyleGan2Config::Rosinality(128, 1, 512, 8, /*divisor=*/4);
  auto g2 = StyleGan2Generator::Create(RandomStyleGan2Weights(c2, 4), {}, 0, cuda);
  ASSERT_TRUE(g2.ok()) << g2.status();
  generators.push_back(*std::move(g2));
  for (auto& g : generators) {
    const int r = g->resolution();
    torch::Tensor wa = torch::randn({2, g->num_layers(), 512});
    torch::Tensor wb = torch::randn({2, g->num_layers(), 512});
    torch::Tensor mask = torch::zeros({1, 1, r, r});
    mask.narrow(2, r / 4, r / 2).narrow(3, r / 4, r / 2).fill_(1);
    auto noise = g->MakeNoise(5, 2);
    auto plain = g->Synthesize(wa, noise);
    auto blended = g->SynthesizeBlend(wa, wb, noise, g->num_layers() / 2, mask);
    ASSERT_TRUE(plain.ok() && blended.ok()) << g->architecture();
    torch::Tensor outside = (mask == 0).expand({2, 3, r, r}).to(cuda);
    EXPECT_TRUE(torch::equal(plain->masked_select(outside), blended->masked_select(outside)))
        << g->architecture();
  }
}

}  // namespace
}  // namespace i2s

// CUDA checks: built only when LibTorch has CUDA (I2S_HAVE_CUDA), skipped without a GPU.
#include "gtest/gtest.h"
#include "server/engine/stylegan1.h"
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

}  // namespace
}  // namespace i2s

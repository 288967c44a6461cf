// Parity of the engine with an independent PyTorch implementation of the same port
// (tests/oracle/stylegan1_ref.py, run by the `oracle_fixtures` CTest fixture). The Python
// side draws its own random weights and saves them with torch.save in both layouts, so
// this also checks the loader against files PyTorch itself wrote.
#include <cstdlib>
#include <string>

#include "gtest/gtest.h"
#include "server/engine/stylegan1.h"
#include "server/engine/torch_util.h"
#include "server/engine/vgg16.h"
#include "server/formats/npy.h"

namespace i2s {
namespace {

std::string FixtureDir() {
  const char* dir = std::getenv("I2S_ORACLE_DIR");
  return dir == nullptr ? "" : dir;
}

torch::Tensor ReadNpy(const std::string& name) {
  auto a = ReadNpyFile(FixtureDir() + "/" + name);
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? FloatArrayToTensor(*a) : torch::Tensor();
}

std::vector<std::pair<std::string, torch::Tensor>> ReadNpz(const std::string& name) {
  auto arrays = ReadNpzFile(FixtureDir() + "/" + name);
  EXPECT_TRUE(arrays.ok()) << arrays.status();
  std::vector<std::pair<std::string, torch::Tensor>> out;
  if (arrays.ok()) {
    for (const auto& [n, a] : *arrays) out.emplace_back(n, FloatArrayToTensor(a));
  }
  return out;
}

float MaxAbsDiff(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a.cpu() - b.cpu()).abs().max().item<float>();
}

struct Case {
  const char* name;
  float tolerance;  // max abs difference allowed on images whose values reach ~20
};

class GeneratorParityTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (FixtureDir().empty()) GTEST_SKIP() << "I2S_ORACLE_DIR not set (run through ctest)";
  }
};

TEST_P(GeneratorParityTest, MatchesPyTorchForBothFileLayouts) {
  const std::string name = GetParam().name;
  std::string fingerprint;
  for (const char* layout : {"legacy", "zip"}) {
    SCOPED_TRACE(layout);
    auto g =
        StyleGan1Generator::Load(FixtureDir() + "/" + name + "." + layout + ".pt", torch::kCPU);
    ASSERT_TRUE(g.ok()) << g.status();
    if (fingerprint.empty()) fingerprint = (*g)->fingerprint();
    EXPECT_EQ((*g)->fingerprint(), fingerprint) << "same weights, same fingerprint";

    auto w = (*g)->Map(ReadNpy(name + ".z.npy"));
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_LE(MaxAbsDiff(*w, ReadNpy(name + ".w.npy")), 1e-4);

    torch::Tensor wplus = ReadNpy(name + ".wplus.npy");
    std::vector<torch::Tensor> noise;
    for (auto& [n, t] : ReadNpz(name + ".noise.npz")) noise.push_back(t);
    ASSERT_EQ(static_cast<int>(noise.size()), (*g)->num_layers());
    auto with_noise = (*g)->Synthesize(wplus, noise);
    ASSERT_TRUE(with_noise.ok()) << with_noise.status();
    float d_noise = MaxAbsDiff(*with_noise, ReadNpy(name + ".img_noise.npy"));
    auto without = (*g)->Synthesize(wplus, {});
    ASSERT_TRUE(without.ok()) << without.status();
    float d_plain = MaxAbsDiff(*without, ReadNpy(name + ".img_nonoise.npy"));
    RecordProperty(std::string("max_abs_diff_noise_") + layout, std::to_string(d_noise));
    EXPECT_LE(d_noise, GetParam().tolerance);
    EXPECT_LE(d_plain, GetParam().tolerance);
  }
}

// gen_r32: nearest-neighbour upsampling only; gen_r128: the fused path at 128;
// gen_r1024: the published shapes (116 keys). gen_r128 allows 5e-4: with PyPI's LibTorch
// 2.11 on an AMD EPYC without AVX-512 (the CUDA build's tests on the CPU) it differs by
// 1.8e-4, against under 1e-4 with Debian's 1.13 on the same machine.
INSTANTIATE_TEST_SUITE_P(Oracle, GeneratorParityTest,
                         ::testing::Values(Case{"gen_r32", 1e-4f}, Case{"gen_r128", 5e-4f},
                                           Case{"gen_r1024", 1e-3f}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(Vgg16ParityTest, MatchesPyTorchWithAndWithoutImagenetNormalisation) {
  if (FixtureDir().empty()) GTEST_SKIP() << "I2S_ORACLE_DIR not set (run through ctest)";
  torch::Tensor input = ReadNpy("vgg.input.npy");
  std::string fingerprint;
  for (const char* file : {"vgg.zip.pth", "vgg.legacy.pth"}) {
    for (bool normalize : {false, true}) {
      SCOPED_TRACE(std::string(file) + (normalize ? " imagenet" : " plain"));
      Vgg16Options opts;
      opts.imagenet_normalize = normalize;
      auto vgg = Vgg16Extractor::Load(FixtureDir() + "/" + file, opts, torch::kCPU);
      ASSERT_TRUE(vgg.ok()) << vgg.status();
      // The zip file has all 13 convs, the legacy one only the 9 used: same extractor.
      if (fingerprint.empty()) fingerprint = (*vgg)->fingerprint();
      EXPECT_EQ((*vgg)->fingerprint(), fingerprint);
      auto f = (*vgg)->Extract(input);
      ASSERT_TRUE(f.ok()) << f.status();
      auto expected = ReadNpz(normalize ? "vgg.feats_imagenet.npz" : "vgg.feats.npz");
      ASSERT_EQ(expected.size(), 4u);
      for (auto& [layer, t] : expected) {
        torch::Tensor got = layer == "relu1_1"   ? f->relu1_1
                            : layer == "relu1_2" ? f->relu1_2
                            : layer == "relu3_2" ? f->relu3_2
                                                 : f->relu4_2;
        EXPECT_LE(MaxAbsDiff(got, t), 1e-4 * std::max(1.f, t.abs().max().item<float>())) << layer;
      }
    }
  }
}

}  // namespace
}  // namespace i2s

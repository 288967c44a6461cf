// Parity of the StyleGAN2 engine with the independent PyTorch implementation
// (tests/oracle/stylegan2_ref.py, written from the math), on files the Python side wrote:
// rosinality checkpoints (zip {g_ema, latent_avg}, legacy bare g_ema, train.py's dict with
// an argparse.Namespace and optimiser state) and an NVIDIA-structured pickle (persistent
// objects, storages as embedded torch.save bytes, a module_src that raises if run).
// Malformed files (sg2_bad/) must give errors that say what the file holds.
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "server/engine/model_files.h"
#include "server/engine/torch_util.h"
#include "server/formats/npy.h"

namespace i2s {
namespace {

std::string Dir() {
  const char* dir = std::getenv("I2S_ORACLE_DIR");
  return dir == nullptr ? "" : dir;
}

torch::Tensor Npy(const std::string& path) {
  auto a = ReadNpyFile(path);
  EXPECT_TRUE(a.ok()) << a.status();
  return a.ok() ? FloatArrayToTensor(*a) : torch::Tensor();
}

std::vector<torch::Tensor> Npz(const std::string& path) {
  auto arrays = ReadNpzFile(path);
  EXPECT_TRUE(arrays.ok()) << arrays.status();
  std::vector<torch::Tensor> out;
  if (arrays.ok()) {
    // noise_0, noise_1, ... noise_10: in numeric order, not name order.
    out.resize(arrays->size());
    for (const auto& [n, a] : *arrays) {
      const size_t i = std::stoul(n.substr(n.find('_') + 1));
      if (i < out.size()) out[i] = FloatArrayToTensor(a);
    }
  }
  return out;
}

// Max abs difference as a fraction of the reference image's range.
double RelDiff(const torch::Tensor& got, const torch::Tensor& want) {
  EXPECT_EQ(got.sizes(), want.sizes());
  const double range = (want.max() - want.min()).item<double>();
  return (got.cpu() - want).abs().max().item<double>() / std::max(range, 1e-12);
}

class StyleGan2ParityTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (Dir().empty()) GTEST_SKIP() << "I2S_ORACLE_DIR not set (run through ctest)";
    dir_ = Dir() + "/" + GetParam() + "/";
    std::ifstream meta(dir_ + "meta.json");
    std::stringstream s;
    s << meta.rdbuf();
    meta_ = s.str();
    ASSERT_FALSE(meta_.empty()) << dir_ << "meta.json";
  }
  // meta.json's "conv_clamp": a number > 0, or null.
  bool HasClamp() const {
    const std::string key = "\"conv_clamp\": ";
    const size_t at = meta_.find(key);
    if (at == std::string::npos) return false;
    return std::strtod(meta_.c_str() + at + key.size(), nullptr) > 0;
  }
  std::string dir_, meta_;
};

// The published bound: max abs difference <= 1e-4 of the image range.
constexpr double kTolerance = 1e-4;

TEST_P(StyleGan2ParityTest, EveryFileFormatRendersAndMapsLikeTheReference) {
  const torch::Tensor z = Npy(dir_ + "z.npy"), w_ref = Npy(dir_ + "w.npy");
  const torch::Tensor wplus = Npy(dir_ + "wplus.npy");
  const torch::Tensor img_const = Npy(dir_ + "img_const.npy");
  const torch::Tensor img_none = Npy(dir_ + "img_none.npy");
  const torch::Tensor img_noise = Npy(dir_ + "img_noise.npy");
  const std::vector<torch::Tensor> noise = Npz(dir_ + "noise.npz");
  const torch::Tensor latent_avg = Npy(dir_ + "latent_avg.npy");
  std::string rosinality_fingerprint;
  for (const char* file :
       {"rosinality.pt", "rosinality_legacy.pt", "rosinality_train.pt", "nvidia.pkl"}) {
    SCOPED_TRACE(file);
    const bool nvidia = std::string(file) == "nvidia.pkl";
    auto read = ReadGeneratorFile(dir_ + file);
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_EQ(read->arch, GeneratorArch::kStyleGan2) << read->container;
    auto made = CreateGenerator(*read, torch::kCPU);
    ASSERT_TRUE(made.ok()) << made.status();
    Generator& g = **made;
    EXPECT_STREQ(g.architecture(), "stylegan2");
    // Mean w: rosinality's latent_avg (convert_weight.py) and NVIDIA's w_avg; legacy and
    // train.py files carry none.
    const bool has_mean = std::string(file) == "rosinality.pt" || nvidia;
    ASSERT_EQ(g.FileMeanW().defined(), has_mean);
    if (has_mean) EXPECT_LE((g.FileMeanW() - latent_avg).abs().max().item<float>(), 0);

    auto w = g.Map(z);
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_LE(RelDiff(*w, w_ref), kTolerance);

    const bool clamped = nvidia && HasClamp();
    auto with_const = g.Synthesize(wplus, g.ConstantNoise());
    ASSERT_TRUE(with_const.ok()) << with_const.status();
    const double d_const =
        RelDiff(*with_const, clamped ? Npy(dir_ + "img_const_clamp.npy") : img_const);
    EXPECT_LE(d_const, kTolerance);
    RecordProperty(std::string("rel_diff_const_") + file, std::to_string(d_const));
    if (!clamped) {
      auto without = g.Synthesize(wplus, {});
      ASSERT_TRUE(without.ok()) << without.status();
      EXPECT_LE(RelDiff(*without, img_none), kTolerance);
      auto given = g.Synthesize(wplus, noise);
      ASSERT_TRUE(given.ok()) << given.status();
      EXPECT_LE(RelDiff(*given, img_noise), kTolerance);
    }
    // The same weights share a fingerprint in every format; a clamp is another function.
    if (rosinality_fingerprint.empty()) rosinality_fingerprint = g.fingerprint();
    if (clamped) {
      EXPECT_NE(g.fingerprint(), rosinality_fingerprint);
    } else {
      EXPECT_EQ(g.fingerprint(), rosinality_fingerprint);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, StyleGan2ParityTest,
                         ::testing::Values("sg2_r16", "sg2_r32_cm1", "sg2_r64_cm2", "sg2_r1024_f"));

// The shared-weight and the grouped modulated convolution agree with the reference at
// the published 1024 shapes too (the default is checked above).
TEST(StyleGan2ParityGroupedTest, GroupedFormMatchesAt1024) {
  if (Dir().empty()) GTEST_SKIP() << "I2S_ORACLE_DIR not set (run through ctest)";
  const std::string dir = Dir() + "/sg2_r1024_f/";
  GeneratorOptions o;
  o.stylegan2.modconv = ModulatedConv::kGrouped;
  auto g = LoadGenerator(dir + "rosinality.pt", torch::kCPU, o);
  ASSERT_TRUE(g.ok()) << g.status();
  auto img = (*g)->Synthesize(Npy(dir + "wplus.npy"), (*g)->ConstantNoise());
  ASSERT_TRUE(img.ok()) << img.status();
  EXPECT_LE(RelDiff(*img, Npy(dir + "img_const.npy")), kTolerance);
}

struct BadCase {
  const char* file;
  std::vector<const char*> words;  // all must appear in the error
};

class StyleGan2BadFileTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(StyleGan2BadFileTest, ErrorSaysWhatTheFileHolds) {
  if (Dir().empty()) GTEST_SKIP() << "I2S_ORACLE_DIR not set (run through ctest)";
  const std::string path = Dir() + "/sg2_bad/" + GetParam().file;
  auto g = LoadGenerator(path, torch::kCPU);
  ASSERT_FALSE(g.ok()) << path << " loaded";
  const std::string message(g.status().message());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument) << message;
  EXPECT_NE(message.find(path), std::string::npos) << message;
  for (const char* word : GetParam().words) {
    EXPECT_NE(message.find(word), std::string::npos) << "'" << word << "' not in: " << message;
  }
}

INSTANTIATE_TEST_SUITE_P(Files, StyleGan2BadFileTest,
                         ::testing::Values(BadCase{"stylegan3.pkl", {"StyleGAN3"}},
                                           BadCase{"conditional.pkl", {"conditional", "c_dim"}},
                                           BadCase{"tensorflow.pkl", {"TensorFlow"}},
                                           BadCase{"os_system.pkl", {"os.system"}},
                                           BadCase{"wrong_shape.pt", {"has shape"}},
                                           BadCase{"wrong_shape.pkl", {"has shape"}},
                                           BadCase{"missing_key.pt", {"missing key"}},
                                           BadCase{"truncated.pt", {}},
                                           BadCase{"truncated_legacy.pt", {}},
                                           BadCase{"truncated.pkl", {}}));

}  // namespace
}  // namespace i2s

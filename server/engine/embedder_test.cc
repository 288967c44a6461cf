#include "server/engine/embedder.h"

#include <ATen/CPUGeneratorImpl.h>
#include <unistd.h>

#include <filesystem>
#include <limits>
#include <map>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/engine/mapping_stats_file.h"
#include "server/engine/stylegan1.h"
#include "server/formats/npy.h"

namespace i2s {
namespace {

// A tiny generator (16x16, 6 W+ rows) and a random VGG keep each test to seconds on CPU.
class EmbedderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    torch::manual_seed(0);
    auto g = StyleGan1Generator::Create(
        RandomStyleGan1Weights(StyleGan1Config::FromFmap(16, 256, 32), 21), torch::kCPU);
    ASSERT_TRUE(g.ok()) << g.status();
    gen_ = *std::move(g);
    auto v = Vgg16Extractor::Create(RandomVgg16Weights(22), {}, torch::kCPU);
    ASSERT_TRUE(v.ok()) << v.status();
    vgg_ = *std::move(v);
  }

  // An image the generator can make exactly: a random W+ rendered with the noise of `seed`.
  EmbedTarget InDomainTarget(uint64_t latent_seed, uint64_t noise_seed) {
    auto mean = Embedder::MeanW(*gen_, 1000);
    EXPECT_TRUE(mean.ok());
    torch::Tensor w =
        mean->view({1, 1, 512}).expand({1, 6, 512}) +
        0.5 * torch::randn({1, 6, 512}, at::make_generator<at::CPUGeneratorImpl>(latent_seed));
    auto img = gen_->Synthesize(w, gen_->MakeNoise(noise_seed, 1));
    EXPECT_TRUE(img.ok());
    EmbedTarget t;
    t.image = ((*img)[0] + 1).div(2).clamp(0, 1);
    t.seed = noise_seed;
    return t;
  }

  EmbedOptions Fast(int steps) {
    EmbedOptions o;
    o.steps = steps;
    o.lr = 0.05;
    o.mean_w_samples = 1000;
    return o;
  }

  std::vector<EmbedResult> RunOk(const EmbedOptions& o, const std::vector<EmbedTarget>& targets,
                                 const EmbedCallbacks& cb = {},
                                 const std::vector<std::optional<EmbedCheckpoint>>& resume = {}) {
    Embedder e(gen_.get(), vgg_.get(), o);
    auto r = e.Run(targets, cb, resume);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : std::vector<EmbedResult>{};
  }

  std::unique_ptr<StyleGan1Generator> gen_;
  std::unique_ptr<Vgg16Extractor> vgg_;
};

TEST_F(EmbedderTest, InDomainInversionReachesHighPsnr) {
  EmbedTarget t = InDomainTarget(1, 5);
  std::vector<double> losses;
  EmbedCallbacks cb;
  cb.on_step = [&](const std::vector<StepMetrics>& m, double) { losses.push_back(m[0].loss); };
  auto r = RunOk(Fast(300), {t}, cb);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(r[0].status.ok());
  EXPECT_EQ(r[0].steps, 300);
  EXPECT_EQ(r[0].latent.sizes(), torch::IntArrayRef({6, 512}));
  RecordProperty("final_psnr", std::to_string(r[0].final.psnr));
  EXPECT_GT(r[0].final.psnr, 30.0);
  EXPECT_LT(losses.back(), losses.front() * 0.05);
}

TEST_F(EmbedderTest, WPlusReachesLowerLossThanW) {
  EmbedTarget t = InDomainTarget(2, 6);
  EmbedOptions o = Fast(100);
  auto wplus = RunOk(o, {t});
  o.space = LatentSpace::kW;
  auto w = RunOk(o, {t});
  ASSERT_EQ(wplus.size(), 1u);
  ASSERT_EQ(w.size(), 1u);
  RecordProperty("loss_wplus", std::to_string(wplus[0].final.loss));
  RecordProperty("loss_w", std::to_string(w[0].final.loss));
  EXPECT_LT(wplus[0].final.loss, w[0].final.loss);
  // W space: every row of the result is the same w.
  EXPECT_TRUE(torch::equal(w[0].latent[0], w[0].latent[5]));
}

TEST_F(EmbedderTest, NoisePhaseRaisesPsnr) {
  EmbedTarget t = InDomainTarget(3, 7);
  t.seed = 99;  // start from noise maps other than the target's
  EmbedOptions o = Fast(60);
  auto plain = RunOk(o, {t});
  o.noise_steps = 60;
  auto with_noise = RunOk(o, {t});
  ASSERT_EQ(plain.size(), 1u);
  ASSERT_EQ(with_noise.size(), 1u);
  EXPECT_EQ(with_noise[0].steps, 120);
  EXPECT_TRUE(with_noise[0].final.noise_phase);
  RecordProperty("psnr_w_only", std::to_string(plain[0].final.psnr));
  RecordProperty("psnr_with_noise", std::to_string(with_noise[0].final.psnr));
  EXPECT_GT(with_noise[0].final.psnr, plain[0].final.psnr + 1.0);
  // The W+ phase is identical; the noise phase leaves the latent alone.
  EXPECT_TRUE(torch::equal(plain[0].latent, with_noise[0].latent));
  EXPECT_FALSE(torch::equal(with_noise[0].noise[4], gen_->MakeNoise(99, 1)[4]));
}

TEST_F(EmbedderTest, MaskedOutPixelsDoNotPullTheLatent) {
  EmbedTarget a = InDomainTarget(4, 8);
  torch::Tensor mask = torch::zeros({1, 16, 16});
  mask.narrow(1, 0, 8).fill_(1);  // top half only
  a.mse_mask = mask;
  a.perceptual_mask = mask;
  EmbedTarget b = a;
  b.image = a.image.clone();
  b.image.narrow(1, 8, 8).copy_(torch::rand({3, 8, 16}));  // differs only outside the mask
  auto ra = RunOk(Fast(40), {a});
  auto rb = RunOk(Fast(40), {b});
  ASSERT_EQ(ra.size(), 1u);
  ASSERT_EQ(rb.size(), 1u);
  EXPECT_TRUE(torch::equal(ra[0].latent, rb[0].latent));
  EmbedTarget c = a;
  c.image = a.image.clone();
  c.image.narrow(1, 0, 8).copy_(torch::rand({3, 8, 16}));  // differs inside: must matter
  auto rc = RunOk(Fast(40), {c});
  EXPECT_FALSE(torch::equal(ra[0].latent, rc[0].latent));
}

// Loss of image `image` at every step, through the on_step callback.
EmbedCallbacks RecordLosses(int image, std::vector<double>* losses) {
  EmbedCallbacks cb;
  cb.on_step = [image, losses](const std::vector<StepMetrics>& metrics, double) {
    for (const auto& m : metrics) {
      if (m.image == image) losses->push_back(m.loss);
    }
  };
  return cb;
}

// Solo vs batched runs of one image, with batches of other sizes: the same trajectory up
// to float reassociation. Kernels may sum in another order for another batch size, and
// Adam (dividing by sqrt(v)) turns rounding noise on near-zero gradients into steps of
// up to lr, so the bounds grow along the run: tight at step 1, looser after.
void ExpectSameTrajectory(const std::vector<double>& a, const std::vector<double>& b,
                          const EmbedResult& ra, const EmbedResult& rb) {
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  EXPECT_LT(std::abs(a[0] - b[0]) / a[0], 1e-5) << "step 1";
  double worst = 0;
  for (size_t s = 0; s < a.size(); ++s) worst = std::max(worst, std::abs(a[s] - b[s]) / a[s]);
  ::testing::Test::RecordProperty("max_rel_loss_diff", std::to_string(worst));
  EXPECT_LT(worst, 2e-2);
  float diff = (ra.latent - rb.latent).abs().max().item<float>();
  ::testing::Test::RecordProperty("max_abs_latent_diff", std::to_string(diff));
  EXPECT_LT(diff, 5e-2);
}

TEST_F(EmbedderTest, ResultDoesNotDependOnBatchCompanions) {
  EmbedTarget a = InDomainTarget(5, 9), b = InDomainTarget(6, 10), c = InDomainTarget(7, 11);
  EmbedTarget d = InDomainTarget(8, 12), e = InDomainTarget(9, 13);
  // Same batch size, other companions: the image's arithmetic is the same, bit for bit.
  std::vector<double> first, second;
  auto r1 = RunOk(Fast(30), {b, a, c}, RecordLosses(1, &first));
  auto r2 = RunOk(Fast(30), {d, a, e}, RecordLosses(1, &second));
  ASSERT_EQ(r1.size(), 3u);
  ASSERT_EQ(r2.size(), 3u);
  EXPECT_EQ(first, second);
  EXPECT_TRUE(torch::equal(r1[1].latent, r2[1].latent));
  // Alone: the same trajectory up to float reassociation.
  std::vector<double> solo_losses;
  auto solo = RunOk(Fast(30), {a}, RecordLosses(0, &solo_losses));
  ExpectSameTrajectory(solo_losses, first, solo[0], r1[1]);
}

// Images with their own steps, learning rates, loss weights and noise phases share one
// batch (and its steps while both run), and each follows its solo trajectory.
TEST_F(EmbedderTest, ImagesWithTheirOwnOptionsShareABatch) {
  EmbedTarget a = InDomainTarget(5, 9), b = InDomainTarget(6, 10);
  EmbedOptions oa = Fast(30), ob = Fast(24);
  ob.lr = 0.02;
  ob.w_perceptual = 0;  // VGG runs for the batch; b's weight is 0
  ob.noise_steps = 4;
  a.options = oa;
  b.options = ob;
  std::vector<double> la, lb;
  EmbedCallbacks cb;
  int shared_steps = 0;
  cb.on_step = [&](const std::vector<StepMetrics>& metrics, double) {
    if (metrics.size() == 2) ++shared_steps;
    for (const auto& m : metrics) (m.image == 0 ? la : lb).push_back(m.loss);
  };
  auto both = RunOk(Fast(1), {a, b}, cb);
  ASSERT_EQ(both.size(), 2u);
  EXPECT_EQ(both[0].steps, 30);
  EXPECT_EQ(both[1].steps, 28);
  EXPECT_EQ(shared_steps, 28);  // b's 24 W+ steps and 4 noise steps beside a's first 28
  std::vector<double> sa, sb;
  auto solo_a = RunOk(oa, {InDomainTarget(5, 9)}, RecordLosses(0, &sa));
  auto solo_b = RunOk(ob, {InDomainTarget(6, 10)}, RecordLosses(0, &sb));
  ExpectSameTrajectory(sa, la, solo_a[0], both[0]);
  ExpectSameTrajectory(sb, lb, solo_b[0], both[1]);
  // What shapes the batch's computation must be the batch's.
  EmbedOptions other = Fast(10);
  other.space = LatentSpace::kW;
  EmbedTarget c = InDomainTarget(7, 11);
  c.options = other;
  Embedder e(gen_.get(), vgg_.get(), Fast(10));
  auto refused = e.Run({c});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("targets[0].options"), std::string::npos)
      << refused.status();
}

TEST_F(EmbedderTest, DeterministicOnCpu) {
  EmbedTarget t = InDomainTarget(8, 12);
  EmbedOptions o = Fast(20);
  o.init = LatentInit::kUniform;
  o.preview_every = 8;
  std::vector<int> preview_steps;
  EmbedCallbacks cb;
  cb.on_preview = [&](int image, int step, const torch::Tensor& rgb) {
    EXPECT_EQ(image, 0);
    EXPECT_EQ(rgb.sizes(), torch::IntArrayRef({3, 16, 16}));
    EXPECT_GE(rgb.min().item<float>(), 0.f);
    EXPECT_LE(rgb.max().item<float>(), 1.f);
    preview_steps.push_back(step);
  };
  auto r1 = RunOk(o, {t}, cb);
  EXPECT_EQ(preview_steps, (std::vector<int>{8, 16}));
  auto r2 = RunOk(o, {t});
  EXPECT_TRUE(torch::equal(r1[0].latent, r2[0].latent));
  EXPECT_EQ(r1[0].final.loss, r2[0].final.loss);
}

TEST_F(EmbedderTest, ResumeFromCheckpointEqualsUninterruptedRun) {
  EmbedTarget t = InDomainTarget(9, 13);
  EmbedOptions o = Fast(20);
  o.noise_steps = 10;
  o.checkpoint_every = 5;
  std::map<int, EmbedCheckpoint> saved;
  EmbedCallbacks cb;
  cb.on_checkpoint = [&](int, const EmbedCheckpoint& c) { saved[c.step] = c; };
  auto full = RunOk(o, {t}, cb);
  ASSERT_EQ(full.size(), 1u);
  for (int at : {10, 25}) {  // once in the W+ phase, once in the noise phase
    ASSERT_TRUE(saved.count(at)) << at;
    auto resumed = RunOk(o, {t}, {}, {saved[at]});
    ASSERT_EQ(resumed.size(), 1u);
    EXPECT_EQ(resumed[0].steps, 30);
    EXPECT_TRUE(torch::equal(resumed[0].latent, full[0].latent)) << at;
    for (size_t l = 0; l < full[0].noise.size(); ++l) {
      EXPECT_TRUE(torch::equal(resumed[0].noise[l], full[0].noise[l])) << at << " layer " << l;
    }
  }
}

TEST_F(EmbedderTest, StopRulesAndCancellation) {
  EmbedTarget t = InDomainTarget(10, 14);
  EmbedOptions o = Fast(500);
  o.target_psnr = 20;
  auto psnr = RunOk(o, {t});
  EXPECT_EQ(psnr[0].reason, StopReason::kTargetPsnr);
  EXPECT_GE(psnr[0].final.psnr, 20);
  EXPECT_LT(psnr[0].steps, 500);

  o = Fast(500);
  o.plateau_window = 5;
  o.plateau_rel_eps = 0.5;  // demands halving the loss every 5 steps: soon a plateau
  auto plateau = RunOk(o, {t});
  EXPECT_EQ(plateau[0].reason, StopReason::kPlateau);
  EXPECT_LT(plateau[0].steps, 500);

  int polls = 0;
  EmbedCallbacks cb;
  cb.cancelled = [&] { return ++polls > 3; };
  auto cancelled = RunOk(Fast(100), {t, InDomainTarget(11, 15)}, cb);
  for (const auto& r : cancelled) {
    EXPECT_EQ(r.reason, StopReason::kCancelled);
    EXPECT_EQ(r.status.code(), absl::StatusCode::kCancelled);
    EXPECT_EQ(r.steps, 3);
  }
}

TEST_F(EmbedderTest, NonFiniteImageFailsAloneWithoutPoisoningTheBatch) {
  EmbedTarget good = InDomainTarget(12, 16);
  EmbedTarget bad = InDomainTarget(13, 17);
  bad.init_latent = torch::full({6, 512}, 1e30f);
  EmbedOptions o = Fast(10);
  o.init = LatentInit::kGiven;
  good.init_latent = Embedder::MeanW(*gen_, 1000)->view({1, 512}).expand({6, 512}).clone();
  std::vector<double> solo_losses, batch_losses;
  auto solo = RunOk(o, {good}, RecordLosses(0, &solo_losses));
  auto both = RunOk(o, {bad, good}, RecordLosses(1, &batch_losses));
  ASSERT_EQ(both.size(), 2u);
  EXPECT_EQ(both[0].reason, StopReason::kFailed);
  EXPECT_EQ(both[0].status.code(), absl::StatusCode::kInternal);
  EXPECT_NE(both[0].status.message().find("non-finite"), std::string::npos) << both[0].status;
  EXPECT_TRUE(both[1].status.ok());
  EXPECT_EQ(both[1].steps, 10);
  ExpectSameTrajectory(solo_losses, batch_losses, solo[0], both[1]);
}

TEST_F(EmbedderTest, RejectsBadInputsNamingTheField) {
  Embedder e(gen_.get(), vgg_.get(), Fast(5));
  EmbedTarget t;
  t.image = torch::rand({3, 8, 8});
  auto r = e.Run({t});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "targets[0].image: shape [3, 8, 8], expected float [3, 16, 16]");
  t.image = torch::rand({3, 16, 16}) * 3;
  r = e.Run({t});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "targets[0].image: values outside [0, 1]");
  t.image = torch::rand({3, 16, 16});
  t.mse_mask = torch::zeros({1, 16, 16});
  r = e.Run({t});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "targets[0].mse_mask: selects no pixel");
  EmbedOptions o = Fast(5);
  o.lr = -1;
  auto bad_lr = Embedder(gen_.get(), vgg_.get(), o).Run({InDomainTarget(1, 1)});
  ASSERT_FALSE(bad_lr.ok());
  EXPECT_EQ(bad_lr.status().message(), "lr: must be positive and finite");
  o = Fast(5);
  o.init = LatentInit::kGiven;
  auto no_init = Embedder(gen_.get(), vgg_.get(), o).Run({InDomainTarget(1, 1)});
  ASSERT_FALSE(no_init.ok());
  EXPECT_EQ(no_init.status().message(), "targets[0].init_latent: expected [6, 512]");
}

// The mapping statistics kept in a file: written on the first use, with exactly the
// values the mapping pass gives; a valid file is used as it is (a later process then skips
// the pass); a file that does not fit this generator is replaced, never used. Each case
// uses its own sample count, since the statistics are also kept in memory per count.
TEST_F(EmbedderTest, MappingStatsFileIsWrittenReadAndCheckedAgainstTheGenerator) {
  const std::string dir = absl::StrCat(testing::TempDir(), "/mapping-stats-", getpid());
  std::filesystem::remove_all(dir);

  // Written once computed: the values of the mapping pass, bit for bit after reading back.
  ASSERT_TRUE(LoadOrSaveMappingStats(dir, *gen_, 300).ok());
  const std::string path = MappingStatsPath(dir, *gen_, 300);
  ASSERT_TRUE(std::filesystem::exists(path));
  auto mean = Embedder::MeanW(*gen_, 300);
  auto sigma = Embedder::SigmaW(*gen_, 300);
  ASSERT_TRUE(mean.ok() && sigma.ok());
  auto text = ReadFileToString(path);
  ASSERT_TRUE(text.ok());
  // Read back (relabelled as a file for count 310, which this process has not computed):
  // the same mean and sigma, bit for bit.
  std::string relabelled = *text;
  ASSERT_NE(relabelled.find("samples 300"), std::string::npos);
  relabelled.replace(relabelled.find("samples 300"), 11, "samples 310");
  ASSERT_TRUE(WriteStringToFile(MappingStatsPath(dir, *gen_, 310), relabelled).ok());
  ASSERT_TRUE(LoadOrSaveMappingStats(dir, *gen_, 310).ok());
  EXPECT_TRUE(torch::equal(*Embedder::MeanW(*gen_, 310), *mean));
  EXPECT_EQ(*Embedder::SigmaW(*gen_, 310), *sigma);
  // The same text as a file for count 301 (the header says 300): not used, replaced.
  const std::string path301 = MappingStatsPath(dir, *gen_, 301);
  ASSERT_TRUE(WriteStringToFile(path301, *text).ok());
  ASSERT_TRUE(LoadOrSaveMappingStats(dir, *gen_, 301).ok());
  auto text301 = ReadFileToString(path301);
  ASSERT_TRUE(text301.ok());
  EXPECT_NE(text301->find("samples 301"), std::string::npos);

  // A valid file with values of its own is used as it is: proof that it is read.
  std::string planted = *text;
  const size_t mean_at = planted.find("\nmean ");
  ASSERT_NE(mean_at, std::string::npos);
  planted = planted.substr(0, mean_at);
  for (const char* from : {"samples 300", "sigma "})
    ASSERT_NE(planted.find(from), std::string::npos);
  planted.replace(planted.find("samples 300"), 11, "samples 302");
  planted = planted.substr(0, planted.find("sigma ")) + "sigma 3.5\nmean";
  for (int i = 0; i < 512; ++i) planted += " 0.25";
  planted += "\n";
  ASSERT_TRUE(WriteStringToFile(MappingStatsPath(dir, *gen_, 302), planted).ok());
  ASSERT_TRUE(LoadOrSaveMappingStats(dir, *gen_, 302).ok());
  EXPECT_TRUE(torch::equal(*Embedder::MeanW(*gen_, 302), torch::full({512}, 0.25f)));
  EXPECT_EQ(*Embedder::SigmaW(*gen_, 302), 3.5);

  // The same file with a NaN, or one value short, or another generator's fingerprint: not
  // used (the mapping pass runs and rewrites the file).
  int count = 303;
  for (const std::string& bad : {planted.substr(0, planted.size() - 6) + " nan\n",
                                 planted.substr(0, planted.size() - 6) + "\n",
                                 std::string("i2s mapping stats v1\nfingerprint sha256:00\n") +
                                     planted.substr(planted.find("device "))}) {
    std::string file = bad;
    file.replace(file.find("samples 302"), 11, absl::StrCat("samples ", count));
    ASSERT_TRUE(WriteStringToFile(MappingStatsPath(dir, *gen_, count), file).ok());
    ASSERT_TRUE(LoadOrSaveMappingStats(dir, *gen_, count).ok());
    EXPECT_FALSE(torch::equal(*Embedder::MeanW(*gen_, count), torch::full({512}, 0.25f)))
        << "case " << count;
    ++count;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace i2s

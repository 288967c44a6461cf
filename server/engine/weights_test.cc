#include "server/engine/weights.h"

#include <cstdio>
#include <string>

#include "gtest/gtest.h"
#include "server/formats/npy.h"

namespace i2s {
namespace {

std::string TempPath(const std::string& name) { return ::testing::TempDir() + "/" + name; }

StateDict Small() {
  return {{"a.weight", torch::arange(12, torch::kFloat32).view({3, 4})},
          {"a.bias", torch::tensor({0.5f, -1.f, 2.f})}};
}

TEST(WeightsTest, SaveLoadRoundTripBothFormats) {
  for (TorchFileFormat format : {TorchFileFormat::kZip, TorchFileFormat::kLegacy}) {
    std::string path = TempPath(std::string("small_") + TorchFileFormatName(format) + ".pt");
    ASSERT_TRUE(SaveWeights(path, Small(), format).ok());
    auto loaded = LoadWeights(path);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->format, format);
    ASSERT_EQ(loaded->tensors.size(), 2u);
    EXPECT_EQ(loaded->tensors[0].first, "a.weight");
    EXPECT_TRUE(torch::equal(loaded->tensors[0].second, Small()[0].second));
    EXPECT_TRUE(torch::equal(loaded->tensors[1].second, Small()[1].second));
    EXPECT_EQ(WeightsFingerprint(loaded->tensors), WeightsFingerprint(Small()));
  }
}

TEST(WeightsTest, SkippedKeysAreListedNotLoaded) {
  std::string path = TempPath("skip.pt");
  ASSERT_TRUE(SaveWeights(path, Small(), TorchFileFormat::kZip).ok());
  auto loaded = LoadWeights(path, [](const std::string& key) { return key == "a.weight"; });
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->tensors.size(), 1u);
  EXPECT_EQ(loaded->tensors[0].first, "a.bias");
  EXPECT_EQ(loaded->skipped, std::vector<std::string>{"a.weight"});
}

TEST(WeightsTest, FingerprintDependsOnContentNotOrder) {
  StateDict sd = Small();
  StateDict reversed = {sd[1], sd[0]};
  EXPECT_EQ(WeightsFingerprint(sd), WeightsFingerprint(reversed));
  StateDict changed = {{"a.weight", sd[0].second.clone()}, sd[1]};
  changed[0].second[0][0] = 1e-7f;
  EXPECT_NE(WeightsFingerprint(sd), WeightsFingerprint(changed));
  StateDict renamed = {{"b.weight", sd[0].second}, sd[1]};
  EXPECT_NE(WeightsFingerprint(sd), WeightsFingerprint(renamed));
  EXPECT_EQ(WeightsFingerprint(sd).rfind("sha256:", 0), 0u);
  EXPECT_EQ(WeightsFingerprint(sd).size(), 7u + 64u);
}

TEST(WeightsTest, ErrorsNameTheFile) {
  std::string path = TempPath("garbage.pt");
  ASSERT_TRUE(WriteStringToFile(path, "this is not a weight file").ok());
  auto loaded = LoadWeights(path);
  ASSERT_FALSE(loaded.ok());
  EXPECT_NE(loaded.status().message().find(path), std::string::npos) << loaded.status();
  auto missing = LoadWeights(TempPath("does_not_exist.pt"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

TEST(WeightsTest, WeightMapChecksShapesAndLeftovers) {
  WeightMap m(Small());
  auto bad = m.Take("a.weight", {4, 3});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "key 'a.weight' has shape [3, 4], expected [4, 3]");
  auto missing = m.Take("a.scale", {3});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(), "missing key 'a.scale'");
  ASSERT_TRUE(m.Take("a.weight", {3, 4}).ok());
  auto leftover = m.CheckAllUsed([](const std::string&) { return false; });
  ASSERT_FALSE(leftover.ok());
  EXPECT_EQ(leftover.message(), "unexpected key 'a.bias'");
  EXPECT_TRUE(m.CheckAllUsed([](const std::string& k) { return k == "a.bias"; }).ok());
}

}  // namespace
}  // namespace i2s

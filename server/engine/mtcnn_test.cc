// MTCNN's loading and input checks with seeded random weights of the published shapes (the
// trained files are checked against facenet-pytorch by tests/integration/mtcnn_oracle_test.py).
#include "server/engine/mtcnn.h"

#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace i2s {
namespace {

StateDict Random(const std::vector<std::pair<std::string, std::vector<int64_t>>>& shapes) {
  torch::manual_seed(7);
  StateDict sd;
  for (const auto& [key, shape] : shapes) sd.emplace_back(key, 0.1 * torch::randn(shape));
  return sd;
}

StateDict PNetWeights() {
  return Random({{"conv1.weight", {10, 3, 3, 3}},
                 {"conv1.bias", {10}},
                 {"prelu1.weight", {10}},
                 {"conv2.weight", {16, 10, 3, 3}},
                 {"conv2.bias", {16}},
                 {"prelu2.weight", {16}},
                 {"conv3.weight", {32, 16, 3, 3}},
                 {"conv3.bias", {32}},
                 {"prelu3.weight", {32}},
                 {"conv4_1.weight", {2, 32, 1, 1}},
                 {"conv4_1.bias", {2}},
                 {"conv4_2.weight", {4, 32, 1, 1}},
                 {"conv4_2.bias", {4}}});
}
StateDict RNetWeights() {
  return Random({{"conv1.weight", {28, 3, 3, 3}},
                 {"conv1.bias", {28}},
                 {"prelu1.weight", {28}},
                 {"conv2.weight", {48, 28, 3, 3}},
                 {"conv2.bias", {48}},
                 {"prelu2.weight", {48}},
                 {"conv3.weight", {64, 48, 2, 2}},
                 {"conv3.bias", {64}},
                 {"prelu3.weight", {64}},
                 {"dense4.weight", {128, 576}},
                 {"dense4.bias", {128}},
                 {"prelu4.weight", {128}},
                 {"dense5_1.weight", {2, 128}},
                 {"dense5_1.bias", {2}},
                 {"dense5_2.weight", {4, 128}},
                 {"dense5_2.bias", {4}}});
}
StateDict ONetWeights() {
  return Random({{"conv1.weight", {32, 3, 3, 3}},
                 {"conv1.bias", {32}},
                 {"prelu1.weight", {32}},
                 {"conv2.weight", {64, 32, 3, 3}},
                 {"conv2.bias", {64}},
                 {"prelu2.weight", {64}},
                 {"conv3.weight", {64, 64, 3, 3}},
                 {"conv3.bias", {64}},
                 {"prelu3.weight", {64}},
                 {"conv4.weight", {128, 64, 2, 2}},
                 {"conv4.bias", {128}},
                 {"prelu4.weight", {128}},
                 {"dense5.weight", {256, 1152}},
                 {"dense5.bias", {256}},
                 {"prelu5.weight", {256}},
                 {"dense6_1.weight", {2, 256}},
                 {"dense6_1.bias", {2}},
                 {"dense6_2.weight", {4, 256}},
                 {"dense6_2.bias", {4}},
                 {"dense6_3.weight", {10, 256}},
                 {"dense6_3.bias", {10}}});
}

TEST(MtcnnTest, NetworksHaveThePublishedOutputs) {
  auto m = Mtcnn::Create(PNetWeights(), RNetWeights(), ONetWeights());
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)->fingerprint().rfind("sha256:", 0), 0u);
  // P-Net: 12x12 windows at stride 2 -> (H - 12) / 2 + 1 cells; probabilities sum to 1.
  auto p = (*m)->PNet(torch::zeros({1, 3, 30, 40}));
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[0].sizes(), (std::vector<int64_t>{1, 4, 10, 15}));
  EXPECT_EQ(p[1].sizes(), (std::vector<int64_t>{1, 2, 10, 15}));
  EXPECT_TRUE(torch::allclose(p[1].sum(1), torch::ones({1, 10, 15})));
  auto r = (*m)->RNet(torch::zeros({5, 3, 24, 24}));
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].sizes(), (std::vector<int64_t>{5, 4}));
  EXPECT_EQ(r[1].sizes(), (std::vector<int64_t>{5, 2}));
  auto o = (*m)->ONet(torch::zeros({3, 3, 48, 48}));
  ASSERT_EQ(o.size(), 3u);
  EXPECT_EQ(o[0].sizes(), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(o[1].sizes(), (std::vector<int64_t>{3, 10}));
  EXPECT_EQ(o[2].sizes(), (std::vector<int64_t>{3, 2}));
}

TEST(MtcnnTest, WrongFilesAreNamed) {
  StateDict bad = RNetWeights();
  bad[9].second = torch::zeros({128, 575});  // dense4.weight
  auto m = Mtcnn::Create(PNetWeights(), bad, ONetWeights());
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("rnet"), std::string::npos) << m.status();
  EXPECT_NE(m.status().message().find("dense4.weight"), std::string::npos) << m.status();

  StateDict extra = ONetWeights();
  extra.emplace_back("dense7.weight", torch::zeros({1}));
  m = Mtcnn::Create(PNetWeights(), RNetWeights(), extra);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("dense7.weight"), std::string::npos) << m.status();

  // P-Net's file given as R-Net's.
  m = Mtcnn::Create(PNetWeights(), PNetWeights(), ONetWeights());
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("rnet"), std::string::npos) << m.status();

  auto missing = Mtcnn::Load(::testing::TempDir() + "/no-such-mtcnn");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("pnet.pt"), std::string::npos) << missing.status();
}

TEST(MtcnnTest, DetectChecksItsInputs) {
  auto m = Mtcnn::Create(PNetWeights(), RNetWeights(), ONetWeights());
  ASSERT_TRUE(m.ok()) << m.status();
  for (const torch::Tensor& bad : {torch::zeros({4, 20, 20}), torch::zeros({20, 20}),
                                   torch::zeros({1, 3, 20, 20}), torch::zeros({3, 0, 20})}) {
    auto faces = (*m)->Detect(bad);
    EXPECT_EQ(faces.status().code(), absl::StatusCode::kInvalidArgument) << bad.sizes();
  }
  MtcnnOptions small;
  small.min_face_size = 5;
  EXPECT_EQ((*m)->Detect(torch::zeros({3, 40, 40}), small).status().code(),
            absl::StatusCode::kInvalidArgument);
  MtcnnOptions factor;
  factor.scale_factor = 1;
  EXPECT_EQ((*m)->Detect(torch::zeros({3, 40, 40}), factor).status().code(),
            absl::StatusCode::kInvalidArgument);
  MtcnnOptions threshold;
  threshold.thresholds[1] = 1.5;
  EXPECT_EQ((*m)->Detect(torch::zeros({3, 40, 40}), threshold).status().code(),
            absl::StatusCode::kInvalidArgument);
  // An image smaller than one P-Net window: no pyramid level, no face.
  auto tiny = (*m)->Detect(torch::zeros({3, 8, 8}));
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_TRUE(tiny->empty());
  // Everything accepted (thresholds 0): every stage runs, results are ordered by area.
  MtcnnOptions all;
  all.thresholds = {0, 0, 0};
  auto faces = (*m)->Detect(torch::rand({3, 60, 80}), all);
  ASSERT_TRUE(faces.ok()) << faces.status();
  ASSERT_FALSE(faces->empty());
  for (size_t i = 1; i < faces->size(); ++i) {
    EXPECT_GE((*faces)[i - 1].Area(), (*faces)[i].Area());
  }
}

}  // namespace
}  // namespace i2s

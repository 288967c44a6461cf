#include "server/engine/vgg16.h"

#include "gtest/gtest.h"

namespace i2s {
namespace {

TEST(Vgg16Test, FeatureShapes) {
  auto vgg = Vgg16Extractor::Create(RandomVgg16Weights(1), {}, torch::kCPU);
  ASSERT_TRUE(vgg.ok()) << vgg.status();
  auto f = (*vgg)->Extract(torch::rand({2, 3, 32, 32}));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->relu1_1.sizes(), torch::IntArrayRef({2, 64, 32, 32}));
  EXPECT_EQ(f->relu1_2.sizes(), torch::IntArrayRef({2, 64, 32, 32}));
  EXPECT_EQ(f->relu3_2.sizes(), torch::IntArrayRef({2, 256, 8, 8}));
  EXPECT_EQ(f->relu4_2.sizes(), torch::IntArrayRef({2, 512, 4, 4}));
  EXPECT_GE(f->relu4_2.min().item<float>(), 0.f);
}

TEST(Vgg16Test, ImagenetNormalisationChangesFeatures) {
  StateDict sd = RandomVgg16Weights(1);
  auto plain = Vgg16Extractor::Create(sd, {}, torch::kCPU);
  Vgg16Options opts;
  opts.imagenet_normalize = true;
  auto norm = Vgg16Extractor::Create(sd, opts, torch::kCPU);
  ASSERT_TRUE(plain.ok() && norm.ok());
  torch::Tensor img = torch::rand({1, 3, 16, 16});
  auto a = (*plain)->Extract(img);
  auto b = (*norm)->Extract(img);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_GT((a->relu1_1 - b->relu1_1).abs().max().item<float>(), 1e-3);
  // Normalising by hand and feeding the plain extractor gives the same features.
  auto c = (*plain)->Extract((img - torch::tensor({0.485f, 0.456f, 0.406f}).view({1, 3, 1, 1})) /
                             torch::tensor({0.229f, 0.224f, 0.225f}).view({1, 3, 1, 1}));
  ASSERT_TRUE(c.ok());
  EXPECT_LT((c->relu4_2 - b->relu4_2).abs().max().item<float>(), 1e-4);
}

TEST(Vgg16Test, PublishedExtrasAreIgnoredOthersRejected) {
  StateDict sd = RandomVgg16Weights(2, /*all_features=*/true);
  sd.emplace_back("classifier.6.weight", torch::zeros({10, 4}));
  EXPECT_TRUE(Vgg16Extractor::Create(sd, {}, torch::kCPU).ok());
  sd.emplace_back("features.30.weight", torch::zeros({1}));
  auto bad = Vgg16Extractor::Create(sd, {}, torch::kCPU);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "unexpected key 'features.30.weight'");
  StateDict missing = RandomVgg16Weights(2);
  missing.erase(missing.begin() + 5);  // features.5.bias
  auto m = Vgg16Extractor::Create(missing, {}, torch::kCPU);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().message(), "missing key 'features.5.bias'");
}

TEST(Vgg16Test, RejectsBadImages) {
  auto vgg = Vgg16Extractor::Create(RandomVgg16Weights(1), {}, torch::kCPU);
  ASSERT_TRUE(vgg.ok());
  EXPECT_FALSE((*vgg)->Extract(torch::rand({1, 1, 32, 32})).ok());
  EXPECT_FALSE((*vgg)->Extract(torch::rand({3, 32, 32})).ok());
  EXPECT_FALSE((*vgg)->Extract(torch::rand({1, 3, 4, 4})).ok());
}

}  // namespace
}  // namespace i2s

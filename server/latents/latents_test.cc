// server/latents without gRPC: latent files in and out, new latents under request IDs, and
// rendering (noise choice and encodings) on a small seeded generator.
#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/engine/model_files.h"
#include "server/engine/torch_util.h"
#include "server/formats/npy.h"
#include "server/latents/latent_file.h"
#include "server/latents/new_latent.h"
#include "server/latents/render.h"
#include "server/store/sqlite_store.h"

namespace i2s {
namespace {

constexpr int kLayers = 4, kSize = 8;

ModelInfo SmallModel() {
  ModelInfo m;
  m.name = "small";
  m.fingerprint = "sha256:abc";
  m.num_layers = kLayers;
  m.latent_size = kSize;
  return m;
}

FloatArray Ramp(std::vector<int64_t> shape) {
  FloatArray a;
  a.shape = shape;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  for (int64_t i = 0; i < n; ++i) a.values.push_back(0.25f * static_cast<float>(i) - 3.f);
  return a;
}

TEST(LatentFileTest, ImportsEveryLayoutUsersHave) {
  const FloatArray wplus = Ramp({kLayers, kSize});
  auto rec = ImportedLatent(SerializeNpy(wplus), SmallModel(), "file");
  ASSERT_TRUE(rec.ok()) << rec.status();
  EXPECT_EQ(rec->values, wplus.values);
  EXPECT_EQ(rec->source, "import");
  EXPECT_EQ(rec->model, "small");
  EXPECT_EQ(rec->fingerprint, "sha256:abc");
  EXPECT_EQ(rec->num_layers, kLayers);
  EXPECT_EQ(rec->latent_size, kSize);

  // NVIDIA's projected_w.npz [1, L, D]: the same values.
  FloatArray projected = wplus;
  projected.shape.insert(projected.shape.begin(), 1);
  auto npz = SerializeProjectedW(projected);
  ASSERT_TRUE(npz.ok()) << npz.status();
  auto from_npz = ImportedLatent(*npz, SmallModel(), "file");
  ASSERT_TRUE(from_npz.ok()) << from_npz.status();
  EXPECT_EQ(from_npz->values, wplus.values);

  // One w [D]: the same w on every layer.
  const FloatArray w = Ramp({kSize});
  auto repeated = ImportedLatent(SerializeNpy(w), SmallModel(), "file");
  ASSERT_TRUE(repeated.ok()) << repeated.status();
  ASSERT_EQ(repeated->values.size(), static_cast<size_t>(kLayers * kSize));
  for (int l = 0; l < kLayers; ++l) {
    EXPECT_EQ(std::vector<float>(repeated->values.begin() + l * kSize,
                                 repeated->values.begin() + (l + 1) * kSize),
              w.values)
        << "layer " << l;
  }
}

TEST(LatentFileTest, RefusesWhatTheModelCannotUseNamingTheField) {
  auto wrong =
      ImportedLatent(SerializeNpy(Ramp({kLayers - 1, kSize})), SmallModel(), "latent_file");
  ASSERT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrong.status().message().find("latent_file: shape [3, 8]"), std::string::npos)
      << wrong.status();
  EXPECT_NE(wrong.status().message().find("needs [4, 8]"), std::string::npos) << wrong.status();

  for (float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    FloatArray a = Ramp({kLayers, kSize});
    a.values[5] = bad;
    auto refused = ImportedLatent(SerializeNpy(a), SmallModel(), "latent_file");
    ASSERT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(refused.status().message(), "latent_file: contains NaN or Inf");
  }
  auto garbage = ImportedLatent("not a latent file", SmallModel(), "latent_file");
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.status().message().rfind("latent_file", 0), 0u) << garbage.status();
}

TEST(LatentFileTest, ExportedFilesImportBackExactly) {
  LatentRecord rec;
  rec.num_layers = kLayers;
  rec.latent_size = kSize;
  rec.values = Ramp({kLayers, kSize}).values;
  for (bool projected_w : {false, true}) {
    auto file = LatentFile(rec, projected_w);
    ASSERT_TRUE(file.ok()) << file.status();
    auto parsed = ParseLatentBytes(*file);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    const std::vector<int64_t> shape = projected_w ? std::vector<int64_t>{1, kLayers, kSize}
                                                   : std::vector<int64_t>{kLayers, kSize};
    EXPECT_EQ(parsed->shape, shape);
    auto back = ImportedLatent(*file, SmallModel(), "file");
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->values, rec.values);
  }
}

class NewLatentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto opened = SqliteStore::Open(":memory:");
    ASSERT_TRUE(opened.ok()) << opened.status();
    store_ = *std::move(opened);
  }
  LatentRecord Imported() {
    auto rec = ImportedLatent(SerializeNpy(Ramp({kLayers, kSize})), SmallModel(), "file");
    EXPECT_TRUE(rec.ok()) << rec.status();
    return *rec;
  }
  size_t Count(const std::string& tenant) {
    auto page = store_->ListLatents(Page{}, "", tenant);
    EXPECT_TRUE(page.ok()) << page.status();
    return page.ok() ? page->latents.size() : 0;
  }
  std::unique_ptr<SqliteStore> store_;
};

TEST_F(NewLatentTest, StoredUnderANewIdForTheTenantAndReturnedWithoutValues) {
  auto a = StoreNewLatent(store_.get(), "alice", RequestKey{"ImportLatent", "", "h"}, Imported());
  auto b = StoreNewLatent(store_.get(), "alice", RequestKey{"ImportLatent", "", "h"}, Imported());
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  EXPECT_NE(a->id, b->id);
  EXPECT_EQ(a->id.rfind("lat_", 0), 0u) << a->id;
  EXPECT_EQ(a->tenant, "alice");
  EXPECT_GT(a->created_unix_ms, 0);
  EXPECT_TRUE(a->values.empty());
  auto stored = store_->GetLatent(a->id);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->values, Ramp({kLayers, kSize}).values);
  EXPECT_EQ(stored->tenant, "alice");
  EXPECT_EQ(Count("alice"), 2u);
}

TEST_F(NewLatentTest, ARequestIdMakesTheCallIdempotentPerTenant) {
  const RequestKey key{"ImportLatent", "req-1", "hash-1"};
  auto first = StoreNewLatent(store_.get(), "alice", key, Imported());
  ASSERT_TRUE(first.ok()) << first.status();
  // The repeat stores nothing and answers with the first latent.
  auto again = StoreNewLatent(store_.get(), "alice", key, Imported());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->id, first->id);
  EXPECT_TRUE(again->values.empty());
  EXPECT_EQ(Count("alice"), 1u);
  // The same key for another request is refused, and stores nothing either.
  auto other = StoreNewLatent(store_.get(), "alice", RequestKey{"ImportLatent", "req-1", "hash-2"},
                              Imported());
  EXPECT_FALSE(other.ok());
  EXPECT_EQ(Count("alice"), 1u);
  // Keys belong to their tenant: bob's req-1 is a new latent of bob's.
  auto bobs = StoreNewLatent(store_.get(), "bob", key, Imported());
  ASSERT_TRUE(bobs.ok()) << bobs.status();
  EXPECT_NE(bobs->id, first->id);
  EXPECT_EQ(Count("bob"), 1u);
}

TEST(EditResultTest, TakesTheModelAndTheNoiseOfItsFirstInput) {
  LatentInput first;
  first.noise_npz = "maps";
  first.noise_seed = 77;
  const torch::Tensor w = torch::arange(kLayers * kSize, torch::kFloat32).view({kLayers, kSize});
  LatentRecord rec = EditResult(SmallModel(), w, first, "stylemix", {"lat_a", "lat_b"},
                                R"({"crossover":2})", {{"k", "v"}});
  EXPECT_EQ(rec.model, "small");
  EXPECT_EQ(rec.fingerprint, "sha256:abc");
  EXPECT_EQ(rec.num_layers, kLayers);
  EXPECT_EQ(rec.latent_size, kSize);
  ASSERT_EQ(rec.values.size(), static_cast<size_t>(kLayers * kSize));
  for (int i = 0; i < kLayers * kSize; ++i) EXPECT_EQ(rec.values[i], static_cast<float>(i));
  EXPECT_EQ(rec.noise_npz, "maps");
  EXPECT_EQ(rec.noise_seed, 77u);
  EXPECT_EQ(rec.source, "stylemix");
  EXPECT_EQ(rec.parents, (std::vector<std::string>{"lat_a", "lat_b"}));
  EXPECT_EQ(rec.params_json, R"({"crossover":2})");
  EXPECT_EQ(rec.labels.at("k"), "v");
}

class RenderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto g = CreateGenerator(
        RandomGeneratorFile(GeneratorArch::kStyleGan1, 16, 256, /*seed=*/3, 32), torch::kCPU);
    ASSERT_TRUE(g.ok()) << g.status();
    g_ = *std::move(g);
    torch::manual_seed(1);
    w_ = torch::randn({g_->num_layers(), g_->latent_size()},
                      torch::TensorOptions().dtype(torch::kFloat32)) *
         0.5;
    source_.w = w_;
    source_.noise_seed = 5;
  }
  torch::Tensor Raw(const LatentInput& source, NoiseMode mode) {
    RenderSettings s;
    s.noise = mode;
    s.encoding = ImageEncoding::kRawFloat32;
    auto out = RenderLatent(*g_, w_, source, s, "render");
    EXPECT_TRUE(out.ok()) << out.status();
    if (!out.ok()) return {};
    auto array = ParseNpy(out->data);
    EXPECT_TRUE(array.ok()) << array.status();
    EXPECT_EQ(array->shape, (std::vector<int64_t>{3, 16, 16}));
    return FloatArrayToTensor(*array);
  }
  std::unique_ptr<Generator> g_;
  torch::Tensor w_;
  LatentInput source_;
};

TEST_F(RenderTest, RawOutputIsTheGeneratorsOutput) {
  auto expected = g_->Synthesize(w_.unsqueeze(0), {});
  ASSERT_TRUE(expected.ok()) << expected.status();
  EXPECT_TRUE(torch::equal(Raw(source_, NoiseMode::kNone), (*expected)[0]));
}

TEST_F(RenderTest, SeededNoiseFollowsTheLatentsSeed) {
  const torch::Tensor a = Raw(source_, NoiseMode::kSeeded);
  EXPECT_TRUE(torch::equal(a, Raw(source_, NoiseMode::kSeeded)));
  LatentInput other = source_;
  other.noise_seed = 6;
  EXPECT_FALSE(torch::equal(a, Raw(other, NoiseMode::kSeeded)));
  EXPECT_FALSE(torch::equal(a, Raw(source_, NoiseMode::kNone)));
  // A StyleGAN1 latent without maps of its own: auto is the model's default, seeded noise.
  EXPECT_TRUE(torch::equal(a, Raw(source_, NoiseMode::kAuto)));
}

TEST_F(RenderTest, NoiseTheModelOrLatentLacksIsRefusedNamingTheField) {
  auto constant = NoiseFor(source_, *g_, NoiseMode::kConstant, "synthesize");
  ASSERT_EQ(constant.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(constant.status().message().rfind("synthesize", 0), 0u) << constant.status();
  auto own = NoiseFor(source_, *g_, NoiseMode::kLatent, "synthesize");
  ASSERT_EQ(own.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(own.status().message().rfind("synthesize", 0), 0u) << own.status();
}

TEST_F(RenderTest, PngAndJpegAreImagesOfTheModelsSize) {
  for (ImageEncoding encoding : {ImageEncoding::kPng, ImageEncoding::kJpeg}) {
    RenderSettings s;
    s.noise = NoiseMode::kSeeded;
    s.encoding = encoding;
    auto out = RenderLatent(*g_, w_, source_, s, "render");
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->width, 16);
    EXPECT_EQ(out->height, 16);
    const std::string magic = encoding == ImageEncoding::kPng ? "\x89PNG" : "\xff\xd8\xff";
    EXPECT_EQ(out->data.substr(0, magic.size()), magic);
  }
}

}  // namespace
}  // namespace i2s

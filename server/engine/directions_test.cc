#include "server/engine/directions.h"

#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gtest/gtest.h"
#include "server/engine/edits.h"
#include "server/engine/torch_util.h"
#include "server/formats/npy.h"

namespace i2s {
namespace {

constexpr int kL = 6;
constexpr int kD = 8;
const LatentLayout kLayout{kL, kD};

Direction MakeDirection(torch::Tensor v, double sigma = 1.0, std::string name = "d") {
  Direction d;
  d.name = std::move(name);
  d.vector = v.to(torch::kFloat32).contiguous();
  d.sigma = sigma;
  d.source_format = "test";
  return d;
}

std::string Npy(const torch::Tensor& t) { return SerializeNpy(TensorToFloatArray(t)); }

DirectionImportOptions Options(std::vector<int> components = {}) {
  DirectionImportOptions o;
  o.layout = kLayout;
  o.name = "smile";
  o.components = std::move(components);
  return o;
}

// GANSpace's decomposition.py layout: lat_comp [N, 1, D], lat_stdev [N], plus members that
// are not used.
std::string GanSpaceNpz(const torch::Tensor& comp, const torch::Tensor& stdev,
                        bool with_stdev = true) {
  std::vector<std::pair<std::string, FloatArray>> arrays;
  arrays.emplace_back("act_comp", TensorToFloatArray(torch::randn({comp.size(0), 3})));
  arrays.emplace_back("lat_comp", TensorToFloatArray(comp));
  arrays.emplace_back("lat_mean", TensorToFloatArray(torch::randn({1, kD})));
  if (with_stdev) arrays.emplace_back("lat_stdev", TensorToFloatArray(stdev));
  arrays.emplace_back("var_ratio", TensorToFloatArray(torch::rand({comp.size(0)})));
  return *SerializeNpz(arrays);
}

// Expects InvalidArgument whose message starts with "<field>: ".
template <typename T>
void ExpectInvalid(const absl::StatusOr<T>& result, absl::string_view field) {
  ASSERT_FALSE(result.ok()) << "expected an error about " << field;
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  EXPECT_TRUE(absl::StartsWith(result.status().message(), absl::StrCat(field, ": ")))
      << result.status();
}

TEST(DirectionsTest, ApplyAddsOnChosenRowsAndLeavesTheOthersBitIdentical) {
  torch::Tensor w = torch::randn({2, kL, kD});
  Direction d = MakeDirection(torch::randn({kD}));
  ApplyDirectionsOptions options;
  options.first_layer = 2;
  options.last_layer = 3;
  auto out = ApplyDirections(w, {d}, {1.5}, options);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->sizes(), torch::IntArrayRef({2, kL, kD}));
  for (int n = 0; n < 2; ++n) {
    for (int l = 0; l < kL; ++l) {
      if (l == 2 || l == 3) {
        EXPECT_TRUE(torch::equal((*out)[n][l], w[n][l] + d.vector * 1.5f)) << n << " " << l;
      } else {
        EXPECT_TRUE(torch::equal((*out)[n][l], w[n][l])) << n << " " << l;
      }
    }
  }
  // Default range: every row; an [L, D] w gives [1, L, D].
  auto all = ApplyDirections(w[0], {d}, {-2.0});
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->sizes(), torch::IntArrayRef({1, kL, kD}));
  EXPECT_TRUE(torch::allclose((*all)[0], w[0] - 2.0 * d.vector, 1e-6, 1e-6));
  // Alpha 0 changes nothing.
  EXPECT_TRUE(torch::equal((*ApplyDirections(w, {d}, {0.0}))[1], w[1]));
}

TEST(DirectionsTest, PerLayerDirectionAddsItsOwnRowAndBroadcastMatchesRepeatedRows) {
  torch::Tensor w = torch::randn({kL, kD});
  Direction per_layer = MakeDirection(torch::randn({kL, kD}));
  ApplyDirectionsOptions options;
  options.first_layer = 1;
  options.last_layer = 4;
  auto out = ApplyDirections(w, {per_layer}, {0.75}, options);
  ASSERT_TRUE(out.ok()) << out.status();
  for (int l = 0; l < kL; ++l) {
    torch::Tensor expected = l >= 1 && l <= 4 ? w[l] + per_layer.vector[l] * 0.75f : w[l];
    EXPECT_TRUE(torch::equal((*out)[0][l], expected)) << l;
  }
  // A [D] direction is the [L, D] one whose rows are all that vector.
  torch::Tensor v = torch::randn({kD});
  auto broadcast = ApplyDirections(w, {MakeDirection(v)}, {1.25}, options);
  auto repeated =
      ApplyDirections(w, {MakeDirection(v.unsqueeze(0).repeat({kL, 1}))}, {1.25}, options);
  ASSERT_TRUE(broadcast.ok() && repeated.ok());
  EXPECT_TRUE(torch::equal(*broadcast, *repeated));
}

TEST(DirectionsTest, SigmaScalesAlphaAndDirectionsAddUp) {
  torch::Tensor w = torch::randn({kL, kD});
  Direction a = MakeDirection(torch::randn({kD}), 2.5, "a");
  Direction b = MakeDirection(torch::randn({kL, kD}), 0.5, "b");
  auto one = ApplyDirections(w, {a}, {2.0});
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_TRUE(torch::equal((*one)[0], w + a.vector * 5.0f));
  auto both = ApplyDirections(w, {a, b}, {2.0, -3.0});
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_TRUE(torch::allclose((*both)[0], w + 5.0 * a.vector - 1.5 * b.vector, 1e-6, 1e-6));
}

TEST(DirectionsTest, ConditionalEditIsOrthogonalToTheConditions) {
  torch::manual_seed(7);
  torch::Tensor w = torch::randn({kL, kD});
  Direction d = MakeDirection(torch::randn({kD}), 1.0, "age");
  ApplyDirectionsOptions options;
  options.conditions = {MakeDirection(torch::randn({kD}), 1.0, "glasses"),
                        MakeDirection(torch::randn({kD}), 1.0, "gender")};
  auto out = ApplyDirections(w, {d}, {1.0}, options);
  ASSERT_TRUE(out.ok()) << out.status();
  torch::Tensor delta = ((*out)[0] - w).to(torch::kFloat64);
  for (const Direction& c : options.conditions) {
    torch::Tensor dots = delta.matmul(c.vector.to(torch::kFloat64));
    EXPECT_LT(dots.abs().max().item<double>(), 1e-5) << c.name;
  }
  // The least-squares residual, rescaled to |d|: p = d - C^T (C C^T)^-1 C d.
  torch::Tensor c = torch::stack({options.conditions[0].vector, options.conditions[1].vector})
                        .to(torch::kFloat64);
  torch::Tensor dv = d.vector.to(torch::kFloat64);
  torch::Tensor p = dv - c.t().matmul(torch::inverse(c.matmul(c.t())).matmul(c.matmul(dv)));
  p = p * (dv.norm() / p.norm());
  for (int l = 0; l < kL; ++l) {
    EXPECT_TRUE(torch::allclose(delta[l], p, 1e-5, 1e-5)) << l;
  }
  // InterFaceGAN's project_boundary for two unit conditions gives the same unit direction.
  torch::Tensor c1 = c[0] / c[0].norm(), c2 = c[1] / c[1].norm(), u = dv / dv.norm();
  double p1 = u.dot(c1).item<double>(), p2 = u.dot(c2).item<double>();
  double c12 = c1.dot(c2).item<double>();
  double alpha = (p1 - p2 * c12) / (1 - c12 * c12), beta = (p2 - p1 * c12) / (1 - c12 * c12);
  torch::Tensor ifg = u - alpha * c1 - beta * c2;
  ifg = ifg / ifg.norm();
  EXPECT_TRUE(torch::allclose(p / p.norm(), ifg, 1e-9, 1e-9));
}

TEST(DirectionsTest, ConditionalEditEqualsPlainEditForOrthogonalDirections) {
  torch::Tensor w = torch::randn({kL, kD});
  torch::Tensor eye = torch::eye(kD);
  Direction d = MakeDirection(eye[0] * 3.0 + eye[1], 1.0, "d");
  ApplyDirectionsOptions conditioned;
  conditioned.conditions = {MakeDirection(eye[2], 1.0, "c1"), MakeDirection(eye[5], 1.0, "c2")};
  auto plain = ApplyDirections(w, {d}, {2.0});
  auto cond = ApplyDirections(w, {d}, {2.0}, conditioned);
  ASSERT_TRUE(plain.ok() && cond.ok()) << cond.status();
  EXPECT_TRUE(torch::allclose(*plain, *cond, 1e-6, 1e-6));
}

TEST(DirectionsTest, ConditionalEditPerLayerAndDependentConditions) {
  torch::Tensor w = torch::randn({kL, kD});
  Direction d = MakeDirection(torch::randn({kD}), 1.0, "d");
  Direction per_layer = MakeDirection(torch::randn({kL, kD}), 1.0, "c");
  // A condition that repeats another adds nothing to the span: no error, same result.
  Direction twice = MakeDirection(per_layer.vector * 2.0, 1.0, "c2");
  ApplyDirectionsOptions options;
  options.conditions = {per_layer, twice};
  auto out = ApplyDirections(w, {d}, {1.0}, options);
  ASSERT_TRUE(out.ok()) << out.status();
  torch::Tensor delta = (*out)[0] - w;
  for (int l = 0; l < kL; ++l) {
    EXPECT_LT(std::abs(delta[l].dot(per_layer.vector[l]).item<float>()), 1e-4) << l;
    EXPECT_NEAR(delta[l].norm().item<float>(), d.vector.norm().item<float>(), 1e-5) << l;
  }
  ApplyDirectionsOptions one;
  one.conditions = {per_layer};
  EXPECT_TRUE(torch::allclose(*ApplyDirections(w, {d}, {1.0}, one), *out, 1e-6, 1e-6));
  // A direction inside the span of the conditions cannot be conditioned.
  ApplyDirectionsOptions spanning;
  spanning.conditions = {MakeDirection(torch::eye(kD)[0], 1.0, "c1"),
                         MakeDirection(torch::eye(kD)[1], 1.0, "c2")};
  auto spanned = ApplyDirections(
      w, {MakeDirection(torch::eye(kD)[0] - 2.0 * torch::eye(kD)[1], 1.0, "x")}, {1.0}, spanning);
  ExpectInvalid(spanned, "conditions");
  EXPECT_NE(spanned.status().message().find("directions[0] ('x')"), std::string::npos);
}

TEST(DirectionsTest, MeanDifferenceOfSets) {
  torch::Tensor from = torch::randn({3, kL, kD}), to = torch::randn({2, kL, kD});
  auto d = MeanDifferenceDirection(from, to, false, "smile");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->vector.sizes(), torch::IntArrayRef({kL, kD}));
  EXPECT_EQ(d->source_format, kMeanDifferenceFormat);
  EXPECT_EQ(d->sigma, 1.0);
  EXPECT_TRUE(torch::allclose(d->vector, to.mean(0) - from.mean(0), 1e-6, 1e-6));
  auto collapsed = MeanDifferenceDirection(from, to, true, "smile_w");
  ASSERT_TRUE(collapsed.ok()) << collapsed.status();
  EXPECT_EQ(collapsed->vector.sizes(), torch::IntArrayRef({kD}));
  EXPECT_TRUE(torch::allclose(collapsed->vector, (to.mean(0) - from.mean(0)).mean(0), 1e-6, 1e-6));
  // One latent each: expression transfer.
  torch::Tensor w = torch::randn({kL, kD}), neutral = torch::randn({kL, kD}),
                expression = torch::randn({kL, kD});
  auto single = MeanDifferenceDirection(neutral, expression, false, "expr");
  ASSERT_TRUE(single.ok());
  ApplyDirectionsOptions rows;
  rows.first_layer = 1;
  rows.last_layer = 3;
  auto applied = ApplyDirections(w, {*single}, {1.5}, rows);
  auto transferred = ExpressionTransfer(w, neutral, expression, 1.5, 1, 3);
  ASSERT_TRUE(applied.ok() && transferred.ok());
  EXPECT_TRUE(torch::allclose(*applied, *transferred, 1e-6, 1e-6));

  ExpectInvalid(MeanDifferenceDirection(from, torch::randn({2, kL, kD + 1}), false, "x"), "to");
  ExpectInvalid(MeanDifferenceDirection(torch::randn({kD}), to, false, "x"), "from");
  ExpectInvalid(MeanDifferenceDirection(from, from, false, "x"), "to");
  ExpectInvalid(MeanDifferenceDirection(torch::empty({0, kL, kD}), to, false, "x"), "from");
  torch::Tensor nan = to.clone();
  nan[1][2][3] = std::numeric_limits<float>::quiet_NaN();
  ExpectInvalid(MeanDifferenceDirection(from, nan, false, "x"), "to");
  ExpectInvalid(MeanDifferenceDirection(from, to, false, ""), "name");
}

TEST(DirectionsTest, FramesEqualSingleApplications) {
  torch::Tensor w = torch::randn({kL, kD});
  Direction d = MakeDirection(torch::randn({kD}), 2.0, "d");
  ApplyDirectionsOptions options;
  options.first_layer = 0;
  options.last_layer = 2;
  options.conditions = {MakeDirection(torch::randn({kD}), 1.0, "c")};
  const std::vector<double> alphas = {-3, -1.5, 0, 1.5, 3};
  auto frames = DirectionFrames(w, d, alphas, options);
  ASSERT_TRUE(frames.ok()) << frames.status();
  ASSERT_EQ(frames->sizes(), torch::IntArrayRef({5, kL, kD}));
  for (size_t f = 0; f < alphas.size(); ++f) {
    auto one = ApplyDirections(w, {d}, {alphas[f]}, options);
    ASSERT_TRUE(one.ok());
    EXPECT_TRUE(torch::equal((*frames)[f], (*one)[0])) << f;
  }
  EXPECT_TRUE(torch::equal((*frames)[2], w));
  // Several directions, one alpha each per frame.
  Direction e = MakeDirection(torch::randn({kL, kD}), 1.0, "e");
  auto two = DirectionFrames(w.unsqueeze(0), {d, e}, {{1, 0}, {0, 1}, {1, 1}});
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_TRUE(torch::equal((*two)[2], (*ApplyDirections(w, {d, e}, {1, 1}))[0]));

  ExpectInvalid(DirectionFrames(w, d, {}), "alphas");
  ExpectInvalid(DirectionFrames(w, d, std::vector<double>(kMaxDirectionFrames + 1, 0.0)), "alphas");
  ExpectInvalid(DirectionFrames(w, d, {0, std::numeric_limits<double>::infinity()}), "alphas[1]");
  ExpectInvalid(DirectionFrames(w, {d, e}, {{1, 0}, {1}}), "alphas[1]");
  ExpectInvalid(DirectionFrames(torch::randn({2, kL, kD}), d, {1.0}), "w");
}

TEST(DirectionsTest, ApplyRejectsBadArgumentsNamingThem) {
  torch::Tensor w = torch::randn({kL, kD});
  Direction d = MakeDirection(torch::randn({kD}));
  ExpectInvalid(ApplyDirections(w, {d}, {std::numeric_limits<double>::quiet_NaN()}), "alphas[0]");
  auto far = ApplyDirections(w, {d}, {kMaxAlpha + 1});
  ExpectInvalid(far, "alphas[0]");
  EXPECT_EQ(far.status().message(), "alphas[0]: 101 is outside [-100, 100]");
  EXPECT_TRUE(ApplyDirections(w, {d}, {-kMaxAlpha}).ok());
  ExpectInvalid(ApplyDirections(w, {d}, {1.0, 2.0}), "alphas");
  ExpectInvalid(ApplyDirections(w, {}, {}), "directions");
  ExpectInvalid(ApplyDirections(w, {MakeDirection(torch::randn({kD + 1}))}, {1.0}),
                "directions[0]");
  ExpectInvalid(ApplyDirections(w, {d, MakeDirection(torch::randn({kL - 1, kD}))}, {1.0, 1.0}),
                "directions[1]");
  ExpectInvalid(ApplyDirections(w, {MakeDirection(torch::zeros({kD}))}, {1.0}), "directions[0]");
  ExpectInvalid(ApplyDirections(w, {MakeDirection(torch::randn({kD}), -1.0)}, {1.0}),
                "directions[0]");
  ExpectInvalid(ApplyDirections(w, {MakeDirection(torch::randn({kD}), 1.0, "")}, {1.0}),
                "directions[0]");
  Direction doubles = d;
  doubles.vector = d.vector.to(torch::kFloat64);
  ExpectInvalid(ApplyDirections(w, {doubles}, {1.0}), "directions[0]");
  ExpectInvalid(ApplyDirections(torch::randn({kD}), {d}, {1.0}), "w");
  torch::Tensor inf = w.clone();
  inf[0][0] = std::numeric_limits<float>::infinity();
  ExpectInvalid(ApplyDirections(inf, {d}, {1.0}), "w");
  for (auto [first, last] : {std::pair{4, 2}, std::pair{-1, 2}, std::pair{0, kL}}) {
    ApplyDirectionsOptions options;
    options.first_layer = first;
    options.last_layer = last;
    ExpectInvalid(ApplyDirections(w, {d}, {1.0}, options), "layers");
  }
  ApplyDirectionsOptions bad_condition;
  bad_condition.conditions = {MakeDirection(torch::randn({kD})), MakeDirection(torch::randn({3}))};
  ExpectInvalid(ApplyDirections(w, {d}, {1.0}, bad_condition), "conditions[1]");
}

TEST(DirectionsTest, ImportsInterFaceGanBoundaryAndPerLayerNpy) {
  torch::Tensor boundary = torch::randn({1, kD});
  boundary = boundary / boundary.norm();
  auto imported = ImportDirections(Npy(boundary), Options());
  ASSERT_TRUE(imported.ok()) << imported.status();
  ASSERT_EQ(imported->size(), 1u);
  const Direction& d = (*imported)[0];
  EXPECT_EQ(d.name, "smile");
  EXPECT_EQ(d.source_format, kInterFaceGanFormat);
  EXPECT_EQ(d.sigma, 1.0);
  EXPECT_TRUE(torch::equal(d.vector, boundary[0]));
  auto flat = ParseDirectionNpy(Npy(boundary[0]), Options());
  ASSERT_TRUE(flat.ok()) << flat.status();
  EXPECT_TRUE(torch::equal(flat->vector, boundary[0]));

  torch::Tensor rows = torch::randn({kL, kD});
  for (const torch::Tensor& t : {rows, rows.unsqueeze(0)}) {
    auto per_layer = ImportDirections(Npy(t), Options());
    ASSERT_TRUE(per_layer.ok()) << per_layer.status();
    EXPECT_EQ((*per_layer)[0].source_format, kPerLayerFormat);
    EXPECT_TRUE(torch::equal((*per_layer)[0].vector, rows));
  }
}

TEST(DirectionsTest, ImportNpyRejectionsNameTheField) {
  ExpectInvalid(ImportDirections(Npy(torch::randn({1, kD + 1})), Options()), "file");
  ExpectInvalid(ImportDirections(Npy(torch::randn({kL - 1, kD})), Options()), "file");
  ExpectInvalid(ImportDirections(Npy(torch::randn({2, kL, kD})), Options()), "file");
  ExpectInvalid(ImportDirections(Npy(torch::zeros({1, kD})), Options()), "file");
  torch::Tensor nan = torch::randn({1, kD});
  nan[0][3] = std::numeric_limits<float>::quiet_NaN();
  auto with_nan = ImportDirections(Npy(nan), Options());
  ExpectInvalid(with_nan, "file");
  EXPECT_EQ(with_nan.status().message(), "file: contains NaN or Inf");
  ExpectInvalid(ImportDirections("not a numpy file", Options()), "file");
  // float64 (np.save of a float64 array): refused naming the dtype.
  std::string f8 = Npy(torch::randn({1, kD / 2}));
  f8 = absl::StrReplaceAll(f8, {{"'<f4'", "'<f8'"}, {"(1, 4)", "(1, 2)"}});
  auto doubles = ImportDirections(f8, Options());
  ExpectInvalid(doubles, "file");
  EXPECT_NE(doubles.status().message().find("'<f8'"), std::string::npos) << doubles.status();
  DirectionImportOptions named = Options();
  named.field = "boundary";
  ExpectInvalid(ImportDirections(Npy(torch::randn({3})), named), "boundary");
  DirectionImportOptions no_layout = Options();
  no_layout.layout = {};
  ExpectInvalid(ImportDirections(Npy(torch::randn({kD})), no_layout), "layout");
}

TEST(DirectionsTest, ImportsGanSpaceComponentsWithTheirSigma) {
  torch::Tensor comp = torch::randn({4, 1, kD});
  comp = comp / comp.norm(2, -1, true);
  torch::Tensor stdev = torch::tensor({3.0f, 2.0f, 1.5f, 0.5f});
  const std::string npz = GanSpaceNpz(comp, stdev);
  auto all = ImportDirections(npz, Options());
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ((*all)[i].name, "smile_pc" + std::to_string(i));
    EXPECT_EQ((*all)[i].source_format, kGanSpaceFormat);
    EXPECT_EQ((*all)[i].sigma, stdev[i].item<float>());
    EXPECT_TRUE(torch::equal((*all)[i].vector, comp[i][0]));
  }
  auto some = ParseGanSpaceNpz(npz, Options({2, 0}));
  ASSERT_TRUE(some.ok()) << some.status();
  ASSERT_EQ(some->size(), 2u);
  EXPECT_EQ((*some)[0].name, "smile_pc2");
  EXPECT_EQ((*some)[1].name, "smile_pc0");
  // alpha is in units of sigma: alpha 2 on pc2 moves w by 2 * 1.5 * lat_comp[2].
  torch::Tensor w = torch::randn({kL, kD});
  auto moved = ApplyDirections(w, {(*some)[0]}, {2.0});
  ASSERT_TRUE(moved.ok());
  EXPECT_TRUE(torch::allclose((*moved)[0], w + 3.0 * comp[2][0], 1e-6, 1e-6));
  // [N, D] is accepted as well.
  auto flat = ImportDirections(GanSpaceNpz(comp.squeeze(1), stdev), Options({3}));
  ASSERT_TRUE(flat.ok()) << flat.status();
  EXPECT_TRUE(torch::equal((*flat)[0].vector, comp[3][0]));
  EXPECT_EQ((*flat)[0].sigma, 0.5);
}

TEST(DirectionsTest, ImportGanSpaceRejectionsNameTheField) {
  torch::Tensor comp = torch::randn({3, 1, kD});
  torch::Tensor stdev = torch::ones({3});
  auto missing = ImportDirections(GanSpaceNpz(comp, stdev, false), Options());
  ExpectInvalid(missing, "file");
  EXPECT_NE(missing.status().message().find("no member 'lat_stdev'"), std::string::npos)
      << missing.status();
  auto no_comp =
      ImportDirections(*SerializeNpz({{"w", TensorToFloatArray(torch::randn({kD}))}}), Options());
  ExpectInvalid(no_comp, "file");
  EXPECT_NE(no_comp.status().message().find("no member 'lat_comp'"), std::string::npos);
  ExpectInvalid(ImportDirections(GanSpaceNpz(torch::randn({3, 1, kD + 1}), stdev), Options()),
                "file");
  ExpectInvalid(ImportDirections(GanSpaceNpz(comp, torch::ones({2})), Options()), "file");
  ExpectInvalid(ImportDirections(GanSpaceNpz(comp, torch::tensor({1.0f, -1.0f, 1.0f})), Options()),
                "file: component 1");
  torch::Tensor zero = comp.clone();
  zero[2].zero_();
  ExpectInvalid(ImportDirections(GanSpaceNpz(zero, stdev), Options({2})), "file: component 2");
  // Only the chosen components are checked.
  EXPECT_TRUE(ImportDirections(GanSpaceNpz(zero, stdev), Options({0})).ok());
  auto out_of_range = ImportDirections(GanSpaceNpz(comp, stdev), Options({3}));
  ExpectInvalid(out_of_range, "components");
  EXPECT_EQ(out_of_range.status().message(), "components: index 3 is outside [0, 3)");
}

// What GANSpace's decomposition.py writes: np.savez_compressed (deflated members), made by
// numpy 1.24.2 with lat_comp = (arange(24).reshape(3, 1, 8) - 11.5) / 7, lat_stdev
// [2.5, 1.25, 0.5], and lat_mean and var_ratio beside them.
TEST(DirectionsTest, ImportsACompressedGanSpaceFile) {
  const std::string hex =
      "504b03041400000008000000210030486f379b000000e00000000c0014006c61745f636f6d702e6e707901001000"
      "e000"
      "0000000000009b000000000000009bec17ea1b10c9c850c650ad9e925a9c5ca46ea5a06e9366a2aea3a09e965f54"
      "5294"
      "98179f5f94920a12774bcc294e058a17672416a402f91ac63a0a863a0a169a3a0ab50ae4012e55cf4bfb19180eec"
      "bfbd"
      "6dedfeedb9b3f74f52e904b27381b4e77ecf492a403986fd79b7b7eddb9e1bbd4fd573d25e20b605b2ed80627640"
      "397b"
      "a01a7ba05a7ba01e20dd690f3403c85e6b0f34d31e68b63d00504b030414000000080000002100fae55f05500000"
      "008c"
      "0000000d0014006c61745f73746465762e6e7079010010008c0000000000000050000000000000009bec17ea1b10"
      "c9c8"
      "50c650ad9e925a9c5ca46ea5a06e9366a2aea3a09e965f54529498179f5f94920a12774bcc294e058a17672416a4"
      "02f9"
      "1ac63a9a3a0ab50a14002e06060507068605f60c0c0cf600504b0304140000000800000021004cdf4aba49000000"
      "a000"
      "00000c0014006c61745f6d65616e2e6e707901001000a00000000000000049000000000000009bec17ea1b10c9c8"
      "50c6"
      "50ad9e925a9c5ca46ea5a06e9366a2aea3a09e965f54529498179f5f94920a12774bcc294e058a17672416a402f9"
      "1a86"
      "3a0a169a3a0ab50a64032e06020000504b0304140000000800000021004d674488510000008c0000000d00140076"
      "6172"
      "5f726174696f2e6e7079010010008c0000000000000051000000000000009bec17ea1b10c9c850c650ad9e925a9c"
      "5ca4"
      "6ea5a06e9366a2aea3a09e965f54529498179f5f94920a12774bcc294e058a17672416a402f91ac63a9a3a0ab50a"
      "1400"
      "2e060606fb593367da9d3de3630700504b010214031400000008000000210030486f379b000000e00000000c0000"
      "0000"
      "000000000000008001000000006c61745f636f6d702e6e7079504b0102140314000000080000002100fae55f0550"
      "0000"
      "008c0000000d00000000000000000000008001d90000006c61745f73746465762e6e7079504b0102140314000000"
      "0800"
      "000021004cdf4aba49000000a00000000c00000000000000000000008001680100006c61745f6d65616e2e6e7079"
      "504b"
      "01021403140000000800000021004d674488510000008c0000000d00000000000000000000008001ef0100007661"
      "725f"
      "726174696f2e6e7079504b05060000000004000400ea0000007f0200000000";
  std::string bytes;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  auto got = ImportDirections(bytes, Options());
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 3u);
  const double sigmas[] = {2.5, 1.25, 0.5};
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ((*got)[k].source_format, kGanSpaceFormat);
    EXPECT_EQ((*got)[k].sigma, sigmas[k]);
    torch::Tensor want = (torch::arange(8 * k, 8 * k + 8).to(torch::kFloat32) - 11.5) / 7;
    EXPECT_TRUE(torch::allclose((*got)[k].vector, want, 0, 1e-6)) << k;
  }
}

TEST(DirectionsTest, StoredDirectionRoundTrips) {
  for (const torch::Tensor& v : {torch::randn({kD}), torch::randn({kL, kD})}) {
    Direction d = MakeDirection(v, 1.75, "pc3");
    d.source_format = kGanSpaceFormat;
    auto bytes = SerializeDirectionVector(d);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    auto back = ParseStoredDirection(*bytes, d.name, d.sigma, d.source_format, kLayout);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->name, "pc3");
    EXPECT_EQ(back->sigma, 1.75);
    EXPECT_EQ(back->source_format, kGanSpaceFormat);
    EXPECT_TRUE(torch::equal(back->vector, v));
    ExpectInvalid(ParseStoredDirection(*bytes, "pc3", 1.0, "x", LatentLayout{kL, kD + 1}),
                  "direction");
  }
  // Stored bytes must be exactly [D] or [L, D].
  ExpectInvalid(ParseStoredDirection(Npy(torch::randn({1, kD})), "x", 1.0, "x", kLayout, "stored"),
                "stored");
  ExpectInvalid(ParseStoredDirection(Npy(torch::randn({kD})), "x", 0.0, "x", kLayout), "direction");
  ExpectInvalid(SerializeDirectionVector(MakeDirection(torch::zeros({kD}))), "direction");
  ExpectInvalid(SerializeDirectionVector(MakeDirection(torch::randn({2, 3, 4}))), "direction");
}

}  // namespace
}  // namespace i2s

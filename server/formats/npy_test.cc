#include "server/formats/npy.h"

#include <string>

#include "gtest/gtest.h"
#include "server/formats/internal/byte_reader.h"

namespace i2s {
namespace {

std::string NpyWithHeader(const std::string& dict, const std::string& data, int major = 1) {
  std::string header = dict + "\n";
  std::string out("\x93NUMPY", 6);
  out.push_back(static_cast<char>(major));
  out.push_back(0);
  internal::AppendLE(&out, header.size(), major == 1 ? 2 : 4);
  return out + header + data;
}

std::string Floats(int n) { return std::string(4 * n, '\0'); }

TEST(NpyTest, RoundTrip) {
  FloatArray a{{2, 3, 4}, {}};
  for (int i = 0; i < 24; ++i) a.values.push_back(i * 0.5f - 3);
  auto b = ParseNpy(SerializeNpy(a));
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->shape, a.shape);
  EXPECT_EQ(b->values, a.values);
  EXPECT_EQ((SerializeNpy(a).find('\n') + 1) % 64, 0u) << "header padded to 64 bytes";
}

TEST(NpyTest, OneDimensionalAndScalarShapes) {
  FloatArray one{{5}, {1, 2, 3, 4, 5}};
  auto b = ParseNpy(SerializeNpy(one));
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->shape, std::vector<int64_t>{5});
  FloatArray scalar{{}, {7}};
  auto c = ParseNpy(SerializeNpy(scalar));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->shape.empty());
  EXPECT_EQ(c->values, std::vector<float>{7});
}

TEST(NpyTest, AcceptsVersion2AndDoubleQuotes) {
  auto a = ParseNpy(NpyWithHeader("{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,)}",
                                  Floats(2), 2));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->shape, std::vector<int64_t>{2});
}

TEST(NpyTest, RejectsWrongDtypeByName) {
  auto a = ParseNpy(
      NpyWithHeader("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", Floats(4)));
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(a.status().message().find("'<f8'"), std::string::npos) << a.status();
  auto big = ParseNpy(
      NpyWithHeader("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", Floats(2)));
  EXPECT_FALSE(big.ok());
}

TEST(NpyTest, RejectsFortranOrder) {
  auto a = ParseNpy(
      NpyWithHeader("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", Floats(4)));
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("Fortran"), std::string::npos) << a.status();
}

TEST(NpyTest, RejectsBadHeaders) {
  for (const std::string& dict :
       {std::string("{'descr': '<f4', 'shape': (2,), }"),  // missing key
        std::string("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}"),
        std::string("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }"),
        std::string("{'descr': '<f4', 'fortran_order': False, 'shape': 2, }"),
        std::string("{'descr': '<f4', 'fortran_order': maybe, 'shape': (2,), }"),
        std::string("{'descr': '<f4' 'fortran_order': False, 'shape': (2,), }"),
        std::string("{'descr': '<f4, 'fortran_order': False, 'shape': (2,), }"),
        std::string("['descr']"), std::string("")}) {
    EXPECT_FALSE(ParseNpy(NpyWithHeader(dict, Floats(2))).ok()) << dict;
  }
  EXPECT_FALSE(ParseNpy("not numpy at all").ok());
  EXPECT_FALSE(ParseNpy(std::string("\x93NUMPY\x09\x00", 8)).ok()) << "unknown version";
}

TEST(NpyTest, RejectsTruncatedAndTrailingData) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }";
  EXPECT_TRUE(ParseNpy(NpyWithHeader(dict, Floats(6))).ok());
  auto short_data = ParseNpy(NpyWithHeader(dict, Floats(5)));
  ASSERT_FALSE(short_data.ok());
  EXPECT_NE(short_data.status().message().find("[3, 2]"), std::string::npos) << short_data.status();
  EXPECT_FALSE(ParseNpy(NpyWithHeader(dict, Floats(7))).ok());
  std::string full = SerializeNpy(FloatArray{{4}, {1, 2, 3, 4}});
  for (size_t n = 0; n < full.size(); ++n) {
    EXPECT_FALSE(ParseNpy(full.substr(0, n)).ok()) << "prefix " << n;
  }
}

TEST(NpyTest, RejectsOverflowingShape) {
  auto a = ParseNpy(NpyWithHeader(
      "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 8), }", Floats(1)));
  EXPECT_FALSE(a.ok());
}

TEST(NpyTest, LatentBytesAreNpyOrNvidiaProjectedW) {
  const FloatArray w{{1, 2, 3}, {1, 2, 3, 4, 5, 6}};
  auto npz = SerializeProjectedW(w);
  ASSERT_TRUE(npz.ok()) << npz.status();
  auto back = ParseLatentBytes(*npz);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->shape, w.shape);
  EXPECT_EQ(back->values, w.values);
  auto plain = ParseLatentBytes(SerializeNpy(w));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->values, w.values);
  auto other = SerializeNpz({{"dlatents", w}});
  ASSERT_TRUE(other.ok());
  auto refused = ParseLatentBytes(*other);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("member 'w'"), std::string::npos) << refused.status();
  EXPECT_NE(refused.status().message().find("dlatents"), std::string::npos) << refused.status();
}

}  // namespace
}  // namespace i2s

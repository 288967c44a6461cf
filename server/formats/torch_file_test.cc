#include "server/formats/torch_file.h"

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace i2s {
namespace {

struct Fixture {
  std::vector<float> a{1, 2, 3, 4, 5, 6};
  std::vector<float> b{-1.5f};
  std::vector<NamedFloatTensor> tensors() const {
    return {{"layer.weight", {2, 3}, a.data()}, {"layer.bias", {1}, b.data()}};
  }
};

absl::StatusOr<RawStateDict> Parse(const std::string& bytes) {
  return ParseTorchStateDict(std::make_shared<const std::string>(bytes));
}

std::vector<float> Values(const RawTensor& t) {
  std::vector<float> out(t.numel());
  std::memcpy(out.data(), t.storage.data() + t.offset * 4, out.size() * 4);
  return out;
}

class TorchFileFormatTest : public ::testing::TestWithParam<TorchFileFormat> {};

TEST_P(TorchFileFormatTest, RoundTrip) {
  Fixture f;
  auto bytes = SerializeTorchStateDict(f.tensors(), GetParam());
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto sd = Parse(*bytes);
  ASSERT_TRUE(sd.ok()) << sd.status();
  EXPECT_EQ(sd->format, GetParam());
  ASSERT_EQ(sd->tensors.size(), 2u);
  EXPECT_EQ(sd->tensors[0].first, "layer.weight");
  EXPECT_EQ(sd->tensors[0].second.sizes, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(sd->tensors[0].second.strides, (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(sd->tensors[0].second.dtype, DType::kFloat32);
  EXPECT_EQ(Values(sd->tensors[0].second), f.a);
  EXPECT_EQ(sd->tensors[1].first, "layer.bias");
  EXPECT_EQ(Values(sd->tensors[1].second), f.b);
}

// Every truncation of a valid file is an error, never a crash or a partial result.
TEST_P(TorchFileFormatTest, EveryTruncationIsAnError) {
  Fixture f;
  auto bytes = SerializeTorchStateDict(f.tensors(), GetParam());
  ASSERT_TRUE(bytes.ok());
  for (size_t n = 0; n < bytes->size(); ++n) {
    EXPECT_FALSE(Parse(bytes->substr(0, n)).ok()) << "prefix of " << n << " bytes";
  }
}

// Single-byte corruption anywhere must not crash (it may still parse when it only
// touches tensor values).
TEST_P(TorchFileFormatTest, ByteFlipsNeverCrash) {
  Fixture f;
  auto bytes = SerializeTorchStateDict(f.tensors(), GetParam());
  ASSERT_TRUE(bytes.ok());
  int errors = 0;
  for (size_t i = 0; i < bytes->size(); ++i) {
    for (uint8_t mask : {0x01, 0x80, 0xff}) {
      std::string copy = *bytes;
      copy[i] = static_cast<char>(copy[i] ^ mask);
      auto sd = Parse(copy);
      if (!sd.ok()) {
        ++errors;
        EXPECT_FALSE(sd.status().message().empty());
      }
    }
  }
  EXPECT_GT(errors, 0);
}

INSTANTIATE_TEST_SUITE_P(Formats, TorchFileFormatTest,
                         ::testing::Values(TorchFileFormat::kZip, TorchFileFormat::kLegacy),
                         [](const auto& info) { return TorchFileFormatName(info.param); });

TEST(TorchFileTest, RejectsNonTorchFiles) {
  auto sd = Parse("hello world");
  ASSERT_FALSE(sd.ok());
  EXPECT_NE(sd.status().message().find("not a torch.save file"), std::string::npos) << sd.status();
  EXPECT_FALSE(Parse("").ok());
}

TEST(TorchFileTest, RejectsUnknownGlobalsWithoutRunningThem) {
  // A legacy-format header followed by a pickle that calls os.system.
  Fixture f;
  auto bytes = SerializeTorchStateDict(f.tensors(), TorchFileFormat::kLegacy);
  ASSERT_TRUE(bytes.ok());
  size_t obj = bytes->find("collections\nOrderedDict");
  ASSERT_NE(obj, std::string::npos);
  const char kCall[] = "cos\nsystem\nX\x04\x00\x00\x00true\x85R.";
  std::string evil = bytes->substr(0, obj - 1) + std::string(kCall, sizeof(kCall) - 1);
  auto sd = Parse(evil);
  ASSERT_FALSE(sd.ok());
  EXPECT_NE(sd.status().message().find("unsupported object 'os.system'"), std::string::npos)
      << sd.status();
}

TEST(TorchFileTest, MissingZipStorageNamesTheKey) {
  Fixture f;
  auto bytes = SerializeTorchStateDict(f.tensors(), TorchFileFormat::kZip);
  ASSERT_TRUE(bytes.ok());
  // Rename member archive/data/1 so that storage '1' cannot be found.
  std::string copy = *bytes;
  size_t pos = 0;
  while ((pos = copy.find("archive/data/1", pos)) != std::string::npos) copy[pos + 13] = '9';
  auto sd = Parse(copy);
  ASSERT_FALSE(sd.ok());
  EXPECT_NE(sd.status().message().find("storage '1'"), std::string::npos) << sd.status();
}

}  // namespace
}  // namespace i2s

#include "server/formats/zip.h"

#include <cstdint>
#include <random>
#include <string>

#include "gtest/gtest.h"

namespace i2s {
namespace {

TEST(ZipTest, Crc32KnownValue) {
  EXPECT_EQ(Crc32("123456789"), 0xCBF43926u);  // the standard check value
}

// The CRC-32 of zip files, one bit at a time: the definition the table code must match.
uint32_t BitwiseCrc32(const std::string& data) {
  uint32_t crc = 0xffffffffu;
  for (unsigned char ch : data) {
    crc ^= ch;
    for (int k = 0; k < 8; ++k) crc = (crc & 1) ? 0xEDB88320u ^ (crc >> 1) : crc >> 1;
  }
  return ~crc;
}

TEST(ZipTest, Crc32MatchesTheBitwiseDefinitionAtEveryLengthAndOffset) {
  std::mt19937 rng(3);
  std::string data(300, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  for (size_t offset = 0; offset < 9; ++offset) {
    for (size_t len = 0; offset + len <= data.size(); len += (len < 40 ? 1 : 37)) {
      const std::string piece = data.substr(offset, len);
      ASSERT_EQ(Crc32(piece), BitwiseCrc32(piece)) << "offset " << offset << " length " << len;
    }
  }
  // Continued over two calls, as a streaming reader would.
  EXPECT_EQ(Crc32(absl::string_view(data).substr(13), Crc32(absl::string_view(data).substr(0, 13))),
            BitwiseCrc32(data));
}

TEST(ZipTest, RoundTripAlignsData) {
  ZipWriter w;
  ASSERT_TRUE(w.Add("a/data.pkl", "hello").ok());
  ASSERT_TRUE(w.Add("a/data/0", std::string(1000, 'x')).ok());
  std::string bytes = w.Finish();
  auto zip = ZipArchive::Parse(bytes);
  ASSERT_TRUE(zip.ok()) << zip.status();
  ASSERT_EQ(zip->entries().size(), 2u);
  EXPECT_EQ(zip->entries()[0].data, "hello");
  const ZipEntry* e = zip->Find("a/data/0");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->data, std::string(1000, 'x'));
  EXPECT_EQ((e->data.data() - bytes.data()) % 64, 0);
  EXPECT_EQ(zip->Find("missing"), nullptr);
}

TEST(ZipTest, DetectsCorruptionAndTruncation) {
  ZipWriter w;
  ASSERT_TRUE(w.Add("x", std::string(300, 'q')).ok());
  std::string bytes = w.Finish();
  std::string flipped = bytes;
  flipped[100] ^= 1;  // inside the member data
  auto bad = ZipArchive::Parse(flipped);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("CRC"), std::string::npos) << bad.status();
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_FALSE(ZipArchive::Parse(bytes.substr(0, n)).ok()) << "prefix " << n;
  }
}

TEST(ZipTest, RejectsCompressedMembers) {
  ZipWriter w;
  ASSERT_TRUE(w.Add("x.npy", "abc").ok());
  std::string bytes = w.Finish();
  // Patch the method field (offset 10 in the central directory header) to deflate.
  size_t cd = bytes.rfind(std::string("PK\x01\x02", 4));
  ASSERT_NE(cd, std::string::npos);
  bytes[cd + 10] = 8;
  auto zip = ZipArchive::Parse(bytes);
  ASSERT_FALSE(zip.ok());
  EXPECT_NE(zip.status().message().find("compressed"), std::string::npos) << zip.status();
}

}  // namespace
}  // namespace i2s

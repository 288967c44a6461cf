#include "server/formats/zip.h"

#include "gtest/gtest.h"

namespace i2s {
namespace {

TEST(ZipTest, Crc32KnownValue) {
  EXPECT_EQ(Crc32("123456789"), 0xCBF43926u);  // the standard check value
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

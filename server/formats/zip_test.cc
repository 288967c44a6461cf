#include "server/formats/zip.h"

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "gtest/gtest.h"
#include "server/formats/internal/byte_reader.h"
#include "server/formats/npy.h"

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

TEST(ZipTest, RejectsOtherCompressionMethods) {
  ZipWriter w;
  ASSERT_TRUE(w.Add("x.npy", "abc").ok());
  std::string bytes = w.Finish();
  // Patch the method field (offset 10 in the central directory header) to bzip2.
  size_t cd = bytes.rfind(std::string("PK\x01\x02", 4));
  ASSERT_NE(cd, std::string::npos);
  bytes[cd + 10] = 12;
  auto zip = ZipArchive::Parse(bytes);
  ASSERT_FALSE(zip.ok());
  EXPECT_NE(zip.status().message().find("'x.npy' is compressed with method 12"), std::string::npos)
      << zip.status();
  // Deflate (8) is read, so "abc" is taken as a (bad) deflate stream.
  bytes[cd + 10] = 8;
  zip = ZipArchive::Parse(bytes);
  ASSERT_FALSE(zip.ok());
  EXPECT_NE(zip.status().message().find("member 'x.npy': corrupt deflate stream"),
            std::string::npos)
      << zip.status();
}

// np.savez_compressed(buf, lat_comp=np.arange(24, dtype=np.float32).reshape(2, 3, 4) * 0.5
// - 3, lat_stdev=np.array([[1, -2], [3.25, 1e-3]], np.float32)), numpy 1.24.2 (its local
// headers carry zip64 extra fields: numpy forces zip64).
constexpr char kSavezCompressed[] =
    "504b0304140000000800000021006561818e8b000000e00000000c0014006c61745f636f6d702e6e707901001000"
    "e0000000000000008b000000000000009bec17ea1b10c9c850c650ad9e925a9c5ca46ea5a06e9366a2aea3a09e96"
    "5f54529498179f5f94920a12774bcc294e058a17672416a402f91a463a0ac63a0a269a3a0ab50ae4012e06068703"
    "0c0c0a40cc00c407f63330340031030883803d900fc4078098c101a80e881d803801881b807802102f00e20d407c"
    "00882f00f10320fe00c40c8e0c0c1c8e00504b03041400000008000000210030a2b9f756000000900000000d0014"
    "006c61745f73746465762e6e707901001000900000000000000056000000000000009bec17ea1b10c9c850c650ad"
    "9e925a9c5ca46ea5a06e9366a2aea3a09e965f54529498179f5f94920a12774bcc294e058a17672416a402f91a46"
    "3a0a469a3a0ab50a64032e0686067b060686030c0c010ef942cd5600504b01021403140000000800000021006561"
    "818e8b000000e00000000c00000000000000000000008001000000006c61745f636f6d702e6e7079504b01021403"
    "1400000008000000210030a2b9f756000000900000000d00000000000000000000008001c90000006c61745f7374"
    "6465762e6e7079504b05060000000002000200750000005e0100000000";

// Raw deflate (level 9) of "hello hello hello hello deflate\n" (zlib 1.2.13).
constexpr char kHelloDeflate[] = "cb48cdc9c957c8c0205352d372124b52b900";
constexpr char kHello[] = "hello hello hello hello deflate\n";

// A one-member archive whose member is deflated, with the sizes and CRC given (to test
// wrong ones); zip64 puts both sizes in a zip64 extra field of the central directory.
std::string DeflatedZip(absl::string_view name, absl::string_view raw, uint64_t usize, uint32_t crc,
                        bool zip64) {
  using internal::AppendLE;
  const uint64_t csize = raw.size();
  auto sizes = [&](std::string* out) {
    AppendLE(out, zip64 ? 0xffffffff : csize, 4);
    AppendLE(out, zip64 ? 0xffffffff : usize, 4);
  };
  auto extra = [&](std::string* out) {
    if (!zip64) return;
    AppendLE(out, 0x0001, 2);
    AppendLE(out, 16, 2);
    AppendLE(out, usize, 8);
    AppendLE(out, csize, 8);
  };
  std::string out;
  AppendLE(&out, 0x04034b50, 4);
  AppendLE(&out, 45, 2);  // version needed: 4.5 (zip64)
  AppendLE(&out, 0, 2);   // flags
  AppendLE(&out, 8, 2);   // deflated
  AppendLE(&out, 0, 2);
  AppendLE(&out, 0x21, 2);
  AppendLE(&out, crc, 4);
  sizes(&out);
  AppendLE(&out, name.size(), 2);
  AppendLE(&out, zip64 ? 20 : 0, 2);
  out.append(name.data(), name.size());
  extra(&out);
  out.append(raw.data(), raw.size());
  const size_t cd_offset = out.size();
  AppendLE(&out, 0x02014b50, 4);
  AppendLE(&out, 45, 2);
  AppendLE(&out, 45, 2);
  AppendLE(&out, 0, 2);
  AppendLE(&out, 8, 2);
  AppendLE(&out, 0, 2);
  AppendLE(&out, 0x21, 2);
  AppendLE(&out, crc, 4);
  sizes(&out);
  AppendLE(&out, name.size(), 2);
  AppendLE(&out, zip64 ? 20 : 0, 2);
  AppendLE(&out, 0, 2);  // comment
  AppendLE(&out, 0, 2);  // disk
  AppendLE(&out, 0, 2);  // internal attributes
  AppendLE(&out, 0, 4);  // external attributes
  AppendLE(&out, 0, 4);  // local header offset
  out.append(name.data(), name.size());
  extra(&out);
  const size_t cd_size = out.size() - cd_offset;
  AppendLE(&out, 0x06054b50, 4);
  AppendLE(&out, 0, 4);
  AppendLE(&out, 1, 2);
  AppendLE(&out, 1, 2);
  AppendLE(&out, cd_size, 4);
  AppendLE(&out, cd_offset, 4);
  AppendLE(&out, 0, 2);
  return out;
}

std::string ZipErrorOf(const std::string& bytes, const ZipReadOptions& options = {}) {
  auto zip = ZipArchive::Parse(bytes, options);
  if (zip.ok()) return "parsed";
  EXPECT_EQ(zip.status().code(), absl::StatusCode::kInvalidArgument) << zip.status();
  return std::string(zip.status().message());
}

TEST(ZipTest, ReadsDeflatedMembers) {
  const std::string raw = absl::HexStringToBytes(kHelloDeflate);
  const std::string hello = kHello;
  for (bool zip64 : {false, true}) {
    auto zip = ZipArchive::Parse(DeflatedZip("h.txt", raw, hello.size(), Crc32(hello), zip64));
    ASSERT_TRUE(zip.ok()) << zip.status();
    ASSERT_EQ(zip->entries().size(), 1u);
    EXPECT_EQ(zip->entries()[0].name, "h.txt");
    EXPECT_EQ(zip->entries()[0].data, hello);
    ASSERT_NE(zip->entries()[0].inflated, nullptr);
    EXPECT_EQ(zip->entries()[0].data.data(), zip->entries()[0].inflated->data());
  }
}

TEST(ZipTest, DeflatedDataOutlivesTheArchiveItCameFrom) {
  const std::string raw = absl::HexStringToBytes(kHelloDeflate);
  const std::string hello = kHello;
  std::optional<ZipArchive> copy;
  ZipEntry entry;
  {
    std::string bytes = DeflatedZip("h.txt", raw, hello.size(), Crc32(hello), false);
    auto zip = ZipArchive::Parse(bytes);
    ASSERT_TRUE(zip.ok()) << zip.status();
    copy = *zip;
    ZipArchive moved = *std::move(zip);
    entry = moved.entries()[0];
  }
  EXPECT_EQ(copy->entries()[0].data, hello);
  EXPECT_EQ(entry.data, hello);
}

TEST(ZipTest, RefusesBadDeflatedMembers) {
  const std::string raw = absl::HexStringToBytes(kHelloDeflate);
  const std::string hello = kHello;
  const uint32_t crc = Crc32(hello);
  for (bool zip64 : {false, true}) {
    EXPECT_EQ(ZipErrorOf(DeflatedZip("h.txt", raw, hello.size(), crc ^ 1, zip64)),
              "corrupt zip archive: member 'h.txt': CRC-32 mismatch");
    EXPECT_EQ(ZipErrorOf(DeflatedZip("h.txt", raw, hello.size() + 1, crc, zip64)),
              "corrupt zip archive: member 'h.txt': corrupt deflate stream: inflates to 32 bytes, "
              "not the declared 33");
    // Inflating to more than declared (a zip bomb's lie) stops at the declared size.
    EXPECT_EQ(ZipErrorOf(DeflatedZip("h.txt", raw, 10, crc, zip64)),
              "corrupt zip archive: member 'h.txt': corrupt deflate stream: inflates to more "
              "than the declared 10 bytes");
    EXPECT_NE(
        ZipErrorOf(DeflatedZip("h.txt", raw.substr(0, raw.size() - 1), hello.size(), crc, zip64))
            .find("member 'h.txt': corrupt deflate stream: truncated"),
        std::string::npos);
    // Declared sizes beyond what the data can expand to, or beyond the limit, are refused
    // before anything is allocated.
    EXPECT_NE(
        ZipErrorOf(DeflatedZip("h.txt", raw, zip64 ? uint64_t{1} << 40 : 0xfffffffe, crc, zip64))
            .find("over the 1073741824-byte limit"),
        std::string::npos);
    EXPECT_NE(ZipErrorOf(DeflatedZip("h.txt", raw, uint64_t{1} << 29, crc, zip64))
                  .find("more than 18 compressed bytes can hold"),
              std::string::npos);
    ZipReadOptions small;
    small.max_inflated_size = 31;
    EXPECT_EQ(ZipErrorOf(DeflatedZip("h.txt", raw, hello.size(), crc, zip64), small),
              "zip member 'h.txt' declares 32 uncompressed bytes, over the 31-byte limit on "
              "inflated data");
    small.max_inflated_size = 32;
    EXPECT_EQ(ZipErrorOf(DeflatedZip("h.txt", raw, hello.size(), crc, zip64), small), "parsed");
  }
}

TEST(ZipTest, TheInflateLimitCoversAllMembersTogether) {
  const std::string npz = absl::HexStringToBytes(kSavezCompressed);
  ZipReadOptions options;
  options.max_inflated_size = 224 + 144;  // the two members' sizes
  EXPECT_EQ(ZipErrorOf(npz, options), "parsed");
  options.max_inflated_size = 224 + 143;
  EXPECT_EQ(ZipErrorOf(npz, options),
            "zip member 'lat_stdev.npy' declares 144 uncompressed bytes, over the 367-byte limit "
            "on inflated data (with the members before it)");
}

TEST(ZipTest, ReadsSavezCompressedThroughParseNpz) {
  const std::string npz = absl::HexStringToBytes(kSavezCompressed);
  auto arrays = ParseNpz(npz);
  ASSERT_TRUE(arrays.ok()) << arrays.status();
  ASSERT_EQ(arrays->size(), 2u);
  EXPECT_EQ((*arrays)[0].first, "lat_comp");
  EXPECT_EQ((*arrays)[0].second.shape, (std::vector<int64_t>{2, 3, 4}));
  ASSERT_EQ((*arrays)[0].second.values.size(), 24u);
  for (int i = 0; i < 24; ++i) EXPECT_EQ((*arrays)[0].second.values[i], i * 0.5f - 3) << i;
  EXPECT_EQ((*arrays)[1].first, "lat_stdev");
  EXPECT_EQ((*arrays)[1].second.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ((*arrays)[1].second.values, (std::vector<float>{1, -2, 3.25f, 1e-3f}));
  // Damage inside the first member's deflate data is refused, naming the member.
  std::string bad = npz;
  bad[100] ^= 0x10;
  auto refused = ParseNpz(bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("member 'lat_comp.npy'"), std::string::npos)
      << refused.status();
  for (size_t n = 0; n < npz.size(); ++n) {
    EXPECT_FALSE(ParseNpz(npz.substr(0, n)).ok()) << "prefix " << n;
  }
}

}  // namespace
}  // namespace i2s

#include "server/formats/inflate.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "gtest/gtest.h"

namespace i2s {
namespace {

// The text the vectors below compress: words picked by a linear congruential generator,
// the same in Python (tests/fuzz/make_seeds.py's deflate_text) and here.
std::string Text(size_t n) {
  static const char* const kWords[] = {"latent",  "style",     "w+",  "noise", "layer",
                                       "mapping", "synthesis", "gan", "face",  "image"};
  uint64_t x = 12345;
  std::string out;
  while (out.size() < n) {
    x = (x * 1103515245 + 12345) % (uint64_t{1} << 31);
    out += kWords[(x >> 16) % 10];
    out += (x >> 8) % 7 != 0 ? " " : ".\n";
  }
  out.resize(n);
  return out;
}

// Raw DEFLATE streams of Text(2000) made by Python's zlib 1.2.13:
// zlib.compressobj(level, zlib.DEFLATED, -15, 9, strategy), then compress + flush.
// kLevel0: level 0 (stored blocks); kLevel1, kLevel9: dynamic Huffman; kFixed: level 9
// with Z_FIXED; kMultiBlock: level 6 with a Z_SYNC_FLUSH after 700 bytes and a
// Z_FULL_FLUSH after 1400 (empty stored blocks between dynamic ones, matches across
// blocks); kEmpty: the empty input.
constexpr char kLevel0[] =
    "01d0072ff86661636520666163652e0a67616e20666163652067616e206d617070696e67207374796c6520772b20"
    "6c6174656e74207374796c6520772b20696d61676520666163652067616e206d617070696e672066616365206e6f"
    "69736520772b207374796c652073796e746865736973207374796c65206d617070696e672e0a7374796c65207379"
    "6e746865736973207374796c652073796e7468657369732e0a772b206c61796572207374796c65206c6179657220"
    "6e6f697365206c6174656e742073796e746865736973207374796c65206c617965722e0a772b206e6f697365206e"
    "6f6973652073796e74686573697320696d61676520772b206e6f697365206d617070696e6720772b2067616e2077"
    "2b206d617070696e672e0a772b206e6f697365207374796c65206c61796572206e6f697365206d617070696e6720"
    "696d6167652067616e206c6174656e742066616365206c6174656e742e0a6c6174656e74206d617070696e67206c"
    "6179657220696d616765206e6f6973652e0a67616e206d617070696e672e0a6c6174656e742e0a66616365206c61"
    "7965722067616e20666163652073796e74686573697320696d6167652066616365206c6174656e74206c6174656e"
    "742067616e207374796c652073796e74686573697320696d6167652073796e74686573697320772b2067616e206d"
    "617070696e67206661636520696d616765207374796c652e0a6c6174656e742066616365206d617070696e672066"
    "61636520772b206c61796572207374796c652073796e746865736973206c6179657220696d616765206c6174656e"
    "742073796e7468657369732e0a696d6167652e0a6c617965722066616365207374796c6520772b2e0a73796e7468"
    "657369732073796e7468657369732067616e20696d616765206c617965722e0a772b206c61796572206c61796572"
    "20696d61676520696d61676520696d616765207374796c65207374796c65206e6f69736520772b2e0a772b206661"
    "636520772b20666163652066616365207374796c652e0a6c617965722066616365206c617965722e0a73796e7468"
    "65736973206e6f69736520772b20696d6167652073796e746865736973206c6174656e7420772b207374796c6520"
    "6c61796572206e6f69736520772b207374796c65206c6174656e74206c617965722e0a6661636520666163652e0a"
    "6c61796572206c6174656e74207374796c65206e6f6973652073796e74686573697320696d616765206c61796572"
    "206c6174656e74206c6174656e7420772b206e6f697365206d617070696e67206d617070696e6720696d61676520"
    "73796e746865736973206c6174656e742e0a7374796c652073796e746865736973206c617965722067616e207379"
    "6e7468657369732067616e20772b206d617070696e67206d617070696e672067616e20772b2067616e20696d6167"
    "65206d617070696e672073796e74686573697320696d6167652e0a6e6f69736520772b206c617965722067616e20"
    "6c6174656e742073796e7468657369732073796e7468657369732e0a6e6f697365206d617070696e672066616365"
    "206c6179657220696d61676520772b206d617070696e672e0a67616e207374796c652e0a6c6174656e742073796e"
    "746865736973206e6f6973652073796e7468657369732066616365206c61796572206c6174656e742067616e206c"
    "6174656e742066616365207374796c6520696d616765207374796c6520772b2073796e746865736973206c617965"
    "722067616e20696d61676520696d61676520772b20696d6167652e0a6661636520772b2067616e207374796c6520"
    "66616365206d617070696e6720772b2e0a6c6174656e7420666163652e0a6c6174656e74206c6174656e7420772b"
    "2066616365206e6f697365206e6f6973652066616365206e6f6973652067616e206c6174656e74206d617070696e"
    "672e0a6d617070696e67207374796c652073796e74686573697320772b2e0a67616e2067616e2073796e74686573"
    "697320772b2067616e20696d616765207374796c65206c6174656e742067616e20696d61676520696d616765206e"
    "6f697365206c6174656e74206e6f6973652066616365206d617070696e67206c6179657220696d6167652067616e"
    "2e0a73796e7468657369732e0a6c617965722067616e206c6174656e74206d617070696e6720772b206c61796572"
    "2066616365206d617070696e67206661636520696d616765206d617070696e6720772b20772b206d617070696e67"
    "206d617070696e672e0a6d617070696e672067616e206d617070696e67206661636520696d6167652073796e7468"
    "65736973207374796c65206c6174656e74207374796c652e0a6c6179657220772b2073796e74686573697320696d"
    "616765206c617965722073796e746865736973206c61796572206c6174656e742e0a6c6174656e7420696d616765"
    "206d617070696e67206d617070696e672e0a73796e7468657369732066616365206c6174656e742e0a696d616765"
    "206c617965722073796e746865736973206c6174656e742067616e206c61796572206c6174656e742073796e7468"
    "65736973206c61796572206e6f6973652066616365206c61796572206e6f69736520696d61676520696d6167652e"
    "0a6c617965722066616365206c61796572207374796c6520696d6167652e0a696d6167652067616e206c61796572"
    "207374796c652e0a6c617965722e0a6c6179657220772b2067616e";
constexpr char kLevel1[] =
    "7555db6ac3300c7df757f87de07f0a23ed026d569640e9df4fd2d191947483e2f8a2739164d3cbf439f78b0ca35d"
    "a7d5665d27f7e9f158d66bdff6d76deecf8f7e9bf679dd73bddca72b908778a5eaebf7b21908e8edb5ee5ff3b66c"
    "8e76eed1fe3e8ef0d14cf735ff38f036e91cecf473e2b61003220c635076d8165e1c304dd9d0ace513e622062eab"
    "36512053a0bbb1ec311fcdf7180c02404c1c150f3dc29c43338d8e9cfd171d4a6becb99e104bb0674947c6e231da"
    "e6b06c07872841c2ff59a266e50987de6846aeb49a8db102fffc90e667e762a649c09041ca05a83a8828c63d71b4"
    "54b9c5aea9f19bd207332e924ec8e026f2c05313bef7db5036ed8938ab69ea404996c75e149452a064cd8ea62682"
    "d9107ebd00513cc4bfbf2a94ceee47c4ea4a7c938a5fdfce36f0e06474b4a854b233bf100910c3c966a5011049a4"
    "153c0a2b725cc7e0f1479beb42e4ea6adda7768876d5bba2ed0a8be91e2161c726a3198720941654b6c344f4ae15"
    "b558f89e002d1cc5c258368a57271c8dcc104ba3aaa4f16624ecbbb39a5ea9434d09e27e589c50af764334caf3e4"
    "f57d778bbf8578daa4b20ca1cd2df1293faefc9bc92a350f0b3ab34735dcbd2de84a68330ca2482577b106383a74"
    "f4178e12653e08fa8fd8de3b0aa365a0c1e80fa44bb9eb06486d64362eaa5c48d94f119a42b504c4e22efc02";
constexpr char kLevel9[] =
    "7555498e84300cbcf30aee23e54f68040c5237d36a9046fc7e12af6587be842cdeab6c96e97b1e97ba94619d76da"
    "8d6df39c5eaf6d5fc7e3bc1ef3f8f7353ea673de4f3f6fcf699d7b79bad87fb7838458fab8f6f3673eb643ce225b"
    "86fb673b9781fc5ef35b5e78cfd6359ea44c22a4c862bcba14876dcf1a76bd6859d48f056732bd6fd562634d51a2"
    "a1ec795f06b9536136c02a64862b6efe544d6c34614324c70f7ef4d364733d59d8cf9265c04a649aa6854c0f412a"
    "01e12631ab0c4919e8be996d429c89f0a782efc8d9ae45a7b6144756463fb84a3cb42aed484dc35e94e09ea30523"
    "4edcbf1137574e52334a231be0520021ab8b7796a6001d74cfcb20e83e23eb22fb728c7d57399762a19decf6956b"
    "87c1c6400cb40c96ba5bef3bd2891033008a5b3f5a1f18918d8e191f3f8321680364311703b9d2e0baa90d924a09"
    "20204a45583df446e31a78b3834307f39057b880582dfb3877b175b93211c6805520614e290c4d88e46e3a555d68"
    "0aa56f1fadc3df0f8c489f2ad8b3cd93fd3494bad9ee0da4510534b18932c6692ac7f8fc8f94a9c54a9f0c03e5b0"
    "c3936b28375e003cfd5442e2aa7f778425804a54817f";
constexpr char kFixed[] =
    "4b4b4c4e554803127a5ce9897960960288919b5850909997ae505c529993aa50aead909358929a5782e067e626a6"
    "a762aa070be4e56716831541541757e69564a416671643f950b57a5cd8a5e17c3d2eb0bd95a9455019081b623acc"
    "3d689ac14ac01a21ca20244215c4d9706998b38102205f0029b8e3e06a30ed86e9821806d208750dd8f710b61e17"
    "540ca6186200440bd8184888c3ed8369839a01520c8f1174f723d903a3406ad1c313a218c187fa1225aea06a403a"
    "e14e064ba0a8428b088491c8be428f123d2eb038c8589022884fa0e90718f9889883b340ae8399058b478866647b"
    "9049a87bc0242cd981b5c19c9d064be0083fc21d03b504613f3ce1a2871cd46bf0248d9c1a9004a1110236350d91"
    "b3605e40ca41d8d3258a42849da8a90e35f5a1bb11335721d2126a4023123b9c860a23a2015e0ca03a548f0bee75"
    "84e99839129110507d8094c4e1f9119e0fe009199e1cd1e307c1473208291b20a762486020a715507461091be444"
    "054b00d048848608443b4ade00a53524dbe01c44d421958710124900c9ad70dfa396bbc859171232a8d188125728"
    "8910dd4b288526924bb0954e40bd489902967c315d8b887ecc020335f9001562a636846771154a18653b2203c15c"
    "85129bc899083d8ed14a6554f7216a24f4a405d184cb60a424879cc3d1ac460a6e6401a4e8c12c9590132ecc7e84"
    "45c841801412400500";
constexpr char kMultiBlock[] =
    "6c52d10e83200c7ce72b785fc23f91051d8932334816ff7eb6d716c5bd405beeae57eb149fc94fc711dc1c0b479e"
    "82356e5b2eb3af6d5f92ff3efc125b2aade7798d73bae3b950deb93208e8ba97f64a3557c9051bdcff67cb83e3be"
    "7bfac80b62a8ab9f81cc10260286b3a360db9ed5f651a0298ecbcc19e6de5b591023a2b8e1e91107273505430014"
    "96c117b77e4a130d02db4646ffa73e7a1176fc9e00f75ca6bcec4a30c434cbfc70410d8be892e7a9c69504c77592"
    "25102691ffe7587edf9c45e44eb5748f209ffbe8f9030000ffff6c94c911c0200c03ff292665d17f090c58d6017c"
    "c8e009f8d00a168eb5b1dbc7baecd180ab47168324ca4f70cfc9a13522ed34581082ec5b879cd52d9883de5cc68f"
    "ca99d4257d678db7abc4520e5ab0f38bb064e0339085fe1f5bd7edb7230542766088d38ff40141268ea73edadb45"
    "6603a7b886e1ac2cb91eb371a81a00888889d4f1f0c662cdb27123e9ec3dac1581090000ffff75514b0a03210cdd"
    "7b8aec0bde494a6a85193b3442f1f6551335620b8e4cf23ef91808c1bb08874b18139ceeba42f4d6c80f50ca0702"
    "e5989e4881e073b3a6f2eba7b32d114ee751246238d37cc757a00172f07077ec850b92f12ddca2b56614b186b1bd"
    "db5a9eb1c5aa05eca488e5f4681bb65aff50cf3997d15ad0bb2ab693c632066696631657593359fb1b1d4d55eba3"
    "8bfe198f55eb1a5b69b56e9d50cfd3a7511c1e59d0f12e1a1491da44217c01";
constexpr char kEmpty[] = "0300";

std::string Hex(absl::string_view hex) { return absl::HexStringToBytes(hex); }

// Writes a bit stream LSB first (RFC 1951 3.1.1), for hand-made streams.
class BitWriter {
 public:
  // An n-bit number (header fields, extra bits): least significant bit first.
  void Bits(uint32_t v, int n) {
    for (int i = 0; i < n; ++i) Bit((v >> i) & 1);
  }
  // A Huffman code: most significant bit first.
  void Code(uint32_t code, int len) {
    for (int i = len - 1; i >= 0; --i) Bit((code >> i) & 1);
  }
  std::string Finish() {
    if (nbits_ > 0) out_.push_back(static_cast<char>(cur_));
    cur_ = 0;
    nbits_ = 0;
    return out_;
  }

 private:
  void Bit(uint32_t b) {
    cur_ |= b << nbits_;
    if (++nbits_ == 8) {
      out_.push_back(static_cast<char>(cur_));
      cur_ = 0;
      nbits_ = 0;
    }
  }
  std::string out_;
  uint32_t cur_ = 0;
  int nbits_ = 0;
};

// Canonical codes for code lengths (RFC 1951 3.2.2).
std::vector<uint32_t> CanonicalCodes(const std::vector<int>& lengths) {
  int count[16] = {};
  for (int l : lengths) ++count[l];
  count[0] = 0;
  uint32_t next[16] = {};
  uint32_t code = 0;
  for (int bits = 1; bits < 16; ++bits) {
    code = (code + count[bits - 1]) << 1;
    next[bits] = code;
  }
  std::vector<uint32_t> codes(lengths.size());
  for (size_t s = 0; s < lengths.size(); ++s) {
    if (lengths[s] != 0) codes[s] = next[lengths[s]]++;
  }
  return codes;
}

// Starts a final dynamic block with the given literal/length and distance code lengths.
// The code length code gives symbols 0..15 four bits each (a complete code whose
// canonical code for length L is L itself), so each length is written as Code(L, 4).
void DynamicHeader(BitWriter& w, const std::vector<int>& lit, const std::vector<int>& dist) {
  static const int kOrder[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};
  w.Bits(1, 1);  // BFINAL
  w.Bits(2, 2);  // dynamic
  w.Bits(static_cast<uint32_t>(lit.size() - 257), 5);
  w.Bits(static_cast<uint32_t>(dist.size() - 1), 5);
  w.Bits(19 - 4, 4);
  for (int sym : kOrder) w.Bits(sym < 16 ? 4 : 0, 3);
  for (int l : lit) w.Code(l, 4);
  for (int l : dist) w.Code(l, 4);
}

// Fixed-code symbols (RFC 1951 3.2.6).
void FixedLitLen(BitWriter& w, int sym) {
  if (sym < 144) {
    w.Code(0x30 + sym, 8);
  } else if (sym < 256) {
    w.Code(0x190 + sym - 144, 9);
  } else if (sym < 280) {
    w.Code(sym - 256, 7);
  } else {
    w.Code(0xc0 + sym - 280, 8);
  }
}

// A fixed block: one 'a', then `matches` copies of the longest match (258 bytes, distance
// 1): 13 bits per 258 output bytes.
std::string Bomb(int matches) {
  BitWriter w;
  w.Bits(1, 1);
  w.Bits(1, 2);
  FixedLitLen(w, 'a');
  for (int i = 0; i < matches; ++i) {
    FixedLitLen(w, 285);  // length 258, no extra bits
    w.Code(0, 5);         // distance 1
  }
  FixedLitLen(w, 256);
  return w.Finish();
}

void ExpectError(absl::string_view stream, absl::string_view what) {
  auto out = Inflate(stream);
  ASSERT_FALSE(out.ok()) << "expected '" << what << "', got " << out->size() << " bytes";
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(out.status().message().find(what), std::string::npos) << out.status();
}

TEST(InflateTest, DecodesStoredBlocks) {
  std::string stream = Hex(kLevel0);
  ASSERT_EQ(stream[0] & 6, 0);  // block type 0
  auto out = Inflate(stream);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, Text(2000));
}

TEST(InflateTest, DecodesFixedHuffmanBlocks) {
  std::string stream = Hex(kFixed);
  ASSERT_EQ(stream[0] & 6, 2);  // block type 1
  auto out = Inflate(stream);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, Text(2000));
}

TEST(InflateTest, DecodesDynamicHuffmanBlocks) {
  for (const char* hex : {kLevel1, kLevel9}) {
    std::string stream = Hex(hex);
    ASSERT_EQ(stream[0] & 6, 4);  // block type 2
    auto out = Inflate(stream);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(*out, Text(2000));
  }
}

TEST(InflateTest, DecodesSeveralBlocksWithMatchesAcrossThem) {
  size_t consumed = 0;
  std::string stream = Hex(kMultiBlock);
  auto out = Inflate(stream, kDefaultMaxInflatedSize, &consumed);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, Text(2000));
  EXPECT_EQ(consumed, stream.size());
}

TEST(InflateTest, DecodesTheEmptyStream) {
  auto out = Inflate(Hex(kEmpty));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "");
  auto exact = InflateExact(Hex(kEmpty), 0);
  ASSERT_TRUE(exact.ok()) << exact.status();
}

TEST(InflateTest, IgnoresBytesAfterTheFinalBlockAndReportsWhatItUsed) {
  std::string stream = Hex(kLevel9);
  size_t consumed = 0;
  auto out = Inflate(stream + "trailing bytes", kDefaultMaxInflatedSize, &consumed);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, Text(2000));
  EXPECT_EQ(consumed, stream.size());
}

// Codes of 11..15 bits miss the 10-bit lookup table and take the canonical slow path.
TEST(InflateTest, DecodesCodesLongerThanTheLookupTable) {
  std::vector<int> lit(258, 0);
  for (int k = 0; k < 13; ++k) lit['A' + k] = k + 1;  // 'A': 1 bit ... 'M': 13 bits
  lit[257] = 14;                                      // length 3
  lit['N'] = 15;
  lit[256] = 15;
  std::vector<int> dist = {1};  // a single one-bit code (distance 1): allowed incomplete
  BitWriter w;
  DynamicHeader(w, lit, dist);
  std::vector<uint32_t> codes = CanonicalCodes(lit);
  for (int c = 'A'; c <= 'N'; ++c) w.Code(codes[c], lit[c]);
  w.Code(codes[257], lit[257]);
  w.Code(0, 1);
  w.Code(codes[256], lit[256]);
  auto out = Inflate(w.Finish());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "ABCDEFGHIJKLMNNNN");
}

TEST(InflateTest, DecodesLongOverlappingMatches) {
  auto out = Inflate(Bomb(1000));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, std::string(1 + 258 * 1000, 'a'));
}

TEST(InflateTest, StopsAtTheOutputLimit) {
  // 100000 matches: 163 KB that would inflate to 25.8 MB.
  std::string bomb = Bomb(100000);
  auto out = Inflate(bomb, 1 << 20);
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("more than the limit of 1048576 bytes"), std::string::npos)
      << out.status();
  auto text = Inflate(Hex(kLevel9), 1999);
  ASSERT_FALSE(text.ok());
  EXPECT_NE(text.status().message().find("limit"), std::string::npos) << text.status();
  EXPECT_TRUE(Inflate(Hex(kLevel9), 2000).ok());
}

TEST(InflateTest, InflateExactChecksTheDeclaredSize) {
  std::string stream = Hex(kLevel9);
  auto ok = InflateExact(stream, 2000);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, Text(2000));
  auto fewer = InflateExact(stream, 1999);
  ASSERT_FALSE(fewer.ok());
  EXPECT_NE(fewer.status().message().find("more than the declared 1999 bytes"), std::string::npos)
      << fewer.status();
  auto more = InflateExact(stream, 2001);
  ASSERT_FALSE(more.ok());
  EXPECT_NE(more.status().message().find("inflates to 2000 bytes, not the declared 2001"),
            std::string::npos)
      << more.status();
  // More than 1032 bytes per compressed byte cannot be true: refused before allocating.
  auto impossible = InflateExact(stream, stream.size() * kMaxDeflateRatio + kMaxDeflateRatio);
  ASSERT_FALSE(impossible.ok());
  EXPECT_NE(impossible.status().message().find("1032:1"), std::string::npos) << impossible.status();
  auto huge = InflateExact(stream, ~uint64_t{0});
  ASSERT_FALSE(huge.ok());
}

// The densest stream the format allows, one-bit length and distance codes, stays within
// kMaxDeflateRatio, the bound InflateExact relies on.
TEST(InflateTest, DensestStreamStaysWithinTheRatioBound) {
  std::vector<int> lit(286, 0);
  lit[285] = 1;  // length 258
  lit[256] = 2;
  lit['a'] = 2;
  BitWriter w;
  DynamicHeader(w, lit, {1});
  std::vector<uint32_t> codes = CanonicalCodes(lit);
  w.Code(codes['a'], 2);
  const int kMatches = 40000;
  for (int i = 0; i < kMatches; ++i) {
    w.Code(codes[285], 1);
    w.Code(0, 1);
  }
  w.Code(codes[256], 2);
  std::string stream = w.Finish();
  auto out = InflateExact(stream, 1 + 258 * kMatches);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_LE(out->size(), stream.size() * kMaxDeflateRatio);
}

TEST(InflateTest, RefusesEveryTruncation) {
  for (const char* hex : {kLevel0, kLevel1, kLevel9, kFixed, kMultiBlock, kEmpty}) {
    std::string stream = Hex(hex);
    for (size_t n = 0; n < stream.size(); ++n) {
      auto out = Inflate(stream.substr(0, n));
      ASSERT_FALSE(out.ok()) << "prefix " << n << " of " << stream.size();
      EXPECT_NE(out.status().message().find("truncated"), std::string::npos)
          << "prefix " << n << ": " << out.status();
    }
  }
}

TEST(InflateTest, RefusesBadBlocks) {
  ExpectError(std::string("\x07", 1), "invalid block type 3");
  ExpectError(std::string("\x01\x05\x00\x00\x00", 5), "does not match its complement");
  ExpectError(std::string("\x01\x05\x00\xfa\xff"
                          "ab",
                          7),
              "truncated");
}

TEST(InflateTest, RefusesBadSymbolsInFixedBlocks) {
  {
    BitWriter w;  // a match before any output
    w.Bits(1, 1);
    w.Bits(1, 2);
    FixedLitLen(w, 'a');
    FixedLitLen(w, 257);  // length 3
    w.Code(1, 5);         // distance 2
    FixedLitLen(w, 256);
    ExpectError(w.Finish(), "distance 2 too far back (1 bytes written)");
  }
  {
    BitWriter w;
    w.Bits(1, 1);
    w.Bits(1, 2);
    FixedLitLen(w, 'a');
    FixedLitLen(w, 286);
    FixedLitLen(w, 256);
    ExpectError(w.Finish(), "invalid length symbol 286");
  }
  {
    BitWriter w;
    w.Bits(1, 1);
    w.Bits(1, 2);
    FixedLitLen(w, 'a');
    FixedLitLen(w, 257);
    w.Code(30, 5);
    FixedLitLen(w, 256);
    ExpectError(w.Finish(), "invalid distance symbol 30");
  }
}

TEST(InflateTest, RefusesBadCodeLengths) {
  {
    BitWriter w;  // 287 literal/length codes
    w.Bits(1, 1);
    w.Bits(2, 2);
    w.Bits(30, 5);
    w.Bits(0, 5);
    w.Bits(0, 4);
    ExpectError(w.Finish() + std::string(64, '\0'), "287 literal/length codes (max 286)");
  }
  {
    BitWriter w;  // 31 distance codes
    w.Bits(1, 1);
    w.Bits(2, 2);
    w.Bits(0, 5);
    w.Bits(30, 5);
    w.Bits(0, 4);
    ExpectError(w.Finish() + std::string(64, '\0'), "31 distance codes (max 30)");
  }
  {
    BitWriter w;  // all 19 code length codes one bit long
    w.Bits(1, 1);
    w.Bits(2, 2);
    w.Bits(0, 5);
    w.Bits(0, 5);
    w.Bits(15, 4);
    for (int i = 0; i < 19; ++i) w.Bits(1, 3);
    ExpectError(w.Finish() + std::string(64, '\0'), "over-subscribed code length code");
  }
  // A code length code of 16 -> "0", 17 -> "10", 18 -> "11".
  auto repeat_header = [](BitWriter& w) {
    w.Bits(1, 1);
    w.Bits(2, 2);
    w.Bits(0, 5);  // 257 literal/length codes
    w.Bits(0, 5);  // 1 distance code
    w.Bits(0, 4);  // 4 code length codes: 16, 17, 18, 0
    w.Bits(1, 3);
    w.Bits(2, 3);
    w.Bits(2, 3);
    w.Bits(0, 3);
  };
  {
    BitWriter w;
    repeat_header(w);
    w.Code(0, 1);  // 16: repeat the previous length, but there is none
    w.Bits(0, 2);
    ExpectError(w.Finish() + std::string(64, '\0'), "code length repeat with no previous length");
  }
  {
    BitWriter w;
    repeat_header(w);
    w.Code(3, 2);  // 18: 138 zeros
    w.Bits(127, 7);
    w.Code(3, 2);  // 138 more: past the 258 codes
    w.Bits(127, 7);
    ExpectError(w.Finish() + std::string(64, '\0'), "code length repeat past the last code");
  }
  auto dynamic = [](const std::vector<int>& lit, const std::vector<int>& dist) {
    BitWriter w;
    DynamicHeader(w, lit, dist);
    return w.Finish() + std::string(64, '\0');
  };
  std::vector<int> lit(257, 0);
  lit['a'] = 1;
  lit['b'] = 1;
  ExpectError(dynamic(lit, {0}), "no end-of-block code");
  lit['b'] = 0;
  lit[256] = 2;
  ExpectError(dynamic(lit, {0}), "incomplete literal/length code");
  lit['b'] = 1;
  ExpectError(dynamic(lit, {0}), "over-subscribed literal/length code");
  lit['b'] = 2;
  ExpectError(dynamic(lit, {2, 2, 1, 1}), "over-subscribed distance code");
  ExpectError(dynamic(lit, {2, 2, 0, 0}), "incomplete distance code");
}

TEST(InflateTest, RefusesAMatchWithNoDistanceCodes) {
  std::vector<int> lit(258, 0);
  lit['a'] = 1;
  lit[256] = 2;
  lit[257] = 2;
  BitWriter w;
  DynamicHeader(w, lit, {0});  // no distance codes: fine for a literal-only block
  std::vector<uint32_t> codes = CanonicalCodes(lit);
  w.Code(codes['a'], 1);
  w.Code(codes[257], 2);
  w.Code(0, 5);
  w.Code(codes[256], 2);
  ExpectError(w.Finish() + std::string(8, '\0'), "invalid distance code");
}

// Random bytes and random damage to real streams give an InvalidArgument or a bounded
// output, never a crash (the fuzz target inflate_fuzz does this at length).
TEST(InflateTest, RandomInputIsRefusedOrBounded) {
  std::mt19937 rng(7);
  std::vector<std::string> streams = {Hex(kLevel1), Hex(kLevel9), Hex(kFixed), Hex(kMultiBlock)};
  for (int iter = 0; iter < 3000; ++iter) {
    std::string input;
    if (iter % 2 == 0) {
      input.resize(rng() % 300);
      for (char& c : input) c = static_cast<char>(rng());
    } else {
      input = streams[iter % streams.size()];
      for (int k = 0; k < 3; ++k)
        input[rng() % input.size()] ^= static_cast<char>(1 << (rng() % 8));
    }
    auto out = Inflate(input, 1 << 16);
    if (out.ok()) {
      EXPECT_LE(out->size(), 1u << 16);
    } else {
      EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << out.status();
    }
  }
}

}  // namespace
}  // namespace i2s

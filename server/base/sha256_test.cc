#include "server/base/sha256.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace i2s {
namespace {

// Test vectors from FIPS 180-4 examples / NIST CSRC.
TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256Test, IncrementalEqualsOneShot) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data.push_back(static_cast<char>(i * 7));
  for (size_t split : {0u, 1u, 63u, 64u, 65u, 500u, 1000u}) {
    Sha256 h;
    h.Update(absl::string_view(data).substr(0, split));
    h.Update(absl::string_view(data).substr(split));
    EXPECT_EQ(h.FinishHex(), Sha256Hex(data)) << "split " << split;
  }
}

// Where the CPU has the SHA extensions, their block function and the portable one give the
// same state for every block count and content (and the known vectors above then ran on
// the SHA extensions). Elsewhere there is nothing to compare.
TEST(Sha256Test, ShaExtensionsAgreeWithThePortableCode) {
  if (!sha256_internal::HaveShaExtensions()) GTEST_SKIP() << "this CPU has no SHA extensions";
  std::mt19937 rng(7);
  for (size_t blocks : {1u, 2u, 3u, 17u, 256u}) {
    std::vector<uint8_t> data(64 * blocks);
    for (auto& byte : data) byte = static_cast<uint8_t>(rng());
    uint32_t a[8], b[8];
    for (int i = 0; i < 8; ++i) a[i] = b[i] = static_cast<uint32_t>(rng());
    sha256_internal::BlocksPortable(a, data.data(), blocks);
    sha256_internal::BlocksShaExtensions(b, data.data(), blocks);
    for (int i = 0; i < 8; ++i) EXPECT_EQ(a[i], b[i]) << blocks << " blocks, word " << i;
  }
}

}  // namespace
}  // namespace i2s

// SHA-256 (FIPS 180-4), used for model fingerprints. Not thread-safe per object;
// independent objects may be used from different threads. On x86-64 CPUs with the SHA
// extensions (SHA-NI) the blocks are hashed with them (several times faster than the
// portable code, which every other CPU uses); the result is the same.
#ifndef I2S_SERVER_BASE_SHA256_H_
#define I2S_SERVER_BASE_SHA256_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace i2s {

class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t size);
  void Update(absl::string_view data) { Update(data.data(), data.size()); }
  // Finishes the hash; the object must not be updated afterwards.
  std::array<uint8_t, 32> Finish();
  // Finish() as 64 lowercase hex digits.
  std::string FinishHex();

 private:
  // Hashes `count` whole 64-byte blocks.
  void Blocks(const uint8_t* blocks, size_t count);
  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

std::string Sha256Hex(absl::string_view data);

namespace sha256_internal {
// The two block functions behind Sha256, for the test that checks they agree.
void BlocksPortable(uint32_t state[8], const uint8_t* blocks, size_t count);
// Whether this CPU has the SHA extensions (and SSSE3 and SSE4.1, which the code uses too).
bool HaveShaExtensions();
// Only where HaveShaExtensions().
void BlocksShaExtensions(uint32_t state[8], const uint8_t* blocks, size_t count);
}  // namespace sha256_internal

}  // namespace i2s

#endif  // I2S_SERVER_BASE_SHA256_H_

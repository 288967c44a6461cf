// A decoder for raw DEFLATE streams (RFC 1951): stored, fixed-Huffman and dynamic-Huffman
// blocks, the data of zip members with method 8 (np.savez_compressed, Python's
// zipfile.ZIP_DEFLATED). Our own rather than zlib's because server/formats stays
// Abseil-only and is fuzzed under sanitizers: every read of the input and every write of
// the output is bounds-checked, and the output is capped so that a few bytes cannot make a
// huge allocation (a "zip bomb"). Huffman codes decode through a 10-bit lookup table with a
// canonical-code slow path for the longer codes. Thread-safe (free functions; the fixed
// code tables are built once, under a function-local static).
#ifndef I2S_SERVER_FORMATS_INFLATE_H_
#define I2S_SERVER_FORMATS_INFLATE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace i2s {

// Default output cap: 1 GiB, far above anything this server exchanges (a GANSpace
// direction file, the largest compressed input, inflates to tens of MB).
inline constexpr uint64_t kDefaultMaxInflatedSize = uint64_t{1} << 30;

// The most bytes DEFLATE can produce per input byte: a 258-byte match coded in 2 bits
// (one-bit length and distance codes), i.e. 129 bytes per bit. Literals (at least one bit
// per byte) and stored blocks expand less. A declared size above compressed size * 1032
// cannot be true, so it is refused before anything is allocated.
inline constexpr uint64_t kMaxDeflateRatio = 1032;

// Decodes the raw DEFLATE stream (no zlib or gzip wrapper) at the start of `compressed`.
// Bytes after the final block are ignored; `*consumed`, when not null, receives how many
// input bytes the stream used (its last, partly used byte included). Fails with
// InvalidArgument, "corrupt deflate stream: ...", on a malformed or truncated stream or
// when the output would exceed `max_output` bytes.
absl::StatusOr<std::string> Inflate(absl::string_view compressed,
                                    uint64_t max_output = kDefaultMaxInflatedSize,
                                    size_t* consumed = nullptr);

// The same for a stream whose output size is known in advance (a zip member's declared
// uncompressed size): the buffer is allocated once, and a stream that decodes to more or
// fewer than `size` bytes is an error. Refuses, before allocating, a `size` that
// `compressed` cannot expand to (kMaxDeflateRatio); callers still cap `size` themselves.
absl::StatusOr<std::string> InflateExact(absl::string_view compressed, uint64_t size);

}  // namespace i2s

#endif  // I2S_SERVER_FORMATS_INFLATE_H_

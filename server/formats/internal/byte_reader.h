// Bounds-checked little-endian reader over a byte range. Every read either succeeds
// or returns an error; nothing reads past the end. Not thread-safe.
#ifndef I2S_SERVER_FORMATS_INTERNAL_BYTE_READER_H_
#define I2S_SERVER_FORMATS_INTERNAL_BYTE_READER_H_

#include <cstdint>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace i2s::internal {

class ByteReader {
 public:
  explicit ByteReader(absl::string_view data) : data_(data) {}

  size_t position() const { return pos_; }
  size_t remaining() const { return data_.size() - pos_; }
  bool done() const { return pos_ == data_.size(); }

  absl::StatusOr<absl::string_view> Bytes(uint64_t n) {
    if (n > remaining()) {
      return absl::InvalidArgumentError(absl::StrCat("truncated: need ", n, " bytes at offset ",
                                                     pos_, ", only ", remaining(), " left"));
    }
    absl::string_view out = data_.substr(pos_, n);
    pos_ += n;
    return out;
  }

  // Reads an unsigned little-endian integer of `size` bytes (1..8).
  absl::StatusOr<uint64_t> UintLE(int size) {
    auto bytes = Bytes(size);
    if (!bytes.ok()) return bytes.status();
    uint64_t v = 0;
    for (int i = size - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>((*bytes)[i]);
    return v;
  }

  absl::StatusOr<uint8_t> U8() {
    auto v = UintLE(1);
    if (!v.ok()) return v.status();
    return static_cast<uint8_t>(*v);
  }

 private:
  absl::string_view data_;
  size_t pos_ = 0;
};

// Little-endian load/store helpers for fixed-offset headers (caller checks bounds).
inline uint64_t LoadLE(const char* p, int size) {
  uint64_t v = 0;
  for (int i = size - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
inline void AppendLE(std::string* out, uint64_t v, int size) {
  for (int i = 0; i < size; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace i2s::internal

#endif  // I2S_SERVER_FORMATS_INTERNAL_BYTE_READER_H_

#include "server/formats/inflate.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace i2s {
namespace {

// Limits of the format (RFC 1951 3.2.2, 3.2.5-3.2.7).
constexpr int kMaxCodeBits = 15;     // longest Huffman code
constexpr int kNumLitLen = 288;      // literal/length alphabet (286 and 287 never occur)
constexpr int kNumDist = 32;         // distance alphabet (30 and 31 never occur)
constexpr int kNumCodeLen = 19;      // code length alphabet
constexpr int kMaxLitLenUsed = 286;  // most literal/length codes a dynamic header may give
constexpr int kMaxDistUsed = 30;     // most distance codes a dynamic header may give
constexpr int kEndOfBlock = 256;
constexpr int kFirstLength = 257;
// Bits decoded by one table look-up: 10 covers nearly every code a real stream uses
// (zlib's encoder rarely emits longer literal/length codes) and keeps a table at 2 KiB.
constexpr int kFastBits = 10;
constexpr bool kLittleEndian = __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;

// Order of the code length code lengths in a dynamic block header (RFC 1951 3.2.7).
constexpr uint8_t kCodeLenOrder[kNumCodeLen] = {16, 17, 18, 0, 8,  7, 9,  6, 10, 5,
                                                11, 4,  12, 3, 13, 2, 14, 1, 15};
// Length symbols 257..285: base lengths and extra bits (RFC 1951 3.2.5).
constexpr uint16_t kLenBase[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                   31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
constexpr uint8_t kLenExtra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                   2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
// Distance symbols 0..29: base distances and extra bits (RFC 1951 3.2.5).
constexpr uint16_t kDistBase[30] = {1,    2,    3,    4,    5,    7,    9,    13,    17,    25,
                                    33,   49,   65,   97,   129,  193,  257,  385,   513,   769,
                                    1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
constexpr uint8_t kDistExtra[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                    6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

absl::Status Corrupt(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("corrupt deflate stream: ", what));
}

// LSB-first bit reader (RFC 1951 3.1.1). Refill() tops the buffer up to at least 56 bits,
// enough for any one length/distance pair (15 + 5 + 15 + 13 = 48 bits). Past the end of
// the input it shifts in zero bytes and counts them (`phantom_`); Overrun() tells when a
// decoded bit was one of those, i.e. the stream is truncated. Callers check it before
// trusting what they decoded (every round of the main loop, every header); output decoded
// from those zeros is discarded with the error.
class BitReader {
 public:
  explicit BitReader(absl::string_view in)
      : in_(reinterpret_cast<const uint8_t*>(in.data())), size_(in.size()) {}

  void Refill() {
    if (count_ > 56) return;
    if (size_ - pos_ >= 8) {
      // Branch-free refill (as in libdeflate): adds whole bytes up to 56..63 bits. The
      // bits of a partly added byte land above count_; they are the true next input bits,
      // so the next refill ORs the same values over them.
      uint64_t word;
      std::memcpy(&word, in_ + pos_, 8);
      if constexpr (!kLittleEndian) word = __builtin_bswap64(word);
      bits_ |= word << count_;
      pos_ += (63 - count_) >> 3;
      count_ |= 56;
      return;
    }
    while (count_ <= 56) {
      uint64_t byte = 0;
      if (pos_ < size_) {
        byte = in_[pos_++];
      } else {
        ++phantom_;
      }
      bits_ |= byte << count_;
      count_ += 8;
    }
  }
  uint64_t Peek() const { return bits_; }
  void Drop(int n) {
    bits_ >>= n;
    count_ -= n;
  }
  // n <= 32 bits (the caller has refilled). Garbage above count_ is masked off.
  uint32_t Bits(int n) {
    const uint32_t v = static_cast<uint32_t>(bits_ & ((uint64_t{1} << n) - 1));
    Drop(n);
    return v;
  }
  bool Overrun() const { return phantom_ * 8 > static_cast<uint64_t>(count_); }

  // Drops the bits up to the next byte boundary and hands the whole bytes still buffered
  // back to the input, so that a stored block is read straight from it. False if the
  // stream is truncated.
  bool AlignToInput() {
    Drop(count_ & 7);
    if (Overrun()) return false;
    pos_ -= static_cast<size_t>(count_ / 8) - phantom_;
    bits_ = 0;
    count_ = 0;
    phantom_ = 0;
    return true;
  }
  size_t input_left() const { return size_ - pos_; }  // only meaningful right after alignment
  const uint8_t* input_at() const { return in_ + pos_; }
  void SkipInput(size_t n) { pos_ += n; }  // n <= input_left()

  // Input bytes used so far, a partly used byte counted (valid when !Overrun()).
  size_t consumed() const { return pos_ - (static_cast<size_t>(count_) - phantom_ * 8) / 8; }

 private:
  const uint8_t* in_;
  size_t size_;
  size_t pos_ = 0;
  uint64_t bits_ = 0;
  int count_ = 0;
  uint64_t phantom_ = 0;
};

// A canonical Huffman code (RFC 1951 3.2.2) built from code lengths. Codes of up to
// kFastBits bits decode with one look-up in `fast_`, indexed by the next kFastBits input
// bits (codes are stored bit-reversed, as they arrive LSB first); longer ones by the
// canonical walk over `count_`/`symbols_` (as in zlib's contrib/puff).
class Huffman {
 public:
  enum class Kind {
    kStrict,         // must be complete (code length code)
    kSingleAllowed,  // may also be one code of one bit (zlib's rule for literal/length)
    kEmptyAllowed,   // may also have no codes at all (distances of a literal-only block)
  };

  // lengths[0..n): each 0..15. Symbols n and up have no code.
  absl::Status Build(const uint8_t* lengths, int n, Kind kind, absl::string_view what) {
    count_.fill(0);
    for (int s = 0; s < n; ++s) ++count_[lengths[s]];
    count_[0] = 0;
    int total = 0;
    int left = 1;  // codes of the current length still unused
    for (int len = 1; len <= kMaxCodeBits; ++len) {
      left <<= 1;
      left -= count_[len];
      if (left < 0) return Corrupt(absl::StrCat("over-subscribed ", what, " code"));
      total += count_[len];
    }
    if (left > 0) {
      const bool single = total == 1 && count_[1] == 1;
      const bool ok = (kind == Kind::kSingleAllowed && single) ||
                      (kind == Kind::kEmptyAllowed && (single || total == 0));
      if (!ok) return Corrupt(absl::StrCat("incomplete ", what, " code"));
    }
    std::array<uint16_t, kMaxCodeBits + 2> offset{};
    for (int len = 1; len <= kMaxCodeBits; ++len) offset[len + 1] = offset[len] + count_[len];
    for (int s = 0; s < n; ++s) {
      if (lengths[s] != 0) symbols_[offset[lengths[s]]++] = static_cast<uint16_t>(s);
    }
    fast_.fill(0);
    uint32_t code = 0;
    int index = 0;
    for (int len = 1; len <= kFastBits; ++len) {
      for (int k = 0; k < count_[len]; ++k, ++code) {
        uint32_t reversed = 0;
        for (int b = 0; b < len; ++b) reversed |= ((code >> b) & 1) << (len - 1 - b);
        const uint16_t entry = static_cast<uint16_t>((symbols_[index++] << 4) | len);
        for (uint32_t i = reversed; i < fast_.size(); i += 1u << len) fast_[i] = entry;
      }
      code <<= 1;
    }
    return absl::OkStatus();
  }

  // The table entry for the next bits: (symbol << 4) | length, or 0 for a code longer
  // than kFastBits (or no code). Needs kFastBits buffered bits.
  uint16_t Fast(uint64_t bits) const { return fast_[bits & ((1u << kFastBits) - 1)]; }

  // The next symbol, or -1 for a bit pattern that is no code. The caller has refilled.
  int Decode(BitReader& br) const {
    const uint64_t bits = br.Peek();
    const uint16_t entry = fast_[bits & ((1u << kFastBits) - 1)];
    if (entry != 0) {
      br.Drop(entry & 15);
      return entry >> 4;
    }
    int code = 0, first = 0, index = 0;
    for (int len = 1; len <= kMaxCodeBits; ++len) {
      code |= static_cast<int>((bits >> (len - 1)) & 1);
      const int count = count_[len];
      if (code - count < first) {
        br.Drop(len);
        return symbols_[index + (code - first)];
      }
      index += count;
      first += count;
      first <<= 1;
      code <<= 1;
    }
    return -1;
  }

 private:
  std::array<uint16_t, 1 << kFastBits> fast_;  // (symbol << 4) | length; 0: longer code
  std::array<uint16_t, kMaxCodeBits + 1> count_;
  std::array<uint16_t, kNumLitLen> symbols_;  // in canonical code order
};

struct FixedCodes {
  Huffman litlen, dist;
};

// The fixed codes of block type 1 (RFC 1951 3.2.6).
const FixedCodes& Fixed() {
  static const FixedCodes* const codes = [] {
    auto* c = new FixedCodes;
    uint8_t lengths[kNumLitLen];
    std::fill(lengths, lengths + 144, 8);
    std::fill(lengths + 144, lengths + 256, 9);
    std::fill(lengths + 256, lengths + 280, 7);
    std::fill(lengths + 280, lengths + kNumLitLen, 8);
    (void)c->litlen.Build(lengths, kNumLitLen, Huffman::Kind::kStrict, "fixed");
    std::fill(lengths, lengths + kNumDist, 5);
    (void)c->dist.Build(lengths, kNumDist, Huffman::Kind::kStrict, "fixed");
    return c;
  }();
  return *codes;
}

// The output buffer: grows by doubling up to `max` bytes.
class Output {
 public:
  Output(uint64_t initial, uint64_t max, bool exact) : max_(max), exact_(exact) {
    buf_.resize(initial);
  }

  // Makes room for n more bytes.
  absl::Status Reserve(size_t n) {
    if (buf_.size() - size_ >= n) return absl::OkStatus();
    if (n > max_ - size_) {
      return Corrupt(exact_ ? absl::StrCat("inflates to more than the declared ", max_, " bytes")
                            : absl::StrCat("inflates to more than the limit of ", max_, " bytes"));
    }
    const uint64_t grown = std::max<uint64_t>(size_ + n, 2 * uint64_t{buf_.size()});
    buf_.resize(std::min(grown, max_));
    return absl::OkStatus();
  }
  char* data() { return buf_.data(); }
  char* end() { return buf_.data() + size_; }
  size_t size() const { return size_; }
  size_t capacity() const { return buf_.size(); }
  void set_size(size_t n) { size_ = n; }  // n <= capacity()
  void Advance(size_t n) { size_ += n; }
  std::string Take() && {
    buf_.resize(size_);
    return std::move(buf_);
  }

 private:
  std::string buf_;
  size_t size_ = 0;
  uint64_t max_;
  bool exact_;
};

absl::Status StoredBlock(BitReader& br, Output& out) {
  if (!br.AlignToInput() || br.input_left() < 4) return Corrupt("truncated stored block header");
  const uint8_t* p = br.input_at();
  const uint32_t len = p[0] | (p[1] << 8);
  const uint32_t nlen = p[2] | (p[3] << 8);
  if (len != (~nlen & 0xffff)) return Corrupt("stored block length does not match its complement");
  br.SkipInput(4);
  if (br.input_left() < len) return Corrupt("truncated stored block");
  RETURN_IF_ERROR(out.Reserve(len));
  if (len > 0) std::memcpy(out.end(), br.input_at(), len);
  out.Advance(len);
  br.SkipInput(len);
  return absl::OkStatus();
}

// Reads the code lengths of a dynamic block (RFC 1951 3.2.7) into the two codes.
absl::Status DynamicHeader(BitReader& br, Huffman& litlen, Huffman& dist) {
  br.Refill();
  const int nlen = static_cast<int>(br.Bits(5)) + 257;
  const int ndist = static_cast<int>(br.Bits(5)) + 1;
  const int ncode = static_cast<int>(br.Bits(4)) + 4;
  if (nlen > kMaxLitLenUsed) return Corrupt(absl::StrCat(nlen, " literal/length codes (max 286)"));
  if (ndist > kMaxDistUsed) return Corrupt(absl::StrCat(ndist, " distance codes (max 30)"));
  uint8_t code_lengths[kNumCodeLen] = {};
  for (int i = 0; i < ncode; ++i) {
    br.Refill();
    code_lengths[kCodeLenOrder[i]] = static_cast<uint8_t>(br.Bits(3));
  }
  if (br.Overrun()) return Corrupt("truncated dynamic block header");
  Huffman lencode;
  RETURN_IF_ERROR(lencode.Build(code_lengths, kNumCodeLen, Huffman::Kind::kStrict, "code length"));

  uint8_t lengths[kMaxLitLenUsed + kMaxDistUsed] = {};
  const int total = nlen + ndist;
  for (int i = 0; i < total;) {
    br.Refill();
    const int sym = lencode.Decode(br);
    if (sym < 0) return Corrupt("invalid code length code");
    if (sym < 16) {
      lengths[i++] = static_cast<uint8_t>(sym);
      continue;
    }
    uint8_t value = 0;
    int repeat = 0;
    if (sym == 16) {
      if (i == 0) return Corrupt("code length repeat with no previous length");
      value = lengths[i - 1];
      repeat = 3 + static_cast<int>(br.Bits(2));
    } else if (sym == 17) {
      repeat = 3 + static_cast<int>(br.Bits(3));
    } else {
      repeat = 11 + static_cast<int>(br.Bits(7));
    }
    if (repeat > total - i) return Corrupt("code length repeat past the last code");
    std::fill(lengths + i, lengths + i + repeat, value);
    i += repeat;
  }
  if (br.Overrun()) return Corrupt("truncated dynamic block header");
  if (lengths[kEndOfBlock] == 0) return Corrupt("no end-of-block code");
  RETURN_IF_ERROR(litlen.Build(lengths, nlen, Huffman::Kind::kSingleAllowed, "literal/length"));
  return dist.Build(lengths + nlen, ndist, Huffman::Kind::kEmptyAllowed, "distance");
}

// Decodes the symbols of one Huffman-coded block up to its end-of-block code.
// The hot loop keeps the bit reader and the output position in locals: a store through a
// char* may alias any object the compiler cannot see all uses of, so state kept in `reader`
// and `out` would be reloaded from memory after every output byte.
absl::Status HuffmanBlock(BitReader& reader, const Huffman& litlen, const Huffman& dist,
                          Output& out) {
  BitReader br = reader;
  char* base = out.data();
  size_t n = out.size();
  size_t cap = out.capacity();
  absl::Status status;
  // Makes room for `len` more bytes past `n`, growing the buffer (within its limit).
  auto room = [&](size_t len) {
    out.set_size(n);
    status = out.Reserve(len);
    base = out.data();
    cap = out.capacity();
    return status.ok();
  };
  for (;;) {
    br.Refill();
    const int sym = litlen.Decode(br);
    if (sym < kEndOfBlock) {
      if (sym < 0) {
        status = Corrupt("invalid literal/length code");
        break;
      }
      if (br.Overrun()) {
        status = Corrupt("truncated");
        break;
      }
      if (n == cap && !room(1)) break;
      base[n++] = static_cast<char>(sym);
      // Up to three more literals from the same refill while their codes are in the
      // table: a code is at most 15 bits, so >= 41 buffered bits remain, and 10 per
      // look-up. Overrun is checked at the top of the next round (output on error is
      // discarded, and it stays within `cap`).
      for (int k = 0; k < 3; ++k) {
        const uint16_t entry = litlen.Fast(br.Peek());
        if (entry == 0 || (entry >> 4) >= kEndOfBlock || n == cap) break;
        br.Drop(entry & 15);
        base[n++] = static_cast<char>(entry >> 4);
      }
      continue;
    }
    if (sym == kEndOfBlock) {
      if (br.Overrun()) status = Corrupt("truncated");
      break;
    }
    const int lsym = sym - kFirstLength;
    if (lsym >= 29) {
      status = Corrupt(absl::StrCat("invalid length symbol ", sym));
      break;
    }
    const size_t len = kLenBase[lsym] + br.Bits(kLenExtra[lsym]);
    const int dsym = dist.Decode(br);
    if (dsym < 0) {
      status = Corrupt("invalid distance code");
      break;
    }
    if (dsym >= 30) {
      status = Corrupt(absl::StrCat("invalid distance symbol ", dsym));
      break;
    }
    const size_t distance = kDistBase[dsym] + br.Bits(kDistExtra[dsym]);
    if (br.Overrun()) {
      status = Corrupt("truncated");
      break;
    }
    if (distance > n) {
      status =
          Corrupt(absl::StrCat("distance ", distance, " too far back (", n, " bytes written)"));
      break;
    }
    if (len > cap - n && !room(len)) break;
    char* dst = base + n;
    const char* src = dst - distance;
    if (distance >= len) {
      std::memcpy(dst, src, len);
    } else if (distance == 1) {
      std::memset(dst, *src, len);
    } else {
      for (size_t i = 0; i < len; ++i) dst[i] = src[i];  // overlapping: repeats the pattern
    }
    n += len;
  }
  reader = br;
  out.set_size(n);
  return status;
}

absl::Status InflateInto(BitReader& br, Output& out) {
  Huffman litlen, dist;  // of the current dynamic block
  for (bool last = false; !last;) {
    br.Refill();
    last = br.Bits(1) != 0;
    const uint32_t type = br.Bits(2);
    if (br.Overrun()) return Corrupt("truncated");
    switch (type) {
      case 0:
        RETURN_IF_ERROR(StoredBlock(br, out));
        break;
      case 1:
        RETURN_IF_ERROR(HuffmanBlock(br, Fixed().litlen, Fixed().dist, out));
        break;
      case 2:
        RETURN_IF_ERROR(DynamicHeader(br, litlen, dist));
        RETURN_IF_ERROR(HuffmanBlock(br, litlen, dist, out));
        break;
      default:
        return Corrupt("invalid block type 3");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Run(absl::string_view compressed, uint64_t initial, uint64_t max,
                                bool exact, size_t* consumed) {
  BitReader br(compressed);
  Output out(initial, max, exact);
  absl::Status status = InflateInto(br, out);
  // Garbage decoded from the zeros past the end may fail some other check first.
  if (br.Overrun()) return Corrupt("truncated");
  if (!status.ok()) return status;
  if (consumed != nullptr) *consumed = br.consumed();
  return std::move(out).Take();
}

}  // namespace

absl::StatusOr<std::string> Inflate(absl::string_view compressed, uint64_t max_output,
                                    size_t* consumed) {
  // A first guess of 4x the input (typical for float arrays and text), grown by doubling.
  const uint64_t guess = std::max<uint64_t>(uint64_t{compressed.size()} * 4, 1 << 16);
  return Run(compressed, std::min(guess, max_output), max_output, /*exact=*/false, consumed);
}

absl::StatusOr<std::string> InflateExact(absl::string_view compressed, uint64_t size) {
  if (size / kMaxDeflateRatio > compressed.size() ||
      size > std::numeric_limits<size_t>::max() / 2) {
    return Corrupt(absl::StrCat("declared size ", size, " is more than ", compressed.size(),
                                " compressed bytes can hold (DEFLATE expands at most ",
                                kMaxDeflateRatio, ":1)"));
  }
  ASSIGN_OR_RETURN(std::string out, Run(compressed, size, size, /*exact=*/true, nullptr));
  if (out.size() != size) {
    return Corrupt(absl::StrCat("inflates to ", out.size(), " bytes, not the declared ", size));
  }
  return out;
}

}  // namespace i2s

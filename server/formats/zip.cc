#include "server/formats/zip.h"

#include <array>
#include <limits>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/formats/inflate.h"
#include "server/formats/internal/byte_reader.h"

namespace i2s {
namespace {

using internal::AppendLE;
using internal::LoadLE;

// Record signatures and sizes from PKWARE's APPNOTE.TXT (4.3.7, 4.3.12, 4.3.14-16).
constexpr uint32_t kLocalSig = 0x04034b50;
constexpr uint32_t kCentralSig = 0x02014b50;
constexpr uint32_t kEocdSig = 0x06054b50;
constexpr uint32_t kZip64EocdSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;
constexpr size_t kLocalSize = 30, kCentralSize = 46, kEocdSize = 22;
constexpr size_t kZip64LocatorSize = 20, kZip64EocdSize = 56;
constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr uint16_t kPadExtraId = 0x6932;  // private id of our alignment padding
constexpr size_t kAlign = 64;
// Compression methods (APPNOTE 4.4.5) and the "encrypted" bit of the flags (4.4.4).
constexpr uint64_t kStored = 0, kDeflated = 8;
constexpr uint64_t kEncryptedFlag = 1;

// Slicing-by-8 tables: tables[0] is the byte-at-a-time table of the reflected CRC-32
// polynomial; tables[k][b] is the CRC of byte b followed by k zero bytes, so eight bytes
// are folded in with eight independent look-ups.
using CrcTables = std::array<std::array<uint32_t, 256>, 8>;

CrcTables MakeCrcTables() {
  CrcTables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[0][i] = c;
  }
  for (int k = 1; k < 8; ++k) {
    for (uint32_t i = 0; i < 256; ++i) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xff];
  }
  return t;
}

absl::Status ZipError(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("corrupt zip archive: ", what));
}

}  // namespace

uint32_t Crc32(absl::string_view data, uint32_t crc) {
  static const CrcTables t = MakeCrcTables();
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  size_t n = data.size();
  crc = ~crc;
  for (; n >= 8; n -= 8, p += 8) {
    const uint32_t lo = crc ^ static_cast<uint32_t>(LoadLE(reinterpret_cast<const char*>(p), 4));
    const uint32_t hi = static_cast<uint32_t>(LoadLE(reinterpret_cast<const char*>(p + 4), 4));
    crc = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
          t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
  }
  for (; n > 0; --n, ++p) crc = t[0][(crc ^ *p) & 0xff] ^ (crc >> 8);
  return ~crc;
}

bool ZipArchive::LooksLikeZip(absl::string_view bytes) {
  return bytes.size() >= 4 && LoadLE(bytes.data(), 4) == kLocalSig;
}

absl::StatusOr<ZipArchive> ZipArchive::Parse(absl::string_view bytes,
                                             const ZipReadOptions& options) {
  if (bytes.size() < kEocdSize) return ZipError("too short for an end-of-central-directory record");
  // The EOCD record sits at the end, followed by a comment of at most 65535 bytes.
  size_t eocd = std::string::npos;
  size_t lowest = bytes.size() > kEocdSize + 65535 ? bytes.size() - kEocdSize - 65535 : 0;
  for (size_t p = bytes.size() - kEocdSize + 1; p-- > lowest;) {
    if (LoadLE(bytes.data() + p, 4) == kEocdSig &&
        p + kEocdSize + LoadLE(bytes.data() + p + 20, 2) == bytes.size()) {
      eocd = p;
      break;
    }
  }
  if (eocd == std::string::npos) return ZipError("no end-of-central-directory record");
  const char* e = bytes.data() + eocd;
  uint64_t count = LoadLE(e + 10, 2);
  uint64_t cd_size = LoadLE(e + 12, 4);
  uint64_t cd_offset = LoadLE(e + 16, 4);
  if (count == 0xffff || cd_size == 0xffffffff || cd_offset == 0xffffffff) {
    if (eocd < kZip64LocatorSize ||
        LoadLE(bytes.data() + eocd - kZip64LocatorSize, 4) != kZip64LocatorSig) {
      return ZipError("zip64 values without a zip64 locator");
    }
    uint64_t z64 = LoadLE(bytes.data() + eocd - kZip64LocatorSize + 8, 8);
    if (z64 > bytes.size() || bytes.size() - z64 < kZip64EocdSize ||
        LoadLE(bytes.data() + z64, 4) != kZip64EocdSig) {
      return ZipError("bad zip64 end-of-central-directory record");
    }
    count = LoadLE(bytes.data() + z64 + 32, 8);
    cd_size = LoadLE(bytes.data() + z64 + 40, 8);
    cd_offset = LoadLE(bytes.data() + z64 + 48, 8);
  }
  if (cd_offset > bytes.size() || cd_size > bytes.size() - cd_offset) {
    return ZipError("central directory out of bounds");
  }
  if (count > cd_size / kCentralSize) return ZipError("entry count larger than the directory");

  ZipArchive archive;
  uint64_t inflated_total = 0;  // <= options.max_inflated_size
  internal::ByteReader cd(bytes.substr(cd_offset, cd_size));
  for (uint64_t i = 0; i < count; ++i) {
    auto header = cd.Bytes(kCentralSize);
    if (!header.ok()) return ZipError("truncated central directory");
    const char* h = header->data();
    if (LoadLE(h, 4) != kCentralSig) return ZipError("bad central directory signature");
    uint64_t flags = LoadLE(h + 8, 2);
    uint64_t method = LoadLE(h + 10, 2);
    uint32_t crc = static_cast<uint32_t>(LoadLE(h + 16, 4));
    uint64_t csize = LoadLE(h + 20, 4);
    uint64_t usize = LoadLE(h + 24, 4);
    uint64_t name_len = LoadLE(h + 28, 2), extra_len = LoadLE(h + 30, 2);
    uint64_t comment_len = LoadLE(h + 32, 2);
    uint64_t local = LoadLE(h + 42, 4);
    auto name = cd.Bytes(name_len);
    auto extra = cd.Bytes(extra_len);
    auto comment = cd.Bytes(comment_len);
    if (!name.ok() || !extra.ok() || !comment.ok()) return ZipError("truncated central directory");
    // Zip64 extended information: 8-byte values for the fields saturated above, in order.
    internal::ByteReader x(*extra);
    while (x.remaining() >= 4) {
      uint64_t id = *x.UintLE(2), len = *x.UintLE(2);
      auto body = x.Bytes(len);
      if (!body.ok()) return ZipError("truncated extra field");
      if (id != kZip64ExtraId) continue;
      internal::ByteReader b(*body);
      for (uint64_t* field : {&usize, &csize, &local}) {
        if (*field != 0xffffffff) continue;
        auto v = b.UintLE(8);
        if (!v.ok()) return ZipError("truncated zip64 extra field");
        *field = *v;
      }
    }
    std::string entry_name(*name);
    if (method != kStored && method != kDeflated) {
      return absl::InvalidArgumentError(absl::StrCat(
          "zip member '", entry_name, "' is compressed with method ", method,
          "; only stored (0) and deflated (8) members are supported (torch.save and np.savez "
          "store, np.savez_compressed deflates)"));
    }
    if (flags & kEncryptedFlag) {
      return absl::InvalidArgumentError(
          absl::StrCat("zip member '", entry_name, "' is encrypted, which is not supported"));
    }
    if (method == kStored && csize != usize) {
      return ZipError(absl::StrCat("member '", entry_name, "': size mismatch"));
    }
    if (local > bytes.size() || bytes.size() - local < kLocalSize ||
        LoadLE(bytes.data() + local, 4) != kLocalSig) {
      return ZipError(absl::StrCat("member '", entry_name, "': bad local header"));
    }
    uint64_t data_start = local + kLocalSize + LoadLE(bytes.data() + local + 26, 2) +
                          LoadLE(bytes.data() + local + 28, 2);
    if (data_start > bytes.size() || csize > bytes.size() - data_start) {
      return ZipError(absl::StrCat("member '", entry_name, "': data out of bounds (truncated?)"));
    }
    absl::string_view data = bytes.substr(data_start, csize);
    std::shared_ptr<const std::string> inflated;
    if (method == kDeflated) {
      // Checked before InflateExact allocates `usize` bytes.
      if (usize > options.max_inflated_size - inflated_total) {
        return absl::InvalidArgumentError(absl::StrCat(
            "zip member '", entry_name, "' declares ", usize, " uncompressed bytes, over the ",
            options.max_inflated_size, "-byte limit on inflated data",
            inflated_total > 0 ? " (with the members before it)" : ""));
      }
      auto out = InflateExact(data, usize);
      if (!out.ok()) {
        return ZipError(absl::StrCat("member '", entry_name, "': ", out.status().message()));
      }
      inflated_total += usize;
      inflated = std::make_shared<const std::string>(*std::move(out));
      data = *inflated;
    }
    if (Crc32(data) != crc) {
      return ZipError(absl::StrCat("member '", entry_name, "': CRC-32 mismatch"));
    }
    archive.entries_.push_back(ZipEntry{std::move(entry_name), data, std::move(inflated)});
  }
  return archive;
}

const ZipEntry* ZipArchive::Find(absl::string_view name) const {
  for (const ZipEntry& e : entries_) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

absl::Status ZipWriter::Add(absl::string_view name, absl::string_view data) {
  constexpr uint64_t kMax = std::numeric_limits<uint32_t>::max();
  size_t header_end = out_.size() + kLocalSize + name.size() + 4;  // +4: padding extra header
  size_t pad = (kAlign - header_end % kAlign) % kAlign;
  if (name.size() > 0xffff || data.size() > kMax || header_end + pad + data.size() > kMax) {
    return absl::InvalidArgumentError(
        absl::StrCat("zip member '", name, "' too large: archives are limited to 4 GiB"));
  }
  Record rec{std::string(name), Crc32(data), static_cast<uint32_t>(data.size()),
             static_cast<uint32_t>(out_.size())};
  AppendLE(&out_, kLocalSig, 4);
  AppendLE(&out_, 20, 2);    // version needed: 2.0
  AppendLE(&out_, 0, 2);     // flags
  AppendLE(&out_, 0, 2);     // method: stored
  AppendLE(&out_, 0, 2);     // time
  AppendLE(&out_, 0x21, 2);  // date: 1980-01-01
  AppendLE(&out_, rec.crc, 4);
  AppendLE(&out_, rec.size, 4);
  AppendLE(&out_, rec.size, 4);
  AppendLE(&out_, name.size(), 2);
  AppendLE(&out_, 4 + pad, 2);
  out_.append(name.data(), name.size());
  AppendLE(&out_, kPadExtraId, 2);
  AppendLE(&out_, pad, 2);
  out_.append(pad, '\0');
  out_.append(data.data(), data.size());
  records_.push_back(std::move(rec));
  return absl::OkStatus();
}

std::string ZipWriter::Finish() {
  size_t cd_offset = out_.size();
  for (const Record& r : records_) {
    AppendLE(&out_, kCentralSig, 4);
    AppendLE(&out_, 20, 2);  // made by
    AppendLE(&out_, 20, 2);  // needed
    AppendLE(&out_, 0, 2);
    AppendLE(&out_, 0, 2);
    AppendLE(&out_, 0, 2);
    AppendLE(&out_, 0x21, 2);
    AppendLE(&out_, r.crc, 4);
    AppendLE(&out_, r.size, 4);
    AppendLE(&out_, r.size, 4);
    AppendLE(&out_, r.name.size(), 2);
    AppendLE(&out_, 0, 2);  // extra
    AppendLE(&out_, 0, 2);  // comment
    AppendLE(&out_, 0, 2);  // disk
    AppendLE(&out_, 0, 2);  // internal attributes
    AppendLE(&out_, 0, 4);  // external attributes
    AppendLE(&out_, r.offset, 4);
    out_ += r.name;
  }
  size_t cd_size = out_.size() - cd_offset;
  AppendLE(&out_, kEocdSig, 4);
  AppendLE(&out_, 0, 2);
  AppendLE(&out_, 0, 2);
  AppendLE(&out_, records_.size(), 2);
  AppendLE(&out_, records_.size(), 2);
  AppendLE(&out_, cd_size, 4);
  AppendLE(&out_, cd_offset, 4);
  AppendLE(&out_, 0, 2);
  records_.clear();
  return std::move(out_);
}

}  // namespace i2s

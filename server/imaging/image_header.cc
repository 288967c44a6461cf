#include "server/imaging/image_header.h"

#include <climits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace i2s {
namespace {

// ---- Header parsing. All multi-byte reads are bounds-checked by the callers. ----

uint32_t Byte(absl::string_view b, size_t i) { return static_cast<unsigned char>(b[i]); }
uint32_t BigEndian16(absl::string_view b, size_t i) { return Byte(b, i) << 8 | Byte(b, i + 1); }
uint32_t BigEndian32(absl::string_view b, size_t i) {
  return BigEndian16(b, i) << 16 | BigEndian16(b, i + 2);
}
uint32_t LittleEndian16(absl::string_view b, size_t i) { return Byte(b, i) | Byte(b, i + 1) << 8; }
uint32_t LittleEndian32(absl::string_view b, size_t i) {
  return LittleEndian16(b, i) | LittleEndian16(b, i + 2) << 16;
}

// Format signatures: PNG spec 5.2; JPEG is SOI (0xFFD8) followed by the 0xFF of the next
// marker, which is also what OpenCV's JPEG decoder matches; BMP's file header starts "BM".
constexpr absl::string_view kPngSignature("\x89PNG\r\n\x1a\n", 8);
constexpr absl::string_view kJpegSignature("\xFF\xD8\xFF", 3);
constexpr absl::string_view kBmpSignature("BM", 2);
constexpr char kAcceptedFormats[] = "accepted formats: PNG, JPEG, BMP";

absl::Status Truncated(const std::string& field, absl::string_view format,
                       absl::string_view detail) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": truncated ", format, " header (", detail, ")"));
}
absl::Status Corrupt(const std::string& field, absl::string_view format, absl::string_view detail) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": corrupt ", format, " header: ", detail));
}

// Signature, then the IHDR chunk, which PNG requires first: length (4) = 13, "IHDR",
// width (4), height (4), ... (PNG spec 11.2.2). Sizes are 1..2^31-1.
absl::StatusOr<ImageHeader> ParsePngHeader(absl::string_view b, const std::string& field) {
  constexpr size_t kNeeded = 8 + 8 + 13;
  if (b.size() < kNeeded) {
    return Truncated(field, "PNG",
                     absl::StrCat(b.size(), " bytes, the IHDR chunk ends at byte ", kNeeded));
  }
  if (BigEndian32(b, 8) != 13 || b.substr(12, 4) != "IHDR") {
    return Corrupt(field, "PNG", "the first chunk is not a 13-byte IHDR");
  }
  const uint32_t width = BigEndian32(b, 16), height = BigEndian32(b, 20);
  if (width == 0 || height == 0 || width > INT32_MAX || height > INT32_MAX) {
    return Corrupt(field, "PNG", absl::StrCat("invalid size ", width, "x", height));
  }
  return ImageHeader{"png", width, height};
}

// JPEG markers (ITU T.81 B.1.1): 0xFF, optional 0xFF fill bytes, then the code.
constexpr uint32_t kJpegSoi = 0xD8, kJpegEoi = 0xD9, kJpegSos = 0xDA;
bool IsJpegRst(uint32_t m) { return m >= 0xD0 && m <= 0xD7; }
// RSTn and TEM stand alone; every other marker is followed by a 2-byte segment length.
bool IsJpegStandalone(uint32_t m) { return m == 0x01 || IsJpegRst(m); }
// SOF0..SOF15 are C0..CF except C4 (DHT), C8 (JPG, reserved) and CC (DAC).
bool IsJpegSof(uint32_t m) { return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC; }

// Finds the marker at or after *pos the way libjpeg's next_marker does (skipping stray
// bytes, fill bytes and 0xFF00 pairs) and leaves *pos just past its code. False at the end.
bool NextJpegMarker(absl::string_view b, size_t* pos, uint32_t* marker) {
  size_t p = *pos;
  for (;;) {
    while (p < b.size() && Byte(b, p) != 0xFF) ++p;
    while (p < b.size() && Byte(b, p) == 0xFF) ++p;
    if (p >= b.size()) return false;
    if (Byte(b, p) != 0) break;
    ++p;  // 0xFF00 outside entropy-coded data: garbage, skipped as libjpeg does
  }
  *marker = Byte(b, p);
  *pos = p + 1;
  return true;
}

// The segment after the marker ending at `pos`: its length (which counts itself), or 0 if
// the length field or the segment runs past the end or is below 2.
size_t JpegSegmentLength(absl::string_view b, size_t pos) {
  if (pos + 2 > b.size()) return 0;
  const size_t length = BigEndian16(b, pos);
  return length >= 2 && pos + length <= b.size() ? length : 0;
}

// Walks markers to the first frame header: precision (1), height (2), width (2), ...
// (T.81 B.2.2). libjpeg reads the same first SOF and sizes its buffers from it.
absl::StatusOr<ImageHeader> ParseJpegHeader(absl::string_view b, const std::string& field) {
  size_t pos = 2;  // past SOI
  uint32_t marker = 0;
  while (NextJpegMarker(b, &pos, &marker)) {
    if (IsJpegStandalone(marker)) continue;
    if (marker == kJpegSoi || marker == kJpegEoi || marker == kJpegSos) {
      return Corrupt(field, "JPEG",
                     absl::StrFormat("marker 0x%02X before the frame header", marker));
    }
    const size_t length = JpegSegmentLength(b, pos);
    if (length == 0) {
      if (pos + 2 <= b.size() && BigEndian16(b, pos) < 2) {
        return Corrupt(field, "JPEG", absl::StrFormat("marker 0x%02X has a bad length", marker));
      }
      return Truncated(
          field, "JPEG",
          absl::StrFormat("marker 0x%02X segment runs past byte %d", marker, b.size()));
    }
    if (IsJpegSof(marker)) {
      if (length < 8) return Corrupt(field, "JPEG", "frame header shorter than 8 bytes");
      const uint32_t height = BigEndian16(b, pos + 3), width = BigEndian16(b, pos + 5);
      if (width == 0 || height == 0) {
        return Corrupt(field, "JPEG",
                       absl::StrCat("frame size ", width, "x", height,
                                    " (a zero height needs a DNL marker, which is not supported)"));
      }
      return ImageHeader{"jpeg", width, height};
    }
    pos += length;
  }
  return Truncated(field, "JPEG", absl::StrCat("no frame header in ", b.size(), " bytes"));
}

// File header (14 bytes: "BM", file size, reserved, pixel offset), then the info header,
// whose first 4 bytes are its size. 12 = BITMAPCOREHEADER (unsigned 16-bit width, height);
// 40 and up = BITMAPINFOHEADER, OS/2 2.x (64), V4 (108), V5 (124): signed 32-bit width and
// height, a negative height meaning top-down rows. OpenCV reads the same fields.
absl::StatusOr<ImageHeader> ParseBmpHeader(absl::string_view b, const std::string& field) {
  constexpr size_t kFileHeader = 14;
  if (b.size() < kFileHeader + 4) {
    return Truncated(field, "BMP", absl::StrCat(b.size(), " bytes, the file header is 18"));
  }
  const uint32_t info_size = LittleEndian32(b, kFileHeader);
  if (info_size != 12 && (info_size < 40 || info_size > INT32_MAX)) {
    return Corrupt(field, "BMP",
                   absl::StrCat("info header size ", info_size, " (expected 12, or 40 and up)"));
  }
  const size_t needed = kFileHeader + (info_size == 12 ? 12 : 40);
  if (b.size() < needed) {
    return Truncated(field, "BMP",
                     absl::StrCat(b.size(), " bytes, the info header ends at byte ", needed));
  }
  int64_t width, height;
  if (info_size == 12) {
    width = LittleEndian16(b, kFileHeader + 4);
    height = LittleEndian16(b, kFileHeader + 6);
  } else {
    width = static_cast<int32_t>(LittleEndian32(b, kFileHeader + 4));
    height = static_cast<int32_t>(LittleEndian32(b, kFileHeader + 8));
    if (height == INT32_MIN) height = 0;  // no positive counterpart: invalid
    height = std::abs(height);            // negative = top-down
  }
  if (width <= 0 || height == 0) {
    return Corrupt(field, "BMP", absl::StrCat("invalid size ", width, "x", height));
  }
  return ImageHeader{"bmp", width, height};
}

// Names a few well-known formats we do not decode, for a clearer error.
absl::string_view UnsupportedFormatName(absl::string_view b) {
  if (absl::StartsWith(b, "GIF87a") || absl::StartsWith(b, "GIF89a")) return "GIF";
  if (b.size() >= 12 && b.substr(0, 4) == "RIFF" && b.substr(8, 4) == "WEBP") return "WebP";
  if (absl::StartsWith(b, absl::string_view("II*\0", 4)) ||
      absl::StartsWith(b, absl::string_view("MM\0*", 4))) {
    return "TIFF";
  }
  if (b.size() >= 8 && b.substr(4, 4) == "ftyp") return "HEIF/AVIF";
  return "";
}

}  // namespace

// True if the markers and entropy-coded data run up to an EOI marker. libjpeg decodes a
// JPEG cut short without an error (it pads with gray and only warns), so DecodeRgbImage
// checks this first.
JpegLayout ScanJpegLayout(absl::string_view b) {
  JpegLayout layout;
  size_t pos = 2;
  uint32_t marker = 0;
  while (NextJpegMarker(b, &pos, &marker)) {
    if (marker == kJpegEoi) {
      layout.end_of_image = true;
      return layout;
    }
    if (IsJpegStandalone(marker)) continue;
    const size_t length = JpegSegmentLength(b, pos);
    if (length == 0) return layout;
    pos += length;
    if (marker != kJpegSos) continue;
    ++layout.scans;
    // Entropy-coded data: skip to the next 0xFF that is neither stuffing (0xFF00) nor RSTn.
    for (;;) {
      const void* ff = std::memchr(b.data() + pos, 0xFF, b.size() - pos);
      if (ff == nullptr) return layout;
      pos = static_cast<const char*>(ff) - b.data();
      if (pos + 1 >= b.size()) return layout;
      const uint32_t next = Byte(b, pos + 1);
      if (next == 0 || IsJpegRst(next)) {
        pos += 2;
      } else if (next == 0xFF) {
        pos += 1;  // fill byte before a marker
      } else {
        break;  // a marker; NextJpegMarker reads it
      }
    }
  }
  return layout;
}

bool JpegHasEndOfImage(absl::string_view b) { return ScanJpegLayout(b).end_of_image; }

absl::StatusOr<ImageHeader> ReadImageHeader(absl::string_view bytes, const std::string& field) {
  if (bytes.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": empty input"));
  if (absl::StartsWith(bytes, kPngSignature)) return ParsePngHeader(bytes, field);
  if (absl::StartsWith(bytes, kJpegSignature)) return ParseJpegHeader(bytes, field);
  if (absl::StartsWith(bytes, kBmpSignature)) return ParseBmpHeader(bytes, field);
  // A few bytes that could still become a PNG or JPEG signature: cut short, not foreign.
  if (bytes.size() >= 2 &&
      (absl::StartsWith(kPngSignature, bytes) || absl::StartsWith(kJpegSignature, bytes))) {
    return Truncated(field, absl::StartsWith(kPngSignature, bytes) ? "PNG" : "JPEG",
                     absl::StrCat("only ", bytes.size(), " bytes of the signature"));
  }
  const absl::string_view name = UnsupportedFormatName(bytes);
  return absl::InvalidArgumentError(
      name.empty()
          ? absl::StrCat(field, ": unknown image format; ", kAcceptedFormats)
          : absl::StrCat(field, ": ", name, " images are not supported; ", kAcceptedFormats));
}

absl::StatusOr<ImageHeader> CheckImageLimits(absl::string_view bytes, const DecodeLimits& limits,
                                             const std::string& field) {
  if (bytes.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": empty input"));
  if (static_cast<int64_t>(bytes.size()) > limits.max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", bytes.size(),
                                                   " bytes is more than the limit of ",
                                                   limits.max_bytes, " bytes"));
  }
  if (bytes.size() > static_cast<size_t>(INT_MAX)) {  // cv::Mat sizes are int
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", bytes.size(), " bytes is more than the decoder can take"));
  }
  ASSIGN_OR_RETURN(const ImageHeader header, ReadImageHeader(bytes, field));
  // Both sizes are below 2^31, so the product fits in int64_t.
  if (header.width * header.height > limits.max_pixels) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": ", header.width, "x", header.height, " = ", header.width * header.height,
        " pixels is more than the limit of ", limits.max_pixels));
  }
  return header;
}

}  // namespace i2s

// The header of an encoded image (PNG, JPEG, BMP), read without decoding any pixels, and
// the size limits checked from it: what untrusted image bytes meet first. Abseil only (no
// OpenCV, no LibTorch), so it is fuzzed under the sanitizers (tests/fuzz/image_header_fuzz).
#ifndef I2S_SERVER_IMAGING_IMAGE_HEADER_H_
#define I2S_SERVER_IMAGING_IMAGE_HEADER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace i2s {

// What the header of an encoded image says, read without decoding the pixels.
struct ImageHeader {
  std::string format;  // "png", "jpeg" or "bmp"
  int64_t width = 0;
  int64_t height = 0;
};

// Parses the header of a PNG (the IHDR chunk, which must come first), JPEG (markers up to
// the first frame header SOF0..SOF15; C4/C8/CC are DHT/JPG/DAC, not frames) or BMP
// (BITMAPCOREHEADER with 16-bit sizes, or BITMAPINFOHEADER and its successors with signed
// 32-bit sizes; a negative height means top-down rows). Does not check CRCs or pixel data.
// Errors are InvalidArgument "<field>: ...": empty input, a format other than these three
// (the message lists the accepted ones), or a truncated or corrupt header (including a zero
// size, which for JPEG means a DNL marker that libjpeg does not support).
absl::StatusOr<ImageHeader> ReadImageHeader(absl::string_view bytes,
                                            const std::string& field = "image");

// Bounds on what DecodeRgbImage accepts. The pixel bound is what limits memory: decoding
// and alignment of an 8-bit photo peak at about 38 bytes a pixel (measured; the decoded
// samples, the float RGB result and alignment's float copy: docs/SECURITY.md, Limits).
struct DecodeLimits {
  int64_t max_bytes = 32 << 20;     // the encoded input
  int64_t max_pixels = 50'000'000;  // width * height from the header, before decoding
  // Scans of a JPEG, counted from its markers before decoding. A progressive JPEG is
  // decoded by one pass over the whole image per scan, so a small file of many tiny scans
  // (a "scan bomb") costs thousands of full passes. Encoders write 1 (baseline) to about
  // 10 (progressive, libjpeg's default script for colour) scans.
  int max_jpeg_scans = 100;
};

// The checks DecodeRgbImage makes before decoding anything (empty, max_bytes, header,
// max_pixels), for a caller that wants to refuse early; returns the header.
absl::StatusOr<ImageHeader> CheckImageLimits(absl::string_view bytes, const DecodeLimits& limits,
                                             const std::string& field = "image");

// A JPEG's markers walked to the end: whether its entropy-coded data ends with the
// end-of-image marker (libjpeg pads a truncated file with gray instead of failing) and
// how many scans (SOS markers) it has on the way.
struct JpegLayout {
  bool end_of_image = false;
  int scans = 0;
};
JpegLayout ScanJpegLayout(absl::string_view bytes);
bool JpegHasEndOfImage(absl::string_view bytes);

}  // namespace i2s

#endif  // I2S_SERVER_IMAGING_IMAGE_HEADER_H_

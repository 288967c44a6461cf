// libFuzzer target: the first code untrusted image bytes meet (ReadImageHeader via
// CheckImageLimits, and the JPEG end-of-image scan). Whatever the bytes: no crash, no
// sanitizer report, and either a header within the limits or an InvalidArgument naming
// the field.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/match.h"
#include "server/imaging/image_header.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  i2s::DecodeLimits limits;
  limits.max_bytes = 1 << 20;
  limits.max_pixels = 4'000'000;
  auto header = i2s::CheckImageLimits(bytes, limits, "image");
  if (header.ok()) {
    const bool known =
        header->format == "png" || header->format == "jpeg" || header->format == "bmp";
    if (!known || header->width <= 0 || header->height <= 0 ||
        header->width * header->height > limits.max_pixels) {
      std::abort();
    }
    if (header->format == "jpeg") (void)i2s::JpegHasEndOfImage(bytes);
  } else if (header.status().code() != absl::StatusCode::kInvalidArgument ||
             !absl::StartsWith(header.status().message(), "image: ")) {
    std::abort();
  }
  return 0;
}

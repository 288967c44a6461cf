// The zip reader under torch.save files, job specs and .npz files: any bytes give a status
// or entries whose data lies inside the input (stored members) or inside the entry's own
// inflated buffer (deflated members), within the inflate limit, never a crash.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "absl/strings/string_view.h"
#include "server/formats/zip.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  i2s::ZipReadOptions options;
  options.max_inflated_size = uint64_t{1} << 24;  // 16 MiB: well inside -rss_limit_mb
  auto archive = i2s::ZipArchive::Parse(bytes, options);
  if (!archive.ok()) return 0;
  uint64_t inflated = 0;
  for (const i2s::ZipEntry& e : archive->entries()) {
    const absl::string_view within = e.inflated != nullptr ? *e.inflated : bytes;
    if (e.data.data() < within.data() ||
        e.data.data() + e.data.size() > within.data() + within.size()) {
      std::abort();
    }
    if (e.inflated != nullptr) inflated += e.data.size();
    if (archive->Find(e.name) == nullptr) std::abort();
    volatile uint32_t crc = i2s::Crc32(e.data);  // touches every byte
    (void)crc;
  }
  if (inflated > options.max_inflated_size) std::abort();
  return 0;
}

// The zip reader under torch.save files and job specs: any bytes give a status or entries
// whose data lies inside the input and matches its CRC, never a crash.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "absl/strings/string_view.h"
#include "server/formats/zip.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto archive = i2s::ZipArchive::Parse(bytes);
  if (!archive.ok()) return 0;
  for (const i2s::ZipEntry& e : archive->entries()) {
    if (e.data.data() < bytes.data() || e.data.data() + e.data.size() > bytes.data() + size) {
      std::abort();
    }
    if (archive->Find(e.name) == nullptr) std::abort();
    volatile uint32_t crc = i2s::Crc32(e.data);  // touches every byte
    (void)crc;
  }
  return 0;
}

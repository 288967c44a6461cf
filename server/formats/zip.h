// Minimal zip container support for the two formats that use it here: torch.save's
// zip layout and NumPy's .npz. Only "stored" (uncompressed) members are supported,
// which is what both writers produce; compressed members give a clear error.
// Thread-compatible.
#ifndef I2S_SERVER_FORMATS_ZIP_H_
#define I2S_SERVER_FORMATS_ZIP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace i2s {

uint32_t Crc32(absl::string_view data, uint32_t crc = 0);

struct ZipEntry {
  std::string name;
  absl::string_view data;  // points into the archive bytes given to Parse
};

// A parsed archive. Does not own the bytes: they must outlive it.
class ZipArchive {
 public:
  // Parses the central directory (zip64 included), checks every member's local
  // header, bounds and CRC-32.
  static absl::StatusOr<ZipArchive> Parse(absl::string_view bytes);
  static bool LooksLikeZip(absl::string_view bytes);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  // nullptr when absent.
  const ZipEntry* Find(absl::string_view name) const;

 private:
  std::vector<ZipEntry> entries_;
};

// Builds an archive in memory, members stored uncompressed with their data aligned to
// 64 bytes (so readers may map tensors in place, as torch's own writer does).
class ZipWriter {
 public:
  // Members must be under 4 GiB each and in total (no zip64 output).
  absl::Status Add(absl::string_view name, absl::string_view data);
  std::string Finish();

 private:
  struct Record {
    std::string name;
    uint32_t crc;
    uint32_t size;
    uint32_t offset;
  };
  std::string out_;
  std::vector<Record> records_;
};

}  // namespace i2s

#endif  // I2S_SERVER_FORMATS_ZIP_H_

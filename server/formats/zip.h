// Minimal zip container support for the formats that use it here: torch.save's zip layout
// and NumPy's .npz. The reader takes "stored" (method 0) members, which torch.save and
// np.savez write, and "deflated" (method 8) ones, which np.savez_compressed writes (GANSpace
// direction files); other methods and encrypted members give a clear error. The writer
// stores. Thread-compatible.
#ifndef I2S_SERVER_FORMATS_ZIP_H_
#define I2S_SERVER_FORMATS_ZIP_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/formats/inflate.h"

namespace i2s {

uint32_t Crc32(absl::string_view data, uint32_t crc = 0);

struct ZipEntry {
  std::string name;
  // The member's uncompressed bytes. A stored member's point into the archive bytes given
  // to Parse; a deflated member's into `inflated`.
  absl::string_view data;
  // Owns a deflated member's bytes (nullptr for a stored one). Shared, so that `data` stays
  // valid in copies of the entry and the archive, and after both are gone for as long as
  // a holder of this pointer keeps it (as views of the archive bytes need those kept).
  std::shared_ptr<const std::string> inflated;
};

struct ZipReadOptions {
  // Most bytes all deflated members of one archive may inflate to together. Each member's
  // declared size is checked against what is left before anything is allocated (and
  // against what its compressed size can expand to, see kMaxDeflateRatio), so a small
  // file cannot make a large allocation.
  uint64_t max_inflated_size = kDefaultMaxInflatedSize;
};

// A parsed archive. Does not own the archive bytes: they must outlive it and every view of
// a stored member. Deflated members are inflated by Parse and owned through
// ZipEntry::inflated. Copyable and movable; entries stay valid across both.
class ZipArchive {
 public:
  // Parses the central directory (zip64 included), checks every member's local header,
  // bounds, declared sizes and CRC-32, and inflates the deflated members.
  static absl::StatusOr<ZipArchive> Parse(absl::string_view bytes,
                                          const ZipReadOptions& options = {});
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

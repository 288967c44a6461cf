// The DEFLATE decoder under zip members with method 8 (np.savez_compressed .npz files):
// any bytes give a status or an output within the limit, never a crash; and the two entry
// points agree: a stream that Inflate decodes to N bytes InflateExact decodes to the same
// N bytes (N <= 1032 x the input, the bound it checks first), and refuses N + 1 and N - 1.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "server/formats/inflate.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  constexpr uint64_t kLimit = uint64_t{1} << 24;  // 16 MiB: well inside -rss_limit_mb
  size_t consumed = 0;
  auto out = i2s::Inflate(bytes, kLimit, &consumed);
  if (!out.ok()) return 0;
  if (out->size() > kLimit || consumed == 0 || consumed > size) std::abort();
  auto exact = i2s::InflateExact(bytes.substr(0, consumed), out->size());
  if (!exact.ok() || *exact != *out) std::abort();
  if (i2s::InflateExact(bytes, out->size() + 1).ok()) std::abort();
  if (!out->empty() && i2s::InflateExact(bytes, out->size() - 1).ok()) std::abort();
  return 0;
}

// libFuzzer target: the bearer-token file parser (ParseTokenFile). Whatever the bytes,
// it returns a table or an InvalidArgument that never quotes a token.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "server/base/token_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto table = i2s::ParseTokenFile(text);
  if (table.ok()) {
    if (table->empty()) std::abort();
    for (const auto& [key, grant] : *table) {
      if (key.size() != 64 || !i2s::IsValidTenant(grant.tenant)) std::abort();
    }
  } else if (table.status().code() != absl::StatusCode::kInvalidArgument) {
    std::abort();
  }
  return 0;
}

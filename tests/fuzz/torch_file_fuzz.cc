// torch.save files (zip and legacy layouts, the restricted unpickler): any bytes give a
// status or tensors whose strided views lie inside their storage, never a crash, an
// import or a call.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "server/formats/torch_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = std::make_shared<const std::string>(reinterpret_cast<const char*>(data), size);
  auto dict = i2s::ParseTorchStateDict(file);
  if (!dict.ok()) return 0;
  for (const auto& [name, t] : dict->tensors) {
    if (t.sizes.size() != t.strides.size()) std::abort();
    // The last element the view can reach must lie inside the storage.
    int64_t last = t.offset;
    bool empty = false;
    for (size_t d = 0; d < t.sizes.size(); ++d) {
      if (t.sizes[d] == 0) empty = true;
      if (t.sizes[d] > 0) last += (t.sizes[d] - 1) * t.strides[d];
    }
    const int64_t bytes = static_cast<int64_t>(t.storage.size());
    if (!empty && (last + 1) * i2s::DTypeSize(t.dtype) > bytes) std::abort();
  }
  return 0;
}

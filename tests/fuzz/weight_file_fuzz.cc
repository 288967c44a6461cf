// Weight files of any container (torch.save zip and legacy, plain pickles such as NVIDIA's
// network .pkl, with torch.save streams nested inside): any bytes give a status or a tree
// whose tensors' strided views lie inside their storage and whose names are unique per
// kind, never a crash, an import or a call.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "server/formats/weight_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto file = std::make_shared<const std::string>(reinterpret_cast<const char*>(data), size);
  auto contents = i2s::ParseWeightFile(file);
  if (!contents.ok()) {
    if (contents.status().message().empty()) std::abort();
    return 0;
  }
  if (contents->tensors.size() + contents->values.size() + contents->objects.size() >
      3 * i2s::kMaxWeightFileEntries) {
    std::abort();
  }
  for (const auto& [name, t] : contents->tensors) {
    if (t.sizes.size() != t.strides.size()) std::abort();
    int64_t last = t.offset;
    bool empty = false;
    for (size_t d = 0; d < t.sizes.size(); ++d) {
      if (t.sizes[d] < 0 || t.strides[d] < 0) std::abort();
      if (t.sizes[d] == 0) empty = true;
      if (t.sizes[d] > 0) last += (t.sizes[d] - 1) * t.strides[d];
    }
    const int64_t bytes = static_cast<int64_t>(t.storage.size());
    if (!empty && (last + 1) * i2s::DTypeSize(t.dtype) > bytes) std::abort();
    // The storage lies in the file or in a buffer the result keeps.
    bool kept =
        t.storage.empty() || (t.storage.data() >= file->data() &&
                              t.storage.data() + t.storage.size() <= file->data() + file->size());
    for (const auto& buffer : contents->decoded) {
      if (t.storage.data() >= buffer->data() &&
          t.storage.data() + t.storage.size() <= buffer->data() + buffer->size()) {
        kept = true;
      }
    }
    if (!kept) std::abort();
    // Touch every byte of the view's extent (ASan checks the reads).
    if (!empty) {
      volatile char sink = 0;
      for (int64_t k = t.offset * i2s::DTypeSize(t.dtype); k < (last + 1) * i2s::DTypeSize(t.dtype);
           k += 64) {
        sink = sink + t.storage[k];
      }
    }
  }
  return 0;
}

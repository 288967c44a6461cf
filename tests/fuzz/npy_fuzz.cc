// .npy and .npz parsing (ImportLatent's input, noise maps): any bytes give a status or a
// float array whose size matches its shape, never a crash or an out-of-bounds read.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "absl/strings/string_view.h"
#include "server/formats/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto check = [](const i2s::FloatArray& a) {
    int64_t n = 1;
    for (int64_t d : a.shape) n *= d;
    if (n != static_cast<int64_t>(a.values.size())) std::abort();
  };
  if (auto npy = i2s::ParseNpy(bytes); npy.ok()) check(*npy);
  if (auto npz = i2s::ParseNpz(bytes); npz.ok()) {
    for (const auto& [name, array] : *npz) check(array);
  }
  return 0;
}

// Landmark text (align.landmarks files, i2s_tool/i2s_client --landmarks): any bytes give
// a status or finite pairs, never a crash.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "absl/strings/string_view.h"
#include "common/point_list.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto points =
      i2s::ParsePointList(absl::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  if (!points.ok()) return 0;
  for (const auto& [x, y] : *points) {
    if (!std::isfinite(x) || !std::isfinite(y)) std::abort();
  }
  return 0;
}

#include "server/latents/latent_file.h"

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/formats/npy.h"

namespace i2s {

absl::StatusOr<LatentRecord> ImportedLatent(absl::string_view file, const ModelInfo& model,
                                            const std::string& field) {
  auto array = ParseLatentBytes(file);
  if (!array.ok()) return Annotate(array.status(), field);
  const int64_t L = model.num_layers, D = model.latent_size;
  std::vector<float> values;
  if (array->shape == std::vector<int64_t>{L, D} ||
      array->shape == std::vector<int64_t>{1, L, D}) {  // [1, L, D]: NVIDIA's projected_w
    values = std::move(array->values);
  } else if (array->shape == std::vector<int64_t>{D}) {
    for (int64_t l = 0; l < L; ++l) {
      values.insert(values.end(), array->values.begin(), array->values.end());
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(field, ": shape ", array->ShapeString(),
                                                   ", model \"", model.name, "\" needs [", L, ", ",
                                                   D, "] (or [1, ", L, ", ", D, "] or [", D, "])"));
  }
  for (float v : values) {
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": contains NaN or Inf"));
    }
  }
  LatentRecord rec;
  rec.model = model.name;
  rec.fingerprint = model.fingerprint;
  rec.num_layers = static_cast<int>(L);
  rec.latent_size = static_cast<int>(D);
  rec.values = std::move(values);
  rec.source = "import";
  return rec;
}

absl::StatusOr<std::string> LatentFile(const LatentRecord& record, bool projected_w) {
  FloatArray a;
  a.shape = {record.num_layers, record.latent_size};
  a.values = record.values;
  if (!projected_w) return SerializeNpy(a);
  a.shape.insert(a.shape.begin(), 1);
  return SerializeProjectedW(a);
}

}  // namespace i2s

#include "server/engine/weights.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/base/sha256.h"
#include "server/engine/torch_util.h"
#include "server/formats/npy.h"

namespace i2s {
namespace {

torch::ScalarType ToScalarType(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return torch::kFloat32;
    case DType::kFloat64:
      return torch::kFloat64;
    case DType::kFloat16:
      return torch::kFloat16;
    case DType::kBFloat16:
      return torch::kBFloat16;
    case DType::kInt64:
      return torch::kInt64;
    case DType::kInt32:
      return torch::kInt32;
    case DType::kInt16:
      return torch::kInt16;
    case DType::kInt8:
      return torch::kInt8;
    case DType::kUInt8:
      return torch::kUInt8;
    case DType::kBool:
      return torch::kBool;
  }
  return torch::kFloat32;
}

}  // namespace

absl::StatusOr<torch::Tensor> CopyRawTensor(const RawTensor& t) {
  return TorchCall("loading tensor", [&] {
    void* data = const_cast<char*>(t.storage.data()) + t.offset * DTypeSize(t.dtype);
    torch::Tensor view = torch::from_blob(data, t.sizes, t.strides, ToScalarType(t.dtype));
    torch::Tensor copy = view.clone(at::MemoryFormat::Contiguous);  // one copy, out of the file
    if (copy.is_floating_point() && copy.scalar_type() != torch::kFloat32) {
      copy = copy.to(torch::kFloat32);
    }
    return copy;
  });
}

absl::StatusOr<LoadedWeights> LoadWeights(const std::string& path,
                                          const std::function<bool(const std::string&)>& skip) {
  ASSIGN_OR_RETURN(RawStateDict raw, ReadTorchStateDict(path));
  LoadedWeights out;
  out.path = path;
  out.format = raw.format;
  for (const auto& [name, t] : raw.tensors) {
    if (skip && skip(name)) {
      out.skipped.push_back(name);
      continue;
    }
    auto tensor = CopyRawTensor(t);
    if (!tensor.ok()) return Annotate(tensor.status(), absl::StrCat(path, ": key '", name, "'"));
    out.tensors.emplace_back(name, *std::move(tensor));
  }
  return out;
}

absl::Status SaveWeights(const std::string& path, const StateDict& tensors,
                         TorchFileFormat format) {
  std::vector<torch::Tensor> keep;
  std::vector<NamedFloatTensor> named;
  for (const auto& [name, t] : tensors) {
    if (t.scalar_type() != torch::kFloat32) {
      return absl::InvalidArgumentError(absl::StrCat("SaveWeights: '", name, "' is not float32"));
    }
    keep.push_back(t.detach().to(torch::kCPU).contiguous());
    named.push_back({name, std::vector<int64_t>(t.sizes().begin(), t.sizes().end()),
                     keep.back().data_ptr<float>()});
  }
  ASSIGN_OR_RETURN(std::string bytes, SerializeTorchStateDict(named, format));
  return WriteStringToFile(path, bytes);
}

std::string WeightsFingerprint(const StateDict& tensors) {
  std::vector<const std::pair<std::string, torch::Tensor>*> sorted;
  for (const auto& entry : tensors) sorted.push_back(&entry);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->first < b->first; });
  Sha256 h;
  h.Update("i2s-weights-v1\n");
  for (const auto* entry : sorted) {
    torch::Tensor t = entry->second.detach().to(torch::kCPU).contiguous();
    h.Update(absl::StrCat(entry->first, "\n", c10::toString(t.scalar_type()),
                          ShapeString(t.sizes()), "\n"));
    h.Update(t.data_ptr(), t.numel() * t.element_size());
  }
  return "sha256:" + h.FinishHex();
}

int64_t ParameterCount(const StateDict& tensors) {
  int64_t n = 0;
  for (const auto& entry : tensors) n += entry.second.numel();
  return n;
}

WeightMap::WeightMap(const StateDict& tensors) : entries_(tensors) {}

bool WeightMap::Has(const std::string& key) const {
  for (const auto& e : entries_) {
    if (e.first == key) return true;
  }
  return false;
}

absl::StatusOr<std::vector<int64_t>> WeightMap::ShapeOf(const std::string& key) const {
  for (const auto& e : entries_) {
    if (e.first == key)
      return std::vector<int64_t>(e.second.sizes().begin(), e.second.sizes().end());
  }
  return absl::InvalidArgumentError(absl::StrCat("missing key '", key, "'"));
}

absl::StatusOr<torch::Tensor> WeightMap::Take(const std::string& key, std::vector<int64_t> shape) {
  for (const auto& e : entries_) {
    if (e.first != key) continue;
    if (e.second.sizes() != torch::IntArrayRef(shape)) {
      return absl::InvalidArgumentError(absl::StrCat("key '", key, "' has shape ",
                                                     ShapeString(e.second.sizes()), ", expected ",
                                                     ShapeString(shape)));
    }
    if (e.second.scalar_type() != torch::kFloat32) {
      return absl::InvalidArgumentError(absl::StrCat("key '", key, "' has dtype ",
                                                     c10::toString(e.second.scalar_type()),
                                                     ", expected a floating-point tensor"));
    }
    used_.insert(key);
    return e.second;
  }
  return absl::InvalidArgumentError(absl::StrCat("missing key '", key, "'"));
}

absl::Status WeightMap::CheckAllUsed(
    const std::function<bool(const std::string&)>& ignorable) const {
  for (const auto& e : entries_) {
    if (used_.count(e.first) == 0 && !ignorable(e.first)) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected key '", e.first, "'"));
    }
  }
  return absl::OkStatus();
}

std::vector<std::string> WeightMap::Keys() const {
  std::vector<std::string> keys;
  for (const auto& e : entries_) keys.push_back(e.first);
  return keys;
}

}  // namespace i2s

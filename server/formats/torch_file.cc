#include "server/formats/torch_file.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/formats/internal/byte_reader.h"
#include "server/formats/internal/pickle.h"
#include "server/formats/internal/pickle_writer.h"
#include "server/formats/internal/weight_loader.h"
#include "server/formats/npy.h"
#include "server/formats/zip.h"

namespace i2s {
namespace {

using internal::LoadedPickle;
using internal::PickleWriter;
using internal::PyKind;
using internal::PyValue;

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(std::string(what));
}

std::string Describe(const PyValue* v) {
  if (v->kind == PyKind::kObject) return absl::StrCat("'", v->s, "' object");
  if (v->kind == PyKind::kOpaque && v->tag == internal::kArrayTag) return "numpy array";
  if (v->kind == PyKind::kOpaque && v->tag == internal::kStorageTag) return "storage";
  return internal::PyKindName(v->kind);
}

// A flat dict of tensors from the loaded tree.
absl::StatusOr<RawStateDict> StateDictOf(const LoadedPickle& lp, TorchFileFormat format) {
  const PyValue* root = lp.root();
  if (root->kind != PyKind::kDict) {
    return Invalid(absl::StrCat("not a state dict: the file holds a ", Describe(root),
                                ", expected a dict of tensors"));
  }
  RawStateDict out;
  out.format = format;
  out.file = lp.file();
  for (size_t k = 0; k + 1 < root->items.size(); k += 2) {
    const PyValue* key = root->items[k];
    const PyValue* value = root->items[k + 1];
    if (key->kind != PyKind::kStr) return Invalid("not a state dict: a key is not a string");
    if (value->kind != PyKind::kOpaque || value->tag != internal::kTensorTag) {
      return Invalid(absl::StrCat("not a state dict: entry '", key->s, "' is a ", Describe(value),
                                  ", not a tensor"));
    }
    std::shared_ptr<const std::string> owner;
    auto tensor = lp.Tensor(value, &owner);
    if (!tensor.ok()) return Annotate(tensor.status(), absl::StrCat("tensor '", key->s, "'"));
    if (owner != nullptr) out.decoded.push_back(std::move(owner));
    out.tensors.emplace_back(key->s, *std::move(tensor));
  }
  return out;
}

std::vector<int64_t> ContiguousStrides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (size_t d = shape.size(); d-- > 1;) strides[d - 1] = strides[d] * shape[d];
  return strides;
}

int64_t Numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// The state dict object: OrderedDict{name: _rebuild_tensor_v2(storage, 0, size, stride,
// False, OrderedDict())}, storage key = index.
std::string StateDictPickle(const std::vector<NamedFloatTensor>& tensors, bool legacy) {
  PickleWriter p;
  p.Proto();
  p.EmptyOrderedDict();
  p.Mark();
  std::string group;  // the nested dict being written ("" = none)
  for (size_t i = 0; i < tensors.size(); ++i) {
    const NamedFloatTensor& t = tensors[i];
    const size_t slash = t.name.find('/');
    const std::string outer = slash == std::string::npos ? "" : t.name.substr(0, slash);
    if (outer != group) {
      if (!group.empty()) p.SetItems();  // closes the nested dict
      group = outer;
      if (!group.empty()) {
        p.Str(group);
        p.EmptyOrderedDict();
        p.Mark();
      }
    }
    p.Str(slash == std::string::npos ? t.name : t.name.substr(slash + 1));
    p.Global("torch._utils", "_rebuild_tensor_v2");
    p.Mark();
    p.Mark();
    p.Str("storage");
    p.Global("torch", "FloatStorage");
    p.Str(absl::StrCat(i));
    p.Str("cpu");
    p.Int(Numel(t.shape));
    if (legacy) p.None();  // view_metadata
    p.Tuple();
    p.BinPersId();
    p.Int(0);
    p.IntTuple(t.shape);
    p.IntTuple(ContiguousStrides(t.shape));
    p.Bool(false);
    p.EmptyOrderedDict();
    p.Tuple();
    p.Reduce();
  }
  if (!group.empty()) p.SetItems();
  p.SetItems();
  p.Stop();
  return p.Take();
}

absl::string_view TensorBytes(const NamedFloatTensor& t) {
  return absl::string_view(reinterpret_cast<const char*>(t.data), Numel(t.shape) * sizeof(float));
}

}  // namespace

const char* TorchFileFormatName(TorchFileFormat format) {
  return format == TorchFileFormat::kZip ? "zip" : "legacy";
}

int DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat64:
    case DType::kInt64:
      return 8;
    case DType::kFloat32:
    case DType::kInt32:
      return 4;
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kInt16:
      return 2;
    default:
      return 1;
  }
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat64:
      return "float64";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
    case DType::kInt64:
      return "int64";
    case DType::kInt32:
      return "int32";
    case DType::kInt16:
      return "int16";
    case DType::kInt8:
      return "int8";
    case DType::kUInt8:
      return "uint8";
    case DType::kBool:
      return "bool";
  }
  return "?";
}

int64_t RawTensor::numel() const { return Numel(sizes); }

absl::StatusOr<RawStateDict> ParseTorchStateDict(std::shared_ptr<const std::string> file) {
  TorchFileFormat format;
  internal::Container container;
  if (ZipArchive::LooksLikeZip(*file)) {
    format = TorchFileFormat::kZip;
    container = internal::Container::kZip;
  } else if (!file->empty() && static_cast<uint8_t>((*file)[0]) == 0x80) {
    // A plain pickle is not a torch.save file: the legacy loader says so.
    format = TorchFileFormat::kLegacy;
    container = internal::Container::kLegacy;
  } else {
    return Invalid("not a torch.save file: neither a zip archive nor a legacy pickle");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<LoadedPickle> lp,
                   LoadedPickle::Load(std::move(file), container));
  return StateDictOf(*lp, format);
}

absl::StatusOr<RawStateDict> ReadTorchStateDict(const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path));
  auto sd = ParseTorchStateDict(std::make_shared<const std::string>(std::move(bytes)));
  if (!sd.ok()) return Annotate(sd.status(), path);
  return sd;
}

absl::StatusOr<std::string> SerializeTorchStateDict(const std::vector<NamedFloatTensor>& tensors,
                                                    TorchFileFormat format) {
  const bool legacy = format == TorchFileFormat::kLegacy;
  std::string pickle = StateDictPickle(tensors, legacy);
  if (!legacy) {
    ZipWriter zip;
    RETURN_IF_ERROR(zip.Add("archive/data.pkl", pickle));
    RETURN_IF_ERROR(zip.Add("archive/byteorder", "little"));
    for (size_t i = 0; i < tensors.size(); ++i) {
      RETURN_IF_ERROR(zip.Add(absl::StrCat("archive/data/", i), TensorBytes(tensors[i])));
    }
    RETURN_IF_ERROR(zip.Add("archive/version", "3\n"));
    return zip.Finish();
  }
  PickleWriter p;
  p.Raw(internal::LegacyTorchHeader());
  p.Raw(pickle);
  p.Proto();  // storage keys
  p.EmptyList();
  p.Mark();
  for (size_t i = 0; i < tensors.size(); ++i) p.Str(absl::StrCat(i));
  p.Appends();
  p.Stop();
  for (const NamedFloatTensor& t : tensors) {
    std::string count;
    internal::AppendLE(&count, Numel(t.shape), 8);
    p.Raw(count);
    p.Raw(TensorBytes(t));
  }
  return p.Take();
}

}  // namespace i2s

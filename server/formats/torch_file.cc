#include "server/formats/torch_file.h"

#include <limits>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/base/status_macros.h"
#include "server/formats/internal/byte_reader.h"
#include "server/formats/internal/pickle.h"
#include "server/formats/npy.h"
#include "server/formats/zip.h"

namespace i2s {
namespace {

using internal::PyKind;
using internal::PyValue;
using internal::Unpickler;

// torch/serialization.py: MAGIC_NUMBER = 0x1950a86a20f9469cfc6c, pickled as LONG1 with
// these 10 little-endian bytes; PROTOCOL_VERSION = 1001.
constexpr absl::string_view kLegacyMagic("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10);
constexpr int64_t kLegacyProtocolVersion = 1001;
constexpr int kStorageTag = 1;
constexpr int kTensorTag = 2;
constexpr int kMaxDims = 64;

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(std::string(what));
}

struct StorageInfo {
  std::string key;
  DType dtype = DType::kFloat32;
  int64_t declared_numel = 0;
  // A legacy storage view (torch < 0.4): a slice of storage `root_key`.
  std::string root_key;
  int64_t view_offset = 0;
  bool has_data = false;
  absl::string_view bytes;
};

struct TensorInfo {
  int storage = 0;
  int64_t offset = 0;
  std::vector<int64_t> sizes, strides;
};

absl::StatusOr<DType> StorageDType(absl::string_view global) {
  static const auto* kTypes = new std::map<std::string, DType, std::less<>>{
      {"torch.FloatStorage", DType::kFloat32}, {"torch.DoubleStorage", DType::kFloat64},
      {"torch.HalfStorage", DType::kFloat16},  {"torch.BFloat16Storage", DType::kBFloat16},
      {"torch.LongStorage", DType::kInt64},    {"torch.IntStorage", DType::kInt32},
      {"torch.ShortStorage", DType::kInt16},   {"torch.CharStorage", DType::kInt8},
      {"torch.ByteStorage", DType::kUInt8},    {"torch.BoolStorage", DType::kBool}};
  auto it = kTypes->find(global);
  if (it == kTypes->end()) return Invalid(absl::StrCat("unsupported storage type '", global, "'"));
  return it->second;
}

absl::StatusOr<std::vector<int64_t>> IntTuple(const PyValue* v, absl::string_view what) {
  if (v->kind != PyKind::kTuple) return Invalid(absl::StrCat(what, " is not a tuple"));
  if (v->items.size() > kMaxDims) return Invalid(absl::StrCat(what, " has too many dimensions"));
  std::vector<int64_t> out;
  for (const PyValue* item : v->items) {
    if (item->kind != PyKind::kInt || item->i < 0) {
      return Invalid(absl::StrCat(what, " holds something other than a non-negative int"));
    }
    out.push_back(item->i);
  }
  return out;
}

// Collects the storages and tensors that the pickle refers to; its callbacks are the
// only way a pickle can create objects other than plain containers.
class Builder {
 public:
  explicit Builder(bool legacy) : legacy_(legacy) {}

  Unpickler MakeUnpickler() {
    return Unpickler([this](Unpickler& u, PyValue* pid) { return PersistentLoad(u, pid); },
                     [this](Unpickler& u, absl::string_view callable, PyValue* args) {
                       return Reduce(u, callable, args);
                     });
  }

  std::vector<StorageInfo>& storages() { return storages_; }
  std::map<std::string, int>& storage_index() { return storage_index_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }

 private:
  absl::StatusOr<PyValue*> PersistentLoad(Unpickler& u, PyValue* pid) {
    // zip: ('storage', type, key, location, numel); legacy: the same + view_metadata.
    size_t want = legacy_ ? 6 : 5;
    if (pid->kind != PyKind::kTuple || pid->items.size() != want) {
      return Invalid(absl::StrCat("persistent id is not a ", want, "-tuple"));
    }
    const auto& it = pid->items;
    if (it[0]->kind != PyKind::kStr || it[0]->s != "storage") {
      return Invalid("persistent id is not a storage (a pickled module or other object?)");
    }
    if (it[1]->kind != PyKind::kGlobal) return Invalid("storage type is not a class");
    ASSIGN_OR_RETURN(DType dtype, StorageDType(it[1]->s));
    if (it[2]->kind != PyKind::kStr || it[3]->kind != PyKind::kStr || it[4]->kind != PyKind::kInt ||
        it[4]->i < 0) {
      return Invalid("malformed storage persistent id");
    }
    const std::string& key = it[2]->s;
    StorageInfo info;
    info.key = key;
    info.dtype = dtype;
    info.declared_numel = it[4]->i;
    if (legacy_ && it[5]->kind != PyKind::kNone) {
      // view_metadata = (view_key, offset, view_size): the tensor uses the view.
      const PyValue* view = it[5];
      if (view->kind != PyKind::kTuple || view->items.size() != 3 ||
          view->items[0]->kind != PyKind::kStr || view->items[1]->kind != PyKind::kInt ||
          view->items[2]->kind != PyKind::kInt || view->items[1]->i < 0 || view->items[2]->i < 0) {
        return Invalid("malformed storage view metadata");
      }
      RETURN_IF_ERROR(Register(info).status());  // the root storage
      StorageInfo v;
      v.key = view->items[0]->s;
      v.dtype = dtype;
      v.declared_numel = view->items[2]->i;
      v.root_key = key;
      v.view_offset = view->items[1]->i;
      return Opaque(u, kStorageTag, Register(v));
    }
    return Opaque(u, kStorageTag, Register(info));
  }

  absl::StatusOr<int> Register(const StorageInfo& info) {
    auto found = storage_index_.find(info.key);
    if (found != storage_index_.end()) {
      const StorageInfo& old = storages_[found->second];
      if (old.dtype != info.dtype) {
        return Invalid(absl::StrCat("storage '", info.key, "' used with two dtypes"));
      }
      return found->second;
    }
    storages_.push_back(info);
    storage_index_[info.key] = static_cast<int>(storages_.size()) - 1;
    return static_cast<int>(storages_.size()) - 1;
  }

  absl::StatusOr<PyValue*> Opaque(Unpickler& u, int tag, absl::StatusOr<int> index) {
    if (!index.ok()) return index.status();
    PyValue* v = u.New(PyKind::kOpaque);
    v->tag = tag;
    v->i = *index;
    return v;
  }

  absl::StatusOr<PyValue*> Reduce(Unpickler& u, absl::string_view callable, PyValue* args) {
    const auto& a = args->items;
    if (callable == "collections.OrderedDict") {
      if (!a.empty()) return Invalid("OrderedDict built with arguments");
      return u.New(PyKind::kDict);
    }
    if (callable == "torch._utils._rebuild_tensor_v2" ||
        callable == "torch._utils._rebuild_tensor") {
      // (storage, storage_offset, size, stride[, requires_grad, backward_hooks[, metadata]])
      if (a.size() < 4 || a.size() > 7) return Invalid("tensor rebuilt with wrong arguments");
      if (a[0]->kind != PyKind::kOpaque || a[0]->tag != kStorageTag) {
        return Invalid("tensor without a storage");
      }
      if (a[1]->kind != PyKind::kInt || a[1]->i < 0) return Invalid("bad tensor storage offset");
      TensorInfo t;
      t.storage = static_cast<int>(a[0]->i);
      t.offset = a[1]->i;
      ASSIGN_OR_RETURN(t.sizes, IntTuple(a[2], "tensor size"));
      ASSIGN_OR_RETURN(t.strides, IntTuple(a[3], "tensor stride"));
      if (t.sizes.size() != t.strides.size())
        return Invalid("tensor size and stride differ in rank");
      tensors_.push_back(std::move(t));
      return Opaque(u, kTensorTag, static_cast<int>(tensors_.size()) - 1);
    }
    if (callable == "torch._utils._rebuild_parameter" ||
        callable == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty() || a[0]->kind != PyKind::kOpaque || a[0]->tag != kTensorTag) {
        return Invalid("parameter without a tensor");
      }
      return a[0];
    }
    return Invalid(
        absl::StrCat("unsupported object '", callable,
                     "' in the pickle: only dicts of tensors (state dicts) can be read"));
  }

  bool legacy_;
  std::vector<StorageInfo> storages_;
  std::map<std::string, int> storage_index_;
  std::vector<TensorInfo> tensors_;
};

// Checks the view against its storage and returns the final tensor.
absl::StatusOr<RawTensor> MakeTensor(const TensorInfo& t, const StorageInfo& s) {
  RawTensor out;
  out.dtype = s.dtype;
  out.sizes = t.sizes;
  out.strides = t.strides;
  out.offset = t.offset;
  out.storage = s.bytes;
  const int64_t storage_numel = static_cast<int64_t>(s.bytes.size()) / DTypeSize(s.dtype);
  constexpr int64_t kLimit = int64_t{1} << 50;
  int64_t numel = 1, last = t.offset;
  for (size_t d = 0; d < t.sizes.size(); ++d) {
    if (t.sizes[d] > kLimit || t.strides[d] > kLimit) return Invalid("tensor dimension too large");
    numel *= t.sizes[d];
    if (numel > kLimit) return Invalid("tensor too large");
    if (t.sizes[d] > 0) {
      if (t.strides[d] > 0 && t.sizes[d] - 1 > (kLimit - last) / t.strides[d]) {
        return Invalid("tensor view too large");
      }
      last += (t.sizes[d] - 1) * t.strides[d];
    }
  }
  if (numel > 0 && last >= storage_numel) {
    return Invalid(absl::StrCat("tensor view reaches element ", last, " of a storage of ",
                                storage_numel, " elements (truncated or corrupt file)"));
  }
  return out;
}

absl::StatusOr<RawStateDict> Finish(Builder& b, const PyValue* root, TorchFileFormat format,
                                    std::shared_ptr<const std::string> file) {
  // Resolve legacy views to slices of their roots.
  for (StorageInfo& s : b.storages()) {
    if (s.root_key.empty()) continue;
    const StorageInfo& root = b.storages()[b.storage_index().at(s.root_key)];
    int64_t elem = DTypeSize(s.dtype);
    int64_t root_numel = static_cast<int64_t>(root.bytes.size()) / elem;
    if (s.view_offset > root_numel || s.declared_numel > root_numel - s.view_offset) {
      return Invalid(absl::StrCat("storage view '", s.key, "' out of bounds"));
    }
    s.bytes = root.bytes.substr(s.view_offset * elem, s.declared_numel * elem);
    s.has_data = root.has_data;
  }
  if (root->kind != PyKind::kDict) {
    return Invalid(absl::StrCat("not a state dict: the file holds a ",
                                internal::PyKindName(root->kind), ", expected a dict of tensors"));
  }
  RawStateDict out;
  out.format = format;
  out.file = std::move(file);
  for (size_t k = 0; k + 1 < root->items.size(); k += 2) {
    const PyValue* key = root->items[k];
    const PyValue* value = root->items[k + 1];
    if (key->kind != PyKind::kStr) return Invalid("not a state dict: a key is not a string");
    if (value->kind != PyKind::kOpaque || value->tag != kTensorTag) {
      return Invalid(absl::StrCat("not a state dict: entry '", key->s, "' is a ",
                                  internal::PyKindName(value->kind), ", not a tensor"));
    }
    const TensorInfo& t = b.tensors()[value->i];
    const StorageInfo& s = b.storages()[t.storage];
    if (!s.has_data) return Invalid(absl::StrCat("storage '", s.key, "' has no data in the file"));
    auto tensor = MakeTensor(t, s);
    if (!tensor.ok()) return Annotate(tensor.status(), absl::StrCat("tensor '", key->s, "'"));
    out.tensors.emplace_back(key->s, *std::move(tensor));
  }
  return out;
}

absl::StatusOr<RawStateDict> ParseZip(std::shared_ptr<const std::string> file) {
  ASSIGN_OR_RETURN(ZipArchive zip, ZipArchive::Parse(*file));
  const ZipEntry* pkl = nullptr;
  for (const ZipEntry& e : zip.entries()) {
    if (absl::EndsWith(e.name, "/data.pkl") && e.name.find('/') == e.name.size() - 9) pkl = &e;
  }
  if (pkl == nullptr) return Invalid("zip archive without <name>/data.pkl: not a torch.save file");
  std::string prefix = pkl->name.substr(0, pkl->name.size() - 8);  // "<name>/"
  for (const ZipEntry& e : zip.entries()) {
    if (absl::StartsWith(e.name, prefix + "code/")) {
      return Invalid(
          "a TorchScript archive (torch.jit.save), not a state dict: save the weights with "
          "torch.save(module.state_dict(), path)");
    }
  }
  Builder b(/*legacy=*/false);
  Unpickler u = b.MakeUnpickler();
  size_t consumed = 0;
  ASSIGN_OR_RETURN(PyValue * root, u.Load(pkl->data, &consumed));
  for (StorageInfo& s : b.storages()) {
    const ZipEntry* data = zip.Find(prefix + "data/" + s.key);
    if (data == nullptr)
      return Invalid(absl::StrCat("storage '", s.key, "' missing from the archive"));
    if (data->data.size() % DTypeSize(s.dtype) != 0) {
      return Invalid(
          absl::StrCat("storage '", s.key, "' size is not a multiple of its element size"));
    }
    s.bytes = data->data;
    s.has_data = true;
  }
  return Finish(b, root, TorchFileFormat::kZip, std::move(file));
}

absl::StatusOr<RawStateDict> ParseLegacy(std::shared_ptr<const std::string> file) {
  absl::string_view rest(*file);
  Builder b(/*legacy=*/true);
  Unpickler u = b.MakeUnpickler();
  size_t consumed = 0;
  auto load = [&]() -> absl::StatusOr<PyValue*> {
    auto v = u.Load(rest, &consumed);
    if (v.ok()) rest.remove_prefix(consumed);
    return v;
  };
  auto magic = load();
  if (!magic.ok() || (*magic)->kind != PyKind::kBigInt || (*magic)->s != kLegacyMagic) {
    return Invalid("not a torch.save file: no legacy magic number and not a zip archive");
  }
  ASSIGN_OR_RETURN(PyValue * version, load());
  if (version->kind != PyKind::kInt || version->i != kLegacyProtocolVersion) {
    return Invalid("unsupported legacy torch.save protocol version");
  }
  ASSIGN_OR_RETURN(PyValue * sys_info, load());
  if (sys_info->kind != PyKind::kDict) return Invalid("legacy system info is not a dict");
  for (size_t k = 0; k + 1 < sys_info->items.size(); k += 2) {
    const PyValue* key = sys_info->items[k];
    const PyValue* value = sys_info->items[k + 1];
    if (key->kind == PyKind::kStr && key->s == "little_endian" && value->kind == PyKind::kBool &&
        !value->b) {
      return Invalid("big-endian torch.save files are not supported");
    }
  }
  ASSIGN_OR_RETURN(PyValue * root, load());
  ASSIGN_OR_RETURN(PyValue * keys, load());
  if (keys->kind != PyKind::kList) return Invalid("legacy storage key list is not a list");
  internal::ByteReader r(rest);
  for (const PyValue* key : keys->items) {
    if (key->kind != PyKind::kStr) return Invalid("legacy storage key is not a string");
    auto it = b.storage_index().find(key->s);
    if (it == b.storage_index().end()) {
      return Invalid(absl::StrCat("storage '", key->s, "' listed but never used"));
    }
    StorageInfo& s = b.storages()[it->second];
    if (s.has_data || !s.root_key.empty()) {
      return Invalid(absl::StrCat("storage '", key->s, "' listed twice"));
    }
    auto count = r.UintLE(8);
    if (!count.ok()) return Invalid(absl::StrCat("storage '", key->s, "': truncated size record"));
    if (static_cast<int64_t>(*count) != s.declared_numel) {
      return Invalid(absl::StrCat("storage '", key->s, "': size record ", *count,
                                  " differs from the declared ", s.declared_numel, " elements"));
    }
    int64_t elem = DTypeSize(s.dtype);
    if (*count > r.remaining() / elem) {
      return Invalid(absl::StrCat("storage '", key->s, "': truncated data (", *count * elem,
                                  " bytes declared, ", r.remaining(), " left)"));
    }
    ASSIGN_OR_RETURN(s.bytes, r.Bytes(*count * elem));
    s.has_data = true;
  }
  if (!r.done())
    return Invalid(absl::StrCat(r.remaining(), " unexpected bytes after the last storage"));
  return Finish(b, root, TorchFileFormat::kLegacy, std::move(file));
}

// Emits the pickle opcodes torch.save produces (protocol 2).
class PickleWriter {
 public:
  void Proto() { out_ += "\x80\x02"; }
  void Stop() { out_ += '.'; }
  void Mark() { out_ += '('; }
  void Tuple() { out_ += 't'; }
  void EmptyTuple() { out_ += ')'; }
  void EmptyDict() { out_ += '}'; }
  void EmptyList() { out_ += ']'; }
  void SetItems() { out_ += 'u'; }
  void Appends() { out_ += 'e'; }
  void Reduce() { out_ += 'R'; }
  void BinPersId() { out_ += 'Q'; }
  void None() { out_ += 'N'; }
  void Bool(bool v) { out_ += v ? '\x88' : '\x89'; }
  void Global(absl::string_view module, absl::string_view name) {
    absl::StrAppend(&out_, "c", module, "\n", name, "\n");
  }
  void Str(absl::string_view s) {
    out_ += 'X';
    internal::AppendLE(&out_, s.size(), 4);
    out_.append(s.data(), s.size());
  }
  void Int(int64_t v) {
    if (v >= 0 && v < 256) {
      out_ += 'K';
      internal::AppendLE(&out_, v, 1);
    } else if (v >= 0 && v < 65536) {
      out_ += 'M';
      internal::AppendLE(&out_, v, 2);
    } else if (v >= std::numeric_limits<int32_t>::min() &&
               v <= std::numeric_limits<int32_t>::max()) {
      out_ += 'J';
      internal::AppendLE(&out_, static_cast<uint32_t>(v), 4);
    } else {
      out_ += "\x8a\x08";
      internal::AppendLE(&out_, static_cast<uint64_t>(v), 8);
    }
  }
  void Raw(absl::string_view bytes) { out_.append(bytes.data(), bytes.size()); }
  void IntTuple(const std::vector<int64_t>& v) {
    Mark();
    for (int64_t x : v) Int(x);
    Tuple();
  }
  void EmptyOrderedDict() {
    Global("collections", "OrderedDict");
    EmptyTuple();
    Reduce();
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

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
  for (size_t i = 0; i < tensors.size(); ++i) {
    const NamedFloatTensor& t = tensors[i];
    p.Str(t.name);
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
  if (ZipArchive::LooksLikeZip(*file)) return ParseZip(std::move(file));
  if (!file->empty() && static_cast<uint8_t>((*file)[0]) == 0x80)
    return ParseLegacy(std::move(file));
  return Invalid("not a torch.save file: neither a zip archive nor a legacy pickle");
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
  p.Proto();  // magic number
  p.Raw("\x8a\x0a");
  p.Raw(kLegacyMagic);
  p.Stop();
  p.Proto();  // protocol version
  p.Int(kLegacyProtocolVersion);
  p.Stop();
  p.Proto();  // system info
  p.EmptyDict();
  p.Mark();
  p.Str("protocol_version");
  p.Int(kLegacyProtocolVersion);
  p.Str("little_endian");
  p.Bool(true);
  p.Str("type_sizes");
  p.EmptyDict();
  p.Mark();
  p.Str("short");
  p.Int(2);
  p.Str("int");
  p.Int(4);
  p.Str("long");
  p.Int(4);
  p.SetItems();
  p.SetItems();
  p.Stop();
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

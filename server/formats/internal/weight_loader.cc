#include "server/formats/internal/weight_loader.h"

#include <cmath>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/formats/internal/byte_reader.h"
#include "server/formats/internal/pickle_writer.h"
#include "server/formats/zip.h"

namespace i2s::internal {
namespace {

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(std::string(what));
}

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

// numpy's dtype.str without the byte order: "f4", "i8", ...
bool NumpyDTypeCode(absl::string_view code, DType* dtype) {
  static const auto* kCodes = new std::map<std::string, DType, std::less<>>{
      {"f2", DType::kFloat16}, {"f4", DType::kFloat32}, {"f8", DType::kFloat64},
      {"i1", DType::kInt8},    {"i2", DType::kInt16},   {"i4", DType::kInt32},
      {"i8", DType::kInt64},   {"u1", DType::kUInt8},   {"b1", DType::kBool}};
  auto it = kCodes->find(code);
  if (it == kCodes->end()) return false;
  *dtype = it->second;
  return true;
}

absl::StatusOr<std::vector<int64_t>> IntTuple(const PyValue* v, absl::string_view what) {
  if (v->kind != PyKind::kTuple && v->kind != PyKind::kList) {
    return Invalid(absl::StrCat(what, " is not a tuple"));
  }
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

// Data of a bytes value (or of a Python 2 8-bit str).
bool DataOf(const PyValue* v, absl::string_view* data) {
  if (v->kind == PyKind::kBytes) {
    *data = v->bytes;
    return true;
  }
  if (v->kind == PyKind::kStr && v->tag == kRawStrTag) {
    *data = v->s;
    return true;
  }
  return false;
}

const PyValue* DictGet(const PyValue* dict, absl::string_view key) {
  for (size_t k = 0; k + 1 < dict->items.size(); k += 2) {
    if (dict->items[k]->kind == PyKind::kStr && dict->items[k]->s == key) {
      return dict->items[k + 1];
    }
  }
  return nullptr;
}

// IEEE half -> float.
float HalfToFloat(uint16_t h) {
  const int sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(frac), -24);
  } else if (exp == 31) {
    v = frac ? NAN : INFINITY;
  } else {
    v = std::ldexp(static_cast<float>(frac | 0x400), exp - 25);
  }
  return sign ? -v : v;
}

std::vector<int64_t> Strides(const std::vector<int64_t>& shape, bool fortran) {
  std::vector<int64_t> strides(shape.size(), 1);
  if (fortran) {
    for (size_t d = 1; d < shape.size(); ++d) strides[d] = strides[d - 1] * shape[d - 1];
  } else {
    for (size_t d = shape.size(); d-- > 1;) strides[d - 1] = strides[d] * shape[d];
  }
  return strides;
}

// Checks the view against its storage and returns the final tensor.
absl::StatusOr<RawTensor> MakeTensor(const LoadedPickle::TensorInfo& t,
                                     const LoadedPickle::StorageInfo& s) {
  RawTensor out;
  out.dtype = s.dtype;
  out.sizes = t.sizes;
  out.strides = t.strides;
  out.offset = t.offset;
  out.storage = s.bytes;
  const int64_t storage_numel = static_cast<int64_t>(s.bytes.size()) / DTypeSize(s.dtype);
  constexpr int64_t kLimit = int64_t{1} << 50;
  int64_t numel = 1, last = t.offset;
  if (t.offset > kLimit) return Invalid("tensor offset too large");
  for (size_t d = 0; d < t.sizes.size(); ++d) {
    if (t.sizes[d] > kLimit || t.strides[d] > kLimit) return Invalid("tensor dimension too large");
    if (t.sizes[d] != 0 && numel > kLimit / t.sizes[d]) return Invalid("tensor too large");
    numel *= t.sizes[d];
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

// Numel with overflow check (each size < 2^50 already).
absl::StatusOr<int64_t> CheckedNumel(const std::vector<int64_t>& shape) {
  constexpr int64_t kLimit = int64_t{1} << 50;
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d > kLimit) return Invalid("array dimension too large");
    if (d != 0 && n > kLimit / d) return Invalid("array too large");
    n *= d;
  }
  return n;
}

}  // namespace

bool LooksLikeLegacyTorch(absl::string_view b) {
  // PROTO n, optional FRAME (8-byte length), LONG1 10 <magic>, STOP.
  if (b.size() < 2 || static_cast<uint8_t>(b[0]) != 0x80) return false;
  size_t pos = 2;
  if (b.size() > pos && static_cast<uint8_t>(b[pos]) == 0x95) pos += 9;
  if (b.size() < pos + 13) return false;
  return b[pos] == '\x8a' && b[pos + 1] == '\x0a' && b.substr(pos + 2, 10) == kLegacyMagic &&
         b[pos + 12] == '.';
}

std::string LegacyTorchHeader() {
  PickleWriter p;
  p.Proto().Raw("\x8a\x0a").Raw(kLegacyMagic).Stop();  // magic number
  p.Proto().Int(kLegacyProtocolVersion).Stop();        // protocol version
  p.Proto().EmptyDict().Mark();                        // system info
  p.Str("protocol_version").Int(kLegacyProtocolVersion);
  p.Str("little_endian").Bool(true);
  p.Str("type_sizes").EmptyDict().Mark();
  p.Str("short").Int(2).Str("int").Int(4).Str("long").Int(4);
  p.SetItems().SetItems().Stop();
  return p.Take();
}

LoadedPickle::LoadedPickle() {
  Unpickler::Options options;
  options.persistent_load = [this](Unpickler& u, PyValue* pid) { return PersistentLoad(u, pid); };
  options.call = [this](Unpickler& u, absl::string_view callable, PyValue* args) {
    return Call(u, callable, args);
  };
  options.build = [this](Unpickler& u, PyValue* target, PyValue* state) {
    return Build(u, target, state);
  };
  options.dict_classes = {"dnnlib.util.EasyDict", "dnnlib.EasyDict"};
  unpickler_ = std::make_unique<Unpickler>(std::move(options));
}

absl::StatusOr<std::unique_ptr<LoadedPickle>> LoadedPickle::Load(
    std::shared_ptr<const std::string> file, Container container) {
  std::unique_ptr<LoadedPickle> lp(new LoadedPickle());
  lp->file_ = std::move(file);
  switch (container) {
    case Container::kZip: {
      ASSIGN_OR_RETURN(lp->root_, lp->LoadZip());
      break;
    }
    case Container::kLegacy: {
      ASSIGN_OR_RETURN(lp->root_, lp->LoadLegacyStream(*lp->file_, nullptr, /*nested=*/false));
      break;
    }
    case Container::kPickle: {
      ASSIGN_OR_RETURN(lp->root_, lp->LoadPlain());
      break;
    }
  }
  return lp;
}

absl::StatusOr<PyValue*> LoadedPickle::LoadZip() {
  ASSIGN_OR_RETURN(ZipArchive zip, ZipArchive::Parse(*file_));
  const ZipEntry* pkl = nullptr;
  for (const ZipEntry& e : zip.entries()) {
    // Views of the pickle and storages outlive `zip`, so they must lie in *file_.
    if (e.inflated != nullptr) {
      return Invalid(absl::StrCat("zip member '", e.name,
                                  "' is compressed: torch.save archives store their members"));
    }
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
  scopes_.push_back({Container::kZip, nullptr, {}});
  size_t consumed = 0;
  ASSIGN_OR_RETURN(PyValue * root, unpickler_->Load(pkl->data, &consumed));
  for (const auto& [key, index] : scopes_.back().storages) {
    StorageInfo& s = storages_[index];
    const ZipEntry* data = zip.Find(prefix + "data/" + key);
    if (data == nullptr)
      return Invalid(absl::StrCat("storage '", key, "' missing from the archive"));
    if (data->data.size() % DTypeSize(s.dtype) != 0) {
      return Invalid(
          absl::StrCat("storage '", key, "' size is not a multiple of its element size"));
    }
    s.bytes = data->data;
    s.has_data = true;
  }
  scopes_.pop_back();
  return root;
}

absl::StatusOr<PyValue*> LoadedPickle::LoadLegacyStream(absl::string_view stream,
                                                        std::shared_ptr<const std::string> owner,
                                                        bool nested) {
  absl::string_view rest = stream;
  scopes_.push_back({Container::kLegacy, owner, {}});
  size_t consumed = 0;
  auto load = [&]() -> absl::StatusOr<PyValue*> {
    auto v = unpickler_->Load(rest, &consumed);
    if (v.ok()) rest.remove_prefix(consumed);
    return v;
  };
  auto magic = load();
  if (!magic.ok() || (*magic)->kind != PyKind::kBigInt || (*magic)->s != kLegacyMagic) {
    return Invalid(nested ? "storage bytes (torch.storage._load_from_bytes) are not a legacy "
                            "torch.save stream"
                          : "not a torch.save file: no legacy magic number and not a zip archive");
  }
  ASSIGN_OR_RETURN(PyValue * version, load());
  if (version->kind != PyKind::kInt || version->i != kLegacyProtocolVersion) {
    return Invalid("unsupported legacy torch.save protocol version");
  }
  ASSIGN_OR_RETURN(PyValue * sys_info, load());
  if (sys_info->kind != PyKind::kDict) return Invalid("legacy system info is not a dict");
  const PyValue* little = DictGet(sys_info, "little_endian");
  if (little != nullptr && little->kind == PyKind::kBool && !little->b) {
    return Invalid("big-endian torch.save files are not supported");
  }
  ASSIGN_OR_RETURN(PyValue * root, load());
  ASSIGN_OR_RETURN(PyValue * keys, load());
  if (keys->kind != PyKind::kList) return Invalid("legacy storage key list is not a list");
  Scope& scope = scopes_.back();
  ByteReader r(rest);
  for (const PyValue* key : keys->items) {
    if (key->kind != PyKind::kStr) return Invalid("legacy storage key is not a string");
    auto it = scope.storages.find(key->s);
    if (it == scope.storages.end()) {
      return Invalid(absl::StrCat("storage '", key->s, "' listed but never used"));
    }
    StorageInfo& s = storages_[it->second];
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
    s.owner = owner;
    s.has_data = true;
  }
  if (!r.done()) {
    return Invalid(absl::StrCat(r.remaining(), " unexpected bytes after the last storage"));
  }
  // Resolve legacy views to slices of their roots.
  for (const auto& [key, index] : scope.storages) {
    StorageInfo& s = storages_[index];
    if (s.root_key.empty()) continue;
    const StorageInfo& root_storage = storages_[scope.storages.at(s.root_key)];
    int64_t elem = DTypeSize(s.dtype);
    int64_t root_numel = static_cast<int64_t>(root_storage.bytes.size()) / elem;
    if (s.view_offset > root_numel || s.declared_numel > root_numel - s.view_offset) {
      return Invalid(absl::StrCat("storage view '", s.key, "' out of bounds"));
    }
    s.bytes = root_storage.bytes.substr(s.view_offset * elem, s.declared_numel * elem);
    s.owner = root_storage.owner;
    s.has_data = root_storage.has_data;
  }
  scopes_.pop_back();
  return root;
}

absl::StatusOr<PyValue*> LoadedPickle::LoadPlain() {
  scopes_.push_back({Container::kPickle, nullptr, {}});
  size_t consumed = 0;
  ASSIGN_OR_RETURN(PyValue * root, unpickler_->Load(*file_, &consumed));
  if (consumed != file_->size()) {
    return Invalid(absl::StrCat(file_->size() - consumed, " unexpected bytes after the pickle"));
  }
  scopes_.pop_back();
  return root;
}

absl::StatusOr<int> LoadedPickle::Register(Scope& scope, const StorageInfo& info) {
  auto found = scope.storages.find(info.key);
  if (found != scope.storages.end()) {
    const StorageInfo& old = storages_[found->second];
    if (old.dtype != info.dtype) {
      return Invalid(absl::StrCat("storage '", info.key, "' used with two dtypes"));
    }
    return found->second;
  }
  storages_.push_back(info);
  scope.storages[info.key] = static_cast<int>(storages_.size()) - 1;
  return static_cast<int>(storages_.size()) - 1;
}

absl::StatusOr<PyValue*> LoadedPickle::PersistentLoad(Unpickler& u, PyValue* pid) {
  if (scopes_.empty() || scopes_.back().container == Container::kPickle) {
    return Invalid("a persistent ID in a plain pickle (only torch.save files have them)");
  }
  Scope& scope = scopes_.back();
  const bool legacy = scope.container == Container::kLegacy;
  if (pid->kind != PyKind::kTuple || pid->items.empty() || pid->items[0]->kind != PyKind::kStr) {
    return Invalid("malformed persistent id");
  }
  const auto& it = pid->items;
  if (legacy && it[0]->s == "module" && it.size() == 4 && it[1]->kind == PyKind::kGlobal) {
    // torch.save of a whole nn.Module: ('module', cls, source_file, source). The class
    // name is all that is kept; the source is never compiled.
    return it[1];
  }
  // zip: ('storage', type, key, location, numel); legacy: the same + view_metadata.
  size_t want = legacy ? 6 : 5;
  if (it[0]->s != "storage") {
    return Invalid("persistent id is not a storage (a pickled module or other object?)");
  }
  if (it.size() != want) return Invalid(absl::StrCat("persistent id is not a ", want, "-tuple"));
  if (it[1]->kind != PyKind::kGlobal) return Invalid("storage type is not a class");
  ASSIGN_OR_RETURN(DType dtype, StorageDType(it[1]->s));
  if (it[2]->kind != PyKind::kStr || it[3]->kind != PyKind::kStr || it[4]->kind != PyKind::kInt ||
      it[4]->i < 0) {
    return Invalid("malformed storage persistent id");
  }
  StorageInfo info;
  info.type = it[1]->s;
  info.key = it[2]->s;
  info.dtype = dtype;
  info.declared_numel = it[4]->i;
  auto opaque = [&](absl::StatusOr<int> index) -> absl::StatusOr<PyValue*> {
    if (!index.ok()) return index.status();
    PyValue* v = u.New(PyKind::kOpaque);
    v->tag = kStorageTag;
    v->i = *index;
    return v;
  };
  if (legacy && it[5]->kind != PyKind::kNone) {
    // view_metadata = (view_key, offset, view_size): the tensor uses the view.
    const PyValue* view = it[5];
    if (view->kind != PyKind::kTuple || view->items.size() != 3 ||
        view->items[0]->kind != PyKind::kStr || view->items[1]->kind != PyKind::kInt ||
        view->items[2]->kind != PyKind::kInt || view->items[1]->i < 0 || view->items[2]->i < 0) {
      return Invalid("malformed storage view metadata");
    }
    RETURN_IF_ERROR(Register(scope, info).status());  // the root storage
    StorageInfo v = info;
    v.key = view->items[0]->s;
    v.declared_numel = view->items[2]->i;
    v.root_key = info.key;
    v.view_offset = view->items[1]->i;
    if (v.key == v.root_key) return Invalid("storage view of itself");
    return opaque(Register(scope, v));
  }
  return opaque(Register(scope, info));
}

absl::StatusOr<PyValue*> LoadedPickle::RebuildTensor(Unpickler& u, const std::vector<PyValue*>& a) {
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
  if (t.sizes.size() != t.strides.size()) return Invalid("tensor size and stride differ in rank");
  tensors_.push_back(std::move(t));
  PyValue* v = u.New(PyKind::kOpaque);
  v->tag = kTensorTag;
  v->i = static_cast<int64_t>(tensors_.size()) - 1;
  return v;
}

absl::StatusOr<PyValue*> LoadedPickle::LoadFromBytes(Unpickler& u, PyValue* bytes) {
  (void)u;
  if (bytes->kind != PyKind::kBytes) return Invalid("_load_from_bytes of something not bytes");
  auto cached = loaded_from_bytes_.find(bytes);
  if (cached != loaded_from_bytes_.end()) return cached->second;
  if (in_nested_stream_) {
    return Invalid("_load_from_bytes inside a _load_from_bytes stream: nested too deeply");
  }
  in_nested_stream_ = true;
  auto root = LoadLegacyStream(bytes->bytes, bytes->owner, /*nested=*/true);
  in_nested_stream_ = false;
  if (!root.ok()) return Annotate(root.status(), "torch.storage._load_from_bytes");
  if ((*root)->kind != PyKind::kOpaque || (*root)->tag != kStorageTag) {
    return Invalid(
        "torch.storage._load_from_bytes: the stream holds something other than a storage");
  }
  loaded_from_bytes_[bytes] = *root;
  return *root;
}

absl::StatusOr<PyValue*> LoadedPickle::PersistentObject(Unpickler& u, PyValue* meta) {
  // meta = {type: 'class', version, module_src, class_name, state}: module_src is code
  // and is never compiled; the object is its class name and its state (the __dict__).
  if (meta->kind != PyKind::kDict) return Invalid("persistent object meta is not a dict");
  const PyValue* type = DictGet(meta, "type");
  const PyValue* class_name = DictGet(meta, "class_name");
  PyValue* state = const_cast<PyValue*>(DictGet(meta, "state"));
  if (type == nullptr || type->kind != PyKind::kStr || type->s != "class") {
    return Invalid("persistent object meta: type is not 'class'");
  }
  if (class_name == nullptr || class_name->kind != PyKind::kStr || state == nullptr) {
    return Invalid("persistent object meta without class_name or state");
  }
  PyValue* v = u.New(PyKind::kObject);
  v->tag = kPersistentTag;
  v->s = class_name->s;
  v->state = state;
  v->depth = state->depth + 1;
  return v;
}

absl::StatusOr<PyValue*> LoadedPickle::NumpyDType(Unpickler& u, const std::vector<PyValue*>& a) {
  // numpy.dtype(code, align, copy), then BUILD (version, byte order, ...).
  if (a.empty() || a.size() > 3 || a[0]->kind != PyKind::kStr) {
    return Invalid("numpy.dtype called with bad arguments");
  }
  absl::string_view code = a[0]->s;
  DTypeInfo info;
  if (!code.empty() && (code[0] == '<' || code[0] == '|' || code[0] == '=')) {
    code.remove_prefix(1);
    info.code = std::string(code);
    info.supported = NumpyDTypeCode(code, &info.dtype);
  } else if (!code.empty() && code[0] == '>') {
    info.code = std::string(code);  // big-endian: not a tensor here
  } else {
    info.code = std::string(code);
    info.supported = NumpyDTypeCode(code, &info.dtype);
  }
  dtypes_.push_back(std::move(info));
  PyValue* v = u.New(PyKind::kOpaque);
  v->tag = kDTypeTag;
  v->i = static_cast<int64_t>(dtypes_.size()) - 1;
  return v;
}

absl::StatusOr<PyValue*> LoadedPickle::NumpyScalar(Unpickler& u, const std::vector<PyValue*>& a) {
  // numpy.core.multiarray.scalar(dtype, raw bytes of one element)
  if (a.size() != 2 || a[0]->kind != PyKind::kOpaque || a[0]->tag != kDTypeTag) {
    return Invalid("numpy scalar with bad arguments");
  }
  const DTypeInfo& dt = dtypes_[a[0]->i];
  absl::string_view data;
  if (absl::StartsWith(dt.code, "O")) return a[1];  // an object scalar holds the object
  if (!dt.supported || !DataOf(a[1], &data)) {
    PyValue* v = u.New(PyKind::kObject);
    v->s = "numpy.generic";
    return v;
  }
  const int size = DTypeSize(dt.dtype);
  if (static_cast<int>(data.size()) != size) {
    return Invalid(
        absl::StrCat("numpy scalar of dtype ", dt.code, " with ", data.size(), " bytes"));
  }
  PyValue* v = u.New(PyKind::kInt);
  switch (dt.dtype) {
    case DType::kBool:
      v->kind = PyKind::kBool;
      v->b = data[0] != 0;
      break;
    case DType::kUInt8:
      v->i = static_cast<uint8_t>(data[0]);
      break;
    case DType::kInt8:
    case DType::kInt16:
    case DType::kInt32:
    case DType::kInt64: {
      uint64_t raw = LoadLE(data.data(), size);
      if (size < 8 && (raw >> (8 * size - 1)) & 1) raw |= ~uint64_t{0} << (8 * size);
      v->i = static_cast<int64_t>(raw);
      break;
    }
    case DType::kFloat16:
      v->kind = PyKind::kFloat;
      v->f = HalfToFloat(static_cast<uint16_t>(LoadLE(data.data(), 2)));
      v->tag = kFloat32Tag;
      break;
    case DType::kFloat32: {
      float f;
      std::memcpy(&f, data.data(), 4);
      v->kind = PyKind::kFloat;
      v->f = f;
      v->tag = kFloat32Tag;
      break;
    }
    case DType::kFloat64:
      v->kind = PyKind::kFloat;
      std::memcpy(&v->f, data.data(), 8);
      break;
    default:
      v->kind = PyKind::kNone;
      break;
  }
  return v;
}

absl::Status LoadedPickle::NumpyArray(PyValue* v, const PyValue* shape_v, const PyValue* dtype_v,
                                      bool fortran, const PyValue* data_v) {
  ASSIGN_OR_RETURN(std::vector<int64_t> shape, IntTuple(shape_v, "numpy array shape"));
  if (dtype_v->kind != PyKind::kOpaque || dtype_v->tag != kDTypeTag) {
    return Invalid("numpy array without a dtype");
  }
  const DTypeInfo& dt = dtypes_[dtype_v->i];
  absl::string_view data;
  v->tag = kArrayTag;  // unless it becomes a tensor below
  if (!dt.supported || !DataOf(data_v, &data)) return absl::OkStatus();
  ASSIGN_OR_RETURN(int64_t numel, CheckedNumel(shape));
  const int64_t elem = DTypeSize(dt.dtype);
  if (numel > static_cast<int64_t>(data.size()) / elem ||
      numel * elem != static_cast<int64_t>(data.size())) {
    return Invalid(absl::StrCat("numpy array of ", numel, " ", dt.code, " elements holds ",
                                data.size(), " bytes"));
  }
  StorageInfo s;
  s.type = "numpy.ndarray";
  s.dtype = dt.dtype;
  s.declared_numel = numel;
  s.has_data = true;
  s.bytes = data;
  s.owner = data_v->kind == PyKind::kBytes ? data_v->owner : nullptr;
  if (data_v->kind != PyKind::kBytes) {
    // A Python 2 str lives in the arena, which goes when loading is done: copy it.
    s.owner = std::make_shared<const std::string>(data);
    s.bytes = *s.owner;
  }
  storages_.push_back(std::move(s));
  TensorInfo t;
  t.storage = static_cast<int>(storages_.size()) - 1;
  t.sizes = shape;
  t.strides = Strides(shape, fortran);
  tensors_.push_back(std::move(t));
  v->tag = kTensorTag;
  v->i = static_cast<int64_t>(tensors_.size()) - 1;
  return absl::OkStatus();
}

absl::StatusOr<PyValue*> LoadedPickle::NumpyFromBuffer(Unpickler& u,
                                                       const std::vector<PyValue*>& a) {
  // numpy.core.numeric._frombuffer(buffer, dtype, shape, order): protocol 5's form.
  if (a.size() != 4 || a[3]->kind != PyKind::kStr || (a[3]->s != "C" && a[3]->s != "F")) {
    return Invalid("numpy _frombuffer with bad arguments");
  }
  PyValue* v = u.New(PyKind::kOpaque);
  v->tag = kArrayTag;
  RETURN_IF_ERROR(NumpyArray(v, a[2], a[1], a[3]->s == "F", a[0]));
  return v;
}

absl::StatusOr<PyValue*> LoadedPickle::Call(Unpickler& u, absl::string_view callable,
                                            PyValue* args) {
  const std::vector<PyValue*>& a = args->items;
  if (callable == "torch._utils._rebuild_tensor_v2" || callable == "torch._utils._rebuild_tensor") {
    return RebuildTensor(u, a);
  }
  if (callable == "torch._utils._rebuild_parameter" ||
      callable == "torch._utils._rebuild_parameter_with_state") {
    if (a.empty() || a[0]->kind != PyKind::kOpaque || a[0]->tag != kTensorTag) {
      return Invalid("parameter without a tensor");
    }
    return a[0];
  }
  if (callable == "torch._tensor._rebuild_from_type_v2" ||
      callable == "torch._tensor._rebuild_from_type") {
    // (func, new_type, args, state): a tensor subclass; the tensor is func(*args).
    if (a.size() != 4 || a[0]->kind != PyKind::kGlobal || a[2]->kind != PyKind::kTuple) {
      return Invalid(absl::StrCat(callable, " with bad arguments"));
    }
    const std::string& func = a[0]->s;
    if (func != "torch._utils._rebuild_tensor_v2" && func != "torch._utils._rebuild_tensor" &&
        func != "torch._utils._rebuild_parameter" &&
        func != "torch._utils._rebuild_parameter_with_state") {
      return Invalid(absl::StrCat("unsupported object '", func,
                                  "' in the pickle: calling it is refused (through ", callable,
                                  ")"));
    }
    return Call(u, func, a[2]);
  }
  if (callable == "torch.storage._load_from_bytes") {
    if (a.size() != 1) return Invalid("_load_from_bytes with bad arguments");
    return LoadFromBytes(u, a[0]);
  }
  if (callable == "torch.Size") {
    PyValue* t = u.New(PyKind::kTuple);
    if (a.size() > 1 || (a.size() == 1 && a[0]->kind != PyKind::kTuple)) {
      return Invalid("torch.Size with bad arguments");
    }
    if (a.size() == 1) {
      for (PyValue* item : a[0]->items) RETURN_IF_ERROR(u.Adopt(t, item));
    }
    return t;
  }
  if (callable == "torch_utils.persistence._reconstruct_persistent_obj") {
    if (a.size() != 1) return Invalid("_reconstruct_persistent_obj with bad arguments");
    return PersistentObject(u, a[0]);
  }
  if (callable == "numpy.dtype") return NumpyDType(u, a);
  if (callable == "numpy.core.multiarray.scalar" || callable == "numpy._core.multiarray.scalar") {
    return NumpyScalar(u, a);
  }
  if (callable == "numpy.core.multiarray._reconstruct" ||
      callable == "numpy._core.multiarray._reconstruct") {
    // (numpy.ndarray, (0,), b'b'): an empty array that BUILD fills in.
    if (a.size() != 3 || a[0]->kind != PyKind::kGlobal || a[0]->s != "numpy.ndarray") {
      return Invalid(absl::StrCat(callable, " of something other than numpy.ndarray"));
    }
    PyValue* v = u.New(PyKind::kOpaque);
    v->tag = kArrayTag;
    v->i = -1;  // not built yet
    return v;
  }
  if (callable == "numpy.core.numeric._frombuffer" ||
      callable == "numpy._core.numeric._frombuffer") {
    return NumpyFromBuffer(u, a);
  }
  return Invalid(absl::StrCat(
      "unsupported object '", callable,
      "' in the pickle: calling it is refused (only known tensor and container rebuilders "
      "are allowed; nothing in a weight file is run)"));
}

absl::Status LoadedPickle::Build(Unpickler& u, PyValue* target, PyValue* state) {
  (void)u;
  if (target->tag == kDTypeTag) {
    // (version, byte order, subarray, names, fields, elsize, alignment, flags[, metadata])
    if (state->kind != PyKind::kTuple || state->items.size() < 5) {
      return Invalid("numpy dtype state is not a tuple");
    }
    DTypeInfo& dt = dtypes_[target->i];
    const PyValue* order = state->items[1];
    if (order->kind != PyKind::kStr) return Invalid("numpy dtype byte order is not a str");
    if (order->s == ">") dt.supported = false;  // big-endian data: not a tensor here
    if (state->items[2]->kind != PyKind::kNone || state->items[3]->kind != PyKind::kNone) {
      dt.supported = false;  // a sub-array or structured dtype
    }
    return absl::OkStatus();
  }
  if (target->tag == kArrayTag && target->i == -1) {
    // (version, shape, dtype, is_fortran, data) or, older, without the version.
    if (state->kind != PyKind::kTuple || (state->items.size() != 5 && state->items.size() != 4)) {
      return Invalid("numpy array state is not a 4- or 5-tuple");
    }
    const auto& s = state->items;
    size_t k = s.size() == 5 ? 1 : 0;
    if (s[k + 2]->kind != PyKind::kBool && s[k + 2]->kind != PyKind::kInt) {
      return Invalid("numpy array order flag is not a bool");
    }
    bool fortran = s[k + 2]->kind == PyKind::kBool ? s[k + 2]->b : s[k + 2]->i != 0;
    target->i = -2;  // built
    return NumpyArray(target, s[k], s[k + 1], fortran, s[k + 3]);
  }
  return absl::OkStatus();  // tensors, storages: nothing to set
}

absl::StatusOr<RawTensor> LoadedPickle::Tensor(const PyValue* v,
                                               std::shared_ptr<const std::string>* owner) const {
  if (v->kind != PyKind::kOpaque || v->tag != kTensorTag) return Invalid("not a tensor");
  const TensorInfo& t = tensors_[v->i];
  const StorageInfo& s = storages_[t.storage];
  if (!s.has_data) return Invalid(absl::StrCat("storage '", s.key, "' has no data in the file"));
  ASSIGN_OR_RETURN(RawTensor out, MakeTensor(t, s));
  if (owner != nullptr) *owner = s.owner;
  return out;
}

std::string LoadedPickle::StorageType(const PyValue* v) const {
  if (v->kind != PyKind::kOpaque || v->tag != kStorageTag) return "";
  return storages_[v->i].type;
}

}  // namespace i2s::internal

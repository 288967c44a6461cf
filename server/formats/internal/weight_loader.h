// Loads the object tree of a weight file (torch.save zip, torch.save legacy, or a plain
// pickle such as NVIDIA's network .pkl) with the restricted unpickler of pickle.h, turning
// the tensor and numpy rebuilders into checked tensor views. The one unpickling policy of
// server/formats: ParseWeightFile (weight_file.h) walks the whole tree, ParseTorchStateDict
// (torch_file.h) takes a flat dict of tensors from it.
//
// Allow-list: the only callables a file may "call" (REDUCE/OBJ/INST), all rebuilt here as
// data, never run. Besides pickle.h's plain-data constructors (OrderedDict, defaultdict,
// dict, list, tuple, set, frozenset, bytes, bytearray, _codecs.encode,
// copyreg._reconstructor, copyreg.__newobj__/__newobj_ex__) and the dict classes
// dnnlib.util.EasyDict and dnnlib.EasyDict:
//   torch._utils._rebuild_tensor, torch._utils._rebuild_tensor_v2   a view of a storage
//   torch._utils._rebuild_parameter(_with_state)                     the tensor inside
//   torch._tensor._rebuild_from_type(_v2)      its func must be one of the four above
//   torch.storage._load_from_bytes             a legacy torch.save stream of one storage
//   torch.Size                                 a tuple
//   torch_utils.persistence._reconstruct_persistent_obj   NVIDIA's persistent object: a
//       kObject (tag kPersistentTag) named by meta['class_name'] with meta['state'] as
//       its state; meta['module_src'] is never compiled, run or kept
//   numpy.dtype, numpy{.core,._core}.multiarray._reconstruct (with BUILD), .scalar,
//   numpy{.core,._core}.numeric._frombuffer
// Anything else is refused with "unsupported object '<module.name>' in the pickle".
// Persistent IDs: ('storage', type, key, location, numel[, view]) in torch.save files and
// legacy ('module', cls, ...) names of pickled nn.Modules; none in a plain pickle.
//
// Bounds (besides pickle.h's: depth 100, 2^20 values, 1 GiB decoded bytes): tensors of at
// most 64 dimensions with sizes and strides below 2^50, every view checked against its
// storage; torch.save streams inside a pickle (_load_from_bytes) one level deep, each
// parsed once however often it is referenced, their data left in place (views into the
// file: their total is at most the file's size), and parsed by the same legacy code, with
// the same checks, as a legacy file.
#ifndef I2S_SERVER_FORMATS_INTERNAL_WEIGHT_LOADER_H_
#define I2S_SERVER_FORMATS_INTERNAL_WEIGHT_LOADER_H_

#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/formats/internal/pickle.h"
#include "server/formats/torch_file.h"

namespace i2s::internal {

// torch/serialization.py: MAGIC_NUMBER = 0x1950a86a20f9469cfc6c, pickled as LONG1 with
// these 10 little-endian bytes; PROTOCOL_VERSION = 1001.
inline constexpr absl::string_view kLegacyMagic("\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 10);
constexpr int64_t kLegacyProtocolVersion = 1001;
constexpr int kMaxDims = 64;

// Tags of the kOpaque values the loader makes (`i` indexes the loader's tables).
constexpr int kStorageTag = 1;  // a torch storage
constexpr int kTensorTag = 2;   // a tensor (torch, or a numpy array of a supported dtype)
constexpr int kDTypeTag = 3;    // a numpy dtype
constexpr int kArrayTag = 4;    // a numpy array that is not a tensor (object or other dtype)
// Tag of kObject values made by _reconstruct_persistent_obj.
constexpr int kPersistentTag = 1;

enum class Container { kZip, kLegacy, kPickle };

// Whether `bytes` begin with the magic-number pickle of a legacy torch.save file.
bool LooksLikeLegacyTorch(absl::string_view bytes);
// The first three pickles of a legacy torch.save stream as torch writes them (protocol 2):
// the magic number, the protocol version and the system info (little-endian).
std::string LegacyTorchHeader();

// The loaded tree; owns its values. Not thread-safe; const methods may be called from
// several threads once loading is done.
class LoadedPickle {
 public:
  // `file` must hold the whole file; the result keeps it alive.
  static absl::StatusOr<std::unique_ptr<LoadedPickle>> Load(std::shared_ptr<const std::string> file,
                                                            Container container);

  const PyValue* root() const { return root_; }
  const std::shared_ptr<const std::string>& file() const { return file_; }

  // The tensor of a kOpaque kTensorTag value, its view checked against its storage.
  // `*owner` receives the decoded buffer it points into (nullptr: the file).
  absl::StatusOr<RawTensor> Tensor(const PyValue* v,
                                   std::shared_ptr<const std::string>* owner) const;
  // "torch.FloatStorage" and the like, for a kStorageTag value.
  std::string StorageType(const PyValue* v) const;

  struct StorageInfo {
    std::string type;  // "torch.FloatStorage", "numpy"
    std::string key;
    DType dtype = DType::kFloat32;
    int64_t declared_numel = 0;
    // A legacy storage view (torch < 0.4): a slice of storage `root_key`.
    std::string root_key;
    int64_t view_offset = 0;
    bool has_data = false;
    absl::string_view bytes;
    std::shared_ptr<const std::string> owner;  // nullptr: `bytes` lie in the file
  };
  struct TensorInfo {
    int storage = 0;
    int64_t offset = 0;
    std::vector<int64_t> sizes, strides;
  };
  struct DTypeInfo {
    std::string code;  // numpy's: "f4", "i8", "b1", "O8", ...
    bool supported = false;
    DType dtype = DType::kFloat32;
  };

 private:
  // Where persistent IDs resolve: one per torch.save stream being read.
  struct Scope {
    Container container;
    std::shared_ptr<const std::string> owner;  // of the stream's bytes
    std::map<std::string, int> storages;       // key -> storages_ index
  };

  LoadedPickle();
  absl::StatusOr<PyValue*> LoadZip();
  absl::StatusOr<PyValue*> LoadLegacyStream(absl::string_view stream,
                                            std::shared_ptr<const std::string> owner, bool nested);
  absl::StatusOr<PyValue*> LoadPlain();

  absl::StatusOr<PyValue*> PersistentLoad(Unpickler& u, PyValue* pid);
  absl::StatusOr<PyValue*> Call(Unpickler& u, absl::string_view callable, PyValue* args);
  absl::Status Build(Unpickler& u, PyValue* target, PyValue* state);

  absl::StatusOr<int> Register(Scope& scope, const StorageInfo& info);
  absl::StatusOr<PyValue*> RebuildTensor(Unpickler& u, const std::vector<PyValue*>& a);
  absl::StatusOr<PyValue*> LoadFromBytes(Unpickler& u, PyValue* bytes);
  absl::StatusOr<PyValue*> PersistentObject(Unpickler& u, PyValue* meta);
  absl::StatusOr<PyValue*> NumpyScalar(Unpickler& u, const std::vector<PyValue*>& a);
  absl::StatusOr<PyValue*> NumpyDType(Unpickler& u, const std::vector<PyValue*>& a);
  absl::StatusOr<PyValue*> NumpyFromBuffer(Unpickler& u, const std::vector<PyValue*>& a);
  // Makes `v` the tensor of a numpy array's data (or kArrayTag when it is not a tensor).
  absl::Status NumpyArray(PyValue* v, const PyValue* shape, const PyValue* dtype, bool fortran,
                          const PyValue* data);

  std::shared_ptr<const std::string> file_;
  std::unique_ptr<Unpickler> unpickler_;
  PyValue* root_ = nullptr;
  std::vector<Scope> scopes_;
  std::vector<StorageInfo> storages_;
  std::vector<TensorInfo> tensors_;
  std::vector<DTypeInfo> dtypes_;
  std::unordered_map<const PyValue*, PyValue*> loaded_from_bytes_;
  bool in_nested_stream_ = false;
};

}  // namespace i2s::internal

#endif  // I2S_SERVER_FORMATS_INTERNAL_WEIGHT_LOADER_H_

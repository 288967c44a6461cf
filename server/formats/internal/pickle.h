// A restricted, bounds-checked unpickler (protocols 0-5) for the data that torch.save,
// pickle.dump of NVIDIA's networks and numpy write. Not thread-safe.
//
// Policy (the only way bytes become objects; internal/weight_loader.h adds the torch and
// numpy rebuilders and states the whole allow-list):
//   - Nothing is ever imported, executed or called. GLOBAL/STACK_GLOBAL only make a name
//     ("module.name"; Python 2's `__builtin__`/`copy_reg` read as `builtins`/`copyreg`).
//   - Calls (REDUCE, OBJ, INST, and copyreg.__newobj__ through REDUCE) are resolved by name:
//     the plain-data constructors below are handled here, every other name goes to the
//     caller's `call` hook, which rebuilds what it knows and refuses the rest with an error
//     naming the callable. Handled here: collections.OrderedDict, collections.defaultdict
//     (its factory is never called), builtins.dict/list/tuple/set/frozenset, the
//     `dict_classes` of the options (dict subclasses holding only data, e.g. EasyDict),
//     builtins.bytes/bytearray and _codecs.encode(str, 'latin1') (how protocol 2 writes
//     bytes), copyreg._reconstructor and copyreg.__newobj__/__newobj_ex__ (instances,
//     below).
//   - Instances of other classes (NEWOBJ, NEWOBJ_EX, copyreg._reconstructor) become kObject
//     values: the class name, the items SETITEM(S)/APPEND(S) add, and the BUILD state, kept
//     as data to walk (argparse.Namespace, optimiser state, unknown modules never make a
//     file unreadable). __new__, __setstate__, __setitem__ and append are never run.
//   - BUILD on a dict, list, set or tuple is dropped (OrderedDict's `_metadata` of state
//     dicts; EasyDict keeps its data as items); on a kOpaque value it goes to the `build`
//     hook; on anything else it is an error.
//   - Refused: extension codes (EXT1/2/4), out-of-band buffers (NEXT_BUFFER,
//     READONLY_BUFFER), unknown opcodes, persistent IDs unless the caller's hook takes them.
// Bounds: a nesting depth of kMaxDepth as values are built (callers that walk the result
// must bound their own recursion too: memo references can make a value deeper later, or
// cyclic), kMaxValues values per Unpickler (all Load calls together), the stack, marks and
// memo, and kMaxDecodedBytes of bytes decoded into new buffers (latin-1 and list forms).
// Values live in an arena owned by the Unpickler, so cyclic or deep structures cannot leak
// or overflow the stack on destruction.
#ifndef I2S_SERVER_FORMATS_INTERNAL_PICKLE_H_
#define I2S_SERVER_FORMATS_INTERNAL_PICKLE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace i2s::internal {

// Nesting bound: a StyleGAN2 pkl is about 25 levels deep (module, meta dict, state dict,
// _modules, ...); anything near 100 is hostile.
constexpr int kMaxDepth = 100;
// Value bound for one file, nested torch.save streams included: a StyleGAN2 pkl with G, D
// and G_ema holds about 10^5 values; each costs about 200 bytes here.
constexpr size_t kMaxValues = size_t{1} << 20;
// Stack and mark bound.
constexpr size_t kMaxStack = size_t{1} << 20;
// Bytes copied out of the input by decoding (_codecs.encode's latin-1 strings, bytes of a
// list of ints): a memoised 1 MB string decoded 10^4 times must not take 10 GB.
constexpr uint64_t kMaxDecodedBytes = uint64_t{1} << 30;

enum class PyKind {
  kNone,
  kBool,
  kInt,     // fits in int64: `i`
  kBigInt,  // wider: little-endian two's complement bytes in `s`
  kFloat,   // `f`; `tag` == kFloat32Tag when it came from a float32/float16 numpy scalar
  kStr,     // text (UTF-8; Python 2 str kept as its raw bytes with tag kRawStrTag): `s`
  kBytes,   // `bytes` (bytes, bytearray)
  kTuple,   // `items`
  kList,    // `items`
  kSet,     // `items` (set, frozenset)
  kDict,    // `items` = k0, v0, k1, v1, ...
  kGlobal,  // a class or function name, "module.name", in `s`; never resolved
  kObject,  // an instance of class `s`: dict items in `items`, list items in `list`,
            // BUILD state in `state`; `tag` is the caller's (0: made here)
  kOpaque,  // an object built by the caller: `tag` and `i` are the caller's
};

const char* PyKindName(PyKind kind);

constexpr int kFloat32Tag = 1;  // kFloat: print with float precision
constexpr int kRawStrTag = 1;   // kStr from BINSTRING/SHORT_BINSTRING/STRING: 8-bit data

struct PyValue {
  PyKind kind = PyKind::kNone;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  int tag = 0;
  std::string s;
  // kBytes: the data, inside the input of Load (which must outlive the values) or inside
  // `owner` when it was decoded into a new buffer.
  absl::string_view bytes;
  std::shared_ptr<const std::string> owner;
  std::vector<PyValue*> items;
  PyValue* state = nullptr;  // kObject: the BUILD state (nullptr: none)
  PyValue* list = nullptr;   // kObject: a kList of APPEND(S) items (nullptr: none)
  int depth = 1;             // nesting depth when built, bounded by kMaxDepth
};

class Unpickler {
 public:
  // BINPERSID/PERSID with the persistent ID object.
  using PersistentLoad = std::function<absl::StatusOr<PyValue*>(Unpickler&, PyValue* pid)>;
  // A call of `callable` ("module.name") that the unpickler does not handle itself;
  // `args` is a tuple. Must refuse what it does not know.
  using Call = std::function<absl::StatusOr<PyValue*>(Unpickler&, absl::string_view callable,
                                                      PyValue* args)>;
  // BUILD on a kOpaque value.
  using Build = std::function<absl::Status(Unpickler&, PyValue* target, PyValue* state)>;

  struct Options {
    PersistentLoad persistent_load;  // empty: persistent IDs are refused
    Call call;                       // empty: every call outside the built-ins is refused
    Build build;                     // empty: BUILD on a kOpaque value is dropped
    std::set<std::string, std::less<>> dict_classes;  // "module.Name" of data-only dicts
    size_t max_values = kMaxValues;                   // lower only in tests
    uint64_t max_decoded_bytes = kMaxDecodedBytes;    // lower only in tests
  };

  explicit Unpickler(Options options);

  // Reads one pickle from the start of `data`, up to and including STOP; `*consumed`
  // receives the number of bytes read. Values may point into `data`. Re-entrant: a hook
  // may Load a nested pickle (values and limits are shared).
  absl::StatusOr<PyValue*> Load(absl::string_view data, size_t* consumed);

  // Arena allocation (bounded by kMaxValues: Load fails once the arena is over the limit).
  PyValue* New(PyKind kind);
  // Adds `child` to `parent->items`, checking the nesting depth.
  absl::Status Adopt(PyValue* parent, PyValue* child);
  // Accounts `n` bytes decoded into a new buffer against kMaxDecodedBytes.
  absl::Status ChargeDecoded(uint64_t n);
  // NEWOBJ semantics for class `cls` ("module.Name"): a container for the built-in and
  // data-only dict classes, a kObject otherwise.
  PyValue* NewInstance(absl::string_view cls);

  size_t values() const { return arena_.size(); }

 private:
  absl::StatusOr<PyValue*> CallGlobal(absl::string_view callable, PyValue* args);

  Options options_;
  std::vector<std::unique_ptr<PyValue>> arena_;
  uint64_t decoded_bytes_ = 0;
  int load_depth_ = 0;
};

// Formats a kBigInt's little-endian two's complement bytes as a decimal number (up to 128
// bytes; longer ones as "(an integer of N bytes)").
std::string BigIntToDecimal(absl::string_view le_bytes);

}  // namespace i2s::internal

#endif  // I2S_SERVER_FORMATS_INTERNAL_PICKLE_H_

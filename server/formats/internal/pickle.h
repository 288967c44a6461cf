// A restricted, bounds-checked unpickler (protocols 2-4, binary opcodes only) for the
// data that torch.save writes: containers, scalars, strings, and objects that the caller
// builds from GLOBAL + REDUCE and persistent IDs. It never imports or calls anything:
// every GLOBAL is only a name, and the caller decides what a REDUCE of it means (and
// rejects the rest). Objects live in an arena owned by the Unpickler, so cyclic or deep
// structures cannot leak or overflow the stack on destruction. Not thread-safe.
#ifndef I2S_SERVER_FORMATS_INTERNAL_PICKLE_H_
#define I2S_SERVER_FORMATS_INTERNAL_PICKLE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace i2s::internal {

enum class PyKind {
  kNone,
  kBool,
  kInt,     // fits in int64: `i`
  kBigInt,  // wider: little-endian two's complement bytes in `s`
  kFloat,
  kStr,     // text (unicode or Python 2 str): `s`
  kBytes,   // `s`
  kTuple,   // `items`
  kList,    // `items`
  kDict,    // `items` = k0, v0, k1, v1, ...
  kGlobal,  // "module.name" in `s`
  kOpaque,  // an object built by the caller: `tag` and `i` are the caller's
};

const char* PyKindName(PyKind kind);

struct PyValue {
  PyKind kind = PyKind::kNone;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  int tag = 0;
  std::string s;
  std::vector<PyValue*> items;
  int depth = 1;  // nesting depth, bounded to reject pathological inputs
};

class Unpickler {
 public:
  // Called for BINPERSID with the persistent ID object.
  using PersistentLoad = std::function<absl::StatusOr<PyValue*>(Unpickler&, PyValue* pid)>;
  // Called for REDUCE/NEWOBJ of a GLOBAL named `callable` ("module.name").
  using Reduce = std::function<absl::StatusOr<PyValue*>(Unpickler&, absl::string_view callable,
                                                        PyValue* args)>;

  Unpickler(PersistentLoad persistent_load, Reduce reduce);

  // Reads one pickle from the start of `data`, up to and including STOP.
  // `*consumed` receives the number of bytes read.
  absl::StatusOr<PyValue*> Load(absl::string_view data, size_t* consumed);

  PyValue* New(PyKind kind);

 private:
  PersistentLoad persistent_load_;
  Reduce reduce_;
  std::vector<std::unique_ptr<PyValue>> arena_;
};

}  // namespace i2s::internal

#endif  // I2S_SERVER_FORMATS_INTERNAL_PICKLE_H_

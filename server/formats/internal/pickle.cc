#include "server/formats/internal/pickle.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/base/status_macros.h"
#include "server/formats/internal/byte_reader.h"

namespace i2s::internal {
namespace {

// Nesting bound: state dicts are 3-4 levels deep; anything near this is hostile.
constexpr int kMaxDepth = 100;
// Memo and stack bounds; real torch files use a few entries per tensor.
constexpr size_t kMaxStack = 1 << 20;

absl::Status PickleError(size_t pos, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("bad pickle at byte ", pos, ": ", what));
}

// Opcodes (Python's Lib/pickle.py names).
enum : uint8_t {
  MARK = '(',
  STOP = '.',
  EMPTY_TUPLE = ')',
  TUPLE = 't',
  TUPLE1 = 0x85,
  TUPLE2 = 0x86,
  TUPLE3 = 0x87,
  EMPTY_LIST = ']',
  APPEND = 'a',
  APPENDS = 'e',
  LIST = 'l',
  EMPTY_DICT = '}',
  SETITEM = 's',
  SETITEMS = 'u',
  DICT = 'd',
  NONE = 'N',
  NEWTRUE = 0x88,
  NEWFALSE = 0x89,
  BININT = 'J',
  BININT1 = 'K',
  BININT2 = 'M',
  LONG1 = 0x8a,
  LONG4 = 0x8b,
  BINFLOAT = 'G',
  BINUNICODE = 'X',
  SHORT_BINUNICODE = 0x8c,
  BINUNICODE8 = 0x8d,
  BINSTRING = 'T',
  SHORT_BINSTRING = 'U',
  BINBYTES = 'B',
  SHORT_BINBYTES = 'C',
  BINBYTES8 = 0x8e,
  GLOBAL = 'c',
  STACK_GLOBAL = 0x93,
  REDUCE = 'R',
  NEWOBJ = 0x81,
  BUILD = 'b',
  BINPUT = 'q',
  LONG_BINPUT = 'r',
  MEMOIZE = 0x94,
  BINGET = 'h',
  LONG_BINGET = 'j',
  BINPERSID = 'Q',
  PROTO = 0x80,
  FRAME = 0x95,
};

}  // namespace

const char* PyKindName(PyKind kind) {
  switch (kind) {
    case PyKind::kNone:
      return "None";
    case PyKind::kBool:
      return "bool";
    case PyKind::kInt:
      return "int";
    case PyKind::kBigInt:
      return "int";
    case PyKind::kFloat:
      return "float";
    case PyKind::kStr:
      return "str";
    case PyKind::kBytes:
      return "bytes";
    case PyKind::kTuple:
      return "tuple";
    case PyKind::kList:
      return "list";
    case PyKind::kDict:
      return "dict";
    case PyKind::kGlobal:
      return "class or function";
    case PyKind::kOpaque:
      return "object";
  }
  return "?";
}

Unpickler::Unpickler(PersistentLoad persistent_load, Reduce reduce)
    : persistent_load_(std::move(persistent_load)), reduce_(std::move(reduce)) {}

PyValue* Unpickler::New(PyKind kind) {
  arena_.push_back(std::make_unique<PyValue>());
  arena_.back()->kind = kind;
  return arena_.back().get();
}

absl::StatusOr<PyValue*> Unpickler::Load(absl::string_view data, size_t* consumed) {
  ByteReader r(data);
  std::vector<PyValue*> stack;
  std::vector<size_t> marks;
  std::unordered_map<uint64_t, PyValue*> memo;
  size_t op_pos = 0;

  auto pop = [&]() -> absl::StatusOr<PyValue*> {
    if (stack.empty() || (!marks.empty() && stack.size() <= marks.back())) {
      return PickleError(op_pos, "stack underflow");
    }
    PyValue* v = stack.back();
    stack.pop_back();
    return v;
  };
  auto pop_mark = [&]() -> absl::StatusOr<std::vector<PyValue*>> {
    if (marks.empty()) return PickleError(op_pos, "no MARK on the stack");
    size_t m = marks.back();
    marks.pop_back();
    std::vector<PyValue*> items(stack.begin() + m, stack.end());
    stack.resize(m);
    return items;
  };
  auto push = [&](PyValue* v) -> absl::Status {
    if (stack.size() >= kMaxStack) return PickleError(op_pos, "stack too deep");
    stack.push_back(v);
    return absl::OkStatus();
  };
  auto adopt = [&](PyValue* container, PyValue* child) -> absl::Status {
    container->items.push_back(child);
    container->depth = std::max(container->depth, child->depth + 1);
    if (container->depth > kMaxDepth) return PickleError(op_pos, "nesting too deep");
    return absl::OkStatus();
  };
  auto make_seq = [&](PyKind kind, const std::vector<PyValue*>& items) -> absl::StatusOr<PyValue*> {
    PyValue* v = New(kind);
    for (PyValue* item : items) RETURN_IF_ERROR(adopt(v, item));
    return v;
  };
  auto top_of_kind = [&](PyKind kind) -> absl::StatusOr<PyValue*> {
    if (stack.empty() || (!marks.empty() && stack.size() <= marks.back())) {
      return PickleError(op_pos, "stack underflow");
    }
    if (stack.back()->kind != kind) {
      return PickleError(op_pos,
                         absl::StrCat("expected a ", PyKindName(kind), " on the stack, found ",
                                      PyKindName(stack.back()->kind)));
    }
    return stack.back();
  };
  auto set_items = [&](PyValue* dict, const std::vector<PyValue*>& kv) -> absl::Status {
    if (kv.size() % 2 != 0) return PickleError(op_pos, "odd number of items for a dict");
    for (PyValue* item : kv) RETURN_IF_ERROR(adopt(dict, item));
    return absl::OkStatus();
  };
  auto text = [&](uint64_t n, PyKind kind) -> absl::Status {
    ASSIGN_OR_RETURN(absl::string_view bytes, r.Bytes(n));
    PyValue* v = New(kind);
    v->s = std::string(bytes);
    return push(v);
  };
  auto global = [&](std::string module, std::string name) -> absl::Status {
    PyValue* v = New(PyKind::kGlobal);
    v->s = module + "." + name;
    return push(v);
  };
  auto read_line = [&]() -> absl::StatusOr<std::string> {
    std::string line;
    while (true) {
      ASSIGN_OR_RETURN(uint8_t c, r.U8());
      if (c == '\n') return line;
      if (line.size() > 1000) return PickleError(op_pos, "GLOBAL name too long");
      line.push_back(static_cast<char>(c));
    }
  };
  auto memo_put = [&](uint64_t key) -> absl::Status {
    if (stack.empty()) return PickleError(op_pos, "memo put on an empty stack");
    memo[key] = stack.back();
    return absl::OkStatus();
  };
  auto memo_get = [&](uint64_t key) -> absl::Status {
    auto it = memo.find(key);
    if (it == memo.end()) return PickleError(op_pos, absl::StrCat("memo key ", key, " missing"));
    return push(it->second);
  };
  auto call = [&](PyValue* callable, PyValue* args) -> absl::Status {
    if (callable->kind != PyKind::kGlobal) return PickleError(op_pos, "call of a non-global");
    if (args->kind != PyKind::kTuple) return PickleError(op_pos, "call arguments are not a tuple");
    ASSIGN_OR_RETURN(PyValue * result, reduce_(*this, callable->s, args));
    return push(result);
  };

  while (true) {
    op_pos = r.position();
    auto op_or = r.U8();
    if (!op_or.ok()) return PickleError(op_pos, "truncated (no STOP opcode)");
    uint8_t op = *op_or;
    switch (op) {
      case PROTO: {
        ASSIGN_OR_RETURN(uint8_t proto, r.U8());
        if (proto > 5) return PickleError(op_pos, absl::StrCat("unsupported protocol ", proto));
        break;
      }
      case FRAME:
        RETURN_IF_ERROR(r.UintLE(8).status());
        break;
      case STOP: {
        if (stack.size() != 1 || !marks.empty()) {
          return PickleError(op_pos, "STOP with an unbalanced stack");
        }
        *consumed = r.position();
        return stack.back();
      }
      case MARK:
        marks.push_back(stack.size());
        break;
      case EMPTY_TUPLE:
        RETURN_IF_ERROR(push(New(PyKind::kTuple)));
        break;
      case TUPLE: {
        ASSIGN_OR_RETURN(auto items, pop_mark());
        ASSIGN_OR_RETURN(PyValue * t, make_seq(PyKind::kTuple, items));
        RETURN_IF_ERROR(push(t));
        break;
      }
      case TUPLE1:
      case TUPLE2:
      case TUPLE3: {
        std::vector<PyValue*> items(op - TUPLE1 + 1);
        for (size_t k = items.size(); k-- > 0;) {
          ASSIGN_OR_RETURN(items[k], pop());
        }
        ASSIGN_OR_RETURN(PyValue * t, make_seq(PyKind::kTuple, items));
        RETURN_IF_ERROR(push(t));
        break;
      }
      case EMPTY_LIST:
        RETURN_IF_ERROR(push(New(PyKind::kList)));
        break;
      case LIST: {
        ASSIGN_OR_RETURN(auto items, pop_mark());
        ASSIGN_OR_RETURN(PyValue * l, make_seq(PyKind::kList, items));
        RETURN_IF_ERROR(push(l));
        break;
      }
      case APPEND: {
        ASSIGN_OR_RETURN(PyValue * item, pop());
        ASSIGN_OR_RETURN(PyValue * list, top_of_kind(PyKind::kList));
        RETURN_IF_ERROR(adopt(list, item));
        break;
      }
      case APPENDS: {
        ASSIGN_OR_RETURN(auto items, pop_mark());
        ASSIGN_OR_RETURN(PyValue * list, top_of_kind(PyKind::kList));
        for (PyValue* item : items) RETURN_IF_ERROR(adopt(list, item));
        break;
      }
      case EMPTY_DICT:
        RETURN_IF_ERROR(push(New(PyKind::kDict)));
        break;
      case DICT: {
        ASSIGN_OR_RETURN(auto items, pop_mark());
        PyValue* d = New(PyKind::kDict);
        RETURN_IF_ERROR(set_items(d, items));
        RETURN_IF_ERROR(push(d));
        break;
      }
      case SETITEM: {
        ASSIGN_OR_RETURN(PyValue * value, pop());
        ASSIGN_OR_RETURN(PyValue * key, pop());
        ASSIGN_OR_RETURN(PyValue * dict, top_of_kind(PyKind::kDict));
        RETURN_IF_ERROR(set_items(dict, {key, value}));
        break;
      }
      case SETITEMS: {
        ASSIGN_OR_RETURN(auto items, pop_mark());
        ASSIGN_OR_RETURN(PyValue * dict, top_of_kind(PyKind::kDict));
        RETURN_IF_ERROR(set_items(dict, items));
        break;
      }
      case NONE:
        RETURN_IF_ERROR(push(New(PyKind::kNone)));
        break;
      case NEWTRUE:
      case NEWFALSE: {
        PyValue* v = New(PyKind::kBool);
        v->b = op == NEWTRUE;
        RETURN_IF_ERROR(push(v));
        break;
      }
      case BININT:
      case BININT1:
      case BININT2: {
        int size = op == BININT ? 4 : op == BININT1 ? 1 : 2;
        ASSIGN_OR_RETURN(uint64_t raw, r.UintLE(size));
        PyValue* v = New(PyKind::kInt);
        v->i = op == BININT ? static_cast<int64_t>(static_cast<int32_t>(raw))
                            : static_cast<int64_t>(raw);
        RETURN_IF_ERROR(push(v));
        break;
      }
      case LONG1:
      case LONG4: {
        ASSIGN_OR_RETURN(uint64_t n, r.UintLE(op == LONG1 ? 1 : 4));
        ASSIGN_OR_RETURN(absl::string_view bytes, r.Bytes(n));
        PyValue* v = New(PyKind::kInt);
        if (n > 8) {
          v->kind = PyKind::kBigInt;
          v->s = std::string(bytes);
        } else if (n > 0) {
          uint64_t u = LoadLE(bytes.data(), static_cast<int>(n));
          if (n < 8 && (static_cast<uint8_t>(bytes[n - 1]) & 0x80)) u |= ~uint64_t{0} << (8 * n);
          v->i = static_cast<int64_t>(u);
        }
        RETURN_IF_ERROR(push(v));
        break;
      }
      case BINFLOAT: {
        ASSIGN_OR_RETURN(absl::string_view bytes, r.Bytes(8));
        uint64_t u = 0;
        for (char c : bytes) u = (u << 8) | static_cast<uint8_t>(c);  // big-endian
        PyValue* v = New(PyKind::kFloat);
        std::memcpy(&v->f, &u, 8);
        RETURN_IF_ERROR(push(v));
        break;
      }
      case BINUNICODE:
      case BINSTRING: {
        ASSIGN_OR_RETURN(uint64_t n, r.UintLE(4));
        RETURN_IF_ERROR(text(n, PyKind::kStr));
        break;
      }
      case SHORT_BINUNICODE:
      case SHORT_BINSTRING: {
        ASSIGN_OR_RETURN(uint64_t n, r.UintLE(1));
        RETURN_IF_ERROR(text(n, PyKind::kStr));
        break;
      }
      case BINUNICODE8: {
        ASSIGN_OR_RETURN(uint64_t n, r.UintLE(8));
        RETURN_IF_ERROR(text(n, PyKind::kStr));
        break;
      }
      case BINBYTES: {
        ASSIGN_OR_RETURN(uint64_t n, r.UintLE(4));
        RETURN_IF_ERROR(text(n, PyKind::kBytes));
        break;
      }
      case SHORT_BINBYTES: {
        ASSIGN_OR_RETURN(uint64_t n, r.UintLE(1));
        RETURN_IF_ERROR(text(n, PyKind::kBytes));
        break;
      }
      case BINBYTES8: {
        ASSIGN_OR_RETURN(uint64_t n, r.UintLE(8));
        RETURN_IF_ERROR(text(n, PyKind::kBytes));
        break;
      }
      case GLOBAL: {
        ASSIGN_OR_RETURN(std::string module, read_line());
        ASSIGN_OR_RETURN(std::string name, read_line());
        RETURN_IF_ERROR(global(std::move(module), std::move(name)));
        break;
      }
      case STACK_GLOBAL: {
        ASSIGN_OR_RETURN(PyValue * name, pop());
        ASSIGN_OR_RETURN(PyValue * module, pop());
        if (name->kind != PyKind::kStr || module->kind != PyKind::kStr) {
          return PickleError(op_pos, "STACK_GLOBAL of non-strings");
        }
        RETURN_IF_ERROR(global(module->s, name->s));
        break;
      }
      case REDUCE:
      case NEWOBJ: {
        ASSIGN_OR_RETURN(PyValue * args, pop());
        ASSIGN_OR_RETURN(PyValue * callable, pop());
        RETURN_IF_ERROR(call(callable, args));
        break;
      }
      case BUILD: {
        // __setstate__: the only use in state dicts is OrderedDict's `_metadata`
        // attribute, which carries nothing the loader needs. The state is dropped.
        ASSIGN_OR_RETURN(PyValue * state, pop());
        (void)state;
        ASSIGN_OR_RETURN(PyValue * target, pop());
        RETURN_IF_ERROR(push(target));
        break;
      }
      case BINPUT: {
        ASSIGN_OR_RETURN(uint64_t key, r.UintLE(1));
        RETURN_IF_ERROR(memo_put(key));
        break;
      }
      case LONG_BINPUT: {
        ASSIGN_OR_RETURN(uint64_t key, r.UintLE(4));
        RETURN_IF_ERROR(memo_put(key));
        break;
      }
      case MEMOIZE:
        RETURN_IF_ERROR(memo_put(memo.size()));
        break;
      case BINGET: {
        ASSIGN_OR_RETURN(uint64_t key, r.UintLE(1));
        RETURN_IF_ERROR(memo_get(key));
        break;
      }
      case LONG_BINGET: {
        ASSIGN_OR_RETURN(uint64_t key, r.UintLE(4));
        RETURN_IF_ERROR(memo_get(key));
        break;
      }
      case BINPERSID: {
        ASSIGN_OR_RETURN(PyValue * pid, pop());
        ASSIGN_OR_RETURN(PyValue * obj, persistent_load_(*this, pid));
        RETURN_IF_ERROR(push(obj));
        break;
      }
      default:
        return PickleError(op_pos, absl::StrCat("unsupported opcode 0x", absl::Hex(op)));
    }
  }
}

}  // namespace i2s::internal

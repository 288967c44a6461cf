#include "server/formats/internal/pickle.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"
#include "server/formats/internal/byte_reader.h"

namespace i2s::internal {
namespace {

// Longest text line (GLOBAL/INST names, INT/LONG/FLOAT/PUT/GET/PERSID arguments).
constexpr size_t kMaxNameLine = 1000;
// Longest STRING/UNICODE line (protocol 0 text data); real names are far shorter.
constexpr size_t kMaxTextLine = size_t{64} << 20;
// Re-entrant Load depth (a torch.save stream inside a pickle is one level).
constexpr int kMaxLoadDepth = 4;

absl::Status PickleError(size_t pos, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("bad pickle at byte ", pos, ": ", what));
}

// Opcodes (Python's Lib/pickle.py names).
enum : uint8_t {
  MARK = '(',
  STOP = '.',
  POP = '0',
  POP_MARK = '1',
  DUP = '2',
  FLOAT = 'F',
  INT = 'I',
  LONG = 'L',
  STRING = 'S',
  UNICODE = 'V',
  PERSID = 'P',
  GET = 'g',
  PUT = 'p',
  INST = 'i',
  OBJ = 'o',
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
  EMPTY_SET = 0x8f,
  ADDITEMS = 0x90,
  FROZENSET = 0x91,
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
  BYTEARRAY8 = 0x96,
  NEXT_BUFFER = 0x97,
  READONLY_BUFFER = 0x98,
  GLOBAL = 'c',
  STACK_GLOBAL = 0x93,
  REDUCE = 'R',
  NEWOBJ = 0x81,
  NEWOBJ_EX = 0x92,
  BUILD = 'b',
  EXT1 = 0x82,
  EXT2 = 0x83,
  EXT4 = 0x84,
  BINPUT = 'q',
  LONG_BINPUT = 'r',
  MEMOIZE = 0x94,
  BINGET = 'h',
  LONG_BINGET = 'j',
  BINPERSID = 'Q',
  PROTO = 0x80,
  FRAME = 0x95,
};

// Python 2 module names as Python 3's unpickler maps them (fix_imports).
std::string GlobalName(absl::string_view module, absl::string_view name) {
  if (module == "__builtin__") module = "builtins";
  if (module == "copy_reg") module = "copyreg";
  return absl::StrCat(module, ".", name);
}

bool IsDictClass(absl::string_view cls) {
  return cls == "builtins.dict" || cls == "collections.OrderedDict" ||
         cls == "collections.defaultdict";
}

bool IsLatin1(absl::string_view encoding) {
  return encoding == "latin1" || encoding == "latin-1" || encoding == "iso-8859-1" ||
         encoding == "iso8859-1";
}

// UTF-8 text whose code points are all below 256 -> those bytes (str.encode('latin1')).
absl::StatusOr<std::string> EncodeLatin1(absl::string_view utf8) {
  std::string out;
  out.reserve(utf8.size());
  for (size_t k = 0; k < utf8.size(); ++k) {
    uint8_t c = static_cast<uint8_t>(utf8[k]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
    } else if ((c & 0xfe) == 0xc2 && k + 1 < utf8.size() &&
               (static_cast<uint8_t>(utf8[k + 1]) & 0xc0) == 0x80) {
      out.push_back(static_cast<char>(((c & 0x1f) << 6) | (utf8[++k] & 0x3f)));
    } else {
      return absl::InvalidArgumentError("a latin-1 string holds a character above U+00FF");
    }
  }
  return out;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out->push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// UNICODE's raw-unicode-escape: \uXXXX and \UXXXXXXXX escapes, other bytes are latin-1.
absl::StatusOr<std::string> RawUnicodeEscape(absl::string_view line) {
  std::string out;
  for (size_t k = 0; k < line.size(); ++k) {
    if (line[k] == '\\' && k + 1 < line.size() && (line[k + 1] == 'u' || line[k + 1] == 'U')) {
      size_t n = line[k + 1] == 'u' ? 4 : 8;
      if (k + 2 + n > line.size()) return absl::InvalidArgumentError("truncated \\u escape");
      uint32_t cp = 0;
      for (size_t d = 0; d < n; ++d) {
        int h = HexDigit(line[k + 2 + d]);
        if (h < 0) return absl::InvalidArgumentError("bad \\u escape");
        cp = (cp << 4) | static_cast<uint32_t>(h);
      }
      if (cp > 0x10ffff) return absl::InvalidArgumentError("bad \\U escape");
      AppendUtf8(cp, &out);
      k += 1 + n;
    } else {
      AppendUtf8(static_cast<uint8_t>(line[k]), &out);
    }
  }
  return out;
}

// STRING's argument: a quoted Python 2 string literal (repr) -> its bytes.
absl::StatusOr<std::string> QuotedString(absl::string_view line) {
  if (line.size() < 2 || line.front() != line.back() || (line[0] != '\'' && line[0] != '"')) {
    return absl::InvalidArgumentError("STRING argument is not quoted");
  }
  line = line.substr(1, line.size() - 2);
  std::string out;
  for (size_t k = 0; k < line.size(); ++k) {
    if (line[k] != '\\') {
      out.push_back(line[k]);
      continue;
    }
    if (++k >= line.size()) return absl::InvalidArgumentError("STRING ends in a backslash");
    char c = line[k];
    switch (c) {
      case 'n':
        out.push_back('\n');
        break;
      case 'r':
        out.push_back('\r');
        break;
      case 't':
        out.push_back('\t');
        break;
      case 'a':
        out.push_back('\a');
        break;
      case 'b':
        out.push_back('\b');
        break;
      case 'f':
        out.push_back('\f');
        break;
      case 'v':
        out.push_back('\v');
        break;
      case 'x': {
        int h1 = k + 1 < line.size() ? HexDigit(line[k + 1]) : -1;
        int h2 = k + 2 < line.size() ? HexDigit(line[k + 2]) : -1;
        if (h1 < 0 || h2 < 0) return absl::InvalidArgumentError("bad \\x escape");
        out.push_back(static_cast<char>(h1 * 16 + h2));
        k += 2;
        break;
      }
      default:
        if (c >= '0' && c <= '7') {
          int v = 0, n = 0;
          while (n < 3 && k < line.size() && line[k] >= '0' && line[k] <= '7') {
            v = v * 8 + (line[k] - '0');
            ++k;
            ++n;
          }
          --k;
          out.push_back(static_cast<char>(v & 0xff));
        } else {
          out.push_back(c);  // \\, \', \" and unknown escapes keep the character
        }
    }
  }
  return out;
}

}  // namespace

const char* PyKindName(PyKind kind) {
  switch (kind) {
    case PyKind::kNone:
      return "None";
    case PyKind::kBool:
      return "bool";
    case PyKind::kInt:
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
    case PyKind::kSet:
      return "set";
    case PyKind::kDict:
      return "dict";
    case PyKind::kGlobal:
      return "class or function";
    case PyKind::kObject:
    case PyKind::kOpaque:
      return "object";
  }
  return "?";
}

std::string BigIntToDecimal(absl::string_view le) {
  if (le.empty()) return "0";
  // Quadratic in the length: beyond 128 bytes (about 300 digits, far beyond any count or
  // seed in a weight file) only the size is given.
  if (le.size() > 128) return absl::StrCat("(an integer of ", le.size(), " bytes)");
  std::vector<uint8_t> mag(le.begin(), le.end());
  const bool negative = (mag.back() & 0x80) != 0;
  if (negative) {  // two's complement negation
    unsigned carry = 1;
    for (uint8_t& b : mag) {
      unsigned v = static_cast<uint8_t>(~b) + carry;
      b = static_cast<uint8_t>(v);
      carry = v >> 8;
    }
  }
  // Repeated division of the big-endian magnitude by 10^9.
  std::vector<uint8_t> be(mag.rbegin(), mag.rend());
  std::vector<uint32_t> chunks;
  while (true) {
    bool zero = true;
    uint64_t rem = 0;
    for (uint8_t& b : be) {
      uint64_t cur = (rem << 8) | b;
      b = static_cast<uint8_t>(cur / 1000000000);
      rem = cur % 1000000000;
      if (b != 0) zero = false;
    }
    chunks.push_back(static_cast<uint32_t>(rem));
    if (zero) break;
  }
  std::string out = negative ? "-" : "";
  absl::StrAppend(&out, chunks.back());
  for (size_t k = chunks.size() - 1; k-- > 0;) {
    std::string part = absl::StrCat(chunks[k]);
    out.append(9 - part.size(), '0');
    out += part;
  }
  return out;
}

Unpickler::Unpickler(Options options) : options_(std::move(options)) {}

PyValue* Unpickler::New(PyKind kind) {
  arena_.push_back(std::make_unique<PyValue>());
  arena_.back()->kind = kind;
  return arena_.back().get();
}

absl::Status Unpickler::Adopt(PyValue* parent, PyValue* child) {
  parent->items.push_back(child);
  parent->depth = std::max(parent->depth, child->depth + 1);
  if (parent->depth > kMaxDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("pickle nested deeper than ", kMaxDepth, " levels"));
  }
  return absl::OkStatus();
}

absl::Status Unpickler::ChargeDecoded(uint64_t n) {
  decoded_bytes_ += n;
  if (decoded_bytes_ > options_.max_decoded_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pickle decodes more than ", options_.max_decoded_bytes, " bytes of strings into bytes"));
  }
  return absl::OkStatus();
}

PyValue* Unpickler::NewInstance(absl::string_view cls) {
  if (IsDictClass(cls) || options_.dict_classes.count(cls) > 0) return New(PyKind::kDict);
  if (cls == "builtins.list") return New(PyKind::kList);
  if (cls == "builtins.set" || cls == "builtins.frozenset") return New(PyKind::kSet);
  if (cls == "builtins.tuple") return New(PyKind::kTuple);
  PyValue* v = New(PyKind::kObject);
  v->s = std::string(cls);
  return v;
}

absl::StatusOr<PyValue*> Unpickler::CallGlobal(absl::string_view name, PyValue* args) {
  const std::vector<PyValue*>& a = args->items;
  auto bad_args = [&]() {
    return absl::InvalidArgumentError(absl::StrCat("'", name, "' called with bad arguments"));
  };
  auto copy_items = [&](PyValue* to, const PyValue* from) -> absl::Status {
    for (PyValue* item : from->items) RETURN_IF_ERROR(Adopt(to, item));
    return absl::OkStatus();
  };
  // Decoded sizes are charged before the copy is made (latin-1 text is at most as long
  // as its UTF-8), so a refused decode allocates nothing.
  auto new_bytes = [&](std::string data) -> absl::StatusOr<PyValue*> {
    PyValue* v = New(PyKind::kBytes);
    v->owner = std::make_shared<const std::string>(std::move(data));
    v->bytes = *v->owner;
    return v;
  };
  auto latin1 = [&](const PyValue* text) -> absl::StatusOr<PyValue*> {
    RETURN_IF_ERROR(ChargeDecoded(text->s.size()));
    if (text->tag == kRawStrTag) return new_bytes(text->s);
    auto data = EncodeLatin1(text->s);
    if (!data.ok()) return Annotate(data.status(), name);
    return new_bytes(*std::move(data));
  };

  if (IsDictClass(name) || options_.dict_classes.count(name) > 0) {
    PyValue* d = New(PyKind::kDict);
    size_t first = name == "collections.defaultdict" ? 1 : 0;  // the factory: never called
    if (a.size() > first + 1) return bad_args();
    if (a.size() == first + 1) {
      const PyValue* init = a[first];
      if (init->kind == PyKind::kDict) {
        RETURN_IF_ERROR(copy_items(d, init));
      } else if (init->kind == PyKind::kList || init->kind == PyKind::kTuple) {
        for (const PyValue* pair : init->items) {
          if ((pair->kind != PyKind::kTuple && pair->kind != PyKind::kList) ||
              pair->items.size() != 2) {
            return bad_args();
          }
          RETURN_IF_ERROR(copy_items(d, pair));
        }
      } else if (init->kind != PyKind::kNone) {
        return bad_args();
      }
    }
    return d;
  }
  if (name == "builtins.list" || name == "builtins.tuple" || name == "builtins.set" ||
      name == "builtins.frozenset") {
    PyValue* v = NewInstance(name);
    if (a.size() > 1) return bad_args();
    if (a.size() == 1) {
      PyKind k = a[0]->kind;
      if (k != PyKind::kList && k != PyKind::kTuple && k != PyKind::kSet) return bad_args();
      RETURN_IF_ERROR(copy_items(v, a[0]));
    }
    return v;
  }
  if (name == "builtins.bytes" || name == "builtins.bytearray") {
    if (a.empty()) return new_bytes("");
    if (a.size() == 1 && a[0]->kind == PyKind::kBytes) return a[0];
    if (a.size() == 1 && a[0]->kind == PyKind::kList) {
      RETURN_IF_ERROR(ChargeDecoded(a[0]->items.size()));
      std::string data;
      for (const PyValue* item : a[0]->items) {
        if (item->kind != PyKind::kInt || item->i < 0 || item->i > 255) return bad_args();
        data.push_back(static_cast<char>(item->i));
      }
      return new_bytes(std::move(data));
    }
    if (a.size() == 2 && a[0]->kind == PyKind::kStr && a[1]->kind == PyKind::kStr &&
        IsLatin1(a[1]->s)) {
      return latin1(a[0]);
    }
    return bad_args();
  }
  if (name == "_codecs.encode") {
    if (a.size() != 2 || a[0]->kind != PyKind::kStr || a[1]->kind != PyKind::kStr ||
        !IsLatin1(a[1]->s)) {
      return bad_args();
    }
    return latin1(a[0]);
  }
  if (name == "copyreg._reconstructor") {
    // (cls, base, state): base.__new__(cls) + base.__init__(obj, state) for a built-in
    // base; here an instance of `cls` whose state is `state`.
    if (a.size() != 3 || a[0]->kind != PyKind::kGlobal || a[1]->kind != PyKind::kGlobal) {
      return bad_args();
    }
    PyValue* v = NewInstance(a[0]->s);
    if (v->kind == PyKind::kObject && a[2]->kind != PyKind::kNone) {
      v->state = a[2];
      v->depth = std::max(v->depth, a[2]->depth + 1);
    }
    return v;
  }
  if (name == "copyreg.__newobj__" || name == "copyreg.__newobj_ex__") {
    if (a.empty() || a[0]->kind != PyKind::kGlobal) return bad_args();
    return NewInstance(a[0]->s);
  }
  if (!options_.call) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported object '", name, "' in the pickle: calling it is refused"));
  }
  return options_.call(*this, name, args);
}

absl::StatusOr<PyValue*> Unpickler::Load(absl::string_view data, size_t* consumed) {
  if (load_depth_ >= kMaxLoadDepth) {
    return absl::InvalidArgumentError("pickles nested inside pickles too deeply");
  }
  ++load_depth_;
  struct Leave {
    int* depth;
    ~Leave() { --*depth; }
  } leave{&load_depth_};

  ByteReader r(data);
  std::vector<PyValue*> stack;
  std::vector<size_t> marks;
  std::unordered_map<uint64_t, PyValue*> memo;
  size_t op_pos = 0;

  auto above_mark = [&]() { return marks.empty() ? stack.size() : stack.size() - marks.back(); };
  auto pop = [&]() -> absl::StatusOr<PyValue*> {
    if (above_mark() == 0) return PickleError(op_pos, "stack underflow");
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
    absl::Status s = Adopt(container, child);
    return s.ok() ? s : PickleError(op_pos, s.message());
  };
  auto make_seq = [&](PyKind kind, const std::vector<PyValue*>& items) -> absl::Status {
    PyValue* v = New(kind);
    for (PyValue* item : items) RETURN_IF_ERROR(adopt(v, item));
    return push(v);
  };
  auto top = [&]() -> absl::StatusOr<PyValue*> {
    if (above_mark() == 0) return PickleError(op_pos, "stack underflow");
    return stack.back();
  };
  // kObject's lazily made list of APPEND(S)/ADDITEMS items.
  auto object_list = [&](PyValue* obj) {
    if (obj->list == nullptr) obj->list = New(PyKind::kList);
    return obj->list;
  };
  auto add_to_list = [&](PyValue* target, const std::vector<PyValue*>& items,
                         PyKind kind) -> absl::Status {
    PyValue* into = target;
    if (target->kind == PyKind::kObject) {
      into = object_list(target);
    } else if (target->kind != kind) {
      return PickleError(op_pos, absl::StrCat("cannot add items to a ", PyKindName(target->kind)));
    }
    for (PyValue* item : items) RETURN_IF_ERROR(adopt(into, item));
    if (into != target) target->depth = std::max(target->depth, into->depth + 1);
    return absl::OkStatus();
  };
  auto set_items = [&](PyValue* dict, const std::vector<PyValue*>& kv) -> absl::Status {
    if (kv.size() % 2 != 0) return PickleError(op_pos, "odd number of items for a dict");
    if (dict->kind != PyKind::kDict && dict->kind != PyKind::kObject) {
      return PickleError(op_pos, absl::StrCat("cannot set items of a ", PyKindName(dict->kind)));
    }
    for (PyValue* item : kv) RETURN_IF_ERROR(adopt(dict, item));
    return absl::OkStatus();
  };
  auto text = [&](uint64_t n, PyKind kind, int tag) -> absl::Status {
    ASSIGN_OR_RETURN(absl::string_view bytes, r.Bytes(n));
    PyValue* v = New(kind);
    if (kind == PyKind::kBytes) {
      v->bytes = bytes;  // a view: no copy of tensor data
    } else {
      v->s = std::string(bytes);
    }
    v->tag = tag;
    return push(v);
  };
  auto global = [&](absl::string_view module, absl::string_view name) -> absl::Status {
    PyValue* v = New(PyKind::kGlobal);
    v->s = GlobalName(module, name);
    return push(v);
  };
  auto read_line = [&](size_t max) -> absl::StatusOr<absl::string_view> {
    size_t start = r.position();
    absl::string_view rest = data.substr(start);
    size_t nl = rest.find('\n');
    if (nl == absl::string_view::npos) return PickleError(op_pos, "truncated text argument");
    if (nl > max) return PickleError(op_pos, "text argument too long");
    RETURN_IF_ERROR(r.Bytes(nl + 1).status());
    return rest.substr(0, nl);
  };
  auto line_int = [&]() -> absl::StatusOr<int64_t> {
    ASSIGN_OR_RETURN(absl::string_view line, read_line(kMaxNameLine));
    line = absl::StripSuffix(line, "L");
    int64_t v = 0;
    if (!absl::SimpleAtoi(line, &v)) return PickleError(op_pos, "bad integer text");
    return v;
  };
  auto memo_put = [&](uint64_t key) -> absl::Status {
    if (stack.empty()) return PickleError(op_pos, "memo put on an empty stack");
    if (memo.size() >= options_.max_values && memo.count(key) == 0) {
      return PickleError(op_pos, "memo too large");
    }
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
    ASSIGN_OR_RETURN(PyValue * result, CallGlobal(callable->s, args));
    return push(result);
  };
  auto new_object = [&](PyValue* cls, PyValue* args) -> absl::Status {
    if (cls->kind != PyKind::kGlobal) return PickleError(op_pos, "NEWOBJ of a non-class");
    if (args->kind != PyKind::kTuple) return PickleError(op_pos, "NEWOBJ arguments not a tuple");
    return push(NewInstance(cls->s));  // the arguments of __new__ are not kept
  };
  auto persistent = [&](PyValue* pid) -> absl::Status {
    if (!options_.persistent_load) {
      return PickleError(op_pos, "persistent IDs are not allowed in this pickle");
    }
    ASSIGN_OR_RETURN(PyValue * obj, options_.persistent_load(*this, pid));
    return push(obj);
  };

  while (true) {
    if (arena_.size() > options_.max_values) {
      return PickleError(op_pos, absl::StrCat("more than ", options_.max_values, " values"));
    }
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
      case FRAME:  // framing is advisory: the opcodes inside are read as they come
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
        if (marks.size() >= kMaxStack) return PickleError(op_pos, "too many MARKs");
        marks.push_back(stack.size());
        break;
      case POP:
        if (above_mark() > 0) {
          stack.pop_back();
        } else {
          RETURN_IF_ERROR(pop_mark().status());
        }
        break;
      case POP_MARK:
        RETURN_IF_ERROR(pop_mark().status());
        break;
      case DUP: {
        ASSIGN_OR_RETURN(PyValue * v, top());
        RETURN_IF_ERROR(push(v));
        break;
      }
      case EMPTY_TUPLE:
        RETURN_IF_ERROR(push(New(PyKind::kTuple)));
        break;
      case TUPLE: {
        ASSIGN_OR_RETURN(auto items, pop_mark());
        RETURN_IF_ERROR(make_seq(PyKind::kTuple, items));
        break;
      }
      case TUPLE1:
      case TUPLE2:
      case TUPLE3: {
        std::vector<PyValue*> items(op - TUPLE1 + 1);
        for (size_t k = items.size(); k-- > 0;) {
          ASSIGN_OR_RETURN(items[k], pop());
        }
        RETURN_IF_ERROR(make_seq(PyKind::kTuple, items));
        break;
      }
      case EMPTY_LIST:
        RETURN_IF_ERROR(push(New(PyKind::kList)));
        break;
      case LIST: {
        ASSIGN_OR_RETURN(auto items, pop_mark());
        RETURN_IF_ERROR(make_seq(PyKind::kList, items));
        break;
      }
      case APPEND: {
        ASSIGN_OR_RETURN(PyValue * item, pop());
        ASSIGN_OR_RETURN(PyValue * list, top());
        RETURN_IF_ERROR(add_to_list(list, {item}, PyKind::kList));
        break;
      }
      case APPENDS: {
        ASSIGN_OR_RETURN(auto items, pop_mark());
        ASSIGN_OR_RETURN(PyValue * list, top());
        RETURN_IF_ERROR(add_to_list(list, items, PyKind::kList));
        break;
      }
      case EMPTY_SET:
        RETURN_IF_ERROR(push(New(PyKind::kSet)));
        break;
      case ADDITEMS: {
        ASSIGN_OR_RETURN(auto items, pop_mark());
        ASSIGN_OR_RETURN(PyValue * set, top());
        RETURN_IF_ERROR(add_to_list(set, items, PyKind::kSet));
        break;
      }
      case FROZENSET: {
        ASSIGN_OR_RETURN(auto items, pop_mark());
        RETURN_IF_ERROR(make_seq(PyKind::kSet, items));
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
        ASSIGN_OR_RETURN(PyValue * dict, top());
        RETURN_IF_ERROR(set_items(dict, {key, value}));
        break;
      }
      case SETITEMS: {
        ASSIGN_OR_RETURN(auto items, pop_mark());
        ASSIGN_OR_RETURN(PyValue * dict, top());
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
      case INT: {  // protocol 0: "00"/"01" are False/True
        ASSIGN_OR_RETURN(absl::string_view line, read_line(kMaxNameLine));
        PyValue* v = New(PyKind::kInt);
        if (line == "00" || line == "01") {
          v->kind = PyKind::kBool;
          v->b = line == "01";
        } else if (!absl::SimpleAtoi(line, &v->i)) {
          return PickleError(op_pos, "bad INT text");
        }
        RETURN_IF_ERROR(push(v));
        break;
      }
      case LONG: {
        ASSIGN_OR_RETURN(int64_t i, line_int());
        PyValue* v = New(PyKind::kInt);
        v->i = i;
        RETURN_IF_ERROR(push(v));
        break;
      }
      case FLOAT: {
        ASSIGN_OR_RETURN(absl::string_view line, read_line(kMaxNameLine));
        PyValue* v = New(PyKind::kFloat);
        if (!absl::SimpleAtod(line, &v->f)) return PickleError(op_pos, "bad FLOAT text");
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
      case BINUNICODE: {
        ASSIGN_OR_RETURN(uint64_t n, r.UintLE(4));
        RETURN_IF_ERROR(text(n, PyKind::kStr, 0));
        break;
      }
      case SHORT_BINUNICODE: {
        ASSIGN_OR_RETURN(uint64_t n, r.UintLE(1));
        RETURN_IF_ERROR(text(n, PyKind::kStr, 0));
        break;
      }
      case BINUNICODE8: {
        ASSIGN_OR_RETURN(uint64_t n, r.UintLE(8));
        RETURN_IF_ERROR(text(n, PyKind::kStr, 0));
        break;
      }
      case BINSTRING: {
        ASSIGN_OR_RETURN(uint64_t n, r.UintLE(4));
        RETURN_IF_ERROR(text(n, PyKind::kStr, kRawStrTag));
        break;
      }
      case SHORT_BINSTRING: {
        ASSIGN_OR_RETURN(uint64_t n, r.UintLE(1));
        RETURN_IF_ERROR(text(n, PyKind::kStr, kRawStrTag));
        break;
      }
      case STRING: {
        ASSIGN_OR_RETURN(absl::string_view line, read_line(kMaxTextLine));
        auto s = QuotedString(line);
        if (!s.ok()) return PickleError(op_pos, s.status().message());
        PyValue* v = New(PyKind::kStr);
        v->s = *std::move(s);
        v->tag = kRawStrTag;
        RETURN_IF_ERROR(push(v));
        break;
      }
      case UNICODE: {
        ASSIGN_OR_RETURN(absl::string_view line, read_line(kMaxTextLine));
        auto s = RawUnicodeEscape(line);
        if (!s.ok()) return PickleError(op_pos, s.status().message());
        PyValue* v = New(PyKind::kStr);
        v->s = *std::move(s);
        RETURN_IF_ERROR(push(v));
        break;
      }
      case BINBYTES: {
        ASSIGN_OR_RETURN(uint64_t n, r.UintLE(4));
        RETURN_IF_ERROR(text(n, PyKind::kBytes, 0));
        break;
      }
      case SHORT_BINBYTES: {
        ASSIGN_OR_RETURN(uint64_t n, r.UintLE(1));
        RETURN_IF_ERROR(text(n, PyKind::kBytes, 0));
        break;
      }
      case BINBYTES8:
      case BYTEARRAY8: {
        ASSIGN_OR_RETURN(uint64_t n, r.UintLE(8));
        RETURN_IF_ERROR(text(n, PyKind::kBytes, 0));
        break;
      }
      case NEXT_BUFFER:
      case READONLY_BUFFER:
        return PickleError(op_pos, "out-of-band buffers are not supported");
      case EXT1:
      case EXT2:
      case EXT4:
        return PickleError(op_pos, "extension registry codes (EXT1/2/4) are refused");
      case GLOBAL: {
        ASSIGN_OR_RETURN(absl::string_view module, read_line(kMaxNameLine));
        ASSIGN_OR_RETURN(absl::string_view name, read_line(kMaxNameLine));
        RETURN_IF_ERROR(global(module, name));
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
      case REDUCE: {
        ASSIGN_OR_RETURN(PyValue * args, pop());
        ASSIGN_OR_RETURN(PyValue * callable, pop());
        RETURN_IF_ERROR(call(callable, args));
        break;
      }
      case OBJ: {  // MARK cls args... OBJ: cls(*args)
        ASSIGN_OR_RETURN(auto items, pop_mark());
        if (items.empty()) return PickleError(op_pos, "OBJ without a class");
        PyValue* args = New(PyKind::kTuple);
        for (size_t k = 1; k < items.size(); ++k) RETURN_IF_ERROR(adopt(args, items[k]));
        RETURN_IF_ERROR(call(items[0], args));
        break;
      }
      case INST: {  // MARK args... INST module\nname\n: module.name(*args)
        ASSIGN_OR_RETURN(absl::string_view module, read_line(kMaxNameLine));
        ASSIGN_OR_RETURN(absl::string_view name, read_line(kMaxNameLine));
        ASSIGN_OR_RETURN(auto items, pop_mark());
        PyValue* cls = New(PyKind::kGlobal);
        cls->s = GlobalName(module, name);
        PyValue* args = New(PyKind::kTuple);
        for (PyValue* item : items) RETURN_IF_ERROR(adopt(args, item));
        RETURN_IF_ERROR(call(cls, args));
        break;
      }
      case NEWOBJ: {
        ASSIGN_OR_RETURN(PyValue * args, pop());
        ASSIGN_OR_RETURN(PyValue * cls, pop());
        RETURN_IF_ERROR(new_object(cls, args));
        break;
      }
      case NEWOBJ_EX: {
        ASSIGN_OR_RETURN(PyValue * kwargs, pop());
        ASSIGN_OR_RETURN(PyValue * args, pop());
        ASSIGN_OR_RETURN(PyValue * cls, pop());
        if (kwargs->kind != PyKind::kDict)
          return PickleError(op_pos, "NEWOBJ_EX kwargs not a dict");
        RETURN_IF_ERROR(new_object(cls, args));
        break;
      }
      case BUILD: {
        ASSIGN_OR_RETURN(PyValue * state, pop());
        ASSIGN_OR_RETURN(PyValue * target, top());
        switch (target->kind) {
          case PyKind::kObject:
            target->state = state;  // a second BUILD replaces the first
            target->depth = std::max(target->depth, state->depth + 1);
            if (target->depth > kMaxDepth) return PickleError(op_pos, "nesting too deep");
            break;
          case PyKind::kDict:  // OrderedDict's _metadata and the like: dropped
          case PyKind::kList:
          case PyKind::kSet:
          case PyKind::kTuple:
            break;
          case PyKind::kOpaque:
            if (options_.build) {
              absl::Status s = options_.build(*this, target, state);
              if (!s.ok()) return PickleError(op_pos, s.message());
            }
            break;
          default:
            return PickleError(op_pos, absl::StrCat("BUILD on a ", PyKindName(target->kind)));
        }
        break;
      }
      case PUT: {
        ASSIGN_OR_RETURN(int64_t key, line_int());
        RETURN_IF_ERROR(memo_put(static_cast<uint64_t>(key)));
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
      case GET: {
        ASSIGN_OR_RETURN(int64_t key, line_int());
        RETURN_IF_ERROR(memo_get(static_cast<uint64_t>(key)));
        break;
      }
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
        RETURN_IF_ERROR(persistent(pid));
        break;
      }
      case PERSID: {
        ASSIGN_OR_RETURN(absl::string_view line, read_line(kMaxNameLine));
        PyValue* pid = New(PyKind::kStr);
        pid->s = std::string(line);
        RETURN_IF_ERROR(persistent(pid));
        break;
      }
      default:
        return PickleError(op_pos, absl::StrCat("unsupported opcode 0x", absl::Hex(op)));
    }
  }
}

}  // namespace i2s::internal

// Emits pickle opcodes one by one (Python's Lib/pickle.py names): what torch.save writes,
// for SerializeTorchStateDict, and hand-built pickles for the tests. No validation: the
// caller writes a well-formed sequence (or, in tests, a deliberately broken one).
// Not thread-safe.
#ifndef I2S_SERVER_FORMATS_INTERNAL_PICKLE_WRITER_H_
#define I2S_SERVER_FORMATS_INTERNAL_PICKLE_WRITER_H_

#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/formats/internal/byte_reader.h"

namespace i2s::internal {

class PickleWriter {
 public:
  PickleWriter& Proto(int version = 2) {
    out_ += '\x80';
    out_ += static_cast<char>(version);
    return *this;
  }
  PickleWriter& Stop() { return Op('.'); }
  PickleWriter& Mark() { return Op('('); }
  PickleWriter& Tuple() { return Op('t'); }
  PickleWriter& Tuple1() { return Op('\x85'); }
  PickleWriter& Tuple2() { return Op('\x86'); }
  PickleWriter& Tuple3() { return Op('\x87'); }
  PickleWriter& EmptyTuple() { return Op(')'); }
  PickleWriter& EmptyDict() { return Op('}'); }
  PickleWriter& EmptyList() { return Op(']'); }
  PickleWriter& EmptySet() { return Op('\x8f'); }
  PickleWriter& AddItems() { return Op('\x90'); }
  PickleWriter& SetItem() { return Op('s'); }
  PickleWriter& SetItems() { return Op('u'); }
  PickleWriter& Append() { return Op('a'); }
  PickleWriter& Appends() { return Op('e'); }
  PickleWriter& Reduce() { return Op('R'); }
  PickleWriter& NewObj() { return Op('\x81'); }
  PickleWriter& NewObjEx() { return Op('\x92'); }
  PickleWriter& Build() { return Op('b'); }
  PickleWriter& BinPersId() { return Op('Q'); }
  PickleWriter& None() { return Op('N'); }
  PickleWriter& Memoize() { return Op('\x94'); }
  PickleWriter& Pop() { return Op('0'); }
  PickleWriter& Bool(bool v) { return Op(v ? '\x88' : '\x89'); }
  PickleWriter& Global(absl::string_view module, absl::string_view name) {
    absl::StrAppend(&out_, "c", module, "\n", name, "\n");
    return *this;
  }
  PickleWriter& StackGlobal(absl::string_view module, absl::string_view name) {
    Str(module);
    Str(name);
    return Op('\x93');
  }
  PickleWriter& Str(absl::string_view s) {
    out_ += 'X';
    AppendLE(&out_, s.size(), 4);
    out_.append(s.data(), s.size());
    return *this;
  }
  PickleWriter& Bytes(absl::string_view b) {
    out_ += 'B';
    AppendLE(&out_, b.size(), 4);
    out_.append(b.data(), b.size());
    return *this;
  }
  PickleWriter& ByteArray8(absl::string_view b) {
    out_ += '\x96';
    AppendLE(&out_, b.size(), 8);
    out_.append(b.data(), b.size());
    return *this;
  }
  PickleWriter& Int(int64_t v) {
    if (v >= 0 && v < 256) {
      out_ += 'K';
      AppendLE(&out_, v, 1);
    } else if (v >= 0 && v < 65536) {
      out_ += 'M';
      AppendLE(&out_, v, 2);
    } else if (v >= std::numeric_limits<int32_t>::min() &&
               v <= std::numeric_limits<int32_t>::max()) {
      out_ += 'J';
      AppendLE(&out_, static_cast<uint32_t>(v), 4);
    } else {
      out_ += "\x8a\x08";
      AppendLE(&out_, static_cast<uint64_t>(v), 8);
    }
    return *this;
  }
  PickleWriter& Float(double v) {  // BINFLOAT: big-endian
    uint64_t u;
    std::memcpy(&u, &v, 8);
    out_ += 'G';
    for (int k = 7; k >= 0; --k) out_ += static_cast<char>((u >> (8 * k)) & 0xff);
    return *this;
  }
  PickleWriter& BinPut(uint8_t key) {
    out_ += 'q';
    out_ += static_cast<char>(key);
    return *this;
  }
  PickleWriter& BinGet(uint8_t key) {
    out_ += 'h';
    out_ += static_cast<char>(key);
    return *this;
  }
  PickleWriter& LongBinPut(uint32_t key) {
    out_ += 'r';
    AppendLE(&out_, key, 4);
    return *this;
  }
  PickleWriter& LongBinGet(uint32_t key) {
    out_ += 'j';
    AppendLE(&out_, key, 4);
    return *this;
  }
  PickleWriter& Raw(absl::string_view bytes) {
    out_.append(bytes.data(), bytes.size());
    return *this;
  }
  PickleWriter& IntTuple(const std::vector<int64_t>& v) {
    Mark();
    for (int64_t x : v) Int(x);
    return Tuple();
  }
  PickleWriter& EmptyOrderedDict() {
    Global("collections", "OrderedDict");
    EmptyTuple();
    return Reduce();
  }

  const std::string& bytes() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  PickleWriter& Op(char op) {
    out_ += op;
    return *this;
  }
  std::string out_;
};

}  // namespace i2s::internal

#endif  // I2S_SERVER_FORMATS_INTERNAL_PICKLE_WRITER_H_

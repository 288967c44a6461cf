#include "server/formats/npy.h"

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "server/formats/internal/byte_reader.h"
#include "server/formats/zip.h"

namespace i2s {
namespace {

constexpr absl::string_view kMagic("\x93NUMPY", 6);
constexpr int kMaxDims = 32;
// NumPy refuses headers above this size too (numpy.lib.format, _MAX_HEADER_SIZE).
constexpr uint64_t kMaxHeaderLen = 10000;

absl::Status HeaderError(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("bad .npy header: ", what));
}

// Parser for the Python dict literal of a .npy header, e.g.
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
class HeaderParser {
 public:
  explicit HeaderParser(absl::string_view text) : s_(text) {}

  absl::Status Parse(std::string* descr, bool* fortran, std::vector<int64_t>* shape) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    SkipSpace();
    if (!Eat('{')) return HeaderError("expected '{'");
    while (true) {
      SkipSpace();
      if (Eat('}')) break;
      std::string key;
      RETURN_IF_ERROR(String(&key));
      SkipSpace();
      if (!Eat(':')) return HeaderError("expected ':' after a key");
      SkipSpace();
      if (key == "descr") {
        RETURN_IF_ERROR(String(descr));
        have_descr = true;
      } else if (key == "fortran_order") {
        if (Word("True")) {
          *fortran = true;
        } else if (Word("False")) {
          *fortran = false;
        } else {
          return HeaderError("fortran_order is not True or False");
        }
        have_fortran = true;
      } else if (key == "shape") {
        RETURN_IF_ERROR(Tuple(shape));
        have_shape = true;
      } else {
        return HeaderError(absl::StrCat("unknown key '", key, "'"));
      }
      SkipSpace();
      if (Eat(',')) continue;
      SkipSpace();
      if (Eat('}')) break;
      return HeaderError("expected ',' or '}'");
    }
    SkipSpace();
    if (pos_ != s_.size()) return HeaderError("trailing characters after the dict");
    if (!have_descr || !have_fortran || !have_shape) {
      return HeaderError("missing one of 'descr', 'fortran_order', 'shape'");
    }
    return absl::OkStatus();
  }

 private:
  void SkipSpace() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\t')) ++pos_;
  }
  bool Eat(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool Word(absl::string_view w) {
    if (absl::StartsWith(s_.substr(pos_), w)) {
      pos_ += w.size();
      return true;
    }
    return false;
  }
  absl::Status String(std::string* out) {
    if (pos_ >= s_.size() || (s_[pos_] != '\'' && s_[pos_] != '"')) {
      return HeaderError("expected a quoted string");
    }
    char quote = s_[pos_++];
    size_t end = s_.find(quote, pos_);
    if (end == absl::string_view::npos) return HeaderError("unterminated string");
    *out = std::string(s_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return absl::OkStatus();
  }
  absl::Status Tuple(std::vector<int64_t>* out) {
    out->clear();
    if (!Eat('(')) return HeaderError("shape is not a tuple");
    while (true) {
      SkipSpace();
      if (Eat(')')) return absl::OkStatus();
      if (pos_ >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
        return HeaderError("shape holds something other than non-negative integers");
      }
      int64_t v = 0;
      while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
        if (v > (std::numeric_limits<int64_t>::max() - 9) / 10) {
          return HeaderError("shape dimension too large");
        }
        v = v * 10 + (s_[pos_++] - '0');
      }
      Word("L");  // Python 2 long suffix
      out->push_back(v);
      if (out->size() > kMaxDims) return HeaderError("too many dimensions");
      SkipSpace();
      if (Eat(',')) continue;
      SkipSpace();
      if (Eat(')')) return absl::OkStatus();
      return HeaderError("expected ',' or ')' in shape");
    }
  }

  absl::string_view s_;
  size_t pos_ = 0;
};

}  // namespace

int64_t FloatArray::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string FloatArray::ShapeString() const {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<FloatArray> ParseNpy(absl::string_view bytes) {
  internal::ByteReader r(bytes);
  auto magic = r.Bytes(kMagic.size());
  if (!magic.ok() || *magic != kMagic) {
    return absl::InvalidArgumentError("not a .npy file (no \\x93NUMPY magic)");
  }
  ASSIGN_OR_RETURN(uint8_t major, r.U8());
  ASSIGN_OR_RETURN(uint8_t minor, r.U8());
  uint64_t header_len = 0;
  if (major == 1) {
    ASSIGN_OR_RETURN(header_len, r.UintLE(2));
  } else if (major == 2 || major == 3) {
    ASSIGN_OR_RETURN(header_len, r.UintLE(4));
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported .npy format version ", major, ".", minor));
  }
  if (header_len > kMaxHeaderLen) return HeaderError("header too long");
  auto header = r.Bytes(header_len);
  if (!header.ok()) return HeaderError("truncated header");

  std::string descr;
  bool fortran = false;
  FloatArray out;
  RETURN_IF_ERROR(HeaderParser(*header).Parse(&descr, &fortran, &out.shape));
  if (descr != "<f4") {
    return absl::InvalidArgumentError(absl::StrCat(
        "dtype '", descr, "' is not supported: expected little-endian float32 ('<f4')"));
  }
  if (fortran) {
    return absl::InvalidArgumentError("Fortran-order arrays are not supported: expected C order");
  }
  uint64_t numel = 1;
  for (int64_t d : out.shape) {
    if (d != 0 && numel > std::numeric_limits<uint64_t>::max() / 4 / static_cast<uint64_t>(d)) {
      return HeaderError("shape too large");
    }
    numel *= static_cast<uint64_t>(d);
  }
  if (numel * 4 != r.remaining()) {
    return absl::InvalidArgumentError(
        absl::StrCat("data size mismatch: shape ", out.ShapeString(), " needs ", numel * 4,
                     " bytes of float32, the file has ", r.remaining()));
  }
  out.values.resize(numel);
  if (numel > 0) std::memcpy(out.values.data(), bytes.data() + r.position(), numel * 4);
  return out;
}

std::string SerializeNpy(const FloatArray& array) {
  std::string shape = absl::StrJoin(array.shape, ", ");
  if (array.shape.size() == 1) shape += ",";
  std::string header =
      absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': (", shape, "), }");
  // Pad with spaces so magic + version + length + header + '\n' is a multiple of 64,
  // as numpy.lib.format does (keeps the data aligned).
  size_t total = kMagic.size() + 2 + 2 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::string out(kMagic);
  out.push_back(1);
  out.push_back(0);
  internal::AppendLE(&out, header.size(), 2);
  out += header;
  out.append(reinterpret_cast<const char*>(array.values.data()), array.values.size() * 4);
  return out;
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return std::move(ss).str();
}

absl::Status WriteStringToFile(const std::string& path, absl::string_view data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::PermissionDeniedError(
        absl::StrCat(path, ": cannot open for writing: ", std::strerror(errno)));
  }
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

absl::StatusOr<FloatArray> ReadNpyFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path));
  auto array = ParseNpy(bytes);
  if (!array.ok()) return Annotate(array.status(), path);
  return array;
}

absl::Status WriteNpyFile(const std::string& path, const FloatArray& array) {
  return WriteStringToFile(path, SerializeNpy(array));
}

absl::StatusOr<std::vector<std::pair<std::string, FloatArray>>> ParseNpz(absl::string_view bytes) {
  ASSIGN_OR_RETURN(ZipArchive zip, ZipArchive::Parse(bytes));
  std::vector<std::pair<std::string, FloatArray>> out;
  for (const ZipEntry& entry : zip.entries()) {
    if (!absl::EndsWith(entry.name, ".npy")) {
      return absl::InvalidArgumentError(
          absl::StrCat("member '", entry.name, "' is not a .npy array"));
    }
    auto array = ParseNpy(entry.data);
    if (!array.ok()) return Annotate(array.status(), entry.name);
    out.emplace_back(entry.name.substr(0, entry.name.size() - 4), *std::move(array));
  }
  return out;
}

absl::StatusOr<std::string> SerializeNpz(
    const std::vector<std::pair<std::string, FloatArray>>& arrays) {
  ZipWriter zip;
  for (const auto& [name, array] : arrays)
    RETURN_IF_ERROR(zip.Add(name + ".npy", SerializeNpy(array)));
  return zip.Finish();
}

absl::StatusOr<std::vector<std::pair<std::string, FloatArray>>> ReadNpzFile(
    const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path));
  auto arrays = ParseNpz(bytes);
  if (!arrays.ok()) return Annotate(arrays.status(), path);
  return arrays;
}

absl::Status WriteNpzFile(const std::string& path,
                          const std::vector<std::pair<std::string, FloatArray>>& arrays) {
  auto bytes = SerializeNpz(arrays);
  if (!bytes.ok()) return Annotate(bytes.status(), path);
  return WriteStringToFile(path, *bytes);
}

absl::StatusOr<FloatArray> ParseLatentBytes(absl::string_view bytes) {
  if (!absl::StartsWith(bytes, "PK")) return ParseNpy(bytes);
  ASSIGN_OR_RETURN(auto arrays, ParseNpz(bytes));
  for (auto& [name, array] : arrays) {
    if (name == "w") return std::move(array);
  }
  std::vector<std::string> names;
  for (const auto& [name, array] : arrays) names.push_back(name);
  return absl::InvalidArgumentError(
      absl::StrCat("an .npz without a member 'w' (NVIDIA's projected_w.npz has one; found: ",
                   names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
}

absl::StatusOr<FloatArray> ReadLatentFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path));
  auto latent = ParseLatentBytes(bytes);
  if (!latent.ok()) return Annotate(latent.status(), path);
  return latent;
}

absl::StatusOr<std::string> SerializeProjectedW(const FloatArray& w) {
  return SerializeNpz({{"w", w}});
}

}  // namespace i2s

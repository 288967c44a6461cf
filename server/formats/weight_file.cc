#include "server/formats/weight_file.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unordered_set>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/formats/internal/pickle.h"
#include "server/formats/internal/weight_loader.h"
#include "server/formats/npy.h"
#include "server/formats/zip.h"

namespace i2s {
namespace {

using internal::LoadedPickle;
using internal::PyKind;
using internal::PyValue;

// The shortest digits that read back to the same double (or float, for float32 numpy
// scalars), laid out as Python's repr does: fixed notation for exponents in [-4, 16),
// else scientific; integral values without ".0". "0.002", "10", "1e-08", "1e+16".
std::string FloatText(double v, bool single) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  const int max_digits = single ? 9 : 17;
  for (int digits = 1; digits <= max_digits; ++digits) {
    std::snprintf(buf, sizeof(buf), "%.*e", digits - 1, v);
    if (single ? std::strtof(buf, nullptr) == static_cast<float>(v)
               : std::strtod(buf, nullptr) == v) {
      break;
    }
  }
  // buf = "[-]d[.ddd]e[+-]xx"
  absl::string_view text(buf);
  std::string sign = text[0] == '-' ? "-" : "";
  if (!sign.empty()) text.remove_prefix(1);
  const size_t e = text.find('e');
  std::string mantissa;
  for (char c : text.substr(0, e)) {
    if (c != '.') mantissa.push_back(c);
  }
  while (mantissa.size() > 1 && mantissa.back() == '0') mantissa.pop_back();
  const int exponent = std::atoi(std::string(text.substr(e + 1)).c_str());
  if (exponent >= 16 || exponent < -4) {
    std::string out = sign + mantissa.substr(0, 1);
    if (mantissa.size() > 1) absl::StrAppend(&out, ".", mantissa.substr(1));
    char exp[16];
    std::snprintf(exp, sizeof(exp), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    return out + exp;
  }
  if (exponent < 0) return absl::StrCat(sign, "0.", std::string(-exponent - 1, '0'), mantissa);
  const size_t int_digits = static_cast<size_t>(exponent) + 1;
  if (mantissa.size() <= int_digits) {
    return sign + mantissa + std::string(int_digits - mantissa.size(), '0');
  }
  return absl::StrCat(sign, mantissa.substr(0, int_digits), ".", mantissa.substr(int_digits));
}

// Text of a plain leaf; false for other kinds.
bool LeafText(const PyValue* v, std::string* out) {
  switch (v->kind) {
    case PyKind::kNone:
      *out = "None";
      return true;
    case PyKind::kBool:
      *out = v->b ? "True" : "False";
      return true;
    case PyKind::kInt:
      *out = absl::StrCat(v->i);
      return true;
    case PyKind::kBigInt:
      *out = internal::BigIntToDecimal(v->s);
      return true;
    case PyKind::kFloat:
      *out = FloatText(v->f, v->tag == internal::kFloat32Tag);
      return true;
    case PyKind::kStr:
      *out = v->s;
      return true;
    default:
      return false;
  }
}

bool IsModuleContainer(const PyValue* key) {
  return key->kind == PyKind::kStr &&
         (key->s == "_parameters" || key->s == "_buffers" || key->s == "_modules");
}

// Source code that is never needed: left out of `values`.
bool IsSourceCode(const PyValue* key, const PyValue* value) {
  return key->kind == PyKind::kStr && value->kind == PyKind::kStr &&
         (key->s == "module_src" || key->s == "build_module_src");
}

class Walker {
 public:
  Walker(const LoadedPickle& lp, WeightFileContents* out) : lp_(lp), out_(out) {}

  absl::Status Walk(const PyValue* v, const std::string& path, int depth) {
    if (++visits_ > kMaxWeightFileEntries) return TooManyEntries();
    if (depth > internal::kMaxDepth) {
      return absl::InvalidArgumentError(
          absl::StrCat("object tree deeper than ", internal::kMaxDepth, " levels at '", path, "'"));
    }
    std::string text;
    if (LeafText(v, &text)) {
      RETURN_IF_ERROR(Charge(text.size()));
      out_->values.emplace_back(path, std::move(text));
      return absl::OkStatus();
    }
    switch (v->kind) {
      case PyKind::kBytes:
      case PyKind::kGlobal:
        return absl::OkStatus();
      case PyKind::kOpaque:
        return Opaque(v, path);
      default:
        break;
    }
    // Containers and objects: a reference cycle is walked once.
    if (!on_path_.insert(v).second) return absl::OkStatus();
    absl::Status status = Container(v, path, depth);
    on_path_.erase(v);
    return status;
  }

 private:
  // Every name built and value text kept counts against kMaxWeightFileTextBytes, so that
  // a long string referenced many times through the memo cannot be copied without end.
  absl::Status Charge(size_t n) {
    text_bytes_ += n;
    if (text_bytes_ > kMaxWeightFileTextBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "more than ", kMaxWeightFileTextBytes, " bytes of names and values in the object tree"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Join(const std::string& path, absl::string_view key) {
    if (path.size() + key.size() + 1 > kMaxWeightFileNameBytes) {
      return absl::InvalidArgumentError(absl::StrCat("a name in the object tree is longer than ",
                                                     kMaxWeightFileNameBytes, " bytes"));
    }
    RETURN_IF_ERROR(Charge(path.size() + key.size() + 1));
    return path.empty() ? std::string(key) : absl::StrCat(path, ".", key);
  }

  static absl::Status TooManyEntries() {
    return absl::InvalidArgumentError(
        absl::StrCat("more than ", kMaxWeightFileEntries,
                     " entries in the object tree (shared references repeated?)"));
  }

  absl::Status Container(const PyValue* v, const std::string& path, int depth) {
    switch (v->kind) {
      case PyKind::kTuple:
      case PyKind::kList:
      case PyKind::kSet:
        return Items(v->items, path, depth);
      case PyKind::kDict:
        return DictItems(v->items, path, depth);
      case PyKind::kObject: {
        out_->objects.emplace_back(path, v->s);
        RETURN_IF_ERROR(DictItems(v->items, path, depth));
        if (v->list != nullptr) RETURN_IF_ERROR(Items(v->list->items, path, depth));
        if (v->state != nullptr) RETURN_IF_ERROR(State(v->state, path, depth));
        return absl::OkStatus();
      }
      default:
        return absl::OkStatus();
    }
  }

  // __setstate__'s argument: the __dict__, or (__dict__, slots), or anything else.
  absl::Status State(const PyValue* state, const std::string& path, int depth) {
    if (state->kind == PyKind::kDict) {
      if (!on_path_.insert(state).second) return absl::OkStatus();
      absl::Status s = DictItems(state->items, path, depth + 1);
      on_path_.erase(state);
      return s;
    }
    if (state->kind == PyKind::kTuple && state->items.size() == 2 &&
        (state->items[0]->kind == PyKind::kDict || state->items[0]->kind == PyKind::kNone) &&
        (state->items[1]->kind == PyKind::kDict || state->items[1]->kind == PyKind::kNone)) {
      for (const PyValue* part : state->items) {
        if (part->kind == PyKind::kDict) RETURN_IF_ERROR(State(part, path, depth + 1));
      }
      return absl::OkStatus();
    }
    return Walk(state, path, depth + 1);
  }

  absl::Status Items(const std::vector<PyValue*>& items, const std::string& path, int depth) {
    for (size_t k = 0; k < items.size(); ++k) {
      ASSIGN_OR_RETURN(std::string name, Join(path, absl::StrCat(k)));
      RETURN_IF_ERROR(Walk(items[k], name, depth + 1));
    }
    return absl::OkStatus();
  }

  absl::Status DictItems(const std::vector<PyValue*>& items, const std::string& path, int depth) {
    bool module_like = false;
    for (size_t k = 0; k + 1 < items.size(); k += 2) {
      if (IsModuleContainer(items[k]) && items[k + 1]->kind == PyKind::kDict) module_like = true;
    }
    for (size_t k = 0; k + 1 < items.size(); k += 2) {
      const PyValue* key = items[k];
      const PyValue* value = items[k + 1];
      if (IsSourceCode(key, value)) continue;
      if (module_like && IsModuleContainer(key) && value->kind == PyKind::kDict) {
        // _parameters/_buffers/_modules: their entries are named as the module's own.
        if (++visits_ > kMaxWeightFileEntries) return TooManyEntries();
        if (!on_path_.insert(value).second) continue;
        absl::Status s = DictItems(value->items, path, depth + 1);
        on_path_.erase(value);
        RETURN_IF_ERROR(s);
        continue;
      }
      std::string key_text;
      if (!LeafText(key, &key_text)) key_text = absl::StrCat(k / 2);  // a tuple or object key
      ASSIGN_OR_RETURN(std::string name, Join(path, key_text));
      RETURN_IF_ERROR(Walk(value, name, depth + 1));
    }
    return absl::OkStatus();
  }

  absl::Status Opaque(const PyValue* v, const std::string& path) {
    switch (v->tag) {
      case internal::kTensorTag: {
        std::shared_ptr<const std::string> owner;
        auto tensor = lp_.Tensor(v, &owner);
        if (!tensor.ok()) {
          return Annotate(tensor.status(), absl::StrCat("tensor '", path, "'"));
        }
        if (owner != nullptr && kept_.insert(owner.get()).second) {
          out_->decoded.push_back(std::move(owner));
        }
        out_->tensors.emplace_back(path, *std::move(tensor));
        return absl::OkStatus();
      }
      case internal::kArrayTag:
        out_->objects.emplace_back(path, "numpy.ndarray");
        return absl::OkStatus();
      case internal::kStorageTag:
        out_->objects.emplace_back(path, lp_.StorageType(v));
        return absl::OkStatus();
      default:  // numpy dtypes
        return absl::OkStatus();
    }
  }

  const LoadedPickle& lp_;
  WeightFileContents* out_;
  size_t visits_ = 0;
  size_t text_bytes_ = 0;
  std::unordered_set<const PyValue*> on_path_;
  std::unordered_set<const std::string*> kept_;
};

}  // namespace

const char* WeightFileFormatName(WeightFileFormat format) {
  switch (format) {
    case WeightFileFormat::kTorchZip:
      return "torch zip";
    case WeightFileFormat::kTorchLegacy:
      return "torch legacy";
    case WeightFileFormat::kPickle:
      return "pickle";
  }
  return "?";
}

absl::StatusOr<WeightFileContents> ParseWeightFile(std::shared_ptr<const std::string> bytes) {
  if (bytes == nullptr) return absl::InvalidArgumentError("no weight file bytes");
  WeightFileContents out;
  internal::Container container;
  if (ZipArchive::LooksLikeZip(*bytes)) {
    out.format = WeightFileFormat::kTorchZip;
    container = internal::Container::kZip;
  } else if (internal::LooksLikeLegacyTorch(*bytes)) {
    out.format = WeightFileFormat::kTorchLegacy;
    container = internal::Container::kLegacy;
  } else if (!bytes->empty() && static_cast<uint8_t>((*bytes)[0]) == 0x80) {
    out.format = WeightFileFormat::kPickle;
    container = internal::Container::kPickle;
  } else {
    return absl::InvalidArgumentError(
        "not a weight file: neither a zip archive (torch.save), a legacy torch.save file nor a "
        "pickle");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<LoadedPickle> lp, LoadedPickle::Load(bytes, container));
  out.file = std::move(bytes);
  Walker walker(*lp, &out);
  RETURN_IF_ERROR(walker.Walk(lp->root(), "", 0));
  return out;
}

absl::StatusOr<WeightFileContents> ReadWeightFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(path));
  auto contents = ParseWeightFile(std::make_shared<const std::string>(std::move(bytes)));
  if (!contents.ok()) return Annotate(contents.status(), path);
  return contents;
}

}  // namespace i2s

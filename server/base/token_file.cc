#include "server/base/token_file.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/base/sha256.h"

namespace i2s {
namespace {

constexpr size_t kMinTokenLength = 16;
constexpr size_t kMaxTokenLength = 512;
constexpr absl::string_view kHashPrefix = "sha256:";

bool IsTokenChar(char c) { return c > ' ' && c < 0x7f; }

bool IsLowerHex(absl::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

bool IsValidTenant(absl::string_view tenant) {
  if (tenant.empty() || tenant.size() > 64 || !absl::ascii_isalnum(tenant[0])) return false;
  for (char c : tenant) {
    if (!absl::ascii_isalnum(c) && c != '_' && c != '.' && c != '-') return false;
  }
  return true;
}

std::string TokenKey(absl::string_view token) { return Sha256Hex(token); }

absl::Status CheckToken(absl::string_view token) {
  if (token.size() < kMinTokenLength || token.size() > kMaxTokenLength) {
    return absl::InvalidArgumentError(absl::StrCat("a token needs ", kMinTokenLength, "..",
                                                   kMaxTokenLength, " characters (this one has ",
                                                   token.size(), ")"));
  }
  for (char c : token) {
    if (!IsTokenChar(c)) {
      return absl::InvalidArgumentError("a token must be printable ASCII without spaces");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<TokenTable> ParseTokenFile(absl::string_view text, absl::string_view source) {
  TokenTable table;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    const auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat(source, ":", line_number, ": ", what));
    };
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    const std::vector<absl::string_view> words =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (words.size() < 2 || words.size() > 3) {
      return bad("expected \"<token> <tenant> [admin]\"");
    }
    absl::string_view token = words[0];
    std::string key;
    if (absl::StartsWith(token, kHashPrefix)) {
      absl::string_view hex = token.substr(kHashPrefix.size());
      if (hex.size() != 64 || !IsLowerHex(hex)) {
        return bad("a sha256: token needs 64 lowercase hex digits");
      }
      key = std::string(hex);
    } else {
      if (absl::Status ok = CheckToken(token); !ok.ok()) return bad(ok.message());
      key = TokenKey(token);
    }
    if (!IsValidTenant(words[1])) {
      return bad(
          "the tenant needs 1..64 characters of [A-Za-z0-9_.-], starting with a letter "
          "or digit");
    }
    TokenGrant grant;
    grant.tenant = std::string(words[1]);
    if (words.size() == 3) {
      if (words[2] != "admin") return bad("the third word can only be \"admin\"");
      grant.admin = true;
    }
    if (!table.emplace(std::move(key), std::move(grant)).second) {
      return bad("this token is already listed on an earlier line");
    }
  }
  if (table.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(source,
                                                   ": no tokens (every call would be "
                                                   "refused)"));
  }
  return table;
}

}  // namespace i2s

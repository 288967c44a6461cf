// The bearer-token file of i2s_server (--auth-tokens): which tokens exist and which
// tenant each one acts for. One token per line:
//
//   # comment
//   <token> <tenant> [admin]
//   sha256:<64 hex digits> <tenant> [admin]
//
// A token is 16..512 printable ASCII characters without spaces (the text after "Bearer "
// in the authorization header); the sha256: form holds the SHA-256 of the token instead,
// so the file need not contain the secret itself. A tenant is 1..64 characters of
// [A-Za-z0-9_.-], starting with a letter or digit. "admin" marks a token that may act on
// every tenant's jobs and latents. Blank lines and lines starting with '#' are ignored.
//
// Parse errors name the line number and what is wrong, never the token text (error
// messages end up in logs).
#ifndef I2S_SERVER_BASE_TOKEN_FILE_H_
#define I2S_SERVER_BASE_TOKEN_FILE_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace i2s {

struct TokenGrant {
  std::string tenant;
  bool admin = false;
};

// Keyed by the SHA-256 (64 lowercase hex digits) of the token.
using TokenTable = std::map<std::string, TokenGrant>;

// InvalidArgument "<source>:<line>: ..." for a malformed line, a duplicate token, or a
// file with no token at all.
absl::StatusOr<TokenTable> ParseTokenFile(absl::string_view text,
                                          absl::string_view source = "tokens");

// True if `tenant` is a valid tenant name (see above).
bool IsValidTenant(absl::string_view tenant);

// OK if `token` is a plain token as above (16..512 printable ASCII characters without
// spaces); else InvalidArgument saying which rule it breaks, never the token itself.
absl::Status CheckToken(absl::string_view token);

// The SHA-256 key under which ParseTokenFile files a presented token.
std::string TokenKey(absl::string_view token);

}  // namespace i2s

#endif  // I2S_SERVER_BASE_TOKEN_FILE_H_

#include "client/context.h"

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/time/time.h"
#include "client/files.h"
#include "common/status_macros.h"

namespace i2s::client::cli {

Client& Context::client() {
  if (client_ == nullptr) client_ = Client::Create(options_);
  return *client_;
}

absl::Status Context::MakeClientOptions() {
  options_.server = g.server;
  options_.timeout = absl::Seconds(g.timeout);
  options_.tls = g.tls || !g.ca_cert.empty() || !g.client_cert.empty();
  const auto read = [](const std::string& path, const char* flag) -> absl::StatusOr<std::string> {
    auto text = ReadFile(path);
    if (!text.ok()) return Annotate(text.status(), flag);
    return text;
  };
  if (!g.ca_cert.empty()) {
    ASSIGN_OR_RETURN(options_.ca_cert_pem, read(g.ca_cert, "--ca-cert"));
  }
  if (g.client_cert.empty() != g.client_key.empty()) {
    return absl::InvalidArgumentError("--client-cert and --client-key go together");
  }
  if (!g.client_cert.empty()) {
    ASSIGN_OR_RETURN(options_.client_cert_pem, read(g.client_cert, "--client-cert"));
    ASSIGN_OR_RETURN(options_.client_key_pem, read(g.client_key, "--client-key"));
  }
  if (!g.server_name.empty() && !options_.tls) {
    return absl::InvalidArgumentError("--tls-server-name needs --tls");
  }
  options_.server_name = g.server_name;
  if (!g.token_file.empty()) {
    ASSIGN_OR_RETURN(std::string token, read(g.token_file, "--token-file"));
    options_.token = std::string(absl::StripAsciiWhitespace(token));
    if (options_.token.empty()) return absl::InvalidArgumentError("--token-file: empty");
  } else if (const char* env = std::getenv("I2S_TOKEN"); env != nullptr && *env != '\0') {
    options_.token = std::string(absl::StripAsciiWhitespace(env));
  }
  for (char c : options_.token) {
    if (c <= ' ' || c >= 0x7f) {
      return absl::InvalidArgumentError("the token must be printable ASCII without spaces");
    }
  }
  return absl::OkStatus();
}

}  // namespace i2s::client::cli

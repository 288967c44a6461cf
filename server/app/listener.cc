#include "server/app/listener.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/api/connection_options.h"
#include "server/api/metrics_export.h"
#include "server/base/log.h"
#include "server/formats/npy.h"

namespace i2s {

bool IsLoopback(const std::string& address) {
  if (absl::StartsWith(address, "unix:") || absl::StartsWith(address, "unix-abstract:")) {
    return true;
  }
  std::string host = address;
  if (absl::StartsWith(host, "[")) {
    host = host.substr(1, host.find(']') == std::string::npos ? 0 : host.find(']') - 1);
  } else if (auto colon = host.rfind(':'); colon != std::string::npos) {
    host = host.substr(0, colon);
  }
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(const Flags& f) {
  if (f.tls_cert.empty() != f.tls_key.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (f.tls_cert.empty()) {
    if (!f.tls_client_ca.empty()) {
      return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
    }
    if (!f.plaintext && !IsLoopback(f.address)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--address ", f.address,
          " is reachable from other machines: give --tls-cert and --tls-key, or --plaintext "
          "to serve without TLS on purpose (e.g. behind a TLS-terminating proxy)"));
    }
    return grpc::InsecureServerCredentials();
  }
  if (f.plaintext) return absl::InvalidArgumentError("--plaintext contradicts --tls-cert");
  const auto read = [](const std::string& path, const char* flag) -> absl::StatusOr<std::string> {
    auto text = ReadFileToString(path);
    if (!text.ok()) return Annotate(text.status(), flag);
    return text;
  };
  grpc::SslServerCredentialsOptions ssl;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.cert_chain, read(f.tls_cert, "--tls-cert"));
  ASSIGN_OR_RETURN(pair.private_key, read(f.tls_key, "--tls-key"));
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (!f.tls_client_ca.empty()) {
    ASSIGN_OR_RETURN(ssl.pem_root_certs, read(f.tls_client_ca, "--tls-client-ca"));
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

absl::StatusOr<std::unique_ptr<Authenticator>> LoadBearerTokens(const Flags& f) {
  if (f.auth_tokens.empty()) return nullptr;
  ASSIGN_OR_RETURN(std::unique_ptr<Authenticator> auth, Authenticator::FromFile(f.auth_tokens));
  LogNote(absl::StrCat("authentication: ", auth->token_count(), " token(s) from ", f.auth_tokens));
  if (f.tls_cert.empty() && !IsLoopback(f.address)) {
    LogNote(
        absl::StrCat("warning: bearer tokens over plaintext can be read on the "
                     "network; use --tls-cert/--tls-key unless a TLS proxy is in front"));
  }
  return auth;
}

rlim_t RaiseOpenFilesLimit() {
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur < limit.rlim_max) {
    struct rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) return raised.rlim_cur;
  }
  return limit.rlim_cur;
}

absl::StatusOr<Listener> StartListening(const Flags& f,
                                        std::shared_ptr<grpc::ServerCredentials> credentials,
                                        const std::vector<grpc::Service*>& services,
                                        MetricsRegistry* metrics) {
  // grpc.health.v1 is served by HealthService (bounded Watch streams), not gRPC's default.
  grpc::EnableDefaultHealthCheckService(false);
  if (!f.no_reflection) grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  Listener listener;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(f.address, credentials, &listener.port);
  if (!f.local_address.empty()) {
    if (!IsLoopback(f.local_address)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--local-address ", f.local_address,
                       ": must be a loopback address (127.x.x.x, ::1, localhost)"));
    }
    builder.AddListeningPort(f.local_address, grpc::InsecureServerCredentials(),
                             &listener.local_port);
  }
  ApplyConnectionOptions(f.connections, &builder);
  // Every message is read whole before its call's token is checked, so what a caller
  // without a token can make the server hold is the receive limit: only what the largest
  // request needs (an image of --max-image-bytes and its options), not --max-message-bytes.
  builder.SetMaxReceiveMessageSize(static_cast<int>(f.limits.max_receive_message_bytes()));
  builder.SetMaxSendMessageSize(static_cast<int>(f.limits.max_message_bytes));
  for (grpc::Service* service : services) builder.RegisterService(service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<RpcMetricsFactory>(
      metrics, RpcMetricsFactory::KnownMethods(/*reflection=*/!f.no_reflection)));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  listener.server = builder.BuildAndStart();
  if (listener.server == nullptr || listener.port == 0) {
    return absl::UnavailableError(absl::StrCat("--address ", f.address, ": cannot listen"));
  }
  if (!f.local_address.empty() && listener.local_port == 0) {
    listener.server->Shutdown();
    return absl::UnavailableError(
        absl::StrCat("--local-address ", f.local_address, ": cannot listen"));
  }
  return listener;
}

void WritePortFile(const std::string& path, int port) {
  const std::string tmp = path + ".tmp";
  { std::ofstream(tmp) << port << "\n"; }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
}

}  // namespace i2s

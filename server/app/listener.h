// Where and how i2s_server listens: the credentials (TLS, mutual TLS, or plaintext only
// where chosen or on loopback; the callers' bearer tokens), the gRPC server with its ports, message
// sizes, connection limits and interceptors, and the port files that tell a test or a supervisor
// the ports it bound.
#ifndef I2S_SERVER_APP_LISTENER_H_
#define I2S_SERVER_APP_LISTENER_H_

#include <grpcpp/grpcpp.h>
#include <sys/resource.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/api/auth.h"
#include "server/app/flags.h"
#include "server/base/metrics.h"

namespace i2s {

// True for addresses only this machine can reach: 127.0.0.0/8, ::1, localhost, and
// unix sockets.
bool IsLoopback(const std::string& address);

// The listening credentials of --address: TLS (mutual with --tls-client-ca) or, only when
// chosen (--plaintext) or on a loopback address, plaintext. InvalidArgument for flags
// that do not go together; the files' errors name their flags.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(const Flags& flags);

// The callers' credentials: the bearer tokens of --auth-tokens, null without the flag (no
// authentication). Logs how many; warns when they would cross the network in plaintext.
absl::StatusOr<std::unique_ptr<Authenticator>> LoadBearerTokens(const Flags& flags);

// gRPC 1.51's TCP server handles accept() failing with EMFILE badly (CVE-2023-4785: a
// flood of connections denies service; Debian 12's package has no fix): the soft limit on
// open files goes up to the hard one, so connections run into the host's limit, not a
// small default. Returns the limit now in force.
rlim_t RaiseOpenFilesLimit();

// A started gRPC server and the ports it bound.
struct Listener {
  std::unique_ptr<grpc::Server> server;
  int port = 0;        // of --address
  int local_port = 0;  // of --local-address; 0 without one
};

// Builds and starts the server of `services` (not owned; they must outlive it) on
// --address with `credentials` and, with --local-address (loopback only), a plaintext
// listener there; reflection unless --no-reflection; grpc.health.v1 left to the caller's
// own service. Every call is counted in `metrics` (RpcMetricsFactory). The receive limit
// is what the largest request needs (ServiceLimits::max_receive_message_bytes).
absl::StatusOr<Listener> StartListening(const Flags& flags,
                                        std::shared_ptr<grpc::ServerCredentials> credentials,
                                        const std::vector<grpc::Service*>& services,
                                        MetricsRegistry* metrics);

// Writes "PORT\n" to `path` atomically (a reader never sees half a file).
void WritePortFile(const std::string& path, int port);

}  // namespace i2s

#endif  // I2S_SERVER_APP_LISTENER_H_

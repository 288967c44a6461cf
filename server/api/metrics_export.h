// How operators see the service: a gRPC server interceptor that counts every RPC by
// service, method and status code and times it (i2s_rpc_requests_total,
// i2s_rpc_duration_seconds), and a small HTTP server (civetweb) that serves the
// registry's Prometheus text at /metrics on its own port.
#ifndef I2S_SERVER_API_METRICS_EXPORT_H_
#define I2S_SERVER_API_METRICS_EXPORT_H_

#include <grpcpp/support/server_interceptor.h>

#include <memory>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "server/base/metrics.h"

struct mg_context;
struct mg_connection;

namespace i2s {

// One interceptor per call; register with ServerBuilder::experimental().
// SetInterceptorCreators. The registry must outlive the server.
//
// Labels are bounded: a call's service and method labels are its own only when its full
// method name ("/package.Service/Method") is one the server serves (KnownMethods); any other
// path a caller sends, with or without a token, counts as service="unknown",
// method="unknown". So the series of both metrics number at most (known methods + 1) x 17
// status codes, and /metrics cannot be grown by made-up paths.
class RpcMetricsFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  RpcMetricsFactory(MetricsRegistry* registry, absl::flat_hash_set<std::string> known_methods);
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

  // The full method names of i2s.v1.ImageToStyleGan (from its descriptor), of gRPC's health
  // service, and of server reflection when `reflection` is on.
  static absl::flat_hash_set<std::string> KnownMethods(bool reflection);

 private:
  MetricsRegistry::Counter* requests_;
  MetricsRegistry::Histogram* seconds_;
  const absl::flat_hash_set<std::string> known_methods_;
};

// Serves GET /metrics on `address` ("host:port"; port 0 picks a free one). With a
// `bearer_token`, a scrape must send "Authorization: Bearer <token>" (compared in constant
// time); any other request gets 401.
class MetricsHttpServer {
 public:
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& address, const MetricsRegistry* registry,
      const std::string& bearer_token = "");
  ~MetricsHttpServer();  // stops serving
  int port() const { return port_; }

 private:
  MetricsHttpServer() = default;
  mg_context* ctx_ = nullptr;
  int port_ = 0;
  const MetricsRegistry* registry_ = nullptr;
  std::string token_;
  friend int ServeMetricsRequest(mg_connection* conn, void* data);
};

}  // namespace i2s

#endif  // I2S_SERVER_API_METRICS_EXPORT_H_

// How operators see the service: a gRPC server interceptor that counts every RPC by
// service, method and status code and times it (i2s_rpc_requests_total,
// i2s_rpc_duration_seconds), and a small HTTP server (civetweb) that serves the
// registry's Prometheus text at /metrics on its own port.
#ifndef I2S_SERVER_API_METRICS_EXPORT_H_
#define I2S_SERVER_API_METRICS_EXPORT_H_

#include <grpcpp/support/server_interceptor.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/base/metrics.h"

struct mg_context;

namespace i2s {

// One interceptor per call; register with ServerBuilder::experimental().
// SetInterceptorCreators. The registry must outlive the server.
class RpcMetricsFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcMetricsFactory(MetricsRegistry* registry);
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  MetricsRegistry::Counter* requests_;
  MetricsRegistry::Histogram* seconds_;
};

// Serves GET /metrics on `address` ("host:port"; port 0 picks a free one).
class MetricsHttpServer {
 public:
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& address,
                                                                  const MetricsRegistry* registry);
  ~MetricsHttpServer();  // stops serving
  int port() const { return port_; }

 private:
  MetricsHttpServer() = default;
  mg_context* ctx_ = nullptr;
  int port_ = 0;
};

}  // namespace i2s

#endif  // I2S_SERVER_API_METRICS_EXPORT_H_

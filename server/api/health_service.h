// grpc.health.v1.Health, served by the server itself instead of gRPC's default health
// service: the same answers (SERVING / NOT_SERVING for "" and for each service the server
// has; NOT_FOUND for Check of any other name, SERVICE_UNKNOWN for Watch of one), but Watch
// streams, which any caller may open without a token, are bounded: past `max_watchers`
// open at once a Watch is RESOURCE_EXHAUSTED naming the limit. SetServing(false) at
// shutdown tells every watcher, and Shutdown() ends their streams so the server's own
// Shutdown does not wait for them.
#ifndef I2S_SERVER_API_HEALTH_SERVICE_H_
#define I2S_SERVER_API_HEALTH_SERVICE_H_

#include <grpcpp/grpcpp.h>

#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"

namespace i2s {

class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  // `services`: the full names answered besides "" (for example "i2s.v1.ImageToStyleGan").
  HealthService(std::vector<std::string> services, int max_watchers);

  void SetServing(bool serving);
  // Ends every open Watch (OK) and refuses new ones (UNAVAILABLE); call before the
  // server's Shutdown.
  void Shutdown();

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* ctx,
                                  const grpc::health::v1::HealthCheckRequest* req,
                                  grpc::health::v1::HealthCheckResponse* resp) override;
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* Watch(
      grpc::CallbackServerContext* ctx, const grpc::health::v1::HealthCheckRequest* req) override;

 private:
  class Watcher;
  bool Known(const std::string& service) const;
  void Remove(Watcher* w);

  const std::vector<std::string> services_;
  const int max_watchers_;
  std::mutex mu_;
  bool serving_ = false;
  bool shut_down_ = false;
  std::set<Watcher*> watchers_;
};

}  // namespace i2s

#endif  // I2S_SERVER_API_HEALTH_SERVICE_H_

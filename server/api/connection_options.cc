#include "server/api/connection_options.h"

#include <grpc/grpc.h>
#include <grpcpp/resource_quota.h>

#include <cstdint>

namespace i2s {
namespace {

int Ms(double seconds) {
  const double ms = seconds * 1000;
  return ms >= INT32_MAX ? INT32_MAX : static_cast<int>(ms);
}

}  // namespace

void ApplyConnectionOptions(const ConnectionOptions& o, grpc::ServerBuilder* builder) {
  builder->AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, o.max_streams_per_connection);
  if (o.max_idle_seconds > 0) {
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, Ms(o.max_idle_seconds));
  }
  if (o.max_age_seconds > 0) {
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, Ms(o.max_age_seconds));
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, Ms(o.age_grace_seconds));
  }
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, Ms(o.keepalive_seconds));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, Ms(o.keepalive_timeout_seconds));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                              Ms(o.min_client_ping_seconds));
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
  grpc::ResourceQuota quota("i2s_server");
  quota.SetMaxThreads(o.max_threads);
  builder->SetResourceQuota(quota);
}

}  // namespace i2s

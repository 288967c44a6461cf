// The Prometheus side of i2s_server: the process's own gauges, and GET /metrics on
// --metrics-address (plain HTTP, behind the bearer token of --metrics-token-file if given).
#ifndef I2S_SERVER_APP_METRICS_ENDPOINT_H_
#define I2S_SERVER_APP_METRICS_ENDPOINT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/api/metrics_export.h"
#include "server/app/flags.h"
#include "server/base/metrics.h"

namespace i2s {

// i2s_build_info{version} (always 1) and the resident memory of the process.
void AddProcessGauges(const std::string& version, MetricsRegistry* metrics);

// With --metrics-address: serves `metrics` (not owned; it must outlive the server) there,
// logs the URL and writes the port to --metrics-port-file. Null without the flag. Errors
// name the flag (the token file unreadable or not a token, the address not bound).
absl::StatusOr<std::unique_ptr<MetricsHttpServer>> StartMetricsEndpoint(const Flags& flags,
                                                                        MetricsRegistry* metrics);

}  // namespace i2s

#endif  // I2S_SERVER_APP_METRICS_ENDPOINT_H_

// How i2s_server stops: it serves until SIGINT or SIGTERM (SIGHUP reloads the bearer
// tokens), then shuts down gracefully: health NOT_SERVING, new work refused, running jobs
// checkpointed, health watchers ended, in-flight calls given --shutdown-grace seconds. A
// second SIGINT/SIGTERM during that shutdown exits with kExitCutShort as soon as the
// running jobs' checkpoints are stored, without waiting for in-flight calls.
#ifndef I2S_SERVER_APP_SHUTDOWN_H_
#define I2S_SERVER_APP_SHUTDOWN_H_

#include <grpcpp/grpcpp.h>

#include <memory>

#include "common/signals.h"
#include "server/api/auth.h"
#include "server/api/health_service.h"
#include "server/api/metrics_export.h"
#include "server/api/service.h"
#include "server/jobs/scheduler.h"

namespace i2s {

// The exit code when a second SIGINT/SIGTERM cut a graceful shutdown short (0 after a
// whole one, 1 when the server could not start).
inline constexpr int kExitCutShort = 3;

// Reads `signals` until SIGINT or SIGTERM and returns that signal. Each SIGHUP before it
// reloads `auth`'s token file (null: nothing to reload); a reload that fails keeps the
// previous tokens.
int WaitForStopSignal(SignalQueue* signals, Authenticator* auth);

// What the shutdown stops, in this order (none owned but `metrics_http`).
struct ServingParts {
  HealthService* health = nullptr;
  Service* service = nullptr;
  Scheduler* scheduler = nullptr;
  grpc::Server* server = nullptr;
  std::unique_ptr<MetricsHttpServer> metrics_http;  // may be null
};

// The graceful shutdown after `stop_signal`, watching `signals` for a second one. Returns
// the process's exit code: 0, or kExitCutShort (the process may also _exit with it).
int ShutDownGracefully(int stop_signal, SignalQueue* signals, ServingParts parts,
                       double grace_seconds);

}  // namespace i2s

#endif  // I2S_SERVER_APP_SHUTDOWN_H_

// i2s_server: the gRPC service. Loads the models, opens the store, resumes unfinished
// jobs, serves until SIGTERM/SIGINT, then shuts down gracefully (server/app/shutdown.h).
// This file is the wiring; the parts live in server/app: flags.h (the command line),
// listener.h (credentials, ports, the gRPC server), open_store.h, models.h (generators
// and the face detector), metrics_endpoint.h (/metrics) and shutdown.h.
#include <signal.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/signals.h"
#include "common/status_macros.h"
#include "server/api/auth.h"
#include "server/api/health_service.h"
#include "server/api/service.h"
#include "server/app/flags.h"
#include "server/app/listener.h"
#include "server/app/metrics_endpoint.h"
#include "server/app/models.h"
#include "server/app/open_store.h"
#include "server/app/shutdown.h"
#include "server/base/log.h"
#include "server/base/metrics.h"
#include "server/engine/torch_util.h"
#include "server/jobs/model_registry.h"
#include "server/jobs/scheduler.h"

#ifndef I2S_VERSION
#define I2S_VERSION "dev"
#endif

namespace i2s {
namespace {

// Logs why the server could not start; the exit code.
int Fail(const absl::Status& status) {
  LogNote(status.message());
  return 1;
}

int Main(int argc, char** argv) {
  Flags f;
  if (std::optional<int> exit_code = ParseFlags(argc, argv, &f)) return *exit_code;
  SetLogFormat(f.log_format == "json" ? LogFormat::kJson : LogFormat::kText);
  // Handlers before anything else runs (signals.h: whichever thread the kernel picks, a
  // library's included, the signal reaches the queue read below), and blocked in this
  // thread, which the threads started from here on inherit.
  const rlim_t open_files = RaiseOpenFilesLimit();
  auto signals = SignalQueue::Install({SIGINT, SIGTERM, SIGHUP});
  if (!signals.ok()) return Fail(signals.status());

  auto credentials = ServerCredentials(f);
  if (!credentials.ok()) return Fail(credentials.status());
  auto auth = LoadBearerTokens(f);
  if (!auth.ok()) return Fail(auth.status());
  SetCpuThreads(f.threads);
  auto registry_options = RegistryOptionsOf(f);
  if (!registry_options.ok()) return Fail(registry_options.status());
  const SchedulerOptions scheduler_options = SchedulerOptionsOf(f);

  auto store = OpenStore(f.store, f.data_dir, f.store_pool);
  if (!store.ok()) return Fail(store.status());
  LogNote(absl::StrCat("open files: up to ", open_files));
  LogNote(absl::StrCat("store: ", store->store->backend(), " (", store->where, "), replica ",
                       scheduler_options.replica_id));
  store->store->set_quota(f.quota);

  auto registry = LoadModels(*registry_options, f.devices);
  if (!registry.ok()) return Fail(registry.status());
  MetricsRegistry metrics;
  AddProcessGauges(I2S_VERSION, &metrics);
  auto scheduler =
      Scheduler::Create(scheduler_options, registry->get(), store->store.get(), &metrics);
  if (!scheduler.ok()) {
    return Fail(
        Annotate(scheduler.status(), absl::StrCat("resuming the jobs stored in ", store->where)));
  }
  if (int q = (*scheduler)->queued(); q > 0) {
    LogNote(absl::StrCat("resumed ", q, " unfinished job(s) from the store"));
  }
  auto face_detector = LoadFaceDetector(f);
  if (!face_detector.ok()) return Fail(face_detector.status());

  Service service(registry->get(), scheduler->get(), store->store.get(), ServiceLimitsOf(f),
                  I2S_VERSION, face_detector->get(), auth->get());
  service.RegisterMetrics(&metrics);
  HealthService health({"i2s.v1.ImageToStyleGan"}, f.connections.max_health_watchers);
  auto listener = StartListening(f, *credentials, {&service, &health}, &metrics);
  if (!listener.ok()) return Fail(listener.status());
  if (listener->local_port != 0) {
    LogNote(absl::StrCat("local plaintext listener on port ", listener->local_port));
  }
  health.SetServing(true);
  LogNote(absl::StrCat("serving on port ", listener->port, " (",
                       (f.tls_cert.empty()        ? "plaintext"
                        : f.tls_client_ca.empty() ? "TLS"
                                                  : "mutual TLS"),
                       ", ", (*auth ? "bearer tokens" : "no authentication"), "; data in ",
                       store->where, ")"));
  auto metrics_http = StartMetricsEndpoint(f, &metrics);
  if (!metrics_http.ok()) {
    listener->server->Shutdown();
    return Fail(metrics_http.status());
  }
  if (!f.port_file.empty()) WritePortFile(f.port_file, listener->port);

  const int stop_signal = WaitForStopSignal(signals->get(), auth->get());
  ServingParts parts;
  parts.health = &health;
  parts.service = &service;
  parts.scheduler = scheduler->get();
  parts.server = listener->server.get();
  parts.metrics_http = *std::move(metrics_http);
  return ShutDownGracefully(stop_signal, signals->get(), std::move(parts), f.shutdown_grace);
}

}  // namespace
}  // namespace i2s

int main(int argc, char** argv) {
  i2s::KeepLargeBlocksInTheHeap();
  return i2s::Main(argc, argv);
}

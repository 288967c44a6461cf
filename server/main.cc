// i2s_server: the gRPC service. Loads the models, opens the store, resumes unfinished
// jobs, serves until SIGTERM/SIGINT, then shuts down gracefully (health NOT_SERVING,
// new work refused, running jobs checkpointed, streams ended with a status) within
// --shutdown-grace seconds. A second SIGTERM/SIGINT during that shutdown exits with code 3
// as soon as the running jobs' checkpoints are stored, without waiting for in-flight calls.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/resource.h>
#include <torch/torch.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/api/auth.h"
#include "server/api/connection_options.h"
#include "server/api/health_service.h"
#include "server/api/metrics_export.h"
#include "server/api/service.h"
#include "server/base/log.h"
#include "server/base/metrics.h"
#include "server/base/signals.h"
#include "server/base/status_macros.h"
#include "server/base/token_file.h"
#include "server/engine/torch_util.h"
#include "server/formats/npy.h"
#include "server/jobs/model_registry.h"
#include "server/jobs/scheduler.h"
#include "server/store/postgres_store.h"
#include "server/store/sqlite_store.h"

#ifndef I2S_VERSION
#define I2S_VERSION "dev"
#endif

namespace i2s {
namespace {

// What one tenant may keep (docs/OPERATIONS.md, Disk, gives the arithmetic).
StorageQuota DefaultQuota() {
  StorageQuota q;
  q.max_latents = 10000;
  q.max_latent_bytes = int64_t{2} << 30;
  q.max_jobs = 1000;
  q.max_job_bytes = int64_t{2} << 30;
  return q;
}

struct Flags {
  std::string address = "0.0.0.0:50051";
  std::string port_file;
  std::string data_dir = "i2s-data";
  std::string store;  // "" = SQLite in data_dir; postgres://... = PostgreSQL
  int store_pool = 4;
  double lease_seconds = 15;
  std::vector<std::string> models;
  std::string vgg;
  std::string lpips;
  bool demo_model = false;
  std::string demo_arch = "stylegan1";
  int demo_resolution = 256, demo_fmap_base = 2048;
  std::string devices = "auto";
  int threads = 0;
  SchedulerOptions scheduler;
  StorageQuota quota = DefaultQuota();
  double job_retention_hours = 168, request_id_retention_hours = 168;
  ServiceLimits limits;
  ConnectionOptions connections;
  double shutdown_grace = 20;
  std::string face_cascades = FaceDetectorOptions().cascade_dir;
  std::string landmark_model;
  bool no_face_detector = false;
  std::string auth_tokens;
  std::string tls_cert, tls_key, tls_client_ca;
  bool plaintext = false;
  bool no_reflection = false;
  std::string log_format = "text";
  std::string local_address;
  std::string metrics_address;
  std::string metrics_port_file;
  std::string metrics_token_file;
};

// The bearer token of /metrics: the file's first line, trimmed, under the API's rule for
// tokens (CheckToken).
absl::StatusOr<std::string> ReadMetricsToken(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) {
    return absl::InvalidArgumentError(absl::StrCat("--metrics-token-file ", path, ": cannot read"));
  }
  const std::string token(absl::StripAsciiWhitespace(line));
  if (absl::Status ok = CheckToken(token); !ok.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics-token-file ", path, ": first line: ", ok.message()));
  }
  return token;
}

// Resident memory of this process (from /proc/self/statm), for the metrics.
double ResidentBytes() {
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return static_cast<double>(pages_resident) * static_cast<double>(sysconf(_SC_PAGESIZE));
}

// Writes `text` to `path` atomically (a reader never sees half a file).
void WriteFileAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  { std::ofstream(tmp) << text; }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
}

// The default --replica-id: unique per pod (Kubernetes) and per container (Docker).
std::string HostName() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "i2s";
  return name;
}

// True for addresses only this machine can reach: 127.0.0.0/8, ::1, localhost, and
// unix sockets.
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

// The listening credentials: TLS (mutual with --tls-client-ca) or, only when chosen
// (--plaintext) or on a loopback address, plaintext.
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

// The exit code when a second SIGINT/SIGTERM cut a graceful shutdown short (0 after a
// whole one, 1 when the server could not start).
constexpr int kExitCutShort = 3;

// gRPC 1.51's TCP server handles accept() failing with EMFILE badly (CVE-2023-4785: a
// flood of connections denies service; Debian 12's package has no fix): the soft limit on
// open files goes up to the hard one, so connections run into the host's limit, not a
// small default. Returns the limit now in force.
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

int Fail(const std::string& what) {
  LogNote(absl::StrCat(what));
  return 1;
}

absl::StatusOr<std::vector<torch::Device>> ParseDevices(const std::string& spec) {
  std::vector<torch::Device> out;
  for (absl::string_view part : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    auto d = ParseDevice(part);
    if (!d.ok()) return Annotate(d.status(), "--devices");
    if (d->is_cuda() && !torch::cuda::is_available()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--devices: ", part, " asked for, but LibTorch sees no CUDA device"));
    }
    if (d->is_cuda() && d->has_index() &&
        d->index() >= static_cast<int>(torch::cuda::device_count())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--devices: ", part, " does not exist (", torch::cuda::device_count(), " CUDA devices)"));
    }
    out.push_back(*d);
  }
  if (out.empty()) return absl::InvalidArgumentError("--devices: empty");
  return out;
}

int Main(int argc, char** argv) {
  Flags f;
  CLI::App app{
      "image2stylegan-server: embeds images into StyleGAN's W+ space and edits them, over gRPC"};
  app.footer(
      "Examples:\n"
      "  i2s_server --demo-model --data-dir /tmp/i2s            # seeded random demo model\n"
      "  i2s_server --model ffhq=stylegan1_ffhq_1024.pt --vgg vgg16.pth --devices cuda:0\n");
  app.add_option("--address", f.address, "host:port to listen on (port 0 picks a free one)")
      ->capture_default_str();
  app.add_option("--port-file", f.port_file, "write the bound port to this file once serving");
  app.add_option("--data-dir", f.data_dir, "directory of the SQLite store (created if missing)")
      ->capture_default_str();
  app.add_option("--store", f.store,
                 "postgres://USER@HOST:PORT/DB (or a libpq key=value string): keep latents and "
                 "jobs in PostgreSQL, shared by every replica, instead of SQLite in --data-dir. "
                 "Prefer the environment variable, which `ps` does not show")
      ->envname("I2S_STORE");
  app.add_option("--store-pool", f.store_pool, "PostgreSQL connections of this server")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  f.scheduler.replica_id = HostName();
  app.add_option("--replica-id", f.scheduler.replica_id,
                 "this server among replicas sharing a --store (unique per replica)")
      ->capture_default_str();
  app.add_option("--lease-seconds", f.lease_seconds,
                 "a replica's jobs are taken over by the others once it has not renewed its "
                 "lease for this long (renewed every fifth of it)")
      ->capture_default_str()
      ->check(CLI::Range(0.5, 3600.0));
  app.add_option("--model", f.models,
                 "NAME=PATH of a generator weight file: StyleGAN1 (PyTorch port), StyleGAN2 "
                 "(rosinality .pt, NVIDIA .pkl), told apart by content (repeatable; the first "
                 "is the default)");
  app.add_option("--vgg", f.vgg, "torchvision VGG16 weights for the perceptual loss");
  app.add_option("--lpips", f.lpips,
                 "LPIPS calibration file, the lpips wheel's lpips/weights/v0.1/vgg.pth "
                 "(scripts/fetch-lpips), with a full --vgg: LPIPS as a loss term "
                 "(EmbedOptions.w_lpips, the STYLEGAN2_PROJECTOR schedule) and every result's "
                 "LPIPS reported");
  app.add_flag(
      "--demo-model", f.demo_model,
      "serve the seeded random demo model 'demo' (not a trained network; no weight files needed)");
  app.add_option("--demo-arch", f.demo_arch, "demo model architecture")
      ->capture_default_str()
      ->check(CLI::IsMember({"stylegan1", "stylegan2"}));
  app.add_option("--demo-resolution", f.demo_resolution, "demo model resolution")
      ->capture_default_str();
  app.add_option("--demo-fmap-base", f.demo_fmap_base,
                 "demo model size: min(2 * BASE / res, 512) channels at resolution res (either "
                 "architecture)")
      ->capture_default_str();
  app.add_option("--devices", f.devices, "comma-separated: auto, cpu, cuda, cuda:N")
      ->capture_default_str();
  app.add_option("--threads", f.threads, "CPU threads for LibTorch (0 = one per CPU)");
  app.add_option("--queue-limit", f.scheduler.queue_limit, "queued jobs beyond this are refused")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--max-batch", f.scheduler.max_batch, "images optimised together per device")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--checkpoint-every", f.scheduler.checkpoint_every,
                 "steps between checkpoints of a running job")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  // gRPC takes an int: 2^31 would wrap to a negative value, which gRPC reads as "no limit".
  app.add_option("--max-message-bytes", f.limits.max_message_bytes,
                 "gRPC send limit, and the receive limit's upper bound (bytes; requests are "
                 "further limited to --max-image-bytes plus 1 MiB)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1} << 16, int64_t{INT32_MAX}));
  app.add_option("--max-streams-per-connection", f.connections.max_streams_per_connection,
                 "calls open at once on one connection (HTTP/2 max concurrent streams)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--max-connection-idle-seconds", f.connections.max_idle_seconds,
                 "close a connection with no call open for this long (0: never)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e7));
  app.add_option("--max-connection-age-seconds", f.connections.max_age_seconds,
                 "close any connection after this long; open calls get "
                 "--connection-age-grace-seconds to end (0: never)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e7));
  app.add_option("--connection-age-grace-seconds", f.connections.age_grace_seconds,
                 "time calls get to end when their connection reaches its age")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e7));
  app.add_option("--max-health-watchers", f.connections.max_health_watchers,
                 "grpc.health.v1 Watch streams open at once (they need no token)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--max-image-bytes", f.limits.max_image_bytes, "encoded input image size limit")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 31));
  app.add_option("--max-image-pixels", f.limits.max_image_pixels, "input width*height limit")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 34));
  app.add_option("--max-steps", f.limits.max_steps, "most optimiser steps a job may ask for")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000000));
  app.add_option("--max-morph-frames", f.limits.max_morph_frames, "most frames of one Morph")
      ->capture_default_str()
      ->check(CLI::Range(2, 100000));
  app.add_option("--heartbeat-seconds", f.limits.heartbeat_seconds,
                 "heartbeat interval of quiet event streams")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 3600.0));
  CLI::Option* cascades_flag =
      app.add_option("--face-cascades", f.face_cascades,
                     "folder of OpenCV's Haar cascades for AlignOptions.AUTO (Debian: opencv-data)")
          ->capture_default_str();
  app.add_option("--landmark-model", f.landmark_model,
                 "optional landmark model for AUTO alignment: a YuNet face detector (.onnx) or "
                 "a Facemark LBF model (.yaml)");
  app.add_flag("--no-face-detector", f.no_face_detector,
               "serve without automatic alignment (AUTO is then FAILED_PRECONDITION)");
  app.add_option("--tenant-queue-limit", f.scheduler.tenant_queue_limit,
                 "queued jobs of one tenant beyond this are refused")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--tenant-max-running", f.scheduler.tenant_max_running,
                 "running jobs of one tenant (all devices) beyond which its queued jobs wait "
                 "while other tenants' do; admission takes tenants in turn (0 = no cap)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1000000));
  app.add_option("--device-queue-limit", f.scheduler.task_queue_limit,
                 "renders and edits waiting for one device; more are refused")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--tenant-device-queue-limit", f.scheduler.tenant_task_limit,
                 "renders and edits of one tenant waiting, all devices together")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--device-task-share", f.scheduler.task_share,
                 "share of device time renders and edits get while jobs run (the rest is kept "
                 "for optimiser steps)")
      ->capture_default_str()
      ->check(CLI::Range(0.05, 0.95));
  app.add_option("--device-wait-seconds", f.limits.device_wait_seconds,
                 "how long a render or edit may wait for a device (or its call's deadline)")
      ->capture_default_str()
      ->check(CLI::Range(0.1, 86400.0));
  app.add_option("--tenant-max-latents", f.quota.max_latents,
                 "latents one tenant may keep; each unfinished Embed reserves one (0 = no limit)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  app.add_option("--tenant-max-latent-bytes", f.quota.max_latent_bytes,
                 "bytes of latents (values and noise maps) one tenant may keep (0 = no limit)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 50));
  app.add_option("--tenant-max-jobs", f.quota.max_jobs,
                 "jobs one tenant may keep, any state, until they expire (0 = no limit)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  app.add_option("--tenant-max-job-bytes", f.quota.max_job_bytes,
                 "bytes of jobs (input image and options, checkpoint) one tenant may keep (0 = "
                 "no limit)")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 50));
  app.add_option("--job-retention-hours", f.job_retention_hours,
                 "delete a finished job (its input and the request_id naming it; not its "
                 "latent) this long after it ended (0 = keep for ever)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e6));
  app.add_option("--request-id-retention-hours", f.request_id_retention_hours,
                 "forget a request_id this long after its first use (0 = keep until its job "
                 "or latent is deleted)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e6));
  app.add_option("--rate-limit", f.limits.rate_limit, "calls per second per tenant (0 = unlimited)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e9));
  app.add_option("--rate-burst", f.limits.rate_burst,
                 "calls a tenant may make at once before --rate-limit applies")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000000));
  app.add_option("--max-streams", f.limits.max_streams,
                 "open Embed/WatchJob/Morph streams, all tenants together")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--tenant-max-streams", f.limits.tenant_max_streams, "open streams of one tenant")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--max-concurrent-images", f.limits.max_concurrent_images,
                 "threads that decode and align images (Embed, AlignFace), each holding one "
                 "photo's buffers (docs/SECURITY.md, Limits)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  app.add_option("--image-queue-limit", f.limits.image_queue_limit,
                 "image calls waiting for one of those threads; more are refused")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--tenant-max-images", f.limits.tenant_max_images,
                 "image calls of one tenant waiting or running; more are refused")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  app.add_option("--auth-tokens", f.auth_tokens,
                 "file of bearer tokens, one \"TOKEN TENANT [admin]\" per line (or "
                 "sha256:HEX TENANT); re-read when it changes or on SIGHUP. Without it there "
                 "is no authentication and one tenant");
  app.add_option("--tls-cert", f.tls_cert, "PEM certificate chain of the server (TLS)");
  app.add_option("--tls-key", f.tls_key, "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", f.tls_client_ca,
                 "PEM CA bundle: clients must present a certificate it signed (mutual TLS)");
  app.add_option("--local-address", f.local_address,
                 "an extra plaintext listener on a loopback address (e.g. 127.0.0.1:50052) for "
                 "health probes and tools inside the host or pod; tokens still apply");
  app.add_flag("--plaintext", f.plaintext,
               "serve without TLS on a non-loopback --address (loopback is always allowed)");
  app.add_flag("--no-reflection", f.no_reflection, "do not serve gRPC server reflection");
  app.add_option("--log-format", f.log_format,
                 "text (lines for people) or json (one JSON object per line, with job and "
                 "latent IDs as fields)")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  app.add_option("--metrics-address", f.metrics_address,
                 "HOST:PORT of the Prometheus endpoint (GET /metrics, plain HTTP, IPv4; port 0 "
                 "picks a free one); off when empty");
  app.add_option("--metrics-port-file", f.metrics_port_file,
                 "write the bound metrics port to this file once serving");
  app.add_option("--metrics-token-file", f.metrics_token_file,
                 "file whose first line is the bearer token a scrape of /metrics must send "
                 "(Authorization: Bearer ...); without it /metrics is open to whoever reaches "
                 "--metrics-address");
  app.add_option("--shutdown-grace", f.shutdown_grace,
                 "seconds to finish in-flight calls on SIGTERM")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 3600.0));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  SetLogFormat(f.log_format == "json" ? LogFormat::kJson : LogFormat::kText);
  // Handlers before anything else runs (signals.h: whichever thread the kernel picks, a
  // library's included, the signal reaches the queue read below), and blocked in this
  // thread, which the threads started from here on inherit.
  const rlim_t open_files = RaiseOpenFilesLimit();
  auto signals = SignalQueue::Install({SIGINT, SIGTERM, SIGHUP});
  if (!signals.ok()) return Fail(std::string(signals.status().message()));

  auto credentials = ServerCredentials(f);
  if (!credentials.ok()) return Fail(std::string(credentials.status().message()));
  std::unique_ptr<Authenticator> auth;
  if (!f.auth_tokens.empty()) {
    auto created = Authenticator::FromFile(f.auth_tokens);
    if (!created.ok()) return Fail(std::string(created.status().message()));
    auth = *std::move(created);
    LogNote(
        absl::StrCat("authentication: ", auth->token_count(), " token(s) from ", f.auth_tokens));
    if (f.tls_cert.empty() && !IsLoopback(f.address)) {
      LogNote(
          absl::StrCat("warning: bearer tokens over plaintext can be read on the "
                       "network; use --tls-cert/--tls-key unless a TLS proxy is in front"));
    }
  }

  SetCpuThreads(f.threads);
  RegistryOptions ro;
  ro.vgg_path = f.vgg;
  ro.lpips_path = f.lpips;
  for (const std::string& m : f.models) {
    auto eq = m.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == m.size()) {
      return Fail(absl::StrCat("--model ", m, ": expected NAME=PATH"));
    }
    ModelSource s;
    s.name = m.substr(0, eq);
    s.path = m.substr(eq + 1);
    ro.models.push_back(s);
  }
  if (f.demo_model) {
    ModelSource s;
    s.name = "demo";
    s.demo = true;
    s.demo_arch =
        f.demo_arch == "stylegan2" ? GeneratorArch::kStyleGan2 : GeneratorArch::kStyleGan1;
    s.demo_resolution = f.demo_resolution;
    s.demo_fmap_base = f.demo_fmap_base;
    if (ro.models.empty()) {
      ro.models.push_back(s);
    } else {
      ro.models.push_back(s);  // real models stay the default
    }
  }
  if (ro.models.empty())
    return Fail("no model: give --model NAME=PATH (and --vgg) or --demo-model");
  auto devices = ParseDevices(f.devices);
  if (!devices.ok()) return Fail(std::string(devices.status().message()));
  ro.devices = *devices;

  f.scheduler.lease_ms = static_cast<int>(f.lease_seconds * 1000);
  f.scheduler.job_retention_ms = static_cast<int64_t>(f.job_retention_hours * 3600 * 1000);
  f.scheduler.request_id_retention_ms =
      static_cast<int64_t>(f.request_id_retention_hours * 3600 * 1000);
  std::unique_ptr<Store> store_owner;
  std::string store_where;  // for messages: the data dir or the database (no password)
  if (f.store.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(f.data_dir, ec);
    if (ec) return Fail(absl::StrCat("--data-dir ", f.data_dir, ": ", ec.message()));
    auto sqlite = SqliteStore::Open((std::filesystem::path(f.data_dir) / "i2s.sqlite").string());
    if (!sqlite.ok()) return Fail(absl::StrCat("--data-dir: ", sqlite.status().message()));
    store_owner = *std::move(sqlite);
    store_where = absl::StrCat("--data-dir ", f.data_dir);
  } else {
    if (!absl::StartsWith(f.store, "postgres://") && !absl::StartsWith(f.store, "postgresql://") &&
        !absl::StrContains(f.store, "=")) {
      return Fail(
          "--store: give a postgres:// URI or a libpq key=value string "
          "(without --store, the SQLite store in --data-dir is used)");
    }
    PostgresOptions po;
    po.pool_size = f.store_pool;
    auto pg = PostgresStore::Open(f.store, po);
    if (!pg.ok()) return Fail(absl::StrCat("--store: ", pg.status().message()));
    store_where = absl::StrCat("--store ", (*pg)->description());
    store_owner = *std::move(pg);
  }
  LogNote(absl::StrCat("open files: up to ", open_files));
  LogNote(absl::StrCat("store: ", store_owner->backend(), " (", store_where, "), replica ",
                       f.scheduler.replica_id));
  Store* store = store_owner.get();
  store->set_quota(f.quota);

  LogNote(absl::StrCat("loading ", ro.models.size(), " model(s) on ", f.devices, " (",
                       torch::get_num_threads(), " CPU threads)"));
  auto registry = ModelRegistry::Create(ro);
  if (!registry.ok()) return Fail(std::string(registry.status().message()));
  for (const ModelInfo& m : (*registry)->models()) {
    LogNote(absl::StrCat("model ", m.name, (m.is_default ? " (default)" : ""),
                         (m.is_demo ? " [demo: random weights]" : ""), ": ", m.architecture, " ",
                         m.resolution, "x", m.resolution, ", ", m.num_layers, " layers, ", m.source,
                         ", ", m.fingerprint));
  }
  MetricsRegistry metrics;
  metrics.AddGauge("i2s_build_info", "Version of this server (always 1).", {"version"}, [] {
    return std::vector<std::pair<MetricsRegistry::Labels, double>>{{{I2S_VERSION}, 1}};
  });
  metrics.AddGauge(
      "i2s_process_resident_memory_bytes", "Resident memory of the server process.", {}, [] {
        return std::vector<std::pair<MetricsRegistry::Labels, double>>{{{}, ResidentBytes()}};
      });
  auto scheduler = Scheduler::Create(f.scheduler, registry->get(), store, &metrics);
  if (!scheduler.ok()) {
    return Fail(absl::StrCat("resuming the jobs stored in ", store_where, ": ",
                             scheduler.status().message()));
  }
  if (int q = (*scheduler)->queued(); q > 0) {
    LogNote(absl::StrCat("resumed ", q, " unfinished job(s) from the store"));
  }

  // The face detector for AUTO alignment. Flags that ask for one fail the start when it
  // cannot be loaded; the default cascade folder missing only turns AUTO off.
  std::unique_ptr<FaceDetector> face_detector;
  if (!f.no_face_detector) {
    FaceDetectorOptions fo;
    fo.cascade_dir = f.face_cascades;
    fo.landmark_model = f.landmark_model;
    auto created = FaceDetector::Create(fo);
    if (created.ok()) {
      face_detector = *std::move(created);
      LogNote(absl::StrCat("face detector: ", face_detector->description()));
    } else if (cascades_flag->count() > 0 || !f.landmark_model.empty() ||
               !absl::IsNotFound(created.status())) {
      return Fail(std::string(created.status().message()));
    } else {
      LogNote(
          absl::StrCat("no face detector (automatic alignment off): ", created.status().message()));
    }
  }
  f.limits.connections = f.connections;
  Service service(registry->get(), scheduler->get(), store, f.limits, I2S_VERSION,
                  face_detector.get(), auth.get());
  service.RegisterMetrics(&metrics);
  // grpc.health.v1, served by HealthService (bounded Watch streams), not gRPC's default.
  grpc::EnableDefaultHealthCheckService(false);
  HealthService health({"i2s.v1.ImageToStyleGan"}, f.connections.max_health_watchers);
  if (!f.no_reflection) grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(f.address, *credentials, &port);
  int local_port = 0;
  if (!f.local_address.empty()) {
    if (!IsLoopback(f.local_address)) {
      return Fail(absl::StrCat("--local-address ", f.local_address,
                               ": must be a loopback address (127.x.x.x, ::1, localhost)"));
    }
    builder.AddListeningPort(f.local_address, grpc::InsecureServerCredentials(), &local_port);
  }
  ApplyConnectionOptions(f.connections, &builder);
  // Every message is read whole before its call's token is checked, so what a caller
  // without a token can make the server hold is the receive limit: only what the largest
  // request needs (an image of --max-image-bytes and its options), not --max-message-bytes.
  builder.SetMaxReceiveMessageSize(static_cast<int>(f.limits.max_receive_message_bytes()));
  builder.SetMaxSendMessageSize(static_cast<int>(f.limits.max_message_bytes));
  builder.RegisterService(&service);
  builder.RegisterService(&health);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<RpcMetricsFactory>(
      &metrics, RpcMetricsFactory::KnownMethods(/*reflection=*/!f.no_reflection)));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0)
    return Fail(absl::StrCat("--address ", f.address, ": cannot listen"));
  if (!f.local_address.empty() && local_port == 0) {
    server->Shutdown();
    return Fail(absl::StrCat("--local-address ", f.local_address, ": cannot listen"));
  }
  if (local_port != 0) LogNote(absl::StrCat("local plaintext listener on port ", local_port));
  health.SetServing(true);
  LogNote(absl::StrCat("serving on port ", port, " (",
                       (f.tls_cert.empty()        ? "plaintext"
                        : f.tls_client_ca.empty() ? "TLS"
                                                  : "mutual TLS"),
                       ", ", (auth ? "bearer tokens" : "no authentication"), "; data in ",
                       store_where, ")"));
  std::unique_ptr<MetricsHttpServer> metrics_http;
  if (!f.metrics_address.empty()) {
    std::string token;
    if (!f.metrics_token_file.empty()) {
      auto read = ReadMetricsToken(f.metrics_token_file);
      if (!read.ok()) {
        server->Shutdown();
        return Fail(std::string(read.status().message()));
      }
      token = *std::move(read);
    }
    auto started = MetricsHttpServer::Start(f.metrics_address, &metrics, token);
    if (!started.ok()) {
      server->Shutdown();
      return Fail(std::string(started.status().message()));
    }
    metrics_http = *std::move(started);
    const std::string host = f.metrics_address.substr(0, f.metrics_address.rfind(':'));
    LogNote(absl::StrCat("metrics on http://", host.empty() ? "0.0.0.0" : host, ":",
                         metrics_http->port(), "/metrics"));
    if (!f.metrics_port_file.empty()) {
      WriteFileAtomically(f.metrics_port_file, absl::StrCat(metrics_http->port(), "\n"));
    }
  }
  if (!f.port_file.empty()) WriteFileAtomically(f.port_file, absl::StrCat(port, "\n"));

  int sig = 0;
  while (true) {
    sig = (*signals)->Next();
    if (sig != SIGHUP) break;
    if (!auth) {
      LogNote(absl::StrCat("SIGHUP: nothing to reload (no --auth-tokens)"));
      continue;
    }
    absl::Status reloaded = auth->Reload();
    if (reloaded.ok()) {
      LogNote(absl::StrCat("SIGHUP: reloaded ", auth->token_count(), " token(s)"));
    } else {
      LogNote(absl::StrCat("SIGHUP: not reloaded (", reloaded.message(),
                           "); keeping the previous tokens"));
    }
  }
  LogNote(absl::StrCat(SignalName(sig),
                       ": shutting down (running jobs checkpoint and resume on the next start)"));
  // A second SIGINT or SIGTERM during the shutdown cuts the grace period for in-flight
  // calls short, never the checkpoints: the process exits with kExitCutShort as soon as
  // the scheduler has stored them (at once if it has). SIGHUP is ignored from here on.
  std::mutex cut_mu;
  bool cut_short = false, checkpointed = false;  // under cut_mu
  std::atomic<bool> stopped{false};
  auto exit_cut_short = [] {
    LogNote("checkpoints stored; exiting without waiting for in-flight calls");
    std::fflush(nullptr);
    _exit(kExitCutShort);
  };
  std::thread second_signal([&] {
    while (!stopped.load()) {
      std::optional<int> again = (*signals)->NextFor(absl::Milliseconds(100));
      if (!again || *again == SIGHUP) continue;
      LogNote(absl::StrCat(SignalName(*again), " again: exiting with code ", kExitCutShort,
                           " once running jobs are checkpointed (in-flight calls are cut)"));
      std::lock_guard<std::mutex> lock(cut_mu);
      cut_short = true;
      if (checkpointed) exit_cut_short();  // main is waiting for in-flight calls
      return;                              // main exits after the checkpoints
    }
  });
  auto t0 = std::chrono::steady_clock::now();
  health.SetServing(false);
  service.StopAccepting();
  (*scheduler)->Shutdown();
  {
    std::lock_guard<std::mutex> lock(cut_mu);
    checkpointed = true;
    if (cut_short) exit_cut_short();
  }
  health.Shutdown();  // open Watch streams end now, not at the grace deadline
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(f.shutdown_grace * 1000)));
  server->Wait();
  metrics_http.reset();  // civetweb's stop waits for its workers (at most the 3 s timeout)
  LogNote(absl::StrCat("stopped in ",
                       std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                       " s"));
  stopped.store(true);
  second_signal.join();
  // A second signal that arrived while the shutdown was finishing, before the watcher
  // thread read it, still means "cut short": the same exit code, whichever thread won.
  while (std::optional<int> again = (*signals)->NextFor(absl::ZeroDuration())) {
    if (*again == SIGHUP) continue;
    LogNote(absl::StrCat(SignalName(*again), " again: exiting with code ", kExitCutShort));
    return kExitCutShort;
  }
  return 0;
}

}  // namespace
}  // namespace i2s

int main(int argc, char** argv) {
  i2s::KeepLargeBlocksInTheHeap();
  return i2s::Main(argc, argv);
}

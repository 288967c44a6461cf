#include "server/app/flags.h"

#include <torch/torch.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "server/engine/torch_util.h"

namespace i2s {
namespace {

// The default --replica-id: unique per pod (Kubernetes) and per container (Docker).
std::string HostName() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "i2s";
  return name;
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

}  // namespace

StorageQuota DefaultQuota() {
  StorageQuota q;
  q.max_latents = 10000;
  q.max_directions = 1000;
  q.max_latent_bytes = int64_t{2} << 30;
  q.max_jobs = 1000;
  q.max_job_bytes = int64_t{2} << 30;
  return q;
}

std::optional<int> ParseFlags(int argc, char** argv, Flags* flags) {
  Flags& f = *flags;
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
  app.add_option("--mtcnn", f.mtcnn,
                 "folder with MTCNN's trained pnet.pt, rnet.pt, onet.pt (scripts/fetch-models): "
                 "AUTO alignment finds faces and landmarks with MTCNN instead of the cascades; "
                 "auto = $I2S_MTCNN_DIR, else /usr/share/i2s/mtcnn if it is there (unless "
                 "--face-cascades or --landmark-model is given); none = the cascades")
      ->capture_default_str();
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
  app.add_option("--tenant-max-directions", f.quota.max_directions,
                 "semantic directions one tenant may keep, every model's (0 = no limit)")
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
  f.face_cascades_given = cascades_flag->count() > 0;
  return std::nullopt;
}

absl::StatusOr<RegistryOptions> RegistryOptionsOf(const Flags& f) {
  RegistryOptions ro;
  ro.vgg_path = f.vgg;
  ro.lpips_path = f.lpips;
  for (const std::string& m : f.models) {
    auto eq = m.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == m.size()) {
      return absl::InvalidArgumentError(absl::StrCat("--model ", m, ": expected NAME=PATH"));
    }
    ModelSource s;
    s.name = m.substr(0, eq);
    s.path = m.substr(eq + 1);
    ro.models.push_back(s);
  }
  if (f.demo_model) {  // after the real models, which stay the default
    ModelSource s;
    s.name = "demo";
    s.demo = true;
    s.demo_arch =
        f.demo_arch == "stylegan2" ? GeneratorArch::kStyleGan2 : GeneratorArch::kStyleGan1;
    s.demo_resolution = f.demo_resolution;
    s.demo_fmap_base = f.demo_fmap_base;
    ro.models.push_back(s);
  }
  if (ro.models.empty()) {
    return absl::InvalidArgumentError(
        "no model: give --model NAME=PATH (and --vgg) or --demo-model");
  }
  ASSIGN_OR_RETURN(ro.devices, ParseDevices(f.devices));
  return ro;
}

SchedulerOptions SchedulerOptionsOf(const Flags& f) {
  SchedulerOptions s = f.scheduler;
  s.lease_ms = static_cast<int>(f.lease_seconds * 1000);
  s.job_retention_ms = static_cast<int64_t>(f.job_retention_hours * 3600 * 1000);
  s.request_id_retention_ms = static_cast<int64_t>(f.request_id_retention_hours * 3600 * 1000);
  return s;
}

ServiceLimits ServiceLimitsOf(const Flags& f) {
  ServiceLimits limits = f.limits;
  limits.connections = f.connections;
  return limits;
}

}  // namespace i2s

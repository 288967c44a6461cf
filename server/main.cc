// i2s_server: the gRPC service. Loads the models, opens the store, resumes unfinished
// jobs, serves until SIGTERM/SIGINT, then shuts down gracefully (health NOT_SERVING,
// new work refused, running jobs checkpointed, streams ended with a status) within
// --shutdown-grace seconds.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <pthread.h>
#include <signal.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/api/service.h"
#include "server/base/status_macros.h"
#include "server/engine/torch_util.h"
#include "server/jobs/model_registry.h"
#include "server/jobs/scheduler.h"
#include "server/store/sqlite_store.h"

#ifndef I2S_VERSION
#define I2S_VERSION "dev"
#endif

namespace i2s {
namespace {

struct Flags {
  std::string address = "0.0.0.0:50051";
  std::string port_file;
  std::string data_dir = "i2s-data";
  std::vector<std::string> models;
  std::string vgg;
  bool demo_model = false;
  int demo_resolution = 256, demo_fmap_base = 2048;
  std::string devices = "auto";
  int threads = 0;
  SchedulerOptions scheduler;
  ServiceLimits limits;
  double shutdown_grace = 20;
  std::string face_cascades = FaceDetectorOptions().cascade_dir;
  std::string landmark_model;
  bool no_face_detector = false;
};

int Fail(const std::string& what) {
  std::cerr << "i2s_server: " << what << "\n";
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
  app.add_option("--model", f.models,
                 "NAME=PATH of a StyleGAN1 weight file (repeatable; the first is the default)");
  app.add_option("--vgg", f.vgg, "torchvision VGG16 weights for the perceptual loss");
  app.add_flag(
      "--demo-model", f.demo_model,
      "serve the seeded random demo model 'demo' (not a trained network; no weight files needed)");
  app.add_option("--demo-resolution", f.demo_resolution, "demo model resolution")
      ->capture_default_str();
  app.add_option("--demo-fmap-base", f.demo_fmap_base, "demo model feature-map base")
      ->capture_default_str();
  app.add_option("--devices", f.devices, "comma-separated: auto, cpu, cuda, cuda:N")
      ->capture_default_str();
  app.add_option("--threads", f.threads, "CPU threads for LibTorch (0 = its default)");
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
  app.add_option("--max-message-bytes", f.limits.max_message_bytes, "gRPC receive limit")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1} << 16, int64_t{1} << 31));
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
  app.add_option("--shutdown-grace", f.shutdown_grace,
                 "seconds to finish in-flight calls on SIGTERM")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 3600.0));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  // Signals are taken by sigwait below: block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  if (f.threads > 0) torch::set_num_threads(f.threads);
  RegistryOptions ro;
  ro.vgg_path = f.vgg;
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

  std::error_code ec;
  std::filesystem::create_directories(f.data_dir, ec);
  if (ec) return Fail(absl::StrCat("--data-dir ", f.data_dir, ": ", ec.message()));
  auto store = SqliteStore::Open((std::filesystem::path(f.data_dir) / "i2s.sqlite").string());
  if (!store.ok()) return Fail(absl::StrCat("--data-dir: ", store.status().message()));

  std::cerr << "i2s_server: loading " << ro.models.size() << " model(s) on " << f.devices << "\n";
  auto registry = ModelRegistry::Create(ro);
  if (!registry.ok()) return Fail(std::string(registry.status().message()));
  for (const ModelInfo& m : (*registry)->models()) {
    std::cerr << "i2s_server: model " << m.name << (m.is_default ? " (default)" : "")
              << (m.is_demo ? " [demo: random weights]" : "") << ": " << m.resolution << "x"
              << m.resolution << ", " << m.num_layers << " layers, " << m.fingerprint << "\n";
  }
  auto scheduler = Scheduler::Create(f.scheduler, registry->get(), store->get());
  if (!scheduler.ok()) return Fail(std::string(scheduler.status().message()));
  if (int q = (*scheduler)->queued(); q > 0) {
    std::cerr << "i2s_server: resumed " << q << " unfinished job(s) from the store\n";
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
      std::cerr << "i2s_server: face detector: " << face_detector->description() << "\n";
    } else if (cascades_flag->count() > 0 || !f.landmark_model.empty() ||
               !absl::IsNotFound(created.status())) {
      return Fail(std::string(created.status().message()));
    } else {
      std::cerr << "i2s_server: no face detector (automatic alignment off): "
                << created.status().message() << "\n";
    }
  }
  Service service(registry->get(), scheduler->get(), store->get(), f.limits, I2S_VERSION,
                  face_detector.get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(f.address, grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(f.limits.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(f.limits.max_message_bytes));
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0)
    return Fail(absl::StrCat("--address ", f.address, ": cannot listen"));
  server->GetHealthCheckService()->SetServingStatus(true);
  std::cerr << "i2s_server: serving on port " << port << " (data in " << f.data_dir << ")\n";
  if (!f.port_file.empty()) {
    std::string tmp = f.port_file + ".tmp";
    { std::ofstream(tmp) << port << "\n"; }
    std::filesystem::rename(tmp, f.port_file, ec);
  }

  int sig = 0;
  sigwait(&signals, &sig);
  std::cerr << "i2s_server: " << (sig == SIGTERM ? "SIGTERM" : "SIGINT")
            << ": shutting down (running jobs checkpoint and resume on the next start)\n";
  auto t0 = std::chrono::steady_clock::now();
  server->GetHealthCheckService()->SetServingStatus(false);
  service.StopAccepting();
  (*scheduler)->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(f.shutdown_grace * 1000)));
  server->Wait();
  std::cerr << "i2s_server: stopped in "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()
            << " s\n";
  return 0;
}

}  // namespace
}  // namespace i2s

int main(int argc, char** argv) { return i2s::Main(argc, argv); }

// i2s_server's command line: every flag's definition, default and range (CLI11), and the
// checks and conversions that turn the flags into the options of the parts main wires
// (the model registry, the scheduler, the service).
#ifndef I2S_SERVER_APP_FLAGS_H_
#define I2S_SERVER_APP_FLAGS_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/api/connection_options.h"
#include "server/api/service.h"
#include "server/imaging/align.h"
#include "server/jobs/model_registry.h"
#include "server/jobs/scheduler.h"
#include "server/store/store.h"

namespace i2s {

// What one tenant may keep by default (docs/OPERATIONS.md, Disk, gives the arithmetic).
StorageQuota DefaultQuota();

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
  SchedulerOptions scheduler;  // replica_id defaults to the host name
  StorageQuota quota = DefaultQuota();
  double job_retention_hours = 168, request_id_retention_hours = 168;
  ServiceLimits limits;
  ConnectionOptions connections;
  double shutdown_grace = 20;
  std::string face_cascades = FaceDetectorOptions().cascade_dir;
  bool face_cascades_given = false;  // --face-cascades was on the command line
  std::string landmark_model;
  std::string mtcnn = "auto";  // folder with MTCNN's pnet.pt, rnet.pt, onet.pt; auto; none
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

// Parses the command line into `flags`. Returns the exit code when the process should
// stop here (--help, a flag CLI11 refuses: its message is printed), nothing otherwise.
std::optional<int> ParseFlags(int argc, char** argv, Flags* flags);

// --model, --demo-* and --devices (checked against the CUDA devices LibTorch sees), --vgg
// and --lpips: InvalidArgument naming the flag.
absl::StatusOr<RegistryOptions> RegistryOptionsOf(const Flags& flags);

// The scheduler flags with the leases and retention periods in milliseconds.
SchedulerOptions SchedulerOptionsOf(const Flags& flags);

// The service's limits with the connection options in force (for ServerInfo).
ServiceLimits ServiceLimitsOf(const Flags& flags);

}  // namespace i2s

#endif  // I2S_SERVER_APP_FLAGS_H_

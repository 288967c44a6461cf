// What an embedding job is made of: its inputs (EmbedJobSpec), the events it emits, and
// the byte formats in which its spec and checkpoints are persisted by the JobStore.
// Plain values; no threads.
#ifndef I2S_SERVER_JOBS_JOB_H_
#define I2S_SERVER_JOBS_JOB_H_

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/engine/embedder.h"
#include "server/store/store.h"

namespace i2s {

struct EmbedJobSpec {
  std::string model;          // a name the ModelRegistry knows
  torch::Tensor image;        // [3, R, R] in [0, 1] at the model's resolution, CPU float32
  torch::Tensor init_latent;  // [L, D] for LatentInit::kGiven, else undefined
  EmbedOptions options;       // preview_every and checkpoint_every are the scheduler's
  uint64_t seed = 0;
  std::map<std::string, std::string> labels;  // copied to the resulting latent
  int preview_every = 0;                      // 0 = no previews
  bool return_reconstruction = false;
  // How `image` was made from the photo (AlignmentInfoToJson), when it was FFHQ-aligned;
  // copied to the succeeded event and the latent's params_json {"alignment": ...}.
  std::string alignment_json;
  bool return_aligned_image = false;  // the aligned image (PNG) in the succeeded event
  // Masked embedding (EmbedTarget's masks): [1, R, R] weights in [0, 1], or undefined;
  // and their record (a JSON object, copied to the latent's params_json {"masks": ...}).
  torch::Tensor mse_mask, perceptual_mask;
  std::string masks_json;
};

// Spec bytes: a zip of spec.json (options and scalars), image.npy, and where present
// init_latent.npy, mse_mask.npy and perceptual_mask.npy.
std::string SerializeSpec(const EmbedJobSpec& spec);
absl::StatusOr<EmbedJobSpec> ParseSpec(absl::string_view bytes);
// Checkpoint bytes: a zip of meta.json and the tensors as .npy members.
std::string SerializeCheckpoint(const EmbedCheckpoint& checkpoint);
absl::StatusOr<EmbedCheckpoint> ParseCheckpoint(absl::string_view bytes);
// The options as canonical JSON (what decides whether two jobs may share a batch).
std::string OptionsKey(const EmbedOptions& options);

struct JobEvent {
  enum class Kind { kQueued, kRunning, kProgress, kSucceeded, kFailed, kCancelled };
  std::string job_id;
  int64_t sequence = 0;
  int64_t time_unix_ms = 0;
  Kind kind = Kind::kQueued;
  int position = 0;           // kQueued
  std::string device;         // kRunning
  int resumed_from_step = 0;  // kRunning
  // kProgress
  int step = 0, total_steps = 0, batch_size = 0;
  bool noise_phase = false;
  LatentMetrics metrics;  // kProgress, kSucceeded
  double elapsed_seconds = 0, steps_per_second = 0, eta_seconds = 0;
  std::string preview_png;  // kProgress, may be empty
  // kSucceeded
  std::string latent_id, stop_reason, reconstruction_png;
  std::string alignment_json, aligned_png;  // EmbedJobSpec::alignment_json; the target
  absl::Status status;                      // kFailed, kCancelled

  bool terminal() const {
    return kind == Kind::kSucceeded || kind == Kind::kFailed || kind == Kind::kCancelled;
  }
};

}  // namespace i2s

#endif  // I2S_SERVER_JOBS_JOB_H_

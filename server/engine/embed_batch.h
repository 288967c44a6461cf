// Image2StyleGAN embedding (Abdal, Qin, Wonka, ICCV 2019; facts in
// shared/specs/stylegan1-and-vgg16.md): optimises the W+ (or W) latents of a batch of
// independent images so the generator reproduces them, with
//   loss_i = w_mse * MSE(G(w_i), x_i) + w_perc * sum_l MSE(VGG_l(down(G(w_i))), VGG_l(down(x_i)))
//            + w_lpips * LPIPS(area(G(w_i)), area(x_i))
// and Adam with per-image state, either at a constant rate (Image2StyleGAN) or on the
// StyleGAN2 projector's schedule (embed_schedule.h: ramped rate, noise on w, the noise maps
// optimised with w and regularised). The batch loss is the *sum* of the per-image losses and
// every network op is per-sample, so an image's gradient, and hence its trajectory, does
// not depend on which other images share the batch (up to float reassociation).
// Optional second phase (Image2StyleGAN++): optimise the per-layer noise maps with W+
// fixed. Optional masks restrict the pixel and perceptual terms (inpainting, local edits).
//
// EmbedBatch is that loop, one step at a time, for a changing set of images (continuous
// batching); embedder.h drives it for a fixed set.
#ifndef I2S_SERVER_ENGINE_EMBED_BATCH_H_
#define I2S_SERVER_ENGINE_EMBED_BATCH_H_

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/engine/embed_options.h"
#include "server/engine/generator.h"
#include "server/engine/lpips.h"
#include "server/engine/vgg16.h"

namespace i2s {

// One image to embed.
struct EmbedTarget {
  torch::Tensor image;            // [3, R, R] RGB in [0, 1], R = generator resolution
  torch::Tensor mse_mask;         // optional [1, R, R] weights in [0, 1] for the pixel term
  torch::Tensor perceptual_mask;  // optional [1, R, R] for the perceptual term
  torch::Tensor init_latent;      // [L, D], required for LatentInit::kGiven
  uint64_t seed = 0;              // noise maps and uniform init
  // This image's own options (steps, learning rates, loss weights, stop rules, cadences,
  // init); absent: the batch's. What SharedOptionsKey covers must be the batch's.
  std::optional<EmbedOptions> options;
};

// Everything needed to continue an image's optimisation exactly where it stopped.
struct EmbedCheckpoint {
  int step = 0;                                 // steps done so far (both phases)
  torch::Tensor latent;                         // [L, D] (or [1, D] in W space)
  torch::Tensor adam_m, adam_v;                 // Adam moments of the latent
  std::vector<torch::Tensor> noise;             // [1, 1, H, W] per layer
  std::vector<torch::Tensor> noise_m, noise_v;  // Adam moments of the noise (phase 2)
  double best_loss = 0;                         // plateau bookkeeping
  int best_step = 0;
};

struct StepMetrics {
  int image = 0;  // index into the targets
  int step = 0;   // 1-based, counted over both phases
  bool noise_phase = false;
  double loss = 0, mse = 0, perceptual = 0, psnr = 0;
  double lpips = -1;  // when the LPIPS term is in this step's loss (else -1)
};

enum class StopReason { kSteps, kTargetPsnr, kPlateau, kCancelled, kFailed };
const char* StopReasonName(StopReason reason);

struct EmbedResult {
  absl::Status status;  // not OK for kFailed (NaN/Inf) and kCancelled
  StopReason reason = StopReason::kSteps;
  torch::Tensor latent;              // [L, D] W+ (W is expanded to all rows), CPU
  std::vector<torch::Tensor> noise;  // [1, 1, H, W] per layer, CPU
  StepMetrics final;                 // metrics of the last step taken
  int steps = 0;
  // Of the latent returned (rendered with its noise maps, over the masks), measured when
  // the batch has an Lpips; -1 otherwise.
  double result_psnr = -1, result_lpips = -1;
};

struct EmbedCallbacks {
  // After each step, the metrics of every image still running (one host sync per step).
  std::function<void(const std::vector<StepMetrics>& metrics, double step_seconds)> on_step;
  // Every preview_every steps: the current rendering, [3, R, R] clamped to [0, 1].
  std::function<void(int image, int step, const torch::Tensor& rgb01)> on_preview;
  std::function<void(int image, const EmbedCheckpoint& checkpoint)> on_checkpoint;
  std::function<bool()> cancelled;  // polled before every step
};

// Continuous batching: a set of independent images optimised together, one Adam step
// at a time. Images join (Add) and leave (Take, Cancel) between steps, so a scheduler can
// keep a device busy with jobs that arrive and finish at different times; each image's
// trajectory is the same whatever else shares its steps (see the file comment). Every
// image in a batch uses the batch's EmbedOptions.
//
// Borrows the generator and VGG (they must outlive it); not thread-safe (one owner, the
// device's worker thread).
class EmbedBatch {
 public:
  // InvalidArgument for bad options.
  // `vgg` is needed by the perceptual term, `lpips` by the LPIPS term; with an `lpips`,
  // every result also reports its LPIPS (EmbedResult::result_lpips).
  static absl::StatusOr<std::unique_ptr<EmbedBatch>> Create(Generator* generator,
                                                            Vgg16Extractor* vgg,
                                                            const EmbedOptions& options,
                                                            Lpips* lpips = nullptr);
  ~EmbedBatch();

  // Adds an image (resumed from `resume` if given) and returns its handle, unique within
  // the batch. InvalidArgument naming `name` and the field for bad inputs. An image whose
  // checkpoint already covers every step is done at once.
  absl::StatusOr<int> Add(const EmbedTarget& target,
                          const std::optional<EmbedCheckpoint>& resume = std::nullopt,
                          const std::string& name = "target");

  // One optimiser step for every running image. Callbacks see handles as `image`;
  // `cancelled` is not used (call Cancel). Appends the metrics of the images stepped.
  // An error here is the device's (Internal), not an image's.
  absl::Status Step(const EmbedCallbacks& callbacks, std::vector<StepMetrics>* metrics);

  // Stops a running image now: its result gets reason kCancelled and `why`.
  void Cancel(int handle, const absl::Status& why);
  // The state to resume a running or done image from (CPU tensors).
  absl::StatusOr<EmbedCheckpoint> Checkpoint(int handle) const;
  // Removes a finished image and returns its result: FailedPrecondition while it runs,
  // NotFound for an unknown handle.
  absl::StatusOr<EmbedResult> Take(int handle);

  int step(int handle) const;  // steps done by an image (-1 for an unknown handle)
  int num_running() const;
  bool empty() const;                 // no image at all (running or untaken)
  std::vector<int> Finished() const;  // handles done and not yet taken
  const EmbedOptions& options() const { return options_; }

 private:
  struct ImageState;
  EmbedBatch(Generator* generator, Vgg16Extractor* vgg, Lpips* lpips, EmbedOptions options);
  absl::Status Prepare(const EmbedTarget& target, const std::optional<EmbedCheckpoint>& resume,
                       const std::string& name, ImageState* state);
  absl::Status StepGroup(std::vector<ImageState*>& group, bool noise_phase,
                         const EmbedCallbacks& callbacks, std::vector<StepMetrics>* metrics);
  torch::Tensor Downsample(const torch::Tensor& images) const;
  torch::Tensor Perceptual(const Vgg16Features& a, const Vgg16Features& b) const;

  absl::Status MeasureResult(const ImageState& s, EmbedResult* r) const;

  Generator* generator_;
  Vgg16Extractor* vgg_;
  Lpips* lpips_;
  EmbedOptions options_;
  int next_handle_ = 0;
  std::map<int, std::unique_ptr<ImageState>> images_;  // by handle = join order
};

}  // namespace i2s

#endif  // I2S_SERVER_ENGINE_EMBED_BATCH_H_

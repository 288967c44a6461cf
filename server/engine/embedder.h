// Embeds a fixed set of images to the end (Image2StyleGAN and the StyleGAN2 projector;
// the loop itself is EmbedBatch, embed_batch.h), and the mapping network's statistics the
// recipes start from (mean w, its spread). An Embedder borrows the generator and the loss
// networks (it does not own them) and is not thread-safe: one Run at a time, on the
// generator's device.
#ifndef I2S_SERVER_ENGINE_EMBEDDER_H_
#define I2S_SERVER_ENGINE_EMBEDDER_H_

#include <torch/torch.h>

#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/embed_batch.h"
#include "server/engine/embed_options.h"

namespace i2s {

// Embeds a fixed set of images as one batch, to the end (an EmbedBatch driven in a loop).
class Embedder {
 public:
  Embedder(Generator* generator, Vgg16Extractor* vgg, EmbedOptions options, Lpips* lpips = nullptr);

  // Embeds the targets as one batch. `resume`, if given, has one optional checkpoint per
  // target. Returns InvalidArgument for bad inputs (naming the target and field); per
  // image failures are reported in that image's EmbedResult.
  absl::StatusOr<std::vector<EmbedResult>> Run(
      const std::vector<EmbedTarget>& targets, const EmbedCallbacks& callbacks = {},
      const std::vector<std::optional<EmbedCheckpoint>>& resume = {});

  // Mean of the mapping network's output over `samples` seeded z, cached per fingerprint.
  static absl::StatusOr<torch::Tensor> MeanW(Generator& generator, int samples);
  // sqrt(sum over samples and dimensions of (w - mean w)^2 / samples): the projector's
  // sigma_w, over the same seeded z as MeanW, cached likewise.
  static absl::StatusOr<double> SigmaW(Generator& generator, int samples);

  // The statistics behind MeanW and SigmaW, so a file can keep them across processes
  // (server/engine/mapping_stats_file.h): what this process has for the generator's
  // fingerprint and `samples`, if anything, and a value to use from now on.
  struct MappingStats {
    torch::Tensor mean;  // [latent] float32, CPU
    double sigma = 0;
  };
  static std::optional<MappingStats> KnownMappingStats(const Generator& generator, int samples);
  static void RememberMappingStats(const Generator& generator, int samples, MappingStats stats);

 private:
  Generator* generator_;
  Vgg16Extractor* vgg_;
  Lpips* lpips_;
  EmbedOptions options_;
};

}  // namespace i2s

#endif  // I2S_SERVER_ENGINE_EMBEDDER_H_

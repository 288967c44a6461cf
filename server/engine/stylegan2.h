// StyleGAN2 generator (the `skip` architecture of configs E and F) in LibTorch. Its
// canonical weight layout is rosinality's `g_ema` state dict (the PyTorch port most
// checkpoints circulate in); NVIDIA's stylegan2-ada-pytorch names are mapped onto it by
// the loader (stylegan2_files.h). Facts: shared/specs/stylegan2.md. Any power-of-two
// resolution from 8 to 1024, any channel counts, latent size and mapping depth, inferred
// from the weights, so tests run tiny models.
//
// The equalised-learning-rate scales are folded into the weights once at load, so a
// forward pass does no weight arithmetic beyond the modulation itself.
// Thread-compatible; see Generator.
#ifndef I2S_SERVER_ENGINE_STYLEGAN2_H_
#define I2S_SERVER_ENGINE_STYLEGAN2_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/generator.h"
#include "server/engine/weights.h"

namespace i2s {

struct StyleGan2Config {
  int resolution = 1024;
  int latent_size = 512;
  int mapping_layers = 8;
  // Feature maps of the block at resolution 4 << i (i = 0 .. log2(resolution) - 2).
  std::vector<int64_t> channels;
  // NVIDIA's synthesis_kwargs.conv_clamp: activations clamped to +-conv_clamp after each
  // convolution's activation (and in ToRGB); 0 = none (rosinality files have none).
  double conv_clamp = 0;

  int num_layers() const;      // W+ rows: 2 * log2(resolution) - 2
  int num_noise_maps() const;  // one per convolution: 2 * log2(resolution) - 3
  // rosinality's channel table: 512 up to 32x32, then {64: 256, 128: 128, 256: 64,
  // 512: 32, 1024: 16} * channel_multiplier (the published config-f is multiplier 2).
  // `divisor` shrinks every count (at least 1) for tiny test models.
  static StyleGan2Config Rosinality(int resolution, int channel_multiplier = 2,
                                    int latent_size = 512, int mapping_layers = 8, int divisor = 1);
  absl::Status Validate() const;
};

// Infers the configuration from a rosinality state dict's keys and shapes.
absl::StatusOr<StyleGan2Config> InferStyleGan2Config(const StateDict& weights);

// Key and shape of every tensor of rosinality's `g_ema` state dict for `config`, in the
// order rosinality registers them.
std::vector<std::pair<std::string, std::vector<int64_t>>> StyleGan2Keys(
    const StyleGan2Config& config);

// The fixed 4x4 resampling kernel rosinality stores as `*.blur.kernel` and
// `*.upsample.kernel`: outer([1, 3, 3, 1]) / 64 * 4 (the x4 keeps the mean through the
// 2x upsampling).
torch::Tensor StyleGan2ResampleKernel();

// Random weights in rosinality's layout (deterministic for a seed), for tests and the
// built-in demo model. Like rosinality's initialisation, except that biases and noise
// strengths are non-zero (every path of the network matters), and ToRGB is scaled down
// so images mostly stay in [-1, 1] like a trained model's.
StateDict RandomStyleGan2Weights(const StyleGan2Config& config, uint64_t seed);

// How a modulated convolution runs for a batch (spec section 3).
enum class ModulatedConv {
  // One convolution with the shared weight: x * s -> conv -> * dcoef[b, o] (NVIDIA's
  // fused_modconv=False). No per-sample weights are built.
  kShared,
  // Per-sample weights W * s / demod, run as one grouped convolution (groups = batch),
  // as rosinality's port does.
  kGrouped,
};
const char* ModulatedConvName(ModulatedConv m);

struct StyleGan2Options {
  ModulatedConv modconv = ModulatedConv::kShared;
};

class StyleGan2Generator : public Generator {
 public:
  // Validates every key and shape of a rosinality `g_ema` state dict (errors name the
  // key) and builds on `device`. `mean_w`: the file's `latent_avg` / `w_avg` [latent], or
  // undefined. The fingerprint is WeightsFingerprint of `weights` (the canonical form),
  // with the clamp as one more entry when conv_clamp > 0 (it changes the images).
  static absl::StatusOr<std::unique_ptr<StyleGan2Generator>> Create(
      const StateDict& weights, const torch::Tensor& mean_w, double conv_clamp,
      torch::Device device, const StyleGan2Options& options = {});

  int resolution() const override { return config_.resolution; }
  int num_layers() const override { return config_.num_layers(); }
  int latent_size() const override { return config_.latent_size; }
  const char* architecture() const override { return "stylegan2"; }
  int mapping_layers() const override { return config_.mapping_layers; }
  std::vector<int64_t> channels() const override { return config_.channels; }
  double conv_clamp() const override { return config_.conv_clamp; }
  const std::string& fingerprint() const override { return fingerprint_; }
  torch::Device device() const override { return device_; }
  int num_noise_maps() const override { return config_.num_noise_maps(); }
  int NoiseResolution(int i) const override { return 4 << ((i + 1) / 2); }
  std::vector<torch::Tensor> ConstantNoise() const override { return const_noise_; }
  torch::Tensor FileMeanW() const override { return mean_w_; }
  const StyleGan2Config& config() const { return config_; }
  const StyleGan2Options& options() const { return options_; }

  torch::Tensor Forward(const torch::Tensor& wplus,
                        const std::vector<torch::Tensor>& noise) override;
  torch::Tensor ForwardMapping(const torch::Tensor& z) override;
  torch::Tensor ForwardBlend(const torch::Tensor& wa, const torch::Tensor& wb,
                             const std::vector<torch::Tensor>& noise, int start_layer,
                             const torch::Tensor& mask) override;
  int LayerBlock(int layer) const override;

 private:
  // A modulated convolution with its noise and activation (rosinality's StyledConv), or
  // a ToRGB (no demodulation, no noise, no activation).
  struct Layer {
    torch::Tensor weight;          // [out, in, k, k] * 1 / sqrt(in * k^2)
    torch::Tensor weight_sq;       // [out, in]: sum over the kernel of weight^2 (demodulation)
    torch::Tensor mod_weight;      // [in, latent] / sqrt(latent)
    torch::Tensor mod_bias;        // [in]
    torch::Tensor noise_strength;  // [] (convolutions only)
    torch::Tensor bias;            // [1, out, 1, 1]
    bool upsample = false;
    bool demodulate = true;
  };

  // What a synthesis block hands on: its feature maps and the skip image so far.
  struct BlockOut {
    torch::Tensor x;
    torch::Tensor skip;
  };

  StyleGan2Generator(StyleGan2Config config, StyleGan2Options options, torch::Device device,
                     std::string fingerprint)
      : config_(std::move(config)),
        options_(options),
        device_(device),
        fingerprint_(std::move(fingerprint)) {}

  absl::Status LoadLayer(WeightMap& m, const std::string& prefix, int64_t in, int64_t out, int k,
                         bool upsample, bool torgb, Layer* layer);
  // x [B, in, H, W] -> [B, out, H', W'] (before noise, bias and activation).
  torch::Tensor Modulated(const Layer& layer, const torch::Tensor& x, const torch::Tensor& w);
  torch::Tensor StyledConv(const Layer& layer, torch::Tensor x, const torch::Tensor& w,
                           const torch::Tensor* noise);
  torch::Tensor ToRgb(const Layer& layer, const torch::Tensor& x, const torch::Tensor& w,
                      const torch::Tensor& skip);
  // Block k (4 << k pixels square) on block k - 1's result (block 0 ignores `in`).
  BlockOut RunBlock(size_t k, const BlockOut& in, const torch::Tensor& wplus,
                    const std::vector<torch::Tensor>& noise);

  StyleGan2Config config_;
  StyleGan2Options options_;
  torch::Device device_;
  std::string fingerprint_;
  std::vector<torch::Tensor> mapping_weights_, mapping_biases_;  // scaled
  torch::Tensor const_input_;                                    // [1, C, 4, 4]
  std::vector<Layer> convs_;    // conv1, then convs.0 .. convs.{2n-1}
  std::vector<Layer> to_rgbs_;  // to_rgb1, then to_rgbs.0 .. to_rgbs.{n-1}
  torch::Tensor blur_;          // [1, 1, 4, 4]: the resampling kernel
  std::vector<torch::Tensor> const_noise_;
  torch::Tensor mean_w_;
};

}  // namespace i2s

#endif  // I2S_SERVER_ENGINE_STYLEGAN2_H_

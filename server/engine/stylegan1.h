// StyleGAN (v1) generator in LibTorch, in the key layout of the widely used PyTorch port
// of NVIDIA's FFHQ model (`karras2019stylegan-ffhq-1024x1024.for_g_all.pt`); facts in
// shared/specs/stylegan1-and-vgg16.md. Any power-of-two resolution from 8 to 1024 and
// any channel counts, inferred from the weights, so tests run tiny models.
//
// Equalized-learning-rate multipliers are folded into the weights once at load
// (w * w_mul), and the upsampling convolutions' kernels are precomputed, so a forward
// pass does no weight arithmetic. Thread-compatible; see Generator.
#ifndef I2S_SERVER_ENGINE_STYLEGAN1_H_
#define I2S_SERVER_ENGINE_STYLEGAN1_H_

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/generator.h"
#include "server/engine/weights.h"

namespace i2s {

struct StyleGan1Config {
  int resolution = 1024;
  int latent_size = 512;
  int mapping_layers = 8;
  // Feature maps of the block at resolution 4 << i (i = 0 .. log2(resolution) - 2).
  std::vector<int64_t> channels;

  int num_layers() const;
  // The published rule nf(stage) = min(fmap_base / 2^stage, fmap_max).
  static StyleGan1Config FromFmap(int resolution, int fmap_base, int fmap_max = 512);
  absl::Status Validate() const;
};

// Infers the configuration from a state dict's keys and shapes.
absl::StatusOr<StyleGan1Config> InferStyleGan1Config(const StateDict& weights);

// Random weights in the port's layout (deterministic for a seed), for tests and the
// built-in demo model. Raw (unscaled) values like the port's initialisation, except
// that biases and noise strengths are non-zero so every path of the network matters, and
// toRGB is scaled down so images mostly stay in [-1, 1] like a trained model's.
StateDict RandomStyleGan1Weights(const StyleGan1Config& config, uint64_t seed);

// Key and shape of every tensor the port's file has for `config`, in file order.
std::vector<std::pair<std::string, std::vector<int64_t>>> StyleGan1Keys(
    const StyleGan1Config& config);

// How the synthesis network computes its upsampling convolutions (nearest 2x upsampling
// then a 3x3 convolution below 128x128; the stride-2 transposed convolution with the
// 4x4 "fused" kernel from 128 up).
enum class UpsampleConv {
  // Both are, per output pixel (2i + a, 2j + b), a 2x2 convolution of the input pixels
  // (i - 1 + a .. i + a, j - 1 + b .. j + b) with a kernel that depends on the phase
  // (a, b). So they run as one 2x2 convolution with 4x the output channels, whose four
  // channel blocks are interleaved by a strided view: 16 multiply-adds per input pixel
  // and channel pair instead of 36 for upsample + 3x3, and a plain convolution instead
  // of a transposed one (which LibTorch's CPU backend runs through im2col and BLAS, not
  // oneDNN). The same function, up to float rounding (see stylegan1_test).
  kPhaseSplit,
  kReference,  // as the reference implementation: interpolate + conv2d / conv_transpose2d
};
const char* UpsampleConvName(UpsampleConv u);

struct StyleGan1Options {
  UpsampleConv upsample = UpsampleConv::kPhaseSplit;
};

class StyleGan1MappingImpl : public torch::nn::Module {
 public:
  StyleGan1MappingImpl(const StyleGan1Config& config, WeightMap& weights, absl::Status* status);
  torch::Tensor forward(const torch::Tensor& z);

 private:
  std::vector<torch::Tensor> weights_, biases_;  // scaled by w_mul / b_mul
};
TORCH_MODULE(StyleGan1Mapping);

class StyleGan1SynthesisImpl : public torch::nn::Module {
 public:
  StyleGan1SynthesisImpl(const StyleGan1Config& config, const StyleGan1Options& options,
                         WeightMap& weights, absl::Status* status);
  torch::Tensor forward(const torch::Tensor& wplus, const std::vector<torch::Tensor>& noise);
  // Generator::ForwardBlend from block `first_block` on.
  torch::Tensor forward_blend(const torch::Tensor& wa, const torch::Tensor& wb,
                              const std::vector<torch::Tensor>& noise, int first_block,
                              const torch::Tensor& mask);

 private:
  // Noise, LeakyReLU, instance norm, style modulation (spec, "Layer epilogue").
  struct Epilogue {
    torch::Tensor noise_strength;  // [1, C, 1, 1]
    torch::Tensor style_weight;    // [2C, latent], scaled
    torch::Tensor style_bias;      // [2C]
  };
  struct Block {
    bool fused_upsample = false;
    // kReference: [out, in, 3, 3] scaled, or [in, out, 4, 4] for the fused path;
    // kPhaseSplit: [4 * out, in, 2, 2], phase (a, b) in the channel block 2a + b.
    torch::Tensor up_weight;
    torch::Tensor blur;     // [out, 1, 3, 3] depthwise
    torch::Tensor up_bias;  // [out], added after the blur
    torch::Tensor conv_weight, conv_bias;
    Epilogue epi1, epi2;
  };
  // Block i (4 << i pixels square, W+ rows 2i and 2i + 1) applied to x.
  torch::Tensor RunBlock(size_t i, torch::Tensor x, const torch::Tensor& wplus,
                         const std::vector<torch::Tensor>& noise);
  torch::Tensor ApplyEpilogue(const Epilogue& e, torch::Tensor x, const torch::Tensor& w,
                              const torch::Tensor* noise);
  absl::Status LoadEpilogue(WeightMap& weights, const std::string& prefix, int64_t channels,
                            Epilogue* e);
  torch::Tensor Register(const std::string& name, torch::Tensor t);

  StyleGan1Config config_;
  StyleGan1Options options_;
  torch::Tensor const_input_;  // const + bias, [1, C, 4, 4]
  std::vector<Block> blocks_;  // blocks_[0] is the 4x4 block (conv only, no upsampling)
  torch::Tensor torgb_weight_, torgb_bias_;
};
TORCH_MODULE(StyleGan1Synthesis);

class StyleGan1Generator : public Generator {
 public:
  // Validates every key and shape (errors name the key) and builds on `device`.
  static absl::StatusOr<std::unique_ptr<StyleGan1Generator>> Create(
      const StateDict& weights, torch::Device device, const StyleGan1Options& options = {});
  // Loads a weight file; errors are prefixed with the path.
  static absl::StatusOr<std::unique_ptr<StyleGan1Generator>> Load(
      const std::string& path, torch::Device device, const StyleGan1Options& options = {});

  int resolution() const override { return config_.resolution; }
  int num_layers() const override { return config_.num_layers(); }
  int latent_size() const override { return config_.latent_size; }
  const char* architecture() const override { return "stylegan1"; }
  int mapping_layers() const override { return config_.mapping_layers; }
  std::vector<int64_t> channels() const override { return config_.channels; }
  const std::string& fingerprint() const override { return fingerprint_; }
  torch::Device device() const override { return device_; }
  const StyleGan1Config& config() const { return config_; }
  // The file's optional `truncation.avg_latent` (undefined when absent).
  const torch::Tensor& avg_latent() const { return avg_latent_; }
  torch::Tensor FileMeanW() const override { return avg_latent_; }

  torch::Tensor Forward(const torch::Tensor& wplus,
                        const std::vector<torch::Tensor>& noise) override;
  torch::Tensor ForwardMapping(const torch::Tensor& z) override;
  torch::Tensor ForwardBlend(const torch::Tensor& wa, const torch::Tensor& wb,
                             const std::vector<torch::Tensor>& noise, int start_layer,
                             const torch::Tensor& mask) override;

 private:
  StyleGan1Generator(StyleGan1Config config, torch::Device device, std::string fingerprint)
      : config_(std::move(config)), device_(device), fingerprint_(std::move(fingerprint)) {}

  StyleGan1Config config_;
  torch::Device device_;
  std::string fingerprint_;
  StyleGan1Mapping mapping_{nullptr};
  StyleGan1Synthesis synthesis_{nullptr};
  torch::Tensor avg_latent_;
};

}  // namespace i2s

#endif  // I2S_SERVER_ENGINE_STYLEGAN1_H_

#include "server/engine/stylegan1.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/engine/local_blend.h"
#include "server/engine/torch_util.h"

namespace i2s {
namespace {

namespace F = torch::nn::functional;

// Equalized learning rate (spec): w_mul = gain / sqrt(fan_in) * lrmul.
constexpr double kSqrt2 = 1.4142135623730951;
constexpr double kMappingLrMul = 0.01;  // the mapping network's lrmul
constexpr double kLeakySlope = 0.2;
constexpr double kPixelNormEps = 1e-8;
constexpr double kInstanceNormEps = 1e-5;  // the port's nn.InstanceNorm2d default

std::string BlockPrefix(int res) { return absl::StrCat("g_synthesis.blocks.", res, "x", res, "."); }
std::string MappingKey(int i, const char* what) {
  return absl::StrCat("g_mapping.dense", i, ".", what);
}

void AddEpilogueKeys(std::vector<std::pair<std::string, std::vector<int64_t>>>* keys,
                     const std::string& prefix, int64_t c, int64_t d) {
  keys->push_back({prefix + "top_epi.noise.weight", {c}});
  keys->push_back({prefix + "style_mod.lin.weight", {2 * c, d}});
  keys->push_back({prefix + "style_mod.lin.bias", {2 * c}});
}

// The two input taps, along `dim`, of output phase `phase` (0: the input pixels i - 1
// and i; 1: i and i + 1) for a 3-tap kernel applied after nearest upsampling (zero
// padding 1), or for a 4-tap transposed-convolution kernel (stride 2, padding 1), where
// output 2i + a takes taps 3 and 1 (a = 0) or 2 and 0 (a = 1).
torch::Tensor PhaseTaps(const torch::Tensor& w, int64_t dim, bool transposed, int phase) {
  auto t = [&](int64_t k) { return w.select(dim, k); };
  std::vector<torch::Tensor> taps;
  if (transposed) {
    taps = phase == 0 ? std::vector<torch::Tensor>{t(3), t(1)}
                      : std::vector<torch::Tensor>{t(2), t(0)};
  } else {
    taps = phase == 0 ? std::vector<torch::Tensor>{t(0), t(1) + t(2)}
                      : std::vector<torch::Tensor>{t(0) + t(1), t(2)};
  }
  return torch::stack(taps, dim);
}

// [out, in, k, k] (k = 3 after upsampling, 4 transposed) -> [4 * out, in, 2, 2].
torch::Tensor PhaseKernels(const torch::Tensor& w, bool transposed) {
  std::vector<torch::Tensor> kernels;
  for (int a = 0; a < 2; ++a) {
    torch::Tensor rows = PhaseTaps(w, 2, transposed, a);
    for (int b = 0; b < 2; ++b) kernels.push_back(PhaseTaps(rows, 3, transposed, b));
  }
  return torch::cat(kernels, 0).contiguous();
}

// x [B, in, R, R] -> [B, out, 2R, 2R] with kernels from PhaseKernels (UpsampleConv).
// The 2x2 convolution over x padded by 1 gives [B, 4 * out, R + 1, R + 1]; phase (a, b)
// of output pixel (2i + a, 2j + b) is its channel block 2a + b at (i + a, j + b). The
// strided view [B, a, b, out, i, j] reads exactly those, and one copy interleaves them.
torch::Tensor PhaseSplitUpConv(const torch::Tensor& x, const torch::Tensor& kernels) {
  const int64_t b = x.size(0), r = x.size(2), out = kernels.size(0) / 4;
  torch::Tensor y = torch::conv2d(x, kernels, {}, /*stride=*/1, /*padding=*/1).contiguous();
  const int64_t plane = (r + 1) * (r + 1);
  torch::Tensor phases =
      y.as_strided({b, 2, 2, out, r, r},
                   {4 * out * plane, 2 * out * plane + r + 1, out * plane + 1, plane, r + 1, 1});
  return phases.permute({0, 3, 4, 1, 5, 2}).reshape({b, out, 2 * r, 2 * r});
}

}  // namespace

const char* UpsampleConvName(UpsampleConv u) {
  return u == UpsampleConv::kPhaseSplit ? "phase-split" : "reference";
}

int StyleGan1Config::num_layers() const { return 2 * Log2Ceil(resolution) - 2; }

StyleGan1Config StyleGan1Config::FromFmap(int resolution, int fmap_base, int fmap_max) {
  StyleGan1Config c;
  c.resolution = resolution;
  for (int res = 4; res <= resolution; res *= 2) {
    int stage = Log2Ceil(res) - 1;
    c.channels.push_back(std::max<int64_t>(1, std::min<int64_t>(fmap_base >> stage, fmap_max)));
  }
  return c;
}

absl::Status StyleGan1Config::Validate() const {
  return CheckGeneratorShape(resolution, channels, latent_size, mapping_layers);
}

std::vector<std::pair<std::string, std::vector<int64_t>>> StyleGan1Keys(const StyleGan1Config& c) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> keys;
  const int64_t d = c.latent_size;
  for (int i = 0; i < c.mapping_layers; ++i) {
    keys.push_back({MappingKey(i, "weight"), {d, d}});
    keys.push_back({MappingKey(i, "bias"), {d}});
  }
  for (size_t b = 0; b < c.channels.size(); ++b) {
    const int64_t ch = c.channels[b];
    const std::string p = BlockPrefix(4 << b);
    if (b == 0) {
      keys.push_back({p + "const", {1, ch, 4, 4}});
      keys.push_back({p + "bias", {ch}});
      AddEpilogueKeys(&keys, p + "epi1.", ch, d);
      keys.push_back({p + "conv.weight", {ch, ch, 3, 3}});
      keys.push_back({p + "conv.bias", {ch}});
    } else {
      keys.push_back({p + "conv0_up.weight", {ch, c.channels[b - 1], 3, 3}});
      keys.push_back({p + "conv0_up.bias", {ch}});
      keys.push_back({p + "conv0_up.intermediate.kernel", {1, 1, 3, 3}});
      AddEpilogueKeys(&keys, p + "epi1.", ch, d);
      keys.push_back({p + "conv1.weight", {ch, ch, 3, 3}});
      keys.push_back({p + "conv1.bias", {ch}});
    }
    AddEpilogueKeys(&keys, p + "epi2.", ch, d);
  }
  keys.push_back({"g_synthesis.torgb.weight", {3, c.channels.back(), 1, 1}});
  keys.push_back({"g_synthesis.torgb.bias", {3}});
  return keys;
}

absl::StatusOr<StyleGan1Config> InferStyleGan1Config(const StateDict& weights) {
  WeightMap m(weights);
  StyleGan1Config c;
  ASSIGN_OR_RETURN(std::vector<int64_t> dense0, m.ShapeOf(MappingKey(0, "weight")));
  if (dense0.size() != 2 || dense0[0] != dense0[1]) {
    return absl::InvalidArgumentError(absl::StrCat("key '", MappingKey(0, "weight"), "' has shape ",
                                                   ShapeString(dense0), ", expected [D, D]"));
  }
  c.latent_size = static_cast<int>(dense0[0]);
  c.mapping_layers = 0;
  while (m.Has(MappingKey(c.mapping_layers, "weight"))) ++c.mapping_layers;
  ASSIGN_OR_RETURN(std::vector<int64_t> const_shape, m.ShapeOf(BlockPrefix(4) + "const"));
  if (const_shape.size() != 4) {
    return absl::InvalidArgumentError(absl::StrCat("key '", BlockPrefix(4), "const' has shape ",
                                                   ShapeString(const_shape),
                                                   ", expected [1, C, 4, 4]"));
  }
  c.channels.push_back(const_shape[1]);
  c.resolution = 4;
  while (m.Has(BlockPrefix(c.resolution * 2) + "conv1.weight")) {
    c.resolution *= 2;
    ASSIGN_OR_RETURN(std::vector<int64_t> s, m.ShapeOf(BlockPrefix(c.resolution) + "conv1.weight"));
    if (s.empty()) return absl::InvalidArgumentError("conv1.weight is a scalar");
    c.channels.push_back(s[0]);
  }
  if (c.resolution < 8) {
    return absl::InvalidArgumentError(
        absl::StrCat("missing key '", BlockPrefix(8), "conv1.weight'"));
  }
  RETURN_IF_ERROR(c.Validate());
  return c;
}

StateDict RandomStyleGan1Weights(const StyleGan1Config& config, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  StateDict sd;
  for (const auto& [key, shape] : StyleGan1Keys(config)) {
    torch::Tensor t;
    auto ends_with = [&](absl::string_view s) { return absl::EndsWith(key, s); };
    if (ends_with("intermediate.kernel")) {
      t = torch::tensor({1.f, 2.f, 1.f});
      t = (t.view({3, 1}) * t.view({1, 3}) / 16).view({1, 1, 3, 3});
    } else if (key == "g_synthesis.torgb.weight") {
      // Scaled so that outputs mostly fall in [-1, 1], as a trained model's do; with unit
      // weights most pixels saturate, which makes inversion tests meaningless.
      t = torch::randn(shape, gen) * 0.25;
    } else if (absl::StartsWith(key, "g_mapping.") && ends_with(".weight")) {
      t = torch::randn(shape, gen) / kMappingLrMul;  // the port's init_std = 1 / lrmul
    } else if (ends_with(".bias") || ends_with("noise.weight")) {
      t = torch::randn(shape, gen) * 0.1;
    } else {
      t = torch::randn(shape, gen);
    }
    sd.emplace_back(key, t.contiguous());
  }
  return sd;
}

StyleGan1MappingImpl::StyleGan1MappingImpl(const StyleGan1Config& c, WeightMap& m,
                                           absl::Status* status) {
  const double w_mul = kSqrt2 / std::sqrt(static_cast<double>(c.latent_size)) * kMappingLrMul;
  for (int i = 0; i < c.mapping_layers && status->ok(); ++i) {
    auto w = m.Take(MappingKey(i, "weight"), {c.latent_size, c.latent_size});
    auto b = m.Take(MappingKey(i, "bias"), {c.latent_size});
    if (!w.ok() || !b.ok()) {
      *status = w.ok() ? b.status() : w.status();
      return;
    }
    weights_.push_back(register_buffer(absl::StrCat("w", i), *w * w_mul));
    biases_.push_back(register_buffer(absl::StrCat("b", i), *b * kMappingLrMul));
  }
}

torch::Tensor StyleGan1MappingImpl::forward(const torch::Tensor& z) {
  torch::Tensor x = z * torch::rsqrt(z.square().mean(1, /*keepdim=*/true) + kPixelNormEps);
  for (size_t i = 0; i < weights_.size(); ++i) {
    x = torch::leaky_relu(torch::addmm(biases_[i], x, weights_[i].t()), kLeakySlope);
  }
  return x;
}

torch::Tensor StyleGan1SynthesisImpl::Register(const std::string& name, torch::Tensor t) {
  return register_buffer(name, t.contiguous());
}

absl::Status StyleGan1SynthesisImpl::LoadEpilogue(WeightMap& m, const std::string& prefix,
                                                  int64_t c, Epilogue* e) {
  const int64_t d = config_.latent_size;
  ASSIGN_OR_RETURN(torch::Tensor noise, m.Take(prefix + "top_epi.noise.weight", {c}));
  ASSIGN_OR_RETURN(torch::Tensor w, m.Take(prefix + "style_mod.lin.weight", {2 * c, d}));
  ASSIGN_OR_RETURN(torch::Tensor b, m.Take(prefix + "style_mod.lin.bias", {2 * c}));
  std::string name = prefix;
  std::replace(name.begin(), name.end(), '.', '_');
  e->noise_strength = Register(name + "noise", noise.view({1, c, 1, 1}));
  e->style_weight = Register(name + "style_w", w / std::sqrt(static_cast<double>(d)));  // gain 1
  e->style_bias = Register(name + "style_b", b);
  return absl::OkStatus();
}

StyleGan1SynthesisImpl::StyleGan1SynthesisImpl(const StyleGan1Config& c,
                                               const StyleGan1Options& options, WeightMap& m,
                                               absl::Status* status)
    : config_(c), options_(options) {
  *status = [&]() -> absl::Status {
    for (size_t i = 0; i < c.channels.size(); ++i) {
      const int res = 4 << i;
      const int64_t ch = c.channels[i];
      const std::string p = BlockPrefix(res);
      const std::string n = absl::StrCat("b", res, "_");
      Block block;
      if (i == 0) {
        ASSIGN_OR_RETURN(torch::Tensor cst, m.Take(p + "const", {1, ch, 4, 4}));
        ASSIGN_OR_RETURN(torch::Tensor bias, m.Take(p + "bias", {ch}));
        const_input_ = Register("const_input", cst + bias.view({1, ch, 1, 1}));
        RETURN_IF_ERROR(LoadEpilogue(m, p + "epi1.", ch, &block.epi1));
        ASSIGN_OR_RETURN(torch::Tensor w, m.Take(p + "conv.weight", {ch, ch, 3, 3}));
        ASSIGN_OR_RETURN(torch::Tensor b, m.Take(p + "conv.bias", {ch}));
        block.conv_weight = Register(n + "conv_w", w * (kSqrt2 / std::sqrt(ch * 9.0)));
        block.conv_bias = Register(n + "conv_b", b);
      } else {
        const int64_t in = c.channels[i - 1];
        ASSIGN_OR_RETURN(torch::Tensor up, m.Take(p + "conv0_up.weight", {ch, in, 3, 3}));
        ASSIGN_OR_RETURN(torch::Tensor up_b, m.Take(p + "conv0_up.bias", {ch}));
        ASSIGN_OR_RETURN(torch::Tensor kernel,
                         m.Take(p + "conv0_up.intermediate.kernel", {1, 1, 3, 3}));
        up = up * (kSqrt2 / std::sqrt(in * 9.0));
        // The port fuses upsampling into a transposed conv when the output is >= 128.
        block.fused_upsample = res >= 128;
        if (block.fused_upsample) {
          torch::Tensor w = F::pad(up.permute({1, 0, 2, 3}), F::PadFuncOptions({1, 1, 1, 1}));
          using torch::indexing::Slice;
          up = w.index({Slice(), Slice(), Slice(1), Slice(1)}) +
               w.index({Slice(), Slice(), Slice(0, -1), Slice(1)}) +
               w.index({Slice(), Slice(), Slice(1), Slice(0, -1)}) +
               w.index({Slice(), Slice(), Slice(0, -1), Slice(0, -1)});  // [in, out, 4, 4]
        }
        if (options_.upsample == UpsampleConv::kPhaseSplit) {
          up = block.fused_upsample ? PhaseKernels(up.permute({1, 0, 2, 3}), true)
                                    : PhaseKernels(up, false);
        }
        block.up_weight = Register(n + "up_w", up);
        block.blur = Register(n + "blur", kernel.expand({ch, 1, 3, 3}));
        block.up_bias = Register(n + "up_b", up_b);
        RETURN_IF_ERROR(LoadEpilogue(m, p + "epi1.", ch, &block.epi1));
        ASSIGN_OR_RETURN(torch::Tensor w, m.Take(p + "conv1.weight", {ch, ch, 3, 3}));
        ASSIGN_OR_RETURN(torch::Tensor b, m.Take(p + "conv1.bias", {ch}));
        block.conv_weight = Register(n + "conv_w", w * (kSqrt2 / std::sqrt(ch * 9.0)));
        block.conv_bias = Register(n + "conv_b", b);
      }
      RETURN_IF_ERROR(LoadEpilogue(m, p + "epi2.", ch, &block.epi2));
      blocks_.push_back(std::move(block));
    }
    const int64_t last = c.channels.back();
    ASSIGN_OR_RETURN(torch::Tensor rgb_w, m.Take("g_synthesis.torgb.weight", {3, last, 1, 1}));
    ASSIGN_OR_RETURN(torch::Tensor rgb_b, m.Take("g_synthesis.torgb.bias", {3}));
    torgb_weight_ = Register("torgb_w", rgb_w / std::sqrt(static_cast<double>(last)));  // gain 1
    torgb_bias_ = Register("torgb_b", rgb_b);
    return absl::OkStatus();
  }();
}

torch::Tensor StyleGan1SynthesisImpl::ApplyEpilogue(const Epilogue& e, torch::Tensor x,
                                                    const torch::Tensor& w,
                                                    const torch::Tensor* noise) {
  if (noise != nullptr) x = x + e.noise_strength * *noise;
  x = torch::leaky_relu(x, kLeakySlope);
  x = torch::instance_norm(x, {}, {}, {}, {}, /*use_input_stats=*/true, /*momentum=*/0.0,
                           kInstanceNormEps,
                           /*cudnn_enabled=*/at::globalContext().userEnabledCuDNN());
  const int64_t b = x.size(0), c = x.size(1);
  torch::Tensor style = torch::addmm(e.style_bias, w, e.style_weight.t());
  torch::Tensor scale = style.narrow(1, 0, c).view({b, c, 1, 1}) + 1;
  torch::Tensor shift = style.narrow(1, c, c).view({b, c, 1, 1});
  return torch::addcmul(shift, x, scale);
}

torch::Tensor StyleGan1SynthesisImpl::RunBlock(size_t i, torch::Tensor x,
                                               const torch::Tensor& wplus,
                                               const std::vector<torch::Tensor>& noise) {
  const Block& block = blocks_[i];
  const int layer = 2 * static_cast<int>(i);
  auto noise_at = [&](int l) { return noise.empty() ? nullptr : &noise[l]; };
  if (block.up_weight.defined()) {
    if (options_.upsample == UpsampleConv::kPhaseSplit) {
      x = PhaseSplitUpConv(x, block.up_weight);
    } else if (block.fused_upsample) {
      x = torch::conv_transpose2d(x, block.up_weight, {}, /*stride=*/2, /*padding=*/1);
    } else {
      x = F::interpolate(x, F::InterpolateFuncOptions()
                                .scale_factor(std::vector<double>{2.0, 2.0})
                                .mode(torch::kNearest));
      x = torch::conv2d(x, block.up_weight, {}, /*stride=*/1, /*padding=*/1);
    }
    // Blur, then bias: the bias rides on the depthwise blur conv.
    x = torch::conv2d(x, block.blur, block.up_bias, 1, 1, 1, /*groups=*/block.blur.size(0));
  }
  x = ApplyEpilogue(block.epi1, x, wplus.select(1, layer), noise_at(layer));
  x = torch::conv2d(x, block.conv_weight, block.conv_bias, 1, 1);
  return ApplyEpilogue(block.epi2, x, wplus.select(1, layer + 1), noise_at(layer + 1));
}

torch::Tensor StyleGan1SynthesisImpl::forward(const torch::Tensor& wplus,
                                              const std::vector<torch::Tensor>& noise) {
  torch::Tensor x = const_input_.expand({wplus.size(0), -1, -1, -1});
  for (size_t i = 0; i < blocks_.size(); ++i) x = RunBlock(i, x, wplus, noise);
  return torch::conv2d(x, torgb_weight_, torgb_bias_);
}

torch::Tensor StyleGan1SynthesisImpl::forward_blend(const torch::Tensor& wa,
                                                    const torch::Tensor& wb,
                                                    const std::vector<torch::Tensor>& noise,
                                                    int first_block, const torch::Tensor& mask) {
  // a's path is forward(wa)'s operations on the same tensors, so its image is forward's.
  torch::Tensor xa = const_input_.expand({wa.size(0), -1, -1, -1});
  torch::Tensor xb = const_input_.expand({wb.size(0), -1, -1, -1});
  torch::Tensor x;  // the blended path, from first_block on
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const bool blend = static_cast<int>(i) >= first_block;
    if (blend && static_cast<int>(i) > first_block) x = RunBlock(i, x, wa, noise);
    xa = RunBlock(i, xa, wa, noise);
    xb = RunBlock(i, xb, wb, noise);
    if (static_cast<int>(i) == first_block) x = xa;  // the blended path is a's until here
    if (blend) x = BlendActivations(x, xb, MaskAtResolution(mask, xa.size(2)));
  }
  torch::Tensor out_a = torch::conv2d(xa, torgb_weight_, torgb_bias_);
  torch::Tensor out = torch::conv2d(x, torgb_weight_, torgb_bias_);
  return BlendActivations(out_a, out, mask);
}

absl::StatusOr<std::unique_ptr<StyleGan1Generator>> StyleGan1Generator::Create(
    const StateDict& weights, torch::Device device, const StyleGan1Options& options) {
  ASSIGN_OR_RETURN(StyleGan1Config config, InferStyleGan1Config(weights));
  std::unique_ptr<StyleGan1Generator> g(
      new StyleGan1Generator(config, device, WeightsFingerprint(weights)));
  WeightMap m(weights);
  auto built = TorchCall("building StyleGAN1", [&]() -> absl::Status {
    absl::Status status;
    g->mapping_ = StyleGan1Mapping(config, m, &status);
    RETURN_IF_ERROR(status);
    g->synthesis_ = StyleGan1Synthesis(config, options, m, &status);
    RETURN_IF_ERROR(status);
    if (m.Has("truncation.avg_latent")) {
      ASSIGN_OR_RETURN(g->avg_latent_, m.Take("truncation.avg_latent", {config.latent_size}));
    }
    RETURN_IF_ERROR(m.CheckAllUsed([](const std::string&) { return false; }));
    g->mapping_->to(device);
    g->synthesis_->to(device);
    g->mapping_->eval();
    g->synthesis_->eval();
    if (g->avg_latent_.defined()) g->avg_latent_ = g->avg_latent_.to(device);
    return absl::OkStatus();
  });
  RETURN_IF_ERROR(built);
  return g;
}

absl::StatusOr<std::unique_ptr<StyleGan1Generator>> StyleGan1Generator::Load(
    const std::string& path, torch::Device device, const StyleGan1Options& options) {
  ASSIGN_OR_RETURN(LoadedWeights w, LoadWeights(path));
  auto g = Create(w.tensors, device, options);
  if (!g.ok()) return Annotate(g.status(), path);
  return g;
}

torch::Tensor StyleGan1Generator::Forward(const torch::Tensor& wplus,
                                          const std::vector<torch::Tensor>& noise) {
  return synthesis_->forward(wplus, noise);
}

torch::Tensor StyleGan1Generator::ForwardBlend(const torch::Tensor& wa, const torch::Tensor& wb,
                                               const std::vector<torch::Tensor>& noise,
                                               int start_layer, const torch::Tensor& mask) {
  return synthesis_->forward_blend(wa, wb, noise, LayerBlock(start_layer), mask);
}

torch::Tensor StyleGan1Generator::ForwardMapping(const torch::Tensor& z) {
  return mapping_->forward(z);
}

}  // namespace i2s

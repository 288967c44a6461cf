#include "server/engine/stylegan2.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/engine/local_blend.h"
#include "server/engine/torch_util.h"

namespace i2s {
namespace {

namespace F = torch::nn::functional;

constexpr double kSqrt2 = 1.4142135623730951;  // the activation gain of fused_lrelu
constexpr double kMappingLrMul = 0.01;         // the mapping network's lr multiplier
constexpr double kLeakySlope = 0.2;
constexpr double kPixelNormEps = 1e-8;
constexpr double kDemodEps = 1e-8;

using KeyList = std::vector<std::pair<std::string, std::vector<int64_t>>>;

// rosinality's StyledConv: ModulatedConv2d (+ blur when upsampling), NoiseInjection,
// FusedLeakyReLU.
void AddStyledConvKeys(KeyList* keys, const std::string& p, int64_t in, int64_t out, int64_t d,
                       bool upsample) {
  keys->push_back({p + "conv.weight", {1, out, in, 3, 3}});
  if (upsample) keys->push_back({p + "conv.blur.kernel", {4, 4}});
  keys->push_back({p + "conv.modulation.weight", {in, d}});
  keys->push_back({p + "conv.modulation.bias", {in}});
  keys->push_back({p + "noise.weight", {1}});
  keys->push_back({p + "activate.bias", {out}});
}

void AddToRgbKeys(KeyList* keys, const std::string& p, int64_t in, int64_t d, bool upsample) {
  keys->push_back({p + "bias", {1, 3, 1, 1}});
  if (upsample) keys->push_back({p + "upsample.kernel", {4, 4}});
  keys->push_back({p + "conv.weight", {1, 3, in, 1, 1}});
  keys->push_back({p + "conv.modulation.weight", {in, d}});
  keys->push_back({p + "conv.modulation.bias", {in}});
}

absl::Status BadShape(const std::string& key, const std::vector<int64_t>& shape,
                      absl::string_view expected) {
  return absl::InvalidArgumentError(
      absl::StrCat("key '", key, "' has shape ", ShapeString(shape), ", expected ", expected));
}

// upfirdn2d for the skip image: zero-stuffing 2x upsampling (the sample, then a zero),
// padding (2, 1) and the 4x4 kernel (symmetric, so correlation = convolution). Written
// out rather than as the equivalent depthwise transposed convolution (stride 2, padding
// 1), which LibTorch's CPU backend runs on a slow path: at 1024x1024 that made the whole
// embedding step 1.16x slower than PyTorch eager's zero-stuffing (docs/PERFORMANCE.md).
torch::Tensor UpsampleSkip(const torch::Tensor& x, const torch::Tensor& kernel) {
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  torch::Tensor up = F::pad(x.reshape({b, c, h, 1, w, 1}), F::PadFuncOptions({0, 1, 0, 0, 0, 1}))
                         .reshape({b, c, 2 * h, 2 * w});
  up = F::pad(up, F::PadFuncOptions({2, 1, 2, 1}));
  const std::vector<int64_t> one{1, 1}, none{0, 0};
  return torch::conv2d(up, kernel.expand({c, 1, 4, 4}), {}, one, none, one, c);
}

// upfirdn2d(x, kernel, pad=(1, 1)) after the stride-2 transposed 3x3 convolution:
// [2h + 1] -> [2h].
torch::Tensor BlurAfterUpsample(const torch::Tensor& x, const torch::Tensor& kernel) {
  const int64_t c = x.size(1);
  return torch::conv2d(x, kernel.expand({c, 1, 4, 4}), {}, /*stride=*/1, /*padding=*/1,
                       /*dilation=*/1, /*groups=*/c);
}

}  // namespace

const char* ModulatedConvName(ModulatedConv m) {
  return m == ModulatedConv::kShared ? "shared" : "grouped";
}

int StyleGan2Config::num_layers() const { return 2 * Log2Ceil(resolution) - 2; }
int StyleGan2Config::num_noise_maps() const { return 2 * Log2Ceil(resolution) - 3; }

StyleGan2Config StyleGan2Config::Rosinality(int resolution, int channel_multiplier, int latent_size,
                                            int mapping_layers, int divisor) {
  StyleGan2Config c;
  c.resolution = resolution;
  c.latent_size = latent_size;
  c.mapping_layers = mapping_layers;
  for (int res = 4; res <= resolution; res *= 2) {
    // 512 through 32x32; 256 * multiplier at 64, halving per doubling after that.
    const int64_t base = res <= 32 ? 512 : (int64_t{256} * 64 / res) * channel_multiplier;
    c.channels.push_back(std::max<int64_t>(1, base / std::max(1, divisor)));
  }
  return c;
}

absl::Status StyleGan2Config::Validate() const {
  RETURN_IF_ERROR(CheckGeneratorShape(resolution, channels, latent_size, mapping_layers));
  if (!(conv_clamp >= 0) || !std::isfinite(conv_clamp)) {
    return absl::InvalidArgumentError("conv_clamp must be finite and >= 0");
  }
  return absl::OkStatus();
}

std::vector<std::pair<std::string, std::vector<int64_t>>> StyleGan2Keys(const StyleGan2Config& c) {
  KeyList keys;
  const int64_t d = c.latent_size;
  for (int i = 1; i <= c.mapping_layers; ++i) {
    keys.push_back({absl::StrCat("style.", i, ".weight"), {d, d}});
    keys.push_back({absl::StrCat("style.", i, ".bias"), {d}});
  }
  keys.push_back({"input.input", {1, c.channels[0], 4, 4}});
  AddStyledConvKeys(&keys, "conv1.", c.channels[0], c.channels[0], d, false);
  AddToRgbKeys(&keys, "to_rgb1.", c.channels[0], d, false);
  for (size_t b = 1; b < c.channels.size(); ++b) {
    const int k = static_cast<int>(b) - 1;
    AddStyledConvKeys(&keys, absl::StrCat("convs.", 2 * k, "."), c.channels[b - 1], c.channels[b],
                      d, true);
    AddStyledConvKeys(&keys, absl::StrCat("convs.", 2 * k + 1, "."), c.channels[b], c.channels[b],
                      d, false);
  }
  for (size_t b = 1; b < c.channels.size(); ++b) {
    AddToRgbKeys(&keys, absl::StrCat("to_rgbs.", b - 1, "."), c.channels[b], d, true);
  }
  for (int i = 0; i < c.num_noise_maps(); ++i) {
    const int64_t r = int64_t{4} << ((i + 1) / 2);
    keys.push_back({absl::StrCat("noises.noise_", i), {1, 1, r, r}});
  }
  return keys;
}

torch::Tensor StyleGan2ResampleKernel() {
  torch::Tensor k = torch::tensor({1.f, 3.f, 3.f, 1.f});
  return (k.view({4, 1}) * k.view({1, 4}) / 64 * 4).contiguous();
}

absl::StatusOr<StyleGan2Config> InferStyleGan2Config(const StateDict& weights) {
  WeightMap m(weights);
  StyleGan2Config c;
  ASSIGN_OR_RETURN(std::vector<int64_t> style1, m.ShapeOf("style.1.weight"));
  if (style1.size() != 2 || style1[0] != style1[1]) {
    return BadShape("style.1.weight", style1, "[D, D]");
  }
  c.latent_size = static_cast<int>(style1[0]);
  c.mapping_layers = 0;
  while (m.Has(absl::StrCat("style.", c.mapping_layers + 1, ".weight"))) ++c.mapping_layers;
  ASSIGN_OR_RETURN(std::vector<int64_t> input, m.ShapeOf("input.input"));
  if (input.size() != 4 || input[0] != 1 || input[2] != 4 || input[3] != 4) {
    return BadShape("input.input", input, "[1, C, 4, 4]");
  }
  c.channels.push_back(input[1]);
  c.resolution = 4;
  while (m.Has(absl::StrCat("convs.", 2 * (c.channels.size() - 1), ".conv.weight"))) {
    const std::string key = absl::StrCat("convs.", 2 * (c.channels.size() - 1), ".conv.weight");
    ASSIGN_OR_RETURN(std::vector<int64_t> s, m.ShapeOf(key));
    if (s.size() != 5) return BadShape(key, s, "[1, out, in, 3, 3]");
    c.channels.push_back(s[1]);
    c.resolution *= 2;
    if (c.resolution > 1024) break;  // Validate says why
  }
  if (c.resolution < 8) return absl::InvalidArgumentError("missing key 'convs.0.conv.weight'");
  RETURN_IF_ERROR(c.Validate());
  return c;
}

StateDict RandomStyleGan2Weights(const StyleGan2Config& config, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  StateDict sd;
  for (const auto& [key, shape] : StyleGan2Keys(config)) {
    torch::Tensor t;
    auto ends_with = [&](absl::string_view s) { return absl::EndsWith(key, s); };
    if (ends_with(".kernel")) {
      t = StyleGan2ResampleKernel();
    } else if (absl::StartsWith(key, "style.") && ends_with(".weight")) {
      t = torch::randn(shape, gen) / kMappingLrMul;  // rosinality's EqualLinear init
    } else if (ends_with("modulation.bias")) {
      t = 1 + torch::randn(shape, gen) * 0.1;  // bias_init = 1, perturbed
    } else if (ends_with("modulation.weight")) {
      t = torch::randn(shape, gen) * 0.5;  // keeps the styles near 1, as trained models do
    } else if (absl::StartsWith(key, "to_rgb") && ends_with("conv.weight")) {
      // Scaled so that images mostly fall in [-1, 1]; with unit weights the skip sum of
      // every resolution saturates most pixels.
      t = torch::randn(shape, gen) * 0.3;
    } else if (ends_with(".bias") || ends_with("noise.weight")) {
      t = torch::randn(shape, gen) * 0.1;
    } else {
      t = torch::randn(shape, gen);
    }
    sd.emplace_back(key, t.contiguous());
  }
  return sd;
}

absl::Status StyleGan2Generator::LoadLayer(WeightMap& m, const std::string& p, int64_t in,
                                           int64_t out, int k, bool upsample, bool torgb,
                                           Layer* layer) {
  const int64_t d = config_.latent_size;
  ASSIGN_OR_RETURN(torch::Tensor w, m.Take(p + "conv.weight", {1, out, in, k, k}));
  ASSIGN_OR_RETURN(torch::Tensor mw, m.Take(p + "conv.modulation.weight", {in, d}));
  ASSIGN_OR_RETURN(torch::Tensor mb, m.Take(p + "conv.modulation.bias", {in}));
  layer->weight = (w.squeeze(0) / std::sqrt(static_cast<double>(in * k * k))).contiguous();
  layer->weight_sq = layer->weight.square().sum({2, 3}).contiguous();
  layer->mod_weight = (mw / std::sqrt(static_cast<double>(d))).contiguous();
  layer->mod_bias = mb.contiguous();
  layer->upsample = upsample && !torgb;  // a ToRGB's `upsample` is its skip input's
  layer->demodulate = !torgb;
  const std::string kernel_key = torgb ? p + "upsample.kernel" : p + "conv.blur.kernel";
  if (upsample) {
    ASSIGN_OR_RETURN(torch::Tensor kernel, m.Take(kernel_key, {4, 4}));
    // The kernel is a constant of the architecture; another one is another network.
    if (!torch::allclose(kernel, StyleGan2ResampleKernel(), 1e-5, 1e-6)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "key '", kernel_key, "' is not the [1, 3, 3, 1] resampling kernel of StyleGAN2"));
    }
  }
  if (torgb) {
    ASSIGN_OR_RETURN(torch::Tensor b, m.Take(p + "bias", {1, 3, 1, 1}));
    layer->bias = b.contiguous();
  } else {
    ASSIGN_OR_RETURN(torch::Tensor strength, m.Take(p + "noise.weight", {1}));
    ASSIGN_OR_RETURN(torch::Tensor b, m.Take(p + "activate.bias", {out}));
    layer->noise_strength = strength.contiguous();
    layer->bias = b.view({1, out, 1, 1}).contiguous();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<StyleGan2Generator>> StyleGan2Generator::Create(
    const StateDict& weights, const torch::Tensor& mean_w, double conv_clamp, torch::Device device,
    const StyleGan2Options& options) {
  ASSIGN_OR_RETURN(StyleGan2Config config, InferStyleGan2Config(weights));
  config.conv_clamp = conv_clamp;
  RETURN_IF_ERROR(config.Validate());
  // conv_clamp changes the images (a model clamped at 0.5 is another function), so a
  // clamp joins the fingerprint; without one, the canonical weights alone make it.
  std::string fingerprint;
  if (conv_clamp > 0) {
    StateDict with_clamp = weights;
    with_clamp.emplace_back("conv_clamp", torch::tensor({static_cast<float>(conv_clamp)}));
    fingerprint = WeightsFingerprint(with_clamp);
  } else {
    fingerprint = WeightsFingerprint(weights);
  }
  std::unique_ptr<StyleGan2Generator> g(
      new StyleGan2Generator(config, options, device, std::move(fingerprint)));
  WeightMap m(weights);
  const int64_t d = config.latent_size;
  RETURN_IF_ERROR(TorchCall("building StyleGAN2", [&]() -> absl::Status {
    // Mapping: EqualLinear(lr_mul 0.01) + fused_lrelu; the scale and the sqrt(2) gain
    // are folded into the weights (lrelu(a) * c = lrelu(a * c) for c > 0).
    const double w_scale = kMappingLrMul / std::sqrt(static_cast<double>(d)) * kSqrt2;
    for (int i = 1; i <= config.mapping_layers; ++i) {
      ASSIGN_OR_RETURN(torch::Tensor w, m.Take(absl::StrCat("style.", i, ".weight"), {d, d}));
      ASSIGN_OR_RETURN(torch::Tensor b, m.Take(absl::StrCat("style.", i, ".bias"), {d}));
      g->mapping_weights_.push_back((w * w_scale).contiguous().to(device));
      g->mapping_biases_.push_back((b * (kMappingLrMul * kSqrt2)).contiguous().to(device));
    }
    const std::vector<int64_t>& ch = config.channels;
    ASSIGN_OR_RETURN(torch::Tensor input, m.Take("input.input", {1, ch[0], 4, 4}));
    g->const_input_ = input.contiguous();
    Layer layer;
    RETURN_IF_ERROR(g->LoadLayer(m, "conv1.", ch[0], ch[0], 3, false, false, &layer));
    g->convs_.push_back(layer);
    RETURN_IF_ERROR(g->LoadLayer(m, "to_rgb1.", ch[0], 3, 1, false, true, &layer));
    g->to_rgbs_.push_back(layer);
    for (size_t b = 1; b < ch.size(); ++b) {
      const int k = static_cast<int>(b) - 1;
      RETURN_IF_ERROR(g->LoadLayer(m, absl::StrCat("convs.", 2 * k, "."), ch[b - 1], ch[b], 3, true,
                                   false, &layer));
      g->convs_.push_back(layer);
      RETURN_IF_ERROR(g->LoadLayer(m, absl::StrCat("convs.", 2 * k + 1, "."), ch[b], ch[b], 3,
                                   false, false, &layer));
      g->convs_.push_back(layer);
      RETURN_IF_ERROR(
          g->LoadLayer(m, absl::StrCat("to_rgbs.", k, "."), ch[b], 3, 1, true, true, &layer));
      g->to_rgbs_.push_back(layer);
    }
    for (int i = 0; i < config.num_noise_maps(); ++i) {
      const int64_t r = g->NoiseResolution(i);
      ASSIGN_OR_RETURN(torch::Tensor n, m.Take(absl::StrCat("noises.noise_", i), {1, 1, r, r}));
      g->const_noise_.push_back(n.contiguous().to(device));
    }
    RETURN_IF_ERROR(m.CheckAllUsed([](const std::string&) { return false; }));
    if (mean_w.defined()) {
      if (mean_w.sizes() != torch::IntArrayRef({d})) {
        return absl::InvalidArgumentError(absl::StrCat("mean w (latent_avg / w_avg) has shape ",
                                                       ShapeString(mean_w.sizes()), ", expected [",
                                                       d, "]"));
      }
      RETURN_IF_ERROR(CheckFinite(mean_w, "mean w (latent_avg / w_avg)"));
      g->mean_w_ = mean_w.to(device, torch::kFloat32).contiguous();
    }
    g->const_input_ = g->const_input_.to(device);
    g->blur_ = StyleGan2ResampleKernel().view({1, 1, 4, 4}).to(device);
    for (std::vector<Layer>* layers : {&g->convs_, &g->to_rgbs_}) {
      for (Layer& l : *layers) {
        for (torch::Tensor* t :
             {&l.weight, &l.weight_sq, &l.mod_weight, &l.mod_bias, &l.noise_strength, &l.bias}) {
          if (t->defined()) *t = t->to(device);
        }
      }
    }
    return absl::OkStatus();
  }));
  return g;
}

torch::Tensor StyleGan2Generator::Modulated(const Layer& l, const torch::Tensor& x,
                                            const torch::Tensor& w) {
  const int64_t b = x.size(0), in = x.size(1), out = l.weight.size(0), k = l.weight.size(2);
  torch::Tensor s = torch::addmm(l.mod_bias, w, l.mod_weight.t());  // [B, in]
  if (options_.modconv == ModulatedConv::kShared) {
    torch::Tensor y = x * s.view({b, in, 1, 1});
    if (l.upsample) {
      y = torch::conv_transpose2d(y, l.weight.transpose(0, 1), {}, /*stride=*/2, /*padding=*/0);
    } else {
      y = torch::conv2d(y, l.weight, {}, /*stride=*/1, /*padding=*/k / 2);
    }
    if (l.demodulate) {
      // sum over (in, kh, kw) of (W[o] * s[b])^2 = s^2 . sum_k W^2
      torch::Tensor dcoef = torch::rsqrt(torch::mm(s.square(), l.weight_sq.t()) + kDemodEps);
      y = y * dcoef.view({b, out, 1, 1});
    }
    return l.upsample ? BlurAfterUpsample(y, blur_) : y;
  }
  torch::Tensor wgt = l.weight.unsqueeze(0) * s.view({b, 1, in, 1, 1});  // [B, out, in, k, k]
  if (l.demodulate) {
    wgt = wgt * torch::rsqrt(wgt.square().sum({2, 3, 4}) + kDemodEps).view({b, out, 1, 1, 1});
  }
  const int64_t h = x.size(2), wd = x.size(3);
  torch::Tensor y;
  if (l.upsample) {
    y = torch::conv_transpose2d(x.reshape({1, b * in, h, wd}),
                                wgt.transpose(1, 2).reshape({b * in, out, k, k}), {},
                                /*stride=*/2, /*padding=*/0, /*output_padding=*/0, /*groups=*/b);
    y = y.view({b, out, y.size(2), y.size(3)});
    return BlurAfterUpsample(y, blur_);
  }
  y = torch::conv2d(x.reshape({1, b * in, h, wd}), wgt.reshape({b * out, in, k, k}), {},
                    /*stride=*/1, /*padding=*/k / 2, /*dilation=*/1, /*groups=*/b);
  return y.view({b, out, h, wd});
}

torch::Tensor StyleGan2Generator::StyledConv(const Layer& l, torch::Tensor x,
                                             const torch::Tensor& w, const torch::Tensor* noise) {
  x = Modulated(l, x, w);
  if (noise != nullptr) x = x + l.noise_strength * *noise;
  x = torch::leaky_relu(x + l.bias, kLeakySlope) * kSqrt2;
  // NVIDIA's conv_clamp: after the activation and its gain.
  if (config_.conv_clamp > 0) x = x.clamp(-config_.conv_clamp, config_.conv_clamp);
  return x;
}

torch::Tensor StyleGan2Generator::ToRgb(const Layer& l, const torch::Tensor& x,
                                        const torch::Tensor& w, const torch::Tensor& skip) {
  torch::Tensor y = Modulated(l, x, w) + l.bias;
  if (config_.conv_clamp > 0) y = y.clamp(-config_.conv_clamp, config_.conv_clamp);
  return skip.defined() ? UpsampleSkip(skip, blur_) + y : y;
}

StyleGan2Generator::BlockOut StyleGan2Generator::RunBlock(size_t k, const BlockOut& in,
                                                          const torch::Tensor& wplus,
                                                          const std::vector<torch::Tensor>& noise) {
  auto noise_at = [&](size_t i) { return noise.empty() ? nullptr : &noise[i]; };
  auto style = [&](int row) { return wplus.select(1, row); };
  // W+ wiring (spec section 1): conv1 <- w[0], to_rgb1 <- w[1]; block k: its two convs
  // <- w[2k - 1], w[2k], its ToRGB <- w[2k + 1].
  BlockOut out;
  if (k == 0) {
    out.x = const_input_.expand({wplus.size(0), -1, -1, -1});
    out.x = StyledConv(convs_[0], out.x, style(0), noise_at(0));
    out.skip = ToRgb(to_rgbs_[0], out.x, style(1), torch::Tensor());
    return out;
  }
  const int row = 2 * static_cast<int>(k) - 1;
  out.x = StyledConv(convs_[2 * k - 1], in.x, style(row), noise_at(2 * k - 1));
  out.x = StyledConv(convs_[2 * k], out.x, style(row + 1), noise_at(2 * k));
  out.skip = ToRgb(to_rgbs_[k], out.x, style(row + 2), in.skip);
  return out;
}

torch::Tensor StyleGan2Generator::Forward(const torch::Tensor& wplus,
                                          const std::vector<torch::Tensor>& noise) {
  BlockOut s;
  for (size_t k = 0; k < to_rgbs_.size(); ++k) s = RunBlock(k, s, wplus, noise);
  return s.skip;
}

int StyleGan2Generator::LayerBlock(int layer) const {
  return std::min((layer + 1) / 2, static_cast<int>(to_rgbs_.size()) - 1);
}

torch::Tensor StyleGan2Generator::ForwardBlend(const torch::Tensor& wa, const torch::Tensor& wb,
                                               const std::vector<torch::Tensor>& noise,
                                               int start_layer, const torch::Tensor& mask) {
  // a's path is Forward(wa)'s operations on the same tensors, so its image is Forward's.
  const int first_block = LayerBlock(start_layer);
  BlockOut a, b, m;  // m: the blended path, from first_block on
  for (size_t k = 0; k < to_rgbs_.size(); ++k) {
    const bool blend = static_cast<int>(k) >= first_block;
    if (blend && static_cast<int>(k) > first_block) m = RunBlock(k, m, wa, noise);
    a = RunBlock(k, a, wa, noise);
    b = RunBlock(k, b, wb, noise);
    if (static_cast<int>(k) == first_block) m = a;  // the blended path is a's until here
    if (blend) {
      const torch::Tensor mk = MaskAtResolution(mask, a.x.size(2));
      m.x = BlendActivations(m.x, b.x, mk);
      m.skip = BlendActivations(m.skip, b.skip, mk);
    }
  }
  return BlendActivations(a.skip, m.skip, mask);
}

torch::Tensor StyleGan2Generator::ForwardMapping(const torch::Tensor& z) {
  torch::Tensor x = z * torch::rsqrt(z.square().mean(1, /*keepdim=*/true) + kPixelNormEps);
  for (size_t i = 0; i < mapping_weights_.size(); ++i) {
    x = torch::leaky_relu(torch::addmm(mapping_biases_[i], x, mapping_weights_[i].t()),
                          kLeakySlope);
  }
  return x;
}

}  // namespace i2s

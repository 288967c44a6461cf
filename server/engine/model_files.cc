#include "server/engine/model_files.h"

#include <cmath>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "server/engine/torch_util.h"
#include "server/formats/weight_file.h"

namespace i2s {
namespace {

absl::StatusOr<torch::Tensor> CopyTensor(const RawTensor& t, const std::string& name) {
  auto out = CopyRawTensor(t);  // float32 for floats: fp16 blocks of NVIDIA's files too
  if (!out.ok()) return Annotate(out.status(), absl::StrCat("key '", name, "'"));
  return out;
}

const std::string* FindValue(const WeightFileContents& c, absl::string_view path) {
  for (const auto& [p, v] : c.values) {
    if (p == path) return &v;
  }
  return nullptr;
}

bool HasTensorWithPrefix(const WeightFileContents& c, absl::string_view prefix) {
  for (const auto& [name, t] : c.tensors) {
    if (absl::StartsWith(name, prefix)) return true;
  }
  return false;
}

bool HasTensor(const WeightFileContents& c, absl::string_view name) {
  for (const auto& [n, t] : c.tensors) {
    if (n == name) return true;
  }
  return false;
}

// The tensors under `prefix` (stripped of it), copied out as float32.
absl::StatusOr<StateDict> TensorsUnder(const WeightFileContents& c, absl::string_view prefix) {
  StateDict out;
  for (const auto& [name, t] : c.tensors) {
    if (!absl::StartsWith(name, prefix)) continue;
    ASSIGN_OR_RETURN(torch::Tensor copy, CopyTensor(t, name));
    out.emplace_back(name.substr(prefix.size()), std::move(copy));
  }
  return out;
}

// NVIDIA's `G_ema` tensors by name, consumed as they are renamed; errors name NVIDIA's key.
class NvidiaTensors {
 public:
  explicit NvidiaTensors(StateDict tensors) {
    for (auto& [name, t] : tensors) tensors_.emplace(name, std::move(t));
  }
  bool Has(const std::string& name) const { return tensors_.count(name) > 0; }
  absl::StatusOr<torch::Tensor> Take(const std::string& name, std::vector<int64_t> shape) {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("missing key 'G_ema.", name, "'"));
    }
    if (it->second.sizes() != torch::IntArrayRef(shape) ||
        it->second.scalar_type() != torch::kFloat32) {
      return absl::InvalidArgumentError(absl::StrCat(
          "key 'G_ema.", name, "' has shape ", ShapeString(it->second.sizes()), " (",
          c10::toString(it->second.scalar_type()), "), expected ", ShapeString(shape), " (float)"));
    }
    used_.insert(name);
    return it->second;
  }
  absl::StatusOr<std::vector<int64_t>> ShapeOf(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) {
      return absl::InvalidArgumentError(absl::StrCat("missing key 'G_ema.", name, "'"));
    }
    return std::vector<int64_t>(it->second.sizes().begin(), it->second.sizes().end());
  }
  // NVIDIA's resample filters are the normalised [1, 3, 3, 1] kernel (its gain of 4 is
  // applied at run time): checked, not carried (the canonical layout has rosinality's).
  absl::Status TakeFilter(const std::string& name) {
    if (!Has(name)) return absl::OkStatus();
    ASSIGN_OR_RETURN(torch::Tensor f, Take(name, {4, 4}));
    if (!torch::allclose(f * 4, StyleGan2ResampleKernel(), 1e-5, 1e-6)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "key 'G_ema.", name, "' is not the [1, 3, 3, 1] resampling filter of StyleGAN2"));
    }
    return absl::OkStatus();
  }
  absl::Status CheckAllUsed() const {
    for (const auto& [name, t] : tensors_) {
      if (used_.count(name) == 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "unexpected key 'G_ema.", name, "' (not part of a StyleGAN2 'skip' generator)"));
      }
    }
    return absl::OkStatus();
  }

 private:
  std::map<std::string, torch::Tensor> tensors_;
  std::set<std::string> used_;
};

// NVIDIA SynthesisLayer `nv` -> rosinality StyledConv `canon` (+ its constant noise).
absl::Status RenameConv(NvidiaTensors& nv, const std::string& p, const std::string& c,
                        int noise_index, int64_t in, int64_t out, int64_t d, int64_t res, bool up,
                        StateDict* sd, StateDict* noises) {
  ASSIGN_OR_RETURN(torch::Tensor w, nv.Take(p + "weight", {out, in, 3, 3}));
  sd->emplace_back(c + "conv.weight", w.unsqueeze(0));
  if (up) sd->emplace_back(c + "conv.blur.kernel", StyleGan2ResampleKernel());
  ASSIGN_OR_RETURN(torch::Tensor aw, nv.Take(p + "affine.weight", {in, d}));
  ASSIGN_OR_RETURN(torch::Tensor ab, nv.Take(p + "affine.bias", {in}));
  sd->emplace_back(c + "conv.modulation.weight", aw);
  sd->emplace_back(c + "conv.modulation.bias", ab);
  ASSIGN_OR_RETURN(torch::Tensor strength, nv.Take(p + "noise_strength", {}));
  sd->emplace_back(c + "noise.weight", strength.reshape({1}));
  ASSIGN_OR_RETURN(torch::Tensor bias, nv.Take(p + "bias", {out}));
  sd->emplace_back(c + "activate.bias", bias);
  ASSIGN_OR_RETURN(torch::Tensor noise, nv.Take(p + "noise_const", {res, res}));
  noises->emplace_back(absl::StrCat("noises.noise_", noise_index), noise.view({1, 1, res, res}));
  return nv.TakeFilter(p + "resample_filter");
}

absl::Status RenameToRgb(NvidiaTensors& nv, const std::string& p, const std::string& c, int64_t in,
                         int64_t d, bool up, StateDict* sd) {
  ASSIGN_OR_RETURN(torch::Tensor bias, nv.Take(p + "bias", {3}));
  sd->emplace_back(c + "bias", bias.view({1, 3, 1, 1}));
  if (up) sd->emplace_back(c + "upsample.kernel", StyleGan2ResampleKernel());
  ASSIGN_OR_RETURN(torch::Tensor w, nv.Take(p + "weight", {3, in, 1, 1}));
  sd->emplace_back(c + "conv.weight", w.unsqueeze(0));
  ASSIGN_OR_RETURN(torch::Tensor aw, nv.Take(p + "affine.weight", {in, d}));
  ASSIGN_OR_RETURN(torch::Tensor ab, nv.Take(p + "affine.bias", {in}));
  sd->emplace_back(c + "conv.modulation.weight", aw);
  sd->emplace_back(c + "conv.modulation.bias", ab);
  return absl::OkStatus();
}

// The first value found at any of `paths`.
const std::string* FirstValue(const WeightFileContents& c, std::vector<std::string> paths) {
  for (const std::string& p : paths) {
    if (const std::string* v = FindValue(c, p)) return v;
  }
  return nullptr;
}

// An NVIDIA stylegan2-ada-pytorch pickle's G_ema in rosinality's layout. The names
// (spec section 2): mapping.fc{i} -> style.{i+1}; mapping.w_avg -> mean w;
// synthesis.b4.const [C,4,4] -> input.input [1,C,4,4]; b4.conv1 -> conv1; b4.torgb ->
// to_rgb1; b{8*2^k}.conv0 / conv1 / torgb -> convs.{2k} / convs.{2k+1} / to_rgbs.{k};
// per layer weight [O,I,k,k] -> conv.weight [1,O,I,k,k] (no flip: both ports run the
// same transposed convolution), affine -> conv.modulation, noise_strength [] ->
// noise.weight [1], bias -> activate.bias (ToRGB: bias [1,3,1,1]), noise_const [R,R] ->
// noises.noise_j [1,1,R,R] in layer order.
absl::StatusOr<GeneratorFile> FromNvidia(const WeightFileContents& c) {
  GeneratorFile out;
  out.arch = GeneratorArch::kStyleGan2;
  out.container = "NVIDIA stylegan2-ada-pytorch pickle (G_ema)";
  if (HasTensorWithPrefix(c, "G_ema.synthesis.input.") ||
      HasTensorWithPrefix(c, "G_ema.synthesis.L0_")) {
    return absl::InvalidArgumentError(
        "a StyleGAN3 network (synthesis.input.*, synthesis.L0_*): not supported; only "
        "StyleGAN2 networks (the 'skip' architecture of configs E/F) are");
  }
  const std::string* c_dim = FirstValue(c, {"G_ema.c_dim", "G_ema._init_kwargs.c_dim"});
  if ((c_dim != nullptr && *c_dim != "0") || HasTensorWithPrefix(c, "G_ema.mapping.embed.")) {
    return absl::InvalidArgumentError(
        absl::StrCat("a conditional model (c_dim = ", c_dim != nullptr ? *c_dim : "> 0",
                     "): not supported; only unconditional StyleGAN2 models are"));
  }
  const std::string* arch =
      FirstValue(c, {"G_ema.synthesis.architecture", "G_ema.synthesis.b4.architecture",
                     "G_ema._init_kwargs.synthesis_kwargs.architecture"});
  if ((arch != nullptr && *arch != "skip") || HasTensorWithPrefix(c, "G_ema.synthesis.b8.skip.")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a StyleGAN2 generator with architecture '", arch != nullptr ? *arch : "resnet",
        "': not supported; only 'skip' (configs E/F, the published models) is"));
  }
  ASSIGN_OR_RETURN(StateDict g, TensorsUnder(c, "G_ema."));
  NvidiaTensors nv(std::move(g));
  int mapping_layers = 0;
  while (nv.Has(absl::StrCat("mapping.fc", mapping_layers, ".weight"))) ++mapping_layers;
  if (mapping_layers == 0)
    return absl::InvalidArgumentError("missing key 'G_ema.mapping.fc0.weight'");
  ASSIGN_OR_RETURN(std::vector<int64_t> fc0, nv.ShapeOf("mapping.fc0.weight"));
  if (fc0.size() != 2 || fc0[0] != fc0[1]) {
    return absl::InvalidArgumentError(
        absl::StrCat("key 'G_ema.mapping.fc0.weight' has shape ", ShapeString(fc0),
                     ": z_dim must equal w_dim (every published StyleGAN2 model has 512 and 512)"));
  }
  const int64_t d = fc0[0];
  StateDict sd;
  for (int i = 0; i < mapping_layers; ++i) {
    ASSIGN_OR_RETURN(torch::Tensor w, nv.Take(absl::StrCat("mapping.fc", i, ".weight"), {d, d}));
    ASSIGN_OR_RETURN(torch::Tensor b, nv.Take(absl::StrCat("mapping.fc", i, ".bias"), {d}));
    sd.emplace_back(absl::StrCat("style.", i + 1, ".weight"), w);
    sd.emplace_back(absl::StrCat("style.", i + 1, ".bias"), b);
  }
  if (nv.Has("mapping.w_avg")) {
    ASSIGN_OR_RETURN(out.mean_w, nv.Take("mapping.w_avg", {d}));
  }
  ASSIGN_OR_RETURN(std::vector<int64_t> cst, nv.ShapeOf("synthesis.b4.const"));
  if (cst.size() != 3 || cst[1] != 4 || cst[2] != 4) {
    return absl::InvalidArgumentError(absl::StrCat("key 'G_ema.synthesis.b4.const' has shape ",
                                                   ShapeString(cst), ", expected [C, 4, 4]"));
  }
  std::vector<int64_t> channels{cst[0]};
  ASSIGN_OR_RETURN(torch::Tensor const_input, nv.Take("synthesis.b4.const", cst));
  sd.emplace_back("input.input", const_input.unsqueeze(0));
  StateDict noises, to_rgbs;
  RETURN_IF_ERROR(RenameConv(nv, "synthesis.b4.conv1.", "conv1.", 0, cst[0], cst[0], d, 4, false,
                             &sd, &noises));
  RETURN_IF_ERROR(RenameToRgb(nv, "synthesis.b4.torgb.", "to_rgb1.", cst[0], d, false, &sd));
  RETURN_IF_ERROR(nv.TakeFilter("synthesis.b4.resample_filter"));
  for (int64_t res = 8, k = 0; nv.Has(absl::StrCat("synthesis.b", res, ".conv0.weight"));
       res *= 2, ++k) {
    if (res > 1024) return absl::InvalidArgumentError("more than 1024x1024: not supported");
    const std::string p = absl::StrCat("synthesis.b", res, ".");
    ASSIGN_OR_RETURN(std::vector<int64_t> w0, nv.ShapeOf(p + "conv0.weight"));
    if (w0.size() != 4) {
      return absl::InvalidArgumentError(absl::StrCat("key 'G_ema.", p, "conv0.weight' has shape ",
                                                     ShapeString(w0), ", expected [O, I, 3, 3]"));
    }
    const int64_t in = channels.back(), out_ch = w0[0];
    RETURN_IF_ERROR(RenameConv(nv, p + "conv0.", absl::StrCat("convs.", 2 * k, "."),
                               static_cast<int>(2 * k + 1), in, out_ch, d, res, true, &sd,
                               &noises));
    RETURN_IF_ERROR(RenameConv(nv, p + "conv1.", absl::StrCat("convs.", 2 * k + 1, "."),
                               static_cast<int>(2 * k + 2), out_ch, out_ch, d, res, false, &sd,
                               &noises));
    RETURN_IF_ERROR(
        RenameToRgb(nv, p + "torgb.", absl::StrCat("to_rgbs.", k, "."), out_ch, d, true, &to_rgbs));
    RETURN_IF_ERROR(nv.TakeFilter(p + "resample_filter"));
    channels.push_back(out_ch);
  }
  if (channels.size() < 2) {
    return absl::InvalidArgumentError("missing key 'G_ema.synthesis.b8.conv0.weight'");
  }
  RETURN_IF_ERROR(nv.CheckAllUsed());
  for (auto& e : to_rgbs) sd.push_back(std::move(e));
  for (auto& e : noises) sd.push_back(std::move(e));
  out.weights = std::move(sd);
  // conv_clamp: each layer keeps its own copy of the value (None = no clamp).
  const std::string* clamp = FirstValue(
      c, {"G_ema.synthesis.b4.conv1.conv_clamp", "G_ema._init_kwargs.synthesis_kwargs.conv_clamp"});
  if (clamp != nullptr && *clamp != "None") {
    double v = 0;
    if (!absl::SimpleAtod(*clamp, &v) || !(v > 0) || !std::isfinite(v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("conv_clamp '", *clamp, "' is not a number > 0"));
    }
    out.conv_clamp = v;
  }
  return out;
}

std::string FirstNames(const WeightFileContents& c) {
  std::vector<std::string> names;
  for (const auto& [n, t] : c.tensors) {
    if (names.size() == 4) break;
    names.push_back(absl::StrCat("'", n, "'"));
  }
  return names.empty() ? "no tensors" : absl::StrCat("keys ", absl::StrJoin(names, ", "), ", ...");
}

absl::StatusOr<GeneratorFile> Identify(const WeightFileContents& c) {
  for (const auto& [path, cls] : c.objects) {
    if (absl::StartsWith(cls, "dnnlib.tflib.")) {
      return absl::InvalidArgumentError(
          "an original TensorFlow StyleGAN pickle (dnnlib.tflib.network.Network): not "
          "supported; convert it to PyTorch first (NVIDIA's stylegan2-ada-pytorch legacy.py, "
          "or rosinality's convert_weight.py)");
    }
  }
  if (c.format == WeightFileFormat::kPickle || HasTensorWithPrefix(c, "G_ema.")) {
    if (!HasTensorWithPrefix(c, "G_ema.")) {
      return absl::InvalidArgumentError(
          absl::StrCat("a pickle without a G_ema network: not a StyleGAN2 network pickle (",
                       FirstNames(c), ")"));
    }
    return FromNvidia(c);
  }
  const std::string container = absl::StrCat(
      c.format == WeightFileFormat::kTorchZip ? "torch.save zip" : "torch.save legacy", "");
  GeneratorFile out;
  if (HasTensor(c, "g_mapping.dense0.weight") || HasTensorWithPrefix(c, "g_synthesis.")) {
    out.arch = GeneratorArch::kStyleGan1;
    out.container = absl::StrCat("StyleGAN1 port state dict (", container, ")");
    ASSIGN_OR_RETURN(out.weights, TensorsUnder(c, ""));
    return out;
  }
  std::string prefix;
  if (HasTensor(c, "g_ema.style.1.weight")) {
    prefix = "g_ema.";
    out.container = absl::StrCat(
        "rosinality checkpoint {g_ema", HasTensor(c, "latent_avg") ? ", latent_avg" : "",
        HasTensorWithPrefix(c, "d.") ? ", g, d, ..." : "", "} (", container, ")");
  } else if (HasTensor(c, "style.1.weight")) {
    out.container = absl::StrCat("rosinality g_ema state dict (", container, ")");
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("not a StyleGAN1 or StyleGAN2 generator: found ", FirstNames(c),
                     "; expected StyleGAN1's 'g_mapping.*' / 'g_synthesis.*', rosinality's 'g_ema' "
                     "('style.*', 'convs.*'), or an NVIDIA pickle's 'G_ema'"));
  }
  out.arch = GeneratorArch::kStyleGan2;
  ASSIGN_OR_RETURN(out.weights, TensorsUnder(c, prefix));
  if (!prefix.empty()) {
    for (const auto& [name, t] : c.tensors) {
      if (name != "latent_avg") continue;
      ASSIGN_OR_RETURN(out.mean_w, CopyTensor(t, name));
    }
  }
  return out;
}

}  // namespace

const char* GeneratorArchName(GeneratorArch arch) {
  return arch == GeneratorArch::kStyleGan1 ? "stylegan1" : "stylegan2";
}

absl::StatusOr<GeneratorArch> ParseGeneratorArch(absl::string_view name) {
  if (name == "stylegan1") return GeneratorArch::kStyleGan1;
  if (name == "stylegan2") return GeneratorArch::kStyleGan2;
  return absl::InvalidArgumentError(
      absl::StrCat("architecture '", name, "': expected stylegan1 or stylegan2"));
}

absl::StatusOr<GeneratorFile> ReadGeneratorFile(const std::string& path) {
  ASSIGN_OR_RETURN(WeightFileContents c, ReadWeightFile(path));
  auto file = Identify(c);
  if (!file.ok()) return Annotate(file.status(), path);
  return file;
}

absl::StatusOr<std::unique_ptr<Generator>> CreateGenerator(const GeneratorFile& file,
                                                           torch::Device device,
                                                           const GeneratorOptions& options) {
  if (file.arch == GeneratorArch::kStyleGan1) {
    ASSIGN_OR_RETURN(auto g, StyleGan1Generator::Create(file.weights, device, options.stylegan1));
    return std::unique_ptr<Generator>(std::move(g));
  }
  ASSIGN_OR_RETURN(auto g, StyleGan2Generator::Create(file.weights, file.mean_w, file.conv_clamp,
                                                      device, options.stylegan2));
  return std::unique_ptr<Generator>(std::move(g));
}

absl::StatusOr<std::unique_ptr<Generator>> LoadGenerator(const std::string& path,
                                                         torch::Device device,
                                                         const GeneratorOptions& options) {
  ASSIGN_OR_RETURN(GeneratorFile file, ReadGeneratorFile(path));
  auto g = CreateGenerator(file, device, options);
  if (!g.ok()) return Annotate(g.status(), path);
  return g;
}

GeneratorFile RandomGeneratorFile(GeneratorArch arch, int resolution, int fmap_base, uint64_t seed,
                                  int fmap_max) {
  GeneratorFile out;
  out.arch = arch;
  out.container = "seeded random weights";
  const StyleGan1Config sg1 = StyleGan1Config::FromFmap(resolution, fmap_base, fmap_max);
  if (arch == GeneratorArch::kStyleGan1) {
    out.weights = RandomStyleGan1Weights(sg1, seed);
    return out;
  }
  StyleGan2Config c;
  c.resolution = resolution;
  c.channels = sg1.channels;
  out.weights = RandomStyleGan2Weights(c, seed);
  return out;
}

}  // namespace i2s

// i2s_tool: offline commands on weight files and latents, no server needed.
//   info FILE                         what a weight file holds
//   synth --generator G --latent W.npy --out OUT.png|OUT.npy
//   map --generator G (--z Z.npy | --random N [--seed S]) [--wplus] --out W.npy
//   random-model --resolution R --fmap-base F --seed S --out FILE [--legacy]
// Exit codes: 0 success, 1 the command failed (message on stderr), 2 bad usage.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "server/base/status_macros.h"
#include "server/engine/stylegan1.h"
#include "server/engine/torch_util.h"
#include "server/engine/vgg16.h"
#include "server/engine/weights.h"
#include "server/formats/npy.h"
#include "server/imaging/image_io.h"

namespace i2s {
namespace {

struct Common {
  std::string device = "cpu";
  int threads = 0;
};

absl::Status ApplyCommon(const Common& c, torch::Device* device) {
  if (c.threads > 0) torch::set_num_threads(c.threads);
  ASSIGN_OR_RETURN(*device, ParseDevice(c.device));
  return absl::OkStatus();
}

enum class ModelKind { kStyleGan1, kVgg16, kUnknown };

ModelKind DetectKind(const StateDict& sd) {
  bool generator = false, vgg = false;
  for (const auto& [name, t] : sd) {
    generator |= absl::StartsWith(name, "g_mapping.") || absl::StartsWith(name, "g_synthesis.");
    vgg |= absl::StartsWith(name, "features.");
  }
  if (generator) return ModelKind::kStyleGan1;
  if (vgg) return ModelKind::kVgg16;
  return ModelKind::kUnknown;
}

absl::Status Info(const std::string& path) {
  ASSIGN_OR_RETURN(LoadedWeights w, LoadWeights(path));
  std::cout << "file: " << path << "\n"
            << "layout: torch.save " << TorchFileFormatName(w.format) << "\n"
            << "tensors: " << w.tensors.size() << "\n"
            << "parameters: " << ParameterCount(w.tensors) << "\n";
  switch (DetectKind(w.tensors)) {
    case ModelKind::kStyleGan1: {
      auto g = StyleGan1Generator::Create(w.tensors, torch::kCPU);
      if (!g.ok()) return Annotate(g.status(), path);
      const StyleGan1Config& c = (*g)->config();
      std::cout << "kind: stylegan1-generator\n"
                << "resolution: " << c.resolution << "\n"
                << "num_layers: " << c.num_layers() << "\n"
                << "latent_size: " << c.latent_size << "\n"
                << "mapping_layers: " << c.mapping_layers << "\n"
                << "channels: " << absl::StrJoin(c.channels, ",") << "\n"
                << "truncation_avg_latent: " << ((*g)->avg_latent().defined() ? "yes" : "no")
                << "\n"
                << "fingerprint: " << (*g)->fingerprint() << "\n";
      return absl::OkStatus();
    }
    case ModelKind::kVgg16: {
      auto v = Vgg16Extractor::Create(w.tensors, {}, torch::kCPU);
      if (!v.ok()) return Annotate(v.status(), path);
      std::cout << "kind: vgg16-features\n"
                << "fingerprint: " << (*v)->fingerprint() << "\n";
      return absl::OkStatus();
    }
    case ModelKind::kUnknown:
      break;
  }
  return absl::InvalidArgumentError(
      absl::StrCat(path,
                   ": not a StyleGAN1 generator (g_mapping.*, g_synthesis.*) nor VGG16 "
                   "(features.*); first key '",
                   w.tensors.empty() ? "" : w.tensors[0].first, "'"));
}

// --noise: "random" (seeded by --noise-seed), "zero", or an .npz of noise0..noise{L-1}.
absl::StatusOr<std::vector<torch::Tensor>> MakeNoise(const Generator& g, const std::string& spec,
                                                     uint64_t seed, int batch) {
  if (spec == "random") return g.MakeNoise(seed, batch);
  if (spec == "zero") return std::vector<torch::Tensor>{};
  ASSIGN_OR_RETURN(auto arrays, ReadNpzFile(spec));
  std::vector<torch::Tensor> maps(arrays.size());
  for (auto& [name, array] : arrays) {
    absl::string_view rest = name;
    size_t index = 0;
    if (!absl::ConsumePrefix(&rest, "noise") || !absl::SimpleAtoi(rest, &index) ||
        index >= maps.size() || maps[index].defined()) {
      return absl::InvalidArgumentError(
          absl::StrCat(spec, ": --noise archive members must be noise0 .. noise", arrays.size() - 1,
                       ", found '", name, "'"));
    }
    maps[index] = FloatArrayToTensor(array);
  }
  return maps;
}

struct SynthArgs {
  std::string generator, latent, out, noise = "random";
  uint64_t noise_seed = 0;
};

absl::Status Synth(const Common& common, const SynthArgs& a) {
  torch::Device device(torch::kCPU);
  RETURN_IF_ERROR(ApplyCommon(common, &device));
  const bool png = absl::EndsWith(a.out, ".png"), npy = absl::EndsWith(a.out, ".npy");
  if (!png && !npy) return absl::InvalidArgumentError("--out: must end in .png or .npy");
  ASSIGN_OR_RETURN(FloatArray latent, ReadNpyFile(a.latent));
  ASSIGN_OR_RETURN(auto g, StyleGan1Generator::Load(a.generator, device));
  torch::Tensor w = FloatArrayToTensor(latent);
  if (w.dim() == 2) w = w.unsqueeze(0);
  if (w.dim() != 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--latent ", a.latent, ": shape ", latent.ShapeString(), ", expected [", g->num_layers(),
        ", ", g->latent_size(), "] or [N, ", g->num_layers(), ", ", g->latent_size(), "]"));
  }
  ASSIGN_OR_RETURN(auto noise, MakeNoise(*g, a.noise, a.noise_seed, static_cast<int>(w.size(0))));
  auto image = g->Synthesize(w, noise);
  if (!image.ok()) return Annotate(image.status(), absl::StrCat("--latent ", a.latent));
  if (npy) return WriteNpyFile(a.out, TensorToFloatArray(*image));
  const int64_t n = image->size(0);
  for (int64_t i = 0; i < n; ++i) {
    std::string path = a.out;
    if (n > 1) path = absl::StrCat(a.out.substr(0, a.out.size() - 4), "-", i, ".png");
    RETURN_IF_ERROR(WriteRgb8Image(path, GeneratorOutputToRgb8((*image)[i])));
    std::cout << path << "\n";
  }
  return absl::OkStatus();
}

struct MapArgs {
  std::string generator, z, out;
  int random = 0;
  uint64_t seed = 0;
  bool wplus = false;
};

absl::Status Map(const Common& common, const MapArgs& a) {
  torch::Device device(torch::kCPU);
  RETURN_IF_ERROR(ApplyCommon(common, &device));
  if (a.z.empty() == (a.random == 0)) {
    return absl::InvalidArgumentError("map: give exactly one of --z FILE and --random N");
  }
  ASSIGN_OR_RETURN(auto g, StyleGan1Generator::Load(a.generator, device));
  torch::Tensor z;
  if (a.random > 0) {
    z = torch::randn({a.random, g->latent_size()},
                     at::make_generator<at::CPUGeneratorImpl>(a.seed));
  } else {
    ASSIGN_OR_RETURN(FloatArray z_array, ReadNpyFile(a.z));
    z = FloatArrayToTensor(z_array);
    if (z.dim() == 1) z = z.unsqueeze(0);
  }
  auto w = g->Map(z);
  if (!w.ok()) return Annotate(w.status(), absl::StrCat("--z ", a.z));
  torch::Tensor out = a.wplus ? w->unsqueeze(1).expand({-1, g->num_layers(), -1}) : *w;
  return WriteNpyFile(a.out, TensorToFloatArray(out));
}

struct RandomArgs {
  std::string kind = "stylegan1", out;
  int resolution = 1024, fmap_base = 8192, fmap_max = 512;
  uint64_t seed = 0;
  bool legacy = false;
};

absl::Status RandomModel(const RandomArgs& a) {
  StateDict sd;
  if (a.kind == "stylegan1") {
    StyleGan1Config c = StyleGan1Config::FromFmap(a.resolution, a.fmap_base, a.fmap_max);
    RETURN_IF_ERROR(Annotate(c.Validate(), "--resolution"));
    sd = RandomStyleGan1Weights(c, a.seed);
  } else {
    sd = RandomVgg16Weights(a.seed, /*all_features=*/true);
  }
  RETURN_IF_ERROR(
      SaveWeights(a.out, sd, a.legacy ? TorchFileFormat::kLegacy : TorchFileFormat::kZip));
  std::cout << a.out << " " << WeightsFingerprint(sd) << "\n";
  return absl::OkStatus();
}

int Run(int argc, char** argv) {
  CLI::App app{"i2s_tool: offline StyleGAN1 weight files, synthesis and latents"};
  app.require_subcommand(1);
  Common common;
  auto add_common = [&](CLI::App* cmd) {
    cmd->add_option("--device", common.device, "cpu, cuda, cuda:N or auto")->capture_default_str();
    cmd->add_option("--threads", common.threads, "intra-op CPU threads (0: LibTorch's default)");
  };

  std::string info_path;
  CLI::App* info = app.add_subcommand(
      "info", "Describe a weight file: kind, resolution, layers, parameters, fingerprint");
  info->add_option("file", info_path, "torch.save state dict (zip or legacy)")->required();

  SynthArgs synth_args;
  CLI::App* synth = app.add_subcommand("synth", "Render W+ latents with a generator");
  synth->add_option("--generator", synth_args.generator, "generator weight file")->required();
  synth->add_option("--latent", synth_args.latent, "float32 .npy, [L, 512] or [N, L, 512]")
      ->required();
  synth
      ->add_option("--out", synth_args.out,
                   "OUT.png: 8-bit RGB (OUT-i.png for N > 1); OUT.npy: raw float32 NCHW output")
      ->required();
  synth
      ->add_option("--noise", synth_args.noise,
                   "random (seeded), zero, or FILE.npz with noise0..noise{L-1}")
      ->capture_default_str();
  synth->add_option("--noise-seed", synth_args.noise_seed, "seed of the random noise maps")
      ->capture_default_str();
  add_common(synth);

  MapArgs map_args;
  CLI::App* map = app.add_subcommand(
      "map", "Run the mapping network: z [N, 512] -> w [N, 512] (or W+ [N, L, 512])");
  map->add_option("--generator", map_args.generator, "generator weight file")->required();
  map->add_option("--z", map_args.z, "float32 .npy, [N, 512]");
  map->add_option("--random", map_args.random, "instead of --z: N standard-normal z from --seed")
      ->check(CLI::PositiveNumber);
  map->add_option("--seed", map_args.seed, "seed for --random")->capture_default_str();
  map->add_flag("--wplus", map_args.wplus,
                "write W+ [N, L, 512] (w repeated on every layer), ready for synth");
  map->add_option("--out", map_args.out, "output .npy")->required();
  add_common(map);

  RandomArgs random_args;
  CLI::App* random =
      app.add_subcommand("random-model", "Write a seeded random model in the published key layout");
  random->add_option("--kind", random_args.kind, "stylegan1 or vgg16")
      ->check(CLI::IsMember({"stylegan1", "vgg16"}))
      ->capture_default_str();
  random->add_option("--resolution", random_args.resolution, "power of two, 8..1024")
      ->capture_default_str();
  random
      ->add_option("--fmap-base", random_args.fmap_base,
                   "channels = min(fmap_base / 2^stage, fmap_max)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  random->add_option("--fmap-max", random_args.fmap_max, "channel cap")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  random->add_option("--seed", random_args.seed, "random seed")->capture_default_str();
  random->add_option("--out", random_args.out, "output file")->required();
  random->add_flag("--legacy", random_args.legacy, "legacy (pre-1.6, non-zip) torch.save layout");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  absl::Status status;
  if (*info) status = Info(info_path);
  if (*synth) status = Synth(common, synth_args);
  if (*map) status = Map(common, map_args);
  if (*random) status = RandomModel(random_args);
  if (!status.ok()) {
    std::cerr << "i2s_tool: error: " << status.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace i2s

int main(int argc, char** argv) {
  try {
    return i2s::Run(argc, argv);
  } catch (const std::exception& e) {  // a bug: report it rather than abort
    std::cerr << "i2s_tool: internal error: " << e.what() << "\n";
    return 1;
  }
}

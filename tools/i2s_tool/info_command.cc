// info FILE: what a weight file holds (kind, resolution, layers, parameters, fingerprint).
#include <algorithm>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "server/engine/model_files.h"
#include "server/engine/stylegan1.h"
#include "server/engine/vgg16.h"
#include "server/engine/weights.h"
#include "server/formats/weight_file.h"
#include "tools/i2s_tool/command.h"

namespace i2s::tool {
namespace {

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

// A StyleGAN2 file (rosinality checkpoint or NVIDIA pickle): what it holds.
absl::Status InfoStyleGan2(const std::string& path) {
  ASSIGN_OR_RETURN(GeneratorFile file, ReadGeneratorFile(path));
  auto made = CreateGenerator(file, torch::kCPU);
  if (!made.ok()) return Annotate(made.status(), path);
  const Generator& g = **made;
  std::cout << "file: " << path << "\n"
            << "layout: " << file.container << "\n"
            << "tensors: " << file.weights.size() << "\n"
            << "parameters: " << ParameterCount(file.weights) << "\n"
            << "kind: " << g.architecture() << "-generator\n"
            << "resolution: " << g.resolution() << "\n"
            << "num_layers: " << g.num_layers() << "\n"
            << "num_noise_maps: " << g.num_noise_maps() << "\n"
            << "latent_size: " << g.latent_size() << "\n"
            << "mapping_layers: " << g.mapping_layers() << "\n"
            << "channels: " << absl::StrJoin(g.channels(), ",") << "\n"
            << "conv_clamp: " << (g.conv_clamp() > 0 ? absl::StrCat(g.conv_clamp()) : "none")
            << "\n"
            << "mean_w: " << (g.FileMeanW().defined() ? "from the file" : "none") << "\n"
            << "fingerprint: " << g.fingerprint() << "\n";
  return absl::OkStatus();
}

absl::Status Info(const std::string& path) {
  auto read = ReadWeightFile(path);
  if (!read.ok()) {
    // A pickle (PROTO first) gets the weight-file reader's error (an unknown callable,
    // a StyleGAN3 network, ...); anything else the torch.save reader's, which says what
    // a state dict file must be ("not a torch.save file", "not a state dict").
    std::ifstream f(path, std::ios::binary);
    if (f.get() == 0x80) return read.status();
    auto flat = LoadWeights(path);
    return flat.ok() ? read.status() : flat.status();
  }
  const WeightFileContents& contents = *read;
  const bool stylegan2 =
      contents.format == WeightFileFormat::kPickle ||
      std::any_of(contents.tensors.begin(), contents.tensors.end(), [](const auto& e) {
        return absl::StartsWith(e.first, "g_ema.") || e.first == "style.1.weight";
      });
  // A StyleGAN2 file (or a pickle: the generator reader's error says what it holds);
  // everything else is read as a flat state dict (StyleGAN1, VGG16).
  if (stylegan2) return InfoStyleGan2(path);
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
                   ": not a StyleGAN1 generator (g_mapping.*, g_synthesis.*), a StyleGAN2 one "
                   "(rosinality's g_ema: style.*, convs.*; NVIDIA's G_ema) nor VGG16 "
                   "(features.*); first key '",
                   w.tensors.empty() ? "" : w.tensors[0].first, "'"));
}

}  // namespace

std::vector<Command> AddInfoCommand(CLI::App* app) {
  auto path = std::make_shared<std::string>();
  CLI::App* info = app->add_subcommand(
      "info", "Describe a weight file: kind, resolution, layers, parameters, fingerprint");
  info->add_option("file", *path, "torch.save state dict (zip or legacy)")->required();
  return {{info, [path] { return Info(*path); }}};
}

}  // namespace i2s::tool

// random-model: a seeded random model in the published key layout (the tests' and
// benchmarks' stand-ins for trained files).
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <iostream>
#include <memory>
#include <string>
#include <utility>

#include "common/status_macros.h"
#include "server/engine/model_files.h"
#include "server/engine/stylegan1.h"
#include "server/engine/vgg16.h"
#include "server/engine/weights.h"
#include "server/formats/weight_file.h"
#include "tools/i2s_tool/command.h"

namespace i2s::tool {
namespace {

struct RandomArgs {
  std::string kind = "stylegan1", out;
  int resolution = 1024, fmap_base = 8192, fmap_max = 512;
  uint64_t seed = 0;
  bool legacy = false;
};

// rosinality's convert_weight.py layout: {g_ema: state dict, latent_avg: mean w}, the
// mean w over 4096 seeded z (what a trained file's latent_avg estimates).
absl::StatusOr<StateDict> RosinalityCheckpoint(const GeneratorFile& file, uint64_t seed) {
  ASSIGN_OR_RETURN(auto g, CreateGenerator(file, torch::kCPU));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed ^ 0x5eed);
  ASSIGN_OR_RETURN(torch::Tensor w, g->Map(torch::randn({4096, g->latent_size()}, gen)));
  StateDict out;
  for (const auto& [name, t] : file.weights) out.emplace_back("g_ema/" + name, t);
  out.emplace_back("latent_avg", w.mean(0).contiguous());
  return out;
}

absl::Status RandomModel(const RandomArgs& a) {
  StateDict sd;
  std::string fingerprint;
  if (a.kind == "stylegan1" || a.kind == "stylegan2") {
    StyleGan1Config c = StyleGan1Config::FromFmap(a.resolution, a.fmap_base, a.fmap_max);
    RETURN_IF_ERROR(Annotate(c.Validate(), "--resolution"));
    ASSIGN_OR_RETURN(GeneratorArch arch, ParseGeneratorArch(a.kind));
    GeneratorFile file = RandomGeneratorFile(arch, a.resolution, a.fmap_base, a.seed, a.fmap_max);
    fingerprint = WeightsFingerprint(file.weights);
    if (arch == GeneratorArch::kStyleGan1) {
      sd = std::move(file.weights);
    } else {
      ASSIGN_OR_RETURN(sd, RosinalityCheckpoint(file, a.seed));
    }
  } else {
    sd = RandomVgg16Weights(a.seed, /*all_features=*/true);
  }
  RETURN_IF_ERROR(
      SaveWeights(a.out, sd, a.legacy ? TorchFileFormat::kLegacy : TorchFileFormat::kZip));
  std::cout << a.out << " " << (fingerprint.empty() ? WeightsFingerprint(sd) : fingerprint) << "\n";
  return absl::OkStatus();
}

}  // namespace

std::vector<Command> AddRandomModelCommand(CLI::App* app) {
  auto a = std::make_shared<RandomArgs>();
  CLI::App* random = app->add_subcommand("random-model",
                                         "Write a seeded random model in the published key layout");
  random
      ->add_option("--kind,--arch", a->kind,
                   "stylegan1 (the PyTorch port's layout), stylegan2 (a rosinality checkpoint "
                   "{g_ema, latent_avg}) or vgg16")
      ->check(CLI::IsMember({"stylegan1", "stylegan2", "vgg16"}))
      ->capture_default_str();
  random->add_option("--resolution", a->resolution, "power of two, 8..1024")->capture_default_str();
  random->add_option("--fmap-base", a->fmap_base, "channels = min(fmap_base / 2^stage, fmap_max)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  random->add_option("--fmap-max", a->fmap_max, "channel cap")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  random->add_option("--seed", a->seed, "random seed")->capture_default_str();
  random->add_option("--out", a->out, "output file")->required();
  random->add_flag("--legacy", a->legacy, "legacy (pre-1.6, non-zip) torch.save layout");
  return {{random, [a] { return RandomModel(*a); }}};
}

}  // namespace i2s::tool

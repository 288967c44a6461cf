// random_weights: the seeded random weight files of `i2s_tool random-model`, from the
// engine alone (i2s_tool needs OpenCV and CLI11, which an engine-only build on a CUDA
// host does not have), so bench/embed_compare.py runs there too. Same functions, so the
// same seed writes the same tensors as i2s_tool.
//   random_weights --kind stylegan1 --resolution R --fmap-base F --seed S --out FILE
//   random_weights --arch stylegan2 --resolution R [--channel-multiplier 2] --seed S --out FILE
//   random_weights --kind vgg16 --seed S --out FILE
// StyleGAN2 (`--arch stylegan2`, or `--kind stylegan2`): a rosinality checkpoint as
// convert_weight.py writes it, {g_ema: state dict, latent_avg: mean w}, with rosinality's
// channel table for the multiplier (StyleGan2Config::Rosinality; 2 = the published
// config-f: 512 through 32x32, then 512, 256, 128, 64, 32 at 64..1024). latent_avg is the
// mean w over 4096 seeded z, as `i2s_tool random-model --kind stylegan2` makes it
// (multiplier m is its --fmap-base 8192 * m: the same channels and tensors).
// Prints the file and the weights' fingerprint (StyleGAN2: of the g_ema state dict, the
// fingerprint the engine reports for the file).
#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>
#include <string>

#include "bench/bench_flags.h"
#include "server/engine/model_files.h"
#include "server/engine/stylegan1.h"
#include "server/engine/stylegan2.h"
#include "server/engine/vgg16.h"
#include "server/engine/weights.h"

namespace {

int Usage(const char* why) {
  std::fprintf(stderr,
               "random_weights: %s\n"
               "usage: random_weights --kind stylegan1 --resolution R --fmap-base F --seed S "
               "--out FILE\n"
               "       random_weights --arch stylegan2 --resolution R [--channel-multiplier M] "
               "--seed S --out FILE\n"
               "       random_weights --kind vgg16 --seed S --out FILE\n",
               why);
  return 2;
}

// rosinality's convert_weight.py layout: "g_ema/<key>" nests under "g_ema" in the file.
absl::StatusOr<i2s::StateDict> RosinalityCheckpoint(const i2s::GeneratorFile& file, uint64_t seed) {
  auto g = i2s::CreateGenerator(file, torch::kCPU);
  if (!g.ok()) return g.status();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed ^ 0x5eed);
  auto w = (*g)->Map(torch::randn({4096, (*g)->latent_size()}, gen));
  if (!w.ok()) return w.status();
  i2s::StateDict out;
  for (const auto& [name, t] : file.weights) out.emplace_back("g_ema/" + name, t);
  out.emplace_back("latent_avg", w->mean(0).contiguous());
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string kind = "stylegan1", arch, out;
  int resolution = 1024, fmap_base = 0, channel_multiplier = 0, seed = 1;
  const i2s::bench::Flags flags{{{"--resolution", &resolution},
                                 {"--fmap-base", &fmap_base},
                                 {"--channel-multiplier", &channel_multiplier},
                                 {"--seed", &seed}},
                                {{"--kind", &kind}, {"--arch", &arch}, {"--out", &out}}};
  if (!flags.Parse(argc, argv, "random_weights")) return 2;
  if (!arch.empty()) {
    if (arch != "stylegan1" && arch != "stylegan2") return Usage("--arch stylegan1 or stylegan2");
    kind = arch;
  }
  if (out.empty()) return Usage("--out is required");
  if (kind != "stylegan1" && kind != "stylegan2" && kind != "vgg16") {
    return Usage("--kind stylegan1, stylegan2 or vgg16");
  }
  if (kind == "stylegan1" && channel_multiplier != 0) {
    return Usage("--channel-multiplier is for --arch stylegan2 (StyleGAN1: --fmap-base)");
  }
  if (kind == "stylegan2" && fmap_base != 0) {
    return Usage("--fmap-base is for StyleGAN1 (StyleGAN2: --channel-multiplier, 2 = config-f)");
  }
  i2s::StateDict sd;
  std::string fingerprint;
  if (kind == "stylegan1") {
    const auto config = i2s::StyleGan1Config::FromFmap(resolution, fmap_base ? fmap_base : 8192);
    if (absl::Status s = config.Validate(); !s.ok()) {
      std::fprintf(stderr, "random_weights: --resolution: %s\n", std::string(s.message()).c_str());
      return 2;
    }
    sd = i2s::RandomStyleGan1Weights(config, static_cast<uint64_t>(seed));
  } else if (kind == "stylegan2") {
    if (channel_multiplier == 0) channel_multiplier = 2;
    if (channel_multiplier < 1) return Usage("--channel-multiplier must be >= 1");
    const auto config = i2s::StyleGan2Config::Rosinality(resolution, channel_multiplier);
    if (absl::Status s = config.Validate(); !s.ok()) {
      std::fprintf(stderr, "random_weights: --resolution: %s\n", std::string(s.message()).c_str());
      return 2;
    }
    i2s::GeneratorFile file;
    file.arch = i2s::GeneratorArch::kStyleGan2;
    file.container = "seeded random weights";
    file.weights = i2s::RandomStyleGan2Weights(config, static_cast<uint64_t>(seed));
    fingerprint = i2s::WeightsFingerprint(file.weights);
    auto checkpoint = RosinalityCheckpoint(file, static_cast<uint64_t>(seed));
    if (!checkpoint.ok()) {
      std::fprintf(stderr, "random_weights: %s\n",
                   std::string(checkpoint.status().message()).c_str());
      return 1;
    }
    sd = *std::move(checkpoint);
  } else {
    sd = i2s::RandomVgg16Weights(static_cast<uint64_t>(seed), /*all_features=*/true);
  }
  if (absl::Status s = i2s::SaveWeights(out, sd, i2s::TorchFileFormat::kZip); !s.ok()) {
    std::fprintf(stderr, "random_weights: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::printf("%s %s\n", out.c_str(),
              (fingerprint.empty() ? i2s::WeightsFingerprint(sd) : fingerprint).c_str());
  return 0;
}

// random_weights: the seeded random weight files of `i2s_tool random-model`, from the
// engine alone (i2s_tool needs OpenCV and CLI11, which an engine-only build on a CUDA
// host does not have), so bench/embed_compare.py runs there too. Same functions, so the
// same seed writes the same tensors as i2s_tool.
//   random_weights --kind stylegan1 --resolution R --fmap-base F --seed S --out FILE
//   random_weights --kind vgg16 --seed S --out FILE
// Prints the file and the weights' fingerprint.
#include <cstdio>
#include <string>

#include "bench/bench_flags.h"
#include "server/engine/stylegan1.h"
#include "server/engine/vgg16.h"
#include "server/engine/weights.h"

int main(int argc, char** argv) {
  std::string kind = "stylegan1", out;
  int resolution = 1024, fmap_base = 8192, seed = 1;
  const i2s::bench::Flags flags{
      {{"--resolution", &resolution}, {"--fmap-base", &fmap_base}, {"--seed", &seed}},
      {{"--kind", &kind}, {"--out", &out}}};
  if (!flags.Parse(argc, argv, "random_weights")) return 2;
  if (out.empty() || (kind != "stylegan1" && kind != "vgg16")) {
    std::fprintf(stderr, "random_weights: --out is required, --kind stylegan1 or vgg16\n");
    return 2;
  }
  i2s::StateDict sd;
  if (kind == "stylegan1") {
    const auto config = i2s::StyleGan1Config::FromFmap(resolution, fmap_base);
    if (absl::Status s = config.Validate(); !s.ok()) {
      std::fprintf(stderr, "random_weights: --resolution: %s\n", std::string(s.message()).c_str());
      return 2;
    }
    sd = i2s::RandomStyleGan1Weights(config, static_cast<uint64_t>(seed));
  } else {
    sd = i2s::RandomVgg16Weights(static_cast<uint64_t>(seed), /*all_features=*/true);
  }
  if (absl::Status s = i2s::SaveWeights(out, sd, i2s::TorchFileFormat::kZip); !s.ok()) {
    std::fprintf(stderr, "random_weights: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::printf("%s %s\n", out.c_str(), i2s::WeightsFingerprint(sd).c_str());
  return 0;
}

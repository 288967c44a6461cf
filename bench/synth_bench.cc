// synth_bench: wall time of StyleGAN1 forward passes (synthesis, no autograd) on a
// seeded random model of the published shapes, for docs/PERFORMANCE.md.
//   synth_bench [--resolution 1024] [--fmap-base 8192] [--batch 1] [--reps 5]
//               [--warmup 1] [--threads N] [--device cpu|cuda] [--blend-start L]
// Prints one line per configuration: median and min milliseconds per pass. With
// --blend-start L (>= 0) each pass is a local edit instead (Generator::ForwardBlend of two
// latents under a mask over the left half, blended from W+ row L on).
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/bench_flags.h"
#include "server/engine/stylegan1.h"
#include "server/engine/torch_util.h"

int main(int argc, char** argv) {
  i2s::KeepLargeBlocksInTheHeap();
  int resolution = 1024, fmap_base = 8192, batch = 1, reps = 5, warmup = 1, threads = 0;
  int blend_start = -1;
  std::string device_spec = "cpu";
  const i2s::bench::Flags flags{{{"--resolution", &resolution},
                                 {"--fmap-base", &fmap_base},
                                 {"--batch", &batch},
                                 {"--reps", &reps},
                                 {"--warmup", &warmup},
                                 {"--threads", &threads},
                                 {"--blend-start", &blend_start}},
                                {{"--device", &device_spec}}};
  if (!flags.Parse(argc, argv, "synth_bench")) return 2;
  const torch::Device device = i2s::bench::SetUp(threads, device_spec, "synth_bench");
  auto config = i2s::StyleGan1Config::FromFmap(resolution, fmap_base);
  auto g = i2s::StyleGan1Generator::Create(i2s::RandomStyleGan1Weights(config, 1), device);
  if (!g.ok()) {
    std::fprintf(stderr, "synth_bench: %s\n", std::string(g.status().message()).c_str());
    return 1;
  }
  torch::InferenceMode inference;
  torch::Tensor w = torch::randn({batch, (*g)->num_layers(), 512}).to(device);
  torch::Tensor w2 = torch::randn({batch, (*g)->num_layers(), 512}).to(device);
  torch::Tensor mask = torch::zeros({1, 1, resolution, resolution}, device);
  mask.narrow(3, 0, resolution / 2).fill_(1);
  auto noise = (*g)->MakeNoise(0, batch);
  std::vector<double> ms;
  for (int i = 0; i < warmup + reps; ++i) {
    i2s::bench::Sync(device);
    auto t0 = std::chrono::steady_clock::now();
    torch::Tensor img = blend_start >= 0 ? (*g)->ForwardBlend(w, w2, noise, blend_start, mask)
                                         : (*g)->Forward(w, noise);
    i2s::bench::Sync(device);
    double dt =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (i >= warmup) ms.push_back(dt);
  }
  std::sort(ms.begin(), ms.end());
  std::printf(
      "engine=i2s device=%s resolution=%d fmap_base=%d batch=%d threads=%d blend_start=%d "
      "reps=%d median_ms=%.1f min_ms=%.1f\n",
      device.str().c_str(), resolution, fmap_base, batch, torch::get_num_threads(), blend_start,
      reps, ms[ms.size() / 2], ms.front());
  return 0;
}

// embed_bench: wall time of one Image2StyleGAN optimiser step (synthesis, VGG16
// perceptual + MSE loss, backward, Adam) for a batch of independent images.
//   embed_bench --generator G.pt --vgg V.pth [--batch 1] [--steps 5] [--warmup 2]
//               [--threads N] [--device cpu|cuda]
// Prints: median and min ms per step and image-steps per second.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/bench_flags.h"
#include "server/engine/embedder.h"
#include "server/engine/stylegan1.h"
#include "server/engine/torch_util.h"

int main(int argc, char** argv) {
  std::string generator, vgg, device_spec = "cpu";
  int batch = 1, steps = 5, warmup = 2, threads = 0;
  const i2s::bench::Flags flags{
      {{"--batch", &batch}, {"--steps", &steps}, {"--warmup", &warmup}, {"--threads", &threads}},
      {{"--generator", &generator}, {"--vgg", &vgg}, {"--device", &device_spec}}};
  if (!flags.Parse(argc, argv, "embed_bench")) return 2;
  if (generator.empty() || vgg.empty() || batch < 1 || steps < 1) {
    std::fprintf(stderr,
                 "embed_bench: --generator and --vgg are required, --batch and --steps >= 1\n");
    return 2;
  }
  const torch::Device device = i2s::bench::SetUp(threads, device_spec, "embed_bench");
  auto g = i2s::StyleGan1Generator::Load(generator, device);
  auto v = i2s::Vgg16Extractor::Load(vgg, {}, device);
  if (!g.ok() || !v.ok()) {
    std::fprintf(stderr, "embed_bench: %s\n",
                 std::string((g.ok() ? v.status() : g.status()).message()).c_str());
    return 1;
  }
  i2s::EmbedOptions options;
  options.steps = warmup + steps;
  options.init = i2s::LatentInit::kZeros;  // as the reference implementation
  std::vector<i2s::EmbedTarget> targets(batch);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const int64_t r = (*g)->resolution();
  for (int i = 0; i < batch; ++i) {
    targets[i].image = torch::rand({3, r, r}, gen);
    targets[i].seed = i;
  }
  std::vector<double> ms;
  i2s::EmbedCallbacks cb;
  cb.on_step = [&](const std::vector<i2s::StepMetrics>&, double seconds) {
    ms.push_back(seconds * 1000);
  };
  i2s::Embedder embedder(g->get(), v->get(), options);
  auto results = embedder.Run(targets, cb);
  if (!results.ok()) {
    std::fprintf(stderr, "embed_bench: %s\n", std::string(results.status().message()).c_str());
    return 1;
  }
  ms.erase(ms.begin(), ms.begin() + std::min<size_t>(warmup, ms.size()));
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  std::printf(
      "engine=i2s device=%s resolution=%lld batch=%d threads=%d steps=%d median_ms=%.1f "
      "min_ms=%.1f "
      "image_steps_per_s=%.3f\n",
      device.str().c_str(), static_cast<long long>(r), batch, torch::get_num_threads(),
      static_cast<int>(ms.size()), median, ms.front(), batch * 1000.0 / median);
  return 0;
}

// embed_bench: one Image2StyleGAN optimiser step (synthesis, MSE + VGG16 perceptual loss,
// backward, Adam, the per-step metrics copy) for a batch of independent images, through
// the engine's EmbedBatch, as the service runs it.
//   embed_bench --generator G.pt --vgg V.pth [--batch 1] [--steps 5] [--warmup 2]
//               [--threads N] [--device cpu|cuda] [--upsample phase-split|reference]
//               [--modconv shared|grouped] [--tf32 -1|0|1] [--cudnn-benchmark -1|0|1]
//               [--profile TRACE.json]
// The generator file is read as the service reads it (LoadGenerator: StyleGAN1 port
// state dicts, rosinality checkpoints, NVIDIA pickles, told apart by their content).
// --upsample applies to StyleGAN1, --modconv (the modulated convolution's form) to
// StyleGAN2; the line says which architecture ran (arch=) and, for StyleGAN2, the form.
// Prints one line of key=value: median and min ms per step, image-steps per second, the
// time from the start of loading the weights to the end of the first step (load_s: of
// which loading both weight files), and the peak
// memory of the steps (CUDA: the caching allocator's peak allocation; CPU: the growth of
// the resident set over the steps, measured by resetting the kernel's high-water mark).
// --profile writes a Chrome trace of one more step (LibTorch's profiler, CPU-side times).
// bench/embed_compare.py runs it beside the PyTorch-eager reference and tabulates both.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_flags.h"
#include "server/engine/embedder.h"
#include "server/engine/model_files.h"
#include "server/engine/torch_util.h"

namespace {

using Clock = std::chrono::steady_clock;

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// VmRSS or VmHWM of this process in KiB, from /proc/self/status (-1 if unreadable).
long ProcStatusKb(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::atol(line.c_str() + key.size() + 1);
  }
  return -1;
}

// Resets the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0).
bool ResetPeakRss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  return static_cast<bool>(out.flush());
}

[[noreturn]] void Fail(const absl::Status& status) {
  std::fprintf(stderr, "embed_bench: %s\n", std::string(status.message()).c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  const Clock::time_point start = Clock::now();
  i2s::KeepLargeBlocksInTheHeap();
  std::string generator, vgg, device_spec = "cpu", upsample = "phase-split", profile;
  std::string modconv = "shared";
  int batch = 1, steps = 5, warmup = 2, threads = 0, tf32 = -1, cudnn_benchmark = -1;
  const i2s::bench::Flags flags{{{"--batch", &batch},
                                 {"--steps", &steps},
                                 {"--warmup", &warmup},
                                 {"--threads", &threads},
                                 {"--tf32", &tf32},
                                 {"--cudnn-benchmark", &cudnn_benchmark}},
                                {{"--generator", &generator},
                                 {"--vgg", &vgg},
                                 {"--device", &device_spec},
                                 {"--upsample", &upsample},
                                 {"--modconv", &modconv},
                                 {"--profile", &profile}}};
  if (!flags.Parse(argc, argv, "embed_bench")) return 2;
  if (generator.empty() || vgg.empty() || batch < 1 || steps < 1 || warmup < 0 ||
      (upsample != "phase-split" && upsample != "reference") ||
      (modconv != "shared" && modconv != "grouped")) {
    std::fprintf(stderr,
                 "embed_bench: --generator and --vgg are required, --batch and --steps >= 1, "
                 "--warmup >= 0, --upsample phase-split or reference, --modconv shared or "
                 "grouped\n");
    return 2;
  }
  const torch::Device device = i2s::bench::SetUp(threads, device_spec, "embed_bench");
  if (tf32 >= 0) {
    at::globalContext().setAllowTF32CuBLAS(tf32 > 0);
    at::globalContext().setAllowTF32CuDNN(tf32 > 0);
  }
  if (cudnn_benchmark >= 0) at::globalContext().setBenchmarkCuDNN(cudnn_benchmark > 0);
  i2s::GeneratorOptions g_options;
  g_options.stylegan1.upsample =
      upsample == "reference" ? i2s::UpsampleConv::kReference : i2s::UpsampleConv::kPhaseSplit;
  g_options.stylegan2.modconv =
      modconv == "grouped" ? i2s::ModulatedConv::kGrouped : i2s::ModulatedConv::kShared;
  auto g = i2s::LoadGenerator(generator, device, g_options);
  if (!g.ok()) Fail(g.status());
  auto v = i2s::Vgg16Extractor::Load(vgg, {}, device);
  if (!v.ok()) Fail(v.status());
  const double load_s = MsSince(start) / 1000;

  i2s::EmbedOptions options;
  options.steps = warmup + steps + (profile.empty() ? 0 : 1);
  options.init = i2s::LatentInit::kZeros;  // as the reference implementation
  auto batcher = i2s::EmbedBatch::Create(g->get(), v->get(), options);
  if (!batcher.ok()) Fail(batcher.status());
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const int64_t r = (*g)->resolution();
  const std::string arch = (*g)->architecture();
  const bool stylegan2 = arch == "stylegan2";
  // What the line reports: each architecture's own option (the other one does not apply).
  const std::string upsample_shown = stylegan2 ? "-" : upsample;
  const std::string modconv_shown = stylegan2 ? " modconv=" + modconv : "";
  const bool rss_reset = !device.is_cuda() && ResetPeakRss();
  const long rss_before_kb = ProcStatusKb("VmRSS");
  i2s::ResetDevicePeakMemory(device);
  for (int i = 0; i < batch; ++i) {
    i2s::EmbedTarget target;
    target.image = torch::rand({3, r, r}, gen);
    target.seed = i;
    auto added = (*batcher)->Add(target);
    if (!added.ok()) Fail(added.status());
  }
  std::vector<double> ms;
  double first_step_s = 0;
  std::vector<i2s::StepMetrics> metrics;
  for (int i = 0; i < warmup + steps; ++i) {
    i2s::bench::Sync(device);
    const Clock::time_point t0 = Clock::now();
    if (absl::Status s = (*batcher)->Step({}, &metrics); !s.ok()) Fail(s);
    i2s::bench::Sync(device);
    if (i == 0) first_step_s = MsSince(start) / 1000;
    if (i >= warmup) ms.push_back(MsSince(t0));
  }
  double peak_mb = -1;
  std::string memory_kind = "none";
  if (auto peak = i2s::DevicePeakMemory(device); peak.ok()) {
    peak_mb = *peak / 1048576.0;
    memory_kind = "cuda_allocated_peak";
  } else if (rss_reset && rss_before_kb >= 0) {
    peak_mb = (ProcStatusKb("VmHWM") - rss_before_kb) / 1024.0;
    memory_kind = "rss_growth";
  }
  if (!profile.empty()) {
    torch::autograd::profiler::RecordProfile record(profile);
    if (absl::Status s = (*batcher)->Step({}, &metrics); !s.ok()) Fail(s);
    i2s::bench::Sync(device);
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  std::printf(
      "engine=i2s device=%s resolution=%lld batch=%d threads=%d upsample=%s steps=%d "
      "median_ms=%.2f min_ms=%.2f image_steps_per_s=%.3f first_step_s=%.2f peak_mb=%.1f "
      "mb_per_image=%.1f memory=%s load_s=%.2f arch=%s%s\n",
      device.str().c_str(), static_cast<long long>(r), batch, torch::get_num_threads(),
      upsample_shown.c_str(), static_cast<int>(ms.size()), median, ms.front(),
      batch * 1000.0 / median, first_step_s, peak_mb, peak_mb / batch, memory_kind.c_str(), load_s,
      arch.c_str(), modconv_shown.c_str());
  return 0;
}

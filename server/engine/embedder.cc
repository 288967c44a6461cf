#include "server/engine/embedder.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace i2s {
namespace {

// Seed of the z samples behind the mean w: fixed, so the mean (and every run that starts
// from it) is reproducible for a given generator.
constexpr uint64_t kMeanWSeed = 0x5eed;

}  // namespace

Embedder::Embedder(Generator* generator, Vgg16Extractor* vgg, EmbedOptions options, Lpips* lpips)
    : generator_(generator), vgg_(vgg), lpips_(lpips), options_(std::move(options)) {}

namespace {

std::mutex& StatsMutex() {
  static std::mutex mu;
  return mu;
}

// Cached per generator fingerprint and sample count.
std::map<std::string, Embedder::MappingStats>& StatsCache() {
  static auto* cache = new std::map<std::string, Embedder::MappingStats>();
  return *cache;
}

std::string StatsKey(const Generator& generator, int samples) {
  return absl::StrCat(generator.fingerprint(), "/", samples);
}

// The mapping's output over `samples` seeded z: its mean and total spread, in one pass
// (float64 sums).
absl::StatusOr<Embedder::MappingStats> ComputeMappingStats(Generator& generator, int samples) {
  if (auto known = Embedder::KnownMappingStats(generator, samples)) return *known;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(kMeanWSeed);
  torch::Tensor sum = torch::zeros({generator.latent_size()}, torch::kFloat64);
  double sum_sq = 0;
  constexpr int kChunk = 1000;
  for (int done = 0; done < samples; done += kChunk) {
    const int n = std::min(kChunk, samples - done);
    torch::Tensor z = torch::randn({n, generator.latent_size()}, gen);
    ASSIGN_OR_RETURN(torch::Tensor w, generator.Map(z));
    torch::Tensor w64 = w.to(torch::kCPU, torch::kFloat64);
    sum += w64.sum(0);
    sum_sq += w64.square().sum().item<double>();
  }
  torch::Tensor mean = sum / samples;
  Embedder::MappingStats stats;
  stats.mean = mean.to(torch::kFloat32);
  // sum_i |w_i - m|^2 = sum_i |w_i|^2 - N |m|^2
  stats.sigma = std::sqrt(std::max(0.0, sum_sq / samples - mean.square().sum().item<double>()));
  Embedder::RememberMappingStats(generator, samples, stats);
  return stats;
}

}  // namespace

std::optional<Embedder::MappingStats> Embedder::KnownMappingStats(const Generator& generator,
                                                                  int samples) {
  std::lock_guard<std::mutex> lock(StatsMutex());
  auto it = StatsCache().find(StatsKey(generator, samples));
  if (it == StatsCache().end()) return std::nullopt;
  return it->second;
}

void Embedder::RememberMappingStats(const Generator& generator, int samples, MappingStats stats) {
  std::lock_guard<std::mutex> lock(StatsMutex());
  StatsCache()[StatsKey(generator, samples)] = std::move(stats);
}

absl::StatusOr<torch::Tensor> Embedder::MeanW(Generator& generator, int samples) {
  ASSIGN_OR_RETURN(MappingStats stats, ComputeMappingStats(generator, samples));
  return stats.mean.to(generator.device());
}

absl::StatusOr<double> Embedder::SigmaW(Generator& generator, int samples) {
  ASSIGN_OR_RETURN(MappingStats stats, ComputeMappingStats(generator, samples));
  return stats.sigma;
}

absl::StatusOr<std::vector<EmbedResult>> Embedder::Run(
    const std::vector<EmbedTarget>& targets, const EmbedCallbacks& callbacks,
    const std::vector<std::optional<EmbedCheckpoint>>& resume) {
  ASSIGN_OR_RETURN(std::unique_ptr<EmbedBatch> batch,
                   EmbedBatch::Create(generator_, vgg_, options_, lpips_));
  if (targets.empty()) return absl::InvalidArgumentError("targets: empty");
  if (!resume.empty() && resume.size() != targets.size()) {
    return absl::InvalidArgumentError("resume: one entry per target expected");
  }
  std::vector<int> handles;
  for (size_t i = 0; i < targets.size(); ++i) {
    ASSIGN_OR_RETURN(int h, batch->Add(targets[i], resume.empty() ? std::nullopt : resume[i],
                                       absl::StrCat("targets[", i, "]")));
    handles.push_back(h);  // handles are 0, 1, ... in order, so they equal the indices
  }
  while (batch->num_running() > 0) {
    if (callbacks.cancelled && callbacks.cancelled()) {
      for (int h : handles) {
        batch->Cancel(h,
                      absl::CancelledError(absl::StrCat("cancelled after step ", batch->step(h))));
      }
      break;
    }
    auto t0 = std::chrono::steady_clock::now();
    std::vector<StepMetrics> metrics;
    RETURN_IF_ERROR(batch->Step(callbacks, &metrics));
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (callbacks.on_step && !metrics.empty()) callbacks.on_step(metrics, seconds);
  }
  std::vector<EmbedResult> results;
  for (int h : handles) {
    ASSIGN_OR_RETURN(EmbedResult r, batch->Take(h));
    results.push_back(std::move(r));
  }
  return results;
}

}  // namespace i2s

#include "server/engine/mapping_stats_file.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <optional>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"
#include "server/engine/embedder.h"
#include "server/formats/npy.h"

namespace i2s {
namespace {

constexpr absl::string_view kHeader = "i2s mapping stats v1";

std::string DeviceType(const Generator& generator) {
  return generator.device().is_cuda() ? "cuda" : generator.device().is_cpu() ? "cpu" : "other";
}

// The statistics in `text` if it is a valid file for this generator and sample count.
std::optional<Embedder::MappingStats> Parse(absl::string_view text, const Generator& generator,
                                            int samples) {
  std::vector<absl::string_view> lines = absl::StrSplit(text, '\n', absl::SkipEmpty());
  if (lines.size() != 6 || lines[0] != kHeader) return std::nullopt;
  auto value = [&](size_t i, absl::string_view key) -> std::optional<absl::string_view> {
    absl::string_view line = lines[i];
    if (!absl::ConsumePrefix(&line, key) || !absl::ConsumePrefix(&line, " ")) return std::nullopt;
    return line;
  };
  auto fingerprint = value(1, "fingerprint");
  auto device = value(2, "device");
  auto count = value(3, "samples");
  auto sigma_text = value(4, "sigma");
  auto mean_text = value(5, "mean");
  if (!fingerprint || !device || !count || !sigma_text || !mean_text) return std::nullopt;
  int n = 0;
  if (*fingerprint != generator.fingerprint() || *device != DeviceType(generator) ||
      !absl::SimpleAtoi(*count, &n) || n != samples) {
    return std::nullopt;
  }
  Embedder::MappingStats stats;
  if (!absl::SimpleAtod(*sigma_text, &stats.sigma) || !std::isfinite(stats.sigma) ||
      stats.sigma < 0) {
    return std::nullopt;
  }
  std::vector<absl::string_view> parts = absl::StrSplit(*mean_text, ' ');
  if (static_cast<int>(parts.size()) != generator.latent_size()) return std::nullopt;
  std::vector<float> mean(parts.size());
  for (size_t i = 0; i < parts.size(); ++i) {
    if (!absl::SimpleAtof(parts[i], &mean[i]) || !std::isfinite(mean[i])) return std::nullopt;
  }
  stats.mean =
      torch::from_blob(mean.data(), {static_cast<int64_t>(mean.size())}, torch::kFloat32).clone();
  return stats;
}

// %.17g and %.9g: a double and a float read back bit for bit.
std::string Format(const Embedder::MappingStats& stats, const Generator& generator, int samples) {
  std::string out = absl::StrCat(kHeader, "\nfingerprint ", generator.fingerprint(), "\ndevice ",
                                 DeviceType(generator), "\nsamples ", samples, "\nsigma ",
                                 absl::StrFormat("%.17g", stats.sigma), "\nmean");
  torch::Tensor mean = stats.mean.to(torch::kCPU, torch::kFloat32).contiguous();
  const float* p = mean.data_ptr<float>();
  for (int64_t i = 0; i < mean.numel(); ++i) absl::StrAppendFormat(&out, " %.9g", p[i]);
  out += "\n";
  return out;
}

}  // namespace

std::string MappingStatsPath(const std::string& dir, const Generator& generator, int samples) {
  absl::string_view hex = generator.fingerprint();
  absl::ConsumePrefix(&hex, "sha256:");
  return (std::filesystem::path(dir) /
          absl::StrCat("mapping-stats-", hex, "-", DeviceType(generator), "-", samples, ".txt"))
      .string();
}

absl::Status LoadOrSaveMappingStats(const std::string& dir, Generator& generator, int samples) {
  if (Embedder::KnownMappingStats(generator, samples)) return absl::OkStatus();
  const std::string path = MappingStatsPath(dir, generator, samples);
  if (auto text = ReadFileToString(path); text.ok()) {  // absent or unreadable: compute
    if (auto stats = Parse(*text, generator, samples)) {
      Embedder::RememberMappingStats(generator, samples, std::move(*stats));
      return absl::OkStatus();
    }
  }
  // SigmaW runs the mapping pass and keeps both statistics (no device copy of the mean).
  RETURN_IF_ERROR(Embedder::SigmaW(generator, samples).status());
  auto stats = Embedder::KnownMappingStats(generator, samples);
  if (!stats) return absl::InternalError("mapping statistics: computed but not kept");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::UnavailableError(absl::StrCat(dir, ": ", ec.message()));
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  RETURN_IF_ERROR(WriteStringToFile(tmp, Format(*stats, generator, samples)));
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    return absl::UnavailableError(absl::StrCat(path, ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace i2s

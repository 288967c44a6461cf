#include "server/engine/generator.h"

#include <ATen/CPUGeneratorImpl.h>

#include "absl/strings/str_cat.h"
#include "server/engine/torch_util.h"

namespace i2s {
namespace {

absl::Status CheckFloatFinite(const torch::Tensor& t, absl::string_view name) {
  if (!t.defined()) return absl::InvalidArgumentError(absl::StrCat(name, ": missing"));
  if (!t.is_floating_point()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": expected a floating-point tensor"));
  }
  return CheckFinite(t, name);
}

}  // namespace

int Log2Ceil(int v) {
  int l = 0;
  while ((1 << l) < v) ++l;
  return l;
}

absl::Status CheckGeneratorShape(int resolution, const std::vector<int64_t>& channels,
                                 int latent_size, int mapping_layers) {
  if (resolution < 8 || resolution > 1024 || (resolution & (resolution - 1)) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("resolution ", resolution, " is not a power of two from 8 to 1024"));
  }
  if (static_cast<int>(channels.size()) != Log2Ceil(resolution) - 1) {
    return absl::InvalidArgumentError("channel list does not match the resolution");
  }
  for (int64_t c : channels) {
    if (c < 1) return absl::InvalidArgumentError("channel counts must be positive");
  }
  if (latent_size < 1 || mapping_layers < 1) {
    return absl::InvalidArgumentError("latent size and mapping layers must be positive");
  }
  return absl::OkStatus();
}

absl::StatusOr<torch::Tensor> Generator::Synthesize(const torch::Tensor& wplus,
                                                    const std::vector<torch::Tensor>& noise) {
  return TorchCall("Synthesize", [&]() -> absl::StatusOr<torch::Tensor> {
    torch::NoGradGuard no_grad;
    auto status = CheckFloatFinite(wplus, "wplus");
    if (!status.ok()) return status;
    if (wplus.dim() != 3 || wplus.size(0) < 1 || wplus.size(1) != num_layers() ||
        wplus.size(2) != latent_size()) {
      return absl::InvalidArgumentError(absl::StrCat("wplus: shape ", ShapeString(wplus.sizes()),
                                                     ", expected [N, ", num_layers(), ", ",
                                                     latent_size(), "]"));
    }
    const int64_t batch = wplus.size(0);
    if (!noise.empty() && static_cast<int>(noise.size()) != num_noise_maps()) {
      return absl::InvalidArgumentError(absl::StrCat("noise: ", noise.size(), " maps, expected ",
                                                     num_noise_maps(), " (or none)"));
    }
    std::vector<torch::Tensor> moved;
    for (size_t l = 0; l < noise.size(); ++l) {
      std::string name = absl::StrCat("noise[", l, "]");
      status = CheckFloatFinite(noise[l], name);
      if (!status.ok()) return status;
      const int64_t r = NoiseResolution(static_cast<int>(l));
      if (noise[l].dim() != 4 || (noise[l].size(0) != 1 && noise[l].size(0) != batch) ||
          noise[l].size(1) != 1 || noise[l].size(2) != r || noise[l].size(3) != r) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": shape ", ShapeString(noise[l].sizes()), ", expected [1 or ",
                         batch, ", 1, ", r, ", ", r, "]"));
      }
      moved.push_back(noise[l].to(device(), torch::kFloat32));
    }
    return Forward(wplus.to(device(), torch::kFloat32), moved);
  });
}

absl::StatusOr<torch::Tensor> Generator::Map(const torch::Tensor& z) {
  return TorchCall("Map", [&]() -> absl::StatusOr<torch::Tensor> {
    torch::NoGradGuard no_grad;
    auto status = CheckFloatFinite(z, "z");
    if (!status.ok()) return status;
    if (z.dim() != 2 || z.size(0) < 1 || z.size(1) != latent_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("z: shape ", ShapeString(z.sizes()), ", expected [N, ", latent_size(), "]"));
    }
    return ForwardMapping(z.to(device(), torch::kFloat32));
  });
}

std::vector<torch::Tensor> Generator::DefaultNoise(uint64_t seed, int batch) const {
  std::vector<torch::Tensor> maps = ConstantNoise();
  if (maps.empty()) return MakeNoise(seed, batch);
  for (torch::Tensor& m : maps) m = m.expand({batch, -1, -1, -1}).clone();
  return maps;
}

std::vector<torch::Tensor> Generator::MakeNoise(uint64_t seed, int batch) const {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<torch::Tensor> maps;
  for (int l = 0; l < num_noise_maps(); ++l) {
    const int64_t r = NoiseResolution(l);
    maps.push_back(torch::randn({batch, 1, r, r}, gen, torch::kFloat32).to(device()));
  }
  return maps;
}

}  // namespace i2s

#include "server/engine/generator.h"

#include <ATen/CPUGeneratorImpl.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
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

// [N >= 1, num_layers, latent], floating point and finite.
absl::Status CheckWplus(const Generator& g, const torch::Tensor& w, absl::string_view name) {
  RETURN_IF_ERROR(CheckFloatFinite(w, name));
  if (w.dim() != 3 || w.size(0) < 1 || w.size(1) != g.num_layers() ||
      w.size(2) != g.latent_size()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": shape ", ShapeString(w.sizes()),
                                                   ", expected [N, ", g.num_layers(), ", ",
                                                   g.latent_size(), "]"));
  }
  return absl::OkStatus();
}

// No maps, or num_noise_maps() maps [1 or batch, 1, H, W]: returned as float32 on device().
absl::StatusOr<std::vector<torch::Tensor>> CheckNoise(const Generator& g,
                                                      const std::vector<torch::Tensor>& noise,
                                                      int64_t batch) {
  if (!noise.empty() && static_cast<int>(noise.size()) != g.num_noise_maps()) {
    return absl::InvalidArgumentError(absl::StrCat("noise: ", noise.size(), " maps, expected ",
                                                   g.num_noise_maps(), " (or none)"));
  }
  std::vector<torch::Tensor> moved;
  for (size_t l = 0; l < noise.size(); ++l) {
    std::string name = absl::StrCat("noise[", l, "]");
    RETURN_IF_ERROR(CheckFloatFinite(noise[l], name));
    const int64_t r = g.NoiseResolution(static_cast<int>(l));
    if (noise[l].dim() != 4 || (noise[l].size(0) != 1 && noise[l].size(0) != batch) ||
        noise[l].size(1) != 1 || noise[l].size(2) != r || noise[l].size(3) != r) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": shape ", ShapeString(noise[l].sizes()), ", expected [1 or ", batch,
                       ", 1, ", r, ", ", r, "]"));
    }
    moved.push_back(noise[l].to(g.device(), torch::kFloat32));
  }
  return moved;
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
    RETURN_IF_ERROR(CheckWplus(*this, wplus, "wplus"));
    ASSIGN_OR_RETURN(std::vector<torch::Tensor> moved, CheckNoise(*this, noise, wplus.size(0)));
    return Forward(wplus.to(device(), torch::kFloat32), moved);
  });
}

absl::StatusOr<torch::Tensor> Generator::SynthesizeBlend(const torch::Tensor& wa,
                                                         const torch::Tensor& wb,
                                                         const std::vector<torch::Tensor>& noise,
                                                         int start_layer,
                                                         const torch::Tensor& mask) {
  return TorchCall("SynthesizeBlend", [&]() -> absl::StatusOr<torch::Tensor> {
    torch::NoGradGuard no_grad;
    RETURN_IF_ERROR(CheckWplus(*this, wa, "wa"));
    RETURN_IF_ERROR(CheckFloatFinite(wb, "wb"));
    if (wb.sizes() != wa.sizes()) {
      return absl::InvalidArgumentError(absl::StrCat("wb: shape ", ShapeString(wb.sizes()),
                                                     ", expected wa's ", ShapeString(wa.sizes())));
    }
    const int64_t batch = wa.size(0);
    ASSIGN_OR_RETURN(std::vector<torch::Tensor> moved, CheckNoise(*this, noise, batch));
    if (start_layer < 0 || start_layer >= num_layers()) {
      return absl::InvalidArgumentError(
          absl::StrCat("start_layer: ", start_layer, " is outside [0, ", num_layers(), ")"));
    }
    RETURN_IF_ERROR(CheckFloatFinite(mask, "mask"));
    const int64_t r = resolution();
    if (mask.dim() != 4 || (mask.size(0) != 1 && mask.size(0) != batch) || mask.size(1) != 1 ||
        mask.size(2) != r || mask.size(3) != r) {
      return absl::InvalidArgumentError(absl::StrCat("mask: shape ", ShapeString(mask.sizes()),
                                                     ", expected [1 or ", batch, ", 1, ", r, ", ",
                                                     r, "]"));
    }
    if (mask.min().item<double>() < 0 || mask.max().item<double>() > 1) {
      return absl::InvalidArgumentError("mask: values must lie in [0, 1]");
    }
    return ForwardBlend(wa.to(device(), torch::kFloat32), wb.to(device(), torch::kFloat32), moved,
                        start_layer, mask.to(device(), torch::kFloat32));
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

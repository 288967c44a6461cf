#include "tools/i2s_tool/latent_files.h"

#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"
#include "server/engine/torch_util.h"
#include "server/formats/npy.h"
#include "server/imaging/image_io.h"

namespace i2s::tool {

absl::StatusOr<std::vector<torch::Tensor>> MakeNoise(const Generator& g, const std::string& spec,
                                                     uint64_t seed, int batch) {
  if (spec == "auto") return g.DefaultNoise(seed, batch);
  if (spec == "const") {
    if (g.ConstantNoise().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--noise const: this ", g.architecture(),
                                                     " file has no constant noise maps"));
    }
    return g.ConstantNoise();
  }
  if (spec == "random") return g.MakeNoise(seed, batch);
  if (spec == "zero") return std::vector<torch::Tensor>{};
  ASSIGN_OR_RETURN(auto arrays, ReadNpzFile(spec));
  std::vector<torch::Tensor> maps(arrays.size());
  for (auto& [name, array] : arrays) {
    absl::string_view rest = name;
    size_t index = 0;
    if (!absl::ConsumePrefix(&rest, "noise") || !absl::SimpleAtoi(rest, &index) ||
        index >= maps.size() || maps[index].defined()) {
      return absl::InvalidArgumentError(
          absl::StrCat(spec, ": --noise archive members must be noise0 .. noise", arrays.size() - 1,
                       ", found '", name, "'"));
    }
    maps[index] = FloatArrayToTensor(array);
  }
  return maps;
}

void AddNoiseOptions(CLI::App* cmd, NoiseArgs* n) {
  cmd->add_option("--noise", n->noise,
                  "auto (const where the file has constant maps, else random), const, random "
                  "(seeded), zero, or FILE.npz with noise0..noise{N-1}")
      ->capture_default_str();
  cmd->add_option("--noise-seed", n->noise_seed, "seed of the random noise maps")
      ->capture_default_str();
}

absl::Status CheckImageOut(const std::string& out) {
  if (!absl::EndsWith(out, ".png") && !absl::EndsWith(out, ".npy")) {
    return absl::InvalidArgumentError("--out: must end in .png or .npy");
  }
  return absl::OkStatus();
}

absl::Status RenderAndWrite(Generator& g, const torch::Tensor& w, const NoiseArgs& n,
                            const std::string& out, absl::string_view what) {
  RETURN_IF_ERROR(CheckImageOut(out));
  ASSIGN_OR_RETURN(auto noise, MakeNoise(g, n.noise, n.noise_seed, static_cast<int>(w.size(0))));
  auto image = g.Synthesize(w, noise);
  if (!image.ok()) return Annotate(image.status(), what);
  if (absl::EndsWith(out, ".npy")) return WriteNpyFile(out, TensorToFloatArray(*image));
  const int64_t count = image->size(0);
  for (int64_t i = 0; i < count; ++i) {
    std::string path = out;
    if (count > 1) path = absl::StrCat(out.substr(0, out.size() - 4), "-", i, ".png");
    RETURN_IF_ERROR(WriteRgb8Image(path, GeneratorOutputToRgb8((*image)[i])));
    std::cout << path << "\n";
  }
  return absl::OkStatus();
}

absl::Status WriteLatent(const std::string& path, const torch::Tensor& w) {
  FloatArray a = TensorToFloatArray(w);
  if (!absl::EndsWith(path, ".npz")) return WriteNpyFile(path, a);
  if (a.shape.size() == 2) a.shape.insert(a.shape.begin(), 1);
  ASSIGN_OR_RETURN(std::string npz, SerializeProjectedW(a));
  return WriteStringToFile(path, npz);
}

absl::StatusOr<torch::Tensor> ReadLatent(const std::string& path, const Generator& g,
                                         absl::string_view flag) {
  ASSIGN_OR_RETURN(FloatArray latent, ReadLatentFile(path));  // .npy or projected_w.npz
  torch::Tensor w = FloatArrayToTensor(latent);
  if (w.dim() == 2) w = w.unsqueeze(0);
  if (w.dim() != 3 || w.size(1) != g.num_layers() || w.size(2) != g.latent_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, " ", path, ": shape ", latent.ShapeString(), ", expected [", g.num_layers(), ", ",
        g.latent_size(), "] or [N, ", g.num_layers(), ", ", g.latent_size(), "]"));
  }
  return w;
}

}  // namespace i2s::tool

#include "server/jobs/model_registry.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "server/engine/model_files.h"

namespace i2s {
namespace {

// Seed of the demo model's random VGG16 weights (fixed, so the demo is reproducible).
constexpr uint64_t kDemoVggSeed = 16;

bool ValidModelName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-')) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelRegistry>> ModelRegistry::Create(
    const RegistryOptions& options) {
  if (options.models.empty()) {
    return absl::InvalidArgumentError("models: none given (use --model NAME=PATH or --demo-model)");
  }
  if (options.devices.empty()) return absl::InvalidArgumentError("devices: none given");
  std::unique_ptr<ModelRegistry> r(new ModelRegistry());
  r->devices_ = options.devices;
  std::set<std::string> names;
  bool all_demo = true;
  for (const ModelSource& m : options.models) {
    if (!ValidModelName(m.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("model name \"", m.name, "\": use 1-64 of A-Z a-z 0-9 _ . -"));
    }
    if (!names.insert(m.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("model name \"", m.name, "\" given twice"));
    }
    all_demo = all_demo && m.demo;
  }
  if (options.vgg_path.empty() && !all_demo) {
    return absl::InvalidArgumentError(
        "vgg: a VGG16 weight file (--vgg) is required for real models; only the demo model "
        "runs without one");
  }
  // Each file is read once; its weights are built on every device.
  std::vector<GeneratorFile> files;
  for (const ModelSource& m : options.models) {
    if (m.demo) {
      StyleGan1Config check = StyleGan1Config::FromFmap(m.demo_resolution, m.demo_fmap_base);
      RETURN_IF_ERROR(Annotate(check.Validate(), "demo model"));
      files.push_back(
          RandomGeneratorFile(m.demo_arch, m.demo_resolution, m.demo_fmap_base, m.demo_seed));
    } else {
      auto read = ReadGeneratorFile(m.path);
      if (!read.ok()) return Annotate(read.status(), absl::StrCat("model ", m.name));
      files.push_back(*std::move(read));
    }
  }
  // The VGG16 file is read once: its first convolutions serve the perceptual loss, all
  // thirteen LPIPS (classifier.* is never needed).
  const bool lpips = !options.lpips_path.empty();
  StateDict vgg_weights;
  if (!options.vgg_path.empty()) {
    auto loaded = LoadWeights(options.vgg_path, [lpips](const std::string& key) {
      return lpips ? IsVgg16ClassifierKey(key) : IsUnusedVgg16Key(key);
    });
    if (!loaded.ok()) return Annotate(loaded.status(), "vgg");
    vgg_weights = std::move(loaded->tensors);
  }
  StateDict lpips_lin;
  if (lpips) {
    auto loaded = LoadWeights(options.lpips_path);
    if (!loaded.ok()) return Annotate(loaded.status(), "lpips");
    lpips_lin = std::move(loaded->tensors);
  }
  for (const torch::Device& device : options.devices) {
    std::vector<std::unique_ptr<Generator>> gens;
    for (size_t i = 0; i < options.models.size(); ++i) {
      auto g = CreateGenerator(files[i], device);
      if (!g.ok()) {
        return Annotate(g.status(), absl::StrCat("model ", options.models[i].name, " ",
                                                 options.models[i].path));
      }
      gens.push_back(*std::move(g));
    }
    // The demo's random VGG16 has all thirteen convolutions when LPIPS needs them (the
    // first nine are the same either way).
    const StateDict& trunk = options.vgg_path.empty()
                                 ? RandomVgg16Weights(kDemoVggSeed, /*all_features=*/lpips)
                                 : vgg_weights;
    auto vgg = Vgg16Extractor::Create(trunk, {}, device);
    if (!vgg.ok()) return Annotate(vgg.status(), absl::StrCat("vgg ", options.vgg_path));
    std::unique_ptr<Lpips> lp;
    if (lpips) {
      auto made = Lpips::Create(trunk, lpips_lin, device);
      if (!made.ok()) {
        return Annotate(made.status(),
                        absl::StrCat("lpips ", options.lpips_path, " with vgg ", options.vgg_path));
      }
      lp = *std::move(made);
      r->lpips_fingerprint_ = lp->fingerprint();
    }
    r->generators_.push_back(std::move(gens));
    r->vggs_.push_back(*std::move(vgg));
    r->lpips_.push_back(std::move(lp));
  }
  for (size_t i = 0; i < options.models.size(); ++i) {
    const Generator& g = *r->generators_[0][i];
    ModelInfo info;
    info.name = options.models[i].name;
    info.fingerprint = g.fingerprint();
    info.architecture = g.architecture();
    info.resolution = g.resolution();
    info.num_layers = g.num_layers();
    info.latent_size = g.latent_size();
    info.num_noise_maps = g.num_noise_maps();
    info.mapping_layers = g.mapping_layers();
    info.channels = g.channels();
    info.conv_clamp = g.conv_clamp();
    info.source = files[i].container;
    info.has_file_mean_w = g.FileMeanW().defined();
    info.is_default = i == 0;
    info.is_demo = options.models[i].demo;
    r->infos_.push_back(info);
  }
  return r;
}

std::vector<std::string> ModelRegistry::device_names() const {
  std::vector<std::string> names;
  for (const torch::Device& d : devices_) names.push_back(d.str());
  return names;
}

absl::StatusOr<const ModelInfo*> ModelRegistry::Find(const std::string& name) const {
  if (name.empty()) return &infos_[0];
  for (const ModelInfo& info : infos_) {
    if (info.name == name) return &info;
  }
  std::vector<std::string> names;
  for (const ModelInfo& info : infos_) names.push_back(info.name);
  return absl::NotFoundError(absl::StrCat(
      "model \"", name, "\" not found; this server has: ", absl::StrJoin(names, ", ")));
}

Generator* ModelRegistry::generator(int device_index, const std::string& name) const {
  for (size_t i = 0; i < infos_.size(); ++i) {
    if (infos_[i].name == name) return generators_[device_index][i].get();
  }
  return nullptr;
}

}  // namespace i2s

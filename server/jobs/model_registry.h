// The models a server offers, loaded once per device at startup. Each model is a
// StyleGAN generator (by name) plus the VGG16 of the perceptual loss, shared by every
// model on a device. Immutable after Create: thread-safe to read; the networks
// themselves are used by one worker thread per device.
#ifndef I2S_SERVER_JOBS_MODEL_REGISTRY_H_
#define I2S_SERVER_JOBS_MODEL_REGISTRY_H_

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/generator.h"
#include "server/engine/lpips.h"
#include "server/engine/model_files.h"
#include "server/engine/vgg16.h"

namespace i2s {

struct ModelSource {
  std::string name;  // [A-Za-z0-9_.-]{1,64}
  // A generator weight file: StyleGAN1 (the PyTorch port's state dict) or StyleGAN2
  // (rosinality checkpoint, NVIDIA .pkl), told apart by content (engine/model_files.h).
  std::string path;
  // The seeded random demo model instead of a file (`--demo-model`): not a trained
  // network, for trying the service and for tests. Channels min(2 * fmap_base / res, 512)
  // at resolution res, for either architecture.
  bool demo = false;
  GeneratorArch demo_arch = GeneratorArch::kStyleGan1;
  int demo_resolution = 256, demo_fmap_base = 2048;
  uint64_t demo_seed = 2019;
};

struct RegistryOptions {
  std::vector<ModelSource> models;  // the first is the default
  // torchvision VGG16 weights for the perceptual loss. Empty: only allowed when every
  // model is a demo model, which then uses seeded random VGG weights.
  std::string vgg_path;
  // LPIPS's calibration file (the lpips wheel's lpips/weights/v0.1/vgg.pth; scripts/
  // fetch-lpips): with it, LPIPS is a loss term jobs may ask for and every embedding
  // reports its result's LPIPS. Needs the full VGG16 (or the demo's random one). Empty: off.
  std::string lpips_path;
  std::vector<torch::Device> devices;
};

struct ModelInfo {
  std::string name, fingerprint, architecture;
  int resolution = 0, num_layers = 0, latent_size = 0;
  int num_noise_maps = 0, mapping_layers = 0;
  std::vector<int64_t> channels;  // per synthesis block, 4x4 first
  double conv_clamp = 0;
  std::string source;  // what the weight file held (GeneratorFile::container)
  bool has_file_mean_w = false;
  bool is_default = false, is_demo = false;
};

class ModelRegistry {
 public:
  // Loads every model on every device. Errors name the model and file.
  static absl::StatusOr<std::unique_ptr<ModelRegistry>> Create(const RegistryOptions& options);

  const std::vector<ModelInfo>& models() const { return infos_; }
  const std::vector<torch::Device>& devices() const { return devices_; }
  std::vector<std::string> device_names() const;
  // The model called `name` ("" = the default); NotFound naming it and the choices.
  absl::StatusOr<const ModelInfo*> Find(const std::string& name) const;
  // The networks of a model on device `device_index` (in devices() order).
  Generator* generator(int device_index, const std::string& name) const;
  Vgg16Extractor* vgg(int device_index) const { return vggs_[device_index].get(); }
  // nullptr without RegistryOptions::lpips_path.
  Lpips* lpips(int device_index) const { return lpips_[device_index].get(); }
  bool has_lpips() const { return !lpips_.empty() && lpips_[0] != nullptr; }
  const std::string& lpips_fingerprint() const { return lpips_fingerprint_; }

 private:
  ModelRegistry() = default;
  std::vector<ModelInfo> infos_;
  std::vector<torch::Device> devices_;
  // generators_[device][model index in infos_]
  std::vector<std::vector<std::unique_ptr<Generator>>> generators_;
  std::vector<std::unique_ptr<Vgg16Extractor>> vggs_;
  std::vector<std::unique_ptr<Lpips>> lpips_;
  std::string lpips_fingerprint_;
};

}  // namespace i2s

#endif  // I2S_SERVER_JOBS_MODEL_REGISTRY_H_

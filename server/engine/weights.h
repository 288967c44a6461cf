// Weight files as LibTorch tensors: loading torch.save state dicts (zip or legacy, read
// by server/formats without Python), saving them, and model fingerprints.
// Thread-compatible.
#ifndef I2S_SERVER_ENGINE_WEIGHTS_H_
#define I2S_SERVER_ENGINE_WEIGHTS_H_

#include <torch/torch.h>

#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "server/formats/torch_file.h"

namespace i2s {

// Named CPU tensors in file order. Floating-point tensors are float32 (float16,
// bfloat16 and float64 are converted on load); integer tensors keep their dtype.
using StateDict = std::vector<std::pair<std::string, torch::Tensor>>;

struct LoadedWeights {
  std::string path;
  TorchFileFormat format = TorchFileFormat::kZip;
  StateDict tensors;
  std::vector<std::string> skipped;  // keys left out by the `skip` filter
};

// A contiguous CPU copy of a tensor as stored in a weight file (out of the file's
// buffer); floating point becomes float32 (float16, bfloat16, float64 on load), integer
// tensors keep their dtype. Errors (a LibTorch exception) are Internal.
absl::StatusOr<torch::Tensor> CopyRawTensor(const RawTensor& t);

// Reads a weight file. Keys for which `skip` returns true are checked like the others
// but not copied out of the file (the published VGG16 file carries a 500 MB classifier
// that the perceptual loss never uses).
absl::StatusOr<LoadedWeights> LoadWeights(
    const std::string& path, const std::function<bool(const std::string&)>& skip = nullptr);
// Writes float32 tensors in either torch.save layout (readable by torch.load).
absl::Status SaveWeights(const std::string& path, const StateDict& tensors, TorchFileFormat format);

// "sha256:<hex>" of the weights' content: names, dtypes, shapes and values, in name
// order. Independent of the file layout (zip and legacy files of the same weights, and
// the in-memory model they came from, share a fingerprint), so a latent stays bound to
// the network it was made with, not to a file.
std::string WeightsFingerprint(const StateDict& tensors);

int64_t ParameterCount(const StateDict& tensors);

// Checked access to a state dict by key, for model builders. Errors name the key.
class WeightMap {
 public:
  explicit WeightMap(const StateDict& tensors);

  bool Has(const std::string& key) const;
  // The float32 tensor `key`, which must have exactly `shape`.
  absl::StatusOr<torch::Tensor> Take(const std::string& key, std::vector<int64_t> shape);
  // The shape of `key` (not marked as used), or an error if it is missing.
  absl::StatusOr<std::vector<int64_t>> ShapeOf(const std::string& key) const;
  // Fails naming the first key that was never taken and is not `ignorable`.
  absl::Status CheckAllUsed(const std::function<bool(const std::string&)>& ignorable) const;
  std::vector<std::string> Keys() const;

 private:
  std::vector<std::pair<std::string, torch::Tensor>> entries_;
  std::set<std::string> used_;
};

}  // namespace i2s

#endif  // I2S_SERVER_ENGINE_WEIGHTS_H_

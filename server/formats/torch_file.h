// Reader and writer for state dicts saved by PyTorch's torch.save, in both layouts:
//   - zip (PyTorch >= 1.6 default): <archive>/data.pkl + <archive>/data/<key> + version;
//   - legacy (_use_new_zipfile_serialization=False, and files from 2019 such as the
//     published StyleGAN port): magic, protocol version, system info, the pickled
//     object, the pickled list of storage keys, then each storage as an int64 element
//     count followed by its raw little-endian bytes.
// No Python and no LibTorch: tensors come back as typed views into the file bytes, with
// every offset, size and stride checked against their storage. ParseTorchStateDict
// accepts only a flat dict of tensors (anything else, such as a TorchScript archive or a
// pickled nn.Module, is refused by name); weight_file.h reads any object tree. Both use
// the one unpickling policy of internal/weight_loader.h: nothing in the file is ever
// imported or executed, and calls outside an allow-list of rebuilders are refused.
// Thread-compatible.
#ifndef I2S_SERVER_FORMATS_TORCH_FILE_H_
#define I2S_SERVER_FORMATS_TORCH_FILE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace i2s {

enum class TorchFileFormat { kZip, kLegacy };
const char* TorchFileFormatName(TorchFileFormat format);

enum class DType {
  kFloat32,
  kFloat64,
  kFloat16,
  kBFloat16,
  kInt64,
  kInt32,
  kInt16,
  kInt8,
  kUInt8,
  kBool
};
int DTypeSize(DType dtype);
const char* DTypeName(DType dtype);

// A tensor as stored: `storage` holds the whole storage's bytes (it may be shared by
// several tensors); the tensor is the strided view at `offset` elements.
struct RawTensor {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> sizes;
  std::vector<int64_t> strides;
  int64_t offset = 0;
  // Points into the file (RawStateDict::file, WeightFileContents::file) or a decoded copy
  // the result keeps; not necessarily aligned: copy elements out with memcpy.
  absl::string_view storage;
  int64_t numel() const;
};

struct RawStateDict {
  TorchFileFormat format = TorchFileFormat::kZip;
  std::shared_ptr<const std::string> file;                  // keeps the tensors' bytes alive
  std::vector<std::shared_ptr<const std::string>> decoded;  // and decoded copies (rare)
  std::vector<std::pair<std::string, RawTensor>> tensors;   // in file order
};

// Parses the bytes of a torch.save'd dict of tensors (format auto-detected).
absl::StatusOr<RawStateDict> ParseTorchStateDict(std::shared_ptr<const std::string> file);
// Reads a file; errors are prefixed with the path.
absl::StatusOr<RawStateDict> ReadTorchStateDict(const std::string& path);

// A contiguous float32 tensor to write.
struct NamedFloatTensor {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;  // product(shape) values, C order
};

// Serialises an OrderedDict of float32 tensors exactly as torch.save would lay it out,
// so that torch.load in Python (1.x and 2.x) reads it back. A name "outer/inner" puts
// the tensor in a nested OrderedDict under the key "outer" (consecutive tensors of one
// `outer` share it): rosinality's {g_ema: {...}, latent_avg: tensor} checkpoints.
absl::StatusOr<std::string> SerializeTorchStateDict(const std::vector<NamedFloatTensor>& tensors,
                                                    TorchFileFormat format);

}  // namespace i2s

#endif  // I2S_SERVER_FORMATS_TORCH_FILE_H_

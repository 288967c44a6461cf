// Reads every tensor and plain value a weight file holds, whichever of the three
// containers it comes in:
//   - torch.save zip (PyTorch >= 1.6) and legacy layouts (torch_file.h), of any object
//     tree: rosinality's checkpoints ({g_ema, latent_avg}, train.py's {g, d, g_ema, g_optim,
//     d_optim, args: argparse.Namespace, ada_aug_p}, a bare state dict);
//   - a plain pickle (protocols 2-5, starting with PROTO): NVIDIA's stylegan2-ada-pytorch /
//     stylegan3 network .pkl (persistent objects of torch_utils.persistence, tensors whose
//     storages are torch.save streams inside the pickle), the original TensorFlow
//     StyleGAN2 pkls (dnnlib.tflib.network.Network objects holding numpy arrays).
// The format is detected from the content only. No Python and no LibTorch: tensors come
// back as typed, strided views into the file (or into decoded copies the result keeps
// alive), every offset, size and stride checked against their storage.
//
// Safety: nothing in a file is imported or run. Only an allow-list of tensor, numpy and
// container rebuilders may be "called" (internal/weight_loader.h lists it); a call of any
// other callable (os.system, builtins.eval, subprocess.*, anything unknown) is refused
// with an error naming it. Objects of unknown classes (argparse.Namespace, optimiser
// state, the discriminator, ...) are opaque data whose state is still walked. NVIDIA's
// module_src (the networks' source code) is a string that is never compiled; it is left
// out of `values`, as is TensorFlow's build_module_src. Bounds: nesting depth 100, 2^20
// pickle values, 2^20 walked entries, names of 64 KiB, 256 MiB of names and value text in
// all, 1 GiB of decoded copies, tensors of at most 64 dimensions (below, and
// internal/pickle.h and internal/weight_loader.h give the details).
//
// Thread-safe: the functions share no state; the result is an immutable value.
#ifndef I2S_SERVER_FORMATS_WEIGHT_FILE_H_
#define I2S_SERVER_FORMATS_WEIGHT_FILE_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/formats/torch_file.h"

namespace i2s {

enum class WeightFileFormat { kTorchZip, kTorchLegacy, kPickle };
const char* WeightFileFormatName(WeightFileFormat format);  // "torch zip", ...

// Most entries a walk visits (each container, leaf and tensor reached, counted once per
// path): real files have about 10^5; shared references repeated exponentially are refused.
constexpr size_t kMaxWeightFileEntries = size_t{1} << 20;
// Longest name (path) an entry may have: real ones are under 100 bytes.
constexpr size_t kMaxWeightFileNameBytes = size_t{1} << 16;
// Most bytes of names and value text a walk may build, all entries together: real files
// need a few MB; a long string reused through the memo must not be copied without end.
constexpr size_t kMaxWeightFileTextBytes = size_t{1} << 28;

struct WeightFileContents {
  WeightFileFormat format = WeightFileFormat::kTorchZip;
  std::shared_ptr<const std::string> file;  // keeps the tensors' bytes alive
  // Buffers some tensors point into instead of `file` (numpy data decoded from protocol-2
  // latin-1 strings and the like); usually empty.
  std::vector<std::shared_ptr<const std::string>> decoded;

  // Every tensor in the object tree (numpy arrays of bool, uint8, int8-64 and float16-64
  // included), named by its path from the root: dict keys (str; int, bool, None and float
  // keys as their text) and object attributes joined by '.', list, tuple and set items by
  // index. In a module-like dict (one holding `_parameters`, `_buffers` or `_modules`
  // dicts), those three names are dropped: NVIDIA's `G_ema.synthesis.b4.const`,
  // rosinality's `g_ema.conv1.conv.weight`, `latent_avg`. A tensor at the root is named "".
  // Several tensors may share one storage. In walk order, which is file order.
  std::vector<std::pair<std::string, RawTensor>> tensors;
  // Plain leaves as text: None -> "None", bools "True"/"False", ints in decimal (any
  // size), floats as the shortest text that reads back to the same value, laid out as
  // Python's repr without a trailing ".0" ("0.002", "10", "1e-08", "nan", "-inf"; float32
  // numpy scalars to the same float32: "0.1"), str as is (UTF-8). Numpy scalars included.
  // Left out: bytes, classes and functions named as values, module_src/build_module_src.
  // e.g. `G_ema._init_kwargs.synthesis_kwargs.conv_clamp` -> "256",
  // `args.channel_multiplier` -> "2".
  std::vector<std::pair<std::string, std::string>> values;
  // Objects that are not plain containers, path -> class: NVIDIA persistent objects ->
  // their meta class_name as stored (the bare class name, e.g. "Generator": the meta has
  // no module name), other instances -> "module.Name" ("argparse.Namespace",
  // "dnnlib.tflib.network.Network"), numpy arrays that are not tensors (object, string,
  // big-endian dtypes) -> "numpy.ndarray", bare storages -> their type
  // ("torch.FloatStorage"). OrderedDict, defaultdict and EasyDict count as dicts.
  std::vector<std::pair<std::string, std::string>> objects;
};

// Parses a whole weight file (format detected from the content). Errors are
// InvalidArgument and name what is wrong (and the path inside the file where known).
absl::StatusOr<WeightFileContents> ParseWeightFile(std::shared_ptr<const std::string> bytes);
// Reads and parses a file; errors are prefixed with the path.
absl::StatusOr<WeightFileContents> ReadWeightFile(const std::string& path);

}  // namespace i2s

#endif  // I2S_SERVER_FORMATS_WEIGHT_FILE_H_

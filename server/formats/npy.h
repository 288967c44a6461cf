// NumPy .npy (format versions 1, 2 and 3) and .npz (zip of .npy, stored or deflated) for
// little-endian float32 arrays in C order: the only layout the project exchanges.
// Every header field is checked; errors name what was wrong. Thread-compatible
// (free functions, no shared state).
#ifndef I2S_SERVER_FORMATS_NPY_H_
#define I2S_SERVER_FORMATS_NPY_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace i2s {

// A dense float32 array in C order.
struct FloatArray {
  std::vector<int64_t> shape;
  std::vector<float> values;  // product(shape) elements

  int64_t numel() const;
  std::string ShapeString() const;  // "[2, 18, 512]"
};

// Parses the bytes of a .npy file. Rejects other dtypes (naming the one found),
// Fortran order, big-endian data, malformed headers and truncated or oversized data.
absl::StatusOr<FloatArray> ParseNpy(absl::string_view bytes);
// Serialises as .npy format 1.0 ('<f4', C order, header padded to 64 bytes).
std::string SerializeNpy(const FloatArray& array);

// Reads/writes a .npy file; errors are prefixed with the path.
absl::StatusOr<FloatArray> ReadNpyFile(const std::string& path);
absl::Status WriteNpyFile(const std::string& path, const FloatArray& array);

// .npz: a zip archive of NAME.npy members, read stored (np.savez) or deflated
// (np.savez_compressed), written stored.
// Returns the arrays in archive order, names without the ".npy" suffix.
absl::StatusOr<std::vector<std::pair<std::string, FloatArray>>> ReadNpzFile(
    const std::string& path);
absl::Status WriteNpzFile(const std::string& path,
                          const std::vector<std::pair<std::string, FloatArray>>& arrays);

// The same in memory.
absl::StatusOr<std::vector<std::pair<std::string, FloatArray>>> ParseNpz(absl::string_view bytes);
absl::StatusOr<std::string> SerializeNpz(
    const std::vector<std::pair<std::string, FloatArray>>& arrays);

// A latent as users exchange it: .npy bytes, or NVIDIA's projector output
// `projected_w.npz` (an .npz whose one member `w` is [1, num_ws, 512], as
// stylegan2-ada-pytorch's projector.py writes it and its generate.py reads it), told apart
// by content (zip magic). The array comes back as stored; callers check the shape.
absl::StatusOr<FloatArray> ParseLatentBytes(absl::string_view bytes);
absl::StatusOr<FloatArray> ReadLatentFile(const std::string& path);
// `w` as NVIDIA's projected_w.npz (member `w`; [1, num_ws, 512] is what NVIDIA reads).
absl::StatusOr<std::string> SerializeProjectedW(const FloatArray& w);

// Whole-file helpers shared by the readers and writers of this folder.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);
absl::Status WriteStringToFile(const std::string& path, absl::string_view data);

}  // namespace i2s

#endif  // I2S_SERVER_FORMATS_NPY_H_

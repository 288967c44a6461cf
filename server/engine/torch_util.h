// Glue between LibTorch and the rest of the engine: exceptions become statuses at this
// boundary (torch throws c10::Error), device parsing, and conversions between tensors
// and the project's plain arrays. Thread-safe (stateless).
#ifndef I2S_SERVER_ENGINE_TORCH_UTIL_H_
#define I2S_SERVER_ENGINE_TORCH_UTIL_H_

#include <torch/torch.h>

#include <exception>
#include <string>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/formats/npy.h"

namespace i2s {

template <typename T>
struct IsStatusOr : std::false_type {};
template <typename T>
struct IsStatusOr<absl::StatusOr<T>> : std::true_type {};
// f's result if it is already a Status or StatusOr, else StatusOr of it.
template <typename F, typename R = std::invoke_result_t<F>>
using TorchCallResult = std::conditional_t<std::is_same_v<R, absl::Status> || IsStatusOr<R>::value,
                                           R, absl::StatusOr<R>>;

// Runs `f` and turns a thrown c10::Error / std::exception into an Internal status.
// Use it around torch calls whose inputs were validated beforehand: an exception then
// means a bug or a device failure (out of memory), not bad input.
template <typename F>
TorchCallResult<F> TorchCall(absl::string_view what, F&& f) {
  try {
    return f();
  } catch (const c10::Error& e) {
    return absl::InternalError(std::string(what) + ": " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    return absl::InternalError(std::string(what) + ": " + e.what());
  }
}

// glibc's malloc gives every block above its mmap threshold (32 MiB at most) a fresh
// mmap and unmaps it on free, so each optimiser step on the CPU page-faults its large
// activations in again: batch 4 at 256x256 spent 9.6 s of system time in 4 steps and took
// 3.0 s per step instead of 1.75 s (docs/PERFORMANCE.md). This keeps every block in the
// heap (no mmap) and returns free heap to the system only beyond 256 MiB. Call once, at
// the start of a program that runs the engine; a no-op without glibc. The cost: the
// heap keeps its high-water mark (0.8 GB more peak RSS in that case).
void KeepLargeBlocksInTheHeap();

// The CPUs this process may run on (its affinity mask; at least 1): what --threads 0
// means for i2s_server and i2s_tool. LibTorch's own default can be lower: Debian's 1.13
// starts with 1 intra-op thread on a 2-core VM.
int CpuCount();
// torch::set_num_threads(requested), or CpuCount() threads for requested <= 0: the
// meaning of --threads in i2s_server and i2s_tool.
void SetCpuThreads(int requested);

// "cpu", "cuda", "cuda:N", or "auto" (the first CUDA device if there is one, else CPU).
absl::StatusOr<torch::Device> ParseDevice(absl::string_view spec);

// float32 C-order copies between tensors (any device, float dtype) and FloatArray.
FloatArray TensorToFloatArray(const torch::Tensor& t);
torch::Tensor FloatArrayToTensor(const FloatArray& a);

// InvalidArgument "<name>: contains NaN or Inf" unless every element of `t` is finite.
absl::Status CheckFinite(const torch::Tensor& t, absl::string_view name);

// "[2, 3]" for error messages.
std::string ShapeString(torch::IntArrayRef shape);

// Bytes LibTorch's caching allocator holds on a CUDA device (reserved, free or in use);
// Unimplemented for the CPU or a LibTorch built without CUDA.
absl::StatusOr<int64_t> DeviceMemoryInUse(const torch::Device& device);
// The most bytes the caching allocator has handed out on `device` since the last
// ResetDevicePeakMemory (CUDA only; Unimplemented elsewhere).
absl::StatusOr<int64_t> DevicePeakMemory(const torch::Device& device);
void ResetDevicePeakMemory(const torch::Device& device);

}  // namespace i2s

#endif  // I2S_SERVER_ENGINE_TORCH_UTIL_H_

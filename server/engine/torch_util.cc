#include "server/engine/torch_util.h"

#ifdef I2S_HAVE_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <sched.h>

#include <algorithm>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace i2s {

void KeepLargeBlocksInTheHeap() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
}

int CpuCount() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  return std::max(1u, std::thread::hardware_concurrency());
}

void SetCpuThreads(int requested) {
  torch::set_num_threads(requested > 0 ? requested : CpuCount());
}

absl::StatusOr<torch::Device> ParseDevice(absl::string_view spec) {
  if (spec == "cpu") return torch::Device(torch::kCPU);
  if (spec == "auto") {
    return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0)
                                       : torch::Device(torch::kCPU);
  }
  if (absl::ConsumePrefix(&spec, "cuda")) {
    int index = 0;
    if (!spec.empty() &&
        (!absl::ConsumePrefix(&spec, ":") || !absl::SimpleAtoi(spec, &index) || index < 0)) {
      return absl::InvalidArgumentError(absl::StrCat("device: bad CUDA device index '", spec, "'"));
    }
    if (!torch::cuda::is_available()) {
      return absl::FailedPreconditionError(
          "device: CUDA requested but LibTorch sees no CUDA device");
    }
    if (index >= static_cast<int>(torch::cuda::device_count())) {
      return absl::InvalidArgumentError(absl::StrCat("device: cuda:", index, " does not exist (",
                                                     torch::cuda::device_count(), " devices)"));
    }
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("device: '", spec, "' is not one of cpu, cuda, cuda:N, auto"));
}

FloatArray TensorToFloatArray(const torch::Tensor& t) {
  torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  FloatArray out;
  out.shape.assign(c.sizes().begin(), c.sizes().end());
  out.values.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  return out;
}

torch::Tensor FloatArrayToTensor(const FloatArray& a) {
  return torch::from_blob(const_cast<float*>(a.values.data()), a.shape, torch::kFloat32).clone();
}

absl::Status CheckFinite(const torch::Tensor& t, absl::string_view name) {
  if (!torch::isfinite(t).all().item<bool>()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": contains NaN or Inf"));
  }
  return absl::OkStatus();
}

std::string ShapeString(torch::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::StatusOr<int64_t> DeviceMemoryInUse(const torch::Device& device) {
#ifdef I2S_HAVE_CUDA
  if (device.is_cuda()) {
    const int index = device.has_index() ? device.index() : 0;
    // Index 0 of each StatArray is the aggregate over the small and large pools.
    return c10::cuda::CUDACachingAllocator::getDeviceStats(index).reserved_bytes[0].current;
  }
#endif
  return absl::UnimplementedError(
      absl::StrCat("device memory of ", device.str(), " is not tracked"));
}

absl::StatusOr<int64_t> DevicePeakMemory(const torch::Device& device) {
#ifdef I2S_HAVE_CUDA
  if (device.is_cuda()) {
    const int index = device.has_index() ? device.index() : 0;
    return c10::cuda::CUDACachingAllocator::getDeviceStats(index).allocated_bytes[0].peak;
  }
#endif
  return absl::UnimplementedError(
      absl::StrCat("device memory of ", device.str(), " is not tracked"));
}

void ResetDevicePeakMemory([[maybe_unused]] const torch::Device& device) {
#ifdef I2S_HAVE_CUDA
  if (device.is_cuda()) {
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.has_index() ? device.index() : 0);
  }
#endif
}

}  // namespace i2s

// Flag parsing shared by the benchmark binaries: "--name value" pairs into named int
// and string slots, and the device/threads setup they all do. Benchmarks only: the
// product's CLIs use CLI11.
#ifndef I2S_BENCH_BENCH_FLAGS_H_
#define I2S_BENCH_BENCH_FLAGS_H_

#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "server/engine/torch_util.h"

namespace i2s::bench {

struct Flags {
  std::map<std::string, int*> ints;
  std::map<std::string, std::string*> strings;

  // False (after a message on stderr) on an unknown flag or a missing value.
  bool Parse(int argc, char** argv, const char* program) const {
    for (int i = 1; i < argc; i += 2) {
      const std::string flag = argv[i];
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s: %s needs a value\n", program, flag.c_str());
        return false;
      }
      if (auto it = ints.find(flag); it != ints.end()) {
        *it->second = std::atoi(argv[i + 1]);
      } else if (auto st = strings.find(flag); st != strings.end()) {
        *st->second = argv[i + 1];
      } else {
        std::fprintf(stderr, "%s: unknown flag %s\n", program, flag.c_str());
        return false;
      }
    }
    return true;
  }
};

// Waits for the device's queued work (CUDA), so a wall-clock time covers it.
inline void Sync(const torch::Device& d) {
  if (d.is_cuda()) torch::cuda::synchronize(d.index());
}

// Applies --threads (0: LibTorch's default) and parses --device; exits with 2 on error.
inline torch::Device SetUp(int threads, const std::string& device_spec, const char* program) {
  if (threads > 0) torch::set_num_threads(threads);
  auto device = ParseDevice(device_spec);
  if (!device.ok()) {
    std::fprintf(stderr, "%s: %s\n", program, std::string(device.status().message()).c_str());
    std::exit(2);
  }
  return *device;
}

}  // namespace i2s::bench

#endif  // I2S_BENCH_BENCH_FLAGS_H_

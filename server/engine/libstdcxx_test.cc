// A program that links PyPI's LibTorch must still use the system's libstdc++ for the standard
// library: that LibTorch exports its own copy of parts of a newer libstdc++ (std::filesystem
// among them), which calls internals Debian 12's libstdc++ lacks. cmake/Dependencies.cmake
// names libstdc++ first at link time; these tests fail (the second one by a crash) without it.

#include <dlfcn.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "gtest/gtest.h"
#include "server/engine/torch_util.h"

namespace i2s {
namespace {

TEST(SystemLibstdcxxTest, FilesystemResolvesToTheSystemLibrary) {
  // LibTorch is really loaded in this program (a call into it), so its exports take part.
  ASSERT_EQ(torch::ones({2}).sum().item<float>(), 2.f);
  using RemoveAll = std::uintmax_t (*)(const std::filesystem::path&);
  const RemoveAll remove_all = &std::filesystem::remove_all;
  Dl_info info{};
  ASSERT_NE(dladdr(reinterpret_cast<void*>(remove_all), &info), 0);
  ASSERT_NE(info.dli_fname, nullptr);
  EXPECT_NE(std::string(info.dli_fname).find("libstdc++"), std::string::npos)
      << "std::filesystem::remove_all comes from " << info.dli_fname;
}

TEST(SystemLibstdcxxTest, RemoveAllOfANonEmptyFolder) {
  const std::filesystem::path dir =
      std::filesystem::path(::testing::TempDir()) / ("remove-all-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir / "a" / "b");
  std::ofstream(dir / "a" / "b" / "file") << "x";
  std::ofstream(dir / "top") << "y";
  EXPECT_EQ(std::filesystem::remove_all(dir), 5u);
  EXPECT_FALSE(std::filesystem::exists(dir));
}

}  // namespace
}  // namespace i2s

# Every find_package of the project, in one place.
#
# Debian 12 packages (scripts/setup installs them): libtorch-dev 1.13 (CPU), libabsl-dev
# 20220623, libopencv-dev 4.6, libcli11-dev, libgtest-dev.
#
# Which LibTorch, one option (I2S_TORCH):
#   system  Debian's libtorch-dev (CPU), or whatever CMAKE_PREFIX_PATH points at
#   pypi    PyPI's CUDA `torch` wheel and the CUDA 13.0 wheels, unpacked by
#           scripts/fetch-torch into .cache/torch-cuda (I2S_TORCH_DIR); the CUDA toolkit
#           (nvcc, headers) is the one assembled there from PyPI too (I2S_CUDA_TOOLKIT)
#   python  the LibTorch inside `python3 -c 'import torch'` (a CUDA host's own PyTorch;
#           scripts/gpu-check.sh), with an unpacked libabsl-dev given as -Dabsl_DIR=...

if(I2S_ENGINE_ONLY AND I2S_ENABLE_TOOLS)
  message(STATUS "I2S_ENGINE_ONLY=ON: the server, imaging and tools are not built")
  set(I2S_ENABLE_TOOLS OFF CACHE BOOL "" FORCE)
endif()

find_package(Threads REQUIRED)
find_package(absl REQUIRED CONFIG)

if(I2S_FUZZ)
  # The sanitizer build (scripts/fuzz): clang's libFuzzer, ASan and UBSan on every target;
  # `fuzzer-no-link` instruments the libraries, the fuzz executables add `fuzzer`.
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "I2S_FUZZ needs clang (CXX=clang++): libFuzzer is clang's")
  endif()
  if(I2S_ENGINE_ONLY)
    message(FATAL_ERROR "I2S_FUZZ and I2S_ENGINE_ONLY are separate builds; choose one")
  endif()
  add_compile_options(-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined -fno-sanitize-recover=undefined)
  find_package(SQLite3 REQUIRED)  # the store and its tests run sanitized too
  find_package(nlohmann_json REQUIRED CONFIG)
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(LIBPQ REQUIRED IMPORTED_TARGET libpq)
  # The API's messages, for the request checks (request_check_fuzz).
  find_package(Protobuf REQUIRED)
  find_program(I2S_PROTOC NAMES protoc REQUIRED)
  if(I2S_ENABLE_TESTS)
    find_package(GTest REQUIRED)
    include(GoogleTest)
  endif()
  return()
endif()

set(I2S_TORCH "system" CACHE STRING "Which LibTorch: system, pypi or python")
set_property(CACHE I2S_TORCH PROPERTY STRINGS system pypi python)
if(I2S_TORCH STREQUAL "pypi")
  set(I2S_TORCH_DIR "${PROJECT_SOURCE_DIR}/.cache/torch-cuda" CACHE PATH
      "The folder scripts/fetch-torch unpacks PyPI's torch and nvidia-* wheels into")
  if(NOT EXISTS "${I2S_TORCH_DIR}/torch/share/cmake/Torch/TorchConfig.cmake")
    message(FATAL_ERROR "I2S_TORCH=pypi: no LibTorch in ${I2S_TORCH_DIR}; run scripts/fetch-torch")
  endif()
  list(PREPEND CMAKE_PREFIX_PATH "${I2S_TORCH_DIR}/torch/share/cmake")
  # The CUDA toolkit that LibTorch's CMake config asks for (nvcc, headers, link names):
  # by default the one scripts/fetch-torch assembles from the same release's wheels, so
  # the build does not depend on what the machine has installed.
  set(I2S_CUDA_TOOLKIT "${I2S_TORCH_DIR}/nvidia/cu13" CACHE PATH
      "CUDA toolkit root for I2S_TORCH=pypi (default: PyPI's, from scripts/fetch-torch)")
  if(NOT EXISTS "${I2S_CUDA_TOOLKIT}/bin/nvcc")
    message(FATAL_ERROR "I2S_TORCH=pypi: no nvcc in ${I2S_CUDA_TOOLKIT}/bin; run scripts/fetch-torch")
  endif()
  set(CUDA_TOOLKIT_ROOT_DIR "${I2S_CUDA_TOOLKIT}" CACHE PATH "" FORCE)
  set(CUDAToolkit_ROOT "${I2S_CUDA_TOOLKIT}")
  set(CMAKE_CUDA_COMPILER "${I2S_CUDA_TOOLKIT}/bin/nvcc" CACHE FILEPATH "" FORCE)
  set(CUDNN_ROOT "${I2S_TORCH_DIR}/nvidia/cudnn" CACHE PATH "" FORCE)
  # TorchConfig's find_library(torch ...) searches the system before its own folder, and
  # Debian's libtorch-dev may be installed beside the wheel: its folder goes first (for
  # find_library only; as a prefix, other packages' headers would be looked for there too).
  list(PREPEND CMAKE_LIBRARY_PATH "${I2S_TORCH_DIR}/torch/lib")
elseif(I2S_TORCH STREQUAL "python")
  set(I2S_TORCH_PYTHON "python3" CACHE STRING "The Python whose torch I2S_TORCH=python uses")
  execute_process(
    COMMAND ${I2S_TORCH_PYTHON} -c "import torch; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _i2s_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _i2s_rc)
  if(NOT _i2s_rc EQUAL 0)
    message(FATAL_ERROR "I2S_TORCH=python: `${I2S_TORCH_PYTHON} -c 'import torch'` failed")
  endif()
  list(PREPEND CMAKE_PREFIX_PATH "${_i2s_torch_prefix}")
  get_filename_component(_i2s_torch_lib "${_i2s_torch_prefix}/../../lib" ABSOLUTE)
  list(PREPEND CMAKE_LIBRARY_PATH "${_i2s_torch_lib}")
elseif(NOT I2S_TORCH STREQUAL "system")
  message(FATAL_ERROR "I2S_TORCH must be system, pypi or python, not '${I2S_TORCH}'")
endif()
if(NOT I2S_ENGINE_ONLY)
  # Before LibTorch: the CMake config of PyPI's LibTorch defines protobuf::libprotobuf as an
  # empty stand-in when no such target exists yet (its protobuf is private to
  # libtorch_cpu), and FindProtobuf then keeps that stand-in, so the API's generated code
  # would link no protobuf at all. Found first, the target is Debian's libprotobuf.
  find_package(Protobuf REQUIRED)
endif()
find_package(Torch REQUIRED)
message(STATUS "LibTorch ${Torch_VERSION} at ${TORCH_INSTALL_PREFIX}")
if(NOT I2S_TORCH STREQUAL "system")
  # PyPI's LibTorch 2.x carries and exports its own copy of parts of a newer libstdc++ than
  # Debian 12's GCC 12 (std::filesystem, std::chrono::tzdb, the string streams). Named before
  # libstdc++ in a program's DT_NEEDED, that copy takes the place of the system's in the
  # whole program, and some of it calls into internals GCC 12's libstdc++ lacks:
  # std::filesystem::remove_all of a non-empty folder jumps to address 0. Named first,
  # libstdc++ keeps the system's definitions first in symbol lookup (checked by
  # server/engine/libstdcxx_test.cc).
  add_link_options("SHELL:-Wl,--push-state,--no-as-needed -lstdc++ -Wl,--pop-state")
endif()
if(TORCH_CXX_FLAGS)
  # The pip wheel of LibTorch may be built with the pre-C++11 ABI; every target that
  # links it must agree, so the flag is applied globally.
  string(APPEND CMAKE_CXX_FLAGS " ${TORCH_CXX_FLAGS}")
endif()
set(I2S_HAVE_CUDA OFF)
if(TARGET torch_cuda OR TORCH_CUDA_LIBRARIES)
  set(I2S_HAVE_CUDA ON)
endif()
message(STATUS "CUDA support in LibTorch: ${I2S_HAVE_CUDA}")

if(NOT I2S_ENGINE_ONLY)
  # Imaging (server/imaging) and the command lines (i2s_server, i2s_tool).
  find_package(OpenCV REQUIRED COMPONENTS core imgproc imgcodecs videoio objdetect photo face)
  find_package(CLI11 REQUIRED CONFIG)
  # The service: gRPC 1.51 + protobuf 3.21 (libgrpc++-dev, protobuf-compiler-grpc).
  find_package(gRPC REQUIRED CONFIG)
  find_program(I2S_PROTOC NAMES protoc REQUIRED)
  find_program(I2S_GRPC_CPP_PLUGIN NAMES grpc_cpp_plugin REQUIRED)
  find_program(I2S_GRPC_PYTHON_PLUGIN NAMES grpc_python_plugin)
  # The store (server/store): SQLite database, JSON columns, PostgreSQL through libpq
  # (libpq-dev; pkg-config, since CMake's FindPostgreSQL also wants the server headers).
  find_package(SQLite3 REQUIRED)
  find_package(nlohmann_json REQUIRED CONFIG)
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(LIBPQ REQUIRED IMPORTED_TARGET libpq)
  # The Prometheus /metrics endpoint (libcivetweb-dev). Found by hand: Debian 12's
  # civetweb-config.cmake also imports the civetweb executable, which that package lacks.
  find_path(I2S_CIVETWEB_INCLUDE civetweb.h REQUIRED)
  find_library(I2S_CIVETWEB_LIBRARY NAMES civetweb REQUIRED)
  if(NOT TARGET civetweb::civetweb)
    add_library(civetweb::civetweb UNKNOWN IMPORTED)
    set_target_properties(civetweb::civetweb PROPERTIES
      IMPORTED_LOCATION "${I2S_CIVETWEB_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${I2S_CIVETWEB_INCLUDE}")
  endif()
endif()

if(I2S_ENABLE_TESTS)
  # A CUDA host may lack libgtest-dev: I2S_GTEST_SOURCE_DIR may point at an unpacked
  # Debian googletest source package instead (scripts/gpu-check.sh does that).
  set(I2S_GTEST_SOURCE_DIR "" CACHE PATH "googletest sources to build when GTest is not installed")
  if(I2S_GTEST_SOURCE_DIR)
    set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
    add_subdirectory(${I2S_GTEST_SOURCE_DIR} ${CMAKE_BINARY_DIR}/_gtest EXCLUDE_FROM_ALL)
    # googletest >= 1.11 defines these aliases itself.
    foreach(lib gtest gtest_main gmock gmock_main)
      if(NOT TARGET GTest::${lib} AND TARGET ${lib})
        add_library(GTest::${lib} ALIAS ${lib})
      endif()
    endforeach()
  else()
    find_package(GTest REQUIRED)
  endif()
  include(GoogleTest)
  # The oracle tests run Debian's python3 (with python3-torch), not a virtualenv's.
  find_program(I2S_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
  if(NOT I2S_PYTHON3)
    find_program(I2S_PYTHON3 NAMES python3 REQUIRED)
  endif()
endif()

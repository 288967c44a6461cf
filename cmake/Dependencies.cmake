# Every find_package of the project, in one place.
#
# Debian 12 packages (scripts/setup installs them): libtorch-dev 1.13 (CPU), libabsl-dev
# 20220623, libopencv-dev 4.6, libcli11-dev, libgtest-dev. The engine also builds against
# LibTorch 2.x (CUDA) from a PyTorch wheel: pass -DCMAKE_PREFIX_PATH=$(python3 -c 'import
# torch; print(torch.utils.cmake_prefix_path)') and, where Abseil is not installed, an
# unpacked libabsl-dev with -Dabsl_DIR=... (scripts/gpu-check.sh does both).

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

find_package(Torch REQUIRED)
message(STATUS "LibTorch ${Torch_VERSION} at ${TORCH_INSTALL_PREFIX}")
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
  find_package(OpenCV REQUIRED COMPONENTS core imgproc imgcodecs videoio objdetect face)
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

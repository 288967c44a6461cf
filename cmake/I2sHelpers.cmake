# Small helpers so each folder's CMakeLists reads as a list of targets.

set(I2S_WARNINGS -Wall -Wextra -Wno-unused-parameter)

# i2s_cc_library(NAME name ALIAS i2s::name SRCS ... DEPS ...)
function(i2s_cc_library)
  cmake_parse_arguments(A "" "NAME;ALIAS" "SRCS;DEPS" ${ARGN})
  add_library(${A_NAME} STATIC ${A_SRCS})
  target_include_directories(${A_NAME} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${A_NAME} PUBLIC ${A_DEPS})
  target_compile_options(${A_NAME} PRIVATE ${I2S_WARNINGS})
  set_target_properties(${A_NAME} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  if(A_ALIAS)
    add_library(${A_ALIAS} ALIAS ${A_NAME})
  endif()
endfunction()

# i2s_cc_test(NAME name SRCS ... DEPS ... [LABELS ...] [ENV k=v ...])
# One GoogleTest binary; each TEST is registered as its own CTest test.
function(i2s_cc_test)
  if(NOT I2S_ENABLE_TESTS)
    return()
  endif()
  cmake_parse_arguments(A "" "NAME" "SRCS;DEPS;LABELS;ENV;FIXTURES" ${ARGN})
  add_executable(${A_NAME} ${A_SRCS})
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS} GTest::gtest GTest::gtest_main)
  target_compile_options(${A_NAME} PRIVATE ${I2S_WARNINGS})
  set(props LABELS "${A_LABELS}")
  if(A_ENV)
    list(APPEND props ENVIRONMENT "${A_ENV}")
  endif()
  if(A_FIXTURES)
    list(APPEND props FIXTURES_REQUIRED "${A_FIXTURES}")
  endif()
  gtest_discover_tests(${A_NAME} DISCOVERY_TIMEOUT 120 PROPERTIES ${props})
endfunction()

# LibTorch's <torch/torch.h> costs about 37 s of parsing per translation unit on a 2-core
# machine (RelWithDebInfo), most of a build. With I2S_PCH (the default) it is precompiled
# once, in i2s_torch_pch, and every target that includes it reuses that one precompiled
# header. GCC accepts a precompiled header only where -fPIC and the predefined macros agree,
# so the targets that use it compile with -fPIC (executables included) and -pthread (which
# gRPC's targets add, and which defines _REENTRANT). Off for the fuzz build (no LibTorch).
option(I2S_PCH "Precompile LibTorch's header once and reuse it in every target that includes it" ON)
if(I2S_PCH AND NOT I2S_FUZZ)
  set(_i2s_pch_source "${CMAKE_BINARY_DIR}/i2s_torch_pch.cc")
  if(NOT EXISTS "${_i2s_pch_source}")
    file(WRITE "${_i2s_pch_source}" "// The translation unit that owns LibTorch's precompiled header.\n")
  endif()
  add_library(i2s_torch_pch STATIC "${_i2s_pch_source}")
  target_link_libraries(i2s_torch_pch PUBLIC ${TORCH_LIBRARIES})
  target_compile_options(i2s_torch_pch PRIVATE ${I2S_WARNINGS} $<$<COMPILE_LANGUAGE:CXX>:-pthread>)
  set_target_properties(i2s_torch_pch PROPERTIES POSITION_INDEPENDENT_CODE ON)
  target_precompile_headers(i2s_torch_pch PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:<torch/torch.h$<ANGLE-R>>")
endif()

# i2s_use_torch_pch(target [SKIP source ...]): the target's sources reuse LibTorch's
# precompiled header, except the listed ones (sources that do not include LibTorch; a
# precompiled header still costs seconds to load).
function(i2s_use_torch_pch target)
  if(NOT TARGET i2s_torch_pch OR NOT TARGET ${target})
    return()
  endif()
  cmake_parse_arguments(A "" "" "SKIP" ${ARGN})
  target_precompile_headers(${target} REUSE_FROM i2s_torch_pch)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-pthread>)
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "EXECUTABLE")
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-fPIC>)
  else()
    set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  endif()
  if(A_SKIP)
    set_source_files_properties(${A_SKIP} TARGET_DIRECTORY ${target} PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
  endif()
endfunction()

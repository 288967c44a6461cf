#!/usr/bin/env bash
# One call on a CUDA host: builds the engine targets against the LibTorch inside the
# host's PyTorch (I2S_ENGINE_ONLY: LibTorch + Abseil, no gRPC/OpenCV), runs the unit,
# CUDA and oracle tests, then the benchmarks (engine and PyTorch eager, same GPU), and
# writes everything under ${OUT:-out/gpu-check}.
# Needs .gpu-deps/ from scripts/fetch-gpu-deps (carried with the tree).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu-check}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
DEPS=$PWD/.gpu-deps/root
PY=${PYTHON:-python3}
nvidia-smi | tee "$OUT/nvidia-smi.txt" || true
TORCH_PREFIX=$($PY -c 'import torch; print(torch.utils.cmake_prefix_path)')
$PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "abi", torch._C._GLIBCXX_USE_CXX11_ABI)'
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DI2S_ENGINE_ONLY=ON \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" -Dabsl_DIR="$DEPS/usr/lib/x86_64-linux-gnu/cmake/absl" \
  -DI2S_GTEST_SOURCE_DIR="$DEPS/usr/src/googletest" -DI2S_PYTHON3="$(command -v $PY)" || exit 1
cmake --build build-gpu -j "$(nproc)" || exit 1
(cd build-gpu && ctest --output-on-failure -j 4 --output-junit "$PWD/../$OUT/ctest.xml") | tee "$OUT/ctest.txt"
for res in 256 1024; do
  for batch in 1 8; do
    build-gpu/bench/synth_bench --device cuda --resolution $res --batch $batch --reps 20 --warmup 3
    $PY bench/synth_bench_torch.py --device cuda --resolution $res --batch $batch --reps 20 --warmup 3
  done
done | tee "$OUT/bench.txt"

#!/usr/bin/env bash
# One call on a CUDA host: builds the engine targets (I2S_ENGINE_ONLY: LibTorch + Abseil,
# no gRPC/OpenCV) against the LibTorch inside the host's PyTorch (-DI2S_TORCH=python, the
# option that selects PyPI's LibTorch in CI with -DI2S_TORCH=pypi), runs the unit, CUDA and
# oracle tests, then the GPU benchmarks of docs/PERFORMANCE.md (engine and PyTorch eager
# side by side on the same GPU), and writes everything under ${OUT:-out/gpu-check}:
#   log.txt, nvidia-smi.txt, ctest.txt/.xml, compare.md/.json (engine vs eager, batch
#   sweep), variants.md (TF32 off, cuDNN autotuning), cost.md/.json (resolution x
#   batch), cost-analysis.md (FLOP/s and traffic against the GPU's measured peaks),
#   profile-engine.json/.txt, profile-eager.txt, synth.txt.
# Needs .gpu-deps/ from scripts/fetch-gpu-deps (carried with the tree). Abseil is built
# from Debian's source with LibTorch's C++ ABI flag, so a wheel with either ABI links.
# Each phase is bounded (PHASE_TIMEOUT seconds, default 240) and what finished is kept.
# One device call runs 10 minutes at most, so the full run is two calls on a warm machine
# (build-gpu/ is kept between them): GPU_CHECK_PART=1 (build, tests, the comparison),
# then GPU_CHECK_PART=2 (the rest; the build is then a no-op). GPU_CHECK_QUICK=1: fewer
# configurations, for one call. Without a GPU: GPU_CHECK_BENCH=0 (build and tests only)
# or GPU_CHECK_DEVICE=cpu (every phase, one tiny configuration each), to try the script.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu-check}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)  # absolute: the tests write from build-gpu/
exec > >(tee "$OUT/log.txt") 2>&1
DEPS=$PWD/.gpu-deps
PY=${PYTHON:-python3}
JOBS=$(nproc)
T=${PHASE_TIMEOUT:-240}
phase() { echo "== $(date -u +%H:%M:%S) $*"; }
nvidia-smi | tee "$OUT/nvidia-smi.txt" || true
ABI=$($PY -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')
$PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "abi", torch._C._GLIBCXX_USE_CXX11_ABI, "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'

phase "Abseil from source (ABI $ABI)"
ABSL_SRC=$(ls "$DEPS"/src/abseil_*.orig.tar.gz 2>/dev/null | head -1)
ABSL_DIR="$DEPS/root/usr/lib/x86_64-linux-gnu/cmake/absl"
if [ -n "$ABSL_SRC" ]; then
  if [ ! -f build-absl/install/.done ]; then
    rm -rf build-absl && mkdir -p build-absl/src
    tar -xzf "$ABSL_SRC" -C build-absl/src --strip-components=1
    cmake -S build-absl/src -B build-absl/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_CXX_STANDARD=17 -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DABSL_PROPAGATE_CXX_STD=ON \
      -DCMAKE_CXX_FLAGS="-D_GLIBCXX_USE_CXX11_ABI=$ABI" -DCMAKE_INSTALL_PREFIX="$PWD/build-absl/install" \
      > build-absl/configure.log && cmake --build build-absl/build -j "$JOBS" > build-absl/build.log &&
      cmake --install build-absl/build > /dev/null && touch build-absl/install/.done
  fi
  [ -f build-absl/install/.done ] && ABSL_DIR=$(dirname "$(find "$PWD/build-absl/install" -name abslConfig.cmake | head -1)")
fi
echo "absl_DIR=$ABSL_DIR"

phase "configure and build the engine"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DI2S_ENGINE_ONLY=ON \
  -DI2S_TORCH=python -DI2S_TORCH_PYTHON="$(command -v $PY)" -Dabsl_DIR="$ABSL_DIR" \
  -DI2S_GTEST_SOURCE_DIR="$DEPS/root/usr/src/googletest" -DI2S_PYTHON3="$(command -v $PY)" || exit 1
cmake --build build-gpu -j "$JOBS" || exit 1

phase "tests"
(cd build-gpu && timeout "$T" ctest --output-on-failure -j 4 --output-junit "$OUT/ctest.xml") \
  | tee "$OUT/ctest.txt"

if [ "${GPU_CHECK_BENCH:-1}" = 0 ]; then phase "done (GPU_CHECK_BENCH=0)"; exit 0; fi
DEV=${GPU_CHECK_DEVICE:-cuda}
BENCH="$PY bench/embed_compare.py --device $DEV --build build-gpu --work out/bench-gpu"
W=out/bench-gpu
if [ "$DEV" != cuda ]; then  # a dry run of the script itself: one tiny configuration each
  COMPARE="64:8192:1" COST="64:8192:1" TOP=64 SYNTH="64" BATCHES="1"
elif [ "${GPU_CHECK_QUICK:-0}" = 1 ]; then
  COMPARE="1024:8192:1,8 256:8192:1,8" COST="64:8192:1,8 256:8192:1,8 1024:8192:1,8"
  TOP=1024 SYNTH="1024" BATCHES="1 8"
else
  COMPARE="1024:8192:1,2,4,8,16 256:8192:1,4,16 64:8192:1,8,32"
  COST="64:8192:1,4,16,64 128:8192:1,4,16 256:8192:1,4,16 512:8192:1,4,16 1024:8192:1,4,16"
  TOP=1024 SYNTH="256 1024" BATCHES="1 8"
fi
PART=${GPU_CHECK_PART:-0}  # 1: build, tests, compare; 2: the rest (a call is 10 min at most)
if [ "$PART" != 2 ]; then
  phase "engine (both upsampling variants) vs PyTorch eager: $COMPARE"
  timeout "$T" $BENCH --configs "$COMPARE" --variants phase-split,reference --json "$OUT/compare.json" \
    | tee "$OUT/compare.md"
fi
[ "$PART" = 1 ] && { phase "done (part 1)"; exit 0; }
phase "variants: TF32 off, cuDNN autotuning on"
{
  echo "### --tf32 0"
  timeout "$T" $BENCH --configs "$TOP:8192:${BATCHES// /,}" --extra "--tf32 0"
  echo "### --cudnn-benchmark 1"
  timeout "$T" $BENCH --configs "$TOP:8192:${BATCHES// /,}" --extra "--cudnn-benchmark 1"
} | tee "$OUT/variants.md"
phase "cost growth (engine only): $COST"
timeout "$T" $BENCH --configs "$COST" --no-reference --json "$OUT/cost.json" | tee "$OUT/cost.md"
$PY bench/step_cost.py "$OUT/cost.json" --device "$DEV" | tee "$OUT/cost-analysis.md"
phase "profiles of one step at $TOP, batch 1"
timeout "$T" build-gpu/bench/embed_bench --device "$DEV" --generator "$W/g${TOP}_f8192.pt" \
  --vgg "$W/vgg.pth" --steps 5 --warmup 3 --profile "$OUT/profile-engine.json"
timeout "$T" $PY bench/embed_bench_torch.py --device "$DEV" --generator "$W/g${TOP}_f8192.pt" \
  --vgg "$W/vgg.pth" --steps 5 --warmup 3 --profile "$OUT/profile-eager.txt"
$PY bench/profile_summary.py "$OUT/profile-engine.json" > "$OUT/profile-engine.txt" || true
phase "synthesis only"
for res in $SYNTH; do
  for batch in $BATCHES; do
    build-gpu/bench/synth_bench --device "$DEV" --resolution $res --batch $batch --reps 20 --warmup 3
    $PY bench/synth_bench_torch.py --device "$DEV" --resolution $res --batch $batch --reps 20 --warmup 3
  done
done 2>&1 | tee "$OUT/synth.txt"
phase "local blend (LocalBlend's forward) against the plain forward"
for start in 0 8; do
  build-gpu/bench/synth_bench --device "$DEV" --resolution 1024 --batch 1 --reps 20 --warmup 3 \
    --blend-start $start
done 2>&1 | tee "$OUT/blend.txt"
phase "done"

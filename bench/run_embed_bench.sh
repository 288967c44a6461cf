#!/usr/bin/env bash
# The embedding-step table of docs/PERFORMANCE.md: engine vs PyTorch eager, same seeded
# random weight files (written by i2s_tool), same threads, several resolutions and batch
# sizes. Usage: bench/run_embed_bench.sh [--device cpu|cuda] [--threads N]
# Env: BUILD (default build), WORK (default out/bench), CONFIGS ("res:fmap_base:batches ...").
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
WORK=${WORK:-out/bench}
DEVICE=cpu
THREADS=2
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-/usr/bin/python3}
CONFIGS=${CONFIGS:-"64:8192:1,4 256:8192:1,4 1024:8192:1"}
mkdir -p "$WORK"
TOOL=$BUILD/tools/i2s_tool
[ -x "$TOOL" ] || { echo "needs $TOOL (scripts/build)" >&2; exit 1; }
$TOOL random-model --kind vgg16 --seed 1 --out "$WORK/vgg.pth" > /dev/null
for config in $CONFIGS; do
  IFS=: read -r res fmap batches <<< "$config"
  gen="$WORK/g${res}.pt"
  [ -f "$gen" ] || $TOOL random-model --resolution "$res" --fmap-base "$fmap" --seed 1 --out "$gen" > /dev/null
  for batch in ${batches//,/ }; do
    steps=5; [ "$res" -ge 1024 ] && steps=3
    "$BUILD/bench/embed_bench" --generator "$gen" --vgg "$WORK/vgg.pth" --batch "$batch" --steps $steps \
      --warmup 1 --threads "$THREADS" --device "$DEVICE"
    $PY bench/embed_bench_torch.py --generator "$gen" --vgg "$WORK/vgg.pth" --batch "$batch" --steps $steps \
      --warmup 1 --threads "$THREADS" --device "$DEVICE"
  done
done

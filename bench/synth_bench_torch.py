#!/usr/bin/python3
"""The PyTorch-eager side of synth_bench: the same forward pass with the independent
reference implementation (tests/oracle/stylegan1_ref.py), same shapes, same threads.

  synth_bench_torch.py [--resolution 1024] [--fmap-base 8192] [--batch 1] [--reps 5]
                       [--warmup 1] [--threads N] [--device cpu|cuda]
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "oracle"))
import stylegan1_ref as ref  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--resolution", type=int, default=1024)
    p.add_argument("--fmap-base", type=int, default=8192)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    sd = ref.make_random_state_dict(a.resolution, fmap_base=a.fmap_base, seed=1)
    sd = {k: v.to(dev) for k, v in sd.items()}
    layers = ref.num_layers(a.resolution)
    w = torch.randn(a.batch, layers, 512, device=dev)
    noise = [torch.randn(a.batch, 1, 4 << (i // 2), 4 << (i // 2), device=dev) for i in range(layers)]
    times = []
    with torch.no_grad():
        for i in range(a.warmup + a.reps):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            ref.synthesis(sd, w, noise)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i >= a.warmup:
                times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    print("engine=pytorch-eager-%s device=%s resolution=%d fmap_base=%d batch=%d threads=%d reps=%d "
          "median_ms=%.1f min_ms=%.1f" % (torch.__version__, a.device, a.resolution, a.fmap_base, a.batch,
                                          torch.get_num_threads(), a.reps, times[len(times) // 2], times[0]))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Engine vs PyTorch eager, one Image2StyleGAN step, side by side in one run.

For each configuration (resolution, fmap_base, batch sizes) it writes seeded random
weight files with build/bench/random_weights (the engine's generator of `i2s_tool
random-model`, built also where i2s_tool is not; the same files for both sides), then for each batch size runs
build/bench/embed_bench (the engine, once per --upsample variant) and
bench/embed_bench_torch.py (the reference loop in PyTorch eager), each in its own
process, and prints a Markdown table: ms per step, image-steps per second, the batch's
throughput over batch 1's, memory per image, time to the first step, and the ratio of
the reference's step time to the engine's. A batch size that runs out of memory ends
that configuration's sweep for that side. Both sides use the same malloc settings: the
reference runs with the glibc tunables equal to the engine's KeepLargeBlocksInTheHeap.

  bench/embed_compare.py [--device cpu|cuda] [--threads N]
      [--configs "64:8192:1,2,4 256:8192:1,2 1024:8192:1"] [--steps N] [--warmup N]
      [--variants phase-split,reference] [--build build] [--work out/bench]
      [--json results.json] [--extra "--tf32 1"]
"""
import argparse
import json
import os
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What KeepLargeBlocksInTheHeap (server/engine/torch_util.h) sets with mallopt.
SAME_MALLOC = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=268435456"


def parse_line(text):
    for line in reversed(text.strip().splitlines()):
        if line.startswith("engine="):
            return dict(kv.split("=", 1) for kv in line.split())
    return None


def run(cmd, timeout, env=None):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None, "timed out after %d s" % timeout
    out = parse_line(p.stdout)
    if p.returncode != 0 or out is None:
        err = (p.stderr or p.stdout).strip().splitlines()
        tail = err[-1] if err else "exit %d" % p.returncode
        if "out of memory" in (p.stderr or "").lower():
            tail = "out of memory"
        return None, tail
    return out, ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--configs", default="")
    ap.add_argument("--steps", type=int, default=0, help="timed steps (default: 5 on CPU, 20 on CUDA)")
    ap.add_argument("--warmup", type=int, default=-1, help="untimed steps first (default: 1 on CPU, 5 on CUDA)")
    ap.add_argument("--variants", default="phase-split", help="engine --upsample variants, comma-separated")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--work", default=os.path.join(ROOT, "out", "bench"))
    ap.add_argument("--json", default="")
    ap.add_argument("--extra", default="", help="more flags for both sides, e.g. '--tf32 1'")
    ap.add_argument("--no-reference", action="store_true", help="engine only")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per run")
    ap.add_argument("--reference-default-malloc", dest="same_malloc", action="store_false",
                    help="run the reference with glibc's default malloc settings")
    a = ap.parse_args()
    cuda = a.device.startswith("cuda")
    configs = a.configs or ("64:8192:1,2,4,8,16 256:8192:1,2,4,8,16 1024:8192:1,2,4,8,16"
                            if cuda else "64:8192:1,2,4 256:8192:1,2 1024:8192:1")
    steps = a.steps or (20 if cuda else 5)
    warmup = a.warmup if a.warmup >= 0 else (5 if cuda else 1)
    tool = os.path.join(a.build, "bench", "random_weights")
    bench = os.path.join(a.build, "bench", "embed_bench")
    for exe in (tool, bench):
        if not os.access(exe, os.X_OK):
            sys.exit("embed_compare: needs %s (scripts/build)" % exe)
    os.makedirs(a.work, exist_ok=True)
    vgg = os.path.join(a.work, "vgg.pth")
    if not os.path.exists(vgg):
        subprocess.run([tool, "--kind", "vgg16", "--seed", "1", "--out", vgg],
                       check=True, stdout=subprocess.DEVNULL)
    extra = shlex.split(a.extra)
    # The same malloc settings on both sides: the engine's KeepLargeBlocksInTheHeap, as
    # glibc tunables for the reference's process.
    ref_env = dict(os.environ, GLIBC_TUNABLES=SAME_MALLOC) if a.same_malloc else None
    print("malloc: glibc, %s on both sides" % SAME_MALLOC if a.same_malloc else
          "malloc: engine %s, reference glibc defaults" % SAME_MALLOC)
    variants = [v for v in a.variants.split(",") if v]
    rows = []

    def save():  # after every batch size, so a run cut short keeps what it measured
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"device": a.device, "threads": a.threads, "steps": steps, "warmup": warmup,
                           "extra": a.extra, "reference_malloc": SAME_MALLOC if a.same_malloc else "default",
                           "rows": rows}, f, indent=1)
    print("| resolution | batch | side | ms/step | image-steps/s | x batch 1 | MiB/image | first step (s) "
          "| ratio (PyTorch / engine) |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    sys.stdout.flush()
    for config in configs.split():
        res, fmap, batches = config.split(":")
        gen = os.path.join(a.work, "g%s_f%s.pt" % (res, fmap))
        if not os.path.exists(gen):
            subprocess.run([tool, "--resolution", res, "--fmap-base", fmap, "--seed", "1",
                            "--out", gen], check=True, stdout=subprocess.DEVNULL)
        sides = [("engine " + v, [bench, "--upsample", v]) for v in variants]
        if not a.no_reference:
            # The same interpreter as this script (the one with torch: run it with that one).
            sides.append(("PyTorch eager", [sys.executable, os.path.join(ROOT, "bench", "embed_bench_torch.py")]))
        stopped = set()
        base = {}
        for batch in [int(b) for b in batches.split(",")]:
            results = {}
            for name, cmd in sides:
                if name in stopped:
                    continue
                common = ["--generator", gen, "--vgg", vgg, "--batch", str(batch), "--steps", str(steps),
                          "--warmup", str(warmup), "--threads", str(a.threads), "--device", a.device]
                out, err = run(cmd + common + extra, a.timeout,
                               ref_env if name == "PyTorch eager" else None)
                if out is None:
                    stopped.add(name)
                    print("| %s | %d | %s | %s | | | | | |" % (res, batch, name, err))
                    rows.append({"resolution": int(res), "fmap_base": int(fmap), "batch": batch, "side": name,
                                 "error": err})
                    continue
                results[name] = out
            ref = results.get("PyTorch eager")
            for name, out in results.items():
                ms = float(out["median_ms"])
                ips = float(out["image_steps_per_s"])
                if batch == 1:
                    base[name] = ips
                scale = "%.2f" % (ips / base[name]) if name in base else ""
                ratio = "%.2f" % (float(ref["median_ms"]) / ms) if ref is not None and name != "PyTorch eager" else ""
                mem = float(out["mb_per_image"])
                print("| %s | %d | %s | %.1f | %.3f | %s | %s | %s | %s |" % (
                    res, batch, name, ms, ips, scale, "%.0f" % mem if mem >= 0 else "n/a", out["first_step_s"],
                    ratio))
                row = dict(out)
                row.update({"side": name, "fmap_base": int(fmap), "ratio": ratio, "x_batch1": scale})
                rows.append(row)
            sys.stdout.flush()
            save()


if __name__ == "__main__":
    main()

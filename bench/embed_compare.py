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

StyleGAN2 (--arch stylegan2): rosinality checkpoints with config-f channel counts
(random_weights --arch stylegan2 --channel-multiplier 2: 512 through 32x32, then 512,
256, 128, 64, 32 at 64..1024), configurations "RES:BATCHES" (or "RES:MULTIPLIER:BATCHES"),
the engine once per modulated-convolution form (--variants shared,grouped: embed_bench
--modconv) and PyTorch eager in the same forms (--eager-modconv shared,grouped: the
oracle's synthesis is the shared form; the grouped one is rosinality's, on the oracle's
primitives). Each engine row has two ratios: the eager step time of the same form over
the engine's, and the fastest eager form's over the engine's.

  bench/embed_compare.py --arch stylegan2 [--configs "64:1,2 256:1 1024:1"]
      [--variants shared,grouped] [--eager-modconv shared,grouped] [--channel-multiplier 2]
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
    ap.add_argument("--arch", default="stylegan1", choices=("stylegan1", "stylegan2"))
    ap.add_argument("--variants", default="",
                    help="engine variants, comma-separated: --upsample forms for StyleGAN1 (default "
                         "phase-split), --modconv forms for StyleGAN2 (default shared,grouped)")
    ap.add_argument("--eager-modconv", default="shared,grouped",
                    help="StyleGAN2: the PyTorch-eager modulated-convolution forms, comma-separated")
    ap.add_argument("--channel-multiplier", type=int, default=2,
                    help="StyleGAN2: rosinality's channel multiplier for RES:BATCHES configs (2 = config-f)")
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
    sg2 = a.arch == "stylegan2"
    if sg2:
        configs = a.configs or ("64:1,2,4,8,16 256:1,2,4,8,16 1024:1,2,4,8,16" if cuda
                                else "64:1,2 256:1 1024:1")
    else:
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
    variants = [v for v in (a.variants or ("shared,grouped" if sg2 else "phase-split")).split(",") if v]
    eager_forms = [v for v in a.eager_modconv.split(",") if v] if sg2 else []
    for v in variants:
        if v not in (("shared", "grouped") if sg2 else ("phase-split", "reference")):
            sys.exit("embed_compare: --variants %s: not a %s variant" % (v, a.arch))
    for v in eager_forms:
        if v not in ("shared", "grouped"):
            sys.exit("embed_compare: --eager-modconv %s: shared or grouped" % v)
    torch_script = os.path.join(ROOT, "bench", "embed_bench_torch.py")
    rows = []

    def save():  # after every batch size, so a run cut short keeps what it measured
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"arch": a.arch, "device": a.device, "threads": a.threads, "steps": steps,
                           "warmup": warmup,
                           "extra": a.extra, "reference_malloc": SAME_MALLOC if a.same_malloc else "default",
                           "rows": rows}, f, indent=1)
    if sg2:
        print("| resolution | batch | side | ms/step | image-steps/s | x batch 1 | MiB/image | first step (s) "
              "| ratio (eager same form / engine) | ratio (fastest eager / engine) |")
        print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    else:
        print("| resolution | batch | side | ms/step | image-steps/s | x batch 1 | MiB/image | first step (s) "
              "| ratio (PyTorch / engine) |")
        print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    empty = "| | | | | | |" if sg2 else "| | | | | |"  # the cells after the error
    sys.stdout.flush()
    for config in configs.split():
        parts = config.split(":")
        if sg2:
            if len(parts) == 2:
                res, batches = parts
                size = str(a.channel_multiplier)
            elif len(parts) == 3:
                res, size, batches = parts
            else:
                sys.exit("embed_compare: --configs %s: RES:BATCHES or RES:MULTIPLIER:BATCHES" % config)
            gen = os.path.join(a.work, "sg2_g%s_cm%s.pt" % (res, size))
            make = [tool, "--arch", "stylegan2", "--resolution", res, "--channel-multiplier", size,
                    "--seed", "1", "--out", gen]
            size_key = "channel_multiplier"
        else:
            res, size, batches = parts
            gen = os.path.join(a.work, "g%s_f%s.pt" % (res, size))
            make = [tool, "--resolution", res, "--fmap-base", size, "--seed", "1", "--out", gen]
            size_key = "fmap_base"
        if not os.path.exists(gen):
            subprocess.run(make, check=True, stdout=subprocess.DEVNULL)
        # (name, command, form): form is the StyleGAN2 modulated convolution, else None.
        if sg2:
            sides = [("engine " + v, [bench, "--modconv", v], v) for v in variants]
        else:
            sides = [("engine " + v, [bench, "--upsample", v], None) for v in variants]
        if not a.no_reference:
            # The same interpreter as this script (the one with torch: run it with that one).
            if sg2:
                sides += [("PyTorch eager " + v, [sys.executable, torch_script, "--modconv", v], v)
                          for v in eager_forms]
            else:
                sides.append(("PyTorch eager", [sys.executable, torch_script], None))
        eager_names = [name for name, _, _ in sides if name.startswith("PyTorch eager")]
        stopped = set()
        base = {}
        for batch in [int(b) for b in batches.split(",")]:
            results = {}
            for name, cmd, form in sides:
                if name in stopped:
                    continue
                common = ["--generator", gen, "--vgg", vgg, "--batch", str(batch), "--steps", str(steps),
                          "--warmup", str(warmup), "--threads", str(a.threads), "--device", a.device]
                out, err = run(cmd + common + extra, a.timeout,
                               ref_env if name in eager_names else None)
                if out is None:
                    stopped.add(name)
                    print("| %s | %d | %s | %s %s" % (res, batch, name, err, empty))
                    rows.append({"resolution": int(res), size_key: int(size), "batch": batch, "side": name,
                                 "error": err})
                    continue
                results[name] = (out, form)
            eager_ms = {form: float(out["median_ms"]) for name, (out, form) in results.items()
                        if name in eager_names}
            for name, (out, form) in results.items():
                ms = float(out["median_ms"])
                ips = float(out["image_steps_per_s"])
                if batch == 1:
                    base[name] = ips
                scale = "%.2f" % (ips / base[name]) if name in base else ""
                mem = float(out["mb_per_image"])
                cells = [res, str(batch), name, "%.1f" % ms, "%.3f" % ips, scale,
                         "%.0f" % mem if mem >= 0 else "n/a", out["first_step_s"]]
                row = dict(out)
                if name in eager_names:
                    cells += [""] * (2 if sg2 else 1)
                    ratio = ""
                elif sg2:
                    ratio = "%.2f" % (eager_ms[form] / ms) if form in eager_ms else ""
                    best = "%.2f" % (min(eager_ms.values()) / ms) if eager_ms else ""
                    cells += [ratio, best]
                    row["ratio_fastest_eager"] = best
                else:
                    ref = eager_ms.get(None)
                    ratio = "%.2f" % (ref / ms) if ref is not None else ""
                    cells.append(ratio)
                print("| " + " | ".join(cells) + " |")
                row.update({"side": name, size_key: int(size), "ratio": ratio, "x_batch1": scale})
                rows.append(row)
            sys.stdout.flush()
            save()


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Cold start: one whole `i2s_tool embed` (process start to the written latent) against
the reference loop in PyTorch eager (bench/cold_embed_torch.py) on the same files, image
and thread count, each in a fresh process, alternating, --runs times.

  bench/cold_embed.py [--build build] [--resolution 64] [--steps 200] [--threads 2]
                      [--runs 3] [--work out/cold] [--json results.json]
                      [--rows cached,none,zeros]

The files: build/bench/random_weights writes a StyleGAN1 generator (fmap_base 8192, seed 1;
no mean w in the file, so the tool computes it from 10,000 seeded z unless --init zeros)
and a VGG16 (seed 2); the image is python3-skimage's astronaut, resized to the model's
resolution with PIL. Rows:
  i2s_tool embed (mean w cached)   the tool's defaults (W+, mean-w start, MSE + perceptual),
                                   the mean w read from --cache-dir (written by a warm-up run
                                   before the measured ones)
  i2s_tool embed --cache-dir none  the same, computing the mean w (10,000 z) every run
  i2s_tool embed --init zeros      the reference loop's start (a zero latent)
  PyTorch eager              bench/cold_embed_torch.py
Columns: start-up (process start to the first optimiser step: for the tool, the time of its
"step 1" line less that step's own time; for eager, from /proc), the step (eager: the
median step; the tool: the time after start-up over the steps, writing included), the
total wall time to the process's exit, and eager's total over the row's.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = "/usr/bin/python3"


def make_inputs(build, work, res):
    os.makedirs(work, exist_ok=True)
    g = os.path.join(work, "g%d.pt" % res)
    v = os.path.join(work, "vgg16.pth")
    img = os.path.join(work, "astronaut%d.png" % res)
    rw = os.path.join(build, "bench", "random_weights")
    if not os.path.exists(g):
        subprocess.run([rw, "--kind", "stylegan1", "--resolution", str(res), "--fmap-base", "8192",
                        "--seed", "1", "--out", g], check=True, stdout=subprocess.DEVNULL)
    if not os.path.exists(v):
        subprocess.run([rw, "--kind", "vgg16", "--seed", "2", "--out", v], check=True,
                       stdout=subprocess.DEVNULL)
    if not os.path.exists(img):
        subprocess.run([PY, "-c", "import sys; from skimage import data; from PIL import Image; "
                        "Image.fromarray(data.astronaut()).resize((%d, %d), Image.LANCZOS)"
                        ".save(sys.argv[1])" % (res, res), img], check=True)
    return g, v, img


def run_tool(tool, g, v, img, out, steps, threads, extra):
    cmd = [tool, "embed", "--generator", g, "--vgg", v, "--image", img, "--out", out,
           "--steps", str(steps), "--threads", str(threads), "--log-every", "1000000"] + extra
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    startup = None
    for line in p.stdout:
        m = re.match(r"step 1/\d+ .* ([0-9.]+) steps/s", line)
        if m and startup is None:
            startup = time.monotonic() - t0 - 1.0 / float(m.group(1))
    err = p.stderr.read()
    if p.wait() != 0:
        sys.exit("i2s_tool failed: %s" % err.strip())
    total = time.monotonic() - t0
    step_ms = (total - startup) * 1000.0 / steps if startup is not None else float("nan")
    return {"startup_s": startup, "total_s": total, "step_ms": step_ms}


def run_eager(g, v, img, out, steps, threads):
    cmd = [PY, os.path.join(ROOT, "bench", "cold_embed_torch.py"), "--generator", g, "--vgg", v,
           "--image", img, "--out", out, "--steps", str(steps), "--threads", str(threads)]
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True)
    total = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit("cold_embed_torch.py failed: %s" % p.stderr.strip())
    kv = dict(x.split("=", 1) for x in p.stdout.strip().splitlines()[-1].split())
    return {"startup_s": float(kv["startup_s"]), "total_s": total, "step_ms": float(kv["step_ms"])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default=os.path.join(ROOT, "out", "cold"))
    ap.add_argument("--json", default="")
    ap.add_argument("--rows", default="cached,none,zeros",
                    help="which i2s_tool rows to run (cached, none, zeros); eager always runs")
    a = ap.parse_args()
    tool = os.path.join(a.build, "tools", "i2s_tool")
    g, v, img = make_inputs(a.build, a.work, a.resolution)
    out = os.path.join(a.work, "latent.npy")
    # A warm-up run: the page cache holds the files, and the mean-w cache is written.
    run_tool(tool, g, v, img, out, 1, a.threads, ["--cache-dir", os.path.join(a.work, "cache")])
    cache = os.path.join(a.work, "cache")
    rows = {"i2s_tool embed (mean w cached)": [], "i2s_tool embed --cache-dir none": [],
            "i2s_tool embed --init zeros": [], "PyTorch eager": []}
    wanted = set(a.rows.split(","))
    unknown = wanted - {"cached", "none", "zeros"}
    if unknown:
        sys.exit("--rows: unknown %s (cached, none, zeros)" % ",".join(sorted(unknown)))
    tool_rows = [("cached", "i2s_tool embed (mean w cached)", ["--cache-dir", cache]),
                 ("none", "i2s_tool embed --cache-dir none", ["--cache-dir", "none"]),
                 ("zeros", "i2s_tool embed --init zeros", ["--init", "zeros"])]
    for key, name, _ in tool_rows:
        if key not in wanted:
            del rows[name]
    for _ in range(a.runs):
        for key, name, extra in tool_rows:
            if key in wanted:
                rows[name].append(run_tool(tool, g, v, img, out, a.steps, a.threads, extra))
        rows["PyTorch eager"].append(run_eager(g, v, img, out, a.steps, a.threads))
    med = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
           for name, runs in rows.items()}
    eager_total = med["PyTorch eager"]["total_s"]
    print("%d px, %d steps, %d threads, median of %d runs" % (a.resolution, a.steps, a.threads, a.runs))
    print("| run | start-up (s) | step (ms) | total (s) | eager total / total |")
    print("|---|---|---|---|---|")
    for name, m in med.items():
        print("| %s | %.2f | %.1f | %.2f | %.2f |" % (name, m["startup_s"], m["step_ms"],
                                                    m["total_s"], eager_total / m["total_s"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"config": vars(a), "runs": rows, "median": med}, f, indent=1)


if __name__ == "__main__":
    main()

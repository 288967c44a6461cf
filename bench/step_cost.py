#!/usr/bin/python3
"""Where an embedding step's cost comes from, against what the device can do.

Reads the rows of an embed_compare.py --json file (engine rows) and, for each, counts
the arithmetic of one step of the engine's formulation from the network's shapes, and
a lower bound of its memory traffic; then measures the device's practical peaks (a
large float32 matrix product, a large copy) and prints the fractions the step achieves.

  bench/step_cost.py RESULTS.json [--device cpu|cuda] [--threads N]

Counting (multiply-adds x 2 = FLOPs; convolutions only, the rest is < 2% of them):
  synthesis: 3x3 convolutions; the phase-split upsampling convolution, a 2x2 kernel
  with 4 x out channels over (R/2 + 1)^2 positions (for --upsample reference rows: the
  3x3 after nearest upsampling, or the transposed 4x4); the depthwise 3x3 blur; toRGB.
  VGG16 up to relu4_2 on the image downsampled to min(R, 256).
  backward: the input gradient of every convolution (the weights need none), the same
  multiply-adds as the forward pass. The target's features are cached, so not counted.
Traffic lower bound: every activation of the forward pass written once and read once
by the backward pass, and its gradient written and read once (float32), plus the
weights read twice; the caches and the elementwise ops' extra passes are not counted,
so the true traffic is higher and the fraction printed is a lower bound.
"""
import argparse
import json
import time

import torch


def channels(res, fmap_base=8192, fmap_max=512):
    out, r, stage = [], 4, 1
    while r <= res:
        out.append(min(fmap_base // (2 ** stage), fmap_max))
        r *= 2
        stage += 1
    return out


def step_cost(res, fmap_base, phase_split=True):
    """(FLOPs, traffic lower bound in bytes) of one image's step."""
    ch = channels(res, fmap_base)
    macs = 0.0
    act = 0.0  # float32 values of the forward activations
    weights = 0.0
    for i, c in enumerate(ch):
        r = 4 << i
        if i == 0:
            macs += 9 * c * c * r * r
            weights += 9 * c * c
        else:
            cin = ch[i - 1]
            half = r // 2
            if phase_split:
                macs += 4 * c * cin * 4 * (half + 1) ** 2
                act += 4 * c * (half + 1) ** 2 + c * r * r  # phase output, interleaved
            elif r >= 128:
                macs += 16 * c * cin * half * half  # transposed 4x4, stride 2
                act += c * r * r
            else:
                macs += 9 * c * cin * r * r  # 3x3 after nearest upsampling
                act += cin * r * r + c * r * r
            macs += 9 * c * r * r + 9 * c * c * r * r  # blur, 3x3 conv
            weights += 16 * c * cin + 9 * c * c
        act += 2 * 5 * c * r * r  # per layer: conv out, noise, lrelu, norm, modulation
    macs += 3 * ch[-1] * res * res
    act += 3 * res * res
    p = min(res, 256)
    vgg = [(3, 64, p), (64, 64, p), (64, 128, p // 2), (128, 128, p // 2), (128, 256, p // 4),
           (256, 256, p // 4), (256, 256, p // 4), (256, 512, p // 8), (512, 512, p // 8)]
    for cin, cout, s in vgg:
        macs += 9 * cin * cout * s * s
        weights += 9 * cin * cout
        act += 2 * cout * s * s  # conv out, relu out
    flops = 2 * 2 * macs  # forward + input gradient, 2 FLOPs per multiply-add
    traffic = 4 * (4 * act) + 2 * 4 * weights  # bytes: act written+read, grad written+read
    return flops, traffic


def peaks(device, threads):
    if threads > 0:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    n = 4096 if dev.type == "cuda" else 2048
    a = torch.randn(n, n, device=dev)
    b = torch.randn(n, n, device=dev)

    def timed(f, reps):
        f()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            f()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / reps

    mm = 2 * n ** 3 / timed(lambda: a @ b, 20 if dev.type == "cuda" else 3)
    # The library's best case for the step's own op: a large 3x3 convolution.
    cb = 16 if dev.type == "cuda" else 4
    xi = torch.randn(cb, 512, 32, 32, device=dev)
    wk = torch.randn(512, 512, 3, 3, device=dev)
    conv = 2 * 9 * 512 * 512 * 32 * 32 * cb / timed(
        lambda: torch.nn.functional.conv2d(xi, wk, padding=1), 20 if dev.type == "cuda" else 3)
    x = torch.empty(64 << 20, device=dev)  # 256 MiB
    y = torch.empty_like(x)
    cp = timed(lambda: y.copy_(x), 20 if dev.type == "cuda" else 5)
    return mm, conv, 2 * x.numel() * 4 / cp


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--device", default="")
    ap.add_argument("--threads", type=int, default=-1)
    a = ap.parse_args()
    data = json.load(open(a.results))
    device = a.device or data.get("device", "cpu")
    threads = a.threads if a.threads >= 0 else int(data.get("threads", 0))
    mm, conv, bw_peak = peaks(device, threads)
    flops_peak = max(mm, conv)
    print("device %s, measured now (TF32 as the library defaults): float32 matrix product %.1f "
          "GFLOP/s, 3x3 convolution 512->512 at 32x32 %.1f GFLOP/s, copy %.1f GB/s; 'peak' below is "
          "the larger of the first two" % (device, mm / 1e9, conv / 1e9, bw_peak / 1e9))
    print("| resolution | batch | side | ms/step | GFLOP/image-step | GFLOP/s | of peak | "
          "traffic >= (MB/image-step) | GB/s >= | of copy bandwidth >= |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in data["rows"]:
        if "median_ms" not in row or not row["side"].startswith("engine"):
            continue
        res, batch = int(row["resolution"]), int(row["batch"])
        flops, traffic = step_cost(res, int(row["fmap_base"]), row.get("upsample") != "reference")
        sec = float(row["median_ms"]) / 1000
        fs = flops * batch / sec
        bs = traffic * batch / sec
        print("| %d | %d | %s | %.1f | %.2f | %.1f | %.0f%% | %.0f | %.1f | %.0f%% |" % (
            res, batch, row["side"], sec * 1000, flops / 1e9, fs / 1e9, 100 * fs / flops_peak,
            traffic / 1e6, bs / 1e9, 100 * bs / bw_peak))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""The PyTorch-eager side of embed_bench: the same optimiser step written the way the
reference Image2StyleGAN implementation does it (torch.optim.Adam over a [B, L, 512]
latent, MSE at full resolution + VGG16 perceptual loss on images downsampled to 256),
with the independent network code of tests/oracle/stylegan1_ref.py, on the same weight
files and thread count.

  embed_bench_torch.py --generator G.pt --vgg V.pth [--batch 1] [--steps 5] [--warmup 2]
                       [--threads N] [--device cpu|cuda] [--tf32 -1|0|1]
                       [--cudnn-benchmark -1|0|1] [--profile TABLE.txt]

Prints the same key=value line as embed_bench, measured the same way: first_step_s from
the start of loading the weights to the end of the first step; peak_mb the CUDA caching
allocator's peak, or on the CPU the growth of the resident set over the steps (the
kernel's high-water mark reset first). --profile writes torch.profiler's table of one
more step.
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "oracle"))
import stylegan1_ref as ref  # noqa: E402


def status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--generator", required=True)
    p.add_argument("--vgg", required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tf32", type=int, default=-1)
    p.add_argument("--cudnn-benchmark", type=int, default=-1)
    p.add_argument("--profile", default="")
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.tf32 >= 0:
        torch.backends.cuda.matmul.allow_tf32 = a.tf32 > 0
        torch.backends.cudnn.allow_tf32 = a.tf32 > 0
    if a.cudnn_benchmark >= 0:
        torch.backends.cudnn.benchmark = a.cudnn_benchmark > 0
    dev = torch.device(a.device)
    t_load = time.perf_counter()
    sd = {k: v.to(dev) for k, v in torch.load(a.generator).items()}
    vgg = {k: v.to(dev) for k, v in torch.load(a.vgg).items()}
    load_s = time.perf_counter() - t_load
    res = ref._sd_resolution(sd)
    layers = ref.num_layers(res)
    cuda = dev.type == "cuda"
    rss_reset = not cuda and reset_peak_rss()
    rss_before = status_kb("VmRSS")
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    g = torch.Generator().manual_seed(1)
    target = torch.rand(a.batch, 3, res, res, generator=g).to(dev)
    noise = [torch.randn(a.batch, 1, 4 << (i // 2), 4 << (i // 2)).to(dev) for i in range(layers)]

    def down(x):
        return x if res <= 256 else F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False)

    with torch.no_grad():
        target_feats = ref.vgg16_features(vgg, down(target))
    w = torch.zeros(a.batch, layers, 512, device=dev, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    def step():
        opt.zero_grad()
        syn = (ref.synthesis(sd, w, noise) + 1) / 2
        mse = (syn - target).square().mean(dim=(1, 2, 3))
        feats = ref.vgg16_features(vgg, down(syn))
        perc = sum((feats[k] - target_feats[k]).square().flatten(1).mean(1) for k in feats)
        loss = (mse + perc).sum()
        loss.backward()
        opt.step()
        float(loss)  # the metrics copy the engine makes every step

    times = []
    first_step_s = 0
    for i in range(a.warmup + a.steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        if i == 0:
            first_step_s = time.perf_counter() - t_load
        if i >= a.warmup:
            times.append((time.perf_counter() - t0) * 1000)
    if cuda:
        peak_mb, memory = torch.cuda.max_memory_allocated(dev) / 1048576.0, "cuda_allocated_peak"
    elif rss_reset and rss_before >= 0:
        peak_mb, memory = (status_kb("VmHWM") - rss_before) / 1024.0, "rss_growth"
    else:
        peak_mb, memory = -1.0, "none"
    if a.profile:
        from torch.profiler import ProfilerActivity, profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=acts) as prof:
            step()
            if cuda:
                torch.cuda.synchronize()
        key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
        with open(a.profile, "w") as f:
            f.write(prof.key_averages().table(sort_by=key, row_limit=30))
    times.sort()
    med = times[len(times) // 2]
    print("engine=pytorch-eager-%s device=%s resolution=%d batch=%d threads=%d upsample=reference "
          "steps=%d median_ms=%.2f min_ms=%.2f image_steps_per_s=%.3f first_step_s=%.2f peak_mb=%.1f "
          "mb_per_image=%.1f memory=%s load_s=%.2f" % (torch.__version__, a.device, res, a.batch, torch.get_num_threads(),
                                           len(times), med, times[0], a.batch * 1000.0 / med, first_step_s,
                                           peak_mb, peak_mb / a.batch, memory, load_s))


if __name__ == "__main__":
    main()

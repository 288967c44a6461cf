#!/usr/bin/python3
"""The PyTorch-eager side of embed_bench: the same optimiser step written the way the
reference Image2StyleGAN implementation does it (torch.optim.Adam over a [B, L, 512]
latent, MSE at full resolution + VGG16 perceptual loss on images downsampled to 256),
with the independent network code of tests/oracle/stylegan1_ref.py, on the same weight
files and thread count.

  embed_bench_torch.py --generator G.pt --vgg V.pth [--batch 1] [--steps 5] [--warmup 2]
                       [--threads N] [--device cpu|cuda]
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "oracle"))
import stylegan1_ref as ref  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--generator", required=True)
    p.add_argument("--vgg", required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    sd = {k: v.to(dev) for k, v in torch.load(a.generator).items()}
    vgg = {k: v.to(dev) for k, v in torch.load(a.vgg).items()}
    res = ref._sd_resolution(sd)
    layers = ref.num_layers(res)
    g = torch.Generator().manual_seed(1)
    target = torch.rand(a.batch, 3, res, res, generator=g).to(dev)
    noise = [torch.randn(a.batch, 1, 4 << (i // 2), 4 << (i // 2)).to(dev) for i in range(layers)]

    def down(x):
        return x if res <= 256 else F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False)

    with torch.no_grad():
        target_feats = ref.vgg16_features(vgg, down(target))
    w = torch.zeros(a.batch, layers, 512, device=dev, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    times = []
    for i in range(a.warmup + a.steps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad()
        syn = (ref.synthesis(sd, w, noise) + 1) / 2
        mse = (syn - target).square().mean(dim=(1, 2, 3))
        feats = ref.vgg16_features(vgg, down(syn))
        perc = sum((feats[k] - target_feats[k]).square().flatten(1).mean(1) for k in feats)
        loss = (mse + perc).sum()
        loss.backward()
        opt.step()
        float(loss)  # the metrics copy the engine makes every step
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= a.warmup:
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    med = times[len(times) // 2]
    print("engine=pytorch-eager-%s device=%s resolution=%d batch=%d threads=%d steps=%d median_ms=%.1f "
          "min_ms=%.1f image_steps_per_s=%.3f" % (torch.__version__, a.device, res, a.batch,
                                                  torch.get_num_threads(), len(times), med, times[0],
                                                  a.batch * 1000.0 / med))


if __name__ == "__main__":
    main()

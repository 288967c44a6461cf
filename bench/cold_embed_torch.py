#!/usr/bin/python3
"""The PyTorch-eager side of bench/cold_embed.py: one whole cold embed as the reference
Image2StyleGAN loop does it, from process start to the written latent. It imports torch,
loads the generator and VGG16 files with torch.load (the loaders of
bench/embed_bench_torch.py), reads the image (PIL, already at the model's resolution),
then runs the loop of embed_bench_torch.py (Adam over a zero [1, L, 512] latent, MSE +
VGG16 perceptual loss) for --steps steps and writes the latent with numpy.

  cold_embed_torch.py --generator G.pt --vgg V.pth --image X.png --out W.npy
                      [--steps 200] [--threads N]

Prints one key=value line: startup_s (process start to the start of the first step,
read from /proc), steps, step_ms (median) and total_s (process start to the latent on
disk).
"""
import argparse
import os
import sys
import time


def process_age_s():
    """Seconds since this process started (the kernel's start time, /proc/self/stat)."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    start_ticks = int(fields[19])  # field 22 of stat(5), counted after the command name
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--generator", required=True)
    p.add_argument("--vgg", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()

    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import embed_bench_torch as eb  # noqa: E402  (its loaders and the oracle's networks)

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    arch, sd = eb.load_generator(a.generator)
    if arch != "stylegan1":
        sys.exit("cold_embed_torch: StyleGAN1 generator files only")
    vgg = torch.load(a.vgg)
    res = eb.ref._sd_resolution(sd)
    layers = eb.ref.num_layers(res)
    img = Image.open(a.image).convert("RGB")
    if img.size != (res, res):
        sys.exit("cold_embed_torch: the image must be %dx%d already" % (res, res))
    target = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    g = torch.Generator().manual_seed(1)
    noise = [torch.randn(1, 1, 4 << (i // 2), 4 << (i // 2), generator=g) for i in range(layers)]

    def down(x):
        return x if res <= 256 else F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False)

    with torch.no_grad():
        target_feats = eb.ref.vgg16_features(vgg, down(target))
    w = torch.zeros(1, layers, 512, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    startup_s = process_age_s()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        syn = (eb.ref.synthesis(sd, w, noise) + 1) / 2
        mse = (syn - target).square().mean()
        feats = eb.ref.vgg16_features(vgg, down(syn))
        perc = sum((feats[k] - target_feats[k]).square().mean() for k in feats)
        loss = mse + perc
        loss.backward()
        opt.step()
        float(loss)
        times.append((time.perf_counter() - t0) * 1000)
    np.save(a.out, w.detach()[0].numpy())
    total_s = process_age_s()
    times.sort()
    print("engine=pytorch-eager-%s threads=%d startup_s=%.3f steps=%d step_ms=%.1f total_s=%.3f"
          % (torch.__version__, torch.get_num_threads(), startup_s, a.steps,
             times[len(times) // 2] if times else 0.0, total_s))


if __name__ == "__main__":
    main()

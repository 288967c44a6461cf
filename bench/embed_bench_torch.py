#!/usr/bin/python3
"""The PyTorch-eager side of embed_bench: the same optimiser step written the way the
reference Image2StyleGAN implementation does it (torch.optim.Adam over a [B, L, 512]
latent, MSE at full resolution + VGG16 perceptual loss on images downsampled to 256),
with the independent network code of tests/oracle, on the same weight files and thread
count. The architecture is read from the file's keys: StyleGAN1 (the port's
`g_mapping.*` / `g_synthesis.*` state dict; tests/oracle/stylegan1_ref.py) or StyleGAN2
(a rosinality checkpoint `{g_ema, latent_avg}` or a bare g_ema state dict;
tests/oracle/stylegan2_ref.py). NVIDIA pickles are not read here (convert them first).

  embed_bench_torch.py --generator G.pt --vgg V.pth [--batch 1] [--steps 5] [--warmup 2]
                       [--threads N] [--device cpu|cuda] [--tf32 -1|0|1]
                       [--cudnn-benchmark -1|0|1] [--modconv shared|grouped] [--check]
                       [--profile TABLE.txt]

StyleGAN2's modulated convolution, in either of the engine's two forms (--modconv):
  shared   the oracle's own synthesis (stylegan2_ref.synthesis): x * s, one convolution
           with the shared weight, output * demodulation coefficient [B, O] (NVIDIA's
           fused_modconv=False);
  grouped  per-sample weights W * s * demod, run as one convolution with groups = batch
           (rosinality's port), written below in the oracle's plain-functional style on
           the oracle's primitives (styles, upfirdn2d, activation).
--check compares the grouped form's image with the oracle's first (prints the largest
difference; exits 1 above 1e-4). The noise maps are the file's constant maps
(noises.noise_*), one copy per image, as the engine embeds with them.

Prints the same key=value line as embed_bench, measured the same way: first_step_s from
the start of loading the weights to the end of the first step; peak_mb the CUDA caching
allocator's peak, or on the CPU the growth of the resident set over the steps (the
kernel's high-water mark reset first). --profile writes torch.profiler's table of one
more step. StyleGAN2 lines end with arch=stylegan2 modconv=FORM (StyleGAN1: arch=stylegan1).
"""
import argparse
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "oracle"))
import stylegan1_ref as ref  # noqa: E402  (StyleGAN1 and VGG16)
import stylegan2_ref as ref2  # noqa: E402


def _modconv_grouped(sd, prefix, x, w_row, demodulate, up):
    """rosinality's form of the modulated convolution: per-sample weights
    W / sqrt(I k^2) * s[b] (demodulated: / sqrt(sum over I, k, k of their squares + eps)),
    run as one convolution with groups = batch. Same arguments and result as
    stylegan2_ref._modconv_rosinality (its shared-weight form)."""
    W5 = sd[prefix + ".weight"]  # [1, O, I, k, k]
    _, O, I, k, _ = W5.shape
    B, _, H, Wd = x.shape
    s = ref2._styles(sd, prefix, w_row)  # [B, I]
    wgt = W5 * (1.0 / math.sqrt(I * k * k)) * s[:, None, :, None, None]  # [B, O, I, k, k]
    if demodulate:
        d = torch.rsqrt(wgt.square().sum(dim=(2, 3, 4)) + ref2.DEMOD_EPS)  # [B, O]
        wgt = wgt * d[:, :, None, None, None]
    xg = x.reshape(1, B * I, H, Wd)
    if up:
        # Transposed convolution: weight [B * I, O, k, k] per group.
        y = F.conv_transpose2d(xg, wgt.transpose(1, 2).reshape(B * I, O, k, k), stride=2,
                               padding=0, groups=B)
        y = y.reshape(B, O, y.shape[2], y.shape[3])
        return ref2.upfirdn2d(y, sd[prefix + ".blur.kernel"], pad=(1, 1))
    y = F.conv2d(xg, wgt.reshape(B * O, I, k, k), padding=k // 2, groups=B)
    return y.reshape(B, O, H, Wd)


def synthesis2_grouped(sd, wplus, noise):
    """stylegan2_ref.synthesis's wiring with the grouped modulated convolution (ToRGB too,
    as the engine's ModulatedConv::kGrouped). noise: a list of [1 or B, 1, R, R] maps."""
    _, _, _, ch = ref2.infer_config(sd)

    def styled(prefix, x, w_row, n, up):
        x = _modconv_grouped(sd, prefix + ".conv", x, w_row, True, up)
        x = x + sd[prefix + ".noise.weight"].reshape(1, 1, 1, 1) * n
        return ref2._lrelu_gain(x + sd[prefix + ".activate.bias"].reshape(1, -1, 1, 1))

    def to_rgb(prefix, x, w_row, skip):
        y = _modconv_grouped(sd, prefix + ".conv", x, w_row, False, False)
        y = y + sd[prefix + ".bias"].reshape(1, 3, 1, 1)
        if skip is not None:
            y = y + ref2.upfirdn2d(skip, sd[prefix + ".upsample.kernel"], up=2, pad=(2, 1))
        return y

    B = wplus.shape[0]
    x = sd["input.input"].expand(B, -1, -1, -1)
    x = styled("conv1", x, wplus[:, 0], noise[0], False)
    skip = to_rgb("to_rgb1", x, wplus[:, 1], None)
    for k in range(len(ch) - 1):
        x = styled("convs.%d" % (2 * k), x, wplus[:, 2 * k + 1], noise[2 * k + 1], True)
        x = styled("convs.%d" % (2 * k + 1), x, wplus[:, 2 * k + 2], noise[2 * k + 2], False)
        skip = to_rgb("to_rgbs.%d" % k, x, wplus[:, 2 * k + 3], skip)
    return skip


def load_generator(path):
    """(arch, state dict) from the file's keys: 'stylegan1' (the port's flat state dict)
    or 'stylegan2' (rosinality's g_ema, wrapped in a checkpoint or bare)."""
    obj = torch.load(path, map_location="cpu")
    if not isinstance(obj, dict):
        sys.exit("embed_bench_torch: %s: not a state dict or checkpoint" % path)
    if any(k.startswith("g_mapping.") or k.startswith("g_synthesis.") for k in obj):
        return "stylegan1", obj
    if isinstance(obj.get("g_ema"), dict) and "style.1.weight" in obj["g_ema"]:
        return "stylegan2", obj["g_ema"]
    if "style.1.weight" in obj:
        return "stylegan2", obj
    sys.exit("embed_bench_torch: %s: neither a StyleGAN1 port state dict nor a rosinality "
             "StyleGAN2 checkpoint (keys %s ...)" % (path, ", ".join(list(obj)[:4])))


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
    p.add_argument("--modconv", default="shared", choices=("shared", "grouped"),
                   help="StyleGAN2's modulated convolution form")
    p.add_argument("--check", action="store_true",
                   help="StyleGAN2: compare the grouped form with the oracle's image first")
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
    arch, sd = load_generator(a.generator)
    sd = {k: v.to(dev) for k, v in sd.items()}
    vgg = {k: v.to(dev) for k, v in torch.load(a.vgg).items()}
    load_s = time.perf_counter() - t_load
    if arch == "stylegan1":
        res = ref._sd_resolution(sd)
        layers = ref.num_layers(res)
        latent = 512
    else:
        res, latent, _, _ = ref2.infer_config(sd)
        layers = ref2.num_ws(res)
        if a.check:  # before the measurement, so its memory is not counted
            gc = torch.Generator().manual_seed(2)
            wc = torch.randn(a.batch, layers, latent, generator=gc).to(dev)
            nc = [sd["noises.noise_%d" % i] for i in range(ref2.num_noises(res))]
            with torch.no_grad():
                want = ref2.synthesis(sd, wc, nc)
                diff = float((synthesis2_grouped(sd, wc, nc) - want).abs().max())
            print("check: grouped vs oracle (shared) images, max |diff| = %.3g (image max |x| %.3g)"
                  % (diff, float(want.abs().max())))
            if not diff <= 1e-4:
                sys.exit("embed_bench_torch: the grouped form differs from the oracle")
    cuda = dev.type == "cuda"
    rss_reset = not cuda and reset_peak_rss()
    rss_before = status_kb("VmRSS")
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    g = torch.Generator().manual_seed(1)
    target = torch.rand(a.batch, 3, res, res, generator=g).to(dev)
    if arch == "stylegan1":
        noise = [torch.randn(a.batch, 1, 4 << (i // 2), 4 << (i // 2)).to(dev) for i in range(layers)]
        synthesize = lambda w: ref.synthesis(sd, w, noise)  # noqa: E731
    else:
        # The file's constant maps, one copy per image (the engine's DefaultNoise).
        noise = [sd["noises.noise_%d" % i].expand(a.batch, -1, -1, -1).clone()
                 for i in range(ref2.num_noises(res))]
        if a.modconv == "shared":
            synthesize = lambda w: ref2.synthesis(sd, w, noise)  # noqa: E731
        else:
            synthesize = lambda w: synthesis2_grouped(sd, w, noise)  # noqa: E731

    def down(x):
        return x if res <= 256 else F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False)

    with torch.no_grad():
        target_feats = ref.vgg16_features(vgg, down(target))
    w = torch.zeros(a.batch, layers, latent, device=dev, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    def step():
        opt.zero_grad()
        syn = (synthesize(w) + 1) / 2
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
    print("engine=pytorch-eager-%s device=%s resolution=%d batch=%d threads=%d upsample=%s "
          "steps=%d median_ms=%.2f min_ms=%.2f image_steps_per_s=%.3f first_step_s=%.2f peak_mb=%.1f "
          "mb_per_image=%.1f memory=%s load_s=%.2f arch=%s%s" % (
              torch.__version__, a.device, res, a.batch, torch.get_num_threads(),
              "reference" if arch == "stylegan1" else "-", len(times), med, times[0],
              a.batch * 1000.0 / med, first_step_s, peak_mb, peak_mb / a.batch, memory, load_s,
              arch, "" if arch == "stylegan1" else " modconv=" + a.modconv))


if __name__ == "__main__":
    main()

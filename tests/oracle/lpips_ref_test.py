#!/usr/bin/env python3
"""LPIPS of the engine (`i2s_tool lpips`) against the `lpips` package's own code.

The package (0.1.4, from PyPI's wheel unpacked by scripts/fetch-lpips) runs unmodified on
Debian's python3-torch, with its published calibration layers (lpips/weights/v0.1/vgg.pth)
and a random VGG16 trunk written by `i2s_tool random-model --kind vgg16`. Two of its
imports are not Debian packages this project installs, and neither takes part in the
distance: `torchvision.models.vgg16`, which the package only asks for the layer structure
of VGG16's `features` (13 3x3 convolutions with ReLUs, 2x2 max pools; the trunk's weights
are then loaded from the test's file), and `tqdm` (a progress bar of its training code).
Both are provided below as exactly that.

Checked: the engine's value equals the package's within 1e-4 on real photos (skimage's
astronaut, chelsea, coffee) at 64 and 256 pixels, for different and nearly equal pairs,
and for a 300-pixel pair that both sides area-downsample to 256. Then `i2s_tool embed`
with the StyleGAN2 projector's schedule reports the LPIPS of what it wrote.
"""
import argparse
import os
import subprocess
import sys
import types

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
import skimage.data

TOLERANCE = 1e-4
VGG16_FEATURES = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                  512, 512, 512, "M"]


def install_stand_ins():
    def vgg16(pretrained=False, **_):
        assert not pretrained, "the test loads its own trunk; nothing may be downloaded"
        layers, c = [], 3
        for v in VGG16_FEATURES:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                c = v
        return types.SimpleNamespace(features=nn.Sequential(*layers))

    tv = types.ModuleType("torchvision")
    tv.models = types.SimpleNamespace(vgg16=vgg16)
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.models"] = tv.models
    tq = types.ModuleType("tqdm")
    tq.tqdm = lambda it=None, *a, **k: it
    sys.modules["tqdm"] = tq


def package_lpips(package_dir, calibration, trunk_file):
    install_stand_ins()
    sys.path.insert(0, package_dir)
    import lpips  # noqa: E402  (the package's own code)
    model = lpips.LPIPS(net="vgg", version="0.1", pnet_rand=True, model_path=calibration,
                        verbose=False)
    trunk = torch.load(trunk_file, map_location="cpu")
    loaded = 0
    for name, module in model.net.named_modules():
        # slices hold torchvision's modules under their original indices: sliceK.N
        parts = name.split(".")
        if len(parts) == 2 and isinstance(module, nn.Conv2d):
            module.weight.data.copy_(trunk[f"features.{parts[1]}.weight"])
            module.bias.data.copy_(trunk[f"features.{parts[1]}.bias"])
            loaded += 1
    assert loaded == 13, f"loaded {loaded} of VGG16's 13 convolutions"
    model.eval()
    return model


def to_tensor(path):
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0)


def save(array, size, path, crop=None):
    img = Image.fromarray(array)
    if crop:
        img = img.crop(crop)
    img.resize((size, size), Image.BICUBIC).save(path)
    return path


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tool", required=True)
    p.add_argument("--lpips-dir", required=True, help="the unpacked wheel (scripts/fetch-lpips)")
    p.add_argument("--work", required=True)
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    calibration = os.path.join(args.lpips_dir, "lpips", "weights", "v0.1", "vgg.pth")
    trunk = os.path.join(args.work, "vgg16.pt")
    subprocess.run([args.tool, "random-model", "--kind", "vgg16", "--seed", "11", "--out", trunk],
                   check=True, stdout=subprocess.DEVNULL)
    model = package_lpips(args.lpips_dir, calibration, trunk)

    w = args.work
    astronaut, chelsea, coffee = skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee()
    rng = np.random.default_rng(5)
    noisy = np.clip(astronaut.astype(np.float32) + rng.normal(0, 6, astronaut.shape), 0, 255)
    cases = [
        ("astronaut/chelsea 256", save(astronaut, 256, f"{w}/a256.png"),
         save(chelsea, 256, f"{w}/c256.png", crop=(0, 0, 300, 300)), 256),
        ("astronaut/coffee 64", save(astronaut, 64, f"{w}/a64.png"),
         save(coffee, 64, f"{w}/k64.png", crop=(0, 0, 400, 400)), 64),
        ("astronaut/noisy astronaut 256", f"{w}/a256.png",
         save(noisy.astype(np.uint8), 256, f"{w}/n256.png"), 256),
        ("astronaut/chelsea 300 -> 256", save(astronaut, 300, f"{w}/a300.png"),
         save(chelsea, 300, f"{w}/c300.png", crop=(0, 0, 300, 300)), 256),
    ]
    failures = 0
    values = []
    for name, a, b, res in cases:
        out = subprocess.run([args.tool, "lpips", "--vgg", trunk, "--lpips", calibration,
                              "--resolution", str(res), a, b],
                             check=True, capture_output=True, text=True).stdout
        engine = float(out.strip().splitlines()[-1])
        x, y = to_tensor(a), to_tensor(b)
        if x.shape[-1] > res:
            x = F.interpolate(x, size=(res, res), mode="area")
            y = F.interpolate(y, size=(res, res), mode="area")
        with torch.no_grad():
            ref = float(model(x, y, normalize=True).flatten()[0])
        diff = abs(engine - ref)
        values.append(ref)
        ok = diff <= TOLERANCE
        failures += 0 if ok else 1
        print(f"{'ok  ' if ok else 'FAIL'} {name}: engine {engine:.7f} lpips package {ref:.7f} "
              f"|diff| {diff:.2e}")
    # The cases must tell images apart, or equal values would prove nothing.
    if not (values[2] < values[0] and values[0] > 1e-3):
        print(f"FAIL: distances do not order as expected: {values}")
        failures += 1
    failures += embed_reports_lpips(args.tool, trunk, calibration, w)
    if failures:
        sys.exit(1)
    print("all LPIPS values match the lpips package")


def embed_reports_lpips(tool, trunk, calibration, w):
    """`i2s_tool embed --schedule stylegan2-projector --lpips` on a random StyleGAN2: the
    result's LPIPS it reports is that of its reconstruction (8-bit PNG: within 0.01)."""
    gen = os.path.join(w, "g2.pt")
    subprocess.run([tool, "random-model", "--arch", "stylegan2", "--resolution", "32",
                    "--fmap-base", "256", "--seed", "3", "--out", gen],
                   check=True, stdout=subprocess.DEVNULL)
    target = save(skimage.data.astronaut(), 32, f"{w}/a32.png")
    out = subprocess.run([tool, "embed", "--generator", gen, "--vgg", trunk, "--lpips",
                          calibration, "--image", target, "--out", f"{w}/w.npy", "--recon",
                          f"{w}/recon.png", "--schedule", "stylegan2-projector", "--steps", "20",
                          "--mean-w-samples", "500", "--log-every", "5"],
                         check=True, capture_output=True, text=True).stdout
    line = [l for l in out.splitlines() if l.startswith("result:")]
    steps = [l for l in out.splitlines() if l.startswith("step ")]
    reported = float(line[-1].split("lpips")[1].split()[0]) if line else -1
    measured = float(subprocess.run([tool, "lpips", "--vgg", trunk, "--lpips", calibration,
                                     target, f"{w}/recon.png"], check=True, capture_output=True,
                                    text=True).stdout.strip())
    w_rows = np.load(f"{w}/w.npy")
    ok = (line and abs(reported - measured) <= 0.01 and all("lpips" in l for l in steps)
          and "stylegan2_projector" in out and np.all(w_rows == w_rows[:1]))
    print(f"{'ok  ' if ok else 'FAIL'} i2s_tool embed --schedule stylegan2-projector: reported "
          f"lpips {reported:.4f}, its PNG reconstruction's {measured:.4f}")
    if not ok:
        print(out)
    return 0 if ok else 1


if __name__ == "__main__":
    main()

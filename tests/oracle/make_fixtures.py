#!/usr/bin/python3
"""Write test fixtures for the StyleGAN1 / VGG16 C++ engine from the Python oracle.

Usage: /usr/bin/python3 make_fixtures.py --out DIR [--cases gen_r32,gen_r128,gen_r1024,vgg]

Everything is computed in float32 on CPU with 2 threads under torch.no_grad(), from
fixed seeds, so the same command writes byte-identical .npy/.npz files.
.npz files are uncompressed (ZIP_STORED) archives laid out exactly like np.savez's,
except that the member timestamps are fixed (1980-01-01) for reproducibility.
"""

import argparse
import json
import os
import sys
import time
import zipfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stylegan1_ref as ref  # noqa: E402

LATENT = 512

# name -> (resolution, fmap_base, fmap_max, batch, seed)
GEN_CASES = {
    "gen_r32": (32, 256, 64, 2, 1),
    "gen_r128": (128, 256, 64, 2, 2),
    "gen_r1024": (1024, 8192, 512, 1, 3),
}
VGG_SEED = 4
ALL_CASES = ["gen_r32", "gen_r128", "gen_r1024", "vgg"]


def _gen(seed):
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def _np32(t):
    return np.ascontiguousarray(t.detach().cpu().to(torch.float32).numpy())


def _report(path):
    print("wrote %s (%d bytes)" % (path, os.path.getsize(path)), flush=True)


def save_npy(path, arr):
    np.save(path, np.ascontiguousarray(arr, dtype=np.float32))
    _report(path)


def save_npz(path, arrays):
    """Uncompressed npz (same layout as np.savez) with fixed member timestamps."""
    with zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_STORED,
                         allowZip64=True) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o600 << 16
            with zf.open(info, "w", force_zip64=True) as fid:
                np.lib.format.write_array(
                    fid, np.ascontiguousarray(arr, dtype=np.float32), allow_pickle=False)
    _report(path)


def save_pt(path, sd, legacy):
    if legacy:
        torch.save(sd, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(sd, path)
    _report(path)


def make_gen_case(out, name):
    res, fmap_base, fmap_max, n, seed = GEN_CASES[name]
    L = ref.num_layers(res)
    sd = ref.make_random_state_dict(res, fmap_base=fmap_base, fmap_max=fmap_max,
                                    latent=LATENT, mapping_layers=8, seed=seed)
    save_pt(os.path.join(out, name + ".legacy.pt"), sd, legacy=True)
    save_pt(os.path.join(out, name + ".zip.pt"), sd, legacy=False)

    z = torch.randn(n, LATENT, generator=_gen(seed * 1000 + 1), dtype=torch.float32)
    w = ref.mapping(sd, z)
    # W+: w broadcast over layers plus an N(0, 0.5^2) perturbation so rows differ.
    pert = torch.randn(n, L, LATENT, generator=_gen(seed * 1000 + 2), dtype=torch.float32)
    wplus = (w[:, None, :] + 0.5 * pert).contiguous()
    gn = _gen(seed * 1000 + 3)
    noise = []
    for i in range(L):
        hw = 2 ** (2 + i // 2)
        noise.append(torch.randn(n, 1, hw, hw, generator=gn, dtype=torch.float32))

    img_noise = ref.synthesis(sd, wplus, noise)
    img_nonoise = ref.synthesis(sd, wplus, None)

    save_npy(os.path.join(out, name + ".z.npy"), _np32(z))
    save_npy(os.path.join(out, name + ".w.npy"), _np32(w))
    save_npy(os.path.join(out, name + ".wplus.npy"), _np32(wplus))
    save_npz(os.path.join(out, name + ".noise.npz"),
             {"noise%d" % i: _np32(t) for i, t in enumerate(noise)})
    save_npy(os.path.join(out, name + ".img_noise.npy"), _np32(img_noise))
    save_npy(os.path.join(out, name + ".img_nonoise.npy"), _np32(img_nonoise))

    meta = {
        "resolution": res,
        "fmap_base": fmap_base,
        "fmap_max": fmap_max,
        "num_layers": L,
        "batch": n,
        "num_keys": len(sd),
        "num_params": int(sum(t.numel() for t in sd.values())),
    }
    path = os.path.join(out, name + ".json")
    with open(path, "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    _report(path)


def make_vgg_case(out):
    # All 13 convs of torchvision's layout (the loader must skip 21..28); the
    # classifier would add 500 MB to every test run, so it is left out.
    sd_full = ref.vgg16_random_state_dict(seed=VGG_SEED, with_classifier=False,
                                          all_features=True)
    save_pt(os.path.join(out, "vgg.zip.pth"), sd_full, legacy=False)
    sd_small = ref.vgg16_random_state_dict(seed=VGG_SEED, with_classifier=False)
    for k, v in sd_small.items():  # same values by construction
        assert torch.equal(v, sd_full[k]), k
    del sd_full
    save_pt(os.path.join(out, "vgg.legacy.pth"), sd_small, legacy=True)

    img = torch.rand(2, 3, 64, 64, generator=_gen(VGG_SEED * 1000 + 1), dtype=torch.float32)
    save_npy(os.path.join(out, "vgg.input.npy"), _np32(img))
    feats = ref.vgg16_features(sd_small, img, imagenet_norm=False)
    save_npz(os.path.join(out, "vgg.feats.npz"), {k: _np32(v) for k, v in feats.items()})
    feats = ref.vgg16_features(sd_small, img, imagenet_norm=True)
    save_npz(os.path.join(out, "vgg.feats_imagenet.npz"),
             {k: _np32(v) for k, v in feats.items()})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (created if missing)")
    ap.add_argument("--cases", default=",".join(ALL_CASES),
                    help="comma-separated subset of: " + ",".join(ALL_CASES))
    args = ap.parse_args(argv)

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in ALL_CASES]
    if unknown:
        ap.error("unknown case(s): %s (known: %s)" % (",".join(unknown), ",".join(ALL_CASES)))
    os.makedirs(args.out, exist_ok=True)

    torch.set_num_threads(2)
    with torch.no_grad():
        for c in cases:
            t0 = time.time()
            if c == "vgg":
                make_vgg_case(args.out)
            else:
                make_gen_case(args.out, c)
            print("case %s done in %.1f s" % (c, time.time() - t0), file=sys.stderr,
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

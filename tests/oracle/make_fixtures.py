#!/usr/bin/python3
"""Write test fixtures for the StyleGAN1 / StyleGAN2 / VGG16 C++ engine from the Python
oracles (stylegan1_ref.py, stylegan2_ref.py).

Usage: /usr/bin/python3 make_fixtures.py --out DIR [--cases gen_r32,gen_r128,gen_r1024,vgg,
                                                  sg2_r16,sg2_r32_cm1,sg2_r64_cm2,sg2_r1024_f,
                                                  sg2_bad]
       (--cases stylegan1 / stylegan2 select each group; default: every case)

StyleGAN1 and VGG cases write flat files OUT/<case>.*; StyleGAN2 cases write OUT/<case>/
(layout in write_sg2_case's docstring and each case's meta.json).

Everything is computed in float32 on CPU with 2 threads (StyleGAN2 cases: 1 thread) under
torch.no_grad(), from fixed seeds, so the same command writes byte-identical .npy/.npz files
(and, for the StyleGAN2 cases, byte-identical .pt/.pkl files too).
.npz files are uncompressed (ZIP_STORED) archives laid out exactly like np.savez's,
except that the member timestamps are fixed (1980-01-01) for reproducibility.
"""

import argparse
import collections
import contextlib
import json
import os
import sys
import time
import zipfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stylegan1_ref as ref  # noqa: E402
import stylegan2_ref as ref2  # noqa: E402

LATENT = 512

# name -> (resolution, fmap_base, fmap_max, batch, seed)
GEN_CASES = {
    "gen_r32": (32, 256, 64, 2, 1),
    "gen_r128": (128, 256, 64, 2, 2),
    "gen_r1024": (1024, 8192, 512, 1, 3),
}
VGG_SEED = 4
SG1_CASES = ["gen_r32", "gen_r128", "gen_r1024", "vgg"]
SG2_CASE_NAMES = ["sg2_r16", "sg2_r32_cm1", "sg2_r64_cm2", "sg2_r1024_f", "sg2_bad"]
ALL_CASES = SG1_CASES + SG2_CASE_NAMES
CASE_GROUPS = {"stylegan1": SG1_CASES, "stylegan2": SG2_CASE_NAMES}


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


# ---------------------------------------------------------------------------
# StyleGAN2 (stylegan2_ref.py): OUT/<case>/
# ---------------------------------------------------------------------------

# name -> configuration. Channels follow NVIDIA's min(channel_base // res, channel_max);
# sg2_r32_cm1 / sg2_r64_cm2 use rosinality's table for their cm scaled down (channel_base
# 16384*cm/32, channel_max 512/16); sg2_r1024_f is the real thing.
SG2_CASES = {
    # Tiny: 4->32, 8->16, 16->8 channels; conv_clamp 0.5 so that clamping shows.
    "sg2_r16": dict(resolution=16, latent=32, mapping_layers=2, channel_multiplier=2,
                    channel_base=128, channel_max=32, conv_clamp=0.5, num_fp16_res=0,
                    batch=2, seed=21, pkl_protocol=3, pkl_g="perturbed"),
    "sg2_r32_cm1": dict(resolution=32, latent=64, mapping_layers=3, channel_multiplier=1,
                        channel_base=512, channel_max=32, conv_clamp=None, num_fp16_res=0,
                        batch=2, seed=22, pkl_protocol=4, pkl_g="perturbed"),
    "sg2_r64_cm2": dict(resolution=64, latent=64, mapping_layers=8, channel_multiplier=2,
                        channel_base=1024, channel_max=32, conv_clamp=256, num_fp16_res=2,
                        batch=2, seed=23, pkl_protocol=4, pkl_g="perturbed"),
    # The published 1024 config-f shapes (rosinality's 171 keys).
    "sg2_r1024_f": dict(resolution=1024, latent=512, mapping_layers=8, channel_multiplier=2,
                        channel_base=32768, channel_max=512, conv_clamp=256, num_fp16_res=4,
                        batch=1, seed=24, pkl_protocol=3, pkl_g="shared"),
}
SG2_TRUNCATION = 0.7
SG2_WPLUS_SPREAD = 0.5
SG2_LAYOUT_ATOL = 1e-5
SG2_FILES = {
    "meta.json": "this description",
    "rosinality.pt": "torch.save zip: {g_ema (state dict with _metadata), latent_avg [latent]}",
    "rosinality_legacy.pt": "legacy torch.save format: the bare g_ema state dict, no "
                            "latent_avg (storage keys are deterministic decimal strings, "
                            "storages in sorted-key order)",
    "rosinality_train.pt": "torch.save zip as train.py: {g, d, g_ema, g_optim, d_optim, "
                           "args (argparse.Namespace), ada_aug_p}, no latent_avg",
    "nvidia.pkl": "NVIDIA persistence pickle dict(G, D, G_ema, training_set_kwargs, "
                  "augment_pipe); G_ema holds the same network as g_ema; mapping.w_avg = "
                  "latent_avg; D is an unknown class (NEWOBJ+BUILD)",
    "z.npy": "[B, latent] float32",
    "w.npy": "[B, latent] mapping(z), no truncation",
    "w_trunc.npy": "[B, latent] latent_avg + truncation_psi*(w - latent_avg)",
    "latent_avg.npy": "[latent] (== latent_avg in rosinality.pt == mapping.w_avg in nvidia.pkl"
                      "; mean of mapping over 2048 seeded z)",
    "wplus.npy": "[B, num_ws, latent] w + spread*N(0,1) per row",
    "img_const.npy": "[B, 3, R, R] synthesis(wplus) with the file's constant noise "
                     "(noises.noise_i / noise_const), no conv_clamp",
    "img_none.npy": "[B, 3, R, R] without noise",
    "noise.npz": "noise_0..noise_{n-1}: [1, 1, R_i, R_i] maps, shared by the batch",
    "img_noise.npy": "[B, 3, R, R] with the maps of noise.npz (times each layer's strength)",
    "img_const_clamp.npy": "(only when conv_clamp is set) [B, 3, R, R] NVIDIA-layout forward "
                           "with the file's constant noise and conv_clamp",
}


def _sg2_gen(seed, k):
    return _gen(seed * 1000 + k)


def write_sg2_case(outdir, name, cfg):
    """One StyleGAN2 case in outdir (layout: SG2_FILES; meta.json repeats it)."""
    os.makedirs(outdir, exist_ok=True)
    res, latent, n_map = cfg["resolution"], cfg["latent"], cfg["mapping_layers"]
    B, seed = cfg["batch"], cfg["seed"]
    L = ref2.num_ws(res)
    sd = ref2.make_random_rosinality_state_dict(
        res, latent=latent, mapping_layers=n_map, channel_multiplier=cfg["channel_multiplier"],
        channel_max=cfg["channel_max"], channel_base=cfg["channel_base"], seed=seed)
    latent_avg = ref2.mean_latent(sd, n=2048, seed=seed * 1000 + 4)
    z = torch.randn(B, latent, generator=_sg2_gen(seed, 1), dtype=torch.float32)
    w = ref2.mapping(sd, z)
    w_trunc = ref2.mapping(sd, z, truncation=SG2_TRUNCATION, w_avg=latent_avg)
    pert = torch.randn(B, L, latent, generator=_sg2_gen(seed, 2), dtype=torch.float32)
    wplus = (w[:, None, :] + SG2_WPLUS_SPREAD * pert).contiguous()
    gn = _sg2_gen(seed, 3)
    noise = [torch.randn(*s, generator=gn, dtype=torch.float32) for s in ref2.noise_shapes(res)]

    img_const = ref2.synthesis(sd, wplus, "const")
    img_none = ref2.synthesis(sd, wplus, "none")
    img_noise = ref2.synthesis(sd, wplus, noise)
    nv = ref2.to_nvidia(sd, latent_avg)

    # Layout check: the NVIDIA-layout forward (independent code path) must agree.
    clamp = cfg["conv_clamp"]
    img_clamp = None
    if res <= 256:
        layout_diff = ref2.self_check_layouts(sd, wplus, latent_avg, atol=SG2_LAYOUT_ATOL, z=z)
    if clamp is not None:
        img_clamp = ref2.synthesis_nvidia(nv, wplus, "const", conv_clamp=clamp)
        clamp_diff = float((img_clamp - img_const).abs().max())
        if clamp < 1.0:
            assert clamp_diff > 0.05, "conv_clamp %g does not change the image" % clamp
        else:
            assert clamp_diff <= SG2_LAYOUT_ATOL, "conv_clamp %g: %g" % (clamp, clamp_diff)
        if res > 256:
            layout_diff = clamp_diff
    elif res > 256:
        layout_diff = float((ref2.synthesis_nvidia(nv, wplus, "const") - img_const).abs().max())
        assert layout_diff <= SG2_LAYOUT_ATOL, layout_diff

    def path(f):
        return os.path.join(outdir, f)

    ref2.write_rosinality(path("rosinality.pt"), sd, latent_avg, zip=True, wrap=True)
    _report(path("rosinality.pt"))
    ref2.write_rosinality(path("rosinality_legacy.pt"), sd, None, zip=False, wrap=False)
    _report(path("rosinality_legacy.pt"))
    back = torch.load(path("rosinality_legacy.pt"))  # our own legacy writer: read it back
    assert list(back.keys()) == list(sd.keys())
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    del back
    ref2.write_rosinality(path("rosinality_train.pt"), sd, None, zip=True, wrap=True,
                          with_training_junk=True, g_training=cfg["pkl_g"], seed=seed,
                          channel_multiplier=cfg["channel_multiplier"])
    _report(path("rosinality_train.pt"))
    init_kwargs = ref2.nvidia_init_kwargs(
        res, latent=latent, mapping_layers=n_map, channel_base=cfg["channel_base"],
        channel_max=cfg["channel_max"], num_fp16_res=cfg["num_fp16_res"], conv_clamp=clamp)
    ref2.write_nvidia_pkl(path("nvidia.pkl"), nv, init_kwargs, protocol=cfg["pkl_protocol"],
                          g_training=cfg["pkl_g"], seed=seed)
    _report(path("nvidia.pkl"))

    save_npy(path("z.npy"), _np32(z))
    save_npy(path("w.npy"), _np32(w))
    save_npy(path("w_trunc.npy"), _np32(w_trunc))
    save_npy(path("latent_avg.npy"), _np32(latent_avg))
    save_npy(path("wplus.npy"), _np32(wplus))
    save_npy(path("img_const.npy"), _np32(img_const))
    save_npy(path("img_none.npy"), _np32(img_none))
    save_npz(path("noise.npz"), {"noise_%d" % i: _np32(t) for i, t in enumerate(noise)})
    save_npy(path("img_noise.npy"), _np32(img_noise))
    if img_clamp is not None:
        save_npy(path("img_const_clamp.npy"), _np32(img_clamp))

    files = {k: v for k, v in SG2_FILES.items() if k != "img_const_clamp.npy" or img_clamp
             is not None}
    meta = {
        "case": name,
        "resolution": res,
        "latent": latent,
        "mapping_layers": n_map,
        "channel_multiplier": cfg["channel_multiplier"],
        "channel_base": cfg["channel_base"],
        "channel_max": cfg["channel_max"],
        "channels": {str(r): c for r, c in ref2.channel_table(
            res, cfg["channel_multiplier"], cfg["channel_max"], cfg["channel_base"]).items()},
        "conv_clamp": clamp,
        "clamp_changes_image": (None if clamp is None else bool(clamp < 1.0)),
        "num_fp16_res": cfg["num_fp16_res"],
        "num_ws": L,
        "num_noises": ref2.num_noises(res),
        "noise_shapes": [list(s) for s in ref2.noise_shapes(res)],
        "batch": B,
        "seed": seed,
        "truncation_psi": SG2_TRUNCATION,
        "wplus_spread": SG2_WPLUS_SPREAD,
        "pkl_protocol": cfg["pkl_protocol"],
        "pkl_G": cfg["pkl_g"],
        "persistence_version": ref2.PERSISTENCE_VERSION,
        "rosinality_num_keys": len(sd),
        "nvidia_num_tensors": len(nv),
        "num_params": int(sum(t.numel() for t in sd.values())),
        "layout_max_abs_diff": layout_diff,
        "img_const_range": [float(img_const.min()), float(img_const.max())],
        "files": files,
    }
    with open(path("meta.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    _report(path("meta.json"))
    return sd, nv, latent_avg


@contextlib.contextmanager
def _one_thread():
    """StyleGAN2 cases run on one thread: as fast as two on an idle 2-core VM for these
    sizes, much faster when the CPUs are shared (OpenMP threads that wait for a core), and
    the float results then do not depend on the thread count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def make_sg2_case(out, name):
    with _one_thread():
        write_sg2_case(os.path.join(out, name), name, SG2_CASES[name])


# file -> (what is wrong, words one of which a good error message contains)
SG2_BAD_FILES = {
    "truncated.pt": ("rosinality zip checkpoint cut at half its size (no zip directory)",
                     ["truncated", "zip", "corrupt", "read"]),
    "truncated_legacy.pt": ("legacy-format checkpoint cut at 60% (inside the storage data)",
                            ["truncated", "end of file", "corrupt", "read"]),
    "truncated.pkl": ("NVIDIA pickle cut at half its size (inside a storage blob)",
                      ["truncated", "pickle", "end of", "corrupt"]),
    "wrong_shape.pt": ("rosinality zip: convs.1.conv.weight is [1,16,8,3,3] instead of "
                       "[1,16,16,3,3]", ["convs.1.conv.weight", "shape"]),
    "wrong_shape.pkl": ("NVIDIA pickle: synthesis.b8.conv1.weight is [16,8,3,3] instead of "
                        "[16,16,3,3]", ["synthesis.b8.conv1.weight", "shape"]),
    "missing_key.pt": ("rosinality zip without to_rgbs.0.conv.modulation.weight",
                       ["to_rgbs.0.conv.modulation.weight", "missing"]),
    "stylegan3.pkl": ("a StyleGAN3 network (synthesis.input.*, synthesis.L0_36_16.*)",
                      ["stylegan3", "StyleGAN3"]),
    "conditional.pkl": ("a conditional StyleGAN2 (c_dim 4, mapping.embed.*)",
                        ["conditional", "c_dim", "label"]),
    "os_system.pkl": ("G_ema is REDUCE(os.system, ('echo ...; exit 97',)): must be refused, "
                      "never executed", ["os.system", "os system", "global", "unsupported"]),
    "tensorflow.pkl": ("an original TensorFlow StyleGAN2 pickle: tuple of "
                       "dnnlib.tflib.network.Network objects holding numpy arrays",
                       ["tensorflow", "TensorFlow", "tflib"]),
}


def make_sg2_bad_case(out):
    with _one_thread():
        write_sg2_bad_case(out)


def write_sg2_bad_case(out):
    """Malformed or unsupported files, all derived from the sg2_r16 configuration."""
    d = os.path.join(out, "sg2_bad")
    os.makedirs(d, exist_ok=True)
    cfg = SG2_CASES["sg2_r16"]
    res = cfg["resolution"]
    sd = ref2.make_random_rosinality_state_dict(
        res, latent=cfg["latent"], mapping_layers=cfg["mapping_layers"],
        channel_max=cfg["channel_max"], channel_base=cfg["channel_base"], seed=cfg["seed"])
    latent_avg = ref2.mean_latent(sd, n=2048, seed=cfg["seed"] * 1000 + 4)
    nv = ref2.to_nvidia(sd, latent_avg)
    ik = ref2.nvidia_init_kwargs(res, latent=cfg["latent"],
                                 mapping_layers=cfg["mapping_layers"],
                                 channel_base=cfg["channel_base"],
                                 channel_max=cfg["channel_max"], conv_clamp=cfg["conv_clamp"])

    def path(f):
        return os.path.join(d, f)

    def truncate(src, dst, frac):
        with open(src, "rb") as f:
            blob = f.read()
        with open(dst, "wb") as f:
            f.write(blob[:int(len(blob) * frac)])
        os.remove(src)
        _report(dst)

    # The zip records are named after the file, so write under the final base name first.
    tmpdir = path("tmp")
    os.makedirs(tmpdir, exist_ok=True)
    ref2.write_rosinality(os.path.join(tmpdir, "truncated.pt"), sd, latent_avg)
    truncate(os.path.join(tmpdir, "truncated.pt"), path("truncated.pt"), 0.5)
    ref2.write_rosinality(os.path.join(tmpdir, "truncated_legacy.pt"), sd, None, zip=False,
                          wrap=False)
    truncate(os.path.join(tmpdir, "truncated_legacy.pt"), path("truncated_legacy.pt"), 0.6)
    ref2.write_nvidia_pkl(os.path.join(tmpdir, "truncated.pkl"), nv, ik)
    truncate(os.path.join(tmpdir, "truncated.pkl"), path("truncated.pkl"), 0.5)
    os.rmdir(tmpdir)

    bad = collections.OrderedDict(sd)
    assert tuple(bad["convs.1.conv.weight"].shape) == (1, 16, 16, 3, 3)
    bad["convs.1.conv.weight"] = bad["convs.1.conv.weight"][:, :, :8].contiguous()
    ref2.write_rosinality(path("wrong_shape.pt"), bad, latent_avg)
    _report(path("wrong_shape.pt"))
    bad_nv = collections.OrderedDict(nv)
    bad_nv["synthesis.b8.conv1.weight"] = nv["synthesis.b8.conv1.weight"][:, :8].contiguous()
    ik_bad = ref2.nvidia_init_kwargs(res, latent=cfg["latent"],
                                     mapping_layers=cfg["mapping_layers"],
                                     channel_base=cfg["channel_base"],
                                     channel_max=cfg["channel_max"])
    ref2.write_nvidia_pkl(path("wrong_shape.pkl"), bad_nv, ik_bad)
    _report(path("wrong_shape.pkl"))
    missing = collections.OrderedDict(
        (k, v) for k, v in sd.items() if k != "to_rgbs.0.conv.modulation.weight")
    ref2.write_rosinality(path("missing_key.pt"), missing, latent_avg)
    _report(path("missing_key.pt"))

    t3, names3, attrs3 = ref2.stylegan3_nvidia_tensors(latent=cfg["latent"], seed=31)
    ref2.write_nvidia_pkl(path("stylegan3.pkl"), t3, ref2.stylegan3_init_kwargs(cfg["latent"]),
                          protocol=4, kind="stylegan3", class_names=names3, attrs_fn=attrs3,
                          seed=31)
    _report(path("stylegan3.pkl"))
    nv_c = ref2.conditional_nvidia_tensors(nv, c_dim=4, seed=32)
    ik_c = ref2.nvidia_init_kwargs(res, latent=cfg["latent"],
                                   mapping_layers=cfg["mapping_layers"],
                                   channel_base=cfg["channel_base"],
                                   channel_max=cfg["channel_max"], c_dim=4)
    ref2.write_nvidia_pkl(path("conditional.pkl"), nv_c, ik_c, seed=32)
    _report(path("conditional.pkl"))
    ref2.write_os_system_pkl(path("os_system.pkl"))
    _report(path("os_system.pkl"))
    ref2.write_tensorflow_pkl(path("tensorflow.pkl"), resolution=res, latent=cfg["latent"],
                              seed=33)
    _report(path("tensorflow.pkl"))

    meta = {"case": "sg2_bad", "config_of": "sg2_r16",
            "files": {k: {"what": v[0], "error_mentions_one_of": v[1]}
                      for k, v in SG2_BAD_FILES.items()}}
    with open(path("meta.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    _report(path("meta.json"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (created if missing)")
    ap.add_argument("--cases", default=",".join(ALL_CASES),
                    help="comma-separated subset of: " + ",".join(ALL_CASES)
                    + " (or the groups " + ",".join(CASE_GROUPS) + ")")
    args = ap.parse_args(argv)

    cases = []
    for c in (c.strip() for c in args.cases.split(",")):
        for name in CASE_GROUPS.get(c, [c] if c else []):
            if name not in cases:
                cases.append(name)
    unknown = [c for c in cases if c not in ALL_CASES]
    if unknown:
        ap.error("unknown case(s): %s (known: %s; groups: %s)"
                 % (",".join(unknown), ",".join(ALL_CASES), ",".join(CASE_GROUPS)))
    os.makedirs(args.out, exist_ok=True)

    torch.set_num_threads(2)
    with torch.no_grad():
        for c in cases:
            t0 = time.time()
            if c == "vgg":
                make_vgg_case(args.out)
            elif c == "sg2_bad":
                make_sg2_bad_case(args.out)
            elif c in SG2_CASES:
                make_sg2_case(args.out, c)
            else:
                make_gen_case(args.out, c)
            print("case %s done in %.1f s" % (c, time.time() - t0), file=sys.stderr,
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

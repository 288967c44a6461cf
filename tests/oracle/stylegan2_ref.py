"""Independent reference implementation (test oracle) of the StyleGAN2 generator, in the
two layouts users bring (rosinality `*.pt`, NVIDIA stylegan2-ada-pytorch `*.pkl`), and
writers for both file formats. Written in plain torch.nn.functional (float32, CPU) from the
math in /work/shared/specs/stylegan2.md; the authors' code was read only to establish the
facts below, none of it is copied.

Facts established from the authors' code (rosinality/stylegan2-pytorch model.py,
convert_weight.py; NVlabs/stylegan2-ada-pytorch training/networks.py, legacy.py,
torch_utils/persistence.py, torch_utils/ops/conv2d_resample.py, upfirdn2d.py)
------------------------------------------------------------------------------------------
Name mapping (rosinality g_ema  ->  NVIDIA G_ema), k = 0..n-1 for the blocks 8..res, R = 8*2^k:
    style.{i+1}.weight [L,L] / .bias [L]    -> mapping.fc{i}.weight / .bias      (same values)
    latent_avg [L] (convert_weight.py)      -> mapping.w_avg [L] (buffer)        (same values)
    input.input [1,C,4,4]                   -> synthesis.b4.const [C,4,4]        (squeeze 0)
    conv1.*                                 -> synthesis.b4.conv1.*
    to_rgb1.*                               -> synthesis.b4.torgb.*
    convs.{2k}.*   (upsampling)             -> synthesis.b{R}.conv0.*
    convs.{2k+1}.*                          -> synthesis.b{R}.conv1.*
    to_rgbs.{k}.*                           -> synthesis.b{R}.torgb.*
  per styled conv:
    conv.weight [1,O,I,3,3]                 -> weight [O,I,3,3]   (squeeze 0; NO flip, NO
                                               transpose, for the upsampling conv0 too: both
                                               ports flip TF's Conv0_up kernel the same way,
                                               legacy.py `[::-1, ::-1]`, convert_weight.py
                                               `flip=True`)
    conv.modulation.weight [I,L] / .bias [I] -> affine.weight / affine.bias      (same values;
                                               both store TF mod_bias + 1, bias gain 1)
    noise.weight [1]                        -> noise_strength []  (0-dim tensor)
    activate.bias [O]                       -> bias [O]
    noises.noise_{j} [1,1,R,R]              -> noise_const [R,R]: b4.conv1 <- noise_0,
                                               b{R}.conv0 <- noise_{2log2(R)-5},
                                               b{R}.conv1 <- noise_{2log2(R)-4}
    conv.blur.kernel [4,4] = outer(1,3,3,1)/64*4 (rosinality buffer, includes the up^2 gain)
                                            -> resample_filter [4,4] = outer(1,3,3,1)/64 (sum 1;
                                               NVIDIA applies the gain 4 at run time); NVIDIA
                                               has one per SynthesisLayer and per block, b4 too
  per ToRGB:
    conv.weight [1,3,C,1,1]                 -> weight [3,C,1,1]
    bias [1,3,1,1]                          -> bias [3]
    conv.modulation.*                       -> affine.*
    upsample.kernel [4,4] (to_rgbs only)    -> (block's resample_filter)
Gains: mapping fc: W*0.01/sqrt(in), b*0.01, lrelu(0.2)*sqrt(2) (both). Affine: W/sqrt(L), b*1.
  Conv weights: rosinality multiplies by 1/sqrt(I*k*k) before modulation; NVIDIA's demodulated
  SynthesisLayer does NOT (demodulation cancels it; only the 1e-8 epsilon sees the
  difference, ~1e-8 relative). ToRGB: NVIDIA scales the styles by weight_gain = 1/sqrt(C),
  rosinality scales the weight by 1/sqrt(C): the same product.
Noise: NVIDIA adds noise_const*noise_strength ([R,R], broadcast over the batch) right after
  the modulated conv (after demodulation), then bias_act: lrelu(x + b, 0.2)*sqrt(2).
  rosinality: x + noise.weight*noise, then FusedLeakyReLU(bias): the same.
conv_clamp (NVIDIA only, rosinality has none): SynthesisLayer clamps to +-conv_clamp*gain
  AFTER bias+lrelu+sqrt(2) (gain = 1 in the skip architecture); ToRGB clamps to +-conv_clamp
  after its bias (linear act). The skip image and the upsampling filter are never clamped.
  Official configs use 256 (never reached by images in [-1,1]; a small value such as 0.5
  visibly changes the image).
Upsampling conv (both): "true convolution" of the zero-stuffed input (conv_transpose2d with
  the weight transposed to [I,O,3,3], stride 2, no padding, no flip), then the 4x4 FIR with
  gain 4 and padding (1,1). NVIDIA expresses it as conv2d_resample(up=2, padding=1,
  flip_weight=False); the equivalent generic form is: zero-stuff, pad (3,2), FIR*4, then a
  valid 3x3 true convolution (conv2d with the weight flipped). Skip image: upfirdn2d up 2,
  pad (2,1), FIR*4 (both).
W+ indexing: NVIDIA block R takes ws[w_idx : w_idx+num_conv+num_torgb] then advances by
  num_conv only, so torgb of block R and conv0 of block 2R share a row - exactly rosinality's
  wiring (to_rgb1 <- w[1], convs[0] <- w[1], ...). num_ws = 2*log2(res) - 2.
Channels: rosinality {4..32: 512, 64: 256cm, 128: 128cm, 256: 64cm, 512: 32cm, 1024: 16cm}
  == NVIDIA min(channel_base // res, channel_max) with channel_base = 16384*cm, channel_max =
  512, for cm <= 2 (rosinality does not cap at 512 for cm > 2).
NVIDIA pkl: persistence._version is 6 (torch_utils/persistence.py `_version = 6`), and meta
  class_name is the bare class name ('Generator', 'SynthesisLayer', ...), not a dotted path:
  `_reconstruct_persistent_obj` looks it up as `module.__dict__[meta.class_name]` in the
  module exec'ed from module_src. StyleGAN2 and StyleGAN3 pkls therefore both say
  'Generator'; only the tensor names tell them apart. Snapshots are written from
  `copy.deepcopy(module).eval().requires_grad_(False)`: training False, parameters with
  requires_grad False. The state is the module __dict__ (torch.nn.Module internals
  `_parameters`, `_buffers`, `_non_persistent_buffers_set` (a set), hooks OrderedDicts,
  `_modules`, then the attributes set in __init__, then `_init_args`, `_init_kwargs`);
  weight_gain/act_gain attributes are numpy.float64 scalars (np.sqrt). Generator registers
  synthesis before mapping.
Tensor pickling (Debian torch 1.13): tensors reduce to torch._utils._rebuild_tensor_v2(
  storage, offset, size, stride, requires_grad, OrderedDict()), parameters to
  torch._utils._rebuild_parameter(tensor, requires_grad, OrderedDict()); storages to
  torch.storage._load_from_bytes(bytes) where bytes is a legacy torch.save stream whose
  storage key is str(storage._cdata), a memory address: NOT deterministic. This module writes
  the same bytes with deterministic address-like keys (checked against torch's own output
  in stylegan2_ref_test.py). torch.save's legacy format has the same key problem, so
  rosinality legacy files are written by `legacy_torch_save` (same format, deterministic
  keys, storages in sorted-key order as torch writes them). The zip format is deterministic
  for a fixed file name (records are prefixed with the file's base name).

Public functions:
    channels_for(resolution, channel_multiplier=2, channel_max=512, channel_base=None)
    channel_table(resolution, ...) -> OrderedDict {res: channels}
    num_ws(res), num_noises(res), noise_shapes(res)
    rosinality_shapes(resolution, latent, mapping_layers, ...) -> OrderedDict name -> shape
    make_random_rosinality_state_dict(resolution, latent=512, mapping_layers=8, ..., seed=0)
    mapping(sd, z, truncation=1.0, w_avg=None), mean_latent(sd, n, seed)
    synthesis(sd, wplus, noise='const'|'none'|list)
    to_nvidia(sd, latent_avg=None) -> OrderedDict (NVIDIA names, G_ema.state_dict() order)
    mapping_nvidia(nv, z, c=None, truncation_psi=1, truncation_cutoff=None, num_ws=None)
    synthesis_nvidia(nv, ws, noise_mode='const', conv_clamp=None, noise=None, ...)
    self_check_layouts(sd, wplus, latent_avg, atol=1e-5)
    legacy_torch_save(obj, path), storage_pickle_bytes(storage, key)
    write_rosinality(path, sd, latent_avg, zip=True, wrap=True, with_training_junk=False)
    write_nvidia_pkl(path, nv_tensors, init_kwargs, ...), nvidia_init_kwargs(...)
    stylegan3_nvidia_tensors(...), conditional_nvidia_tensors(...)
    write_os_system_pkl(path), write_tensorflow_pkl(path, ...)
"""

import argparse
import collections
import contextlib
import io
import math
import pickle
import struct
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F

LRELU_SLOPE = 0.2
ACT_GAIN = math.sqrt(2.0)  # bias_act 'lrelu' def_gain / FusedLeakyReLU scale
MAPPING_LRMUL = 0.01
PIXEL_NORM_EPS = 1e-8
DEMOD_EPS = 1e-8
FIR_TAPS = (1.0, 3.0, 3.0, 1.0)
PERSISTENCE_VERSION = 6  # torch_utils/persistence.py `_version`

# ---------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------


def _log2_int(value):
    r = int(round(math.log2(value)))
    if value < 4 or 2 ** r != value:
        raise ValueError("resolution must be a power of two >= 4, got %r" % (value,))
    return r


def channels_for(resolution, channel_multiplier=2, channel_max=512, channel_base=None):
    """Channels of the layers at `resolution`.

    min(channel_base // resolution, channel_max) with channel_base = 16384*cm by default:
    rosinality's table {4..32: 512, 64: 256cm, ..., 1024: 16cm} for cm <= 2, and NVIDIA's
    formula exactly. Small channel_base/channel_max give tiny test models (e.g.
    channel_base=128, channel_max=32: 4->32, 8->16, 16->8).
    """
    _log2_int(resolution)
    if channel_base is None:
        channel_base = 16384 * int(channel_multiplier)
    c = min(int(channel_base) // int(resolution), int(channel_max))
    if c < 1:
        raise ValueError("no channels left at %d px" % resolution)
    return c


def channel_table(resolution, channel_multiplier=2, channel_max=512, channel_base=None):
    out = collections.OrderedDict()
    for r in range(2, _log2_int(resolution) + 1):
        out[2 ** r] = channels_for(2 ** r, channel_multiplier, channel_max, channel_base)
    return out


def num_ws(resolution):
    """W+ rows: 2*log2(res) - 2 (18 at 1024)."""
    return 2 * _log2_int(resolution) - 2


def num_noises(resolution):
    """Noise maps: 2*log2(res) - 3 (17 at 1024)."""
    return 2 * _log2_int(resolution) - 3


def noise_shapes(resolution):
    """[(1, 1, R, R)] for noise_0..noise_{n-1}, R = 2^((i+5)//2)."""
    return [(1, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2)) for i in range(num_noises(resolution))]


def fir_kernel(gain=1.0):
    """outer([1,3,3,1])/64 * gain, [4,4] float32 (NVIDIA resample_filter: gain 1;
    rosinality blur/upsample kernels: gain 4)."""
    k = torch.tensor(FIR_TAPS, dtype=torch.float32)
    k = k[:, None] * k[None, :]
    return (k / k.sum() * gain).contiguous()


def rosinality_shapes(resolution, latent=512, mapping_layers=8, channel_multiplier=2,
                      channel_max=512, channel_base=None):
    """Key -> shape of a rosinality g_ema state dict, in g_ema.state_dict() order."""
    ch = channel_table(resolution, channel_multiplier, channel_max, channel_base)
    L = int(latent)
    s = collections.OrderedDict()
    for i in range(1, mapping_layers + 1):
        s["style.%d.weight" % i] = (L, L)
        s["style.%d.bias" % i] = (L,)
    c4 = ch[4]
    s["input.input"] = (1, c4, 4, 4)

    def styled(prefix, cin, cout, up):
        s[prefix + ".conv.weight"] = (1, cout, cin, 3, 3)
        if up:
            s[prefix + ".conv.blur.kernel"] = (4, 4)
        s[prefix + ".conv.modulation.weight"] = (cin, L)
        s[prefix + ".conv.modulation.bias"] = (cin,)
        s[prefix + ".noise.weight"] = (1,)
        s[prefix + ".activate.bias"] = (cout,)

    def torgb(prefix, cin, up):
        s[prefix + ".bias"] = (1, 3, 1, 1)
        if up:
            s[prefix + ".upsample.kernel"] = (4, 4)
        s[prefix + ".conv.weight"] = (1, 3, cin, 1, 1)
        s[prefix + ".conv.modulation.weight"] = (cin, L)
        s[prefix + ".conv.modulation.bias"] = (cin,)

    styled("conv1", c4, c4, False)
    torgb("to_rgb1", c4, False)
    res_list = [r for r in ch if r > 4]
    cin = c4
    for k, r in enumerate(res_list):
        styled("convs.%d" % (2 * k), cin, ch[r], True)
        styled("convs.%d" % (2 * k + 1), ch[r], ch[r], False)
        cin = ch[r]
    cin = c4
    for k, r in enumerate(res_list):
        torgb("to_rgbs.%d" % k, ch[r], True)
    for i, shp in enumerate(noise_shapes(resolution)):
        s["noises.noise_%d" % i] = shp
    return s


def make_random_rosinality_state_dict(resolution, latent=512, mapping_layers=8,
                                      channel_multiplier=2, channel_max=512,
                                      channel_base=None, seed=0):
    """Random rosinality g_ema state dict (exact key names, order and shapes).

    Values are drawn from torch.Generator(seed) in key order:
      style weights N(0,1)/0.01 (rosinality's init), style biases N(0,1)*10 (x0.01 at run
      time = 0.1); conv weights N(0,1); modulation weights N(0,1), modulation biases
      1 + N(0, 0.2^2); noise strengths +-U(0.05, 0.3) (never 0); activation biases
      N(0, 0.1^2); ToRGB weights N(0,1)*0.5/sqrt(#ToRGB) and biases N(0, 0.05^2) so that the
      image stays roughly in [-1, 1]; input.input and noises N(0,1); FIR kernels fixed.
    """
    shapes = rosinality_shapes(resolution, latent, mapping_layers, channel_multiplier,
                               channel_max, channel_base)
    n_rgb = _log2_int(resolution) - 1
    g = torch.Generator()
    g.manual_seed(int(seed))

    def randn(shape):
        return torch.randn(*shape, generator=g, dtype=torch.float32)

    sd = collections.OrderedDict()
    for key, shape in shapes.items():
        if key.endswith(".kernel"):
            t = fir_kernel(4.0)
        elif key.startswith("style.") and key.endswith(".weight"):
            t = randn(shape) / MAPPING_LRMUL
        elif key.startswith("style.") and key.endswith(".bias"):
            t = randn(shape) * 10.0
        elif key.endswith("noise.weight"):
            u = torch.rand(1, generator=g, dtype=torch.float32)
            sign = 1.0 if float(torch.rand(1, generator=g)) < 0.5 else -1.0
            t = (0.05 + 0.25 * u) * sign
        elif key.endswith("modulation.bias"):
            t = 1.0 + 0.2 * randn(shape)
        elif key.endswith("activate.bias"):
            t = 0.1 * randn(shape)
        elif ("to_rgb" in key) and key.endswith("conv.weight"):
            t = randn(shape) * (0.5 / math.sqrt(n_rgb))
        elif ("to_rgb" in key) and key.endswith(".bias"):
            t = 0.05 * randn(shape)
        else:  # input.input, conv weights, modulation weights, noises
            t = randn(shape)
        sd[key] = t.reshape(shape).contiguous()
    return sd


def infer_config(sd):
    """(resolution, latent, mapping_layers, channels OrderedDict) of a rosinality state dict."""
    n_map = 0
    while ("style.%d.weight" % (n_map + 1)) in sd:
        n_map += 1
    latent = int(sd["style.1.weight"].shape[1]) if n_map else int(
        sd["conv1.conv.modulation.weight"].shape[1])
    n_blocks = 0
    while ("to_rgbs.%d.conv.weight" % n_blocks) in sd:
        n_blocks += 1
    res = 4 * 2 ** n_blocks
    ch = collections.OrderedDict([(4, int(sd["input.input"].shape[1]))])
    for k in range(n_blocks):
        ch[8 * 2 ** k] = int(sd["convs.%d.conv.weight" % (2 * k)].shape[1])
    return res, latent, n_map, ch


# ---------------------------------------------------------------------------
# Primitives
# ---------------------------------------------------------------------------


def upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0), gain=1.0):
    """Zero-stuff by `up` (up-1 zeros after every sample), pad (pad0 before, pad1 after;
    negative crops), true 2-D convolution with `kernel` (flipped correlation), keep every
    `down`-th sample. Same padding on both axes."""
    N, C, H, W = x.shape
    if up > 1:
        x = x.reshape(N, C, H, 1, W, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(N, C, H * up, W * up)
    p0, p1 = int(pad[0]), int(pad[1])
    conv_pad = 0
    if p0 == p1 and p0 > 0:
        conv_pad = p0  # same result, one copy fewer
    else:
        x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
        if p0 < 0 or p1 < 0:
            h, w = x.shape[2], x.shape[3]
            x = x[:, :, max(-p0, 0):h - max(-p1, 0), max(-p0, 0):w - max(-p1, 0)]
    k = (kernel.to(torch.float32) * gain).flip([0, 1])
    k = k.reshape(1, 1, k.shape[0], k.shape[1]).expand(C, 1, k.shape[0], k.shape[1])
    x = F.conv2d(x, k.contiguous(), padding=conv_pad, groups=C)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def _lrelu_gain(x):
    return F.leaky_relu(x, LRELU_SLOPE) * ACT_GAIN


# ---------------------------------------------------------------------------
# rosinality layout: forward pass from the math (non-fused modulation)
# ---------------------------------------------------------------------------


def mapping(sd, z, truncation=1.0, w_avg=None):
    """z [N, L] -> w [N, L]: PixelNorm, then equalised linears (lr 0.01) + lrelu*sqrt(2).
    truncation != 1 needs w_avg: w_avg + truncation*(w - w_avg)."""
    x = z.to(torch.float32)
    x = x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + PIXEL_NORM_EPS)
    i = 1
    while ("style.%d.weight" % i) in sd:
        W = sd["style.%d.weight" % i]
        b = sd["style.%d.bias" % i]
        x = _lrelu_gain(F.linear(x, W * (MAPPING_LRMUL / math.sqrt(W.shape[1])),
                                 b * MAPPING_LRMUL))
        i += 1
    if truncation != 1.0:
        if w_avg is None:
            raise ValueError("truncation needs w_avg")
        avg = w_avg.to(torch.float32).reshape(1, -1)
        x = avg + truncation * (x - avg)
    return x


def mean_latent(sd, n=2048, seed=0):
    """Mean of mapping(z) over n seeded z ~ N(0, I) (what rosinality's mean_latent does)."""
    _, latent, _, _ = infer_config(sd)
    g = torch.Generator()
    g.manual_seed(int(seed))
    z = torch.randn(n, latent, generator=g, dtype=torch.float32)
    return mapping(sd, z).mean(0)


def _styles(sd, prefix, w_row):
    Wm = sd[prefix + ".modulation.weight"]
    bm = sd[prefix + ".modulation.bias"]
    return F.linear(w_row, Wm * (1.0 / math.sqrt(Wm.shape[1])), bm)


def _modconv_rosinality(sd, prefix, x, w_row, demodulate, up):
    W5 = sd[prefix + ".weight"]
    W = W5[0] * (1.0 / math.sqrt(W5.shape[2] * W5.shape[3] * W5.shape[4]))  # [O,I,k,k]
    s = _styles(sd, prefix, w_row)  # [B, I]
    x = x * s[:, :, None, None]
    if up:
        x = F.conv_transpose2d(x, W.transpose(0, 1).contiguous(), stride=2, padding=0)
        x = upfirdn2d(x, sd[prefix + ".blur.kernel"], pad=(1, 1))
    else:
        x = F.conv2d(x, W, padding=W.shape[-1] // 2)
    if demodulate:
        wsq = (W * W).sum(dim=(2, 3))  # [O, I]
        d = torch.rsqrt(F.linear(s * s, wsq) + DEMOD_EPS)  # [B, O]
        x = x * d[:, :, None, None]
    return x


def _styled_conv(sd, prefix, x, w_row, noise, up):
    x = _modconv_rosinality(sd, prefix + ".conv", x, w_row, True, up)
    if noise is not None:
        x = x + sd[prefix + ".noise.weight"].reshape(1, 1, 1, 1) * noise.to(torch.float32)
    return _lrelu_gain(x + sd[prefix + ".activate.bias"].reshape(1, -1, 1, 1))


def _to_rgb(sd, prefix, x, w_row, skip):
    y = _modconv_rosinality(sd, prefix + ".conv", x, w_row, False, False)
    y = y + sd[prefix + ".bias"].reshape(1, 3, 1, 1)
    if skip is not None:
        y = y + upfirdn2d(skip, sd[prefix + ".upsample.kernel"], up=2, pad=(2, 1))
    return y


def _noise_list(noise, shapes, batch, const_fn):
    n = len(shapes)
    if isinstance(noise, str):
        if noise == "const":
            return [const_fn(i) for i in range(n)]
        if noise == "none":
            return [None] * n
        raise ValueError("noise must be 'const', 'none' or a list, got %r" % (noise,))
    if noise is None:
        return [None] * n
    noise = list(noise)
    if len(noise) != n:
        raise ValueError("need %d noise maps, got %d" % (n, len(noise)))
    for i, (t, shp) in enumerate(zip(noise, shapes)):
        if t is None:
            continue
        if t.dim() != 4 or t.shape[1] != 1 or tuple(t.shape[2:]) != tuple(shp[2:]) or \
                t.shape[0] not in (1, batch):
            raise ValueError("noise_%d: expected [1 or %d, 1, %d, %d], got %s"
                             % (i, batch, shp[2], shp[3], tuple(t.shape)))
    return noise


def synthesis(sd, wplus, noise="const"):
    """wplus [B, num_ws, L] -> image [B, 3, R, R] (rosinality layout, roughly [-1, 1]).

    noise: 'const' (the file's noises.noise_i, rosinality randomize_noise=False), 'none',
    or a list of num_noises tensors [1 or B, 1, R_i, R_i] (None entries = no noise).
    """
    res, latent, _, ch = infer_config(sd)
    wplus = wplus.to(torch.float32)
    if wplus.dim() != 3 or wplus.shape[1] != num_ws(res) or wplus.shape[2] != latent:
        raise ValueError("wplus must be [B, %d, %d], got %s"
                         % (num_ws(res), latent, tuple(wplus.shape)))
    B = wplus.shape[0]
    nz = _noise_list(noise, noise_shapes(res), B, lambda i: sd["noises.noise_%d" % i])
    x = sd["input.input"].expand(B, -1, -1, -1)
    x = _styled_conv(sd, "conv1", x, wplus[:, 0], nz[0], False)
    skip = _to_rgb(sd, "to_rgb1", x, wplus[:, 1], None)
    for k in range(len(ch) - 1):
        x = _styled_conv(sd, "convs.%d" % (2 * k), x, wplus[:, 2 * k + 1], nz[2 * k + 1], True)
        x = _styled_conv(sd, "convs.%d" % (2 * k + 1), x, wplus[:, 2 * k + 2], nz[2 * k + 2],
                         False)
        skip = _to_rgb(sd, "to_rgbs.%d" % k, x, wplus[:, 2 * k + 3], skip)
    return skip


# ---------------------------------------------------------------------------
# NVIDIA layout
# ---------------------------------------------------------------------------


def to_nvidia(sd, latent_avg=None):
    """The same weights under NVIDIA stylegan2-ada-pytorch names and shapes, in the order
    of G_ema.state_dict() (synthesis first: Generator registers it before mapping).
    latent_avg None -> mapping.w_avg = mean_latent(sd)."""
    res, latent, n_map, ch = infer_config(sd)
    if latent_avg is None:
        latent_avg = mean_latent(sd)
    K = fir_kernel(1.0)
    nv = collections.OrderedDict()

    def layer(dst, src, noise_idx):
        nv[dst + ".weight"] = sd[src + ".conv.weight"][0].clone()
        nv[dst + ".noise_strength"] = sd[src + ".noise.weight"].reshape(()).clone()
        nv[dst + ".bias"] = sd[src + ".activate.bias"].clone()
        nv[dst + ".resample_filter"] = K.clone()
        nv[dst + ".noise_const"] = sd["noises.noise_%d" % noise_idx][0, 0].clone()
        nv[dst + ".affine.weight"] = sd[src + ".conv.modulation.weight"].clone()
        nv[dst + ".affine.bias"] = sd[src + ".conv.modulation.bias"].clone()

    def torgb(dst, src):
        nv[dst + ".weight"] = sd[src + ".conv.weight"][0].clone()
        nv[dst + ".bias"] = sd[src + ".bias"].reshape(3).clone()
        nv[dst + ".affine.weight"] = sd[src + ".conv.modulation.weight"].clone()
        nv[dst + ".affine.bias"] = sd[src + ".conv.modulation.bias"].clone()

    nv["synthesis.b4.const"] = sd["input.input"][0].clone()
    nv["synthesis.b4.resample_filter"] = K.clone()
    layer("synthesis.b4.conv1", "conv1", 0)
    torgb("synthesis.b4.torgb", "to_rgb1")
    for k, r in enumerate([r for r in ch if r > 4]):
        p = "synthesis.b%d" % r
        nv[p + ".resample_filter"] = K.clone()
        layer(p + ".conv0", "convs.%d" % (2 * k), 2 * _log2_int(r) - 5)
        layer(p + ".conv1", "convs.%d" % (2 * k + 1), 2 * _log2_int(r) - 4)
        torgb(p + ".torgb", "to_rgbs.%d" % k)
    nv["mapping.w_avg"] = latent_avg.to(torch.float32).reshape(latent).clone()  # own buffer
    for i in range(n_map):                                                    # before children
        nv["mapping.fc%d.weight" % i] = sd["style.%d.weight" % (i + 1)].clone()
        nv["mapping.fc%d.bias" % i] = sd["style.%d.bias" % (i + 1)].clone()
    for v in nv.values():
        assert v.dtype == torch.float32
    return nv


def _nv_config(nv):
    blocks = sorted(int(k.split(".")[1][1:]) for k in nv
                    if k.startswith("synthesis.b") and k.endswith(".torgb.weight"))
    n_map = 0
    while ("mapping.fc%d.weight" % n_map) in nv:
        n_map += 1
    return blocks, n_map


def _fc_nvidia(nv, prefix, x, lr_multiplier=1.0, act="linear"):
    W = nv[prefix + ".weight"]
    b = nv[prefix + ".bias"]
    x = x.matmul((W * (lr_multiplier / math.sqrt(W.shape[1]))).t()) + b * lr_multiplier
    return _lrelu_gain(x) if act == "lrelu" else x


def mapping_nvidia(nv, z, c=None, truncation_psi=1.0, truncation_cutoff=None, num_ws=None):
    """NVIDIA MappingNetwork semantics: normalize_2nd_moment(z) (and of embed(c) when the
    network is conditional), fc layers, optional broadcast to num_ws rows, truncation
    w_avg.lerp(w, psi) on the first truncation_cutoff rows (all rows when None)."""
    _, n_map = _nv_config(nv)

    def norm(t):
        return t * (t.square().mean(dim=1, keepdim=True) + PIXEL_NORM_EPS).rsqrt()

    x = norm(z.to(torch.float32))
    if "mapping.embed.weight" in nv:
        if c is None:
            raise ValueError("conditional network: c is required")
        x = torch.cat([x, norm(_fc_nvidia(nv, "mapping.embed", c.to(torch.float32)))], dim=1)
    for i in range(n_map):
        x = _fc_nvidia(nv, "mapping.fc%d" % i, x, MAPPING_LRMUL, "lrelu")
    if num_ws is not None:
        x = x.unsqueeze(1).repeat(1, num_ws, 1)
    if truncation_psi != 1.0:
        avg = nv["mapping.w_avg"]
        if num_ws is None or truncation_cutoff is None:
            x = avg.lerp(x, truncation_psi)
        else:
            x = x.clone()
            x[:, :truncation_cutoff] = avg.lerp(x[:, :truncation_cutoff], truncation_psi)
    return x


def conv2d_resample_nvidia(x, w, f, up=1, padding=0, groups=1, flip_weight=True,
                           method="transpose"):
    """NVIDIA conv2d_resample for the cases the generator uses (down = 1).

    flip_weight=True: correlation (F.conv2d); False: true convolution. up=2 'generic': the
    definition (zero-stuff, pad (p+(fw+up-1)//2, p+(fw-up)//2), FIR*up^2, then a valid
    conv); 'transpose': the fast equivalent for a 3x3 true convolution with padding 1 and a
    4-tap filter (conv_transpose2d of the [I,O] weight, stride 2, then FIR*4 pad (1,1)).
    """
    O, Ig, kh, kw = w.shape
    if up == 1:
        ww = w if (flip_weight or (kh == 1 and kw == 1)) else w.flip([2, 3])
        return F.conv2d(x, ww, padding=padding, groups=groups)
    fw = f.shape[-1]
    if method == "generic":
        p0 = padding + (fw + up - 1) // 2
        p1 = padding + (fw - up) // 2
        x = upfirdn2d(x, f, up=up, pad=(p0, p1), gain=up * up)
        ww = w.flip([2, 3]) if not flip_weight else w
        return F.conv2d(x, ww, groups=groups)
    if not (up == 2 and kh == 3 and kw == 3 and padding == 1 and fw == 4 and not flip_weight):
        raise NotImplementedError("transpose path only for the generator's conv0")
    wt = w.reshape(groups, O // groups, Ig, kh, kw).transpose(1, 2)
    wt = wt.reshape(groups * Ig, O // groups, kh, kw)
    x = F.conv_transpose2d(x, wt.contiguous(), stride=2, padding=0, groups=groups)
    return upfirdn2d(x, f, pad=(1, 1), gain=4.0)


def _nv_modulated_conv(x, weight, styles, demodulate, up, padding, f, method):
    """Fused modulated conv: per-sample weights, one grouped convolution."""
    B, I, H, W_ = x.shape
    O, _, kh, kw = weight.shape
    w = weight.unsqueeze(0) * styles.reshape(B, 1, I, 1, 1)
    if demodulate:
        w = w * (w.square().sum(dim=(2, 3, 4)) + DEMOD_EPS).rsqrt().reshape(B, O, 1, 1, 1)
    y = conv2d_resample_nvidia(x.reshape(1, B * I, H, W_), w.reshape(B * O, I, kh, kw), f,
                               up=up, padding=padding, groups=B, flip_weight=(up == 1),
                               method=method)
    return y.reshape(B, O, y.shape[2], y.shape[3])


def _nv_synthesis_layer(nv, p, x, w_row, up, noise_mode, noise_map, conv_clamp, method):
    styles = _fc_nvidia(nv, p + ".affine", w_row)
    weight = nv[p + ".weight"]
    x = _nv_modulated_conv(x, weight, styles, True, up, weight.shape[-1] // 2,
                           nv[p + ".resample_filter"], method)
    strength = nv[p + ".noise_strength"]
    if noise_mode == "const":
        x = x + nv[p + ".noise_const"].reshape(1, 1, x.shape[2], x.shape[3]) * strength
    elif noise_mode == "maps" and noise_map is not None:
        x = x + noise_map.to(torch.float32) * strength
    elif noise_mode not in ("none", "maps"):
        raise ValueError("noise_mode %r" % (noise_mode,))
    x = _lrelu_gain(x + nv[p + ".bias"].reshape(1, -1, 1, 1))
    if conv_clamp is not None:
        x = x.clamp(-float(conv_clamp), float(conv_clamp))  # gain 1 in 'skip'
    return x


def _nv_torgb(nv, p, x, w_row, conv_clamp):
    weight = nv[p + ".weight"]
    styles = _fc_nvidia(nv, p + ".affine", w_row) * (
        1.0 / math.sqrt(weight.shape[1] * weight.shape[2] * weight.shape[3]))
    y = _nv_modulated_conv(x, weight, styles, False, 1, 0, None, "transpose")
    y = y + nv[p + ".bias"].reshape(1, -1, 1, 1)
    if conv_clamp is not None:
        y = y.clamp(-float(conv_clamp), float(conv_clamp))
    return y


def synthesis_nvidia(nv, ws, noise_mode="const", conv_clamp=None, noise=None,
                     method="transpose"):
    """NVIDIA SynthesisNetwork semantics (architecture 'skip', float32 everywhere, fused
    modulated convolutions). noise_mode 'const' | 'none', or pass `noise` (a list like
    synthesis()'s, multiplied by noise_strength as NVIDIA does with its random maps).
    conv_clamp: None, or clamp +-conv_clamp after each layer's activation and ToRGB."""
    blocks, _ = _nv_config(nv)
    ws = ws.to(torch.float32)
    res = blocks[-1]
    if ws.dim() != 3 or ws.shape[1] != num_ws(res):
        raise ValueError("ws must be [B, %d, w_dim], got %s" % (num_ws(res), tuple(ws.shape)))
    B = ws.shape[0]
    maps = None
    if noise is not None:
        maps = _noise_list(noise, noise_shapes(res), B, None)
        noise_mode = "maps"
    x = img = None
    w_idx = 0
    for r in blocks:
        p = "synthesis.b%d" % r
        if r == 4:
            x = nv[p + ".const"].unsqueeze(0).repeat(B, 1, 1, 1)
            x = _nv_synthesis_layer(nv, p + ".conv1", x, ws[:, w_idx], 1, noise_mode,
                                    maps[0] if maps else None, conv_clamp, method)
            n_conv = 1
        else:
            j = 2 * _log2_int(r) - 5
            x = _nv_synthesis_layer(nv, p + ".conv0", x, ws[:, w_idx], 2, noise_mode,
                                    maps[j] if maps else None, conv_clamp, method)
            x = _nv_synthesis_layer(nv, p + ".conv1", x, ws[:, w_idx + 1], 1, noise_mode,
                                    maps[j + 1] if maps else None, conv_clamp, method)
            n_conv = 2
        if img is not None:
            img = upfirdn2d(img, nv[p + ".resample_filter"], up=2, pad=(2, 1), gain=4.0)
        y = _nv_torgb(nv, p + ".torgb", x, ws[:, w_idx + n_conv], conv_clamp)
        img = y if img is None else img + y
        w_idx += n_conv
    return img


def self_check_layouts(sd, wplus, latent_avg=None, atol=1e-5, z=None):
    """Assert rosinality-layout and NVIDIA-layout forwards agree (conv_clamp None) for the
    const / none noise modes and for explicit maps, and the mappings agree. Returns the
    largest difference seen."""
    nv = to_nvidia(sd, latent_avg)
    worst = 0.0
    res, latent, _, _ = infer_config(sd)
    g = torch.Generator()
    g.manual_seed(12345)
    maps = [torch.randn(*s, generator=g) for s in noise_shapes(res)]
    for mode, kw_r, kw_n in (("const", dict(noise="const"), dict(noise_mode="const")),
                             ("none", dict(noise="none"), dict(noise_mode="none")),
                             ("maps", dict(noise=maps), dict(noise=maps))):
        a = synthesis(sd, wplus, **kw_r)
        b = synthesis_nvidia(nv, wplus, **kw_n)
        d = float((a - b).abs().max())
        worst = max(worst, d)
        if not d <= atol:
            raise AssertionError("layouts disagree (%s noise): max abs diff %g" % (mode, d))
    if z is None:
        z = torch.randn(3, latent, generator=g)
    d = float((mapping(sd, z) - mapping_nvidia(nv, z)).abs().max())
    worst = max(worst, d)
    if not d <= atol:
        raise AssertionError("mappings disagree: %g" % d)
    return worst


# ---------------------------------------------------------------------------
# Serialisation: torch legacy streams with deterministic storage keys
# ---------------------------------------------------------------------------

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL_VERSION = 1001
_LEGACY_SYS_INFO = {
    "protocol_version": _LEGACY_PROTOCOL_VERSION,
    "little_endian": True,
    "type_sizes": {"short": 2, "int": 4, "long": 4},
}
_STORAGE_TYPES = {
    torch.float32: "FloatStorage", torch.float64: "DoubleStorage", torch.float16: "HalfStorage",
    torch.int64: "LongStorage", torch.int32: "IntStorage", torch.uint8: "ByteStorage",
    torch.bool: "BoolStorage",
}


def fake_storage_key(n):
    """Deterministic decimal 'address' for the n-th storage (torch writes str(_cdata), a
    pointer). Spread so that sorted-key order differs from first-use order, as in real
    files."""
    return str(94371840000000 + ((n * 7919) % 100003) * 64)


def _typed_storage_info(storage):
    dtype = storage.dtype
    numel = storage.size()
    raw = storage._storage if hasattr(storage, "_storage") else storage
    return dtype, numel, raw


def _storage_raw_bytes(storage):
    dtype, numel, _ = _typed_storage_info(storage)
    t = torch.empty(0, dtype=dtype)
    t.set_(storage)
    arr = t.numpy()
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def _write_legacy_header(buf):
    pickle.dump(_LEGACY_MAGIC, buf, protocol=2)
    pickle.dump(_LEGACY_PROTOCOL_VERSION, buf, protocol=2)
    pickle.dump(_LEGACY_SYS_INFO, buf, protocol=2)


class _LegacyPickler(pickle.Pickler):
    """torch.serialization._legacy_save's object pickle, with deterministic storage keys."""

    def __init__(self, f, keyer):
        super().__init__(f, protocol=2)
        self._keyer = keyer

    def persistent_id(self, obj):
        if isinstance(obj, torch.storage.TypedStorage):
            key = self._keyer(obj)
            dtype, numel, _ = _typed_storage_info(obj)
            return ("storage", getattr(torch, _STORAGE_TYPES[dtype]), key, "cpu", numel, None)
        return None


def storage_pickle_bytes(storage, key):
    """What storage.__reduce__ puts in torch.storage._load_from_bytes(...): a complete
    legacy torch.save stream of one storage, with the given key."""
    buf = io.BytesIO()
    _write_legacy_header(buf)
    _LegacyPickler(buf, lambda s: key).dump(storage)
    pickle.dump([key], buf, protocol=2)
    dtype, numel, _ = _typed_storage_info(storage)
    buf.write(struct.pack("<q", numel))
    buf.write(_storage_raw_bytes(storage))
    return buf.getvalue()


def legacy_torch_save(obj, path):
    """torch.save(obj, path, _use_new_zipfile_serialization=False), byte for byte, except
    that storage keys are deterministic (fake_storage_key) instead of memory addresses."""
    keys = collections.OrderedDict()  # raw storage id -> (key, typed storage)

    def keyer(storage):
        _, _, raw = _typed_storage_info(storage)
        ident = (raw.data_ptr(), raw.nbytes()) if raw.data_ptr() else ("obj", raw._cdata)
        if ident not in keys:
            keys[ident] = (fake_storage_key(len(keys)), storage)
        return keys[ident][0]

    buf = io.BytesIO()
    _write_legacy_header(buf)
    _LegacyPickler(buf, keyer).dump(obj)
    by_key = {k: s for k, s in keys.values()}
    sorted_keys = sorted(by_key)
    pickle.dump(sorted_keys, buf, protocol=2)
    for k in sorted_keys:
        s = by_key[k]
        buf.write(struct.pack("<q", s.size()))
        buf.write(_storage_raw_bytes(s))
    with open(path, "wb") as f:
        f.write(buf.getvalue())


class _DeterministicPickler(pickle.Pickler):
    """pickle.Pickler whose torch storages reduce exactly as torch 1.13 reduces them
    (torch.storage._load_from_bytes of a legacy stream), with deterministic keys."""

    def __init__(self, f, protocol):
        super().__init__(f, protocol=protocol)
        self._n_storages = 0

    def reducer_override(self, obj):
        if isinstance(obj, torch.storage.TypedStorage):
            key = fake_storage_key(self._n_storages)
            self._n_storages += 1
            return (torch.storage._load_from_bytes, (storage_pickle_bytes(obj, key),))
        return NotImplemented


def deterministic_pickle_dumps(obj, protocol):
    buf = io.BytesIO()
    _DeterministicPickler(buf, protocol).dump(obj)
    return buf.getvalue()


# ---------------------------------------------------------------------------
# Fake modules so pickle records globals by name (the reader never imports them)
# ---------------------------------------------------------------------------

_FAKE_MODULES = {}


def _fake_module(name):
    if name not in _FAKE_MODULES:
        m = types.ModuleType(name)
        m.__dict__["__i2s_oracle_fake__"] = True
        _FAKE_MODULES[name] = m
    return _FAKE_MODULES[name]


@contextlib.contextmanager
def _fake_modules_installed():
    """Temporarily put the fake modules in sys.modules (never replacing real ones)."""
    added = []
    try:
        for name, mod in _FAKE_MODULES.items():
            if name not in sys.modules:
                sys.modules[name] = mod
                added.append(name)
            elif sys.modules[name] is not mod:
                raise RuntimeError("a real module %r is loaded; cannot fake it" % name)
        yield
    finally:
        for name in added:
            del sys.modules[name]


def _define(module, obj, name):
    obj.__module__ = module
    obj.__qualname__ = name
    obj.__name__ = name
    setattr(_fake_module(module), name, obj)
    parts = module.split(".")
    for i in range(1, len(parts)):  # parent packages (attribute chain)
        setattr(_fake_module(".".join(parts[:i])), parts[i], _fake_module(".".join(parts[:i + 1])))
    return obj


def _reconstruct_persistent_obj(meta):  # stand-in, only ever referenced by name
    raise RuntimeError("i2s oracle: persistent objects are data, not code")


_reconstruct_persistent_obj = _define("torch_utils.persistence", _reconstruct_persistent_obj,
                                      "_reconstruct_persistent_obj")


class EasyDict(dict):
    """dnnlib.util.EasyDict stand-in: a dict subclass (pickles as NEWOBJ + SETITEMS)."""


EasyDict = _define("dnnlib.util", EasyDict, "EasyDict")


class OpaqueDiscriminator(object):
    """An object of a class no reader knows (NEWOBJ + BUILD)."""

    def __init__(self, state):
        self.__dict__.update(state)


OpaqueDiscriminator = _define("training.networks_opaque", OpaqueDiscriminator,
                              "DiscriminatorSnapshot")


class TFNetwork(object):
    """dnnlib.tflib.network.Network stand-in: NEWOBJ + BUILD(state dict)."""

    def __init__(self, state):
        self._state = state

    def __getstate__(self):
        return self._state

    def __setstate__(self, state):
        self._state = state


TFNetwork = _define("dnnlib.tflib.network", TFNetwork, "Network")

NVIDIA_MODULE_SRC_SG2 = (
    "raise RuntimeError('i2s oracle fixture: module_src of a persistent object was "
    "executed; a reader must never run it')\n"
    "# Stand-in for StyleGAN2-ADA training/networks.py (classes Generator, MappingNetwork,\n"
    "# SynthesisNetwork, SynthesisBlock, SynthesisLayer, ToRGBLayer, FullyConnectedLayer).\n")
NVIDIA_MODULE_SRC_SG3 = (
    "raise RuntimeError('i2s oracle fixture: module_src of a persistent object was "
    "executed; a reader must never run it')\n"
    "# Stand-in for StyleGAN3 training/networks_stylegan3.py (classes Generator,\n"
    "# MappingNetwork, SynthesisNetwork, SynthesisInput, SynthesisLayer, "
    "FullyConnectedLayer).\n")


class _Persistent(object):
    """A torch_utils.persistence object: pickles as REDUCE(_reconstruct_persistent_obj,
    (meta,)) with meta = {type, version, module_src, class_name, state}."""

    def __init__(self, class_name, module_src, training=False):
        self.class_name = class_name
        self.module_src = module_src
        self.training = training
        self.params = collections.OrderedDict()
        self.buffers = collections.OrderedDict()
        self.modules = collections.OrderedDict()
        self.attrs = collections.OrderedDict()
        self.init_args = ()
        self.init_kwargs = {}

    def state(self):
        st = collections.OrderedDict()
        st["training"] = self.training
        st["_parameters"] = self.params
        st["_buffers"] = self.buffers
        st["_non_persistent_buffers_set"] = set()
        st["_backward_hooks"] = collections.OrderedDict()
        st["_is_full_backward_hook"] = None
        st["_forward_hooks"] = collections.OrderedDict()
        st["_forward_pre_hooks"] = collections.OrderedDict()
        st["_state_dict_hooks"] = collections.OrderedDict()
        st["_load_state_dict_pre_hooks"] = collections.OrderedDict()
        st["_modules"] = self.modules
        for k, v in self.attrs.items():
            st[k] = v
        st["_init_args"] = self.init_args
        st["_init_kwargs"] = self.init_kwargs
        return dict(st.items())

    def __reduce_ex__(self, protocol):
        meta = dict(type="class", version=PERSISTENCE_VERSION, module_src=self.module_src,
                    class_name=self.class_name, state=self.state())
        return (_reconstruct_persistent_obj, (meta,))


def _param(t):
    return torch.nn.Parameter(t.detach().clone().contiguous(), requires_grad=False)


def _buf(t):
    return t.detach().clone().contiguous()


def nvidia_init_kwargs(resolution, latent=512, mapping_layers=8, channel_base=32768,
                       channel_max=512, num_fp16_res=0, conv_clamp=None, c_dim=0,
                       architecture="skip"):
    """The Generator's _init_kwargs as stylegan2-ada-pytorch train.py builds them
    (mapping_kwargs / synthesis_kwargs are dnnlib EasyDicts)."""
    return collections.OrderedDict([
        ("z_dim", int(latent)),
        ("w_dim", int(latent)),
        ("mapping_kwargs", EasyDict(num_layers=int(mapping_layers))),
        ("synthesis_kwargs", EasyDict(channel_base=int(channel_base),
                                      channel_max=int(channel_max),
                                      num_fp16_res=int(num_fp16_res), conv_clamp=conv_clamp,
                                      architecture=architecture)),
        ("c_dim", int(c_dim)),
        ("img_resolution", int(resolution)),
        ("img_channels", 3),
    ])


def _fc_node(nv, prefix, src, lr_multiplier=1, activation="linear", bias_init=0):
    W = nv[prefix + ".weight"]
    n = _Persistent("FullyConnectedLayer", src)
    n.params["weight"] = _param(W)
    n.params["bias"] = _param(nv[prefix + ".bias"])
    n.attrs["activation"] = activation
    n.attrs["weight_gain"] = np.float64(lr_multiplier) / np.sqrt(np.float64(W.shape[1]))
    n.attrs["bias_gain"] = lr_multiplier
    n.init_args = (int(W.shape[1]), int(W.shape[0]))
    kw = {}
    if activation != "linear":
        kw["activation"] = activation
    if lr_multiplier != 1:
        kw["lr_multiplier"] = lr_multiplier
    if bias_init != 0:
        kw["bias_init"] = bias_init
    n.init_kwargs = kw
    return n


def _sg2_tree(nv, init_kwargs, src=NVIDIA_MODULE_SRC_SG2):
    """The persistent-object tree of an NVIDIA StyleGAN2 Generator holding the tensors nv."""
    ik = init_kwargs
    sk = ik["synthesis_kwargs"]
    res = int(ik["img_resolution"])
    w_dim = int(ik["w_dim"])
    conv_clamp = sk.get("conv_clamp")
    log2 = _log2_int(res)
    fp16_res = max(2 ** (log2 + 1 - int(sk.get("num_fp16_res", 0))), 8)
    arch = sk.get("architecture", "skip")

    def syn_layer(p, cin, cout, r, up):
        n = _Persistent("SynthesisLayer", src)
        n.attrs["resolution"] = r
        n.attrs["up"] = up
        n.attrs["use_noise"] = True
        n.attrs["activation"] = "lrelu"
        n.attrs["conv_clamp"] = conv_clamp
        n.buffers["resample_filter"] = _buf(nv[p + ".resample_filter"])
        n.attrs["padding"] = 1
        n.attrs["act_gain"] = np.sqrt(np.float64(2))
        n.modules["affine"] = _fc_node(nv, p + ".affine", src, bias_init=1)
        n.params["weight"] = _param(nv[p + ".weight"])
        n.buffers["noise_const"] = _buf(nv[p + ".noise_const"])
        n.params["noise_strength"] = _param(nv[p + ".noise_strength"])
        n.params["bias"] = _param(nv[p + ".bias"])
        n.init_args = (cin, cout)
        kw = collections.OrderedDict([("w_dim", w_dim), ("resolution", r)])
        if up != 1:
            kw["up"] = up
            kw["resample_filter"] = [1, 3, 3, 1]
        kw["conv_clamp"] = conv_clamp
        kw["channels_last"] = False
        n.init_kwargs = dict(kw.items())
        return n

    syn = _Persistent("SynthesisNetwork", src)
    syn.attrs["w_dim"] = w_dim
    syn.attrs["img_resolution"] = res
    syn.attrs["img_resolution_log2"] = log2
    syn.attrs["img_channels"] = 3
    syn.attrs["block_resolutions"] = [2 ** i for i in range(2, log2 + 1)]
    total_ws = 0
    cin = 0
    for r in syn.attrs["block_resolutions"]:
        p = "synthesis.b%d" % r
        cout = int(nv[p + ".conv1.weight"].shape[0])
        b = _Persistent("SynthesisBlock", src)
        b.attrs["in_channels"] = cin
        b.attrs["w_dim"] = w_dim
        b.attrs["resolution"] = r
        b.attrs["img_channels"] = 3
        b.attrs["is_last"] = r == res
        b.attrs["architecture"] = arch
        b.attrs["use_fp16"] = r >= fp16_res
        b.attrs["channels_last"] = False
        b.buffers["resample_filter"] = _buf(nv[p + ".resample_filter"])
        n_conv = 0
        if r == 4:
            b.params["const"] = _param(nv[p + ".const"])
        else:
            b.modules["conv0"] = syn_layer(p + ".conv0", cin, cout, r, 2)
            n_conv += 1
        b.modules["conv1"] = syn_layer(p + ".conv1", cout, cout, r, 1)
        n_conv += 1
        t = _Persistent("ToRGBLayer", src)
        t.attrs["conv_clamp"] = conv_clamp
        t.modules["affine"] = _fc_node(nv, p + ".torgb.affine", src, bias_init=1)
        t.params["weight"] = _param(nv[p + ".torgb.weight"])
        t.params["bias"] = _param(nv[p + ".torgb.bias"])
        t.attrs["weight_gain"] = 1 / np.sqrt(np.float64(cout))
        t.init_args = (cout, 3)
        t.init_kwargs = dict(w_dim=w_dim, conv_clamp=conv_clamp, channels_last=False)
        b.modules["torgb"] = t
        b.attrs["num_conv"] = n_conv
        b.attrs["num_torgb"] = 1
        b.init_args = (cin, cout)
        b.init_kwargs = dict(w_dim=w_dim, resolution=r, img_channels=3, is_last=(r == res),
                             use_fp16=(r >= fp16_res), architecture=arch,
                             conv_clamp=conv_clamp)
        syn.modules["b%d" % r] = b
        total_ws += n_conv + (1 if r == res else 0)
        cin = cout
    syn.attrs["num_ws"] = total_ws
    syn.init_kwargs = dict(w_dim=w_dim, img_resolution=res, img_channels=3, **dict(sk.items()))

    mp = _Persistent("MappingNetwork", src)
    c_dim = int(ik.get("c_dim", 0))
    n_map = int(ik["mapping_kwargs"]["num_layers"])
    mp.attrs["z_dim"] = int(ik["z_dim"])
    mp.attrs["c_dim"] = c_dim
    mp.attrs["w_dim"] = w_dim
    mp.attrs["num_ws"] = total_ws
    mp.attrs["num_layers"] = n_map
    mp.attrs["w_avg_beta"] = 0.995
    if c_dim > 0:
        mp.modules["embed"] = _fc_node(nv, "mapping.embed", src)
    for i in range(n_map):
        mp.modules["fc%d" % i] = _fc_node(nv, "mapping.fc%d" % i, src,
                                          lr_multiplier=MAPPING_LRMUL, activation="lrelu")
    mp.buffers["w_avg"] = _buf(nv["mapping.w_avg"])
    mp.init_kwargs = dict(z_dim=int(ik["z_dim"]), c_dim=c_dim, w_dim=w_dim, num_ws=total_ws,
                          **dict(ik["mapping_kwargs"].items()))

    g = _Persistent("Generator", src)
    g.attrs["z_dim"] = int(ik["z_dim"])
    g.attrs["c_dim"] = c_dim
    g.attrs["w_dim"] = w_dim
    g.attrs["img_resolution"] = res
    g.attrs["img_channels"] = 3
    g.modules["synthesis"] = syn
    g.attrs["num_ws"] = total_ws
    g.modules["mapping"] = mp
    g.init_kwargs = dict(ik.items())
    _check_tree_covers(g, nv)
    return g


def _tree_tensors(node, prefix=""):
    out = collections.OrderedDict()
    for k, v in node.params.items():
        out[prefix + k] = v
    for k, v in node.buffers.items():
        out[prefix + k] = v
    for k, m in node.modules.items():
        out.update(_tree_tensors(m, prefix + k + "."))
    return out


def _share_tensors(dst, src):
    """Make dst (a tree of the same shape) hold src's very tensor objects."""
    for d, s in ((dst.params, src.params), (dst.buffers, src.buffers)):
        for k in d:
            d[k] = s[k]
    for k in dst.modules:
        _share_tensors(dst.modules[k], src.modules[k])


def _check_tree_covers(tree, nv):
    got = _tree_tensors(tree)
    if set(got) != set(nv):
        raise AssertionError("tree/tensor mismatch: missing %s, extra %s"
                             % (sorted(set(nv) - set(got))[:5], sorted(set(got) - set(nv))[:5]))
    for k, v in got.items():
        if tuple(v.shape) != tuple(nv[k].shape) or not torch.equal(v.data, nv[k]):
            raise AssertionError("tree tensor %s differs" % k)


def _generic_tree(nv, class_names, src, attrs_fn=None):
    """A tree built from dotted names (StyleGAN3-like networks): class_names maps a module
    path ('' root) to its class; params vs buffers from the `buffers` set."""
    buffer_names = {"w_avg", "freqs", "phases", "transform", "magnitude_ema", "up_filter",
                    "down_filter", "resample_filter", "noise_const"}
    nodes = {"": _Persistent(class_names[""], src)}
    for name, t in nv.items():
        parts = name.split(".")
        path = ""
        for part in parts[:-1]:
            child = part if not path else path + "." + part
            if child not in nodes:
                cls = class_names.get(child)
                if cls is None:
                    cls = "FullyConnectedLayer" if part in ("affine", "embed") or \
                        part.startswith("fc") else "Module"
                nodes[child] = _Persistent(cls, src)
                nodes[path].modules[part] = nodes[child]
            path = child
        leaf = parts[-1]
        if leaf in buffer_names:
            nodes[path].buffers[leaf] = _buf(t)
        else:
            nodes[path].params[leaf] = _param(t)
    if attrs_fn is not None:
        attrs_fn(nodes)
    return nodes[""]


def _training_set_kwargs(resolution, c_dim=0):
    """dnnlib.EasyDict like train.py's, plus a numpy scalar and a numpy array (so readers
    meet numpy.core.multiarray.scalar / _reconstruct outside the networks too)."""
    return EasyDict(
        class_name="training.dataset.ImageFolderDataset",
        path="/datasets/faces-%dx%d.zip" % (resolution, resolution),
        use_labels=c_dim > 0,
        max_size=np.int64(70000),
        xflip=True,
        resolution=int(resolution),
        random_seed=0,
        mean_rgb=np.array([0.52, 0.42, 0.37], dtype=np.float32),
    )


def _opaque_discriminator(seed, resolution):
    g = torch.Generator()
    g.manual_seed(int(seed))
    return OpaqueDiscriminator(collections.OrderedDict([
        ("img_resolution", int(resolution)),
        ("block_resolutions", [2 ** i for i in range(_log2_int(resolution), 2, -1)]),
        ("b4_fc_weight", torch.randn(16, 8, generator=g)),
        ("mbstd_group_size", 4),
    ]))


def write_nvidia_pkl(path, nv_tensors, init_kwargs, protocol=3, g_training="perturbed",
                     seed=0, kind="stylegan2", class_names=None, module_src=None,
                     attrs_fn=None):
    """Write an NVIDIA-style network pickle: dict(G, D, G_ema, training_set_kwargs,
    augment_pipe) with G and G_ema as persistent objects.

    nv_tensors: flat NVIDIA names -> tensors of G_ema (to_nvidia()'s output for StyleGAN2).
    g_training: 'perturbed' (G = G_ema + N(0, 0.05^2) noise, distinct tensors), 'shared'
    (G is its own persistent-object tree holding G_ema's very tensor objects, so G_ema's
    tensors are pickle memo references (BINGET) into G's: real files never share, but it
    halves a 1024 file) or 'omit' (no G key).
    kind 'stylegan2' builds the real module tree from init_kwargs; anything else builds a
    tree from the dotted names with class_names (StyleGAN3-like files).
    Returns the bytes written.
    """
    if kind == "stylegan2":
        def build(t):
            return _sg2_tree(t, init_kwargs, module_src or NVIDIA_MODULE_SRC_SG2)
    else:
        def build(t):
            root = _generic_tree(t, class_names, module_src or NVIDIA_MODULE_SRC_SG3, attrs_fn)
            root.init_kwargs = dict(init_kwargs.items())
            return root
    g_ema = build(nv_tensors)
    data = collections.OrderedDict()
    if g_training == "perturbed":
        gen = torch.Generator()
        gen.manual_seed(int(seed) * 7 + 1)
        pert = collections.OrderedDict()
        for k, v in nv_tensors.items():
            if k.endswith("resample_filter") or k.endswith("up_filter") or \
                    k.endswith("down_filter"):
                pert[k] = v.clone()
            else:
                pert[k] = v + 0.05 * torch.randn(v.shape, generator=gen)
        data["G"] = build(pert)
    elif g_training == "shared":
        g = build(nv_tensors)
        _share_tensors(g, g_ema)
        data["G"] = g
    elif g_training != "omit":
        raise ValueError("g_training %r" % (g_training,))
    data["D"] = _opaque_discriminator(seed, int(init_kwargs["img_resolution"]))
    data["G_ema"] = g_ema
    data["training_set_kwargs"] = _training_set_kwargs(int(init_kwargs["img_resolution"]),
                                                       int(init_kwargs.get("c_dim", 0)))
    data["augment_pipe"] = None
    with _fake_modules_installed():
        blob = deterministic_pickle_dumps(dict(data.items()), protocol)
    with open(path, "wb") as f:
        f.write(blob)
    return blob


def conditional_nvidia_tensors(nv, c_dim=4, seed=0):
    """A conditional variant of nv: mapping.embed.{weight [w_dim, c_dim], bias [w_dim]}
    and fc0 taking [z, embed(c)] (in features z_dim + w_dim)."""
    g = torch.Generator()
    g.manual_seed(int(seed))
    w_dim = int(nv["mapping.w_avg"].shape[0])
    z_dim = int(nv["mapping.fc0.weight"].shape[1])
    out = collections.OrderedDict()
    for k, v in nv.items():
        if k == "mapping.fc0.weight":
            out["mapping.embed.weight"] = torch.randn(w_dim, c_dim, generator=g)
            out["mapping.embed.bias"] = 0.1 * torch.randn(w_dim, generator=g)
            v = torch.randn(w_dim, z_dim + w_dim, generator=g) / MAPPING_LRMUL
        out[k] = v
    return out


def stylegan3_nvidia_tensors(latent=32, mapping_layers=2, seed=0):
    """A small StyleGAN3-T-like G_ema (names/shapes of networks_stylegan3.py, tiny sizes):
    synthesis.input.{affine.weight [4,w], affine.bias [4], weight [C,C], freqs [C,2],
    phases [C], transform [3,3]}, synthesis.L{i}_{size}_{channels}.{affine.*, weight, bias,
    magnitude_ema, up_filter, down_filter}, mapping.fc{i}.*, mapping.w_avg.
    Returns (tensors, class_names, attrs_fn)."""
    g = torch.Generator()
    g.manual_seed(int(seed))
    W = int(latent)
    nv = collections.OrderedDict()
    C0 = 16
    nv["synthesis.input.affine.weight"] = torch.randn(4, W, generator=g)
    nv["synthesis.input.affine.bias"] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    nv["synthesis.input.weight"] = torch.randn(C0, C0, generator=g)
    nv["synthesis.input.transform"] = torch.eye(3)
    nv["synthesis.input.freqs"] = torch.randn(C0, 2, generator=g)
    nv["synthesis.input.phases"] = torch.rand(C0, generator=g) - 0.5
    layers = [("L0_36_16", 16, 16, 1), ("L1_36_16", 16, 16, 3), ("L2_52_16", 16, 16, 3),
              ("L3_52_8", 16, 8, 3), ("L4_16_8", 8, 8, 3), ("L5_16_3", 8, 3, 1)]
    for name, cin, cout, k in layers:
        p = "synthesis." + name
        nv[p + ".affine.weight"] = torch.randn(cin, W, generator=g)
        nv[p + ".affine.bias"] = torch.ones(cin)
        nv[p + ".weight"] = torch.randn(cout, cin, k, k, generator=g)
        nv[p + ".bias"] = torch.zeros(cout)
        nv[p + ".magnitude_ema"] = torch.ones(())
        if k == 3:
            nv[p + ".up_filter"] = torch.ones(12) / 12.0
            nv[p + ".down_filter"] = torch.ones(12) / 12.0
    for i in range(mapping_layers):
        nv["mapping.fc%d.weight" % i] = torch.randn(W, W, generator=g) / MAPPING_LRMUL
        nv["mapping.fc%d.bias" % i] = torch.zeros(W)
    nv["mapping.w_avg"] = torch.randn(W, generator=g)
    class_names = {"": "Generator", "synthesis": "SynthesisNetwork",
                   "synthesis.input": "SynthesisInput", "mapping": "MappingNetwork"}
    for name, _, _, _ in layers:
        class_names["synthesis." + name] = "SynthesisLayer"

    def attrs_fn(nodes):
        nodes[""].attrs.update(z_dim=W, c_dim=0, w_dim=W, img_resolution=16, img_channels=3,
                               num_ws=len(layers) + 1)
        nodes["synthesis"].attrs.update(w_dim=W, img_resolution=16, img_channels=3,
                                        num_ws=len(layers) + 1, num_critical=2,
                                        layer_names=[n for n, _, _, _ in layers])
        nodes["mapping"].attrs.update(z_dim=W, c_dim=0, w_dim=W, num_ws=len(layers) + 1,
                                      num_layers=mapping_layers, w_avg_beta=0.998)

    return nv, class_names, attrs_fn


def stylegan3_init_kwargs(latent=32, mapping_layers=2):
    return collections.OrderedDict([
        ("z_dim", latent), ("w_dim", latent),
        ("mapping_kwargs", EasyDict(num_layers=mapping_layers)),
        ("synthesis_kwargs", EasyDict(channel_base=32768, channel_max=512,
                                      magnitude_ema_beta=0.999, num_layers=4,
                                      num_critical=2, margin_size=10, conv_kernel=3,
                                      use_radial_filters=False)),
        ("c_dim", 0), ("img_resolution", 16), ("img_channels", 3),
    ])


def write_os_system_pkl(path, command="echo i2s-oracle: os.system in a pickle was executed "
                                      "1>&2; exit 97"):
    """A pickle whose G_ema is REDUCE(os.system, (command,)), written opcode by opcode
    (never produced by pickling a callable, never unpickled here). The default command is
    harmless but loud."""
    out = io.BytesIO()

    def unicode(s):
        b = s.encode("utf-8")
        out.write(b"X" + struct.pack("<I", len(b)) + b)

    out.write(b"\x80\x03")      # PROTO 3
    out.write(b"}")             # EMPTY_DICT
    out.write(b"(")             # MARK
    unicode("G_ema")
    out.write(b"cos\nsystem\n")  # GLOBAL os.system
    unicode(command)
    out.write(b"\x85")          # TUPLE1
    out.write(b"R")             # REDUCE
    unicode("training_set_kwargs")
    out.write(b"N")             # NONE
    out.write(b"u")             # SETITEMS
    out.write(b".")             # STOP
    blob = out.getvalue()
    with open(path, "wb") as f:
        f.write(blob)
    return blob


def write_tensorflow_pkl(path, resolution=16, latent=32, seed=0, protocol=4):
    """An original-TensorFlow-StyleGAN2-like pkl: a tuple (G, D, Gs) of
    dnnlib.tflib.network.Network objects, each NEWOBJ + BUILD of a state dict
    {version 4, name, static_kwargs, components, build_module_src, build_func_name,
    variables [(name, numpy array)], ...} (tiny arrays)."""
    g = np.random.RandomState(int(seed))

    def net(name, func, variables, components=None, **static):
        state = collections.OrderedDict([
            ("version", 4), ("name", name), ("static_kwargs", dict(static)),
            ("components", dict(components or {})),
            ("build_module_src", "raise RuntimeError('i2s oracle: TF build_module_src "
                                 "was executed')\n"),
            ("build_func_name", func),
            ("variables", [(n, v) for n, v in variables]),
            ("input_shapes", [[None, latent], [None, 0]]),
            ("output_shapes", [[None, 3, resolution, resolution]]),
            ("input_names", ["latents_in", "labels_in"]),
            ("output_names", ["images_out"]),
        ])
        return TFNetwork(dict(state.items()))

    def arr(*shape):
        return g.standard_normal(shape).astype(np.float32)

    mapping_vars = [("Dense0/weight", arr(latent, latent)), ("Dense0/bias", arr(latent))]
    synth_vars = [("4x4/Const/const", arr(1, 8, 4, 4)), ("4x4/Conv/weight", arr(3, 3, 8, 8)),
                  ("noise0", arr(1, 1, 4, 4))]
    mk = dict(resolution=resolution, latent_size=latent, dlatent_size=latent,
              mapping_layers=1, fmap_base=128, fmap_max=8)

    def generator(name):
        comps = {"mapping": net("G_mapping", "training.networks_stylegan2.G_mapping",
                                mapping_vars),
                 "synthesis": net("G_synthesis",
                                  "training.networks_stylegan2.G_synthesis_stylegan2",
                                  synth_vars)}
        return net(name, "training.networks_stylegan2.G_main",
                   [("lod", np.float32(0.0)), ("dlatent_avg", arr(latent))], comps, **mk)

    D = net("D", "training.networks_stylegan2.D_stylegan2", [("Output/weight", arr(8, 1))],
            resolution=resolution)
    with _fake_modules_installed():
        blob = pickle.dumps((generator("G"), D, generator("Gs")), protocol=protocol)
    with open(path, "wb") as f:
        f.write(blob)
    return blob


# ---------------------------------------------------------------------------
# rosinality files
# ---------------------------------------------------------------------------


def _with_metadata(sd):
    """A copy of sd carrying the `_metadata` attribute module.state_dict() attaches
    ({module path: {'version': 1}}, pickled by BUILD on the OrderedDict)."""
    out = collections.OrderedDict((k, v) for k, v in sd.items())
    meta = collections.OrderedDict()
    meta[""] = {"version": 1}
    for k in sd:
        parts = k.split(".")[:-1]
        for i in range(1, len(parts) + 1):
            p = ".".join(parts[:i])
            if p not in meta:
                meta[p] = {"version": 1}
                if p == "style":
                    meta["style.0"] = {"version": 1}  # PixelNorm, no tensors
    out._metadata = meta
    return out


def rosinality_train_args(resolution, channel_multiplier, latent, mapping_layers):
    return argparse.Namespace(
        path="/datasets/lmdb-%d" % resolution, arch="stylegan2", iter=800000, batch=16,
        n_sample=64, size=int(resolution), r1=10.0, path_regularize=2.0,
        path_batch_shrink=2, d_reg_every=16, g_reg_every=4, mixing=0.9, ckpt=None, lr=0.002,
        channel_multiplier=int(channel_multiplier), wandb=False, local_rank=0, augment=False,
        augment_p=0.0, ada_target=0.6, ada_length=500000, ada_every=256, distributed=False,
        latent=int(latent), n_mlp=int(mapping_layers), start_iter=0)


def _adam_state(tensors, seed):
    g = torch.Generator()
    g.manual_seed(int(seed))
    state = {}
    for i, t in enumerate(tensors):
        state[i] = {"step": torch.tensor(1000.0),
                    "exp_avg": 1e-3 * torch.randn(t.shape, generator=g),
                    "exp_avg_sq": 1e-6 * torch.rand(t.shape, generator=g)}
    return {"state": state,
            "param_groups": [{"lr": 0.002, "betas": (0.0, 0.99), "eps": 1e-08,
                              "weight_decay": 0, "amsgrad": False, "maximize": False,
                              "foreach": None, "capturable": False,
                              "params": list(range(len(tensors)))}]}


def write_rosinality(path, sd, latent_avg=None, zip=True, wrap=True, with_training_junk=False,
                     g_training="shared", seed=0, channel_multiplier=2):
    """Write a rosinality checkpoint.

    wrap=True: {'g_ema': sd, 'latent_avg': latent_avg} (convert_weight.py; latent_avg
    omitted when None); wrap=False: the bare g_ema state dict. with_training_junk (needs
    wrap): train.py's {g, d, g_ema, g_optim, d_optim, args (argparse.Namespace),
    ada_aug_p}, no latent_avg. zip=True: torch.save's zip format; False: the legacy format
    (deterministic keys, see legacy_torch_save). g_training for the junk: 'shared' (g is
    g_ema's tensors: no extra bytes) or 'perturbed'.
    """
    g_ema = _with_metadata(sd)
    if not wrap:
        obj = g_ema
    elif with_training_junk:
        res, latent, n_map, _ = infer_config(sd)
        if g_training == "shared":
            g = _with_metadata(sd)
        else:
            gen = torch.Generator()
            gen.manual_seed(int(seed) * 11 + 3)
            g = _with_metadata(collections.OrderedDict(
                (k, v if k.endswith(".kernel") else v + 0.05 * torch.randn(v.shape,
                                                                           generator=gen))
                for k, v in sd.items()))
        gen = torch.Generator()
        gen.manual_seed(int(seed) * 13 + 5)
        d = collections.OrderedDict([
            ("convs.0.0.weight", torch.randn(8, 3, 1, 1, generator=gen)),
            ("convs.0.1.bias", torch.zeros(8)),
            ("final_linear.1.weight", torch.randn(1, 8, generator=gen)),
            ("final_linear.1.bias", torch.zeros(1)),
        ])
        small = [v for k, v in sd.items() if k.startswith("style.")][:4]
        obj = collections.OrderedDict([
            ("g", g), ("d", d), ("g_ema", g_ema),
            ("g_optim", _adam_state(small, seed)),
            ("d_optim", _adam_state(list(d.values()), seed + 1)),
            ("args", rosinality_train_args(res, channel_multiplier, latent, n_map)),
            ("ada_aug_p", 0.0),
        ])
        obj = dict(obj.items())
    else:
        obj = {"g_ema": g_ema}
        if latent_avg is not None:
            obj["latent_avg"] = latent_avg.detach().to(torch.float32).contiguous()
    if zip:
        torch.save(obj, path)
    else:
        legacy_torch_save(obj, path)

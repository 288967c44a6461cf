"""Independent reference implementation (test oracle) of the StyleGAN (v1) generator
and the VGG16 perceptual features, written in plain torch.nn.functional from
/work/shared/specs/stylegan1-and-vgg16.md.

State-dict layout follows the widely used PyTorch port of NVIDIA's generator
(`karras2019stylegan-ffhq-1024x1024.for_g_all.pt`, 116 entries at 1024x1024) and
torchvision's `vgg16` state dict.  All computations are float32.

Public functions:
    make_random_state_dict(resolution, fmap_base=8192, fmap_max=512, latent=512,
                           mapping_layers=8, seed=0) -> OrderedDict
    num_layers(resolution) -> int
    mapping(sd, z) -> w                       [N, latent]
    synthesis(sd, wplus, noise=None) -> img   [N, 3, R, R] (raw, roughly [-1, 1])
    vgg16_random_state_dict(seed=0, with_classifier=True) -> OrderedDict
    vgg16_features(sd, img, imagenet_norm=False) -> dict of relu1_1, relu1_2,
                                                     relu3_2, relu4_2
"""

import collections
import math

import torch
import torch.nn.functional as F

__all__ = [
    "nf",
    "num_layers",
    "make_random_state_dict",
    "mapping",
    "synthesis",
    "vgg16_random_state_dict",
    "vgg16_features",
    "VGG_CONV_SHAPES",
    "VGG_FEATURE_LAYERS",
]

# ---------------------------------------------------------------------------
# StyleGAN v1 generator
# ---------------------------------------------------------------------------

MAPPING_LRMUL = 0.01
LRELU_SLOPE = 0.2
PIXEL_NORM_EPS = 1e-8
INSTANCE_NORM_EPS = 1e-5
FUSED_MIN_RES = 128  # conv0_up uses the fused transposed conv when output res >= 128


def _log2_int(value):
    r = int(round(math.log2(value)))
    if 2 ** r != value:
        raise ValueError("resolution must be a power of two, got %r" % (value,))
    return r


def nf(stage, fmap_base=8192, fmap_max=512):
    """Channel count of a synthesis stage: min(int(fmap_base / 2**stage), fmap_max)."""
    return min(int(fmap_base / (2.0 ** stage)), fmap_max)


def num_layers(resolution):
    """Number of W+ rows / noise maps: 2*log2(resolution) - 2 (18 at 1024)."""
    return 2 * _log2_int(resolution) - 2


def _blur_kernel():
    k = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float32)
    k = k[:, None] * k[None, :]
    k = k / k.sum()  # == outer([1,2,1],[1,2,1]) / 16
    return k.view(1, 1, 3, 3).contiguous()


def make_random_state_dict(resolution, fmap_base=8192, fmap_max=512, latent=512,
                           mapping_layers=8, seed=0):
    """Random generator state dict with the key layout of the published port file.

    Values are drawn from torch.Generator(seed) in key order.  Raw conv/linear weights
    ~ N(0,1) (equalized learning rate scales them at run time), mapping weights
    ~ N(0,1)/0.01 (the port's init_std = 1/lrmul), biases and noise weights
    ~ N(0, 0.1) (std 0.1), const ~ N(0,1), blur kernels fixed.
    """
    res_log2 = _log2_int(resolution)
    if res_log2 < 2:
        raise ValueError("resolution must be >= 4")
    g = torch.Generator()
    g.manual_seed(int(seed))

    def randn(*shape, std=1.0):
        t = torch.randn(*shape, generator=g, dtype=torch.float32)
        if std != 1.0:
            t = t * std
        return t.contiguous()

    sd = collections.OrderedDict()
    for i in range(mapping_layers):
        sd["g_mapping.dense%d.weight" % i] = (
            torch.randn(latent, latent, generator=g, dtype=torch.float32) / MAPPING_LRMUL
        ).contiguous()
        sd["g_mapping.dense%d.bias" % i] = randn(latent, std=0.1)

    def epilogue(prefix, channels):
        sd[prefix + ".top_epi.noise.weight"] = randn(channels, std=0.1)
        sd[prefix + ".style_mod.lin.weight"] = randn(2 * channels, latent)
        sd[prefix + ".style_mod.lin.bias"] = randn(2 * channels, std=0.1)

    c = nf(1, fmap_base, fmap_max)
    p = "g_synthesis.blocks.4x4"
    sd[p + ".const"] = randn(1, c, 4, 4)
    sd[p + ".bias"] = randn(c, std=0.1)
    epilogue(p + ".epi1", c)
    sd[p + ".conv.weight"] = randn(c, c, 3, 3)
    sd[p + ".conv.bias"] = randn(c, std=0.1)
    epilogue(p + ".epi2", c)

    last = c
    for r in range(3, res_log2 + 1):
        R = 2 ** r
        c = nf(r - 1, fmap_base, fmap_max)
        p = "g_synthesis.blocks.%dx%d" % (R, R)
        sd[p + ".conv0_up.weight"] = randn(c, last, 3, 3)
        sd[p + ".conv0_up.bias"] = randn(c, std=0.1)
        sd[p + ".conv0_up.intermediate.kernel"] = _blur_kernel()
        epilogue(p + ".epi1", c)
        sd[p + ".conv1.weight"] = randn(c, c, 3, 3)
        sd[p + ".conv1.bias"] = randn(c, std=0.1)
        epilogue(p + ".epi2", c)
        last = c

    sd["g_synthesis.torgb.weight"] = randn(3, last, 1, 1)
    sd["g_synthesis.torgb.bias"] = randn(3, std=0.1)
    return sd


def _lrelu(x):
    return F.leaky_relu(x, LRELU_SLOPE)


def _wmul(weight, gain, lrmul=1.0):
    fan_in = 1
    for d in weight.shape[1:]:
        fan_in *= int(d)
    return gain / math.sqrt(fan_in) * lrmul


def _sd_resolution(sd):
    best = 4
    for k in sd.keys():
        if k.startswith("g_synthesis.blocks."):
            name = k[len("g_synthesis.blocks."):].split(".", 1)[0]
            best = max(best, int(name.split("x")[0]))
    return best


def _num_mapping_layers(sd):
    n = 0
    while ("g_mapping.dense%d.weight" % n) in sd:
        n += 1
    return n


def mapping(sd, z):
    """z [N, latent] -> w [N, latent]: pixel norm, then dense + LeakyReLU(0.2) x 8."""
    x = z.to(torch.float32)
    x = x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + PIXEL_NORM_EPS)
    for i in range(_num_mapping_layers(sd)):
        w = sd["g_mapping.dense%d.weight" % i]
        b = sd["g_mapping.dense%d.bias" % i]
        x = F.linear(x, w * _wmul(w, math.sqrt(2.0), MAPPING_LRMUL), b * MAPPING_LRMUL)
        x = _lrelu(x)
    return x


def _instance_norm(x):
    mean = x.mean(dim=(2, 3), keepdim=True)
    xc = x - mean
    var = (xc * xc).mean(dim=(2, 3), keepdim=True)  # biased variance
    return xc * torch.rsqrt(var + INSTANCE_NORM_EPS)


def _epilogue(sd, prefix, x, w_row, noise):
    """noise -> LeakyReLU 0.2 -> instance norm -> style modulation."""
    C = x.shape[1]
    if noise is not None:
        nw = sd[prefix + ".top_epi.noise.weight"]
        x = x + nw.view(1, C, 1, 1) * noise.to(torch.float32)
    x = _lrelu(x)
    x = _instance_norm(x)
    lw = sd[prefix + ".style_mod.lin.weight"]
    lb = sd[prefix + ".style_mod.lin.bias"]
    s = F.linear(w_row, lw * _wmul(lw, 1.0), lb)  # [N, 2C]
    ys = s[:, :C].reshape(-1, C, 1, 1)
    yb = s[:, C:].reshape(-1, C, 1, 1)
    return x * (ys + 1.0) + yb


def _conv0_up(sd, prefix, x):
    weight = sd[prefix + ".weight"]
    bias = sd[prefix + ".bias"]
    kernel = sd[prefix + ".intermediate.kernel"]
    W = weight * _wmul(weight, math.sqrt(2.0))
    out_res = 2 * x.shape[2]
    if out_res >= FUSED_MIN_RES:
        Wt = W.permute(1, 0, 2, 3)  # [in, out, 3, 3]
        Wt = F.pad(Wt, (1, 1, 1, 1))  # [in, out, 5, 5]
        Wt = Wt[:, :, 1:, 1:] + Wt[:, :, :-1, 1:] + Wt[:, :, 1:, :-1] + Wt[:, :, :-1, :-1]
        x = F.conv_transpose2d(x, Wt.contiguous(), stride=2, padding=1)
    else:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.conv2d(x, W, None, padding=1)
    C = x.shape[1]
    k = kernel.to(x.dtype).expand(C, 1, kernel.shape[-2], kernel.shape[-1]).contiguous()
    x = F.conv2d(x, k, None, padding=kernel.shape[-1] // 2, groups=C)
    return x + bias.view(1, -1, 1, 1)


def _conv3x3(sd, prefix, x):
    weight = sd[prefix + ".weight"]
    bias = sd[prefix + ".bias"]
    return F.conv2d(x, weight * _wmul(weight, math.sqrt(2.0)), bias, padding=1)


def synthesis(sd, wplus, noise=None):
    """wplus [N, L, latent] -> raw image [N, 3, R, R].

    noise: None (all-zero noise) or a list of L tensors [N, 1, H, W], one per layer
    in order 4x4 epi1, 4x4 epi2, 8x8 epi1, ...
    """
    R = _sd_resolution(sd)
    L = num_layers(R)
    wplus = wplus.to(torch.float32)
    if wplus.dim() != 3 or wplus.shape[1] != L:
        raise ValueError("wplus must be [N, %d, latent], got %s" % (L, tuple(wplus.shape)))
    if noise is not None and len(noise) != L:
        raise ValueError("noise must have %d entries, got %d" % (L, len(noise)))
    N = wplus.shape[0]

    def nz(i):
        return None if noise is None else noise[i]

    p = "g_synthesis.blocks.4x4"
    const = sd[p + ".const"]
    x = const.expand(N, -1, -1, -1) + sd[p + ".bias"].view(1, -1, 1, 1)
    x = _epilogue(sd, p + ".epi1", x, wplus[:, 0], nz(0))
    x = _conv3x3(sd, p + ".conv", x)
    x = _epilogue(sd, p + ".epi2", x, wplus[:, 1], nz(1))

    for i, r in enumerate(range(3, _log2_int(R) + 1), start=1):
        p = "g_synthesis.blocks.%dx%d" % (2 ** r, 2 ** r)
        x = _conv0_up(sd, p + ".conv0_up", x)
        x = _epilogue(sd, p + ".epi1", x, wplus[:, 2 * i], nz(2 * i))
        x = _conv3x3(sd, p + ".conv1", x)
        x = _epilogue(sd, p + ".epi2", x, wplus[:, 2 * i + 1], nz(2 * i + 1))

    tw = sd["g_synthesis.torgb.weight"]
    tb = sd["g_synthesis.torgb.bias"]
    return F.conv2d(x, tw * _wmul(tw, 1.0), tb)


# ---------------------------------------------------------------------------
# VGG16 (torchvision layout)
# ---------------------------------------------------------------------------

# torchvision vgg16 `features` conv indices and [out, in] channels.
VGG_CONV_SHAPES = collections.OrderedDict([
    (0, (64, 3)), (2, (64, 64)),
    (5, (128, 64)), (7, (128, 128)),
    (10, (256, 128)), (12, (256, 256)), (14, (256, 256)),
    (17, (512, 256)), (19, (512, 512)), (21, (512, 512)),
    (24, (512, 512)), (26, (512, 512)), (28, (512, 512)),
])
VGG_POOL_INDICES = (4, 9, 16, 23, 30)
# ReLU outputs used by Image2StyleGAN's perceptual loss: name -> conv index.
VGG_FEATURE_LAYERS = collections.OrderedDict([
    ("relu1_1", 0), ("relu1_2", 2), ("relu3_2", 12), ("relu4_2", 19),
])
VGG_CLASSIFIER_SHAPES = collections.OrderedDict([
    (0, (4096, 25088)), (3, (4096, 4096)), (6, (1000, 4096)),
])
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg16_random_state_dict(seed=0, with_classifier=True, all_features=None):
    """Random torchvision-layout vgg16 state dict.

    Conv weights ~ N(0, sqrt(2/fan_in)), biases ~ N(0, 0.01).  Values are drawn in
    key order, so features.0..19 are identical with and without the classifier.
    with_classifier=False keeps only features.0 .. features.19, unless all_features
    is True (then features.21 .. features.28 stay, without the 500 MB classifier).
    """
    if all_features is None:
        all_features = with_classifier
    g = torch.Generator()
    g.manual_seed(int(seed))
    sd = collections.OrderedDict()
    for idx, (cout, cin) in VGG_CONV_SHAPES.items():
        if not all_features and idx > 19:
            break
        std = math.sqrt(2.0 / (cin * 9))
        sd["features.%d.weight" % idx] = (
            torch.randn(cout, cin, 3, 3, generator=g, dtype=torch.float32) * std
        ).contiguous()
        sd["features.%d.bias" % idx] = (
            torch.randn(cout, generator=g, dtype=torch.float32) * 0.01
        ).contiguous()
    if with_classifier:
        for idx, (cout, cin) in VGG_CLASSIFIER_SHAPES.items():
            std = math.sqrt(2.0 / cin)
            sd["classifier.%d.weight" % idx] = (
                torch.randn(cout, cin, generator=g, dtype=torch.float32) * std
            ).contiguous()
            sd["classifier.%d.bias" % idx] = (
                torch.randn(cout, generator=g, dtype=torch.float32) * 0.01
            ).contiguous()
    return sd


def vgg16_features(sd, img, imagenet_norm=False):
    """img [N,3,H,W] float in [0,1] -> dict relu1_1, relu1_2, relu3_2, relu4_2."""
    x = img.to(torch.float32)
    if imagenet_norm:
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
        x = (x - mean) / std
    wanted = {v: k for k, v in VGG_FEATURE_LAYERS.items()}
    last = max(VGG_FEATURE_LAYERS.values())
    out = collections.OrderedDict()
    for idx in range(last + 1):
        if idx in VGG_CONV_SHAPES:
            x = F.conv2d(x, sd["features.%d.weight" % idx], sd["features.%d.bias" % idx],
                         padding=1)
            x = F.relu(x)
            if idx in wanted:
                out[wanted[idx]] = x
        elif idx in VGG_POOL_INDICES:
            x = F.max_pool2d(x, kernel_size=2, stride=2)
    return {k: out[k] for k in VGG_FEATURE_LAYERS}

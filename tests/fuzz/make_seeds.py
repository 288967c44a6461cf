#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets into corpus/<target>/ (run once; the files
are kept in the repo): small valid inputs made by numpy, zipfile and torch.save (both
layouts), so the fuzzers start from real structure. Debian's python3-numpy and
python3-torch: /usr/bin/python3 tests/fuzz/make_seeds.py"""

import collections
import io
import os
import zipfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def npy(array, version=None):
    buf = io.BytesIO()
    if version is None:
        np.save(buf, array)
    else:
        np.lib.format.write_array(buf, array, version=version)
    return buf.getvalue()


def main():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 8)).astype(np.float32)
    put("npy_fuzz", "wplus.npy", npy(w))
    put("npy_fuzz", "w.npy", npy(w[0]))
    put("npy_fuzz", "v2.npy", npy(w, version=(2, 0)))
    buf = io.BytesIO()
    np.savez(buf, noise_0=rng.standard_normal((1, 1, 4, 4)).astype(np.float32),
             noise_1=rng.standard_normal((1, 1, 8, 8)).astype(np.float32))
    put("npy_fuzz", "noise.npz", buf.getvalue())

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("spec.json", '{"model": "demo", "seed": 1}')
        z.writestr("image.npy", npy(w))
    put("zip_fuzz", "stored.zip", buf.getvalue())

    state = collections.OrderedDict(
        [("g_mapping.dense0.weight", torch.from_numpy(w.copy())),
         ("g_mapping.dense0.bias", torch.zeros(3)),
         ("view", torch.arange(12, dtype=torch.float32).view(3, 4).t())])
    for legacy in (False, True):
        buf = io.BytesIO()
        torch.save(state, buf, _use_new_zipfile_serialization=not legacy)
        data = buf.getvalue()
        put("torch_file_fuzz", "legacy.pt" if legacy else "zip.pt", data)
        if not legacy:
            put("zip_fuzz", "torch.pt", data)
    weight_file_seeds()

    put("point_list_fuzz", "five.txt",
        b"# eyes, nose, mouth corners\n203.5 101\n246.5 103.1\n225 120\n202.5 140\n245 140.6\n")
    put("point_list_fuzz", "commas.txt", b"1,2;3,4\t5e1 -6.25\n")
    from PIL import Image  # python3-pil
    pixels = (rng.random((6, 5, 3)) * 255).astype(np.uint8)
    for fmt, name, image, extra in (
            ("PNG", "rgb.png", Image.fromarray(pixels, "RGB"), {}),
            ("PNG", "gray.png", Image.fromarray(pixels[..., 0], "L"), {}),
            ("JPEG", "rgb.jpg", Image.fromarray(pixels, "RGB"), {}),
            ("JPEG", "progressive.jpg", Image.fromarray(pixels, "RGB"), {"progressive": True}),
            ("BMP", "rgb.bmp", Image.fromarray(pixels, "RGB"), {})):
        buf = io.BytesIO()
        image.save(buf, fmt, **extra)
        put("image_header_fuzz", name, buf.getvalue())
    put("token_file_fuzz", "tokens.txt",
        b"# tenant tokens\nalpha-secret-token-0001 alpha\n"
        b"sha256:" + b"0123456789abcdef" * 4 + b"\tbeta\r\nroot-secret-token-00001 ops admin\n")
    request_check_seeds()
    deflate_seeds()


def deflate_text(n):
    """The text of server/formats/inflate_test.cc's vectors: words picked by an LCG."""
    words = ["latent", "style", "w+", "noise", "layer", "mapping", "synthesis", "gan", "face",
             "image"]
    x, out = 12345, []
    while sum(map(len, out)) < n:
        x = (x * 1103515245 + 12345) % (1 << 31)
        out.append(words[(x >> 16) % 10] + (" " if (x >> 8) % 7 else ".\n"))
    return "".join(out)[:n].encode()


def deflate_seeds():
    """inflate_fuzz: raw DEFLATE streams (stored, fixed and dynamic blocks, several blocks
    in one stream); npy_fuzz and zip_fuzz: an np.savez_compressed file (deflated members)."""
    import zlib

    def raw(data, level, strategy=zlib.Z_DEFAULT_STRATEGY):
        c = zlib.compressobj(level, zlib.DEFLATED, -15, 9, strategy)
        return c.compress(data) + c.flush()

    text = deflate_text(600)
    put("inflate_fuzz", "stored.bin", raw(text[:100], 0))
    put("inflate_fuzz", "fixed.bin", raw(text, 9, zlib.Z_FIXED))
    put("inflate_fuzz", "dynamic.bin", raw(text, 9))
    floats = np.random.default_rng(1).standard_normal(64).astype(np.float32).tobytes()
    put("inflate_fuzz", "floats.bin", raw(floats, 6))
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    put("inflate_fuzz", "blocks.bin", c.compress(text[:300]) + c.flush(zlib.Z_SYNC_FLUSH) +
        c.compress(text[300:]) + c.flush())
    put("inflate_fuzz", "empty.bin", raw(b"", 6))
    rng = np.random.default_rng(2)
    buf = io.BytesIO()
    np.savez_compressed(buf, lat_comp=rng.standard_normal((4, 1, 8)).astype(np.float32),
                        lat_stdev=rng.standard_normal(4).astype(np.float32))
    put("npy_fuzz", "compressed.npz", buf.getvalue())
    put("zip_fuzz", "compressed.npz", buf.getvalue())


def weight_file_seeds():
    """weight_file_fuzz: a rosinality train.py checkpoint (both torch.save layouts), an
    NVIDIA-structured network pickle (persistent objects, EasyDict, numpy scalar, tensors
    as _load_from_bytes streams) and numpy arrays in protocols 2 and 5. The NVIDIA classes
    are stand-ins registered under their module names; nothing of NVIDIA's code is used."""
    import argparse
    import pickle
    import sys
    import types

    def register(module, obj, name):
        for k in range(1, module.count(".") + 1):  # parent packages first
            sys.modules.setdefault(module.rsplit(".", k)[0], types.ModuleType(module))
        mod = sys.modules.setdefault(module, types.ModuleType(module))
        obj.__module__, obj.__qualname__ = module, name
        setattr(mod, name, obj)

    def _reconstruct_persistent_obj(meta):
        raise RuntimeError("seed writer only")

    class EasyDict(dict):
        pass

    register("torch_utils.persistence", _reconstruct_persistent_obj, "_reconstruct_persistent_obj")
    register("dnnlib.util", EasyDict, "EasyDict")

    class Persistent:
        def __init__(self, class_name, state):
            self.class_name, self.state = class_name, state

        def __reduce__(self):
            return (_reconstruct_persistent_obj, (dict(
                type="class", version=6, module_src="# networks.py source\n",
                class_name=self.class_name, state=self.state),))

    def module_state(parameters=(), buffers=(), modules=(), **extra):
        return dict(training=False,
                    _parameters=collections.OrderedDict(
                        (k, torch.nn.Parameter(v)) for k, v in parameters),
                    _buffers=collections.OrderedDict(buffers),
                    _modules=collections.OrderedDict(modules), **extra)

    torch.manual_seed(0)
    mapping = Persistent("MappingNetwork", module_state(
        [("weight", torch.randn(4, 4)), ("bias", torch.zeros(4))], [("w_avg", torch.zeros(4))],
        w_dim=4))
    block = Persistent("SynthesisBlock", module_state(
        [("const", torch.randn(4, 2, 2))], [("resample_filter", torch.ones(4, 4) / 16)],
        resolution=4))
    synthesis = Persistent("SynthesisNetwork", module_state(modules=[("b4", block)]))
    g_ema = Persistent("Generator", module_state(
        modules=[("mapping", mapping), ("synthesis", synthesis)],
        _init_kwargs=EasyDict(z_dim=4, w_dim=4, synthesis_kwargs=EasyDict(conv_clamp=256)),
        img_resolution=4, gain=np.float32(0.5)))
    put("weight_file_fuzz", "nvidia.pkl", pickle.dumps(
        dict(G_ema=g_ema, D=None, training_set_kwargs=EasyDict(resolution=4),
             augment_pipe=None), protocol=4))

    g = torch.nn.Linear(2, 3)
    optim = torch.optim.Adam(g.parameters())
    g(torch.ones(1, 2)).sum().backward()
    optim.step()
    checkpoint = {"g_ema": g.state_dict(), "latent_avg": torch.zeros(4),
                  "g_optim": optim.state_dict(),
                  "args": argparse.Namespace(channel_multiplier=2, size=4), "ada_aug_p": 0.5}
    for legacy in (False, True):
        buf = io.BytesIO()
        torch.save(checkpoint, buf, _use_new_zipfile_serialization=not legacy)
        put("weight_file_fuzz", "train_legacy.pt" if legacy else "train_zip.pt", buf.getvalue())

    arrays = {"c": np.arange(6, dtype=np.float32).reshape(2, 3),
              "f": np.asfortranarray(np.ones((2, 2))), "i": np.int64(7), "b": np.bool_(True)}
    for protocol in (2, 5):
        put("weight_file_fuzz", f"numpy{protocol}.pkl", pickle.dumps(arrays, protocol=protocol))


def request_check_seeds():
    """request_check_fuzz: a selector byte, then a request's protobuf bytes (stubs made by
    protoc from proto/ into a temporary folder)."""
    import subprocess
    import sys
    import tempfile
    out = tempfile.mkdtemp(prefix="i2s-seeds-")
    proto = os.path.join(HERE, "..", "..", "proto")
    subprocess.run(["protoc", f"-I{proto}", f"--python_out={out}",
                    os.path.join(proto, "i2s/v1/i2s.proto")], check=True)
    sys.path.insert(0, out)
    from i2s.v1 import i2s_pb2 as pb
    embed = pb.EmbedRequest(image=b"\x89PNG", request_id="r1", labels={"k": "v"},
                            preview_every=5, options=pb.EmbedOptions(
                                steps=100, noise_steps=10, lr=0.01, w_mse=1, w_perceptual=0.5,
                                target_psnr_db=30, plateau_window=20, perceptual_resolution=64,
                                init=pb.FROM_LATENT, init_latent_id="lat_1", space=pb.W),
                            align=pb.AlignOptions(mode=pb.AlignOptions.LANDMARKS,
                                                  landmarks=[pb.Point(x=1, y=2)] * 5))
    ref = pb.LatentRef(latent_id="lat_a")
    values = pb.LatentRef(values=pb.LatentValues(num_layers=2, latent_size=2,
                                                 values=[0.5, -1, 2, 0]))
    render = pb.RenderOptions(format=pb.JPEG, jpeg_quality=80, noise_seed=7)
    seeds = [
        (0, "embed", embed),
        (0, "embed_bare", pb.EmbedRequest()),
        (1, "synthesize", pb.SynthesizeRequest(latent=values, render=render)),
        (2, "morph", pb.MorphRequest(a=ref, b=values, frames=8, render=render)),
        (3, "stylemix", pb.StyleMixRequest(content=ref, style=ref, crossover=4,
                                          store_result=True, labels={"a": "b"})),
        (4, "expression", pb.ExpressionTransferRequest(target=ref, neutral=ref, expression=ref,
                                                       strength=1.5, first_layer=2,
                                                       last_layer=5)),
        (5, "import", pb.ImportLatentRequest(npy=b"\x93NUMPY", request_id="r2")),
        (6, "alignface", pb.AlignFaceRequest(size=256, align=pb.AlignOptions(
            mode=pb.AlignOptions.AUTO, min_confidence=0.7, on_no_face=pb.AlignOptions.RESIZE))),
        (7, "listlatents", pb.ListLatentsRequest(page_size=10, page_token="abc")),
        (8, "listjobs", pb.ListJobsRequest(page_size=5, states=[pb.RUNNING, pb.SUCCEEDED])),
        (9, "localblend", pb.LocalBlendRequest(base=ref, source=values, mask=b"\x89PNG",
                                               start_layer=3, feather=4, render=render)),
        (10, "importdirection", pb.ImportDirectionRequest(name="smile", file=b"\x93NUMPY",
                                                          components=[0, 2])),
        (11, "computedirection", pb.ComputeDirectionRequest(
            name="expr", from_latents=[ref], to_latents=[values, ref], collapse_to_w=True)),
        (12, "applydirections", pb.ApplyDirectionsRequest(
            latent=ref, steps=[pb.DirectionStep(name="smile", alpha=1.5)], first_layer=1,
            last_layer=4, condition_on=["age"], store_result=True, request_id="r3")),
        (13, "directionframes", pb.DirectionFramesRequest(latent=values, direction="smile",
                                                          alphas=[-2, 0, 2], render=render)),
    ]
    for selector, name, message in seeds:
        put("request_check_fuzz", name, bytes([selector]) + message.SerializeToString())


if __name__ == "__main__":
    main()

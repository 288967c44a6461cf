#!/usr/bin/python3
"""Self-test of the StyleGAN2 oracle (stylegan2_ref.py) and its fixture writer.

Run: /usr/bin/python3 tests/oracle/stylegan2_ref_test.py [-v]
Checks that the rosinality and NVIDIA layouts give the same images, num_ws / noise shapes /
key shapes per /work/shared/specs/stylegan2.md, that tensors and legacy streams are written
exactly as torch writes them (up to the storage keys), that the NVIDIA pickle round-trips
through Python's own pickle with stub modules in a subprocess (module_src never executed,
only known globals resolved), and that every writer is deterministic.
"""

import collections
import filecmp
import io
import json
import os
import pickle
import pickletools
import re
import subprocess
import sys
import tempfile
import textwrap
import unittest

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import stylegan2_ref as R  # noqa: E402

torch.set_num_threads(1)

TINY = dict(latent=32, mapping_layers=2, channel_base=128, channel_max=32)


def tiny_sd(res=16, seed=5, **kw):
    cfg = dict(TINY)
    cfg.update(kw)
    return R.make_random_rosinality_state_dict(res, seed=seed, **cfg)


class GeometryTest(unittest.TestCase):
    def test_num_ws_and_noises(self):
        self.assertEqual(R.num_ws(1024), 18)
        self.assertEqual(R.num_ws(256), 14)
        self.assertEqual(R.num_ws(16), 6)
        self.assertEqual(R.num_noises(1024), 17)
        shapes = R.noise_shapes(1024)
        self.assertEqual(len(shapes), 17)
        self.assertEqual([s[2] for s in shapes],
                         [4, 8, 8, 16, 16, 32, 32, 64, 64, 128, 128, 256, 256, 512, 512, 1024,
                          1024])
        self.assertTrue(all(s[:2] == (1, 1) and s[2] == s[3] for s in shapes))
        self.assertEqual(R.noise_shapes(16), [(1, 1, 4, 4), (1, 1, 8, 8), (1, 1, 8, 8),
                                              (1, 1, 16, 16), (1, 1, 16, 16)])

    def test_channel_tables(self):
        self.assertEqual(dict(R.channel_table(1024, 2)),
                         {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128,
                          512: 64, 1024: 32})
        self.assertEqual(dict(R.channel_table(1024, 1)),
                         {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64,
                          512: 32, 1024: 16})
        self.assertEqual(dict(R.channel_table(16, channel_base=128, channel_max=32)),
                         {4: 32, 8: 16, 16: 8})

    def test_config_f_shapes(self):
        s = R.rosinality_shapes(1024, 512, 8, 2)
        self.assertEqual(len(s), 171)
        self.assertEqual(s["style.1.weight"], (512, 512))
        self.assertEqual(s["style.8.bias"], (512,))
        self.assertNotIn("style.0.weight", s)
        self.assertEqual(s["input.input"], (1, 512, 4, 4))
        self.assertEqual(s["conv1.conv.weight"], (1, 512, 512, 3, 3))
        self.assertEqual(s["conv1.noise.weight"], (1,))
        self.assertEqual(s["to_rgb1.conv.weight"], (1, 3, 512, 1, 1))
        self.assertEqual(s["to_rgb1.bias"], (1, 3, 1, 1))
        self.assertEqual(s["convs.0.conv.blur.kernel"], (4, 4))
        self.assertNotIn("convs.1.conv.blur.kernel", s)
        self.assertEqual(s["convs.15.conv.weight"], (1, 32, 32, 3, 3))
        self.assertEqual(s["to_rgbs.7.upsample.kernel"], (4, 4))
        self.assertEqual(s["to_rgbs.7.conv.modulation.weight"], (32, 512))
        self.assertEqual(s["noises.noise_16"], (1, 1, 1024, 1024))
        self.assertNotIn("noises.noise_17", s)

    def test_random_state_dict_matches_shapes(self):
        sd = tiny_sd(32, channel_base=512)
        shapes = R.rosinality_shapes(32, 32, 2, channel_base=512, channel_max=32)
        self.assertEqual(list(sd.keys()), list(shapes.keys()))
        for k, v in sd.items():
            self.assertEqual(tuple(v.shape), shapes[k], k)
            self.assertEqual(v.dtype, torch.float32)
        for k, v in sd.items():
            if k.endswith("noise.weight"):
                self.assertGreater(abs(float(v)), 0.04, k)
        self.assertTrue(torch.allclose(sd["convs.0.conv.blur.kernel"].sum(), torch.tensor(4.0)))


def brute_upfirdn(x, k, up, pad):
    """Literal definition on numpy: zero-stuff, pad, true convolution."""
    x = x.numpy().astype(np.float64)
    k = k.numpy().astype(np.float64)
    N, C, H, W = x.shape
    u = np.zeros((N, C, H * up, W * up))
    u[:, :, ::up, ::up] = x
    p0, p1 = pad
    u = np.pad(u, ((0, 0), (0, 0), (p0, p1), (p0, p1)))
    kh = k.shape[0]
    Ho = u.shape[2] - kh + 1
    out = np.zeros((N, C, Ho, Ho))
    for i in range(Ho):
        for j in range(Ho):
            for a in range(kh):
                for b in range(kh):
                    # true convolution: out[i] = sum_m u[i + m] k[kh-1-m]
                    out[:, :, i, j] += u[:, :, i + a, j + b] * k[kh - 1 - a, kh - 1 - b]
    return out


class LayoutTest(unittest.TestCase):
    def test_upfirdn2d_definition(self):
        g = torch.Generator()
        g.manual_seed(3)
        x = torch.randn(1, 2, 5, 5, generator=g)
        k = torch.randn(4, 4, generator=g)  # asymmetric: catches a missing flip
        for up, pad in ((2, (2, 1)), (1, (1, 1)), (2, (3, 2)), (1, (0, 0))):
            got = R.upfirdn2d(x, k, up=up, pad=pad).numpy()
            want = brute_upfirdn(x, k, up, pad)
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=str((up, pad)))

    def test_resample_paths_agree(self):
        g = torch.Generator()
        g.manual_seed(4)
        x = torch.randn(1, 2 * 5, 7, 7, generator=g)  # batch 2 folded into groups
        w = torch.randn(2 * 4, 5, 3, 3, generator=g)  # groups=2: [B*O, I, 3, 3]
        f = R.fir_kernel(1.0)
        a = R.conv2d_resample_nvidia(x, w, f, up=2, padding=1, groups=2, flip_weight=False,
                                     method="generic")
        b = R.conv2d_resample_nvidia(x, w, f, up=2, padding=1, groups=2, flip_weight=False,
                                     method="transpose")
        self.assertEqual(tuple(a.shape), (1, 8, 14, 14))
        self.assertLess(float((a - b).abs().max()), 1e-5)

    def test_layouts_agree(self):
        for res, kw in ((16, {}), (32, dict(channel_base=512)),
                        (64, dict(channel_base=1024, mapping_layers=3))):
            sd = tiny_sd(res, seed=res, **kw)
            g = torch.Generator()
            g.manual_seed(res)
            wp = torch.randn(2, R.num_ws(res), 32, generator=g)
            la = R.mean_latent(sd, n=256)
            d = R.self_check_layouts(sd, wp, la, atol=1e-5)
            self.assertLessEqual(d, 1e-5)

    def test_noise_and_clamp_matter(self):
        sd = tiny_sd()
        wp = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(1))
        a = R.synthesis(sd, wp, "const")
        b = R.synthesis(sd, wp, "none")
        self.assertGreater(float((a - b).abs().max()), 0.05)
        self.assertLess(float(a.abs().max()), 4.0)
        nv = R.to_nvidia(sd, torch.zeros(32))
        c = R.synthesis_nvidia(nv, wp, "const", conv_clamp=0.5)
        self.assertGreater(float((a - c).abs().max()), 0.05)
        self.assertLessEqual(float(c.abs().max()), 4.0)
        big = R.synthesis_nvidia(nv, wp, "const", conv_clamp=256)
        self.assertLess(float((a - big).abs().max()), 1e-5)

    def test_truncation(self):
        sd = tiny_sd()
        z = torch.randn(3, 32, generator=torch.Generator().manual_seed(2))
        avg = R.mean_latent(sd, n=128)
        w = R.mapping(sd, z)
        wt = R.mapping(sd, z, truncation=0.5, w_avg=avg)
        self.assertTrue(torch.allclose(wt, avg + 0.5 * (w - avg), atol=1e-6))
        nv = R.to_nvidia(sd, avg)
        wn = R.mapping_nvidia(nv, z, truncation_psi=0.5, num_ws=6, truncation_cutoff=2)
        self.assertTrue(torch.allclose(wn[:, 0], wt, atol=1e-5))
        self.assertTrue(torch.allclose(wn[:, 5], w, atol=1e-5))

    def test_nvidia_names_and_shapes(self):
        sd = tiny_sd()
        nv = R.to_nvidia(sd, torch.zeros(32))
        self.assertEqual(tuple(nv["synthesis.b4.const"].shape), (32, 4, 4))
        self.assertEqual(tuple(nv["synthesis.b4.conv1.weight"].shape), (32, 32, 3, 3))
        self.assertEqual(tuple(nv["synthesis.b8.conv0.weight"].shape), (16, 32, 3, 3))
        self.assertEqual(tuple(nv["synthesis.b16.conv1.noise_const"].shape), (16, 16))
        self.assertEqual(tuple(nv["synthesis.b16.conv1.noise_strength"].shape), ())
        self.assertEqual(tuple(nv["synthesis.b16.torgb.weight"].shape), (3, 8, 1, 1))
        self.assertEqual(tuple(nv["synthesis.b16.torgb.bias"].shape), (3,))
        self.assertEqual(tuple(nv["synthesis.b8.conv0.affine.weight"].shape), (32, 32))
        self.assertEqual(tuple(nv["mapping.w_avg"].shape), (32,))
        self.assertAlmostEqual(float(nv["synthesis.b8.resample_filter"].sum()), 1.0, places=6)
        self.assertNotIn("synthesis.b4.conv0.weight", nv)
        self.assertNotIn("synthesis.b4.torgb.resample_filter", nv)
        # noise_const wiring per legacy.py: b{R}.conv0 <- noise_{2log2R-5}, conv1 <- -4
        self.assertTrue(torch.equal(nv["synthesis.b8.conv0.noise_const"],
                                    sd["noises.noise_1"][0, 0]))
        self.assertTrue(torch.equal(nv["synthesis.b16.conv1.noise_const"],
                                    sd["noises.noise_4"][0, 0]))
        # no flip / transpose of the upsampling conv between the layouts
        self.assertTrue(torch.equal(nv["synthesis.b8.conv0.weight"],
                                    sd["convs.0.conv.weight"][0]))
        self.assertTrue(torch.equal(nv["mapping.fc1.weight"], sd["style.2.weight"]))
        self.assertEqual(list(nv)[0], "synthesis.b4.const")


def _normalise_key(blob):
    """Replace the storage key in a legacy stream with 'K' (fixing the length prefixes)."""
    m = re.search(rb"X(....)(\d+)q\x02", blob, re.S)
    key = m.group(2)
    old = b"X" + struct_len(len(key)) + key
    return blob.replace(old, b"X" + struct_len(1) + b"K")


def struct_len(n):
    import struct
    return struct.pack("<I", n)


def _ops(blob):
    out = []
    for op, arg, _ in pickletools.genops(blob):
        if op.name in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8") and arg[:2] == b"\x80\x02":
            arg = _normalise_key(arg)
        if op.name in ("BINPUT", "LONG_BINPUT", "MEMOIZE", "FRAME"):
            continue
        out.append((op.name, arg))
    return out


class SerialisationTest(unittest.TestCase):
    def test_storage_stream_is_torchs(self):
        t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
        real = pickle.dumps(t, protocol=3)
        real_stream = [a for op, a, _ in pickletools.genops(real) if op.name == "BINBYTES"][0]
        mine = R.storage_pickle_bytes(t.storage(), "K")
        self.assertEqual(_normalise_key(real_stream), mine)

    def test_tensor_pickles_as_torch(self):
        g = torch.Generator().manual_seed(0)
        objs = [torch.randn(3, 4, generator=g),
                torch.nn.Parameter(torch.randn(5, generator=g), requires_grad=False),
                torch.tensor(0.25),
                collections.OrderedDict(a=torch.randn(2, 2, generator=g), b=torch.zeros(0))]
        for proto in (3, 4):  # what pkls use (protocol 2 writes bytes via _codecs)
            for o in objs:
                self.assertEqual(_ops(R.deterministic_pickle_dumps(o, proto)),
                                 _ops(pickle.dumps(o, protocol=proto)), (proto, type(o)))
                back = pickle.loads(R.deterministic_pickle_dumps(o, proto))
                if isinstance(o, dict):
                    for k in o:
                        self.assertTrue(torch.equal(back[k], o[k]))
                else:
                    self.assertTrue(torch.equal(back, o))
                    self.assertEqual(type(back), type(o))

    def test_legacy_save_matches_torch(self):
        sd = tiny_sd()
        with tempfile.TemporaryDirectory() as d:
            mine, real = os.path.join(d, "a.pt"), os.path.join(d, "b.pt")
            obj = {"g_ema": sd, "latent_avg": torch.ones(32)}
            R.legacy_torch_save(obj, mine)
            torch.save(obj, real, _use_new_zipfile_serialization=False)
            a, b = read_bytes(mine), read_bytes(real)
            f = io.BytesIO(a)
            for _ in range(3):  # magic, protocol version, sys_info: byte-identical
                pickle.load(f)
            self.assertEqual(a[:f.tell()], b[:f.tell()])
            used = []

            class Reader(pickle.Unpickler):
                def persistent_load(self, pid):
                    self.assert_pid(pid)
                    if pid[2] not in used:
                        used.append(pid[2])
                    return torch.zeros(pid[4]).storage()

                @staticmethod
                def assert_pid(pid):
                    assert pid[0] == "storage" and pid[1] is torch.FloatStorage, pid
                    assert pid[3] == "cpu" and pid[5] is None, pid

            Reader(f).load()
            keys = pickle.load(f)
            self.assertEqual(keys, sorted(used))
            self.assertNotEqual(keys, used)  # data follow the sorted keys, not first use
            la, lb = torch.load(mine), torch.load(real)
            self.assertEqual(list(la["g_ema"].keys()), list(lb["g_ema"].keys()))
            for k in sd:
                self.assertTrue(torch.equal(la["g_ema"][k], lb["g_ema"][k]))
            self.assertTrue(torch.equal(la["latent_avg"], lb["latent_avg"]))

    def test_rosinality_files(self):
        sd = tiny_sd()
        avg = R.mean_latent(sd, n=64)
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "r.pt")
            R.write_rosinality(p, sd, avg)
            ck = torch.load(p)
            self.assertEqual(sorted(ck), ["g_ema", "latent_avg"])
            self.assertTrue(torch.equal(ck["latent_avg"], avg))
            self.assertIn("style.0", ck["g_ema"]._metadata)
            R.write_rosinality(p, sd, None, zip=False, wrap=False)
            ck = torch.load(p)
            self.assertEqual(list(ck), list(sd))
            R.write_rosinality(p, sd, None, with_training_junk=True, g_training="perturbed")
            ck = torch.load(p, weights_only=False)  # an argparse.Namespace: PyTorch 2.6 asks
            self.assertEqual(sorted(ck), ["ada_aug_p", "args", "d", "d_optim", "g", "g_ema",
                                          "g_optim"])
            self.assertEqual(type(ck["args"]).__name__, "Namespace")
            self.assertFalse(torch.equal(ck["g"]["style.1.weight"], sd["style.1.weight"]))
            for k in sd:
                self.assertTrue(torch.equal(ck["g_ema"][k], sd[k]))


LOADER = textwrap.dedent(r'''
    import collections, json, pickle, sys, types
    import numpy as np, torch

    EXECUTED = []

    def module(name):
        m = types.ModuleType(name)
        sys.modules[name] = m
        return m

    def reconstruct(meta):
        return ("PERSISTENT", meta)  # never exec(meta["module_src"])

    module("torch_utils"); module("torch_utils.persistence")._reconstruct_persistent_obj = \
        reconstruct
    module("dnnlib"); EasyDict = type("EasyDict", (dict,), {})
    module("dnnlib.util").EasyDict = EasyDict
    module("dnnlib.tflib")
    class Network(object):
        def __setstate__(self, state):
            self.state = state
    module("dnnlib.tflib.network").Network = Network
    class Opaque(object):
        pass
    module("training"); module("training.networks_opaque").DiscriminatorSnapshot = Opaque

    ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
        ("torch.storage", "_load_from_bytes"), ("collections", "OrderedDict"),
        ("builtins", "set"), ("numpy.core.multiarray", "scalar"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
        # numpy 2 (Debian 13) writes numpy._core
        ("numpy._core.multiarray", "scalar"), ("numpy._core.multiarray", "_reconstruct"),
        ("torch_utils.persistence", "_reconstruct_persistent_obj"),
        ("dnnlib.util", "EasyDict"), ("dnnlib.tflib.network", "Network"),
        ("training.networks_opaque", "DiscriminatorSnapshot"),
    }

    class Restricted(pickle.Unpickler):
        def find_class(self, mod, name):
            if (mod, name) not in ALLOWED:
                raise pickle.UnpicklingError("refused global %s.%s" % (mod, name))
            return super().find_class(mod, name)

    def flatten(obj, prefix, out, info):
        tag, meta = obj
        assert tag == "PERSISTENT"
        info.setdefault(prefix or "<root>", [meta["class_name"], meta["version"],
                                             meta["state"]["training"]])
        st = meta["state"]
        for k, v in st["_parameters"].items():
            out[prefix + k] = (v, "param", v.requires_grad, type(v).__name__)
        for k, v in st["_buffers"].items():
            out[prefix + k] = (v, "buffer", v.requires_grad, type(v).__name__)
        for k, v in st["_modules"].items():
            flatten(v, prefix + k + ".", out, info)

    path, mode = sys.argv[1], sys.argv[2]
    with open(path, "rb") as f:
        try:
            data = Restricted(f).load()
        except Exception as e:
            print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))
            sys.exit(0)
    if mode == "tf":
        G, D, Gs = data
        print(json.dumps({"type": type(Gs).__name__, "version": Gs.state["version"],
                          "vars": [n for n, _ in Gs.state["variables"]],
                          "numpy": type(Gs.state["variables"][1][1]).__name__}))
        sys.exit(0)
    out, info = collections.OrderedDict(), {}
    flatten(data["G_ema"], "", out, info)
    ref = torch.load(sys.argv[3]) if len(sys.argv) > 3 else {}
    diff = max([float((out[k][0] - ref[k]).abs().max()) if out[k][0].numel() else 0.0
                for k in ref] or [0.0])
    root = data["G_ema"][1]
    kw = root["state"]["_init_kwargs"]
    blocks = data["G_ema"][1]["state"]["_modules"]["synthesis"][1]["state"]["_modules"]
    act_gain = None
    if "b8" in blocks:
        act_gain = type(blocks["b8"][1]["state"]["_modules"]["conv1"][1]["state"]["act_gain"])
        act_gain = act_gain.__name__
    print(json.dumps({
        "top": sorted(data), "names": list(out), "diff": diff,
        "shapes": {k: list(v[0].shape) for k, v in out.items()},
        "kinds": {k: v[1] for k, v in out.items()},
        "requires_grad": sorted(set(v[2] for v in out.values())),
        "types": sorted(set(v[3] for v in out.values())),
        "class_names": sorted(set(v[0] for v in info.values())),
        "versions": sorted(set(v[1] for v in info.values())),
        "training": sorted(set(v[2] for v in info.values())),
        "init_kwargs_type": type(kw).__name__,
        "synthesis_kwargs_type": type(kw["synthesis_kwargs"]).__name__,
        "synthesis_kwargs": dict(kw["synthesis_kwargs"]),
        "c_dim": kw["c_dim"], "num_ws": root["state"]["num_ws"],
        "D": type(data["D"]).__name__,
        "tsk": type(data["training_set_kwargs"]).__name__,
        "tsk_max_size": type(data["training_set_kwargs"]["max_size"]).__name__,
        "tsk_mean_rgb": type(data["training_set_kwargs"]["mean_rgb"]).__name__,
        "act_gain": act_gain,
        "G_is_G_ema": data.get("G") is data["G_ema"],
        "src_head": root["module_src"][:30],
    }))
''')


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def read_json(path):
    with open(path) as f:
        return json.load(f)


def run_loader(path, mode="nvidia", ref=None):
    args = [sys.executable if sys.executable else "/usr/bin/python3", "-c", LOADER, path, mode]
    if ref:
        args.append(ref)
    p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise AssertionError("loader failed (%d): %s" % (p.returncode, p.stderr[-2000:]))
    return json.loads(p.stdout.strip().splitlines()[-1])


class NvidiaPickleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.sd = tiny_sd()
        cls.avg = R.mean_latent(cls.sd, n=64)
        cls.nv = R.to_nvidia(cls.sd, cls.avg)
        cls.ref = os.path.join(cls.tmp.name, "nv.pt")
        torch.save(dict(cls.nv), cls.ref)
        cls.ik = R.nvidia_init_kwargs(16, latent=32, mapping_layers=2, channel_base=128,
                                      channel_max=32, conv_clamp=0.5)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def test_roundtrip_protocols(self):
        for proto, g in ((3, "perturbed"), (4, "shared"), (4, "omit")):
            p = self.path("g%d%s.pkl" % (proto, g))
            R.write_nvidia_pkl(p, self.nv, self.ik, protocol=proto, g_training=g)
            r = run_loader(p, "nvidia", self.ref)
            self.assertNotIn("error", r)
            want_top = ["D", "G", "G_ema", "augment_pipe", "training_set_kwargs"]
            if g == "omit":
                want_top.remove("G")
            self.assertEqual(r["top"], want_top)
            self.assertEqual(sorted(r["names"]), sorted(self.nv))
            self.assertEqual(r["diff"], 0.0)
            self.assertEqual(r["shapes"]["synthesis.b8.conv0.noise_strength"], [])
            self.assertEqual(r["kinds"]["synthesis.b8.conv0.noise_const"], "buffer")
            self.assertEqual(r["kinds"]["mapping.w_avg"], "buffer")
            self.assertEqual(r["kinds"]["synthesis.b4.const"], "param")
            self.assertEqual(r["requires_grad"], [False])
            self.assertEqual(r["types"], ["Parameter", "Tensor"])
            self.assertEqual(r["versions"], [R.PERSISTENCE_VERSION])
            self.assertEqual(r["training"], [False])
            self.assertEqual(r["class_names"], ["FullyConnectedLayer", "Generator",
                                                "MappingNetwork", "SynthesisBlock",
                                                "SynthesisLayer", "SynthesisNetwork",
                                                "ToRGBLayer"])
            self.assertEqual(r["init_kwargs_type"], "dict")
            self.assertEqual(r["synthesis_kwargs_type"], "EasyDict")
            self.assertEqual(r["synthesis_kwargs"],
                             {"channel_base": 128, "channel_max": 32, "num_fp16_res": 0,
                              "conv_clamp": 0.5, "architecture": "skip"})
            self.assertEqual(r["num_ws"], 6)
            self.assertEqual(r["c_dim"], 0)
            self.assertEqual(r["D"], "Opaque")
            self.assertEqual(r["tsk"], "EasyDict")
            self.assertEqual(r["tsk_max_size"], "int64")
            self.assertEqual(r["tsk_mean_rgb"], "ndarray")
            self.assertEqual(r["act_gain"], "float64")
            self.assertTrue(r["src_head"].startswith("raise RuntimeError"))
            self.assertFalse(r["G_is_G_ema"])
        # 'shared': one copy of the tensors (G_ema refers to G's by memo)
        sizes = {g: os.path.getsize(self.path("g4%s.pkl" % g)) for g in ("shared", "omit")}
        self.assertLess(sizes["shared"], sizes["omit"] * 1.5)

    def test_module_src_raises_if_executed(self):
        for src in (R.NVIDIA_MODULE_SRC_SG2, R.NVIDIA_MODULE_SRC_SG3):
            with self.assertRaises(RuntimeError):
                exec(compile(src, "<module_src>", "exec"), {})

    def test_structure_opcodes(self):
        p = self.path("ops.pkl")
        blob = R.write_nvidia_pkl(p, self.nv, self.ik, protocol=3)
        globs = set()
        for op, arg, _ in pickletools.genops(blob):
            if op.name == "GLOBAL":
                globs.add(arg.replace("numpy._core.", "numpy.core."))  # numpy 2's module name
        self.assertEqual(globs, {
            "torch_utils.persistence _reconstruct_persistent_obj", "collections OrderedDict",
            "builtins set", "torch._utils _rebuild_parameter", "torch._utils _rebuild_tensor_v2",
            "torch.storage _load_from_bytes", "numpy.core.multiarray scalar", "numpy dtype",
            "dnnlib.util EasyDict", "numpy.core.multiarray _reconstruct", "numpy ndarray",
            "training.networks_opaque DiscriminatorSnapshot"})
        self.assertNotIn("dnnlib", sys.modules)  # fakes are removed after writing
        self.assertNotIn("torch_utils", sys.modules)
        self.assertEqual(blob.count(R.NVIDIA_MODULE_SRC_SG2.encode()), 1)  # memoised string

    def test_bad_pickles(self):
        p = self.path("os.pkl")
        R.write_os_system_pkl(p)
        r = run_loader(p)
        self.assertIn("refused global os.system", r["error"])
        self.assertEqual([a for op, a, _ in pickletools.genops(read_bytes(p))
                          if op.name == "GLOBAL"], ["os system"])
        p = self.path("tf.pkl")
        R.write_tensorflow_pkl(p)
        r = run_loader(p, "tf")
        self.assertEqual(r["type"], "Network")
        self.assertEqual(r["version"], 4)
        self.assertEqual(r["numpy"], "ndarray")
        t3, names, attrs = R.stylegan3_nvidia_tensors()
        p = self.path("sg3.pkl")
        R.write_nvidia_pkl(p, t3, R.stylegan3_init_kwargs(), kind="stylegan3",
                           class_names=names, attrs_fn=attrs, protocol=4)
        r = run_loader(p)
        self.assertIn("synthesis.input.affine.weight", r["names"])
        self.assertIn("synthesis.L0_36_16.weight", r["names"])
        self.assertEqual(r["kinds"]["synthesis.input.transform"], "buffer")
        self.assertIn("SynthesisInput", r["class_names"])
        nv_c = R.conditional_nvidia_tensors(self.nv, 4)
        ik = R.nvidia_init_kwargs(16, latent=32, mapping_layers=2, channel_base=128,
                                  channel_max=32, c_dim=4)
        p = self.path("cond.pkl")
        R.write_nvidia_pkl(p, nv_c, ik)
        r = run_loader(p)
        self.assertEqual(r["c_dim"], 4)
        self.assertEqual(r["shapes"]["mapping.embed.weight"], [32, 4])
        self.assertEqual(r["shapes"]["mapping.fc0.weight"], [32, 64])


class DeterminismTest(unittest.TestCase):
    def test_writers_deterministic(self):
        sd = tiny_sd()
        avg = R.mean_latent(sd, n=64)
        nv = R.to_nvidia(sd, avg)
        ik = R.nvidia_init_kwargs(16, latent=32, mapping_layers=2, channel_base=128,
                                  channel_max=32, conv_clamp=0.5)
        t3, names, attrs = R.stylegan3_nvidia_tensors()

        def write_all(d):
            R.write_rosinality(os.path.join(d, "a.pt"), sd, avg)
            R.write_rosinality(os.path.join(d, "b.pt"), sd, None, zip=False, wrap=False)
            R.write_rosinality(os.path.join(d, "c.pt"), sd, None, with_training_junk=True,
                               g_training="perturbed")
            R.write_nvidia_pkl(os.path.join(d, "d.pkl"), nv, ik, protocol=3)
            R.write_nvidia_pkl(os.path.join(d, "e.pkl"), nv, ik, protocol=4,
                               g_training="shared")
            R.write_nvidia_pkl(os.path.join(d, "f.pkl"), t3, R.stylegan3_init_kwargs(),
                               kind="stylegan3", class_names=names, attrs_fn=attrs)
            R.write_os_system_pkl(os.path.join(d, "g.pkl"))
            R.write_tensorflow_pkl(os.path.join(d, "h.pkl"))
            return sorted(os.listdir(d))

        with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
            files = write_all(d1)
            self.assertEqual(files, write_all(d2))
            for f in files:
                self.assertTrue(filecmp.cmp(os.path.join(d1, f), os.path.join(d2, f),
                                            shallow=False), f)

    def test_fixture_case(self):
        import make_fixtures as M
        with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
            for d in (d1, d2):
                with torch.no_grad(), open(os.devnull, "w") as null:
                    old, sys.stdout = sys.stdout, null
                    try:
                        M.make_sg2_case(d, "sg2_r16")
                        M.make_sg2_bad_case(d)
                    finally:
                        sys.stdout = old
            for sub in ("sg2_r16", "sg2_bad"):
                c = filecmp.dircmp(os.path.join(d1, sub), os.path.join(d2, sub))
                self.assertEqual(c.left_only + c.right_only, [])
                for f in c.common_files:
                    self.assertTrue(filecmp.cmp(os.path.join(d1, sub, f),
                                                os.path.join(d2, sub, f), shallow=False), f)
            case = os.path.join(d1, "sg2_r16")
            meta = read_json(os.path.join(case, "meta.json"))
            self.assertEqual(meta["num_ws"], 6)
            self.assertEqual(meta["channels"], {"4": 32, "8": 16, "16": 8})
            self.assertEqual(sorted(os.listdir(case)), sorted(meta["files"]))
            self.assertEqual(np.load(os.path.join(case, "wplus.npy")).shape, (2, 6, 32))
            self.assertEqual(np.load(os.path.join(case, "img_const_clamp.npy")).shape,
                             (2, 3, 16, 16))
            noise = np.load(os.path.join(case, "noise.npz"))
            self.assertEqual(sorted(noise.files), ["noise_%d" % i for i in range(5)])
            ck = torch.load(os.path.join(case, "rosinality.pt"))
            self.assertTrue(np.array_equal(ck["latent_avg"].numpy(),
                                           np.load(os.path.join(case, "latent_avg.npy"))))
            bad = read_json(os.path.join(d1, "sg2_bad", "meta.json"))
            self.assertEqual(sorted(os.listdir(os.path.join(d1, "sg2_bad"))),
                             sorted(list(bad["files"]) + ["meta.json"]))


if __name__ == "__main__":
    unittest.main()

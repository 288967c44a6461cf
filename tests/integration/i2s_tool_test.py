#!/usr/bin/python3
"""Black-box tests of the i2s_tool CLI against files written by PyTorch itself.

Run by CTest (test `i2s_tool_cli`) after the `oracle_fixtures` fixture:
  i2s_tool_test.py --tool build/tools/i2s_tool --fixtures build/oracle_fixtures --work DIR
Uses Debian's python3 with python3-torch and numpy.
"""
import argparse
import collections
import json
import os
import pickle
import signal
import struct
import shutil
import subprocess
import sys
import unittest

import numpy as np
import torch

ARGS = None


def run(*args, expect=0):
    proc = subprocess.run([ARGS.tool, *map(str, args)], capture_output=True, text=True, timeout=600)
    if expect is not None and proc.returncode != expect:
        raise AssertionError("i2s_tool %s: exit %d, expected %d\nstdout: %s\nstderr: %s" %
                             (" ".join(map(str, args)), proc.returncode, expect, proc.stdout, proc.stderr))
    return proc


def fixture(name):
    return os.path.join(ARGS.fixtures, name)


def work(name):
    return os.path.join(ARGS.work, name)


def info(path):
    out = run("info", path).stdout
    return dict(line.split(": ", 1) for line in out.strip().splitlines())


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


class ToolTest(unittest.TestCase):
    def test_info_reports_published_layout(self):
        legacy = info(fixture("gen_r1024.legacy.pt"))
        self.assertEqual(legacy["kind"], "stylegan1-generator")
        self.assertEqual(legacy["layout"], "torch.save legacy")
        self.assertEqual(legacy["resolution"], "1024")
        self.assertEqual(legacy["num_layers"], "18")
        self.assertEqual(legacy["tensors"], "116")
        sd = torch.load(fixture("gen_r1024.zip.pt"))
        self.assertEqual(int(legacy["parameters"]), sum(t.numel() for t in sd.values()))
        zipped = info(fixture("gen_r1024.zip.pt"))
        self.assertEqual(zipped["layout"], "torch.save zip")
        self.assertEqual(zipped["fingerprint"], legacy["fingerprint"])
        self.assertTrue(legacy["fingerprint"].startswith("sha256:"))
        vgg = info(fixture("vgg.zip.pth"))
        self.assertEqual(vgg["kind"], "vgg16-features")

    def test_synth_1024_legacy_matches_pytorch(self):
        # The check: a 1024 generator in the legacy layout, written by PyTorch,
        # renders the same image as the PyTorch program for the same W+ and noise.
        out = work("r1024.npy")
        run("synth", "--generator", fixture("gen_r1024.legacy.pt"), "--latent",
            fixture("gen_r1024.wplus.npy"), "--noise", fixture("gen_r1024.noise.npz"), "--out", out)
        got = np.load(out)
        want = np.load(fixture("gen_r1024.img_noise.npy"))
        self.assertEqual(got.shape, (1, 3, 1024, 1024))
        self.assertLessEqual(float(np.abs(got - want).max()), 1e-3)
        run("synth", "--generator", fixture("gen_r128.zip.pt"), "--latent",
            fixture("gen_r128.wplus.npy"), "--noise", "zero", "--out", out)
        # 5e-4 on values up to ~20 (float32 rounding through 13 layers): PyPI's LibTorch 2.11
        # on an AMD EPYC without AVX-512 differs by 1.25e-4 here, Debian's 1.13 by less.
        np.testing.assert_allclose(np.load(out), np.load(fixture("gen_r128.img_nonoise.npy")), atol=5e-4, rtol=0)

    def test_synth_png_one_per_image(self):
        proc = run("synth", "--generator", fixture("gen_r128.legacy.pt"), "--latent",
                   fixture("gen_r128.wplus.npy"), "--out", work("img.png"))
        paths = proc.stdout.split()
        self.assertEqual(paths, [work("img-0.png"), work("img-1.png")])
        for p in paths:
            self.assertEqual(png_size(p), (128, 128))
        single = np.load(fixture("gen_r128.wplus.npy"))[0]  # [L, 512]
        np.save(work("single.npy"), single)
        run("synth", "--generator", fixture("gen_r128.legacy.pt"), "--latent", work("single.npy"),
            "--out", work("single.png"))
        self.assertEqual(png_size(work("single.png")), (128, 128))

    def test_random_noise_is_seeded(self):
        args = ["synth", "--generator", fixture("gen_r32.zip.pt"), "--latent", fixture("gen_r32.wplus.npy")]
        run(*args, "--noise-seed", "5", "--out", work("a.npy"))
        run(*args, "--noise-seed", "5", "--out", work("b.npy"))
        run(*args, "--noise-seed", "6", "--out", work("c.npy"))
        np.testing.assert_array_equal(np.load(work("a.npy")), np.load(work("b.npy")))
        self.assertGreater(float(np.abs(np.load(work("a.npy")) - np.load(work("c.npy"))).max()), 1e-3)

    def test_map_matches_pytorch(self):
        run("map", "--generator", fixture("gen_r32.legacy.pt"), "--z", fixture("gen_r32.z.npy"), "--out", work("w.npy"))
        np.testing.assert_allclose(np.load(work("w.npy")), np.load(fixture("gen_r32.w.npy")), atol=1e-4, rtol=0)

    def test_random_models_load_in_pytorch(self):
        for legacy in (False, True):
            path = work("rand_%s.pt" % ("legacy" if legacy else "zip"))
            args = ["random-model", "--resolution", "64", "--fmap-base", "256", "--fmap-max", "64", "--seed", "9",
                    "--out", path] + (["--legacy"] if legacy else [])
            fingerprint = run(*args).stdout.split()[1]
            with open(path, "rb") as f:
                self.assertEqual(f.read(2) == b"PK", not legacy)
            sd = torch.load(path)
            self.assertIsInstance(sd, collections.OrderedDict)
            self.assertEqual(len(sd), 16 + 10 + 4 * 11 + 2)
            self.assertEqual(tuple(sd["g_synthesis.blocks.64x64.conv1.weight"].shape), (8, 8, 3, 3))
            self.assertTrue(all(torch.isfinite(t).all() for t in sd.values()))
            self.assertEqual(info(path)["fingerprint"], fingerprint)
        self.assertEqual(info(work("rand_zip.pt"))["fingerprint"], info(work("rand_legacy.pt"))["fingerprint"])
        vgg = work("rand_vgg.pth")
        run("random-model", "--kind", "vgg16", "--seed", "1", "--out", vgg)
        self.assertEqual(len(torch.load(vgg)), 26)


def sg2(case, name):
    return os.path.join(ARGS.fixtures, case, name)


def rel_diff(got, want):
    """Max abs difference as a fraction of the reference image's range."""
    return float(np.abs(got - want).max() / (want.max() - want.min()))


class StyleGan2ToolTest(unittest.TestCase):
    """StyleGAN2 files written by the independent oracle (tests/oracle/stylegan2_ref.py):
    rosinality checkpoints and NVIDIA-structured pickles, identified from their content."""

    def test_info_describes_both_formats(self):
        nv = info(sg2("sg2_r1024_f", "nvidia.pkl"))
        self.assertEqual(nv["kind"], "stylegan2-generator")
        self.assertIn("NVIDIA", nv["layout"])
        self.assertEqual(nv["resolution"], "1024")
        self.assertEqual(nv["num_layers"], "18")
        self.assertEqual(nv["num_noise_maps"], "17")
        self.assertEqual(nv["channels"], "512,512,512,512,512,256,128,64,32")
        self.assertEqual(nv["conv_clamp"], "256")
        self.assertEqual(nv["mean_w"], "from the file")
        self.assertEqual(nv["tensors"], "171")
        ros = info(sg2("sg2_r1024_f", "rosinality.pt"))
        self.assertIn("rosinality", ros["layout"])
        self.assertEqual(ros["conv_clamp"], "none")
        # A clamp is part of the function, so it is part of the fingerprint.
        self.assertNotEqual(ros["fingerprint"], nv["fingerprint"])
        legacy = info(sg2("sg2_r32_cm1", "rosinality_legacy.pt"))
        self.assertEqual(legacy["mean_w"], "none")
        unclamped = info(sg2("sg2_r32_cm1", "nvidia.pkl"))
        self.assertEqual(unclamped["fingerprint"], legacy["fingerprint"])

    def test_synth_and_map_match_the_reference(self):
        for f in ("nvidia.pkl", "rosinality_train.pt"):
            out = work("sg2_" + f + ".npy")
            run("synth", "--generator", sg2("sg2_r32_cm1", f), "--latent",
                sg2("sg2_r32_cm1", "wplus.npy"), "--out", out)  # --noise auto: const
            self.assertLessEqual(rel_diff(np.load(out), np.load(sg2("sg2_r32_cm1", "img_const.npy"))), 1e-4)
            run("synth", "--generator", sg2("sg2_r32_cm1", f), "--latent",
                sg2("sg2_r32_cm1", "wplus.npy"), "--noise", "zero", "--out", out)
            self.assertLessEqual(rel_diff(np.load(out), np.load(sg2("sg2_r32_cm1", "img_none.npy"))), 1e-4)
            run("map", "--generator", sg2("sg2_r32_cm1", f), "--z", sg2("sg2_r32_cm1", "z.npy"),
                "--out", work("sg2_w.npy"))
            np.testing.assert_allclose(np.load(work("sg2_w.npy")), np.load(sg2("sg2_r32_cm1", "w.npy")),
                                       atol=1e-4, rtol=0)

    def test_random_stylegan2_model_is_a_rosinality_checkpoint(self):
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "oracle"))
        import stylegan2_ref as ref
        for legacy in (False, True):
            path = work("rand_sg2_%s.pt" % ("legacy" if legacy else "zip"))
            fingerprint = run("random-model", "--arch", "stylegan2", "--resolution", "32",
                              "--fmap-base", "128", "--seed", "3", "--out", path,
                              *(["--legacy"] if legacy else [])).stdout.split()[1]
            ckpt = torch.load(path)
            self.assertEqual(sorted(ckpt), ["g_ema", "latent_avg"])
            g = ckpt["g_ema"]
            self.assertEqual(len(g), len(ref.rosinality_shapes(32, latent=512, mapping_layers=8)))
            self.assertEqual(tuple(g["convs.0.conv.weight"].shape), (1, 32, 64, 3, 3))  # min(2 * 128 / res, 512)
            self.assertEqual(info(path)["fingerprint"], fingerprint)
            self.assertEqual(info(path)["mean_w"], "from the file")
            # The independent oracle renders the file's weights as i2s_tool does.
            wplus = torch.randn(2, ref.num_ws(32), 512, generator=torch.Generator().manual_seed(1))
            np.save(work("sg2_rand_wplus.npy"), wplus.numpy())
            run("synth", "--generator", path, "--latent", work("sg2_rand_wplus.npy"), "--noise",
                "const", "--out", work("sg2_rand.npy"))
            with torch.no_grad():
                want = ref.synthesis(g, wplus, noise="const").numpy()
            self.assertLessEqual(rel_diff(np.load(work("sg2_rand.npy")), want), 1e-4)
            # latent_avg: the mapping's mean over 4096 z drawn from seed ^ 0x5eed (the same
            # CPU generator in LibTorch and PyTorch).
            z = torch.randn(4096, 512, generator=torch.Generator().manual_seed(3 ^ 0x5eed))
            with torch.no_grad():
                mean = ref.mapping(g, z).mean(0)
            np.testing.assert_allclose(ckpt["latent_avg"].numpy(), mean.numpy(), atol=1e-4, rtol=1e-4)

    def test_projected_w_npz_in_and_out(self):
        # NVIDIA's projector writes np.savez(projected_w.npz, w=[1, num_ws, 512]).
        gen = sg2("sg2_r32_cm1", "rosinality.pt")
        wplus = np.load(sg2("sg2_r32_cm1", "wplus.npy"))[:1]
        np.savez(work("projected_w.npz"), w=wplus)
        run("synth", "--generator", gen, "--latent", work("projected_w.npz"), "--out", work("pw.npy"))
        run("synth", "--generator", gen, "--latent", sg2("sg2_r32_cm1", "wplus.npy"), "--out",
            work("pw_ref.npy"))
        # One image alone vs the first of a batch of two: equal up to float rounding.
        np.testing.assert_allclose(np.load(work("pw.npy"))[0], np.load(work("pw_ref.npy"))[0],
                                   atol=1e-5, rtol=0)
        run("map", "--generator", gen, "--random", "1", "--seed", "2", "--wplus", "--out", work("mapped.npz"))
        with np.load(work("mapped.npz")) as z:
            self.assertEqual(list(z.keys()), ["w"])
            self.assertEqual(z["w"].shape, (1, 8, 64))  # 32x32: num_ws 8
            self.assertEqual(z["w"].dtype, np.float32)
        np.savez(work("wrong.npz"), dlatents=wplus)
        proc = run("synth", "--generator", gen, "--latent", work("wrong.npz"), "--out", work("x.npy"), expect=1)
        self.assertIn("member 'w'", proc.stderr)

    def test_refusals_say_what_the_file_holds(self):
        for name, words in (("stylegan3.pkl", ["StyleGAN3"]), ("tensorflow.pkl", ["TensorFlow"]),
                            ("conditional.pkl", ["conditional"]), ("os_system.pkl", ["os.system"])):
            proc = run("info", sg2("sg2_bad", name), expect=1)
            for w in words:
                self.assertIn(w, proc.stderr, name)

    def test_embed_stylegan2_in_domain(self):
        # An image the generator made (known W+, constant noise) is found again: in-domain
        # inversion on a small random StyleGAN2, pixel loss, Image2StyleGAN's schedule.
        model = work("sg2_embed.pt")
        run("random-model", "--arch", "stylegan2", "--resolution", "32", "--fmap-base", "64",
            "--seed", "4", "--out", model)
        run("map", "--generator", model, "--random", "1", "--seed", "8", "--wplus",
            "--out", work("sg2_target_w.npy"))
        run("synth", "--generator", model, "--latent", work("sg2_target_w.npy"), "--out",
            work("sg2_target.png"))
        proc = run("embed", "--generator", model, "--vgg", fixture("vgg.zip.pth"), "--image",
                   work("sg2_target.png"), "--steps", "150", "--w-perceptual", "0",
                   "--log-every", "1", "--out", work("sg2_found.npy"), "--threads", "2")
        psnrs = [float(line.split(" psnr ")[1].split()[0]) for line in proc.stdout.splitlines()
                 if line.startswith("step ")]
        self.assertEqual(len(psnrs), 150)
        print(f"StyleGAN2 in-domain inversion: PSNR {psnrs[0]:.1f} -> {psnrs[-1]:.1f} dB", file=sys.stderr)
        self.assertGreater(psnrs[-1], psnrs[0] + 5)
        self.assertGreater(psnrs[-1], 25)


def skimage_photo(name):
    """A photo shipped by Debian's python3-skimage (not made by this project)."""
    import skimage.data
    path = os.path.join(os.path.dirname(skimage.data.__file__), name)
    assert os.path.exists(path), path
    return path


CHELSEA = skimage_photo("chelsea.png")


class EmbedAndEditTest(unittest.TestCase):
    def test_cat_photo_embeds_with_finite_decreasing_loss(self):
        # A photo nobody here made, 451x300, cropped and resized to the 32x32 model.
        proc = run("embed", "--generator", fixture("gen_r32.zip.pt"), "--vgg", fixture("vgg.zip.pth"),
                   "--image", CHELSEA, "--steps", "40", "--noise-steps", "10", "--mean-w-samples", "1000",
                   "--log-every", "1", "--out", work("cat.npy"), "--recon", work("cat.png"),
                   "--noise-out", work("cat_noise.npz"), "--threads", "2")
        losses = [float(line.split(" loss ")[1].split()[0]) for line in proc.stdout.splitlines()
                  if line.startswith("step ")]
        self.assertEqual(len(losses), 50)
        self.assertTrue(all(np.isfinite(losses)))
        self.assertLess(losses[39], 0.5 * losses[0])  # the W+ phase
        self.assertLess(losses[-1], losses[40])       # the noise phase (pixel loss only)
        self.assertIn("done: 50 steps", proc.stdout)
        latent = np.load(work("cat.npy"))
        self.assertEqual(latent.shape, (8, 512))
        self.assertEqual(png_size(work("cat.png")), (32, 32))
        # The stored latent and noise reproduce the reconstruction exactly.
        run("synth", "--generator", fixture("gen_r32.zip.pt"), "--latent", work("cat.npy"),
            "--noise", work("cat_noise.npz"), "--out", work("cat_again.png"))
        with open(work("cat.png"), "rb") as a, open(work("cat_again.png"), "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_mean_w_is_cached_by_fingerprint_and_changes_nothing(self):
        # gen_r32 has no mean w of its own: the first embed computes it and keeps it in
        # $I2S_CACHE_DIR, a second one reads it; --cache-dir none neither reads nor writes.
        cache = os.path.join(ARGS.work, "cache-mean-w")
        shutil.rmtree(cache, ignore_errors=True)  # an earlier run's, in the same work folder
        args = ["embed", "--generator", fixture("gen_r32.zip.pt"), "--vgg", fixture("vgg.zip.pth"),
                "--image", CHELSEA, "--steps", "5", "--mean-w-samples", "700", "--threads", "2"]
        run(*args, "--cache-dir", "none", "--out", work("mean_none.npy"))
        self.assertFalse(os.path.exists(cache))
        run(*args, "--cache-dir", cache, "--out", work("mean_first.npy"))
        files = os.listdir(cache)
        self.assertEqual(len(files), 1)
        self.assertRegex(files[0], r"^mapping-stats-[0-9a-f]{64}-cpu-700\.txt$")
        run(*args, "--cache-dir", cache, "--out", work("mean_second.npy"))
        first = np.load(work("mean_first.npy"))
        np.testing.assert_array_equal(first, np.load(work("mean_none.npy")))
        np.testing.assert_array_equal(first, np.load(work("mean_second.npy")))

    def interrupted_embed(self, signals):
        """Starts a long embed in a process whose threads started before main with every
        signal unblocked (tests/support/early_threads.cc), sends `signals` once it steps."""
        out = work("interrupted.npy")
        if os.path.exists(out):
            os.remove(out)
        env = dict(os.environ, LD_PRELOAD=os.environ["I2S_EARLY_THREADS"])
        proc = subprocess.Popen(  # killed in the finally below if it outlives the test
            [ARGS.tool, "embed", "--generator", fixture("gen_r32.zip.pt"), "--vgg",
             fixture("vgg.zip.pth"), "--image", CHELSEA, "--steps", "100000", "--mean-w-samples",
             "100", "--log-every", "1", "--out", out, "--threads", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            while not proc.stdout.readline().startswith("step "):
                if proc.poll() is not None:
                    self.fail(f"i2s_tool exited with {proc.returncode}: {proc.stderr.read()}")
            # stdout is read to its end below (communicate); until then the pipe may fill,
            # which only pauses the tool's step lines, not the signal handling.
            for sig in signals:
                proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.assertFalse(os.path.exists(out))
        return proc.returncode, err

    def test_ctrl_c_stops_embed_before_the_next_step_and_writes_nothing(self):
        code, err = self.interrupted_embed([signal.SIGINT])
        self.assertEqual(code, 130, err)
        self.assertIn("SIGINT: stopping before the next step", err)
        self.assertIn("embedding stopped, nothing written", err)

    def test_a_second_signal_quits_at_once(self):
        code, err = self.interrupted_embed([signal.SIGTERM, signal.SIGTERM])
        self.assertEqual(code, 143, err)
        self.assertIn("SIGTERM: stopping before the next step", err)
        # Either the second signal ended it at once, or the step ended first (a race the
        # test cannot order); both exit 143 and write nothing.
        self.assertTrue("SIGTERM: interrupted" in err or "nothing written" in err, err)

    def test_embed_aligned_face(self):
        # FFHQ alignment before embedding: the face found in the astronaut, the record written.
        astronaut = skimage_photo("astronaut.png")
        proc = run("embed", "--generator", fixture("gen_r32.zip.pt"), "--vgg", fixture("vgg.zip.pth"),
                   "--image", astronaut, "--steps", "3", "--mean-w-samples", "100", "--align", "auto",
                   "--align-info", work("astro_align.json"), "--out", work("astro.npy"),
                   "--recon", work("astro.png"))
        self.assertIn("aligned (haar, confidence", proc.stdout)
        with open(work("astro_align.json")) as f:
            info = json.load(f)
        self.assertEqual((info["method"], info["size"]), ("haar", 32))
        self.assertEqual(len(info["transform"]), 6)
        self.assertEqual(np.load(work("astro.npy")).shape, (8, 512))
        # A cat has no human face: refused, or the plain crop when asked.
        bad = run("embed", "--generator", fixture("gen_r32.zip.pt"), "--vgg", fixture("vgg.zip.pth"),
                  "--image", CHELSEA, "--steps", "1", "--align", "auto", "--out", work("x.npy"), expect=1)
        self.assertIn("no face found", bad.stderr)
        self.assertIn("--fit-when-no-face", bad.stderr)
        proc = run("embed", "--generator", fixture("gen_r32.zip.pt"), "--vgg", fixture("vgg.zip.pth"),
                   "--image", CHELSEA, "--steps", "1", "--mean-w-samples", "100", "--align", "auto",
                   "--fit-when-no-face", "--out", work("cat1.npy"))
        self.assertIn("not aligned (image: no face found", proc.stdout)
        bad = run("embed", "--generator", fixture("gen_r32.zip.pt"), "--vgg", fixture("vgg.zip.pth"),
                  "--image", astronaut, "--align", "auto", "--mask", astronaut, "--out", work("x.npy"),
                  expect=1)
        self.assertIn("--mask: masks are fitted like the photo", bad.stderr)

    def test_edits_render(self):
        gen = fixture("gen_r32.zip.pt")
        w = np.load(fixture("gen_r32.wplus.npy"))  # [2, 8, 512]
        np.save(work("a.npy"), w[0])
        np.save(work("b.npy"), w[1])
        proc = run("morph", "--generator", gen, "--a", work("a.npy"), "--b", work("b.npy"), "--frames", "5",
                   "--out", work("morph.png"), "--latent-out", work("morph.npy"))
        self.assertEqual(len(proc.stdout.split()), 5)
        frames = np.load(work("morph.npy"))
        np.testing.assert_allclose(frames[0], w[0], atol=1e-6)
        np.testing.assert_allclose(frames[2], (w[0] + w[1]) / 2, atol=1e-5)
        np.testing.assert_allclose(frames[4], w[1], atol=1e-5)
        run("stylemix", "--generator", gen, "--content", work("a.npy"), "--style", work("b.npy"),
            "--crossover", "3", "--out", work("mix.npy"), "--latent-out", work("mix_w.npy"))
        mixed = np.load(work("mix_w.npy"))[0]
        np.testing.assert_array_equal(mixed[:3], w[0][:3])
        np.testing.assert_array_equal(mixed[3:], w[1][3:])
        run("expression", "--generator", gen, "--target", work("a.npy"), "--neutral", work("a.npy"),
            "--expression", work("b.npy"), "--lambda", "0.5", "--first-layer", "2", "--last-layer", "4",
            "--out", work("expr.png"), "--latent-out", work("expr_w.npy"))
        e = np.load(work("expr_w.npy"))[0]
        np.testing.assert_allclose(e[2:5], w[0][2:5] + 0.5 * (w[1][2:5] - w[0][2:5]), atol=1e-5)
        np.testing.assert_array_equal(e[5:], w[0][5:])
        bad = run("stylemix", "--generator", gen, "--content", work("a.npy"), "--style", work("b.npy"),
                  "--crossover", "9", "--out", work("x.png"), expect=1)
        self.assertIn("crossover: 9 is outside [0, 8]", bad.stderr)
        bad = run("embed", "--generator", gen, "--vgg", fixture("vgg.zip.pth"), "--image", work("absent.png"),
                  "--out", work("x.npy"), expect=1)
        self.assertIn("cannot read or decode", bad.stderr)
        bad = run("embed", "--generator", gen, "--vgg", fixture("vgg.zip.pth"), "--image", CHELSEA,
                  "--lr", "0", "--out", work("x.npy"), expect=1)
        self.assertIn("lr: must be positive", bad.stderr)


class MalformedInputTest(unittest.TestCase):
    def expect_error(self, args, *needles):
        proc = run(*args, expect=1)
        for needle in needles:
            self.assertIn(needle, proc.stderr)
        self.assertNotIn("internal error", proc.stderr)
        return proc.stderr

    def test_truncated_files(self):
        for name in ("gen_r32.legacy.pt", "gen_r32.zip.pt"):
            with open(fixture(name), "rb") as f:
                data = f.read()
            for cut in (10, len(data) // 3, len(data) - 7):
                path = work("trunc_%d_%s" % (cut, name))
                with open(path, "wb") as f:
                    f.write(data[:cut])
                self.expect_error(["info", path], path)

    def test_not_a_state_dict(self):
        path = work("list.pt")
        torch.save([torch.zeros(2)], path)
        self.expect_error(["info", path], path, "not a state dict")
        path = work("module.pt")
        torch.save({"w": torch.zeros(2), "step": 3}, path)
        self.expect_error(["info", path], "entry 'step' is a int, not a tensor")
        path = work("text.pt")
        with open(path, "w") as f:
            f.write("hello")
        self.expect_error(["info", path], "not a torch.save file")
        self.expect_error(["info", work("absent.pt")], "cannot open")

    def test_pickle_that_runs_code_is_refused(self):
        class Evil:
            def __reduce__(self):
                return (os.system, ("echo pwned",))
        path = work("evil.pt")
        with open(path, "wb") as f:
            pickle.dump({"x": Evil()}, f, protocol=2)
        err = self.expect_error(["info", path])
        self.assertNotIn("pwned", err)

    def test_missing_unexpected_and_misshaped_keys(self):
        sd = torch.load(fixture("gen_r32.zip.pt"))
        missing = collections.OrderedDict(sd)
        del missing["g_synthesis.blocks.16x16.conv1.bias"]
        torch.save(missing, work("missing.pt"), _use_new_zipfile_serialization=False)
        self.expect_error(["info", work("missing.pt")], work("missing.pt"),
                          "missing key 'g_synthesis.blocks.16x16.conv1.bias'")
        shaped = collections.OrderedDict(sd)
        shaped["g_synthesis.torgb.weight"] = torch.zeros(3, 7, 1, 1)
        torch.save(shaped, work("shaped.pt"))
        self.expect_error(["info", work("shaped.pt")],
                          "key 'g_synthesis.torgb.weight' has shape [3, 7, 1, 1], expected [3, 16, 1, 1]")
        extra = collections.OrderedDict(sd)
        extra["g_synthesis.extra"] = torch.zeros(1)
        torch.save(extra, work("extra.pt"))
        self.expect_error(["info", work("extra.pt")], "unexpected key 'g_synthesis.extra'")
        other = collections.OrderedDict(x=torch.zeros(1))
        torch.save(other, work("other.pt"))
        self.expect_error(["info", work("other.pt")], "first key 'x'")

    def test_bad_latents(self):
        gen = fixture("gen_r32.zip.pt")
        np.save(work("f64.npy"), np.zeros((8, 512), dtype=np.float64))
        self.expect_error(["synth", "--generator", gen, "--latent", work("f64.npy"), "--out", work("x.png")],
                          "'<f8'", "float32")
        np.save(work("fortran.npy"), np.asfortranarray(np.zeros((8, 512), dtype=np.float32)))
        self.expect_error(["synth", "--generator", gen, "--latent", work("fortran.npy"), "--out", work("x.png")],
                          "Fortran")
        np.save(work("rows.npy"), np.zeros((7, 512), dtype=np.float32))
        self.expect_error(["synth", "--generator", gen, "--latent", work("rows.npy"), "--out", work("x.png")],
                          "expected [8, 512] or [N, 8, 512]")
        nan = np.zeros((8, 512), dtype=np.float32)
        nan[3, 3] = np.nan
        np.save(work("nan.npy"), nan)
        self.expect_error(["synth", "--generator", gen, "--latent", work("nan.npy"), "--out", work("x.png")],
                          "NaN")
        with open(work("header.npy"), "wb") as f:
            f.write(b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4'}")
        self.expect_error(["synth", "--generator", gen, "--latent", work("header.npy"), "--out", work("x.png")],
                          "bad .npy header")
        self.expect_error(["synth", "--generator", gen, "--latent", fixture("gen_r32.wplus.npy"),
                           "--out", work("x.bmp")], "--out")

    def test_usage_errors_exit_2(self):
        self.assertEqual(run(expect=None).returncode, 2)
        self.assertEqual(run("synth", "--generator", "x", expect=None).returncode, 2)
        self.assertEqual(run("random-model", "--kind", "gan", "--out", "x", expect=None).returncode, 2)


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--tool", required=True)
    parser.add_argument("--fixtures", required=True)
    parser.add_argument("--work", required=True)
    ARGS, rest = parser.parse_known_args()
    os.makedirs(ARGS.work, exist_ok=True)
    # embed's mean-w cache goes to the work folder, not the user's ~/.cache.
    os.environ["I2S_CACHE_DIR"] = os.path.join(ARGS.work, "cache")
    torch.set_num_threads(2)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()

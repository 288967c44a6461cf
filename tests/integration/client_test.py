"""i2s_client against a real i2s_server on loopback: every subcommand's happy path, the
--json documents (checked against what the server says through independent Python
stubs), exit codes for each failure class, no control codes off a terminal, Ctrl-C
detach / cancel, and (under tmux) the live progress display and the Ctrl-C prompt.

Run: client_test.py --client build/client/i2s_client --server build/server/i2s_server
                    --proto proto --work DIR [unittest args]
"""

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import i2s_harness as h  # noqa: E402

ARGS = None
pb = None
SERVER = None
ESC = "\x1b"
FAST = ["--w-perceptual", "0", "--lr", "0.05"]  # pixel loss only: the quickest embedding
# The server's detector: MTCNN where its weights are installed (I2S_MTCNN_DIR), else Haar.
DETECTOR = "mtcnn" if os.environ.get("I2S_MTCNN_DIR") else "haar"


def setUpModule():
    global pb, SERVER
    h.generate_stubs(ARGS.proto, os.path.join(ARGS.work, "stubs"))
    from i2s.v1 import i2s_pb2
    pb = i2s_pb2
    d = os.path.join(ARGS.work, "server")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    SERVER = h.Server(ARGS.server, d, extra=["--heartbeat-seconds", "1"]).start()


def tearDownModule():
    if SERVER is not None:
        SERVER.stop()


def image(name):
    return os.path.join(h.SKIMAGE_DATA, name)


def run(*args, server=None, check=None, timeout=300, env=None, cwd=None):
    """Runs i2s_client; returns CompletedProcess (text). `check` = expected exit code."""
    server = server or f"127.0.0.1:{SERVER.port}"
    e = dict(os.environ, **(env or {}))
    e.pop("I2S_SERVER", None)
    p = subprocess.run([ARGS.client, "--server", server, *args], capture_output=True, text=True,
                       timeout=timeout, env=e, cwd=cwd)
    if check is not None and p.returncode != check:
        raise AssertionError(f"i2s_client {' '.join(args)}: exit {p.returncode}, wanted {check}\n"
                             f"stdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def docs(p):
    """The JSON documents of a --json run, one per line."""
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


class ClientTest(unittest.TestCase):

    def setUp(self):
        self.dir = os.path.join(ARGS.work, self.id().split(".")[-1])
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.stub = SERVER.stub()
        # Runs after the test's own cleanups (those kill its client processes first).
        self.addCleanup(self.end_leftover_jobs)

    def end_leftover_jobs(self):
        """Cancels what a test left queued or running on the shared server (a test that
        failed midway, before it ended its long jobs): the next tests must not share the
        device with them."""
        left = self.stub.ListJobs(pb.ListJobsRequest(page_size=1000,
                                                     states=[pb.QUEUED, pb.RUNNING]),
                                  timeout=60).jobs
        for job in left:
            try:
                self.stub.CancelJob(pb.CancelJobRequest(job_id=job.id), timeout=60)
            except Exception:  # noqa: BLE001 - ended meanwhile
                pass

    def follow(self, *args, env=None):
        """An i2s_client process against the shared server, its output on pipes; killed
        when the test ends if it still runs then."""
        return h.spawn(self, [ARGS.client, "--server", f"127.0.0.1:{SERVER.port}", *args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def path(self, name):
        return os.path.join(self.dir, name)

    def embed(self, name="camera.png", steps=10):
        d = docs(run("--json", "-q", "embed", image(name), "--steps", str(steps), *FAST, check=0))
        return d[0]["latent_id"]

    def latent_values(self, latent_id):
        latent = self.stub.GetLatent(pb.GetLatentRequest(latent_id=latent_id, include_values=True))
        return np.array(latent.values, np.float32).reshape(latent.num_layers, latent.latent_size)

    # ------------------------------------------------------------------ help and usage

    def test_help_of_every_subcommand(self):
        for cmd in [[], ["embed"], ["jobs"], ["jobs", "ls"], ["jobs", "get"], ["jobs", "watch"],
                    ["jobs", "cancel"], ["latents"], ["latents", "ls"], ["latents", "get"],
                    ["latents", "rm"], ["latents", "export"], ["latents", "import"], ["synth"],
                    ["morph"], ["stylemix"], ["expression"], ["blend"], ["directions"],
                    ["directions", "import"], ["directions", "compute"], ["directions", "frames"],
                    ["edit"], ["align"], ["info"], ["health"]]:
            p = run(*cmd, "--help", check=0)
            self.assertIn("Usage:", p.stdout, cmd)
            self.assertNotIn(ESC, p.stdout)
        self.assertIn("Exit codes:", run("--help", check=0).stdout)
        self.assertIn("Examples:", run("embed", "--help", check=0).stdout)
        # Usage errors: no subcommand, unknown option, missing argument, bad choice.
        for bad in [[], ["frobnicate"], ["embed"], ["embed", "x.png", "--space", "z"],
                    ["stylemix", "lat_a", "lat_b"], ["latents", "import", "a.npy", "-l", "novalue"]]:
            p = run(*bad)
            self.assertEqual(p.returncode, 2, (bad, p.stderr))
            self.assertTrue(p.stderr.strip(), bad)

    # ------------------------------------------------------------------ info and health

    def test_info_and_health(self):
        info = docs(run("--json", "info", check=0))[0]
        self.assertEqual(info["models"][0]["name"], "demo")
        self.assertEqual(info["models"][0]["resolution"], 32)
        self.assertEqual(info["devices"], ["cpu"])
        human = run("info", check=0).stdout
        self.assertIn("demo", human)
        self.assertIn("32x32", human)
        self.assertEqual(docs(run("--json", "health", check=0))[0]["status"], "SERVING")
        self.assertIn("SERVING", run("health", check=0).stdout)
        # The server address can come from the environment.
        e = dict(os.environ, I2S_SERVER=f"127.0.0.1:{SERVER.port}")
        p = subprocess.run([ARGS.client, "health"], capture_output=True, text=True, env=e,
                           timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr)

    # ------------------------------------------------------------------ embed

    def test_embed_two_images_json_recon_and_plain_progress(self):
        recon = self.path("recon")
        p = run("--json", "embed", image("astronaut.png"), image("chelsea.png"), "--steps", "30",
                *FAST, "--save-recon", recon, "-l", "who=test", check=0)
        out = docs(p)
        self.assertEqual([d["image"] for d in out], [image("astronaut.png"), image("chelsea.png")])
        for d in out:
            self.assertEqual(d["state"], "SUCCEEDED")
            self.assertEqual(d["stop_reason"], "steps")
            job = self.stub.GetJob(pb.GetJobRequest(job_id=d["job_id"]))
            self.assertEqual(job.latent_id, d["latent_id"])
            latent = self.stub.GetLatent(pb.GetLatentRequest(latent_id=d["latent_id"]))
            self.assertEqual(dict(latent.labels), {"who": "test"})
            self.assertAlmostEqual(d["metrics"]["psnr_db"], latent.metrics.psnr_db, places=6)
            self.assertEqual(d["metrics"]["steps"], 30)
            with Image.open(d["reconstruction"]) as im:
                self.assertEqual(im.size, (32, 32))
                ours = np.asarray(im.convert("RGB"))
            # The reconstruction is the stored latent's render.
            png = self.stub.Synthesize(pb.SynthesizeRequest(
                latent=pb.LatentRef(latent_id=d["latent_id"]))).image.data
            theirs = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
            np.testing.assert_array_equal(ours, theirs)
        self.assertEqual(sorted(os.listdir(recon)), ["astronaut.png", "chelsea.png"])
        # Off a terminal: plain progress lines on stderr, no control codes anywhere.
        self.assertNotIn(ESC, p.stdout + p.stderr)
        self.assertRegex(p.stderr, r"astronaut\.png \(job_\w+\): step \d+/30")
        self.assertRegex(p.stderr, r"chelsea\.png \(job_\w+\): succeeded: lat_\w+")
        # Human summary line: the latent ID and the final PSNR.
        p = run("embed", image("coffee.png"), "--steps", "10", *FAST, check=0)
        self.assertRegex(p.stdout, r"coffee\.png  lat_\w+  PSNR \d+\.\d\d dB  10 steps")
        self.assertNotIn(ESC, p.stdout + p.stderr)
        # --quiet: nothing on stderr.
        p = run("-q", "embed", image("coffee.png"), "--steps", "5", *FAST, check=0)
        self.assertEqual(p.stderr, "")

    def test_embed_never_overwrites_without_force(self):
        out = self.path("r.png")
        with open(out, "wb") as f:
            f.write(b"keep me")
        p = run("embed", image("camera.png"), "--steps", "5", *FAST, "--save-recon", out)
        self.assertEqual(p.returncode, 1)
        self.assertIn("already exists (use --force", p.stderr)
        with open(out, "rb") as f:
            self.assertEqual(f.read(), b"keep me")
        run("-q", "embed", image("camera.png"), "--steps", "5", *FAST, "--save-recon", out,
            "--force", check=0)
        with Image.open(out) as im:
            self.assertEqual(im.size, (32, 32))

    def test_embed_previews_and_detach_flag(self):
        previews = self.path("previews")
        run("-q", "embed", image("camera.png"), "--steps", "40", *FAST, "--preview", previews,
            "--preview-every", "5", check=0)
        names = os.listdir(previews)
        self.assertGreaterEqual(len(names), 1)
        self.assertTrue(all(re.fullmatch(r"camera-step\d{6}\.png", n) for n in names), names)
        d = docs(run("--json", "embed", "--detach", image("camera.png"), "--steps", "20", *FAST,
                     check=0))[0]
        self.assertIn(d["state"], ("QUEUED", "RUNNING"))
        w = docs(run("--json", "jobs", "watch", d["job_id"], check=0))[0]
        self.assertEqual(w["state"], "SUCCEEDED")
        self.assertTrue(w["latent_id"].startswith("lat_"))

    # ------------------------------------------------------------------ jobs

    def test_jobs_ls_get_cancel(self):
        self.embed()
        jobs = docs(run("--json", "jobs", "ls", "-n", "3", check=0))
        self.assertTrue(1 <= len(jobs) <= 3)
        listed = self.stub.ListJobs(pb.ListJobsRequest(page_size=3)).jobs
        self.assertEqual([j["id"] for j in jobs], [j.id for j in listed])
        got = docs(run("--json", "jobs", "get", jobs[0]["id"], check=0))[0]
        self.assertEqual(got["state"], "SUCCEEDED")
        self.assertIn("SUCCEEDED", run("jobs", "get", jobs[0]["id"], check=0).stdout)
        only = docs(run("--json", "jobs", "ls", "--state", "succeeded", "-n", "0", check=0))
        self.assertTrue(all(j["state"] == "SUCCEEDED" for j in only))
        table = run("jobs", "ls", check=0).stdout.splitlines()
        self.assertEqual(table[0].split()[:3], ["JOB", "STATE", "MODEL"])
        # Cancelling a finished job: the server says why, exit 5.
        p = run("jobs", "cancel", jobs[0]["id"])
        self.assertEqual(p.returncode, 5, p.stderr)
        self.assertIn(f"cannot cancel job {jobs[0]['id']}", p.stderr)
        # A queued/running one is cancelled; its follower exits 7.
        follow = self.follow("--json", "embed", image("camera.png"), "--steps", "100000", *FAST)
        job_id = self.wait_for_job(follow)
        c = docs(run("--json", "jobs", "cancel", job_id, check=0))[0]
        self.assertEqual(c["id"], job_id)
        out, err = follow.communicate(timeout=60)
        self.assertEqual(follow.returncode, 7, err)
        self.assertEqual(json.loads(out)["state"], "CANCELLED")

    def wait_for_job(self, proc, running=False, timeout=300):
        """Reads the follower's plain progress lines until its job is named (and running).
        A client that says nothing for `timeout` s is killed (a hang bound: the read would
        block for ever), which ends the read."""
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        try:
            while True:
                line = proc.stderr.readline()
                if not line:
                    raise AssertionError("the client ended before its job started "
                                         f"(exit {proc.poll()}; killed after {timeout} s?)")
                m = re.search(r"\((job_\w+)\)", line)
                if m and (not running or ": running on " in line or ": step " in line):
                    return m.group(1)
        finally:
            watchdog.cancel()

    # ------------------------------------------------------------------ latents

    def test_latents_export_import_get_ls_rm(self):
        lat = self.embed()
        npy = self.path("w.npy")
        run("latents", "export", lat, "-o", npy, check=0)
        w = np.load(npy)
        self.assertEqual(w.dtype, np.float32)
        np.testing.assert_array_equal(w, self.latent_values(lat))
        self.assertEqual(run("latents", "export", lat, "-o", npy).returncode, 1)
        imported = docs(run("--json", "latents", "import", npy, "-l", "k=v", "--noise-seed", "7",
                            check=0))[0]
        self.assertEqual(imported["source"], "import")
        self.assertEqual(imported["labels"], {"k": "v"})
        self.assertEqual(imported["noise_seed"], "7")
        np.testing.assert_array_equal(self.latent_values(imported["id"]), w)
        got = docs(run("--json", "latents", "get", imported["id"], "--values", check=0))[0]
        self.assertEqual(len(got["values"]), w.size)
        ids = [d["id"] for d in docs(run("--json", "latents", "ls", "-n", "0", check=0))]
        self.assertIn(imported["id"], ids)
        self.assertIn(lat, ids)
        self.assertEqual(docs(run("--json", "latents", "rm", imported["id"], check=0))[0],
                         {"latent_id": imported["id"], "deleted": True})
        p = run("latents", "get", imported["id"])
        self.assertEqual(p.returncode, 4)
        self.assertIn("not found", p.stderr)
        self.assertEqual(run("latents", "rm", imported["id"]).returncode, 4)
        # A bad .npy is the server's INVALID_ARGUMENT, named in words.
        bad = self.path("bad.npy")
        np.save(bad, np.zeros((3, 7), np.float32))
        p = run("latents", "import", bad)
        self.assertEqual(p.returncode, 5, p.stderr)
        self.assertIn(f"cannot import {bad}: ", p.stderr)

    # ------------------------------------------------------------------ renders

    def test_synth_formats_stdout_and_paths(self):
        lat = self.embed()
        run("synth", lat, "-o", self.path("a.png"), check=0)
        with Image.open(self.path("a.png")) as im:
            self.assertEqual((im.format, im.size), ("PNG", (32, 32)))
        run("synth", lat, "-o", self.path("a.jpg"), check=0)
        with Image.open(self.path("a.jpg")) as im:
            self.assertEqual(im.format, "JPEG")
        run("synth", lat, "-o", self.path("raw.npy"), check=0)
        raw = np.load(self.path("raw.npy"))
        theirs = self.stub.Synthesize(pb.SynthesizeRequest(
            latent=pb.LatentRef(latent_id=lat),
            render=pb.RenderOptions(format=pb.RAW_FLOAT32))).image.data
        np.testing.assert_array_equal(raw, np.load(io.BytesIO(theirs)))
        p = subprocess.run([ARGS.client, "-s", f"127.0.0.1:{SERVER.port}", "synth", lat, "-o", "-"],
                           capture_output=True, timeout=300)
        self.assertEqual(p.returncode, 0)
        with open(self.path("a.png"), "rb") as f:
            self.assertEqual(p.stdout, f.read())
        self.assertEqual(run("synth", lat, "-o", self.path("a.png")).returncode, 1)
        self.assertEqual(run("synth", lat, "-o", self.path("a.tiff")).returncode, 2)
        # A .npy path is imported first; the default output is LATENT.png in the cwd.
        run("latents", "export", lat, "-o", self.path("w.npy"), check=0)
        p = run("synth", self.path("w.npy"), check=0, cwd=self.dir)
        new_id = re.search(r"imported .* as (lat_\w+)", p.stderr).group(1)
        self.assertTrue(os.path.exists(self.path(new_id + ".png")))

    def test_morph_video_gif_and_frames(self):
        a, b = self.embed("camera.png"), self.embed("coffee.png")
        frames = self.stub.Morph(pb.MorphRequest(a=pb.LatentRef(latent_id=a),
                                                 b=pb.LatentRef(latent_id=b), frames=5))
        want = [np.asarray(Image.open(io.BytesIO(f.image.data)).convert("RGB")) for f in frames]
        d = docs(run("--json", "morph", a, b, "--frames", "5", "--out", self.path("f"), check=0))[0]
        self.assertEqual((d["kind"], d["frames"]), ("directory", 5))
        names = sorted(os.listdir(self.path("f")))
        self.assertEqual(names, [f"frame_{i:03d}.png" for i in range(5)])
        for name, w in zip(names, want):
            np.testing.assert_array_equal(
                np.asarray(Image.open(os.path.join(self.path("f"), name)).convert("RGB")), w)
        run("morph", a, b, "--frames", "5", "--out", self.path("m.gif"), "--fps", "10", check=0)
        with Image.open(self.path("m.gif")) as im:
            self.assertEqual((im.format, im.size, im.n_frames), ("GIF", (32, 32), 5))
            self.assertEqual(im.info.get("duration"), 100)
            for i, w in enumerate(want):  # a 256-colour palette: close, not exact
                im.seek(i)
                err = np.abs(np.asarray(im.convert("RGB"), np.float64) - w).mean()
                self.assertLess(err, 8, i)
        run("morph", a, b, "--frames", "5", "--out", self.path("m.mp4"), check=0)
        with open(self.path("m.mp4"), "rb") as f:
            head = f.read()
        self.assertEqual(head[4:8], b"ftyp")  # an MP4 container
        self.assertIn(b"avc1", head)  # with H.264 video: plays in browsers and players
        self.assertIn(b"mdat", head)
        p = run("morph", a, b, "--out", self.path("m.mp4"))
        self.assertEqual(p.returncode, 1)
        self.assertIn("already exists", p.stderr)
        p = run("morph", a, b, "--frames", "100000", "--out", self.path("x.gif"))
        self.assertEqual(p.returncode, 5, p.stderr)
        self.assertIn("frames", p.stderr)

    def test_stylemix_and_expression_store_exact_latents(self):
        a, b, c = self.embed("camera.png"), self.embed("coffee.png"), self.embed("chelsea.png")
        wa, wb, wc = (self.latent_values(x) for x in (a, b, c))
        d = docs(run("--json", "stylemix", a, b, "-k", "3", "-o", self.path("mix.png"), "--store",
                     check=0))[0]
        mixed = self.latent_values(d["latent"]["id"])
        np.testing.assert_array_equal(mixed, np.concatenate([wa[:3], wb[3:]]))
        with Image.open(self.path("mix.png")) as im:
            self.assertEqual(im.size, (32, 32))
        d = docs(run("--json", "expression", a, b, c, "--lambda", "1.5", "--first-layer", "2",
                     "--last-layer", "5", "-o", self.path("e.jpg"), "--store", check=0))[0]
        got = self.latent_values(d["latent"]["id"])
        want = wa.copy()
        want[2:6] = wa[2:6] + np.float32(1.5) * (wc[2:6] - wb[2:6])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        with Image.open(self.path("e.jpg")) as im:
            self.assertEqual(im.format, "JPEG")
        human = run("stylemix", a, b, "-k", "2", "-o", self.path("mix2.png"), check=0).stdout
        self.assertIn(f"{a} + {b} (crossover 2)", human)
        p = run("stylemix", a, b, "-k", "99", "-o", self.path("mix3.png"))
        self.assertEqual(p.returncode, 5)
        self.assertIn("crossover", p.stderr)

    def test_masked_embedding_and_local_blend(self):
        from PIL import Image
        # embed --mask: the record on the latent; the mask over the aligned target too.
        keep = np.full((512, 512), 255, np.uint8)
        keep[150:215, 175:280] = 0
        Image.fromarray(keep).save(self.path("keep.png"))
        d = docs(run("--json", "-q", "embed", image("astronaut.png"), "--mask",
                     self.path("keep.png"), "--steps", "3", *FAST, check=0))[0]
        latent = self.stub.GetLatent(pb.GetLatentRequest(latent_id=d["latent_id"]))
        masks = json.loads(latent.params_json)["masks"]
        self.assertEqual((masks["frame"], masks["mask"]["binary"]), ("photo", True))
        Image.fromarray(np.full((32, 32), 200, np.uint8)).save(self.path("grey.png"))
        d = docs(run("--json", "-q", "embed", image("astronaut.png"), "--mask",
                     self.path("grey.png"), "--mask-frame", "aligned", "--perceptual-mask",
                     self.path("grey.png"), "--steps", "3", *FAST, check=0))[0]
        latent = self.stub.GetLatent(pb.GetLatentRequest(latent_id=d["latent_id"]))
        masks = json.loads(latent.params_json)["masks"]
        self.assertEqual(masks["frame"], "aligned")
        self.assertAlmostEqual(masks["perceptual_mask"]["coverage"], 200 / 255, places=6)
        p = run("embed", image("astronaut.png"), "--mask", self.path("grey.png"), "--steps", "3")
        self.assertEqual(p.returncode, 5, p.stderr)
        self.assertIn("mask: 32x32, but the image is 512x512", p.stderr)
        # blend: base outside the (feathered) mask, written with the mask used.
        a, b = self.embed("camera.png", steps=3), self.embed("coffee.png", steps=3)
        left = np.zeros((32, 32), np.uint8)
        left[:, :8] = 255
        Image.fromarray(left).save(self.path("left.png"))
        d = docs(run("--json", "blend", a, b, "--mask", self.path("left.png"), "--start-layer",
                     "2", "--mask-feather", "3", "-o", self.path("blend.png"), "--save-mask",
                     self.path("used.png"), check=0))[0]
        self.assertEqual((d["base"], d["source"], d["start_layer"], d["feather"]), (a, b, 2, 3))
        run("synth", a, "-o", self.path("a.png"), check=0)
        with Image.open(self.path("used.png")) as m, Image.open(self.path("blend.png")) as im, \
                Image.open(self.path("a.png")) as ref:
            outside = np.asarray(m.convert("L")) == 0
            self.assertEqual(int((~outside).sum()), 32 * 11)
            np.testing.assert_array_equal(np.asarray(im)[outside], np.asarray(ref)[outside])
        human = run("blend", a, b, "--mask", self.path("left.png"), "-o", self.path("b2.png"),
                    check=0).stdout
        self.assertIn(f"{a} + {b} inside", human)
        p = run("blend", a, b, "--mask", self.path("keep.png"), "-o", self.path("b3.png"))
        self.assertEqual(p.returncode, 5, p.stderr)
        self.assertIn("mask: 512x512, but the model's renders are 32x32", p.stderr)
        p = run("blend", a, b, "--mask", self.path("left.png"), "--start-layer", "99",
                "-o", self.path("b4.png"))
        self.assertEqual(p.returncode, 5, p.stderr)
        self.assertIn("start_layer", p.stderr)

    def test_directions_and_edit(self):
        a, b, c = (self.embed(name, 3) for name in ("camera.png", "coffee.png", "chelsea.png"))
        wa, wb, wc = (self.latent_values(x) for x in (a, b, c))
        boundary = np.random.default_rng(2).standard_normal((1, 512)).astype(np.float32)
        np.save(self.path("smile.npy"), boundary)
        d = docs(run("--json", "directions", "import", self.path("smile.npy"), "--name", "smile",
                     check=0))[0]
        self.assertEqual((d["name"], d["num_layers"], d["source"]), ("smile", 1, "interfacegan_npy"))
        d = docs(run("--json", "directions", "compute", "expr", "--from", b, "--to", c, check=0))[0]
        self.assertEqual((d["name"], d["num_layers"]), ("expr", 8))
        listed = docs(run("--json", "directions", "ls", check=0))
        self.assertEqual(sorted(x["name"] for x in listed), ["expr", "smile"])
        self.assertIn("smile", run("directions", "ls", check=0).stdout)
        got = docs(run("--json", "directions", "get", "smile", "--values", check=0))[0]
        np.testing.assert_array_equal(np.array(got["values"], np.float32), boundary[0])
        # edit: exact rows, stored, chained.
        d = docs(run("--json", "edit", a, "--direction", "smile=1.5", "-d", "expr=-1",
                     "--layers", "2-5", "--store", "-o", self.path("edit.png"), check=0))[0]
        got = self.latent_values(d["latent"]["id"])
        want = wa.copy()
        want[2:6] = wa[2:6] + np.float32(1.5) * boundary[0]
        want[2:6] = want[2:6] + np.float32(-1) * (wc[2:6] - wb[2:6])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
        with Image.open(self.path("edit.png")) as im:
            self.assertEqual(im.size, (32, 32))
        human = run("edit", d["latent"]["id"], "-d", "smile=1", "-o", self.path("e2.png"),
                    check=0).stdout
        self.assertIn("smile=1", human)
        # frames along a direction.
        d = docs(run("--json", "directions", "frames", a, "smile", "--alphas", "-2:2:5",
                     "--out", self.path("walk.gif"), check=0))[0]
        self.assertEqual((d["frames"], d["alphas"]), (5, [-2, -1, 0, 1, 2]))
        with Image.open(self.path("walk.gif")) as im:
            self.assertEqual(im.n_frames, 5)
        # Refusals: a bad step is a usage error; an unknown direction names the field.
        p = run("edit", a, "-d", "smile", "-o", self.path("x.png"))
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("NAME=ALPHA", p.stderr)
        p = run("edit", a, "-d", "nope=1", "-o", self.path("x.png"))
        self.assertEqual(p.returncode, 4, p.stderr)
        self.assertIn("steps[0].name", p.stderr)
        p = run("directions", "import", self.path("smile.npy"), "--name", "bad name")
        self.assertEqual(p.returncode, 5, p.stderr)
        self.assertIn("name:", p.stderr)
        run("directions", "rm", "smile", check=0)
        run("directions", "rm", "expr", check=0)
        self.assertEqual(docs(run("--json", "directions", "ls", check=0)), [])

    def test_image_paths_are_embedded_first(self):
        p = run("morph", image("camera.png"), image("coffee.png"), "--frames", "3",
                "--embed-steps", "5", "--out", self.path("m.gif"), check=0)
        self.assertEqual(len(re.findall(r"embedded .* as lat_\w+", p.stderr)), 2, p.stderr)
        with Image.open(self.path("m.gif")) as im:
            self.assertEqual(im.n_frames, 3)

    # ------------------------------------------------------------------ failures

    def test_exit_codes_and_messages(self):
        p = run("info", server="127.0.0.1:1")
        self.assertEqual(p.returncode, 3)
        self.assertIn("cannot reach i2s_server at 127.0.0.1:1 (connection refused)", p.stderr)
        p = run("--json", "health", server="127.0.0.1:1")
        self.assertEqual(p.returncode, 3)
        self.assertEqual(docs(p)[0]["error"]["exit_code"], 3)
        p = run("synth", "lat_doesnotexist", "-o", self.path("x.png"))
        self.assertEqual(p.returncode, 4)
        self.assertIn('latent "lat_doesnotexist" not found', p.stderr)
        p = run("synth", "nonsense", "-o", self.path("x.png"))
        self.assertEqual(p.returncode, 4)
        self.assertIn("neither a file nor a latent ID", p.stderr)
        p = run("jobs", "get", "job_nope")
        self.assertEqual(p.returncode, 4)
        p = run("embed", self.path("missing.png"))
        self.assertEqual(p.returncode, 4)
        self.assertIn("missing.png: no such file", p.stderr)
        p = run("embed", image("camera.png"), "--steps", "-3")
        self.assertEqual(p.returncode, 5)
        self.assertIn("options.steps", p.stderr)
        notimage = self.path("notimage.png")
        with open(notimage, "w") as f:
            f.write("hello")
        p = run("--json", "embed", notimage)
        self.assertEqual(p.returncode, 5)
        self.assertEqual(docs(p)[0]["error"]["exit_code"], 5)
        p = run("embed", image("camera.png"), "--model", "nomodel")
        self.assertEqual(p.returncode, 4, p.stderr)
        # A deadline far too short for any answer.
        p = run("--timeout", "0.000001", "latents", "ls")
        self.assertEqual(p.returncode, 8, p.stderr)
        self.assertIn("--timeout", p.stderr)
        for q in (p,):
            self.assertNotIn("StatusCode", q.stderr)

    # ------------------------------------------------------------------ alignment

    def test_every_face_and_paste_back(self):
        if DETECTOR != "mtcnn" or not ARGS.photos:
            self.skipTest("needs MTCNN (I2S_MTCNN_DIR) and --photos (scripts/fetch-photos)")
        from PIL import Image
        group = os.path.join(ARGS.photos, "2008_002506.jpg")
        # align lists every face; --face picks one.
        d = docs(run("--json", "align", group, "-o", self.path("a0.png"), check=0))[0]
        n = len(d["faces"])
        self.assertGreaterEqual(n, 3)
        self.assertEqual([len(f["landmarks"]) for f in d["faces"]], [5] * n)
        d1 = docs(run("--json", "align", group, "-o", self.path("a1.png"), "--face", "1",
                      check=0))[0]
        self.assertEqual(d1["alignment"]["face"], 1)
        p = run("align", group, "-o", self.path("a9.png"), "--face", str(n))
        self.assertEqual(p.returncode, 5, p.stderr)
        self.assertIn("align.face", p.stderr)
        p = run("embed", group, "--face", "1")
        self.assertEqual(p.returncode, 5, p.stderr)
        self.assertIn("--face: needs --align auto", p.stderr)
        # embed --all-faces: one job per face, named STEM-faceN.
        recon = self.path("recon")
        out = docs(run("--json", "-q", "embed", group, "--align", "auto", "--all-faces",
                       "--steps", "2", "--save-recon", recon, *FAST, check=0))
        self.assertEqual(len(out), n)
        self.assertEqual(sorted(o["alignment"]["face"] for o in out), list(range(n)))
        self.assertEqual(sorted(os.listdir(recon)),
                         sorted(f"2008_002506-face{i}.png" for i in range(n)))
        ids = [o["latent_id"] for o in sorted(out, key=lambda o: o["alignment"]["face"])]
        # paste: every face back into the photo at its own size.
        pasted = self.path("pasted.jpg")
        d = docs(run("--json", "paste", group, *ids, "-o", pasted, "--blend", "seamless",
                     check=0))[0]
        self.assertEqual((d["width"], d["height"]), Image.open(group).size)
        with Image.open(pasted) as im:
            self.assertEqual((im.format, im.size), ("JPEG", Image.open(group).size))
        p = run("paste", group, ids[0], "-o", pasted)
        self.assertEqual(p.returncode, 1, p.stderr)  # exists: never overwritten
        p = run("paste", image("astronaut.png"), ids[0], "-o", self.path("wrong.png"))
        self.assertEqual(p.returncode, 5, p.stderr)
        self.assertIn("photo: 512x512, but the latent was aligned from a 500x375 photo", p.stderr)
        p = run("paste", group, ids[0], "-o", self.path("x.bmp"))
        self.assertEqual(p.returncode, 2, p.stderr)
        # synth --paste-into writes the render and the pasted photo.
        d = docs(run("--json", "synth", ids[0], "-o", self.path("s.png"), "--paste-into", group,
                     "--pasted", self.path("s-pasted.png"), check=0))[0]
        self.assertEqual(d["pasted"], self.path("s-pasted.png"))
        with Image.open(self.path("s-pasted.png")) as im:
            self.assertEqual(im.size, Image.open(group).size)
        # morph --paste-into: the frames pasted into a's photo, as a second sequence.
        d = docs(run("--json", "morph", ids[0], ids[1], "--frames", "3", "--out",
                     self.path("m.gif"), "--paste-into", group, "--pasted", self.path("pm"),
                     check=0))[0]
        self.assertEqual(d["pasted"], self.path("pm"))
        pasted_frames = sorted(os.listdir(self.path("pm")))
        self.assertEqual(len(pasted_frames), 3)
        with Image.open(os.path.join(self.path("pm"), pasted_frames[0])) as im:
            self.assertEqual(im.size, Image.open(group).size)
        p = run("morph", ids[0], ids[1], "--out", self.path("m2.gif"), "--pasted", "x.gif")
        self.assertEqual(p.returncode, 2, p.stderr)
        p = run("synth", ids[0], "-o", self.path("t.png"), "--paste-into", group)
        self.assertEqual(p.returncode, 5, p.stderr)
        self.assertIn("--paste-into: needs --pasted FILE", p.stderr)

    def test_align_and_embed_aligned(self):
        from PIL import Image

        def size_of(path):
            with Image.open(path) as im:
                return im.size

        def read(path):
            with open(path, "rb") as f:
                return f.read()

        out = self.path("aligned.png")
        d = docs(run("--json", "align", image("astronaut.png"), "-o", out, "--size", "64",
                     check=0))[0]
        self.assertEqual(d["output"], out)
        a = d["alignment"]
        self.assertEqual(a["method"], DETECTOR)
        self.assertEqual(a["size"], 64)
        self.assertEqual(len(a["transform"]), 6)
        self.assertNotIn("aligned", a)  # the image went to the file, not into the JSON
        self.assertEqual(size_of(out), (64, 64))
        # The same as the server's own answer.
        r = self.stub.AlignFace(pb.AlignFaceRequest(
            image=read(image("astronaut.png")), size=64,
            align=pb.AlignOptions(mode=pb.AlignOptions.AUTO)))
        np.testing.assert_allclose(a["transform"], list(r.alignment.transform), rtol=0, atol=1e-9)
        self.assertEqual(read(out), r.alignment.aligned.data)
        # Human output, never overwriting, given landmarks from a file.
        self.assertEqual(run("align", image("astronaut.png"), "-o", out).returncode, 1)
        points = self.path("points.txt")
        with open(points, "w") as f:
            f.write("# eyes, nose, mouth corners\n203.5 101\n246.5 103.1\n225 120\n"
                    "202.5 140\n245 140.6\n")
        p = run("align", image("astronaut.png"), "-o", out, "--landmarks", points, "-f", check=0)
        self.assertIn("aligned (landmarks, confidence 1.00", p.stdout)
        # No face: exit 5 with what to do; bad landmark files are named.
        p = run("align", image("coffee.png"), "-o", self.path("c.png"))
        self.assertEqual(p.returncode, 5)
        self.assertIn("no face found", p.stderr)
        self.assertIn("--on-no-face resize", p.stderr)
        with open(points, "w") as f:
            f.write("1 2 3\n")
        p = run("align", image("astronaut.png"), "-o", self.path("d.png"), "--landmarks", points)
        self.assertEqual(p.returncode, 5, p.stderr)
        self.assertIn("points.txt: 3 numbers", p.stderr)
        # embed --align: the aligned targets saved, the alignment in the JSON.
        aligned = self.path("targets")
        out = docs(run("--json", "-q", "embed", image("astronaut.png"), image("coffee.png"),
                       "--align", "auto", "--on-no-face", "resize", "--save-aligned", aligned,
                       "--steps", "3", *FAST, check=0))
        self.assertEqual([o["alignment"]["method"] for o in out], [DETECTOR, "none"])
        self.assertIn("no face found", out[1]["alignment"]["note"])
        for o in out:
            self.assertTrue(o["aligned_image"].startswith(aligned))
            self.assertEqual(size_of(o["aligned_image"]), (32, 32))
            latent = self.stub.GetLatent(pb.GetLatentRequest(latent_id=o["latent_id"]))
            np.testing.assert_allclose(list(latent.alignment.transform),
                                       o["alignment"]["transform"], atol=1e-9)
        p = run("embed", image("astronaut.png"), "--save-aligned", self.path("x.png"))
        self.assertEqual(p.returncode, 2)
        self.assertIn("needs --align auto or --landmarks", p.stderr)

    def test_busy_server_is_exit_9(self):
        d = os.path.join(ARGS.work, "busy")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        busy = h.Server(ARGS.server, d, extra=["--queue-limit", "1", "--max-batch", "1"]).start()
        try:
            srv = f"127.0.0.1:{busy.port}"
            first = docs(run("--json", "embed", "--detach", image("camera.png"), "--steps",
                             "100000", *FAST, server=srv, check=0))
            stub = busy.stub()
            h.wait_until(lambda: stub.GetJob(pb.GetJobRequest(
                job_id=first[0]["job_id"])).state == pb.RUNNING, "the first job running")
            second = docs(run("--json", "embed", "--detach", image("camera.png"), "--steps",
                              "100000", *FAST, server=srv, check=0))
            p = run("embed", image("camera.png"), "--steps", "10", *FAST, server=srv)
            self.assertEqual(p.returncode, 9, p.stderr)
            self.assertIn("busy", p.stderr)
            run("jobs", "cancel", first[0]["job_id"], second[0]["job_id"], server=srv, check=0)
        finally:
            busy.stop()

    # ------------------------------------------------------------------ Ctrl-C

    def ctrl_c_detaches_then_watch_resumes(self, env=None):
        proc = self.follow("embed", image("camera.png"), "--steps", "3000", *FAST, env=env)
        job_id = self.wait_for_job(proc, running=True)
        if env is not None:
            self.assertEqual(h.early_threads(proc.pid), 4)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 10, err)
        self.assertIn(f"{job_id}  detached", out)
        self.assertIn(f"i2s_client jobs watch {job_id}", out)
        job = self.stub.GetJob(pb.GetJobRequest(job_id=job_id))
        self.assertIn(job.state, (pb.RUNNING, pb.SUCCEEDED))
        # 3000 steps: a hang bound only (the job's pace is the machine's).
        w = docs(run("--json", "jobs", "watch", job_id, check=0, timeout=900))[0]
        self.assertEqual(w["state"], "SUCCEEDED")
        self.assertEqual(w["metrics"]["steps"], 3000)

    def test_ctrl_c_detaches_off_a_terminal_then_watch_resumes(self):
        self.ctrl_c_detaches_then_watch_resumes()

    def test_ctrl_c_detaches_with_threads_started_before_main(self):
        # Threads that take every signal (as the pthread OpenBLAS starts them before main):
        # Ctrl-C still reaches the client's handling instead of killing it.
        self.ctrl_c_detaches_then_watch_resumes(env=h.early_threads_env())

    def ctrl_c_cancel(self, env=None):
        proc = self.follow("--on-interrupt", "cancel", "embed", image("camera.png"), "--steps",
                           "100000", *FAST, env=env)
        job_id = self.wait_for_job(proc, running=True)
        if env is not None:
            self.assertEqual(h.early_threads(proc.pid), 4)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 7, err)
        self.assertIn(f"the job {job_id} was cancelled", err)
        self.assertEqual(self.stub.GetJob(pb.GetJobRequest(job_id=job_id)).state, pb.CANCELLED)

    def test_ctrl_c_cancel(self):
        self.ctrl_c_cancel()

    def test_ctrl_c_cancel_with_threads_started_before_main(self):
        self.ctrl_c_cancel(env=h.early_threads_env())

    def test_sigterm_off_a_job_exits_130_with_threads_started_before_main(self):
        # Not following a job: a signal ends the client at once, with its own message. The
        # "server" accepts the connection and never answers, so the call would wait its
        # 600 s deadline (far beyond this test's waits: the signal comes first).
        import socket
        mute = socket.socket()
        self.addCleanup(mute.close)
        mute.bind(("127.0.0.1", 0))
        mute.listen(4)
        proc = h.spawn(
            self, [ARGS.client, "--server", f"127.0.0.1:{mute.getsockname()[1]}", "--timeout",
                   "600", "health"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=h.early_threads_env())
        h.wait_until(lambda: h.early_threads(proc.pid) >= 4, "the preloaded threads",
                     interval=0.02)
        self.assertEqual(h.early_threads(proc.pid), 4)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 130, err)
        self.assertIn("i2s_client: interrupted", err)

    def test_follower_reattaches_after_a_server_restart(self):
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        d = os.path.join(ARGS.work, "restart")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        server = h.Server(ARGS.server, d, extra=["--checkpoint-every", "20"],
                          address=f"127.0.0.1:{port}").start()
        try:
            proc = h.spawn(self, [ARGS.client, "--server", f"127.0.0.1:{port}", "--json",
                                  "embed", image("camera.png"), "--steps", "800", *FAST],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            job_id = self.wait_for_job(proc, running=True)
            time.sleep(0.5)
            code, _ = server.stop()
            self.assertEqual(code, 0)
            server.start()
            out, err = proc.communicate(timeout=300)
            self.assertEqual(proc.returncode, 0, err + out + server.log())
            self.assertIn(f"re-attaching to {job_id}", err)
            d = json.loads(out)
            self.assertEqual((d["job_id"], d["state"]), (job_id, "SUCCEEDED"))
            self.assertEqual(d["metrics"]["steps"], 800)
        finally:
            server.stop()

    @unittest.skipUnless(shutil.which("tmux"), "tmux is not installed")
    def test_terminal_live_progress_and_prompt(self):
        session = f"i2s{os.getpid()}"
        status = self.path("status")
        cmd = (f"LANG=C.UTF-8 {ARGS.client} --server 127.0.0.1:{SERVER.port} embed "
               f"{image('astronaut.png')} {image('chelsea.png')} --steps 6000 "
               f"{' '.join(FAST)}; echo EXIT=$? > {status}; sleep 600")
        subprocess.run(["tmux", "-L", session, "new-session", "-d", "-s", session, "-x", "160",
                        "-y", "20", cmd], check=True)

        def screen():
            return subprocess.run(["tmux", "-L", session, "capture-pane", "-p", "-t", session],
                                  capture_output=True, text=True, check=True).stdout

        def counters(s):
            return [int(m) for m in re.findall(r" (\d+)/6000", s)]

        def wait_for(pattern, timeout=180, also=lambda s: True):
            # The timeout is a hang bound: the jobs step at the machine's pace.
            deadline = time.time() + timeout
            while time.time() < deadline:
                s = screen()
                if re.search(pattern, s) and also(s):
                    return s
                time.sleep(0.2)
            raise AssertionError(f"{pattern!r} never appeared; screen:\n{screen()}")

        try:
            first = wait_for(r"chelsea\.png.*\d+/6000.*steps/s.*ETA")
            steps = counters(first)
            # A filled bar cell (>= 1/24 of the steps done) on a screen whose counters moved
            # since the first: two captures a moment apart may show the same frame (the
            # first capture can come late, with the bar drawn already).
            second = wait_for("\u2588", also=lambda s: sum(counters(s)) > sum(steps))
            later = counters(second)
            # Redrawn in place: still one line per job, and the counters moved.
            self.assertEqual(len(later), 2, second)
            self.assertGreater(sum(later), sum(steps))
            self.assertIn("\u2588", second)  # the bar, drawn with block glyphs in UTF-8
            self.assertIn("astronaut.png", second)
            subprocess.run(["tmux", "-L", session, "send-keys", "-t", session, "C-c"], check=True)
            wait_for(r"Interrupted\. \[c\] cancel the jobs.*\[d\] detach")
            subprocess.run(["tmux", "-L", session, "send-keys", "-t", session, "d"], check=True)
            wait_for(r"detached, still running")
            h.wait_until(lambda: os.path.exists(status), "the client's exit status")
            with open(status) as f:
                self.assertEqual(f.read().strip(), "EXIT=10")
            # The client has exited: every summary line is on the screen now (a capture at
            # the first "detached" line can miss the second one).
            final = screen()
            ids = re.findall(r"(job_\w+)  detached", final)
            self.assertEqual(len(ids), 2, final)
            for job_id in ids:  # detached: not cancelled, left to run on the server; clean up
                # (RUNNING, or SUCCEEDED on a machine fast enough to do 6000 steps meanwhile)
                state = self.stub.GetJob(pb.GetJobRequest(job_id=job_id)).state
                self.assertIn(pb.JobState.Name(state), ("RUNNING", "SUCCEEDED"), job_id)
                if state == pb.RUNNING:
                    self.stub.CancelJob(pb.CancelJobRequest(job_id=job_id))
        finally:
            subprocess.run(["tmux", "-L", session, "kill-server"], capture_output=True)


def main():
    def keep(args):
        global ARGS
        args.client, args.server = os.path.abspath(args.client), os.path.abspath(args.server)
        ARGS = args
    h.run_tests(["--client", "--server", "--proto", "--work"], keep, optional=["--photos"])


if __name__ == "__main__":
    main()

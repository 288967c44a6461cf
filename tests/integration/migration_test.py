#!/usr/bin/env python3
"""A data directory written before StyleGAN2, opened by today's server.

tests/fixtures/datadir-1e70f19.tar.gz was written by the i2s_server and i2s_client of
commit 1e70f19 (the last before StyleGAN2 changed the Generator interface, the noise maps
and the checkpoints), with tests/fixtures/make_pre_stylegan2_datadir.sh: on the 32x32
StyleGAN1 demo model, a finished latent with its optimised noise maps, that server's own
render of it (float32), and a job killed with kill -9 after several checkpoints, its
SQLite WAL not yet folded in. Today's server must serve all of it unchanged: the same
model fingerprint, the latent and its noise maps, a bit-for-bit equal render, and the job
resumed from its stored checkpoint (a StyleGAN1 checkpoint: one noise map per layer).
"""
import io
import json
import os
import tarfile
import unittest

import numpy as np

import i2s_harness as h
from i2s_harness import collect, kind, read_npy

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures",
                       "datadir-1e70f19.tar.gz")
ARGS = None
pb = None



def cpu_has(flag):
    """Whether /proc/cpuinfo lists `flag` for this CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and flag in line.split() for line in f)
    except OSError:
        return False

class PreStyleGan2DataDirTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        work = h.fresh_dir(os.path.join(ARGS.work, "old"))
        with tarfile.open(FIXTURE) as tar:
            tar.extractall(work)
        with open(os.path.join(work, "ids.json")) as f:
            cls.ids = json.load(f)
        cls.render = np.load(os.path.join(work, "render.npy"))
        # The same demo model and checkpoint cadence the old server had.
        cls.server = h.Server(ARGS.server, os.path.join(work, "data"), resolution=32,
                              fmap_base=256, extra=["--checkpoint-every", "5"]).start()
        cls.addClassCleanup(cls.server.kill)
        cls.stub = cls.server.stub()
        cls.model = cls.stub.GetServerInfo(pb.GetServerInfoRequest()).models[0]

    @classmethod
    def tearDownClass(cls):
        code, _ = cls.server.stop()
        assert code == 0, cls.server.log()

    def test_latent_and_its_render_are_unchanged(self):
        lat = self.stub.GetLatent(pb.GetLatentRequest(latent_id=self.ids["latent_id"]))
        self.assertEqual(lat.fingerprint, self.model.fingerprint)  # StyleGAN1's is unchanged
        self.assertEqual((lat.num_layers, lat.latent_size), (8, 512))
        self.assertEqual(lat.source, "embed")
        self.assertTrue(lat.has_noise)
        self.assertEqual(dict(lat.labels), {"name": "cat"})
        self.assertEqual(lat.metrics.steps, 15)
        # The default render (its own optimised maps) is the old server's: bit for bit with
        # the LibTorch that wrote the fixture (Debian's), and within float rounding
        # (--render-tolerance) with another build of LibTorch, whose kernels sum in another
        # order (PyPI's CUDA LibTorch: 8e-7 at most seen).
        tol = float(ARGS.render_tolerance or 0)
        if tol == 0 and not cpu_has("avx512f"):
            # The fixture was rendered on an AVX-512 CPU: on one without it, LibTorch's and
            # OpenBLAS's kernels sum in another order too (9.4e-7 at most seen, AMD EPYC
            # with AVX2 only).
            tol = 1e-5
        check = (np.testing.assert_array_equal if tol == 0 else
                 lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=tol))
        raw = self.stub.Synthesize(pb.SynthesizeRequest(
            latent=pb.LatentRef(latent_id=lat.id),
            render=pb.RenderOptions(format=pb.RAW_FLOAT32))).image.data
        check(read_npy(raw), self.render)
        own = self.stub.Synthesize(pb.SynthesizeRequest(
            latent=pb.LatentRef(latent_id=lat.id),
            render=pb.RenderOptions(format=pb.RAW_FLOAT32, noise_mode=pb.NOISE_LATENT))).image.data
        check(read_npy(own), self.render)
        # Its W+ exports and re-imports under today's formats.
        w = read_npy(self.stub.ExportLatent(pb.ExportLatentRequest(latent_id=lat.id)).npy)
        self.assertEqual(w.shape, (8, 512))

    def test_interrupted_job_resumes_from_its_checkpoint(self):
        job_id = self.ids["job_id"]
        events = collect(self.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=300),
                         until=lambda ev: kind(ev) == "progress" and ev.progress.step >= 1
                         and any(kind(e) == "running" and e.running.resumed_from_step > 0
                                 for e in [ev]) is False and ev.progress.step > 0)
        running = [e.running for e in events if kind(e) == "running"]
        self.assertTrue(running, events)
        resumed = running[-1].resumed_from_step
        self.assertGreaterEqual(resumed, self.ids["job_checkpoint_step_at_least"])
        progress = [e.progress.step for e in events if kind(e) == "progress"]
        self.assertGreater(progress[-1], resumed)
        reply = self.stub.CancelJob(pb.CancelJobRequest(job_id=job_id))
        self.assertGreater(reply.step, resumed)
        end = collect(self.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=300))
        self.assertEqual(kind(end[-1]), "cancelled", end[-1])


def main():
    def keep(args):
        global ARGS, pb
        ARGS = args
        _, pb = h.import_api(args.proto, args.work)
    h.run_tests(["--server", "--proto", "--work"], keep, optional=["--render-tolerance"])


if __name__ == "__main__":
    main()

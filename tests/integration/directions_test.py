"""Semantic directions through the API, checked by an independent Python client against a
real i2s_server with two models and three tenants: every import format (InterFaceGAN .npy,
per-layer .npy, GANSpace's np.savez_compressed .npz), the exact algebra of ApplyDirections
(w + alpha * sigma * d on the chosen rows, conditioned, chained with other edits, stored
under request IDs), ComputeDirection against ExpressionTransfer, DirectionFrames, tenancy,
the quota, and every refusal naming its field.

Run: directions_test.py --server build/server/i2s_server --tool build/tools/i2s_tool/i2s_tool
     --proto proto --work DIR [unittest args]
"""

import io
import os
import subprocess
import sys
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import i2s_harness as h  # noqa: E402
from i2s_harness import collect  # noqa: E402

ARGS = None
grpc = None
pb = None

TOKENS = {"alpha": "alpha-token-dir-0123456789ab", "beta": "beta-token-dir-0123456789abc",
          "ops": "ops-token-dir-0123456789abcd"}
L, D = 8, 512  # the 32x32 demo model's W+
MAX_DIRECTIONS = 8


def setUpModule():
    global grpc, pb
    grpc, pb = h.import_api(ARGS.proto, ARGS.work)


def auth(tenant):
    return [("authorization", "Bearer " + TOKENS[tenant])]


def npy(array):
    buf = io.BytesIO()
    np.save(buf, np.asarray(array))
    return buf.getvalue()


def ganspace_npz(comp, stdev):
    """As GANSpace's decomposition.py writes it (np.savez_compressed, float32)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, act_comp=np.zeros((3, 4), np.float32),
                        lat_comp=comp.astype(np.float32), lat_mean=np.zeros((1, D), np.float32),
                        lat_stdev=stdev.astype(np.float32),
                        var_ratio=np.full(len(stdev), 0.1, np.float32))
    return buf.getvalue()


def ref(latent_id):
    return pb.LatentRef(latent_id=latent_id)


class DirectionsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        work = h.fresh_dir(os.path.join(ARGS.work, "directions"))
        other = os.path.join(work, "other.pt")
        subprocess.run([ARGS.tool, "random-model", "--arch", "stylegan2", "--resolution", "32",
                        "--fmap-base", "256", "--seed", "5", "--out", other], check=True,
                       capture_output=True)
        vgg = os.path.join(work, "vgg.pt")  # a real model needs one (random: never used here)
        subprocess.run([ARGS.tool, "random-model", "--kind", "vgg16", "--seed", "1", "--out",
                        vgg], check=True, capture_output=True)
        tokens = os.path.join(work, "tokens")
        with open(tokens, "w") as f:
            f.write(f"{TOKENS['alpha']} alpha\n{TOKENS['beta']} beta\n{TOKENS['ops']} ops admin\n")
        data = os.path.join(work, "data")
        os.makedirs(data)
        cls.server = h.Server(ARGS.server, data, extra=[
            "--auth-tokens", tokens, "--model", f"other={other}", "--vgg", vgg,
            "--tenant-max-directions", str(MAX_DIRECTIONS), "--metrics-address", "127.0.0.1:0",
            "--metrics-port-file", os.path.join(data, "metrics-port")]).start()
        cls.addClassCleanup(cls.server.kill)
        cls.stub = cls.server.stub()
        cls.rng = np.random.default_rng(3)
        models = cls.stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=auth("alpha")).models
        cls.default = next(m.name for m in models if m.is_default)
        cls.second = next(m.name for m in models if not m.is_default)

    @classmethod
    def tearDownClass(cls):
        code, _ = cls.server.stop()
        assert code == 0, cls.server.log()

    def call(self, method, request, tenant="alpha"):
        return getattr(self.stub, method)(request, metadata=auth(tenant), timeout=120)

    def refused(self, code, field, method, request, tenant="alpha"):
        with self.assertRaises(grpc.RpcError) as cm:
            r = self.call(method, request, tenant)
            if hasattr(r, "__iter__") and not hasattr(r, "ListFields"):
                list(r)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        self.assertTrue(cm.exception.details().startswith(field), cm.exception.details())
        return cm.exception.details()

    def latent(self, values=None, model="", tenant="alpha"):
        w = self.rng.standard_normal((L, D)).astype(np.float32) if values is None else values
        lat = self.call("ImportLatent", pb.ImportLatentRequest(npy=npy(w), model=model), tenant)
        return lat.id, w

    def values(self, latent_id, tenant="alpha"):
        lat = self.call("GetLatent", pb.GetLatentRequest(latent_id=latent_id,
                                                         include_values=True), tenant)
        return np.array(lat.values, np.float32).reshape(lat.num_layers, lat.latent_size)

    def direction(self, name, tenant="alpha", model=""):
        d = self.call("GetDirection", pb.GetDirectionRequest(name=name, model=model,
                                                             include_values=True), tenant)
        return np.array(d.values, np.float32).reshape(d.num_layers, d.latent_size), d.sigma

    def clear(self, tenant="alpha"):
        for d in self.call("ListDirections", pb.ListDirectionsRequest(), tenant).directions:
            self.call("DeleteDirection", pb.DeleteDirectionRequest(model=d.model, name=d.name),
                      tenant)

    def setUp(self):
        for tenant in ("alpha", "beta"):
            self.clear(tenant)

    def test_import_every_format_and_apply_exactly(self):
        boundary = self.rng.standard_normal((1, D)).astype(np.float32)
        boundary /= np.linalg.norm(boundary)
        r = self.call("ImportDirection", pb.ImportDirectionRequest(name="smile",
                                                                   file=npy(boundary)))
        d = r.directions[0]
        self.assertEqual((d.name, d.num_layers, d.latent_size, d.sigma, d.source),
                         ("smile", 1, D, 1.0, "interfacegan_npy"))
        self.assertAlmostEqual(d.norm, 1.0, places=5)
        self.assertEqual(d.model, self.default)
        self.assertEqual(len(d.values), 0)
        pose = self.rng.standard_normal((L, D)).astype(np.float32)
        d = self.call("ImportDirection", pb.ImportDirectionRequest(name="pose",
                                                                   file=npy(pose))).directions[0]
        self.assertEqual((d.num_layers, d.source), (L, "wplus_npy"))
        comp = self.rng.standard_normal((3, 1, D)).astype(np.float32)
        stdev = np.array([3.0, 2.0, 0.5], np.float32)
        r = self.call("ImportDirection", pb.ImportDirectionRequest(
            name="gs", file=ganspace_npz(comp, stdev), components=[0, 2]))
        self.assertEqual([(x.name, x.sigma, x.source) for x in r.directions],
                         [("gs_pc0", 3.0, "ganspace_npz"), ("gs_pc2", 0.5, "ganspace_npz")])
        got, sigma = self.direction("gs_pc2")
        np.testing.assert_array_equal(got[0], comp[2, 0])
        # The algebra: w + 1.5 * smile - 0.5 * pose on rows 2..5, the rest untouched.
        lat, w = self.latent()
        e = self.call("ApplyDirections", pb.ApplyDirectionsRequest(
            latent=ref(lat), steps=[pb.DirectionStep(name="smile", alpha=1.5),
                                    pb.DirectionStep(name="pose", alpha=-0.5)],
            first_layer=2, last_layer=5, store_result=True, request_id="edit-1"))
        self.assertEqual(e.latent.source, "directions")
        self.assertEqual(list(e.latent.parents), [lat])
        self.assertEqual((e.image.width, e.image.height), (32, 32))
        edited = self.values(e.latent.id)
        want = w.copy()
        want[2:6] = w[2:6] + np.float32(1.5) * boundary[0]
        want[2:6] = want[2:6] + np.float32(-0.5) * pose[2:6]
        np.testing.assert_allclose(edited, want, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(edited[:2], w[:2])
        np.testing.assert_array_equal(edited[6:], w[6:])
        # The same request ID answers with the same latent; another request under it is refused.
        again = self.call("ApplyDirections", pb.ApplyDirectionsRequest(
            latent=ref(lat), steps=[pb.DirectionStep(name="smile", alpha=1.5),
                                    pb.DirectionStep(name="pose", alpha=-0.5)],
            first_layer=2, last_layer=5, store_result=True, request_id="edit-1"))
        self.assertEqual(again.latent.id, e.latent.id)
        self.refused(grpc.StatusCode.INVALID_ARGUMENT, "request_id", "ApplyDirections",
                     pb.ApplyDirectionsRequest(latent=ref(lat), store_result=True,
                                               steps=[pb.DirectionStep(name="smile", alpha=2)],
                                               request_id="edit-1"))
        # Chained: along a GANSpace component (alpha in units of its sigma) on every row...
        e2 = self.call("ApplyDirections", pb.ApplyDirectionsRequest(
            latent=ref(e.latent.id), steps=[pb.DirectionStep(name="gs_pc2", alpha=2)],
            store_result=True))
        np.testing.assert_allclose(self.values(e2.latent.id),
                                   edited + np.float32(2 * 0.5) * comp[2, 0], rtol=0, atol=1e-6)
        # ... and then with the other edits (a style mix of the result).
        _, other_w = self.latent()
        mix = self.call("StyleMix", pb.StyleMixRequest(
            content=ref(e2.latent.id), style=pb.LatentRef(values=pb.LatentValues(
                num_layers=L, latent_size=D, values=other_w.ravel().tolist())),
            crossover=4, store_result=True))
        np.testing.assert_array_equal(self.values(mix.latent.id)[:4],
                                      self.values(e2.latent.id)[:4])
        # Conditioned on gs_pc0: the change is orthogonal to it on every row, as long as
        # the step alone.
        e3 = self.call("ApplyDirections", pb.ApplyDirectionsRequest(
            latent=ref(lat), steps=[pb.DirectionStep(name="smile", alpha=2)],
            condition_on=["gs_pc0"], store_result=True))
        delta = self.values(e3.latent.id) - w
        pc0 = comp[0, 0] / np.linalg.norm(comp[0, 0])
        np.testing.assert_allclose(delta @ pc0, 0, atol=1e-4)
        np.testing.assert_allclose(np.linalg.norm(delta, axis=1), 2.0, rtol=1e-4)

    def test_compute_is_expression_transfer_generalised(self):
        target, w = self.latent()
        neutral, wn = self.latent()
        expr, we = self.latent()
        d = self.call("ComputeDirection", pb.ComputeDirectionRequest(
            name="expr", from_latents=[ref(neutral)], to_latents=[ref(expr)]))
        self.assertEqual((d.num_layers, d.source), (L, "mean_difference"))
        self.assertIn(neutral, d.params_json)
        a = self.call("ApplyDirections", pb.ApplyDirectionsRequest(
            latent=ref(target), steps=[pb.DirectionStep(name="expr", alpha=1.5)],
            first_layer=1, last_layer=4, store_result=True))
        b = self.call("ExpressionTransfer", pb.ExpressionTransferRequest(
            target=ref(target), neutral=ref(neutral), expression=ref(expr), strength=1.5,
            first_layer=1, last_layer=4, store_result=True))
        np.testing.assert_allclose(self.values(a.latent.id), self.values(b.latent.id), rtol=0,
                                   atol=1e-6)
        # Sets of latents and a W direction: the mean difference, its rows averaged.
        others = [self.latent() for _ in range(3)]
        d = self.call("ComputeDirection", pb.ComputeDirectionRequest(
            name="mean", from_latents=[ref(x[0]) for x in others[:2]],
            to_latents=[ref(others[2][0])], collapse_to_w=True))
        self.assertEqual(d.num_layers, 1)
        got, _ = self.direction("mean")
        want = (others[2][1] - (others[0][1] + others[1][1]) / 2).mean(axis=0)
        np.testing.assert_allclose(got[0], want, rtol=0, atol=1e-5)

    def test_frames_along_a_direction(self):
        v = self.rng.standard_normal(D).astype(np.float32)
        self.call("ImportDirection", pb.ImportDirectionRequest(name="walk", file=npy(v)))
        lat, _ = self.latent()
        frames = list(self.call("DirectionFrames", pb.DirectionFramesRequest(
            latent=ref(lat), direction="walk", alphas=[-2, 0, 2])))
        self.assertEqual([(f.index, f.frames, f.alpha) for f in frames],
                         [(0, 3, -2.0), (1, 3, 0.0), (2, 3, 2.0)])
        plain = self.call("Synthesize", pb.SynthesizeRequest(latent=ref(lat)))
        self.assertEqual(frames[1].image.data, plain.image.data)
        edit = self.call("ApplyDirections", pb.ApplyDirectionsRequest(
            latent=ref(lat), steps=[pb.DirectionStep(name="walk", alpha=2)]))
        self.assertEqual(frames[2].image.data, edit.image.data)
        self.assertFalse(edit.HasField("latent"))  # not stored without store_result
        self.assertNotEqual(frames[0].image.data, frames[1].image.data)

    def test_tenancy_models_quota_and_usage(self):
        v = self.rng.standard_normal(D).astype(np.float32)
        self.call("ImportDirection", pb.ImportDirectionRequest(name="smile", file=npy(v)))
        # The same file again is the same direction (a repeated call); another is refused.
        self.call("ImportDirection", pb.ImportDirectionRequest(name="smile", file=npy(v)))
        self.assertIn("already exists", self.refused(
            grpc.StatusCode.ALREADY_EXISTS, "name", "ImportDirection",
            pb.ImportDirectionRequest(name="smile", file=npy(v * 2))))
        # Another tenant sees none of it and keeps its own under the same name.
        self.assertEqual(len(self.call("ListDirections", pb.ListDirectionsRequest(),
                                       "beta").directions), 0)
        self.refused(grpc.StatusCode.NOT_FOUND, "name", "GetDirection",
                     pb.GetDirectionRequest(name="smile"), "beta")
        lat_b, _ = self.latent(tenant="beta")
        self.refused(grpc.StatusCode.NOT_FOUND, "steps[0].name", "ApplyDirections",
                     pb.ApplyDirectionsRequest(latent=ref(lat_b),
                                               steps=[pb.DirectionStep(name="smile", alpha=1)]),
                     "beta")
        self.call("ImportDirection", pb.ImportDirectionRequest(name="smile", file=npy(-v)), "beta")
        mine, _ = self.direction("smile")
        np.testing.assert_array_equal(mine[0], v)
        everyone = self.call("ListDirections", pb.ListDirectionsRequest(all_tenants=True), "ops")
        self.assertEqual(sorted(d.tenant for d in everyone.directions), ["alpha", "beta"])
        self.refused(grpc.StatusCode.PERMISSION_DENIED, "", "ListDirections",
                     pb.ListDirectionsRequest(all_tenants=True))
        # Directions are per model: the other model's latent does not see the default's.
        self.call("ImportDirection", pb.ImportDirectionRequest(name="age", model=self.second,
                                                               file=npy(v)))
        other_lat, _ = self.latent(model=self.second)
        self.assertIn(f'for model "{self.second}"', self.refused(
            grpc.StatusCode.NOT_FOUND, "steps[0].name", "ApplyDirections",
            pb.ApplyDirectionsRequest(latent=ref(other_lat),
                                      steps=[pb.DirectionStep(name="smile", alpha=1)])))
        self.call("ApplyDirections", pb.ApplyDirectionsRequest(
            latent=ref(other_lat), steps=[pb.DirectionStep(name="age", alpha=1)]))
        mine = self.call("ListDirections",
                         pb.ListDirectionsRequest(model=self.default)).directions
        self.assertEqual([d.name for d in mine], ["smile"])
        # Usage counts them; the quota stops the ninth, writing nothing.
        usage = self.call("GetUsage", pb.GetUsageRequest()).usage[0]
        self.assertEqual((usage.directions, usage.direction_bytes), (2, 2 * D * 4))
        self.assertEqual(self.call("GetServerInfo", pb.GetServerInfoRequest())
                         .limits.quotas.max_directions, MAX_DIRECTIONS)
        comp = self.rng.standard_normal((MAX_DIRECTIONS, 1, D)).astype(np.float32)
        details = self.refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "", "ImportDirection",
                               pb.ImportDirectionRequest(name="gs", file=ganspace_npz(
                                   comp, np.ones(MAX_DIRECTIONS))))
        self.assertIn("direction quota", details)
        self.assertIn("--tenant-max-directions", details)
        names = [d.name for d in self.call("ListDirections", pb.ListDirectionsRequest()).directions]
        self.assertEqual(len(names), MAX_DIRECTIONS)  # those before the limit stay
        self.call("DeleteDirection", pb.DeleteDirectionRequest(name="smile"))
        self.refused(grpc.StatusCode.NOT_FOUND, "name", "DeleteDirection",
                     pb.DeleteDirectionRequest(name="smile"))

    def test_every_directions_rpc_is_counted(self):
        v = self.rng.standard_normal(D).astype(np.float32)
        self.call("ImportDirection", pb.ImportDirectionRequest(name="m", file=npy(v)))
        self.refused(grpc.StatusCode.NOT_FOUND, "name", "GetDirection",
                     pb.GetDirectionRequest(name="nope"))
        with open(os.path.join(self.server.data_dir, "metrics-port")) as f:
            port = int(f.read())
        status, _, body = h.http_request(port, "/metrics")
        self.assertEqual(status, 200)
        text = body.decode()
        for method, code in (("ImportDirection", "OK"), ("GetDirection", "NOT_FOUND")):
            self.assertRegex(text, r'i2s_rpc_requests_total\{[^}]*method="%s"[^}]*code="%s"'
                             % (method, code) + r'|i2s_rpc_requests_total\{[^}]*code="%s"[^}]*'
                             r'method="%s"' % (code, method))

    def test_refusals_name_their_field(self):
        INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
        v = self.rng.standard_normal(D).astype(np.float32)
        self.call("ImportDirection", pb.ImportDirectionRequest(name="smile", file=npy(v)))
        lat, _ = self.latent()
        imp = lambda **kw: pb.ImportDirectionRequest(**{"name": "x", "file": npy(v), **kw})
        self.refused(INVALID, "name", "ImportDirection", imp(name=""))
        self.refused(INVALID, "name", "ImportDirection", imp(name="no spaces"))
        self.refused(INVALID, "name", "ImportDirection", imp(name="x" * 65))
        self.refused(INVALID, "file", "ImportDirection", imp(file=b""))
        self.refused(INVALID, "file", "ImportDirection", imp(file=b"not a file"))
        self.refused(INVALID, "file", "ImportDirection", imp(file=npy(np.zeros(D, np.float32))))
        nan = v.copy()
        nan[3] = np.nan
        self.assertIn("NaN", self.refused(INVALID, "file", "ImportDirection", imp(file=npy(nan))))
        self.refused(INVALID, "file", "ImportDirection",
                     imp(file=npy(np.ones((1, D + 1), np.float32))))
        self.refused(INVALID, "file", "ImportDirection",
                     imp(file=npy(np.ones((L + 1, D), np.float32))))
        self.refused(INVALID, "components", "ImportDirection", imp(
            file=ganspace_npz(np.ones((2, 1, D)), np.ones(2)), components=[5]))
        self.refused(NOT_FOUND, "model", "ImportDirection", imp(model="nope"))
        step = lambda **kw: pb.DirectionStep(**{"name": "smile", "alpha": 1, **kw})
        app = lambda **kw: pb.ApplyDirectionsRequest(**{"latent": ref(lat), "steps": [step()],
                                                        **kw})
        self.refused(INVALID, "steps", "ApplyDirections", app(steps=[]))
        self.refused(INVALID, "steps[0].alpha", "ApplyDirections",
                     app(steps=[step(alpha=float("nan"))]))
        self.refused(INVALID, "steps[0].alpha", "ApplyDirections", app(steps=[step(alpha=101)]))
        self.refused(INVALID, "steps[0].name", "ApplyDirections", app(steps=[step(name="a b")]))
        self.refused(NOT_FOUND, "steps[1].name", "ApplyDirections",
                     app(steps=[step(), step(name="nope")]))
        self.refused(NOT_FOUND, "condition_on[0]", "ApplyDirections", app(condition_on=["nope"]))
        self.refused(INVALID, "first_layer", "ApplyDirections", app(first_layer=L))
        self.refused(INVALID, "last_layer", "ApplyDirections", app(first_layer=1, last_layer=0))
        self.refused(INVALID, "last_layer", "ApplyDirections", app(last_layer=L))
        self.assertIn("lies in their span", self.refused(
            INVALID, "condition_on:", "ApplyDirections", app(condition_on=["smile"])))
        self.refused(NOT_FOUND, "latent", "ApplyDirections", app(latent=ref("lat_nope")))
        self.refused(INVALID, "latent", "ApplyDirections", app(latent=pb.LatentRef()))
        fr = lambda **kw: pb.DirectionFramesRequest(**{"latent": ref(lat), "direction": "smile",
                                                       "alphas": [0, 1], **kw})
        self.refused(INVALID, "alphas", "DirectionFrames", fr(alphas=[]))
        self.refused(INVALID, "alphas[1]", "DirectionFrames", fr(alphas=[0, float("inf")]))
        self.refused(INVALID, "alphas", "DirectionFrames", fr(alphas=[0.0] * 100000))
        self.refused(NOT_FOUND, "direction", "DirectionFrames", fr(direction="nope"))
        comp = lambda **kw: pb.ComputeDirectionRequest(**{"name": "c", "from_latents": [ref(lat)],
                                                          "to_latents": [ref(lat)], **kw})
        self.refused(INVALID, "from_latents", "ComputeDirection", comp(from_latents=[]))
        self.refused(NOT_FOUND, "to_latents[0]", "ComputeDirection",
                     comp(to_latents=[ref("lat_nope")]))
        self.assertIn("all zero", self.refused(INVALID, "to", "ComputeDirection", comp()))
        self.refused(INVALID, "page_size", "ListDirections", pb.ListDirectionsRequest(
            page_size=5000))
        with self.assertRaises(grpc.RpcError) as cm:  # no token
            self.stub.ListDirections(pb.ListDirectionsRequest(), timeout=60)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)


if __name__ == "__main__":
    h.run_tests(["--server", "--tool", "--proto", "--work"], globals())

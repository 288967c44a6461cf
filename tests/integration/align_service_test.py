"""FFHQ alignment through the API, checked by an independent Python client against a real
i2s_server: Embed with align LANDMARKS / AUTO, what comes back with the job and with its
latent (also after a restart), AlignFace, the no-face behaviours, and every bad input;
then with MTCNN (--mtcnn DIR): every face of a real group photo, the choice of face, and
paste-back (PasteBack, Synthesize/StyleMix paste_into) with its refusals.

Run: align_service_test.py --server build/server/i2s_server --proto proto --work DIR
     [--mtcnn DIR (scripts/fetch-models) --photos DIR (scripts/fetch-photos)]
"""

import io
import os
import sys
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import i2s_harness as h  # noqa: E402
from i2s_harness import kind  # noqa: E402

ARGS = None
grpc = None
pb = None

# python3-skimage's astronaut (512x512), landmarks placed by hand on 8x enlargements:
# eye, eye, nose, mouth corner, mouth corner.
ASTRONAUT = [(203.5, 101.0), (246.5, 103.1), (225.0, 120.0), (202.5, 140.0), (245.0, 140.6)]


def setUpModule():
    global grpc, pb
    grpc, pb = h.import_api(ARGS.proto, ARGS.work)


def new_server(name, extra=()):
    return h.Server(ARGS.server, h.fresh_dir(os.path.join(ARGS.work, name)), extra=list(extra))


def ffhq_transform(eye_l, eye_r, mouth_l, mouth_r, size):
    """The published FFHQ crop square, written here from its description, as the map photo
    (x, y) -> aligned (u, v) in pixel-index coordinates: (2x3 matrix, quad corners)."""
    eye_l, eye_r, mouth_l, mouth_r = (np.asarray(p, np.float64)
                                      for p in (eye_l, eye_r, mouth_l, mouth_r))
    eye_avg = (eye_l + eye_r) / 2
    eye_to_eye = eye_r - eye_l
    eye_to_mouth = (mouth_l + mouth_r) / 2 - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    # PIL's QUAD transform samples output point (s, t) in [0, size]^2 at photo point
    # quad[0] + 0.5 + (s * (quad[3] - quad[0]) + t * (quad[1] - quad[0])) / size, both in
    # continuous coordinates (pixel centres at +0.5). In index coordinates (u = s - 0.5,
    # p = photo point - 0.5): u + 0.5 = inv (p - quad[0]).
    basis = np.stack([quad[3] - quad[0], quad[1] - quad[0]], axis=1) / size
    inv = np.linalg.inv(basis)
    m = np.zeros((2, 3))
    m[:, :2] = inv
    m[:, 2] = -inv @ quad[0] - 0.5
    return m, quad


def apply(m, p):
    return m[:, :2] @ np.asarray(p, np.float64) + m[:, 2]


def transform_of(alignment):
    return np.array(alignment.transform, np.float64).reshape(2, 3)


def decode_png(data):
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))




class AlignServiceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # The Haar cascades (the fallback detector); MTCNN is FacesAndPasteTest's.
        cls.server = new_server("align", ["--mtcnn", "none"]).start()
        cls.addClassCleanup(cls.server.kill)  # if GetServerInfo fails (no tearDownClass then)
        cls.stub = cls.server.stub()
        cls.info = cls.stub.GetServerInfo(pb.GetServerInfoRequest())
        cls.size = cls.info.models[0].resolution

    @classmethod
    def tearDownClass(cls):
        code, _ = cls.server.stop()
        assert code == 0, cls.server.log()

    def embed(self, image, align, **kw):
        req = pb.EmbedRequest(image=h.image_bytes(image), align=align,
                              options=pb.EmbedOptions(steps=3, w_perceptual=0.0), **kw)
        return h.collect(self.stub.Embed(req, timeout=300))

    def assertInvalid(self, field, fn, *args, code=None, **kw):
        with self.assertRaises(grpc.RpcError) as cm:
            r = fn(*args, **kw)
            if hasattr(r, "__iter__") and not hasattr(r, "ListFields"):
                list(r)
        self.assertEqual(cm.exception.code(), code or grpc.StatusCode.INVALID_ARGUMENT,
                         cm.exception.details())
        self.assertTrue(cm.exception.details().startswith(field + ":"), cm.exception.details())
        return cm.exception.details()

    def test_server_reports_its_detector(self):
        self.assertIn("haar cascades", self.info.face_detector)

    def test_embed_with_given_landmarks(self):
        align = pb.AlignOptions(mode=pb.AlignOptions.LANDMARKS,
                                landmarks=[pb.Point(x=x, y=y) for x, y in ASTRONAUT])
        events = self.embed("astronaut.png", align, return_aligned_image=True)
        done = events[-1]
        self.assertEqual(kind(done), "succeeded", done)
        a = done.succeeded.alignment
        self.assertEqual(a.method, "landmarks")
        self.assertEqual(a.confidence, 1.0)
        self.assertEqual((a.source_width, a.source_height, a.size), (512, 512, self.size))
        expected, quad = ffhq_transform(ASTRONAUT[0], ASTRONAUT[1], ASTRONAUT[3], ASTRONAUT[4],
                                        self.size)
        # 512 / 32 shrinks by exactly 2 (FFHQ's shrink step), so the map is the ideal one.
        np.testing.assert_allclose(transform_of(a), expected, atol=1e-6)
        np.testing.assert_allclose([[p.x, p.y] for p in a.quad], quad, atol=1e-6)
        self.assertEqual([(p.x, p.y) for p in a.landmarks],
                         [ASTRONAUT[0], ASTRONAUT[1], ASTRONAUT[3], ASTRONAUT[4]])
        img = decode_png(a.aligned.data)
        self.assertEqual(img.shape, (self.size, self.size, 3))
        self.assertEqual((a.aligned.width, a.aligned.height), (self.size, self.size))
        # The latent keeps the alignment (no image).
        lat = self.stub.GetLatent(pb.GetLatentRequest(latent_id=done.succeeded.latent_id))
        self.assertEqual(lat.alignment.method, "landmarks")
        np.testing.assert_allclose(transform_of(lat.alignment), expected, atol=1e-6)
        self.assertFalse(lat.alignment.HasField("aligned"))
        # Replaying the finished job gives the same alignment.
        replay = h.collect(self.stub.WatchJob(pb.WatchJobRequest(job_id=done.job_id),
                                              timeout=60))
        self.assertEqual(replay[-1].succeeded.alignment.method, "landmarks")

    def test_embed_without_alignment_has_none(self):
        done = self.embed("astronaut.png", pb.AlignOptions())[-1]
        self.assertEqual(kind(done), "succeeded", done)
        self.assertFalse(done.succeeded.HasField("alignment"))
        lat = self.stub.GetLatent(pb.GetLatentRequest(latent_id=done.succeeded.latent_id))
        self.assertFalse(lat.HasField("alignment"))
        self.assertEqual(lat.params_json, "")

    def test_embed_with_automatic_landmarks(self):
        events = self.embed("astronaut.png", pb.AlignOptions(mode=pb.AlignOptions.AUTO))
        a = events[-1].succeeded.alignment
        self.assertEqual(a.method, "haar")
        self.assertGreaterEqual(a.confidence, 0.8)
        self.assertFalse(a.HasField("aligned"))  # not asked for
        found = [(p.x, p.y) for p in a.landmarks]
        for got, want in zip(found[:2], ASTRONAUT[:2]):
            self.assertLess(np.hypot(got[0] - want[0], got[1] - want[1]), 5, found)
        # The hand-placed eyes land within a pixel (at 32x32) of their canonical places.
        canonical, _ = ffhq_transform(ASTRONAUT[0], ASTRONAUT[1], ASTRONAUT[3], ASTRONAUT[4],
                                      self.size)
        m = transform_of(a)
        for eye in ASTRONAUT[:2]:
            self.assertLess(np.linalg.norm(apply(m, eye) - apply(canonical, eye)), 1.0)

    def test_align_face(self):
        r = self.stub.AlignFace(pb.AlignFaceRequest(
            image=h.image_bytes("astronaut.png"), size=128,
            align=pb.AlignOptions(mode=pb.AlignOptions.AUTO)), timeout=60)
        a = r.alignment
        self.assertEqual(a.method, "haar")
        self.assertEqual(a.size, 128)
        img = decode_png(a.aligned.data)
        self.assertEqual(img.shape, (128, 128, 3))
        # The transform says where each photo pixel went: sample the photo back through the
        # inverse at a few aligned pixels near the face and compare colours.
        from PIL import Image
        photo = np.asarray(Image.open(os.path.join(h.SKIMAGE_DATA, "astronaut.png"))
                           .convert("RGB")).astype(np.float64)
        m = transform_of(a)
        inv = np.linalg.inv(m[:, :2])
        diffs = []
        for u in range(40, 90, 7):
            for v in range(40, 90, 7):
                x, y = inv @ (np.array([u, v]) - m[:, 2])
                diffs.append(np.abs(photo[int(round(y)), int(round(x))] - img[v, u]).mean())
        self.assertLess(np.median(diffs), 12, diffs)
        # The default size is the model's.
        r = self.stub.AlignFace(pb.AlignFaceRequest(
            image=h.image_bytes("astronaut.png"),
            align=pb.AlignOptions(mode=pb.AlignOptions.LANDMARKS,
                                  landmarks=[pb.Point(x=x, y=y) for x, y in ASTRONAUT])))
        self.assertEqual(r.alignment.size, self.size)

    def test_no_face(self):
        details = self.assertInvalid(
            "image", self.embed, "coffee.png", pb.AlignOptions(mode=pb.AlignOptions.AUTO))
        self.assertIn("no face found", details)
        self.assertIn("on_no_face = RESIZE", details)
        events = self.embed("coffee.png", pb.AlignOptions(mode=pb.AlignOptions.AUTO,
                                                          on_no_face=pb.AlignOptions.RESIZE),
                            return_aligned_image=True)
        a = events[-1].succeeded.alignment
        self.assertEqual(a.method, "none")
        self.assertIn("no face found", a.note)
        self.assertEqual(len(a.landmarks), 0)
        # The centre crop as a transform: 600x400 -> the middle 400x400 -> size.
        s = self.size / 400
        np.testing.assert_allclose(transform_of(a), [[s, 0, -100 * s + 0.5 * s - 0.5],
                                                     [0, s, 0.5 * s - 0.5]], atol=1e-9)
        self.assertEqual(decode_png(a.aligned.data).shape, (self.size, self.size, 3))

    def test_bad_inputs(self):
        three = pb.AlignOptions(mode=pb.AlignOptions.LANDMARKS,
                                landmarks=[pb.Point(x=1, y=2)] * 3)
        self.assertIn("expected 5 points", self.assertInvalid(
            "align.landmarks", self.embed, "astronaut.png", three))
        on_line = pb.AlignOptions(mode=pb.AlignOptions.LANDMARKS, landmarks=[
            pb.Point(x=10, y=10), pb.Point(x=30, y=10), pb.Point(x=20, y=10),
            pb.Point(x=12, y=10), pb.Point(x=28, y=10)])
        self.assertInvalid("align.landmarks", self.embed, "astronaut.png", on_line)
        nan = pb.AlignOptions(mode=pb.AlignOptions.LANDMARKS,
                              landmarks=[pb.Point(x=float("nan"), y=1)] + [pb.Point(x=5, y=5)] * 4)
        self.assertInvalid("align.landmarks[0]", self.embed, "astronaut.png", nan)
        far = pb.AlignOptions(mode=pb.AlignOptions.LANDMARKS, landmarks=[
            pb.Point(x=9000 + x, y=9000 + y) for x, y in ASTRONAUT])
        self.assertIn("outside the image", self.assertInvalid(
            "align.landmarks", self.embed, "astronaut.png", far))
        stray = pb.AlignOptions(mode=pb.AlignOptions.AUTO, landmarks=[pb.Point(x=1, y=1)])
        self.assertInvalid("align.landmarks", self.embed, "astronaut.png", stray)
        self.assertInvalid("align.min_confidence", self.embed, "astronaut.png",
                           pb.AlignOptions(mode=pb.AlignOptions.AUTO, min_confidence=1.5))
        self.assertInvalid("align.mode", self.embed, "astronaut.png", pb.AlignOptions(mode=9))
        self.assertInvalid("align.on_no_face", self.embed, "astronaut.png",
                           pb.AlignOptions(mode=pb.AlignOptions.AUTO, on_no_face=7))
        self.assertInvalid("return_aligned_image", self.embed, "astronaut.png",
                           pb.AlignOptions(), return_aligned_image=True)
        self.assertInvalid("align.mode", self.stub.AlignFace,
                           pb.AlignFaceRequest(image=h.image_bytes("astronaut.png")))
        self.assertInvalid("size", self.stub.AlignFace, pb.AlignFaceRequest(
            image=h.image_bytes("astronaut.png"), size=5,
            align=pb.AlignOptions(mode=pb.AlignOptions.AUTO)))
        self.assertInvalid("image", self.stub.AlignFace, pb.AlignFaceRequest(
            image=b"not an image", align=pb.AlignOptions(mode=pb.AlignOptions.AUTO)))
        self.assertInvalid("model", self.stub.AlignFace, pb.AlignFaceRequest(
            model="nope", image=h.image_bytes("astronaut.png"),
            align=pb.AlignOptions(mode=pb.AlignOptions.AUTO)), code=grpc.StatusCode.NOT_FOUND)


def png_bytes(array):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class MaskedEmbedTest(unittest.TestCase):
    """Image2StyleGAN++'s masked embedding through Embed: masks over the photo or over the
    target, what they leave out has no effect, and every bad mask is refused by name."""

    # A region of the astronaut's photo (chin and collar), x0, y0, x1, y1.
    HOLE = (175, 150, 280, 215)

    @classmethod
    def setUpClass(cls):
        cls.server = new_server("masks", ["--mtcnn", "none"]).start()
        cls.addClassCleanup(cls.server.kill)
        cls.stub = cls.server.stub()
        cls.size = cls.stub.GetServerInfo(pb.GetServerInfoRequest()).models[0].resolution
        from PIL import Image
        cls.photo = np.asarray(Image.open(io.BytesIO(h.image_bytes("astronaut.png")))
                               .convert("RGB"))
        x0, y0, x1, y1 = cls.HOLE
        cls.keep = np.full(cls.photo.shape[:2], 255, np.uint8)
        cls.keep[y0:y1, x0:x1] = 0
        cls.landmarks = pb.AlignOptions(mode=pb.AlignOptions.LANDMARKS,
                                        landmarks=[pb.Point(x=x, y=y) for x, y in ASTRONAUT])

    @classmethod
    def tearDownClass(cls):
        code, _ = cls.server.stop()
        assert code == 0, cls.server.log()

    def embed(self, photo, **kw):
        req = pb.EmbedRequest(image=png_bytes(photo), align=self.landmarks,
                              options=pb.EmbedOptions(steps=3, perceptual_resolution=32),
                              return_aligned_image=True, **kw)
        done = h.collect(self.stub.Embed(req, timeout=300))[-1]
        self.assertEqual(kind(done), "succeeded", done)
        lat = self.stub.GetLatent(pb.GetLatentRequest(latent_id=done.succeeded.latent_id,
                                                      include_values=True))
        return done, lat

    def test_what_the_mask_leaves_out_has_no_effect(self):
        import hashlib
        import json
        x0, y0, x1, y1 = self.HOLE
        other = self.photo.copy()
        other[y0:y1, x0:x1] = np.random.default_rng(7).integers(0, 256, (y1 - y0, x1 - x0, 3))
        mask = png_bytes(self.keep)
        a_done, a = self.embed(self.photo, mask=mask)
        b_done, b = self.embed(other, mask=mask)
        # Both losses (pixel and perceptual) and the resampling never saw the hole.
        self.assertEqual(list(a.values), list(b.values))
        self.assertEqual(a_done.succeeded.alignment.aligned.data,
                         b_done.succeeded.alignment.aligned.data)
        # Without the mask the same two photos give different latents (the check can fail).
        _, c = self.embed(self.photo)
        _, d = self.embed(other)
        self.assertNotEqual(list(c.values), list(d.values))
        # The hole shows grey in the target, where the alignment puts its centre.
        target = decode_png(a_done.succeeded.alignment.aligned.data)
        u, v = apply(transform_of(a_done.succeeded.alignment), ((x0 + x1) / 2, (y0 + y1) / 2))
        np.testing.assert_array_equal(target[int(round(v)), int(round(u))], [128, 128, 128])
        # The latent records the masks, and keeps its alignment.
        rec = json.loads(a.params_json)["masks"]
        self.assertEqual(rec["frame"], "photo")
        self.assertNotIn("perceptual_mask", rec)
        m = rec["mask"]
        self.assertEqual(m["sha256"], "sha256:" + hashlib.sha256(mask).hexdigest())
        self.assertEqual((m["width"], m["height"], m["binary"]), (512, 512, True))
        self.assertGreater(m["coverage"], 0.5)
        self.assertLess(m["coverage"], 1.0)
        self.assertEqual(a.alignment.method, "landmarks")

    def test_masks_over_the_target_and_grey(self):
        import json
        n = self.size
        ramp = np.tile(np.linspace(0, 255, n).round().astype(np.uint8), (n, 1))
        _, lat = self.embed(self.photo, mask=png_bytes(ramp), mask_frame=pb.MASK_FRAME_ALIGNED,
                            perceptual_mask=png_bytes(np.full((n, n), 255, np.uint8)))
        rec = json.loads(lat.params_json)["masks"]
        self.assertEqual(rec["frame"], "aligned")
        self.assertFalse(rec["mask"]["binary"])
        self.assertAlmostEqual(rec["mask"]["coverage"], ramp.mean() / 255, places=5)
        self.assertEqual(rec["perceptual_mask"]["coverage"], 1.0)
        # A perceptual mask alone, over the photo.
        _, lat = self.embed(self.photo, perceptual_mask=png_bytes(self.keep))
        rec = json.loads(lat.params_json)["masks"]
        self.assertEqual(set(rec), {"frame", "perceptual_mask"})

    def test_bad_masks(self):
        def refused(field, **kw):
            with self.assertRaises(grpc.RpcError) as cm:
                self.embed(self.photo, **kw)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT,
                             cm.exception.details())
            self.assertTrue(cm.exception.details().startswith(field + ":"),
                            cm.exception.details())
            return cm.exception.details()

        small = png_bytes(np.full((100, 90), 255, np.uint8))
        self.assertIn("90x100, but the image is 512x512", refused("mask", mask=small))
        self.assertIn(f"needs the model's {self.size}x{self.size}",
                      refused("perceptual_mask", perceptual_mask=small,
                              mask_frame=pb.MASK_FRAME_ALIGNED))
        black = png_bytes(np.zeros((512, 512), np.uint8))
        self.assertIn("counts no pixel", refused("mask", mask=black))
        corner = np.zeros((512, 512), np.uint8)
        corner[:3, :3] = 255  # white only outside the aligned crop
        self.assertIn("counts no pixel of the target", refused("mask", mask=png_bytes(corner)))
        refused("mask", mask=b"not an image")
        refused("perceptual_mask", perceptual_mask=b"\x89PNG\r\n\x1a\n")
        refused("mask_frame", mask=png_bytes(self.keep), mask_frame=7)


class DetectorFlagsTest(unittest.TestCase):
    def test_without_a_detector_auto_is_failed_precondition(self):
        server = new_server("nodetector", ["--no-face-detector"]).start()
        try:
            stub = server.stub()
            self.assertEqual(stub.GetServerInfo(pb.GetServerInfoRequest()).face_detector, "")
            with self.assertRaises(grpc.RpcError) as cm:
                stub.AlignFace(pb.AlignFaceRequest(
                    image=h.image_bytes("astronaut.png"),
                    align=pb.AlignOptions(mode=pb.AlignOptions.AUTO)))
            self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
            self.assertIn("align.mode: automatic alignment is not available",
                          cm.exception.details())
            # Given landmarks still work.
            r = stub.AlignFace(pb.AlignFaceRequest(
                image=h.image_bytes("astronaut.png"),
                align=pb.AlignOptions(mode=pb.AlignOptions.LANDMARKS,
                                      landmarks=[pb.Point(x=x, y=y) for x, y in ASTRONAUT])))
            self.assertEqual(r.alignment.method, "landmarks")
        finally:
            server.stop()

    def test_a_bad_landmark_model_stops_the_start(self):
        d = os.path.join(ARGS.work, "badmodel")
        os.makedirs(d, exist_ok=True)
        junk = os.path.join(d, "model.onnx")
        with open(junk, "w") as f:
            f.write("not a network\n")
        server = new_server("badmodel-data", ["--landmark-model", junk])
        with self.assertRaises(RuntimeError) as cm:
            server.start()
        server._log.close()
        self.assertIn("model.onnx: cannot load the landmark model", str(cm.exception))

    def test_alignment_survives_a_restart(self):
        server = new_server("restart", ["--mtcnn", "none"]).start()
        try:
            stub = server.stub()
            req = pb.EmbedRequest(image=h.image_bytes("astronaut.png"),
                                  align=pb.AlignOptions(mode=pb.AlignOptions.AUTO),
                                  options=pb.EmbedOptions(steps=2, w_perceptual=0.0))
            done = h.collect(stub.Embed(req, timeout=300))[-1]
            before = done.succeeded.alignment
            server.stop()
            server.start()
            stub = server.stub()
            replay = h.collect(stub.WatchJob(pb.WatchJobRequest(job_id=done.job_id), timeout=60))
            self.assertEqual(kind(replay[-1]), "succeeded")
            after = replay[-1].succeeded.alignment
            self.assertEqual(after.method, "haar")
            np.testing.assert_allclose(after.transform, before.transform, atol=1e-9)
            lat = stub.GetLatent(pb.GetLatentRequest(latent_id=done.succeeded.latent_id))
            np.testing.assert_allclose(lat.alignment.transform, before.transform, atol=1e-9)
        finally:
            server.stop()


def paste_mask_weight(u, v, size, feather=0.08):
    """PasteOptions FACE's mask at aligned pixel (u, v), written here from its description
    (an ellipse centred at (0.5, 0.56) of the side, half-axes 0.33 and 0.40, a smoothstep
    over `feather` of the side inside its outline)."""
    du = ((u + 0.5) / size - 0.5) / 0.33
    dv = ((v + 0.5) / size - 0.56) / 0.40
    inside = (1 - np.hypot(du, dv)) * 0.33 * size
    t = np.clip(inside / (feather * size), 0, 1)
    return np.where(inside <= 0, 0.0, t * t * (3 - 2 * t))


class FacesAndPasteTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not (ARGS.mtcnn and ARGS.photos):
            raise unittest.SkipTest("needs --mtcnn (scripts/fetch-models) and --photos "
                                    "(scripts/fetch-photos)")
        cls.server = new_server("faces", ["--mtcnn", ARGS.mtcnn]).start()
        cls.addClassCleanup(cls.server.kill)
        cls.stub = cls.server.stub()
        cls.size = cls.stub.GetServerInfo(pb.GetServerInfoRequest()).models[0].resolution
        # A real group photo (dlib's examples, from Debian's libdlib19.1), as PNG so that
        # this side's decoding is bit for bit the server's.
        from PIL import Image
        out = io.BytesIO()
        Image.open(os.path.join(ARGS.photos, "2008_002506.jpg")).convert("RGB").save(out, "PNG")
        cls.group = out.getvalue()

    @classmethod
    def tearDownClass(cls):
        code, _ = cls.server.stop()
        assert code == 0, cls.server.log()

    def assertInvalid(self, field, fn, *args, code=None, **kw):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args, **kw)
        self.assertEqual(cm.exception.code(), code or grpc.StatusCode.INVALID_ARGUMENT,
                         cm.exception.details())
        self.assertTrue(cm.exception.details().startswith(field + ":"), cm.exception.details())
        return cm.exception.details()

    def align(self, image, **kw):
        return self.stub.AlignFace(pb.AlignFaceRequest(
            image=image, align=pb.AlignOptions(mode=pb.AlignOptions.AUTO, **kw)), timeout=60)

    def embed(self, image, align, steps=2):
        req = pb.EmbedRequest(image=image, align=align,
                              options=pb.EmbedOptions(steps=steps, w_perceptual=0.0))
        done = h.collect(self.stub.Embed(req, timeout=300))[-1]
        self.assertEqual(kind(done), "succeeded", done)
        return done.succeeded

    def test_every_face_of_a_group_photo(self):
        r = self.align(self.group)
        self.assertEqual(self.stub.GetServerInfo(pb.GetServerInfoRequest()).face_detector[:5],
                         "mtcnn")
        self.assertGreaterEqual(len(r.faces), 3, r.faces)

        def area(face):
            (x0, y0), (x1, y1) = (face.box[0].x, face.box[0].y), (face.box[2].x, face.box[2].y)
            return (x1 - x0) * (y1 - y0)

        areas = [area(f) for f in r.faces]
        self.assertEqual(areas, sorted(areas, reverse=True))
        for f in r.faces:
            self.assertEqual((len(f.box), len(f.landmarks)), (4, 5))
            self.assertGreater(f.confidence, 0.9)
            eyes = np.hypot(f.landmarks[1].x - f.landmarks[0].x, f.landmarks[1].y - f.landmarks[0].y)
            self.assertGreater(eyes, 20)
        self.assertEqual((r.alignment.method, r.alignment.face), ("mtcnn", 0))
        # Each face can be chosen; the alignment uses its eyes and mouth corners.
        for i, f in enumerate(r.faces):
            a = self.align(self.group, face=i).alignment
            self.assertEqual(a.face, i)
            self.assertAlmostEqual(a.confidence, f.confidence, places=6)
            got = [(p.x, p.y) for p in a.landmarks]
            want = [(f.landmarks[k].x, f.landmarks[k].y) for k in (0, 1, 3, 4)]
            np.testing.assert_allclose(got, want, atol=1e-9)
        self.assertInvalid("align.face", self.align, self.group, face=len(r.faces))
        self.assertInvalid("align.face", self.align, self.group, face=-1)
        self.assertInvalid("align.face", self.stub.AlignFace, pb.AlignFaceRequest(
            image=self.group, align=pb.AlignOptions(
                mode=pb.AlignOptions.LANDMARKS, face=1,
                landmarks=[pb.Point(x=x, y=y) for x, y in ASTRONAUT])))

    def test_embed_takes_a_face_and_pastes_back(self):
        faces = self.align(self.group).faces
        done = [self.embed(self.group, pb.AlignOptions(mode=pb.AlignOptions.AUTO, face=i))
                for i in (1, 0)]
        self.assertEqual([d.alignment.face for d in done], [1, 0])
        photo = decode_png(self.group)
        # Both faces into the photo in one call, returned at the photo's size.
        r = self.stub.PasteBack(pb.PasteBackRequest(
            photo=self.group,
            faces=[pb.PasteFace(latent=pb.LatentRef(latent_id=d.latent_id)) for d in done]),
            timeout=120)
        self.assertEqual((r.photo.format, r.photo.width, r.photo.height),
                         (pb.PNG, photo.shape[1], photo.shape[0]))
        pasted = decode_png(r.photo.data)
        self.assertEqual(pasted.shape, photo.shape)
        # Outside every face's mask the photo is untouched, to the bit; inside it changed.
        ys, xs = np.mgrid[0:photo.shape[0], 0:photo.shape[1]]
        weight = np.zeros(photo.shape[:2])
        for d in done:
            m = transform_of(d.alignment)
            u = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
            v = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
            weight = np.maximum(weight, paste_mask_weight(u, v, self.size))
        outside = weight == 0
        np.testing.assert_array_equal(pasted[outside], photo[outside])
        inside = weight > 0.99
        self.assertGreater(inside.sum(), 500)
        self.assertGreater(np.abs(pasted[inside].astype(int) - photo[inside]).mean(), 3)
        del faces
        # JPEG on request, seamless blend, and the same through Synthesize's paste_into.
        one = pb.LatentRef(latent_id=done[0].latent_id)
        opts = pb.PasteOptions(format=pb.JPEG, jpeg_quality=80,
                               blend=pb.PasteOptions.SEAMLESS)
        r = self.stub.PasteBack(pb.PasteBackRequest(
            photo=self.group, faces=[pb.PasteFace(latent=one)], options=opts), timeout=120)
        self.assertEqual(r.photo.data[:2], b"\xff\xd8")
        s = self.stub.Synthesize(pb.SynthesizeRequest(
            latent=one, paste_into=pb.PasteInto(photo=self.group, options=opts)), timeout=120)
        self.assertEqual(s.pasted.data, r.photo.data)
        self.assertEqual(s.image.width, self.size)
        # Morph pastes every frame into a's photo; frame 0 is a itself.
        frames = list(self.stub.Morph(pb.MorphRequest(
            a=one, b=pb.LatentRef(latent_id=done[1].latent_id), frames=3,
            paste_into=pb.PasteInto(photo=self.group)), timeout=120))
        self.assertEqual(len(frames), 3)
        for f in frames:
            self.assertEqual(decode_png(f.pasted.data).shape, photo.shape)
        a_only = self.stub.PasteBack(pb.PasteBackRequest(
            photo=self.group, faces=[pb.PasteFace(latent=one)]), timeout=120)
        self.assertEqual(frames[0].pasted.data, a_only.photo.data)
        self.assertNotEqual(frames[2].pasted.data, a_only.photo.data)
        # A stored edit keeps the alignment of the latent it was applied to, so it pastes
        # back into the same photo.
        mix = self.stub.StyleMix(pb.StyleMixRequest(
            content=one, style=pb.LatentRef(latent_id=done[1].latent_id), crossover=2,
            store_result=True, paste_into=pb.PasteInto(photo=self.group)), timeout=120)
        self.assertEqual(decode_png(mix.pasted.data).shape, photo.shape)
        stored = self.stub.GetLatent(pb.GetLatentRequest(latent_id=mix.latent.id))
        np.testing.assert_allclose(transform_of(stored.alignment), transform_of(done[0].alignment))
        r = self.stub.PasteBack(pb.PasteBackRequest(
            photo=self.group, faces=[pb.PasteFace(latent=pb.LatentRef(latent_id=mix.latent.id))]),
            timeout=120)
        self.assertEqual(r.photo.data, mix.pasted.data)

    def test_exif_orientation_is_honoured(self):
        # A phone photo stored sideways with EXIF orientation 6 ("turn 90 degrees clockwise
        # to show"): faces, landmarks and paste-back are in the upright photo's pixels.
        from PIL import Image
        upright = Image.open(os.path.join(h.SKIMAGE_DATA, "astronaut.png")).convert("RGB")
        upright = upright.crop((0, 0, 512, 400))
        png, sideways = io.BytesIO(), io.BytesIO()
        upright.save(png, "PNG")
        exif = Image.Exif()
        exif[0x0112] = 6
        upright.rotate(90, expand=True).save(sideways, "JPEG", quality=100, subsampling=0,
                                             exif=exif.tobytes())
        want = self.align(png.getvalue()).alignment
        got = self.align(sideways.getvalue()).alignment
        self.assertEqual((got.source_width, got.source_height), (512, 400))
        eyes = np.hypot(want.landmarks[1].x - want.landmarks[0].x,
                        want.landmarks[1].y - want.landmarks[0].y)
        err = max(np.hypot(a.x - b.x, a.y - b.y) for a, b in zip(got.landmarks, want.landmarks))
        self.assertLess(err, 0.02 * eyes, (err, eyes))
        lat = self.embed(sideways.getvalue(), pb.AlignOptions(mode=pb.AlignOptions.AUTO)).latent_id
        r = self.stub.PasteBack(pb.PasteBackRequest(
            photo=sideways.getvalue(), faces=[pb.PasteFace(latent=pb.LatentRef(latent_id=lat))]),
            timeout=120)
        self.assertEqual((r.photo.width, r.photo.height), (512, 400))

    def test_paste_back_refusals(self):
        lat = self.embed(h.image_bytes("astronaut.png"),
                         pb.AlignOptions(mode=pb.AlignOptions.AUTO)).latent_id
        face = pb.PasteFace(latent=pb.LatentRef(latent_id=lat))
        paste = self.stub.PasteBack
        # Another photo than the one aligned: named with both sizes.
        msg = self.assertInvalid("photo", paste, pb.PasteBackRequest(photo=self.group, faces=[face]))
        self.assertIn("512x512", msg)
        astronaut = h.image_bytes("astronaut.png")
        self.assertInvalid("photo", paste, pb.PasteBackRequest(faces=[face]))
        self.assertInvalid("photo", paste, pb.PasteBackRequest(photo=b"not an image", faces=[face]))
        self.assertInvalid("faces", paste, pb.PasteBackRequest(photo=astronaut))
        self.assertInvalid("faces", paste, pb.PasteBackRequest(photo=astronaut, faces=[face] * 17))
        self.assertInvalid("faces[0].latent", paste, pb.PasteBackRequest(
            photo=astronaut, faces=[pb.PasteFace(latent=pb.LatentRef(latent_id="lat_nope"))]),
            code=grpc.StatusCode.NOT_FOUND)
        self.assertInvalid("faces[0].transform", paste, pb.PasteBackRequest(
            photo=astronaut, faces=[pb.PasteFace(latent=face.latent, transform=[1, 0, 0])]))
        self.assertInvalid("faces[0].transform[2]", paste, pb.PasteBackRequest(
            photo=astronaut, faces=[pb.PasteFace(latent=face.latent,
                                                 transform=[1, 0, float("nan"), 0, 1, 0])]))
        for options, field in ((pb.PasteOptions(feather=0.7), "options.feather"),
                               (pb.PasteOptions(feather=0.1, hard_edge=True), "options.feather"),
                               (pb.PasteOptions(format=pb.RAW_FLOAT32), "options.format"),
                               (pb.PasteOptions(jpeg_quality=101), "options.jpeg_quality"),
                               (pb.PasteOptions(blend=7), "options.blend"),
                               (pb.PasteOptions(region=9), "options.region")):
            self.assertInvalid(field, paste, pb.PasteBackRequest(
                photo=astronaut, faces=[face], options=options))
        # Inline values need the transform; an imported latent has no alignment of its own.
        values = self.stub.GetLatent(pb.GetLatentRequest(latent_id=lat, include_values=True))
        inline = pb.LatentRef(values=pb.LatentValues(
            num_layers=values.num_layers, latent_size=values.latent_size,
            values=values.values))
        self.assertInvalid("faces[0].transform", paste, pb.PasteBackRequest(
            photo=astronaut, faces=[pb.PasteFace(latent=inline, model=values.model)]))
        ok = paste(pb.PasteBackRequest(photo=astronaut, faces=[pb.PasteFace(
            latent=inline, model=values.model, transform=values.alignment.transform)]))
        self.assertEqual((ok.photo.width, ok.photo.height), (512, 512))
        self.assertInvalid("paste_into.photo", self.stub.Synthesize, pb.SynthesizeRequest(
            latent=face.latent, paste_into=pb.PasteInto()))
        with self.assertRaises(grpc.RpcError) as cm:
            list(self.stub.Morph(pb.MorphRequest(a=face.latent, b=face.latent, frames=2,
                                                 paste_into=pb.PasteInto(photo=self.group))))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertTrue(cm.exception.details().startswith("paste_into.photo:"),
                        cm.exception.details())
        self.assertInvalid("paste_into.transform", self.stub.Synthesize, pb.SynthesizeRequest(
            latent=inline, model=values.model, paste_into=pb.PasteInto(photo=astronaut)))


if __name__ == "__main__":
    h.run_tests(["--server", "--proto", "--work"], globals(), optional=["--mtcnn", "--photos"])

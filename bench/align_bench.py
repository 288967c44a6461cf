#!/usr/bin/env python3
"""Latency of FFHQ alignment in i2s_server (AlignFace: decode, face detection or given
landmarks, alignment, PNG encode), for photos of a few sizes. Starts its own server.

  bench/align_bench.py --server build/server/i2s_server [--repeat 10]

The photos are python3-skimage's astronaut (512x512) and copies enlarged to 2048 and 4096
pixels square (PNG); the coffee cup (600x400) has no face, so AUTO scans every rotation.
Prints one line per case: median and fastest latency in milliseconds."""

import argparse
import io
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import i2s_harness as h  # noqa: E402

# eye, eye, nose, mouth corner, mouth corner in the 512x512 astronaut (placed by hand)
ASTRONAUT = [(203.5, 101.0), (246.5, 103.1), (225.0, 120.0), (202.5, 140.0), (245.0, 140.6)]


def enlarged(side):
    from PIL import Image
    im = Image.open(os.path.join(h.SKIMAGE_DATA, "astronaut.png")).convert("RGB")
    buf = io.BytesIO()
    im.resize((side, side), Image.BICUBIC).save(buf, format="PNG")
    return buf.getvalue()


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--server", required=True)
    p.add_argument("--repeat", type=int, default=10)
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="i2s_align_bench_")
    h.generate_stubs(os.path.join(os.path.dirname(__file__), "..", "proto"),
                     os.path.join(work, "stubs"))
    from i2s.v1 import i2s_pb2 as pb
    server = h.Server(a.server, work, resolution=32, fmap_base=256, threads=0).start()
    stub = server.stub()
    photos = {512: h.image_bytes("astronaut.png"), 2048: enlarged(2048), 4096: enlarged(4096)}
    cases = []
    for side, data in photos.items():
        scale = side / 512
        points = [pb.Point(x=(x + 0.5) * scale - 0.5, y=(y + 0.5) * scale - 0.5)
                  for x, y in ASTRONAUT]
        for size in (256, 1024):
            cases.append((f"astronaut {side}x{side}, landmarks -> {size}", data, size,
                          pb.AlignOptions(mode=pb.AlignOptions.LANDMARKS, landmarks=points)))
            cases.append((f"astronaut {side}x{side}, auto -> {size}", data, size,
                          pb.AlignOptions(mode=pb.AlignOptions.AUTO)))
    cases.append(("coffee 600x400 (no face), auto + resize -> 256", h.image_bytes("coffee.png"),
                  256, pb.AlignOptions(mode=pb.AlignOptions.AUTO,
                                       on_no_face=pb.AlignOptions.RESIZE)))
    print(f"{'case':52s} {'median ms':>10s} {'best ms':>8s}  method")
    for name, data, size, align in cases:
        req = pb.AlignFaceRequest(image=data, size=size, align=align)
        stub.AlignFace(req, timeout=120)  # warm-up
        times = []
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            r = stub.AlignFace(req, timeout=120)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        print(f"{name:52s} {times[len(times) // 2]:10.1f} {times[0]:8.1f}  {r.alignment.method}")
    server.stop()


if __name__ == "__main__":
    main()

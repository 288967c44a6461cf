#!/usr/bin/env python3
"""Throughput of i2s_server's continuous batching: N embedding jobs submitted at once vs
the same N jobs one after another, on one device. Starts its own server on the demo model.

  bench/service_bench.py --server build/server/i2s_server [--resolution 64] [--jobs 4]
      [--steps 50] [--max-batch 8] [--devices cpu] [--perceptual]

Prints one line per mode: wall seconds and image-steps per second."""

import argparse
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import i2s_harness as h  # noqa: E402

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "camera.png"]


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--server", required=True)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--fmap-base", type=int, default=2048)
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--devices", default="cpu")
    p.add_argument("--perceptual", action="store_true", help="VGG16 term on (default: pixel only)")
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="i2s_bench_")
    h.generate_stubs(os.path.join(os.path.dirname(__file__), "..", "proto"),
                     os.path.join(work, "stubs"))
    from i2s.v1 import i2s_pb2 as pb
    server = h.Server(a.server, work, resolution=a.resolution, fmap_base=a.fmap_base,
                      extra=["--max-batch", str(a.max_batch)], devices=a.devices, threads=0)
    server.start()
    stub = server.stub()
    opts = pb.EmbedOptions(steps=a.steps, w_perceptual=1.0 if a.perceptual else 0.0)

    def one(i):
        req = pb.EmbedRequest(image=h.image_bytes(PHOTOS[i % len(PHOTOS)]), options=opts, seed=i)
        for ev in stub.Embed(req, timeout=3600):
            if ev.WhichOneof("kind") in ("failed", "cancelled"):
                raise SystemExit(str(ev))

    one(0)  # warm-up: mean w, allocator
    t0 = time.time()
    for i in range(a.jobs):
        one(i)
    sequential = time.time() - t0
    t0 = time.time()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(a.jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    concurrent = time.time() - t0
    server.stop()
    total = a.jobs * a.steps
    print(f"resolution {a.resolution}, {a.jobs} jobs x {a.steps} steps, "
          f"perceptual {'on' if a.perceptual else 'off'}, devices {a.devices}")
    print(f"one after another: {sequential:7.2f} s  {total / sequential:7.1f} image-steps/s")
    print(f"all at once:       {concurrent:7.2f} s  {total / concurrent:7.1f} image-steps/s "
          f"(x{sequential / concurrent:.2f})")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Load through gRPC: N concurrent Embed jobs, kept in flight, at each N of a list.

Either starts its own i2s_server on the demo model (--server BINARY) or drives a running
one (--target HOST:PORT, plaintext, optional --token). At each concurrency N it keeps N
Embed streams open (a closed loop: a job that ends is replaced by the next) until --jobs
jobs have ended, then reports jobs per minute, image-steps per second, the time from
submission to result (p50, p95) and the queue wait (submission to the job's `running`
event, p50, p95), and the throughput over N times that of N = 1 (the batching
efficiency; the target on a GPU is >= 0.8 up to the batch that fills it).

  bench/service_load.py --server build/server/i2s_server [--concurrency 1,2,4,8]
      [--jobs 8] [--steps 50] [--perceptual] [--resolution 64] [--fmap-base 2048]
      [--max-batch 16] [--devices cpu] [--server-args "..."] [--json FILE]
  bench/service_load.py --target host:50051 [--token T] ...
"""
import argparse
import json
import os
import shlex
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import i2s_harness as h  # noqa: E402

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "camera.png"]


def percentile(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def run_level(stub, pb, images, n, jobs, opts, metadata, seed0):
    """Keeps n jobs in flight until `jobs` have ended; returns per-job records and wall time."""
    lock = threading.Lock()
    next_job = [0]
    records = []

    def worker():
        while True:
            with lock:
                i = next_job[0]
                if i >= jobs:
                    return
                next_job[0] += 1
            req = pb.EmbedRequest(image=images[i % len(images)], options=opts, seed=seed0 + i)
            t0 = time.time()
            started = None
            end = "no terminal event"
            batch = 0
            try:
                for ev in stub.Embed(req, timeout=3600, metadata=metadata):
                    k = ev.WhichOneof("kind")
                    if k == "running" and started is None:
                        started = time.time()
                    elif k == "progress":
                        batch = max(batch, ev.progress.batch_size)
                    elif k in ("succeeded", "failed", "cancelled"):
                        end = k if k == "succeeded" else "%s: %s" % (k, ev)
                        break
            except Exception as e:  # a gRPC error ends this job, and is reported
                end = "rpc error: %s" % e
            t1 = time.time()
            with lock:
                records.append({"submitted": t0, "running": started, "ended": t1, "end": end,
                                "max_batch": batch})

    t0 = time.time()
    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records, time.time() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", help="i2s_server binary to start on the demo model")
    p.add_argument("--target", help="HOST:PORT of a running server instead")
    p.add_argument("--token", default="", help="bearer token for --target")
    p.add_argument("--concurrency", default="1,2,4,8")
    p.add_argument("--jobs", type=int, default=0, help="jobs per level (default: 2 x N, at least 4)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--perceptual", action="store_true", help="VGG16 term on (default: pixel loss only)")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--fmap-base", type=int, default=2048)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--devices", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="the started server's --threads")
    p.add_argument("--server-args", default="", help="more flags for the started server")
    p.add_argument("--json", default="")
    a = p.parse_args()
    if bool(a.server) == bool(a.target):
        p.error("give exactly one of --server and --target")
    levels = [int(x) for x in a.concurrency.split(",") if x]
    if not levels or min(levels) < 1:
        p.error("--concurrency: positive integers, comma-separated")
    work = tempfile.mkdtemp(prefix="i2s_load_")
    h.generate_stubs(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto"),
                     os.path.join(work, "stubs"))
    import grpc
    from i2s.v1 import i2s_pb2 as pb
    from i2s.v1 import i2s_pb2_grpc
    server = None
    if a.server:
        server = h.Server(a.server, work, resolution=a.resolution, fmap_base=a.fmap_base,
                          extra=["--max-batch", str(a.max_batch)] + shlex.split(a.server_args),
                          devices=a.devices, threads=a.threads)
        server.start()
        stub = server.stub()
    else:
        channel = grpc.insecure_channel(a.target, options=[("grpc.max_receive_message_length", 64 << 20)])
        try:
            grpc.channel_ready_future(channel).result(timeout=30)
        except grpc.FutureTimeoutError:
            sys.exit("service_load: --target %s: no server reachable within 30 s" % a.target)
        stub = i2s_pb2_grpc.ImageToStyleGanStub(channel)
    metadata = [("authorization", "Bearer " + a.token)] if a.token else []
    images = [h.image_bytes(name) for name in PHOTOS]
    opts = pb.EmbedOptions(steps=a.steps, w_perceptual=1.0 if a.perceptual else 0.0)
    try:
        # Warm-up: the first job of a fresh server also computes the model's mean w.
        warm, _ = run_level(stub, pb, images, 1, 1, opts, metadata, 10 ** 6)
        w = warm[0]
        print("first job (warm-up): %s, queue wait %.2f s, result after %.2f s" % (
            w["end"], (w["running"] or w["ended"]) - w["submitted"], w["ended"] - w["submitted"]))
        print("| concurrent jobs | jobs | jobs/min | image-steps/s | x N=1 / N | result p50 (s) | result p95 (s) "
              "| queue wait p50 (s) | queue wait p95 (s) | largest batch seen | failed |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        sys.stdout.flush()
        rows = []
        base = None
        for n in levels:
            jobs = a.jobs or max(4, 2 * n)
            records, wall = run_level(stub, pb, images, n, jobs, opts, metadata, 1000 * n)
            ok = [r for r in records if r["end"] == "succeeded"]
            failed = [r["end"] for r in records if r["end"] != "succeeded"]
            to_result = [r["ended"] - r["submitted"] for r in ok]
            waits = [r["running"] - r["submitted"] for r in ok if r["running"] is not None]
            ips = len(ok) * a.steps / wall
            if n == levels[0] and n == 1:
                base = ips
            eff = ips / (n * base) if base else float("nan")
            row = {"concurrency": n, "jobs": jobs, "succeeded": len(ok), "wall_s": wall,
                   "jobs_per_min": 60 * len(ok) / wall, "image_steps_per_s": ips, "efficiency": eff,
                   "result_p50_s": percentile(to_result, 0.5), "result_p95_s": percentile(to_result, 0.95),
                   "wait_p50_s": percentile(waits, 0.5), "wait_p95_s": percentile(waits, 0.95),
                   "max_batch": max([r["max_batch"] for r in records] or [0]), "failures": failed[:3]}
            rows.append(row)
            print("| %d | %d | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f | %.2f | %d | %d |" % (
                n, jobs, row["jobs_per_min"], ips, eff, row["result_p50_s"], row["result_p95_s"],
                row["wait_p50_s"], row["wait_p95_s"], row["max_batch"], len(failed)))
            for f in failed[:3]:
                print("  failed: %s" % f[:300])
            sys.stdout.flush()
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"steps": a.steps, "perceptual": a.perceptual, "resolution": a.resolution,
                           "fmap_base": a.fmap_base, "devices": a.devices, "rows": rows}, f, indent=1)
        if any(r["failures"] for r in rows):
            sys.exit(1)
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()

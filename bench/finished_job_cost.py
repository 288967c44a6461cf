"""Memory and disk a finished Embed job costs the server, at a model resolution.

Starts i2s_server with the seeded demo model at --resolution, runs --warmup then --jobs
one-step Embeds of a real photo one after another, and reports the server's VmRSS growth
per finished job over the last --jobs (finished jobs stay in memory, up to 256) and the
store's bytes per job (GetUsage.job_bytes, and the SQLite file's growth). Run it with
MALLOC_MMAP_THRESHOLD_=131072 so that freed large buffers leave VmRSS.

Run: bench/finished_job_cost.py --server build/server/i2s_server --proto proto --work DIR
     [--resolution 1024] [--warmup 12] [--jobs 16]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import i2s_harness as h  # noqa: E402


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True)
    p.add_argument("--proto", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--resolution", type=int, default=1024)
    p.add_argument("--jobs", type=int, default=16)
    p.add_argument("--warmup", type=int, default=12,
                   help="jobs run first: the server's one-time growth (allocator arenas, "
                        "SQLite's cache, LibTorch's pools) is not a finished job's cost")
    a = p.parse_args()
    grpc, pb = h.import_api(a.proto, a.work)
    data = h.fresh_dir(os.path.join(a.work, "data"))
    server = h.Server(a.server, data, resolution=a.resolution, fmap_base=64,
                      extra=["--max-batch", "1"])
    server.start(timeout=600)
    try:
        stub = server.stub()
        image = h.image_bytes("astronaut.png")

        def one():
            events = h.collect(stub.Embed(pb.EmbedRequest(image=image,
                                                          options=h.fast_options(1)),
                                          timeout=600))
            assert h.kind(events[-1]) == "succeeded", events[-1]

        for _ in range(a.warmup):
            one()
        time.sleep(1)
        db = os.path.join(data, "i2s.sqlite")
        rss0, usage0, disk0 = vm_rss_kib(server.proc.pid), stub.GetUsage(
            pb.GetUsageRequest()).usage[0], os.path.getsize(db)
        for _ in range(a.jobs):
            one()
        time.sleep(1)
        rss1, usage1, disk1 = vm_rss_kib(server.proc.pid), stub.GetUsage(
            pb.GetUsageRequest()).usage[0], os.path.getsize(db)
        n = a.jobs
        print(f"resolution {a.resolution}, {n} finished jobs:")
        print(f"  memory: {(rss1 - rss0) / n / 1024:.2f} MiB per job (VmRSS {rss0 / 1024:.0f} "
              f"-> {rss1 / 1024:.0f} MiB)")
        print(f"  store:  {(usage1.job_bytes - usage0.job_bytes) / n / 2**20:.2f} MiB of job "
              f"rows per job (GetUsage.job_bytes: {(usage1.job_bytes - usage0.job_bytes) / n:.0f}"
              f" bytes), SQLite file +{(disk1 - disk0) / n / 2**20:.2f} MiB per job")
    finally:
        server.stop()


if __name__ == "__main__":
    main()

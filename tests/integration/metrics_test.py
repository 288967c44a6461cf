"""The Prometheus endpoint of i2s_server (--metrics-address, GET /metrics), checked from
outside: the exposition is parsed by an independent parser (prometheus_client's), its
names and histograms are checked against Prometheus conventions, and the numbers are
checked to move as jobs and RPCs run.

Run: metrics_test.py --server build/server/i2s_server --proto proto --work DIR [unittest args]
"""

import os
import queue
import re
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import i2s_harness as h  # noqa: E402

ARGS = None
grpc = None
pb = None

NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
SERVICE = "i2s.v1.ImageToStyleGan"

# Every family the server exposes (i2s_device_memory_bytes has series on CUDA only).
FAMILIES = {
    "i2s_build_info": "gauge",
    "i2s_process_resident_memory_bytes": "gauge",
    "i2s_queue_length": "gauge",
    "i2s_jobs": "gauge",
    "i2s_jobs_finished_total": "counter",
    "i2s_embed_step_seconds": "histogram",
    "i2s_embed_image_steps_total": "counter",
    "i2s_device_steps_per_second": "gauge",
    "i2s_batch_occupancy": "gauge",
    "i2s_device_memory_bytes": "gauge",
    "i2s_open_streams": "gauge",
    "i2s_images_in_progress": "gauge",
    "i2s_images_waiting": "gauge",
    "i2s_rpc_requests_total": "counter",
    "i2s_rpc_duration_seconds": "histogram",
}


def setUpModule():
    global grpc, pb
    grpc, pb = h.import_api(ARGS.proto, ARGS.work)


def new_server(name, extra=(), metrics=True):
    d = h.fresh_dir(os.path.join(ARGS.work, name))
    flags = list(extra)
    if metrics:
        flags += ["--metrics-address", "127.0.0.1:0",
                  "--metrics-port-file", os.path.join(d, "metrics-port")]
    return h.Server(ARGS.server, d, extra=flags)


def metrics_port(server):
    with open(os.path.join(server.data_dir, "metrics-port")) as f:
        return int(f.read().strip())


class Scrape:
    """One GET /metrics: the raw text, the families parsed by prometheus_client, and
    lookups of sample values."""

    def __init__(self, port):
        from prometheus_client.parser import text_string_to_metric_families
        status, headers, body = h.http_request(port, "/metrics")
        if status != 200:
            raise AssertionError(f"GET /metrics: HTTP {status}: {body[:200]!r}")
        self.headers = headers
        self.text = body.decode("utf-8")
        self.families = list(text_string_to_metric_families(self.text))
        self.samples = [s for f in self.families for s in f.samples]

    def get(self, name, **labels):
        """The sum of the samples called `name` whose labels include `labels` (0 if none:
        a counter has no series before its first increment)."""
        return sum(s.value for s in self.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def series(self, name, **labels):
        return [s for s in self.samples
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def wait_for(fn, what, timeout=120, interval=0.1):
    """Polls fn() until it returns something true; returns it (fails after `timeout`, which
    only bounds a hang: how soon the condition comes is the machine's pace)."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def scrape_until(port, pred, what, timeout=120):
    """Scrapes until pred(scrape) is true; returns that scrape."""
    return wait_for(lambda: (lambda x: x if pred(x) else None)(Scrape(port)), what, timeout)


class Reader(threading.Thread):
    """Reads a JobEvent stream in the background into a queue (heartbeats left out)."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream = stream
        self.events = queue.Queue()
        self.error = None
        self.start()

    def run(self):
        try:
            for ev in self.stream:
                if h.kind(ev) != "heartbeat":
                    self.events.put(ev)
        except grpc.RpcError as e:
            self.error = e
        finally:
            self.events.put(None)

    def next_kind(self, kinds, timeout=120):
        """The first event of one of `kinds` (events before it are dropped)."""
        deadline = time.time() + timeout
        while True:
            ev = self.events.get(timeout=max(0.1, deadline - time.time()))
            if ev is None:
                raise AssertionError(f"stream ended before {kinds}: {self.error}")
            if h.kind(ev) in kinds:
                return ev


class MetricsServerTest(unittest.TestCase):
    """One server with metrics (named NAME, flags EXTRA) for all tests of the class."""
    NAME = None
    EXTRA = ()

    @classmethod
    def setUpClass(cls):
        cls.server = new_server(cls.NAME, cls.EXTRA).start()
        cls.addClassCleanup(cls.server.kill)  # if setUpClass fails after the start
        cls.port = metrics_port(cls.server)
        cls.stub = cls.server.stub()

    @classmethod
    def tearDownClass(cls):
        code, _ = cls.server.stop()
        assert code == 0, cls.server.log()


class ExpositionTest(MetricsServerTest):
    """The format of /metrics and the HTTP behaviour of the endpoint."""
    NAME = "exposition"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        stub = cls.stub
        cls.info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30)
        # Some traffic first, so that the counters and histograms have series to check.
        events = h.collect(stub.Embed(pb.EmbedRequest(image=h.image_bytes("chelsea.png"),
                                                      options=h.fast_options(3)), timeout=120))
        assert h.kind(events[-1]) == "succeeded", events[-1]
        # The Embed stream's slot is given back a moment after its status reaches us.
        cls.scrape = scrape_until(cls.port, lambda x: x.get("i2s_open_streams") == 0,
                                  "i2s_open_streams back to 0")

    def test_parses_and_names_follow_conventions(self):
        s = self.scrape
        self.assertTrue(s.families)
        types = {}
        for f in s.families:
            self.assertIn(f.type, ("counter", "gauge", "histogram"), f.name)
            self.assertTrue(f.documentation.strip(), f"{f.name} has no HELP")
            # prometheus_client strips _total from a counter family's name.
            name = f.name + "_total" if f.type == "counter" else f.name
            types[name] = f.type
            self.assertRegex(name, NAME)
            self.assertTrue(name.startswith("i2s_"), name)
            for sample in f.samples:
                self.assertRegex(sample.name, NAME)
                self.assertTrue(sample.name.startswith(name), (name, sample.name))
                for label in sample.labels:
                    self.assertRegex(label, LABEL, sample)
                    self.assertFalse(label.startswith("__"), sample)
                if f.type == "counter":
                    self.assertEqual(sample.name, name, "counter samples end in _total")
                    self.assertGreaterEqual(sample.value, 0, sample)
        self.assertEqual(types, FAMILIES)
        # The TYPE lines themselves (not the parser's view): counters are named ..._total.
        declared = dict(re.findall(r"^# TYPE (\S+) (\S+)$", s.text, re.M))
        self.assertEqual(declared, FAMILIES)
        for name, kind in declared.items():
            if kind == "counter":
                self.assertTrue(name.endswith("_total"), name)
            else:
                self.assertFalse(name.endswith("_total"), name)
            # Base units, spelled out in the name.
            if kind == "histogram":
                self.assertTrue(name.endswith("_seconds") or name.endswith("_bytes"), name)
            if "memory" in name:
                self.assertTrue(name.endswith("_bytes"), name)
            if "duration" in name or "_step_" in name:
                self.assertTrue(name.endswith("_seconds"), name)
            for bad in ("_ms", "millis", "_kb", "_mb", "_gb", "kilobytes", "megabytes",
                        "minutes", "hours", "percent"):
                self.assertNotIn(bad, name)
        # No series appears twice.
        keys = [(x.name, tuple(sorted(x.labels.items()))) for x in s.samples]
        self.assertEqual(len(keys), len(set(keys)))

    def test_histograms_are_cumulative(self):
        s = self.scrape
        checked = 0
        for f in s.families:
            if f.type != "histogram":
                continue
            groups = {}
            for x in f.samples:
                key = tuple(sorted((k, v) for k, v in x.labels.items() if k != "le"))
                groups.setdefault(key, {"buckets": [], "count": None, "sum": None})
                g = groups[key]
                if x.name == f.name + "_bucket":
                    g["buckets"].append((float(x.labels["le"]), x.labels["le"], x.value))
                elif x.name == f.name + "_count":
                    g["count"] = x.value
                elif x.name == f.name + "_sum":
                    g["sum"] = x.value
                else:
                    self.fail(f"unexpected histogram sample {x}")
            for key, g in groups.items():
                what = (f.name, key)
                self.assertIsNotNone(g["count"], what)
                self.assertIsNotNone(g["sum"], what)
                self.assertGreaterEqual(g["sum"], 0, what)
                bounds = [b[0] for b in g["buckets"]]
                self.assertGreater(len(bounds), 1, what)
                self.assertEqual(bounds, sorted(bounds), what)
                self.assertEqual(len(bounds), len(set(bounds)), what)
                counts = [b[2] for b in g["buckets"]]
                for a, b in zip(counts, counts[1:]):
                    self.assertLessEqual(a, b, what)
                self.assertEqual(g["buckets"][-1][1], "+Inf", what)
                self.assertEqual(counts[-1], g["count"], what)
                self.assertGreater(g["count"], 0, what)
                checked += 1
        # The embedding above made series in both histograms.
        self.assertTrue(s.series("i2s_embed_step_seconds_count", device="cpu"))
        self.assertTrue(s.series("i2s_rpc_duration_seconds_count", service=SERVICE,
                                 method="Embed"))
        self.assertGreaterEqual(checked, 2)

    def test_values(self):
        s = self.scrape
        build = s.series("i2s_build_info")
        self.assertEqual(len(build), 1)
        self.assertEqual(build[0].value, 1)
        self.assertEqual(build[0].labels.get("version"), self.info.version)
        self.assertGreater(s.get("i2s_process_resident_memory_bytes"), 1 << 20)
        self.assertEqual(s.get("i2s_queue_length"), 0)
        self.assertEqual(s.get("i2s_jobs", state="queued"), 0)
        self.assertEqual(s.get("i2s_jobs", state="running"), 0)
        self.assertEqual(s.get("i2s_open_streams"), 0)
        self.assertEqual(s.get("i2s_images_in_progress"), 0)
        self.assertEqual(s.get("i2s_images_waiting"), 0)
        self.assertEqual(s.get("i2s_batch_occupancy", device="cpu"), 0)
        self.assertEqual(s.get("i2s_jobs_finished_total", state="succeeded"), 1)
        self.assertEqual(s.get("i2s_embed_image_steps_total", device="cpu"), 3)
        self.assertEqual(s.get("i2s_rpc_requests_total", service=SERVICE,
                               method="GetServerInfo", code="OK"), 1)
        # CUDA only: no series on a CPU-only server.
        self.assertEqual(s.series("i2s_device_memory_bytes"), [])
        # Every per-device gauge names exactly the server's devices.
        for name in ("i2s_device_steps_per_second", "i2s_batch_occupancy"):
            self.assertEqual(sorted(x.labels["device"] for x in s.series(name)),
                             sorted(self.info.devices), name)

    def test_http(self):
        status, headers, body = h.http_request(self.port, "/metrics")
        self.assertEqual(status, 200)
        ctype = headers.get("Content-Type", "")
        self.assertTrue(ctype.startswith("text/plain"), ctype)
        self.assertRegex(ctype, r";\s*version=0\.0\.4")
        self.assertTrue(body.endswith(b"\n"))
        status, _, body = h.http_request(self.port, "/metrics", method="HEAD")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"")
        for method in ("POST", "PUT", "DELETE"):
            status, headers, _ = h.http_request(self.port, "/metrics", method=method)
            self.assertEqual(status, 405, method)
            self.assertIn("GET", headers.get("Allow", ""), method)
        for path in ("/other", "/", "/metricsx", "/metrics/x"):
            status, _, _ = h.http_request(self.port, path)
            self.assertEqual(status, 404, path)
        # A query string is still the /metrics path.
        status, _, _ = h.http_request(self.port, "/metrics?x=1")
        self.assertEqual(status, 200)

    def test_concurrent_scrapes(self):
        errors = []

        def scrape():
            try:
                for _ in range(5):
                    Scrape(self.port)
            except Exception as e:  # noqa: BLE001 (reported below)
                errors.append(e)
        threads = [threading.Thread(target=scrape) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])


class BearerTokenTest(unittest.TestCase):
    """--metrics-token-file: a scrape must send the token; anything else gets 401."""

    def test_scrape_needs_the_token(self):
        d = h.fresh_dir(os.path.join(ARGS.work, "token-files"))
        token = "scrape-token-0123456789abcdef"
        path = os.path.join(d, "metrics-token")
        with open(path, "w") as f:
            f.write(token + "\n")
        server = new_server("token", ["--metrics-token-file", path]).start()
        self.addCleanup(lambda: self.assertEqual(server.stop()[0], 0, server.log()))
        port = metrics_port(server)
        import urllib.request

        def scrape(authorization):
            req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
            if authorization is not None:
                req.add_header("Authorization", authorization)
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()

        import urllib.error
        for bad in (None, "Bearer wrong-token-0123456789abcdef", "Bearer " + token[:-1],
                    token, "Basic " + token):
            status, body = scrape(bad)
            self.assertEqual(status, 401, bad)
            self.assertEqual(body, b"", bad)
        status, body = scrape("Bearer " + token)
        self.assertEqual(status, 200)
        self.assertIn(b"i2s_rpc_requests_total", body)
        # A token file that cannot serve is refused at the start, naming the flag.
        with open(path, "w") as f:
            f.write("short\n")
        bad = new_server("token-bad", ["--metrics-token-file", path])
        with self.assertRaises(RuntimeError) as cm:
            bad.start()
        self.assertIn("--metrics-token-file", str(cm.exception))


class CountersTest(MetricsServerTest):
    """Counters and histograms move by exactly what a job and some RPCs did."""
    NAME = "counters"

    def test_embed_and_rpc_codes(self):
        steps = 12
        before = Scrape(self.port)
        events = h.collect(self.stub.Embed(pb.EmbedRequest(
            image=h.image_bytes("chelsea.png"), options=h.fast_options(steps)), timeout=120))
        self.assertEqual(h.kind(events[-1]), "succeeded", events[-1])
        latent_id = events[-1].succeeded.latent_id
        after = Scrape(self.port)

        def grew(name, **labels):
            return after.get(name, **labels) - before.get(name, **labels)

        self.assertEqual(grew("i2s_embed_image_steps_total", device="cpu"), steps)
        self.assertEqual(grew("i2s_embed_step_seconds_count", device="cpu"), steps)
        self.assertEqual(grew("i2s_embed_step_seconds_bucket", device="cpu", le="+Inf"), steps)
        self.assertGreater(grew("i2s_embed_step_seconds_sum", device="cpu"), 0)
        self.assertEqual(grew("i2s_jobs_finished_total", state="succeeded"), 1)
        self.assertEqual(grew("i2s_jobs_finished_total"), 1)
        self.assertEqual(grew("i2s_rpc_requests_total", service=SERVICE, method="Embed",
                              code="OK"), 1)
        self.assertEqual(grew("i2s_rpc_requests_total", method="Embed"), 1)
        self.assertEqual(grew("i2s_rpc_duration_seconds_count", service=SERVICE,
                              method="Embed"), 1)
        # The job is over: an idle device reports 0 steps/s (LiveJobsTest sees it > 0).
        self.assertEqual(after.get("i2s_device_steps_per_second", device="cpu"), 0)
        self.assertEqual(after.get("i2s_jobs", state="running"), 0)
        self.assertEqual(after.get("i2s_images_in_progress"), 0)
        # The stream's slot is given back when the server side of the call is done, which
        # may be a moment after the client has read the status.
        scrape_until(self.port, lambda x: x.get("i2s_open_streams") == 0,
                     "i2s_open_streams back to 0")

        # Bad requests count under their status code.
        before = after
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.GetLatent(pb.GetLatentRequest(latent_id="no-such-latent"), timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        with self.assertRaises(grpc.RpcError) as cm:
            list(self.stub.Embed(pb.EmbedRequest(image=b"", options=h.fast_options(5)),
                                 timeout=10))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.stub.GetLatent(pb.GetLatentRequest(latent_id=latent_id), timeout=10)
        after = Scrape(self.port)
        self.assertEqual(grew("i2s_rpc_requests_total", service=SERVICE, method="GetLatent",
                              code="NOT_FOUND"), 1)
        self.assertEqual(grew("i2s_rpc_requests_total", service=SERVICE, method="GetLatent",
                              code="OK"), 1)
        self.assertEqual(grew("i2s_rpc_requests_total", service=SERVICE, method="Embed",
                              code="INVALID_ARGUMENT"), 1)
        self.assertEqual(grew("i2s_rpc_requests_total", method="Embed", code="OK"), 0)
        self.assertEqual(grew("i2s_rpc_requests_total"), 3)
        self.assertEqual(grew("i2s_rpc_duration_seconds_count", service=SERVICE,
                              method="GetLatent"), 2)
        self.assertEqual(grew("i2s_rpc_duration_seconds_count", service=SERVICE,
                              method="Embed"), 1)
        # A refused Embed neither runs nor finishes a job.
        self.assertEqual(grew("i2s_jobs_finished_total"), 0)
        self.assertEqual(grew("i2s_embed_image_steps_total"), 0)

    def test_made_up_method_paths_add_no_series(self):
        # Callers choose the path of a call (no token needed to send one): each must not
        # become a label value, or /metrics grows with every new path (3000 paths made it
        # grow from 2 KB to 15 MB before the labels were bounded).
        def families(scrape):
            return {(x.labels.get("service"), x.labels.get("method"))
                    for x in scrape.series("i2s_rpc_requests_total")}

        before = Scrape(self.port)
        n = 300
        for i in range(n):
            call = self.server.channel.unary_unary(f"/made.up.Service{i}/Method{i}")
            with self.assertRaises(grpc.RpcError) as cm:
                call(b"", timeout=10)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        call = self.server.channel.unary_unary(f"/{SERVICE}/NoSuchMethod")
        with self.assertRaises(grpc.RpcError):
            call(b"", timeout=10)
        after = scrape_until(
            self.port, lambda x: x.get("i2s_rpc_requests_total", service="unknown") -
            before.get("i2s_rpc_requests_total", service="unknown") == n + 1,
            "the made-up calls counted under service=unknown")
        self.assertEqual(after.get("i2s_rpc_requests_total", service="unknown",
                                   method="unknown", code="UNIMPLEMENTED")
                         - before.get("i2s_rpc_requests_total", service="unknown",
                                      method="unknown", code="UNIMPLEMENTED"), n + 1)
        self.assertLessEqual(families(after) - families(before), {("unknown", "unknown")})
        self.assertNotIn("made.up", after.text)
        self.assertNotIn("NoSuchMethod", after.text)
        # The scrape grew by the unknown series of both metrics at most, not by n of them.
        self.assertLess(len(after.text) - len(before.text), 3000)

    def test_health_checks_are_counted_under_their_service(self):
        before = Scrape(self.port)
        self.assertEqual(h.health(self.server.channel), h.SERVING)
        after = Scrape(self.port)
        grew = (after.get("i2s_rpc_requests_total", service="grpc.health.v1.Health",
                          method="Check", code="OK")
                - before.get("i2s_rpc_requests_total", service="grpc.health.v1.Health",
                             method="Check", code="OK"))
        self.assertEqual(grew, 1)


class LiveJobsTest(MetricsServerTest):
    """The gauges while a long job runs and another waits (--max-batch 1)."""
    NAME = "live"
    EXTRA = ("--max-batch", "1", "--heartbeat-seconds", "1")

    def test_gauges_while_running_and_after_cancel(self):
        before = Scrape(self.port)
        long_job = pb.EmbedRequest(image=h.image_bytes("chelsea.png"),
                                   options=h.fast_options(100000))
        a = Reader(self.stub.Embed(long_job, timeout=300))
        a_id = a.next_kind(("queued",)).job_id
        a.next_kind(("progress",))
        b = Reader(self.stub.Embed(long_job, timeout=300))
        b_id = b.next_kind(("queued",)).job_id
        watch = Reader(self.stub.WatchJob(pb.WatchJobRequest(job_id=a_id), timeout=300))
        watch.next_kind(("progress",))
        try:
            s = scrape_until(self.port,
                             lambda x: x.get("i2s_device_steps_per_second", device="cpu") > 0,
                             "i2s_device_steps_per_second > 0")
            self.assertEqual(s.get("i2s_jobs", state="running"), 1)
            self.assertEqual(s.get("i2s_jobs", state="queued"), 1)
            self.assertEqual(s.get("i2s_queue_length"), 1)
            self.assertEqual(s.get("i2s_batch_occupancy", device="cpu"), 1.0)
            self.assertGreaterEqual(s.get("i2s_open_streams"), 3)  # 2 Embed + 1 WatchJob
            self.assertGreater(s.get("i2s_embed_image_steps_total", device="cpu"),
                               before.get("i2s_embed_image_steps_total", device="cpu"))
            info = self.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
            self.assertEqual((info.running_jobs, info.queued_jobs), (1, 1))
            # The counter keeps counting while the job runs.
            steps = s.get("i2s_embed_image_steps_total", device="cpu")
            wait_for(lambda: Scrape(self.port).get("i2s_embed_image_steps_total",
                                                   device="cpu") > steps,
                     "i2s_embed_image_steps_total to grow")
        finally:
            # The queued one first, so that it does not start when the running one ends.
            for job_id in (b_id, a_id):
                try:
                    self.stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=10)
                except grpc.RpcError:
                    pass
        for r in (a, b):
            self.assertEqual(h.kind(r.next_kind(h.TERMINAL)), "cancelled")

        def settled(x):
            done = (x.get("i2s_jobs_finished_total", state="cancelled")
                    - before.get("i2s_jobs_finished_total", state="cancelled"))
            return (done == 2 and x.get("i2s_jobs", state="running") == 0
                    and x.get("i2s_queue_length") == 0 and x.get("i2s_open_streams") == 0)
        s = scrape_until(self.port, settled,
                         "2 cancelled jobs, none running or queued, no open streams")
        self.assertEqual(s.get("i2s_jobs", state="queued"), 0)
        self.assertEqual(s.get("i2s_batch_occupancy", device="cpu"), 0)
        self.assertEqual(s.get("i2s_jobs_finished_total", state="succeeded")
                         - before.get("i2s_jobs_finished_total", state="succeeded"), 0)
        for r in (a, b, watch):
            r.join(30)
            self.assertFalse(r.is_alive())


class SlowClientTest(unittest.TestCase):
    """Idle HTTP connections must not starve Prometheus: a scrape still answers promptly
    (the endpoint has 8 workers and a 3 s request timeout, server/api/metrics_export.cc)."""

    def test_scrape_with_two_idle_connections(self):
        server = h.stopped_at_end(self, new_server("idle-connections")).start()
        idle = []
        try:
            port = metrics_port(server)
            idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
            # Taken by the server (accept()ed), not just queued in its backlog: polled
            # rather than a fixed pause.
            ours = {c.getsockname()[1] for c in idle}
            h.wait_until(lambda: ours <= h.peer_ports(server.proc.pid),
                         "the idle connections accepted by the server", interval=0.02)
            t0 = time.time()
            try:  # 10 s: Prometheus' default scrape timeout, the bound metrics_export.cc keeps
                status = h.http_request(port, "/metrics", timeout=10)[0]
            except OSError as e:  # urllib's timeout
                self.fail(f"scrape with 2 idle connections open: {e!r} after "
                          f"{time.time() - t0:.1f}s")
            took = time.time() - t0
            self.assertEqual(status, 200)
            # The scrape did not wait for a worker that an idle connection gave back (after
            # civetweb's 3 s request timeout): both were still held open by the server when
            # the answer came. (Was: answered in under 3 s by this client's clock.)
            still_open = [c.getsockname()[1] for c in idle if self.held_open(c)]
            self.assertEqual(len(still_open), 2,
                             f"an idle connection was closed before the scrape was answered "
                             f"({took:.1f} s): the scrape waited for its worker")
        finally:
            for c in idle:
                c.close()
            server.stop()

    @staticmethod
    def held_open(conn):
        """Whether the server still holds `conn` open: nothing to read (neither its close
        nor a 408) right now."""
        import select
        readable, _, _ = select.select([conn], [], [], 0)
        return not readable


class FlagsTest(unittest.TestCase):
    """--metrics-address: bad values and busy ports stop the server; off by default."""

    def failed_start(self, name, address):
        server = new_server(name, metrics=False)
        server.extra += ["--metrics-address", address]
        try:
            server.start(timeout=60)
        except RuntimeError:
            server._log.close()
            return server.proc.returncode, server.log()
        server.stop()
        self.fail(f"the server started with --metrics-address {address}: {server.log()}")

    def test_bad_address_exits_1(self):
        for i, address in enumerate(("nonsense", "127.0.0.1:", "127.0.0.1:notaport",
                                     "127.0.0.1:70000")):
            code, log = self.failed_start(f"bad-address-{i}", address)
            self.assertEqual(code, 1, (address, log))
            self.assertIn("--metrics-address", log, address)
            self.assertNotIn("metrics on", log, address)

    def test_port_in_use_exits_1(self):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen(1)
            port = busy.getsockname()[1]
            code, log = self.failed_start("busy-port", f"127.0.0.1:{port}")
        self.assertEqual(code, 1, log)
        self.assertIn("--metrics-address", log)
        self.assertIn(str(port), log)

    def test_off_without_flag(self):
        server = new_server("no-metrics", metrics=False).start()
        try:
            self.assertEqual(h.health(server.channel), h.SERVING)
            self.assertEqual(h.listening_ports(server.proc.pid), {server.port})
        finally:
            code, _ = server.stop()
        self.assertEqual(code, 0)
        self.assertNotIn("metrics on", server.log())
        self.assertFalse(os.path.exists(os.path.join(server.data_dir, "metrics-port")))

    def test_with_flag_listens_on_the_reported_port(self):
        server = new_server("with-metrics").start()
        try:
            port = metrics_port(server)
            self.assertEqual(h.listening_ports(server.proc.pid), {server.port, port})
            self.assertIn(f"metrics on http://127.0.0.1:{port}/metrics", server.log())
            self.assertEqual(h.http_request(port, "/metrics")[0], 200)
        finally:
            code, _ = server.stop()
        self.assertEqual(code, 0)


if __name__ == "__main__":
    h.run_tests(["--server", "--proto", "--work"], globals())

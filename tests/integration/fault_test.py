"""Reliability (issue 8): nothing the server acknowledged may be lost, whatever happens to
its process or its disk. An independent Python client against real i2s_server processes
(the harness's demo model, resolution 32):

- KillLoopTest: rounds of a mixed workload from several threads on one data directory,
  each ended by SIGKILL at a seeded random moment. After every kill and restart the SQLite
  file passes integrity_check and foreign_key_check, every acknowledged latent is there
  with identical values (unless its deletion was acknowledged), request_id keys still give
  the first result, and every job the client heard of is terminal as it was told or
  resumes and ends; at the end no job is left queued or running.
- CancelAfterKillTest: a CancelJob acknowledged for a running job, then SIGKILL before
  the job's next step: the job must not run on after the restart.
- DiskFaultTest (root only, it mounts file systems; skipped otherwise): the data directory
  on a small tmpfs that fills up (imports until the first refusal, then more room; a job
  that ends while it is full), on a tmpfs that is read-only at start, and on an ext4 loop
  image that turns read-only under the running server (Linux refuses to remount a tmpfs
  read-only while the store's files are open for writing, so that case needs ext4's
  errors=remount-ro; skipped without loop devices).

Run: fault_test.py --server build/server/i2s_server --proto proto --work DIR [unittest args]
Environment: I2S_FAULT_ROUNDS (default 10), I2S_FAULT_SEED (default 8) for the kill loop.
"""

import collections
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import i2s_harness as h  # noqa: E402
from i2s_harness import collect, kind, read_npy  # noqa: E402

ARGS = None
grpc = None
pb = None

LAYERS, SIZE = 8, 512  # the demo model at resolution 32
SERVER_FLAGS = ["--checkpoint-every", "5", "--heartbeat-seconds", "1"]
IMAGES = ["chelsea.png", "coffee.png", "astronaut.png", "camera.png"]
ROUNDS = int(os.environ.get("I2S_FAULT_ROUNDS", "10"))
SEED = int(os.environ.get("I2S_FAULT_SEED", "8"))


def setUpModule():
    global grpc, pb
    grpc, pb = h.import_api(ARGS.proto, ARGS.work)
    # The checks after each kill make thousands of calls at once: no per-tenant rate limit
    # here (admission limits are security_test's subject).
    if h.server_supports(ARGS.server, "--rate-limit"):
        SERVER_FLAGS.extend(["--rate-limit", "0"])


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def store_check(data_dir):
    """SQLite's own checks of the store, through a read-only connection (the server may be
    running: WAL lets a reader in beside it). Returns (problems, row counts)."""
    path = os.path.join(data_dir, "i2s.sqlite")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        problems = []
        integrity = [r[0] for r in db.execute("PRAGMA integrity_check")]
        if integrity != ["ok"]:
            problems.append(f"PRAGMA integrity_check: {integrity[:10]}")
        fk = db.execute("PRAGMA foreign_key_check").fetchall()
        if fk:
            problems.append(f"PRAGMA foreign_key_check: {fk[:10]}")
        bad = db.execute("SELECT id, state FROM jobs WHERE state NOT BETWEEN 1 AND 5").fetchall()
        if bad:
            problems.append(f"jobs with an unknown state: {bad[:10]}")
        counts = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("latents", "jobs", "requests")}
    finally:
        db.close()
    return problems, counts


def random_w(rng):
    return rng.standard_normal((LAYERS, SIZE)).astype(np.float32)


def same_array(a, b):
    """Bit for bit: shape, dtype and every float's bytes."""
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ------------------------------------------------------------------------------ kill -9

class Ledger:
    """Everything the client was told, over all rounds. One lock guards it all."""

    def __init__(self):
        self.lock = threading.Lock()
        self.values = {}      # latent id -> the float32 array it must hold (None: not known yet)
        self.exported = {}    # latent id -> the first ExportLatent bytes seen
        self.deleted = set()  # DeleteLatent acknowledged
        self.deleting = set()  # DeleteLatent sent, the kill came before its reply
        self.alive = []       # acknowledged latents that edits and deletes may pick
        self.imports = {}     # ImportLatent request_id -> (request, latent id)
        self.embeds = {}      # Embed request_id -> (EmbedRequest, job id)
        self.jobs = {}        # job id -> dict(last_seq, told, latent, cancel, why)
        self.counts = collections.Counter()
        self.unexpected = []  # statuses (or exceptions) no call should get before the kill
        self.cancel_lost = []  # CancelJob acknowledged (job RUNNING), job later SUCCEEDED

    def add_latent(self, lid, values, usable=True):
        with self.lock:
            if lid in self.values:
                return
            self.values[lid] = values
            if usable:
                self.alive.append(lid)

    def pick(self, rnd, n):
        with self.lock:
            if len(self.alive) < n:
                return None
            return rnd.sample(self.alive, n)

    def known(self, lid):
        with self.lock:
            return self.values.get(lid)

    def gone(self, lid):
        with self.lock:
            return lid in self.deleted or lid in self.deleting


class Worker(threading.Thread):
    """One client thread of a round. Counts every acknowledged call; an error before the
    kill that the call may not give goes to ledger.unexpected."""

    def __init__(self, name, stub, ledger, rnd, stop, round_no):
        super().__init__(name=name, daemon=True)
        self.stub, self.ledger, self.rnd, self.stop = stub, ledger, rnd, stop
        self.round_no = round_no
        self.n = 0

    def run(self):
        try:
            while not self.stop.is_set():
                self.n += 1
                self.step()
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            if not self.stop.is_set():
                self.ledger.unexpected.append(f"{self.name}: {e!r}\n{traceback.format_exc()}")

    def call(self, what, fn, allowed=()):
        """fn() or None when it failed. `allowed`: codes (or a test of the code, made when
        the error comes) that are fine before the kill; once it is under way anything goes."""
        try:
            r = fn()
            self.ledger.counts[what] += 1
            return r
        except grpc.RpcError as e:
            if self.stop.is_set():
                self.ledger.counts[what + " cut by kill"] += 1
                return None
            if allowed(e.code()) if callable(allowed) else e.code() in allowed:
                self.ledger.counts[f"{what} {e.code().name}"] += 1
                return None
            self.ledger.unexpected.append(f"{self.name} {what}: {e.code().name}: {e.details()}")
            return None
        except ValueError:  # "Cannot invoke RPC on closed channel": the kill closed it
            if self.stop.is_set():
                return None
            raise

    def gone(self, *ids):
        """For `allowed`: NOT_FOUND is fine when one of `ids` is being (or was) deleted."""
        return lambda code: (code == grpc.StatusCode.NOT_FOUND
                             and any(self.ledger.gone(i) for i in ids))

    def export_new(self, lid):
        """The first look at an edit's or embedding's result: its exported values."""
        r = self.call("ExportLatent", lambda: self.stub.ExportLatent(
            pb.ExportLatentRequest(latent_id=lid), timeout=30), allowed=self.gone(lid))
        if r is not None:
            with self.ledger.lock:
                self.ledger.exported.setdefault(lid, r.npy)
                if self.ledger.values.get(lid) is None:
                    self.ledger.values[lid] = read_npy(r.npy)


class EmbedWorker(Worker):
    """Embed streams followed to the end, detached early (the job goes on), cancelled by
    CancelJob, or cancelled by the disconnect (cancel_on_disconnect)."""

    def step(self):
        rnd, L = self.rnd, self.ledger
        mode = rnd.choice(["complete", "complete", "detach", "cancel", "disconnect"])
        steps = rnd.randint(12, 70)
        # A repeat of a request_id re-attaches; with cancel_on_disconnect its end would
        # cancel the job, so those go without one.
        rid = (f"embed-r{self.round_no}-{self.name}-{self.n}"
               if mode != "disconnect" and rnd.random() < 0.3 else "")
        req = pb.EmbedRequest(image=h.image_bytes(rnd.choice(IMAGES)),
                              options=h.fast_options(steps, init=pb.ZEROS),
                              seed=rnd.randrange(1 << 32), request_id=rid,
                              cancel_on_disconnect=(mode == "disconnect"),
                              labels={"round": str(self.round_no)})
        leave_at = rnd.randint(1, steps)
        job = None
        try:
            call = self.stub.Embed(req, timeout=180)
            for ev in call:
                if kind(ev) == "heartbeat":
                    continue
                with L.lock:
                    if job is None:
                        job = L.jobs.setdefault(ev.job_id, dict(last_seq=0, told=None,
                                                                latent=None, cancel=None,
                                                                why=mode, round=self.round_no))
                        L.counts["Embed accepted"] += 1
                        if rid:
                            L.embeds[rid] = (req, ev.job_id)
                    job["last_seq"] = max(job["last_seq"], ev.sequence)
                k = kind(ev)
                if k in h.TERMINAL:
                    with L.lock:
                        job["told"] = k
                        L.counts[f"Embed {k}"] += 1
                        if k == "succeeded":
                            job["latent"] = ev.succeeded.latent_id
                        elif k == "failed":
                            L.unexpected.append(f"{self.name} Embed failed: {ev.failed.message}")
                    if k == "succeeded":
                        L.add_latent(ev.succeeded.latent_id, None)
                        self.export_new(ev.succeeded.latent_id)
                    break
                if k == "progress" and ev.progress.step >= leave_at:
                    if mode in ("detach", "disconnect"):
                        call.cancel()
                        L.counts[f"Embed {mode}"] += 1
                        break
                    if mode == "cancel" and job["cancel"] is None:
                        got = self.call("CancelJob", lambda: self.stub.CancelJob(
                            pb.CancelJobRequest(job_id=ev.job_id), timeout=30),
                            allowed=(grpc.StatusCode.FAILED_PRECONDITION,))
                        with L.lock:
                            job["cancel"] = pb.JobState.Name(got.state) if got else "refused"
        except grpc.RpcError as e:
            if not self.stop.is_set():
                L.unexpected.append(f"{self.name} Embed stream: {e.code().name}: {e.details()}")
        except ValueError:
            if not self.stop.is_set():
                raise


class LatentWorker(Worker):
    """ImportLatent (half with a request_id), DeleteLatent, ExportLatent, ListLatents."""

    def step(self):
        rnd, L = self.rnd, self.ledger
        time.sleep(rnd.uniform(0, 0.03))  # a client's pace, not a flood: the store stays small
        op = rnd.choices(["import", "delete", "export", "list", "get"], [5, 2, 2, 1, 1])[0]
        if op == "import":
            w = random_w(np.random.default_rng(rnd.randrange(1 << 32)))
            data = h.npy(w)
            rid = f"imp-r{self.round_no}-{self.name}-{self.n}" if rnd.random() < 0.5 else ""
            req = pb.ImportLatentRequest(npy=data, request_id=rid, noise_seed=self.n,
                                         labels={"round": str(self.round_no)})
            lat = self.call("ImportLatent", lambda: self.stub.ImportLatent(req, timeout=30))
            if lat is not None:
                L.add_latent(lat.id, w)
                if rid:
                    with L.lock:
                        L.imports[rid] = (req, lat.id)
        elif op == "delete":
            with L.lock:
                if len(L.alive) < 12:  # keep inputs for the edits
                    return
                lid = L.alive.pop(rnd.randrange(len(L.alive)))
                L.deleting.add(lid)
            r = self.call("DeleteLatent", lambda: self.stub.DeleteLatent(
                pb.DeleteLatentRequest(latent_id=lid), timeout=30))
            with L.lock:
                if r is not None:
                    L.deleting.discard(lid)
                    L.deleted.add(lid)
                elif not self.stop.is_set():  # failed for another reason: still there
                    L.deleting.discard(lid)
                    L.alive.append(lid)
        elif op == "export":
            got = L.pick(rnd, 1)
            if got:
                self.check_export(got[0])
        elif op == "list":
            self.call("ListLatents", lambda: self.stub.ListLatents(
                pb.ListLatentsRequest(page_size=rnd.choice([5, 50, 200])), timeout=30))
        else:
            got = L.pick(rnd, 1)
            if got:
                self.call("GetLatent", lambda: self.stub.GetLatent(
                    pb.GetLatentRequest(latent_id=got[0], include_values=True), timeout=30),
                    allowed=self.gone(got[0]))

    def check_export(self, lid):
        L = self.ledger
        r = self.call("ExportLatent", lambda: self.stub.ExportLatent(
            pb.ExportLatentRequest(latent_id=lid), timeout=30), allowed=self.gone(lid))
        if r is None:
            return
        with L.lock:
            want, first = L.values.get(lid), L.exported.setdefault(lid, r.npy)
            if want is not None and not same_array(read_npy(r.npy), want):
                L.unexpected.append(f"ExportLatent {lid}: values differ from the acknowledged ones")
            if first != r.npy:
                L.unexpected.append(f"ExportLatent {lid}: bytes differ from the first export")


class EditWorker(Worker):
    """StyleMix and ExpressionTransfer that store their result, Morph, Synthesize."""

    def step(self):
        rnd, L = self.rnd, self.ledger
        op = rnd.choices(["stylemix", "expression", "morph", "synthesize"], [4, 3, 1, 1])[0]
        ids = L.pick(rnd, 3)
        if ids is None:
            time.sleep(0.05)
            return
        nf = self.gone(*ids)  # an input deleted meanwhile by another thread
        ref = lambda i: pb.LatentRef(latent_id=i)  # noqa: E731
        rid = f"edit-r{self.round_no}-{self.name}-{self.n}" if rnd.random() < 0.3 else ""
        if op == "stylemix":
            c = rnd.randint(0, LAYERS)
            r = self.call("StyleMix", lambda: self.stub.StyleMix(pb.StyleMixRequest(
                content=ref(ids[0]), style=ref(ids[1]), crossover=c, store_result=True,
                request_id=rid), timeout=60), allowed=nf)
            if r is not None:
                a, b = L.known(ids[0]), L.known(ids[1])
                want = None if a is None or b is None else np.concatenate([a[:c], b[c:]])
                L.add_latent(r.latent.id, want)
                self.export_new(r.latent.id)
        elif op == "expression":
            first = rnd.randint(0, LAYERS - 1)
            r = self.call("ExpressionTransfer", lambda: self.stub.ExpressionTransfer(
                pb.ExpressionTransferRequest(
                    target=ref(ids[0]), neutral=ref(ids[1]), expression=ref(ids[2]),
                    strength=rnd.uniform(-2, 2), first_layer=first,
                    last_layer=rnd.randint(first, LAYERS - 1), store_result=True,
                    request_id=rid), timeout=60), allowed=nf)
            if r is not None:
                L.add_latent(r.latent.id, None)
                self.export_new(r.latent.id)
        elif op == "morph":
            self.call("Morph", lambda: list(self.stub.Morph(pb.MorphRequest(
                a=ref(ids[0]), b=ref(ids[1]), frames=3), timeout=60)), allowed=nf)
        else:
            self.call("Synthesize", lambda: self.stub.Synthesize(
                pb.SynthesizeRequest(latent=ref(ids[0])), timeout=60), allowed=nf)


class KillLoopTest(unittest.TestCase):
    """SIGKILL at random moments of a mixed workload, round after round, one data dir."""

    def test_kill9_loop_loses_nothing_acknowledged(self):
        data = h.fresh_dir(os.path.join(ARGS.work, "killloop"))
        server = h.Server(ARGS.server, data, extra=SERVER_FLAGS)
        L = Ledger()
        t_start = time.time()
        try:
            for rnd_no in range(ROUNDS + 1):
                t0 = time.time()
                server.start()
                stub = server.stub()
                problems, counts = store_check(data)
                self.assertEqual(problems, [], f"round {rnd_no}: the store after a restart")
                watched = self.verify(stub, L, f"after kill {rnd_no}" if rnd_no else "start")
                if rnd_no == ROUNDS:
                    break
                rnd = random.Random(f"kill-{SEED}-{rnd_no}")  # the same round every run
                kill_at = rnd.uniform(0.3, 4.5)
                stop = threading.Event()
                before = collections.Counter(L.counts)
                workers = [cls(f"{cls.__name__[:-6].lower()}{i}", stub, L,
                               random.Random(rnd.randrange(1 << 32)), stop, rnd_no)
                           for i, cls in enumerate([EmbedWorker, EmbedWorker, LatentWorker,
                                                    LatentWorker, EditWorker])]
                t_work = time.time()
                for w in workers:
                    w.start()
                time.sleep(kill_at)
                stop.set()
                code, _ = server.stop(signal.SIGKILL)
                self.assertEqual(code, -signal.SIGKILL, server.log())
                for w in workers:
                    w.join(60)
                    self.assertFalse(w.is_alive(), f"{w.name} still blocked 60 s after the kill")
                # The file as the kill left it (WAL and all), before the next start.
                problems, _ = store_check(data)
                self.assertEqual(problems, [], f"round {rnd_no}: the store right after the kill")
                done = {k: v - before[k] for k, v in L.counts.items() if v - before[k]}
                log(f"round {rnd_no}: killed {time.time() - t_work:.2f} s into the workload "
                    f"(seeded {kill_at:.2f} s), {watched} unfinished job(s) watched to the end "
                    f"after the restart, store {counts}, round took {time.time() - t0:.1f} s; "
                    f"acknowledged: {dict(sorted(done.items()))}")
                self.assertEqual(L.unexpected, [], f"round {rnd_no}: unexpected statuses")
            # Nothing left behind: every job, also those whose Embed reply the kill cut off
            # (created but never acknowledged), has ended.
            deadline = time.time() + 120
            while True:
                left = stub.ListJobs(pb.ListJobsRequest(page_size=1000,
                                                        states=[pb.QUEUED, pb.RUNNING]))
                if not left.jobs or time.time() > deadline:
                    break
                time.sleep(0.5)
            self.assertEqual([(j.id, pb.JobState.Name(j.state)) for j in left.jobs], [],
                             "jobs still queued or running 120 s after the last restart")
            all_jobs = stub.ListJobs(pb.ListJobsRequest(page_size=1000)).jobs
            states = collections.Counter(pb.JobState.Name(j.state) for j in all_jobs)
            self.assertTrue(all(j.error_message for j in all_jobs
                                if j.state in (pb.FAILED, pb.CANCELLED)),
                            "a failed or cancelled job without an error message")
            self.assertEqual(h.health(server.channel), h.SERVING)
            code, _ = server.stop()
            self.assertEqual(code, 0, server.log())
            problems, counts = store_check(data)
            self.assertEqual(problems, [])
            log(f"kill loop: {ROUNDS} kills in {time.time() - t_start:.1f} s; "
                f"{len(L.values)} acknowledged latents ({len(L.deleted)} deleted, "
                f"{len(L.deleting)} deletions undecided), {len(L.jobs)} acknowledged jobs, "
                f"jobs by state {dict(states)}, store {counts}; totals "
                f"{dict(sorted(L.counts.items()))}")
            if L.cancel_lost:
                log("CancelJob acknowledged (job RUNNING) but the job later SUCCEEDED after a "
                    f"kill: {L.cancel_lost} (see CancelAfterKillTest)")
        finally:
            if server.proc is not None:
                server.stop(signal.SIGKILL)

    def verify(self, stub, L, label):
        """Checks the restarted server against everything acknowledged so far; follows every
        job the client heard of to its end. Returns the number of jobs it had to watch."""
        NF = grpc.StatusCode.NOT_FOUND
        problems = []
        for lid in list(L.values):
            want = L.values[lid]
            try:
                got = stub.ExportLatent(pb.ExportLatentRequest(latent_id=lid), timeout=30)
            except grpc.RpcError as e:
                if e.code() == NF and (lid in L.deleted or lid in L.deleting):
                    L.deleting.discard(lid)
                    L.deleted.add(lid)
                else:
                    problems.append(f"{lid}: {e.code().name}: {e.details()}")
                continue
            if lid in L.deleted:
                problems.append(f"{lid}: deletion was acknowledged, yet it is back")
                continue
            if lid in L.deleting:  # the kill came first; it stays
                L.deleting.discard(lid)
                L.alive.append(lid)
            arr = read_npy(got.npy)
            if want is None:
                L.values[lid] = arr
            elif not same_array(arr, want):
                problems.append(f"{lid}: values differ from the acknowledged ones")
            if L.exported.setdefault(lid, got.npy) != got.npy:
                problems.append(f"{lid}: ExportLatent bytes changed across the restart")
        for rid, (req, lid) in L.imports.items():
            if lid in L.deleted or lid in L.deleting:
                continue
            again = stub.ImportLatent(req, timeout=30)
            if again.id != lid:
                problems.append(f"ImportLatent request_id {rid}: {again.id}, first {lid}")
        for rid, (req, job_id) in L.embeds.items():
            call = stub.Embed(req, timeout=60)
            first = next(iter(call))
            call.cancel()
            if first.job_id != job_id:
                problems.append(f"Embed request_id {rid}: job {first.job_id}, first {job_id}")
        watched = 0
        for job_id, j in L.jobs.items():
            try:
                job = stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=30)
            except grpc.RpcError as e:
                problems.append(f"job {job_id}: {e.code().name}: {e.details()}")
                continue
            state = pb.JobState.Name(job.state)
            if j["told"] is not None:
                if state != j["told"].upper() or job.latent_id != (j["latent"] or ""):
                    problems.append(f"job {job_id}: the client was told {j['told']} "
                                    f"{j['latent'] or ''}, now {state} {job.latent_id}")
                continue
            watched += 1
            events = collect(stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=300))
            end = events[-1] if events else None
            if end is None or kind(end) not in h.TERMINAL:
                problems.append(f"job {job_id}: WatchJob ended without a terminal event")
                continue
            # The client last heard of it from an earlier process: everything now is new.
            reused = [e.sequence for e in events if e.sequence <= j["last_seq"]]
            if reused:
                problems.append(f"job {job_id}: the client had seen 1..{j['last_seq']}, now "
                                f"events {reused[:3]}..: sequence numbers reused")
            j["told"] = kind(end)
            L.counts[f"resumed job {kind(end)}"] += 1
            if kind(end) == "succeeded":
                j["latent"] = end.succeeded.latent_id
                L.add_latent(end.succeeded.latent_id, None)
                if j["cancel"] == "RUNNING":
                    L.cancel_lost.append(job_id)
            elif kind(end) == "failed":
                problems.append(f"job {job_id} failed after the restart: {end.failed.message}")
            elif kind(end) == "cancelled" and j["why"] not in ("cancel", "disconnect"):
                problems.append(f"job {job_id} cancelled, nobody asked: {end.cancelled.message}")
            if j["cancel"] == "CANCELLED" and kind(end) != "cancelled":
                problems.append(f"job {job_id}: CancelJob answered CANCELLED, now {kind(end)}")
        self.assertEqual(problems, [], label)
        return watched


# ------------------------------------------------------------------------- disk faults

DISK_CODES = None  # set in DiskFaultTest.setUpClass (needs grpc)


def sh(*cmd):
    return subprocess.run(list(cmd), capture_output=True, text=True)


class DiskFaultTest(unittest.TestCase):
    """The data directory on file systems that fill up or turn read-only."""

    @classmethod
    def setUpClass(cls):
        global DISK_CODES
        DISK_CODES = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE,
                      grpc.StatusCode.INTERNAL)

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("needs root: the data directory goes on a tmpfs mounted for the test")
        self.mounts, self.servers = [], []

    def tearDown(self):
        for s in self.servers:
            if s.proc is not None:
                s.stop(signal.SIGKILL)
        for m in reversed(self.mounts):
            if sh("umount", m).returncode != 0:
                sh("umount", "-l", m)

    def mount_point(self, name):
        path = os.path.join(ARGS.work, name)
        sh("umount", path)  # left mounted by a run that was killed
        return h.fresh_dir(path)

    def mount_tmpfs(self, name, size):
        path = self.mount_point(name)
        r = sh("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path)
        if r.returncode != 0:
            self.skipTest(f"mount -t tmpfs failed: {r.stderr.strip()}")
        self.mounts.append(path)
        return path

    def server(self, data_dir, name):
        """A server whose log and port file live outside the file system under test."""
        logs = h.fresh_dir(os.path.join(ARGS.work, name + "-logs"))
        s = h.Server(ARGS.server, data_dir, extra=SERVER_FLAGS, log_dir=logs, port_dir=logs)
        self.servers.append(s)
        return s

    def assertDiskError(self, e, words, what):
        """A clean status for a write the disk refused, with a message that says so."""
        self.assertIsInstance(e, grpc.RpcError, what)
        log(f"  {what}: {e.code().name}: {e.details()}")
        self.assertIn(e.code(), DISK_CODES, f"{what}: {e.details()}")
        self.assertTrue(any(w in e.details().lower() for w in words),
                        f"{what}: the message does not say what happened: {e.details()!r}")

    @staticmethod
    def events_until_error(call):
        """A stream's events; an error after some events is appended to them (raised if
        there were none)."""
        events = []
        try:
            for e in call:
                events.append(e)
        except grpc.RpcError as e:
            if not events:
                raise
            events.append(e)
        return events

    def writes(self, stub, some_id):
        """One of each storing call; returns {name: RpcError or the reply}."""
        calls = {
            "ImportLatent": lambda: stub.ImportLatent(pb.ImportLatentRequest(
                npy=h.npy(np.zeros((LAYERS, SIZE), np.float32))), timeout=30),
            "StyleMix": lambda: stub.StyleMix(pb.StyleMixRequest(
                content=pb.LatentRef(latent_id=some_id), style=pb.LatentRef(latent_id=some_id),
                crossover=3, store_result=True), timeout=30),
            "Embed": lambda: self.events_until_error(stub.Embed(pb.EmbedRequest(
                image=h.image_bytes("chelsea.png"), options=h.fast_options(3, init=pb.ZEROS)),
                timeout=60)),
        }
        out = {}
        for name, fn in calls.items():
            try:
                out[name] = fn()
            except grpc.RpcError as e:
                out[name] = e
        return out

    def assertReadsWork(self, server, acked):
        stub = server.stub()
        self.assertIsNone(server.proc.poll(), "the server died")
        self.assertEqual(h.health(server.channel), h.SERVING)
        stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=30)
        for lid, w in acked.items():
            got = read_npy(stub.ExportLatent(pb.ExportLatentRequest(latent_id=lid), timeout=30).npy)
            self.assertTrue(same_array(got, w), f"{lid} changed")
        listed, token = set(), ""
        while True:
            page = stub.ListLatents(pb.ListLatentsRequest(page_size=1000, page_token=token))
            listed |= {l.id for l in page.latents}
            token = page.next_page_token
            if not token:
                break
        self.assertLessEqual(set(acked), listed)
        stub.ListJobs(pb.ListJobsRequest(page_size=10), timeout=30)
        stub.Synthesize(pb.SynthesizeRequest(latent=pb.LatentRef(latent_id=next(iter(acked)))),
                        timeout=30)

    def assertRestartIsWhole(self, server, acked, rng):
        """A restart (with room to write) serves everything acknowledged, takes new
        writes, and stops cleanly."""
        server.start()
        self.assertReadsWork(server, acked)
        self.import_some(server.stub(), acked, rng, 2)
        code, _ = server.stop()
        self.assertEqual(code, 0, server.log())

    def import_some(self, stub, acked, rng, n):
        for _ in range(n):
            w = random_w(rng)
            acked[stub.ImportLatent(pb.ImportLatentRequest(npy=h.npy(w)), timeout=30).id] = w

    def test_full_disk(self):
        mnt = self.mount_tmpfs("fullfs", "3m")
        data = os.path.join(mnt, "data")
        server = self.server(data, "fullfs").start()
        stub = server.stub()
        acked, rng, err, pending_job = {}, np.random.default_rng(8), None, None
        for i in range(2000):
            w = random_w(rng)
            try:
                lat = stub.ImportLatent(pb.ImportLatentRequest(npy=h.npy(w)), timeout=30)
            except grpc.RpcError as e:
                err = e
                break
            acked[lat.id] = w
        self.assertIsNotNone(err, "3 MiB never filled up")
        used = sh("du", "-sk", data).stdout.split()[0]
        log(f"  tmpfs of 3 MiB full after {len(acked)} imports ({used} KiB in the data dir)")
        self.assertGreaterEqual(len(acked), 20, "the store should take some writes first")
        self.assertDiskError(err, ("full", "space"), "ImportLatent on a full disk")
        self.assertReadsWork(server, acked)
        for name, r in self.writes(stub, next(iter(acked))).items():
            if isinstance(r, grpc.RpcError):
                self.assertDiskError(r, ("full", "space"), f"{name} on a full disk")
            elif name == "Embed" and isinstance(r[-1], grpc.RpcError):
                # The small job row fitted, its end (the result latent with the final
                # record, one transaction) not: nothing final is announced before it is
                # stored, so the job stays RUNNING and its stream open past the call's
                # deadline; with room again it ends (below), as
                # test_job_ending_on_a_full_disk_keeps_its_outcome checks in detail.
                self.assertEqual(r[-1].code(), grpc.StatusCode.DEADLINE_EXCEEDED, r[-1])
                pending_job = r[0].job_id
                job = stub.GetJob(pb.GetJobRequest(job_id=pending_job), timeout=30)
                log(f"  Embed on a full disk: accepted, its end not stored yet: "
                    f"{pb.JobState.Name(job.state)}")
                self.assertEqual(job.state, pb.RUNNING)
                self.assertIn("job_unsaved", server.log())
            elif name == "Embed":
                # The small job row may still fit, the result latent not: then the job
                # fails with a clear status (what its state is after a restart is
                # test_job_ending_on_a_full_disk_keeps_its_outcome's business).
                end = r[-1]
                log(f"  Embed on a full disk: accepted, ended {kind(end)} "
                    f"{end.failed.message if kind(end) == 'failed' else ''}")
                self.assertIn(kind(end), ("succeeded", "failed"))
                if kind(end) == "failed":
                    self.assertIn(end.failed.code, [c.value[0] for c in DISK_CODES])
                    self.assertIn("full", end.failed.message)
            else:
                log(f"  {name} on a full disk: accepted")
        # DeleteLatent needs room too (WAL mode appends the change before it frees pages).
        victim = next(iter(acked))
        try:
            stub.DeleteLatent(pb.DeleteLatentRequest(latent_id=victim), timeout=30)
            log("  DeleteLatent on a full disk: OK")
            del acked[victim]
        except grpc.RpcError as e:
            self.assertDiskError(e, ("full", "space"), "DeleteLatent on a full disk")
        self.assertReadsWork(server, acked)
        # More room: writes work again at once, without a restart.
        r = sh("mount", "-o", "remount,size=16m", mnt)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.import_some(stub, acked, rng, 5)
        if victim in acked:
            stub.DeleteLatent(pb.DeleteLatentRequest(latent_id=victim), timeout=30)
            del acked[victim]
        events = collect(stub.Embed(pb.EmbedRequest(image=h.image_bytes("coffee.png"),
                                                    options=h.fast_options(5, init=pb.ZEROS)),
                                    timeout=120))
        self.assertEqual(kind(events[-1]), "succeeded", events[-1])
        if pending_job:
            # The job whose end could not be stored ends once there is room.
            end = collect(stub.WatchJob(pb.WatchJobRequest(job_id=pending_job), timeout=120))[-1]
            self.assertEqual(kind(end), "succeeded", end)
        code, _ = server.stop()
        self.assertEqual(code, 0, server.log())
        self.assertEqual(store_check(data)[0], [])
        self.assertRestartIsWhole(server, acked, rng)

    def test_job_ending_on_a_full_disk_keeps_its_outcome(self):
        # A job that ends while the disk is full. Nothing final is announced before it is
        # stored: the job stays RUNNING (its stream open) until the store takes its final
        # record. Room made while the server runs lets it end at once, and the state after
        # a restart is what its client was told. Stopped while still full, it resumes on
        # the next start, and sequence numbers stay unique throughout.
        mnt = self.mount_tmpfs("fulljob", "8m")
        data = os.path.join(mnt, "data")
        server = self.server(data, "fulljob").start()
        stub = server.stub()
        w = random_w(np.random.default_rng(3))
        acked = {stub.ImportLatent(pb.ImportLatentRequest(npy=h.npy(w))).id: w}

        def fill():
            # Unbuffered: the write that finds the disk full fails there, and nothing is
            # left pending for close() to fail on again.
            try:
                with open(os.path.join(mnt, "ballast"), "ab", buffering=0) as f:
                    while True:
                        f.write(b"\0" * (1 << 16))
            except OSError:
                pass  # full

        def embed_until_unsaved():
            call = stub.Embed(pb.EmbedRequest(image=h.image_bytes("chelsea.png"),
                                              options=h.fast_options(150, init=pb.ZEROS)),
                              timeout=300)
            seen = collect(call, until=lambda e: kind(e) == "progress" and e.progress.step >= 10)
            job_id = seen[0].job_id
            fill()
            # The whole log: the line is written once, and how much follows it by the time
            # this looks depends on the machine's pace.
            server.wait_for_log(f"job_unsaved job_id={job_id}")
            job = stub.GetJob(pb.GetJobRequest(job_id=job_id))
            self.assertEqual(pb.JobState.Name(job.state), "RUNNING",
                             "a final state that is not stored must not be reported")
            return call, seen, job_id

        # 1. Room made while the server runs: the job ends, and stays ended.
        call, seen, job_id = embed_until_unsaved()
        os.remove(os.path.join(mnt, "ballast"))
        seen += collect(call)
        told = seen[-1]
        log(f"  after making room: the job ended {kind(told)} ({told})".replace("\n", " "))
        self.assertIn(kind(told), h.TERMINAL)
        self.assertEqual(pb.JobState.Name(stub.GetJob(pb.GetJobRequest(job_id=job_id)).state),
                         kind(told).upper())
        # The retry logs job_stored after it stored the record, which is also when the
        # terminal event goes out: the stream's end can reach this client before the line
        # is written, so it is waited for.
        server.wait_for_log(f"job_stored job_id={job_id}")
        code, _ = server.stop()
        self.assertEqual(code, 0, server.log())
        server.start()
        stub = server.stub()
        self.assertEqual(pb.JobState.Name(stub.GetJob(pb.GetJobRequest(job_id=job_id)).state),
                         kind(told).upper(), "the state after a restart is what was told")

        # 2. Stopped while still full: no terminal event, and the job resumes on restart.
        call, seen, job_id = embed_until_unsaved()
        last_seq = max(e.sequence for e in seen)
        self.assertReadsWork(server, acked)
        code, _ = server.stop()
        self.assertEqual(code, 0, server.log())
        with self.assertRaises(grpc.RpcError) as cm:  # the stream ends, not with a result
            seen += collect(call)
        # UNAVAILABLE from the server, or CANCELLED once the harness closed the channel.
        self.assertIn(cm.exception.code(),
                      (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED))
        self.assertNotIn(kind(seen[-1]), h.TERMINAL)
        with self.subTest("a restart on the still full disk"):
            try:
                server.start()
            except RuntimeError:
                log(f"  start on the full disk failed: {server.log().strip().splitlines()[-1]}")
                self.assertIn("--data-dir", server.log(),
                              "a start that fails on a full disk should name --data-dir")
            else:
                log("  started on the full disk")
                self.assertReadsWork(server, acked)
                server.stop()
        os.remove(os.path.join(mnt, "ballast"))
        server.start()
        stub = server.stub()
        self.assertReadsWork(server, acked)
        events = collect(stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=300))
        job = stub.GetJob(pb.GetJobRequest(job_id=job_id))
        log(f"  after the restart with room: job {pb.JobState.Name(job.state)}; WatchJob "
            f"replays sequences {events[0].sequence}..{events[-1].sequence}, "
            f"{[kind(e) for e in events[:2]]}..{kind(events[-1])}; the client had seen "
            f"1..{last_seq}")
        self.assertEqual(pb.JobState.Name(job.state), kind(events[-1]).upper())
        with self.subTest("sequence numbers are never reused"):
            reused = [e.sequence for e in events if e.sequence <= last_seq
                      and e.SerializeToString() not in {s.SerializeToString() for s in seen}]
            self.assertEqual(reused[:5], [], "events with numbers the client already had")
        code, _ = server.stop()
        self.assertEqual(code, 0, server.log())
        self.assertEqual(store_check(data)[0], [])

    def test_read_only_data_dir(self):
        mnt = self.mount_tmpfs("rofs", "16m")
        data = os.path.join(mnt, "data")
        server = self.server(data, "rofs").start()
        stub = server.stub()
        acked, rng = {}, np.random.default_rng(5)
        self.import_some(stub, acked, rng, 10)
        # Read-only while the server runs: Linux refuses (EBUSY) to remount a file system
        # read-only while files on it are open for writing, as the store's are. That case
        # is test_file_system_turning_read_only_under_the_server's (ext4 on a loop device).
        r = sh("mount", "-o", "remount,ro", mnt)
        if r.returncode == 0:
            log("  tmpfs remounted read-only under the running server")
            for name, res in self.writes(stub, next(iter(acked))).items():
                self.assertDiskError(res, ("read-only", "readonly", "disk"), f"{name}, read-only")
            self.assertReadsWork(server, acked)
            self.assertEqual(sh("mount", "-o", "remount,rw", mnt).returncode, 0)
            self.import_some(stub, acked, rng, 2)
        else:
            log(f"  mount -o remount,ro with the server running: {r.stderr.strip()} (expected)")
        self.assertReadsWork(server, acked)
        code, _ = server.stop()
        self.assertEqual(code, 0, server.log())
        r = sh("mount", "-o", "remount,ro", mnt)
        self.assertEqual(r.returncode, 0, r.stderr)
        for d in (data, os.path.join(mnt, "new")):
            cmd = [ARGS.server, "--demo-model", "--demo-resolution", "32", "--demo-fmap-base",
                   "256", "--address", "127.0.0.1:0", "--devices", "cpu", "--data-dir", d]
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired:
                self.fail(f"a server on the read-only {d} did not exit")
            message = (p.stdout + p.stderr).strip().splitlines()[-1]
            log(f"  start on the read-only {d}: exit {p.returncode}: {message}")
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("--data-dir", message)
        r = sh("mount", "-o", "remount,rw", mnt)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRestartIsWhole(server, acked, rng)
        self.assertEqual(store_check(data)[0], [])

    def test_file_system_turning_read_only_under_the_server(self):
        # ext4 mounted errors=remount-ro turns read-only on an error: what a failing disk
        # does to a running server. /sys/fs/ext4/DEV/trigger_fs_error raises one.
        for tool in ("mkfs.ext4", "e2fsck", "findmnt"):
            if shutil.which(tool) is None:
                self.skipTest(f"{tool} not found (Debian: e2fsprogs, util-linux)")
        image = os.path.join(ARGS.work, "ext4.img")
        if os.path.exists(image):
            os.remove(image)
        with open(image, "wb") as f:
            f.truncate(32 << 20)
        r = sh("mkfs.ext4", "-q", "-F", image)
        self.assertEqual(r.returncode, 0, r.stderr)
        mnt = self.mount_point("ext4fs")
        r = sh("mount", "-o", "loop,errors=remount-ro", image, mnt)
        if r.returncode != 0:
            self.skipTest(f"mount -o loop failed (no loop devices?): {r.stderr.strip()}")
        self.mounts.append(mnt)
        dev = os.path.basename(sh("findmnt", "-no", "SOURCE", mnt).stdout.strip())
        trigger = f"/sys/fs/ext4/{dev}/trigger_fs_error"
        if not os.path.exists(trigger):
            self.skipTest(f"{trigger} not found (kernel without it)")
        data = os.path.join(mnt, "data")
        server = self.server(data, "ext4fs").start()
        stub = server.stub()
        acked, rng = {}, np.random.default_rng(6)
        self.import_some(stub, acked, rng, 10)
        with open(trigger, "w") as f:
            f.write("fault_test: turning the data directory read-only\n")
        # The kernel turns the file system read-only as it handles the error: polled (a new
        # file can no longer be made), not assumed done by the time the write returned.
        # findmnt may still list "rw" (the superblock is read-only, not the mount), so its
        # options are only logged.
        def refuses_writes():
            try:
                open(os.path.join(mnt, "probe"), "w").close()
            except OSError as e:
                return e
            os.remove(os.path.join(mnt, "probe"))
            return None
        refused = h.wait_until(refuses_writes, f"{mnt} refusing writes after the ext4 error",
                               interval=0.05)
        opts = sh("findmnt", "-no", "OPTIONS", mnt).stdout.strip()
        log(f"  ext4 after the error: {opts}; a new file: {refused}")
        for name, res in self.writes(stub, next(iter(acked))).items():
            self.assertDiskError(res, ("read-only", "readonly", "disk"), f"{name}, read-only")
        try:
            stub.DeleteLatent(pb.DeleteLatentRequest(latent_id=next(iter(acked))), timeout=30)
            self.fail("DeleteLatent worked on a read-only file system")
        except grpc.RpcError as e:
            self.assertDiskError(e, ("read-only", "readonly", "disk"), "DeleteLatent, read-only")
        self.assertReadsWork(server, acked)
        # ext4 aborted its journal: it cannot go back to rw while mounted; an operator
        # stops the server, unmounts, checks the file system and mounts it again.
        r = sh("mount", "-o", "remount,rw", mnt)
        log(f"  mount -o remount,rw: exit {r.returncode} {r.stderr.strip()}")
        t0 = time.time()
        code, _ = server.stop()
        log(f"  SIGTERM on the read-only store: exit {code} in {time.time() - t0:.1f} s")
        self.assertEqual(code, 0, server.log())
        r = sh("umount", mnt)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.mounts.remove(mnt)
        r = sh("e2fsck", "-f", "-y", image)
        self.assertLess(r.returncode, 4, r.stdout + r.stderr)  # 0 clean, 1 errors fixed
        r = sh("mount", "-o", "loop,errors=remount-ro", image, mnt)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.mounts.append(mnt)
        self.assertEqual(store_check(data)[0], [])
        self.assertRestartIsWhole(server, acked, rng)


class CancelAfterKillTest(unittest.TestCase):
    """CancelJob on a running job answers OK at once and the job stops before its next
    step; a kill in between must not bring the job back to life."""

    def test_acknowledged_cancel_survives_kill9(self):
        data = h.fresh_dir(os.path.join(ARGS.work, "cancelkill"))
        server = h.Server(ARGS.server, data, extra=SERVER_FLAGS)
        try:
            server.start()
            stub = server.stub()
            # VGG on: about 0.1 s a step here, room to kill between the reply and the step end.
            # Steps to spare: the job must still run when CancelJob arrives, however far the
            # server got while this client read step 2 (was 12: 10 steps of margin).
            call = stub.Embed(pb.EmbedRequest(image=h.image_bytes("chelsea.png"),
                                              options=pb.EmbedOptions(steps=300, init=pb.ZEROS)),
                              timeout=300)
            seen = collect(call, until=lambda e: kind(e) == "progress" and e.progress.step >= 2)
            job_id = seen[0].job_id
            ack = stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=30)
            server.stop(signal.SIGKILL)
            server.start()
            stub = server.stub()
            events = collect(stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=300))
            job = stub.GetJob(pb.GetJobRequest(job_id=job_id))
            log(f"  CancelJob answered OK with state {pb.JobState.Name(ack.state)}; after "
                f"kill -9 and a restart the job {pb.JobState.Name(job.state)}, its events "
                f"{[kind(e) for e in events][:3]}..{kind(events[-1])} {job.latent_id}")
            self.assertEqual(job.state, pb.CANCELLED,
                             "the cancellation was acknowledged, yet the job ran on after the "
                             "restart")
        finally:
            if server.proc is not None:
                server.stop(signal.SIGKILL)


class RequestIdKillTest(unittest.TestCase):
    """kill -9 at exactly the request-ID write (server/base/failpoint.h): with the key and
    the record it names written but not committed, and with both committed but the caller
    not answered. After the restart the key names its record or nothing was written: a
    repeat of the call gets the one job or latent (never NOT_FOUND), and no second one
    exists."""

    def kill_at(self, point):
        data = h.fresh_dir(os.path.join(ARGS.work, "claimkill-" + point))
        server = h.Server(ARGS.server, data, extra=SERVER_FLAGS,
                          env=dict(os.environ, I2S_FAILPOINT=point))
        self.addCleanup(server.kill)
        embed = pb.EmbedRequest(image=h.image_bytes("chelsea.png"), options=h.fast_options(3),
                                request_id="kill-embed")
        latent = np.full((LAYERS, SIZE), 0.25, np.float32)
        imp = pb.ImportLatentRequest(npy=h.npy(latent), request_id="kill-import")
        for call in (lambda s: list(s.Embed(embed, timeout=120)),
                     lambda s: s.ImportLatent(imp, timeout=120)):
            server.start()
            with self.assertRaises(grpc.RpcError) as cm:
                call(server.stub())
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
            code, _ = server.stop(None)  # it killed itself
            self.assertEqual(code, -signal.SIGKILL)
            self.assertIn(f"failpoint {point}: SIGKILL", server.log(tail=None))

        server.env = None  # disarmed
        server.start()
        stub = server.stub()
        committed = point == "store.claim.after_commit"
        self.assertEqual(len(stub.ListJobs(pb.ListJobsRequest()).jobs), 1 if committed else 0)
        self.assertEqual(len(stub.ListLatents(pb.ListLatentsRequest()).latents),
                         1 if committed else 0)
        events = collect(stub.Embed(embed, timeout=300))
        self.assertEqual(kind(events[-1]), "succeeded", [kind(e) for e in events])
        jobs = stub.ListJobs(pb.ListJobsRequest()).jobs
        self.assertEqual([j.id for j in jobs], [events[0].job_id])
        first = stub.ImportLatent(imp, timeout=30)
        again = stub.ImportLatent(imp, timeout=30)
        self.assertEqual(first.id, again.id)
        stored = [l.id for l in stub.ListLatents(pb.ListLatentsRequest()).latents]
        self.assertIn(first.id, stored)
        self.assertEqual(len(stored), 2)  # the import and the embedding's result
        got = stub.GetLatent(pb.GetLatentRequest(latent_id=first.id, include_values=True))
        self.assertTrue(np.array_equal(np.array(got.values, np.float32).reshape(latent.shape),
                                       latent))
        found = "the key named its record" if committed else "nothing was written"
        log(f"  kill -9 at {point}: after the restart {found}; the repeats got one job "
            f"({events[0].job_id}) and one latent ({first.id})")
        self.assertEqual(server.stop()[0], 0, server.log())

    def test_kill9_between_the_request_id_write_and_its_commit(self):
        self.kill_at("store.claim.before_commit")

    def test_kill9_between_the_commit_and_the_answer(self):
        self.kill_at("store.claim.after_commit")


if __name__ == "__main__":
    h.run_tests(["--server", "--proto", "--work"], globals())

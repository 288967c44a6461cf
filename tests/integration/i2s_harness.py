"""Test harness for i2s_server: Python stubs generated from the proto at test time, a
real server process on 127.0.0.1 port 0, and small helpers. Uses only Debian's
python3-grpcio and python3-protobuf: an independent client of the API contract."""

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SKIMAGE_DATA = "/usr/lib/python3/dist-packages/skimage/data"

# Every server process a test started and did not stop: killed when the script exits,
# however it ends (a failed assertion between start and stop must not leave a server
# running after the suite).
_LIVE = set()


@atexit.register
def _kill_leftovers():
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _LIVE.clear()


def track(proc):
    """Registers a process started by a test for the kill at exit; returns it."""
    _LIVE.add(proc)
    return proc


def kill(proc):
    """Ends a process a test started (SIGKILL) if it still runs, reaps it and closes its
    pipes. For addCleanup: a test that fails midway must not leave its processes (and the
    jobs they follow) running beside the tests after it; the kill at exit is too late."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            f.close()
    _LIVE.discard(proc)


def spawn(test, cmd, **kw):
    """subprocess.Popen(cmd, **kw), tracked and killed when `test` ends, whatever its
    outcome (test.addCleanup; a no-op for a process the test already waited for)."""
    proc = track(subprocess.Popen(cmd, **kw))
    test.addCleanup(kill, proc)
    return proc


def stopped_at_end(test, server):
    """Registers `server` to be killed when `test` ends if it still runs then (a test that
    failed between start and stop); returns it. The test's own stop, with its exit-code
    check, comes first and makes this a no-op."""
    test.addCleanup(server.kill)
    return server


def wait_until(fn, what, timeout=120, interval=0.1):
    """Polls fn() until it returns something true and returns that. `timeout` only bounds a
    hang: nothing a test checks may depend on how soon the condition came."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout} s (last: {last!r})")
        time.sleep(interval)


# tests/support/early_threads.cc, built by CMake; its path comes in I2S_EARLY_THREADS.
EARLY_THREAD_NAME = "i2s-early"


def early_threads_env(base=None):
    """The environment of a process whose threads start before its main, with every signal
    unblocked (LD_PRELOAD of tests/support/early_threads.cc), as the pthread OpenBLAS does."""
    lib = os.environ.get("I2S_EARLY_THREADS", "")
    if not lib or not os.path.exists(lib):
        raise RuntimeError(f"I2S_EARLY_THREADS={lib!r}: the preload library was not built")
    env = dict(os.environ if base is None else base)
    env["LD_PRELOAD"] = lib + (" " + env["LD_PRELOAD"] if env.get("LD_PRELOAD") else "")
    return env


def early_threads(pid):
    """How many threads of `pid` the preload library started that take every signal."""
    n = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() != EARLY_THREAD_NAME:
                    continue
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                blocked = [l.split()[1] for l in f if l.startswith("SigBlk:")][0]
        except OSError:
            continue
        if int(blocked, 16) == 0:
            n += 1
    return n


def generate_stubs(proto_dir, out_dir, protoc="protoc", plugin=None):
    """Runs protoc + grpc_python_plugin and makes the stubs importable."""
    plugin = plugin or shutil.which("grpc_python_plugin")
    if plugin is None:
        raise RuntimeError("grpc_python_plugin not found (Debian: protobuf-compiler-grpc)")
    os.makedirs(out_dir, exist_ok=True)
    subprocess.run([protoc, f"-I{proto_dir}", f"--python_out={out_dir}", f"--grpc_out={out_dir}",
                    f"--plugin=protoc-gen-grpc={plugin}",
                    os.path.join(proto_dir, "i2s/v1/i2s.proto")], check=True)
    if out_dir not in sys.path:
        sys.path.insert(0, out_dir)


def import_api(proto_dir, work):
    """Generates the stubs into WORK/stubs and returns the modules (grpc, i2s_pb2)."""
    generate_stubs(proto_dir, os.path.join(work, "stubs"))
    import grpc
    from i2s.v1 import i2s_pb2
    return grpc, i2s_pb2


def fresh_dir(path):
    """An empty folder at `path` (whatever was there is removed)."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


class Server:
    """An i2s_server process serving the demo model on 127.0.0.1:<free port>."""

    def __init__(self, binary, data_dir, extra=(), resolution=32, fmap_base=256, log_dir=None,
                 devices="cpu", threads=1, address="127.0.0.1:0", port_dir=None,
                 make_channel=None, env=None):
        self.binary = binary
        self.data_dir = data_dir
        self.extra = list(extra)
        self.resolution = resolution
        self.fmap_base = fmap_base
        self.log_dir = log_dir or data_dir
        # Where the --port-file goes (the data dir unless told otherwise: a test that fills
        # or write-protects the data dir's file system keeps it elsewhere).
        self.port_dir = port_dir or data_dir
        # port -> the grpc channel the tests use (TLS, say); default: plaintext.
        self.make_channel = make_channel
        self.devices = devices
        self.threads = threads
        self.address = address
        self.env = env  # the process's environment (None: this one's)
        self.proc = None
        self.port = None
        self.starts = 0

    def start(self, timeout=120):
        import grpc
        port_file = os.path.join(self.port_dir, "port")
        if os.path.exists(port_file):
            os.remove(port_file)
        self.starts += 1
        self.log_path = os.path.join(self.log_dir, f"server-{self.starts}.log")
        log = self._log = open(self.log_path, "w")
        cmd = [self.binary, "--demo-model", "--demo-resolution", str(self.resolution),
               "--demo-fmap-base", str(self.fmap_base), "--address", self.address,
               "--port-file", port_file, "--data-dir", self.data_dir, "--devices", self.devices,
               "--threads", str(self.threads)] + self.extra
        self.proc = track(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                           env=self.env))
        deadline = time.time() + timeout
        while not os.path.exists(port_file):
            if self.proc.poll() is not None:
                log.close()
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()}")
            if time.time() > deadline:
                self.proc.kill()
                self.proc.wait()
                log.close()
                raise RuntimeError("server did not start: " + self.log())
            time.sleep(0.05)
        try:
            with open(port_file) as f:
                self.port = int(f.read().strip())
            if self.make_channel is not None:
                self.channel = self.make_channel(self.port)
            else:
                self.channel = grpc.insecure_channel(
                    f"127.0.0.1:{self.port}",
                    options=[("grpc.max_receive_message_length", 64 << 20)])
            # The port file is written once the server listens: this only bounds a hang.
            grpc.channel_ready_future(self.channel).result(timeout=120)
        except BaseException:
            self.kill()
            raise
        return self

    def stub(self):
        from i2s.v1 import i2s_pb2_grpc
        return i2s_pb2_grpc.ImageToStyleGanStub(self.channel)

    def log(self, tail=4000):
        """The last `tail` characters of this start's log (None: all of it). Checks that
        look for a line use all of it: how much the server logged after the line depends on
        how long the test took to look."""
        try:
            with open(self.log_path) as f:
                text = f.read()
        except OSError:
            return ""
        return text if tail is None else text[-tail:]

    def wait_for_log(self, text, timeout=120, count=1):
        """Waits until this start's log holds `text` (`count` times); returns the log. The
        timeout only bounds a hang."""
        def logged():
            log = self.log(tail=None)
            return log if log.count(text) >= count else None
        return wait_until(logged, f"{text!r} ({count}x) in the server log", timeout, 0.05)

    def kill(self):
        """SIGKILL if the process still runs (for cleanups); see stopped_at_end."""
        if self.proc is not None:
            self.stop(signal.SIGKILL)

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Sends `sig` (None: none, the process was told already) and waits; returns (exit
        code, seconds taken). A second SIGTERM/SIGINT would cut a shutdown short (exit 3)."""
        if self.proc is None:
            return None, 0
        t0 = time.time()
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        channel = getattr(self, "channel", None)  # none when the first start failed
        if channel is not None:
            channel.close()
        self._log.close()
        _LIVE.discard(self.proc)
        self.proc = None
        return code, time.time() - t0


_HELP = {}


def server_supports(binary, flag):
    """Whether an i2s_server binary has a command-line flag (from its --help), for tests
    that run against builds older than a flag."""
    import re
    if binary not in _HELP:
        _HELP[binary] = subprocess.run([binary, "--help"], capture_output=True, text=True,
                                       timeout=60).stdout
    return re.search(r"(^|\s)" + re.escape(flag) + r"[\s=]", _HELP[binary]) is not None


def health(channel, timeout=10):
    """grpc.health.v1.Health/Check for the whole server (service ""), called by hand since
    Debian's python3-grpcio has no grpc_health module: the HealthCheckResponse status
    number (1 = SERVING, 2 = NOT_SERVING; an empty message is 0, UNKNOWN)."""
    reply = channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=timeout)
    if not reply:
        return 0
    if reply[0] != 0x08 or len(reply) != 2:  # field 1, varint; the enum fits one byte
        raise ValueError(f"unexpected HealthCheckResponse bytes {reply!r}")
    return reply[1]


SERVING = 1


def npy(a):
    """.npy bytes of an array (np.save), as ImportLatent takes them."""
    import io
    import numpy as np
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def read_npy(data):
    import io
    import numpy as np
    return np.load(io.BytesIO(data), allow_pickle=False)


def kind(ev):
    """Which event a JobEvent is: "queued", "running", "progress", "succeeded", ..."""
    return ev.WhichOneof("kind")


TERMINAL = ("succeeded", "failed", "cancelled")


def collect(stream, until=None):
    """The events of a JobEvent stream, heartbeats left out, up to the end or the first
    event for which `until` is true."""
    events = []
    for ev in stream:
        if kind(ev) == "heartbeat":
            continue
        events.append(ev)
        if until is not None and until(ev):
            break
    return events


def fast_options(steps, **kw):
    """Pixel loss only: the quickest embedding (VGG off)."""
    from i2s.v1 import i2s_pb2
    return i2s_pb2.EmbedOptions(steps=steps, w_perceptual=0.0, lr=0.05, **kw)


def image_bytes(name):
    with open(os.path.join(SKIMAGE_DATA, name), "rb") as f:
        return f.read()


def temp_dir(prefix):
    return tempfile.mkdtemp(prefix=prefix)


def run_tests(flags, keep, optional=()):
    """The main() of a test script: parses the required `flags` (e.g. "--server") and the
    `optional` ones (None when absent), makes
    the --work folder, hands the parsed arguments to `keep`, then runs unittest with
    whatever arguments are left. `keep` is the script's globals() (the arguments become
    its ARGS) or a function that stores them."""
    import argparse
    import unittest
    parser = argparse.ArgumentParser()
    for flag in flags:
        parser.add_argument(flag, required=True)
    for flag in optional:
        parser.add_argument(flag)
    args, rest = parser.parse_known_args()
    if getattr(args, "work", None):
        os.makedirs(args.work, exist_ok=True)
    if isinstance(keep, dict):
        keep["ARGS"] = args
    else:
        keep(args)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


def http_request(port, path="/metrics", method="GET", host="127.0.0.1", timeout=10):
    """A plain HTTP request (urllib): (status, headers, body bytes); HTTP errors are returned,
    not raised."""
    import urllib.error
    import urllib.request
    req = urllib.request.Request(f"http://{host}:{port}{path}", method=method,
                                 data=b"" if method in ("POST", "PUT") else None)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def _socket_rows(pid):
    """The /proc/net/tcp{,6} rows of the TCP sockets a process holds open."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in lines:
            cols = row.split()
            if len(cols) > 9 and cols[9] in inodes:
                rows.append(cols)
    return rows


def listening_ports(pid):
    """The TCP ports a process listens on (from /proc: its socket inodes in LISTEN state)."""
    return {int(cols[1].rsplit(":", 1)[1], 16) for cols in _socket_rows(pid)
            if cols[3] == "0A"}  # 0A = LISTEN


def peer_ports(pid):
    """The remote ports of the established TCP connections a process holds (a connection
    it has accept()ed shows up here; one only queued in its listen backlog does not)."""
    return {int(cols[2].rsplit(":", 1)[1], 16) for cols in _socket_rows(pid)
            if cols[3] == "01"}  # 01 = ESTABLISHED

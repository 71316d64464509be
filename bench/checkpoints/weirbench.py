"""Shared helpers for the checkpoint benchmarks: start/stop/crash a weir
server on a free loopback port with a fresh temporary data dir, load rows,
read system.checkpoints, print tables and the command to repeat a run.

Only the standard library and psycopg 3.
"""

import atexit
import os
import random
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import datetime

import psycopg

HOST = "127.0.0.1"
DEFAULT_BIN = os.path.expanduser("~/.cache/weir-target/debug/weir")

_servers = []


def env_int(name, default):
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else default


def env_float(name, default):
    v = os.environ.get(name)
    return float(v) if v not in (None, "") else default


def env_str(name, default):
    v = os.environ.get(name)
    return v if v not in (None, "") else default


def env_list(name, default):
    return env_str(name, default).split()


def weir_bin():
    return os.path.expanduser(env_str("WEIR_BIN", DEFAULT_BIN))


def binary_info(path):
    try:
        st = os.stat(path)
    except OSError as e:
        sys.exit(f"weir binary not found: {path} ({e}); set WEIR_BIN")
    age = time.time() - st.st_mtime
    kind = "release" if "/release/" in path else ("debug" if "/debug/" in path else "unknown build")
    return f"{path} ({kind}, built {age / 60:.0f} min ago)"


def free_port():
    """A free loopback port below the ephemeral range, so that no client
    connection (ours or anyone's) is given it before the server binds it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randint(max(1025, low - 12000), low - 1)
        s = socket.socket()
        try:
            s.bind((HOST, port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


ANSI = re.compile(r"\x1b\[[0-9;]*m")
LOG_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z\s+(\w+)\s+(.*)$")


class Server:
    """A weir process with its own temp dir (data dir + server.log).

    The binary is hard-linked into the temp dir when possible, so that a
    rebuild of WEIR_BIN during the run does not change or break it.
    """

    def __init__(self, name="bench", log_level="info", extra_env=None):
        self.src_bin = weir_bin()
        self.root = tempfile.mkdtemp(prefix=f"weir-bench-{name}-")
        self.data_dir = os.path.join(self.root, "data")
        os.makedirs(self.data_dir)
        self.log_path = os.path.join(self.root, "server.log")
        self.port = free_port()
        self.log_level = log_level
        self.extra_env = extra_env or {}
        self.proc = None
        self.bin = self._pin_binary()
        _servers.append(self)

    def _pin_binary(self):
        dst = os.path.join(self.root, "weir")
        for attempt in range(30):
            try:
                os.link(self.src_bin, dst)
                return dst
            except FileNotFoundError:
                # Being replaced by a build right now.
                time.sleep(2)
            except OSError:
                return self.src_bin  # other filesystem: use it in place
        sys.exit(f"weir binary {self.src_bin} missing for 60s")

    @property
    def dsn(self):
        return f"host={HOST} port={self.port} user=weir dbname=weir"

    def launch(self, timeout=600):
        """Starts the process and waits until it accepts a connection.
        Returns seconds from spawn to the first successful connection."""
        env = dict(os.environ)
        env["WEIR_LOG"] = self.log_level
        env["NO_COLOR"] = "1"
        env.update(self.extra_env)
        for attempt in range(5):
            log = open(self.log_path, "a")
            log.write(f"=== launch at {datetime.datetime.now(datetime.timezone.utc).isoformat()} ===\n")
            log.flush()
            log_offset = log.tell()
            t0 = time.monotonic()
            self.spawn_wall = time.time()
            try:
                self.proc = subprocess.Popen(
                    [self.bin, "serve", "--data-dir", self.data_dir, "--listen", f"{HOST}:{self.port}"],
                    stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                )
            except OSError as e:  # ETXTBSY / ENOENT while the binary is replaced
                log.close()
                print(f"  (could not exec {self.bin}: {e}; retrying)", file=sys.stderr)
                time.sleep(3)
                continue
            log.close()
            deadline = t0 + timeout
            # Connect only once the listener is bound (the server prints
            # "weir listening on ..."): polling a port nobody listens on
            # can make the client's ephemeral port collide with it (a TCP
            # self-connect), and then the server cannot bind.
            listening = False
            while time.monotonic() < deadline and self.proc.poll() is None:
                if not listening:
                    with open(self.log_path, errors="replace") as f:
                        f.seek(log_offset)
                        listening = f"listening on {HOST}:{self.port}" in f.read()
                    if not listening:
                        time.sleep(0.01)
                        continue
                try:
                    left = max(1, int(deadline - time.monotonic()))
                    with psycopg.connect(self.dsn, connect_timeout=left, autocommit=True) as c:
                        c.execute("SELECT 1")
                    return time.monotonic() - t0
                except psycopg.OperationalError:
                    time.sleep(0.05)
            if self.proc.poll() is None:
                self.kill()
                raise RuntimeError(f"weir did not accept connections within {timeout}s; log: {self.log_path}")
            print(f"  (weir exited with {self.proc.returncode} at start; retrying) log tail:\n"
                  + self.log_tail(10), file=sys.stderr)
            time.sleep(3)
        raise RuntimeError(f"weir failed to start; log: {self.log_path}")

    def connect(self):
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)

    def kill(self):
        """kill -9 (the whole process group) and reap it."""
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.proc = None

    def stop(self, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def cleanup(self):
        self.kill()
        if self in _servers:
            _servers.remove(self)
        if os.environ.get("KEEP_DATA") == "1":
            print(f"  (kept {self.root})", file=sys.stderr)
            return
        subprocess.run(["rm", "-rf", self.root], check=False)

    def log_tail(self, n=20):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(ANSI.sub("", l) for l in f.readlines()[-n:])
        except OSError:
            return ""

    def log_events(self, since_wall):
        """(seconds after since_wall, level, message) of log lines written
        after since_wall (tracing timestamps are UTC)."""
        out = []
        with open(self.log_path, errors="replace") as f:
            for line in f:
                m = LOG_TS.match(ANSI.sub("", line).strip())
                if not m:
                    continue
                ts = datetime.datetime.fromisoformat(m.group(1)[:26]).replace(
                    tzinfo=datetime.timezone.utc).timestamp()
                if ts >= since_wall - 0.001:
                    out.append((ts - since_wall, m.group(2), m.group(3)))
        return out

    def du(self, sub=""):
        p = os.path.join(self.data_dir, sub)
        r = subprocess.run(["du", "-sb", p], capture_output=True, text=True)
        return int(r.stdout.split()[0]) if r.returncode == 0 else 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            print(f"--- server log tail ({self.log_path}) ---\n{self.log_tail(30)}", file=sys.stderr)
        self.cleanup()


def _cleanup_all():
    for s in list(_servers):
        s.cleanup()


def _on_signal(signum, frame):
    _cleanup_all()
    sys.exit(128 + signum)


atexit.register(_cleanup_all)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)


def with_retry(fn, what, attempts=3):
    """Runs fn() (which starts its own server); retries when the server died
    under it (e.g. the binary was replaced by a rebuild)."""
    for i in range(attempts):
        try:
            return fn()
        except (psycopg.OperationalError, RuntimeError) as e:
            if i == attempts - 1:
                raise
            print(f"  {what}: {e!r}; retrying ({i + 2}/{attempts})", file=sys.stderr)
            time.sleep(5)


def load_rows(conn, table, select_cols, n, batch, start=1):
    """INSERT INTO table SELECT <select_cols over g> FROM generate_series
    in batches; returns seconds taken."""
    t0 = time.monotonic()
    lo = start
    end = start + n - 1
    while lo <= end:
        hi = min(lo + batch - 1, end)
        conn.execute(f"INSERT INTO {table} SELECT {select_cols} FROM generate_series({lo}, {hi}) AS s(g)")
        lo = hi + 1
    return time.monotonic() - t0


def timed(conn, sql):
    t0 = time.monotonic()
    conn.execute(sql)
    return time.monotonic() - t0


CHECKPOINT_COLS = ("checkpoint_id, kind, mode, timed_out_to_unaligned, status, triggered_at, "
                   "completed_at, duration_ms, state_bytes, incremental_bytes, "
                   "persisted_in_flight_bytes, alignment_ms, failure")


def checkpoints(conn, query):
    cur = conn.execute(
        f"SELECT {CHECKPOINT_COLS} FROM system.checkpoints WHERE query = %s ORDER BY checkpoint_id",
        (query,))
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def last_completed(conn, query):
    done = [c for c in checkpoints(conn, query) if c["status"] == "completed"]
    return done[-1] if done else None


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_bytes(n):
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def fmt_num(x, digits=0):
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def print_table(headers, rows):
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = " | ".join(h.ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.rjust(w) if i > 0 and _numeric(c) else c.ljust(w)
                         for i, (c, w) in enumerate(zip(r, widths))))


def _numeric(s):
    return bool(re.match(r"^[-+]?[\d,.]+\s*(%|B|KB|MB|GB|s|ms|x)?$", s))


def header(title, params):
    print(f"== {title}")
    print(f"weir: {binary_info(weir_bin())}")
    if "/debug/" in weir_bin():
        print("NOTE: debug build -- absolute figures are not representative (see README).")
    print("params: " + " ".join(f"{k}={v}" for k, v in params.items()))
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    print()


def repeat_command(script, params):
    env = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in params.items())
    rel = os.path.relpath(os.path.abspath(script), os.getcwd())
    return f"WEIR_BIN={shlex.quote(weir_bin())} {env} python3 {rel}"


def footer(script, params):
    print()
    print(f"machine load average at end: {os.getloadavg()[0]:.1f}")
    print("repeat with:")
    print("  " + repeat_command(script, params))

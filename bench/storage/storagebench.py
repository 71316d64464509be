"""Shared helpers for the storage benchmarks: a PostgreSQL server in a
temporary directory next to a Weir server (bench/checkpoints/weirbench.py),
the COPY data file, pgbench runs, process memory and CPU time.

Only the standard library and psycopg 3.
"""

import datetime
import glob
import hashlib
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# The release build (the target dir bench/nexmark.sh uses) unless WEIR_BIN
# says otherwise: weirbench's default is the debug build.
RELEASE_BIN = os.path.expanduser("~/.cache/weir-target-release/release/weir")
if not os.environ.get("WEIR_BIN"):
    os.environ["WEIR_BIN"] = RELEASE_BIN
sys.path.insert(0, os.path.join(HERE, "..", "checkpoints"))
import weirbench as wb  # noqa: E402
import psycopg  # noqa: E402

HOST = wb.HOST
PG_VERSION = "15"
PG_USER = "postgres"   # superuser created by initdb, and the system user it runs as under root


# ---------------------------------------------------------------- environment

def pg_bindir():
    """$WEIR_PG_BINDIR, else Debian's /usr/lib/postgresql/15/bin (the
    version the figures are for), else the newest installed one."""
    d = os.environ.get("WEIR_PG_BINDIR")
    if d:
        return d
    want = f"/usr/lib/postgresql/{PG_VERSION}/bin"
    if os.path.isfile(os.path.join(want, "initdb")):
        return want
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        d = os.path.dirname(found[-1])
        print(f"WARNING: PostgreSQL {PG_VERSION} not found, using {d}", file=sys.stderr)
        return d
    sys.exit("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
             "run bench/storage/run_all.sh, which installs them, or set WEIR_PG_BINDIR")


def pgbench_bin():
    p = os.path.join(pg_bindir(), "pgbench")
    return p if os.path.isfile(p) else "pgbench"


def load_avg():
    return os.getloadavg()


def load_note():
    a = os.getloadavg()
    return f"load {a[0]:.2f}/{a[1]:.2f}/{a[2]:.2f}"


def other_busy_processes(limit=5):
    """The processes (not ours) using the most CPU right now, from ps: to
    say what else was running during a measurement."""
    r = subprocess.run(["ps", "-eo", "pcpu,pid,comm", "--sort=-pcpu", "--no-headers"],
                       capture_output=True, text=True)
    mine = os.getpid()
    out = []
    for line in r.stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3 or int(parts[1]) == mine:
            continue
        if float(parts[0]) < 5.0:
            break
        out.append(f"{parts[2]}({parts[0]}%)")
        if len(out) >= limit:
            break
    return ", ".join(out) or "none above 5% CPU"


def wait_for_quiet(max_wait=None, threshold=None):
    """Waits up to QUIET_WAIT seconds (default 0: not at all) for the
    1-minute load average to drop below QUIET_LOAD (default 1.0)."""
    max_wait = wb.env_int("QUIET_WAIT", 0) if max_wait is None else max_wait
    threshold = wb.env_float("QUIET_LOAD", 1.0) if threshold is None else threshold
    t0 = time.monotonic()
    while os.getloadavg()[0] >= threshold and time.monotonic() - t0 < max_wait:
        time.sleep(5)
    return time.monotonic() - t0


# ------------------------------------------------------------------- process

def proc_status(pid):
    """VmHWM / VmRSS of a process in bytes ({} when it is gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    k, v = line.split(":", 1)
                    out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def _stat(pid):
    """(utime+stime ticks, parent pid, state) of a process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # after ")": state(0) ppid(1) pgrp(2) ... utime(11) stime(12)
        return int(fields[11]) + int(fields[12]), int(fields[1]), fields[0]
    except (OSError, IndexError, ValueError):
        return 0, None, None


CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_tree(root):
    """{pid: (ticks, state)} of root and its live descendants. PostgreSQL's
    backends are children of the postmaster in their own process groups
    (each calls setsid), so the tree is what covers them."""
    stats = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            t, ppid, state = _stat(int(d))
            if state is not None:
                stats[int(d)] = (t, ppid, state)
    out = {}
    todo = [root]
    while todo:
        p = todo.pop()
        if p in stats and p not in out:
            out[p] = (stats[p][0], stats[p][2])
            todo.extend(c for c, (_t, pp, _s) in stats.items() if pp == p)
    return out


def tree_cpu_seconds(root):
    """user+system CPU seconds of root and its live descendants (the
    backends that have exited are not counted: sample while the clients
    are connected)."""
    return sum(t for t, _s in process_tree(root).values()) / CLK_TCK


# ------------------------------------------------------------------ postgres

class Postgres:
    """A PostgreSQL cluster in its own temp dir, on a free loopback port.
    kill() SIGKILLs the postmaster and every backend at once."""

    def __init__(self, name="bench", settings=None):
        self.bindir = pg_bindir()
        self.root = tempfile.mkdtemp(prefix=f"weir-bench-pg-{name}-")
        self.data = os.path.join(self.root, "data")
        self.log_path = os.path.join(self.root, "postgres.log")
        self.port = None
        self.proc = None
        self.settings = dict(settings or {})
        self.as_root = os.geteuid() == 0
        if self.as_root:
            import pwd
            pw = pwd.getpwnam(PG_USER)
            self.uid, self.gid = pw.pw_uid, pw.pw_gid
            os.chown(self.root, self.uid, self.gid)
        _pgs.append(self)
        self._run("initdb", "-D", self.data, "-U", PG_USER, "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-instructions")

    def _user_kw(self):
        return {"user": self.uid, "group": self.gid, "extra_groups": []} if self.as_root else {}

    def _run(self, program, *args):
        with open(self.log_path, "a") as log:
            r = subprocess.run([os.path.join(self.bindir, program), *args], stdout=log,
                               stderr=subprocess.STDOUT, cwd=self.root,
                               env={**os.environ, "LC_ALL": "C"}, **self._user_kw())
        if r.returncode != 0:
            raise RuntimeError(f"{program} failed ({r.returncode}):\n{self.log_tail(30)}")
        if self.as_root:
            os.chown(self.log_path, self.uid, self.gid)

    @property
    def dsn(self):
        return f"host={HOST} port={self.port} user={PG_USER} dbname=postgres"

    def server_args(self):
        args = ["-D", self.data, "-p", str(self.port), "-k", self.root,
                "-c", f"listen_addresses={HOST}", "-c", "TimeZone=UTC"]
        for k, v in self.settings.items():
            args += ["-c", f"{k}={v}"]
        return args

    def launch(self, timeout=600):
        """Starts the postmaster; returns seconds until a connection and
        SELECT 1 succeed (crash recovery included after a kill)."""
        for attempt in range(3):
            if self.port is None or attempt > 0:
                self.port = wb.free_port()
            log = open(self.log_path, "a")
            log.write(f"=== launch at {datetime.datetime.now(datetime.timezone.utc).isoformat()} ===\n")
            log.flush()
            self.log_offset = log.tell()
            t0 = time.monotonic()
            self.spawn_wall = time.time()
            self.proc = subprocess.Popen(
                [os.path.join(self.bindir, "postgres"), *self.server_args()],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True,
                env={**os.environ, "LC_ALL": "C"}, **self._user_kw())
            log.close()
            deadline = t0 + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with psycopg.connect(self.dsn, connect_timeout=5, autocommit=True) as c:
                        c.execute("SELECT 1")
                    return time.monotonic() - t0
                except psycopg.OperationalError:
                    time.sleep(0.02)
            if self.proc.poll() is None:
                self.kill()
                raise RuntimeError(f"postgres did not accept connections in {timeout}s:\n{self.log_tail(30)}")
            if "could not bind" not in self.log_tail(20):
                raise RuntimeError(f"postgres exited at start:\n{self.log_tail(30)}")
        raise RuntimeError(f"postgres could not bind a port:\n{self.log_tail(30)}")

    def connect(self, dbname="postgres"):
        return psycopg.connect(f"{self.dsn} dbname={dbname}", autocommit=True, connect_timeout=10)

    def kill(self):
        """kill -9 of the postmaster and all its backends (its process group)."""
        if self.proc and self.proc.poll() is None:
            tree = process_tree(self.proc.pid)
            for pid in tree:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait()
            # Wait until no backend is left holding the shared memory.
            for _ in range(200):
                if not any(_stat(p)[2] not in (None, "Z") for p in tree):
                    break
                time.sleep(0.05)
        self.proc = None

    def stop(self, timeout=60):
        """Fast shutdown (SIGINT), SIGKILL after the timeout."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def cleanup(self):
        self.stop()
        if self in _pgs:
            _pgs.remove(self)
        if os.environ.get("KEEP_DATA") == "1":
            print(f"  (kept {self.root})", file=sys.stderr)
            return
        subprocess.run(["rm", "-rf", self.root], check=False)

    def log_since_launch(self):
        try:
            with open(self.log_path, errors="replace") as f:
                f.seek(self.log_offset)
                return f.read()
        except (OSError, AttributeError):
            return ""

    def log_tail(self, n=20):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def cpu_seconds(self):
        return tree_cpu_seconds(self.proc.pid) if self.proc else 0.0

    def version(self):
        with self.connect() as c:
            return c.execute("SHOW server_version").fetchone()[0]

    def describe(self):
        with self.connect() as c:
            vals = {k: c.execute(f"SHOW {k}").fetchone()[0] for k in
                    ("server_version", "fsync", "synchronous_commit", "full_page_writes",
                     "wal_level", "shared_buffers", "max_wal_size", "checkpoint_timeout")}
        return " ".join(f"{k}={v}" for k, v in vals.items())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            print(f"--- postgres log tail ({self.log_path}) ---\n{self.log_tail(30)}", file=sys.stderr)
        self.cleanup()


_pgs = []


def _cleanup_pgs():
    for p in list(_pgs):
        p.cleanup()


import atexit  # noqa: E402

# Registered after weirbench's: runs first (atexit is LIFO).
atexit.register(_cleanup_pgs)


def pg_settings():
    """PostgreSQL's settings for the run: its defaults (durable: fsync and
    synchronous_commit on) unless PG_OPTS="name=value ..." says otherwise."""
    out = {}
    for item in wb.env_str("PG_OPTS", "").split():
        k, _, v = item.partition("=")
        out[k] = v
    return out


# ---------------------------------------------------------------------- weir

class Weir(wb.Server):
    """weirbench's server, with its Prometheus endpoint on a free port too
    (WEIR_METRICS_LISTEN, the environment form of --metrics-listen), so
    that it never collides with another server on this machine."""

    def __init__(self, name="bench", log_level="info", extra_env=None):
        self.metrics_port = wb.free_port()
        env = {"WEIR_METRICS_LISTEN": f"{HOST}:{self.metrics_port}"}
        env.update(extra_env or {})
        super().__init__(name=name, log_level=log_level, extra_env=env)

    def pid(self):
        return self.proc.pid if self.proc else None

    def memory(self):
        return proc_status(self.pid()) if self.proc else {}

    def cpu_seconds(self):
        return tree_cpu_seconds(self.pid()) if self.proc else 0.0


# ------------------------------------------------------------------ the data

TABLE_DDL = "CREATE TABLE pt (id bigint PRIMARY KEY, k bigint, v text)"


def data_file(rows):
    """A COPY text-format file of `rows` rows (id, id % 1000, md5 hex of id),
    written once to $TMPDIR and reused."""
    path = os.path.join(tempfile.gettempdir(), f"weir-bench-storage-pt-{rows}.tsv")
    if os.path.exists(path) and os.path.getsize(path) > 0:
        return path
    tmp = path + f".{os.getpid()}.part"
    with open(tmp, "w") as f:
        buf = []
        for i in range(1, rows + 1):
            buf.append(f"{i}\t{i % 1000}\t{hashlib.md5(str(i).encode()).hexdigest()}\n")
            if len(buf) >= 100_000:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))
    os.replace(tmp, path)
    return path


def copy_file(conn, table, path, chunk=1 << 20):
    """COPY table FROM STDIN (text format) with the file's bytes; returns
    seconds from the COPY statement to its completion."""
    t0 = time.monotonic()
    with conn.cursor() as cur:
        with cur.copy(f"COPY {table} (id, k, v) FROM STDIN") as cp:
            with open(path, "rb") as f:
                while True:
                    b = f.read(chunk)
                    if not b:
                        break
                    cp.write(b)
    return time.monotonic() - t0


def expected_sums(rows):
    """count(*), sum(id) over ids 1..rows."""
    return rows, rows * (rows + 1) // 2


# ------------------------------------------------------------------- pgbench

TPS = re.compile(r"^tps = ([\d.]+) \(without initial connection time\)", re.M)
LAT = re.compile(r"^latency average = ([\d.]+) ms", re.M)
TXNS = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)


def pgbench(target, script, clients, threads, secs, dbname, user, defines=None, cpu_of=None):
    """Runs pgbench -M prepared with the script file (bench/storage/*.sql)
    and -D name=value for each define against host:port; returns {tps,
    latency_ms, txns, failed, rc, cmd, output, cpu_ms_per_txn, cpu_cores}.
    cpu_of: a function returning the server's CPU seconds, sampled before
    the run and just before its end (while the clients are connected)."""
    host, port = target
    defs = []
    for k, v in (defines or {}).items():
        defs += ["-D", f"{k}={v}"]
    cmd = [pgbench_bin(), "-h", host, "-p", str(port), "-U", user, "-M", "prepared",
           "-c", str(clients), "-j", str(threads), "-T", str(secs), "-n", *defs,
           "-f", os.path.relpath(os.path.join(HERE, script)), dbname]
    cpu0 = cpu_of() if cpu_of else None
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cpu1 = None
    if cpu_of:
        # PostgreSQL's backends exit with their connections and take their
        # counts along: sample just before the end.
        while p.poll() is None and time.monotonic() - t0 < secs - 0.5:
            time.sleep(0.1)
        cpu1 = cpu_of()
        t1 = time.monotonic()
    out, _ = p.communicate()
    m = TPS.search(out)
    res = {
        "tps": float(m.group(1)) if m else None,
        "latency_ms": float(LAT.search(out).group(1)) if LAT.search(out) else None,
        "txns": int(TXNS.search(out).group(1)) if TXNS.search(out) else None,
        "failed": int(FAILED.search(out).group(1)) if FAILED.search(out) else None,
        "rc": p.returncode,
        "cmd": " ".join(shlex.quote(c) for c in cmd),
        "output": out,
    }
    if cpu_of and cpu1 is not None and res["tps"]:
        # CPU per transaction over the sampled window (tps from pgbench).
        res["cpu_ms_per_txn"] = (cpu1 - cpu0) / ((t1 - t0) * res["tps"]) * 1000
        res["cpu_cores"] = (cpu1 - cpu0) / (t1 - t0)
    return res


def describe_pgbench_failure(res):
    lines = [l for l in res["output"].splitlines() if "error" in l.lower() or "abort" in l.lower()]
    return "; ".join(lines[:3]) or res["output"][-300:]


def fmt_ratio(a, b):
    if a is None or b in (None, 0):
        return "-"
    return f"{a / b:.3f}x"


def header(title, params):
    print(f"== {title}")
    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"weir: {wb.binary_info(wb.weir_bin())}")
    if "/debug/" in wb.weir_bin():
        print("NOTE: debug build -- absolute figures are not representative.")
    print(f"postgres: {pg_bindir()}, pgbench: {pgbench_bin()}")
    print("params: " + " ".join(f"{k}={v}" for k, v in params.items()))
    if wb.env_int("QUIET_WAIT", 0):
        print(f"each measurement first waits up to QUIET_WAIT={wb.env_int('QUIET_WAIT', 0)} s for the "
              f"1-min load average to drop below QUIET_LOAD={wb.env_float('QUIET_LOAD', 1.0)}")
    print(f"machine: {os.cpu_count()} cores, {load_note()} at start; busy: {other_busy_processes()}")
    print(flush=True)


def repeat_command(script, params):
    env = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in params.items())
    rel = os.path.relpath(os.path.abspath(script), os.getcwd())
    extra = ""
    for k in ("PG_OPTS", "QUIET_WAIT", "QUIET_LOAD"):
        if os.environ.get(k):
            extra += f" {k}={shlex.quote(os.environ[k])}"
    return f"WEIR_BIN={shlex.quote(wb.weir_bin())}{extra} {env} python3 {rel}"


def footer(script, params):
    print()
    print(f"machine at end: {load_note()}; busy: {other_busy_processes()}")
    print("repeat with:")
    print("  " + repeat_command(script, params))
    print(flush=True)

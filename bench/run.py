#!/usr/bin/env python3
"""Relay benchmark: the same load against our server and the LF 4.2.2 server, side by side.

Each server runs pinned to one core (``taskset -c 0`` by default) and is started afresh for every
measurement, so that one test's leftovers (LF keeps every socket it ever saw) never weigh on the
next. The load generator (``loadgen.mjs``, Node.js) runs pinned to the other core. For every
measurement window the harness samples the CPU time of the server, of the generator and of the
whole machine, so that each figure says who was the limit and whether something else was running.

Figures per server:
  * pipe throughput (messages/s, MB/s) for each frame size x number of pipes, one-way streams with
    a bounded in-flight window, every frame checked for loss, reordering and alteration;
  * echo round trip over one pipe (p50, p99);
  * pair set-up time (both /connection sockets opened -> first frame delivered; p50, p99);
  * introductions per second in a 100-peer lobby (4.x MessagePack dialect);
  * memory per idle control socket (server RSS before/after N sockets that each Joined);
  * a connection storm: 2,000 sockets each Joining a lobby of its own as soon as it is open
    (sockets/s until the server is quiet, server CPU per socket);
  * capacity: 50,000 idle sockets on one worker, or as many as the open files limits allow
    (accept rate, RSS, two new peers meeting in a lobby meanwhile).

The scale-out part (``--scale-out``, or the tests xpipe, xecho, xintro) runs pipes, echo and
introductions against our relay alone, as two Redis-backed workers with each pair's sockets on
one of them, with every pair split across the two, and as two workers behind make run-cluster's
nginx, and reads Redis' CPU time as well.

Usage (from the repository root):
  .venv/bin/python bench/run.py                 # full run, both servers (about 8 minutes)
  .venv/bin/python bench/run.py --quick         # smoke run (about a minute)
  .venv/bin/python bench/run.py --only lf
  .venv/bin/python bench/run.py --ours-server daphne
  .venv/bin/python bench/run.py --ours-cmd '/path/python manage.py serve --port {port}'
  .venv/bin/python bench/run.py --scale-out     # also the scale-out part (what make bench runs)

The results go to bench/results/<UTC timestamp>.json; the exit status is 1 when any figure is
invalid (lost, reordered or altered frames, missing introductions, a server that failed).
Only the Python standard library is used here (and bench/redisctl.py, which uses it too).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.metadata
import json
import os
import platform
import resource
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
# bench/redisctl.py, also when this file is loaded by path rather than run (the tests do).
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
import redisctl  # noqa: E402

ROOT = BENCH.parent
LOADGEN = BENCH / "loadgen.mjs"
LF_SERVER = BENCH / "lf-server.mjs"
SCHEMA = "relay-bench/1"

DEFAULT_OURS_CMD = (
    f"{ROOT}/.venv/bin/python {ROOT}/manage.py serve --host 127.0.0.1 --port {{port}}"
)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def in_repository(text: str) -> str:
    """``text`` with this checkout's paths relative to it (the servers run in it): a result
    file names no lobby_cache of the machine that made it."""
    return text.replace(f"{ROOT}/", "")


KIB = 1024

# A pipe cell whose server core was busy less than this share of the time was not limited by the
# server (latency, window or generator bound): its figure is flagged.
SATURATED_PCT = 85.0
# A generator above this share of its core may be the limit: flagged.
GEN_BUSY_PCT = 90.0
# CPU time used by processes other than the server and generator, in percent of one core, above
# which a measurement is flagged as disturbed.
NOISE_PCT = 15.0


# ---------------------------------------------------------------------------------------------
# /proc readers


def _children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process now alive."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (a server command may start worker processes)."""
    children = _children_map()
    tree, todo = [], [pid]
    while todo and len(tree) < 10_000:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of these processes, all their threads, in seconds.

    Read from schedstat (nanoseconds), not from the clock-tick counters of /proc/PID/stat: an
    introduction round lasts some 30 ms, three ticks.
    """
    total_ns = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total_ns += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total_ns / 1e9


def rss_kib(pids: list[int]) -> int:
    """Sum of VmRSS over these processes, in KiB."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def cpu_busy_seconds() -> dict[str, float]:
    """Busy CPU time from /proc/stat, in seconds: per core ("cpu0", ...; every category but idle
    and iowait) and, as "softirq", the machine's softirq time.

    Loopback TCP work is done in softirq, partly in ksoftirqd rather than in the process that
    caused it, so a pinned server's core can be full while the server process shows 90%.
    """
    busy: dict[str, float] = {}
    softirq = 0
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            parts = line.split()
            if parts[0] == "cpu":
                continue
            user, nice, system, _idle, _iowait, irq, sirq, steal = (int(x) for x in parts[1:9])
            busy[parts[0]] = (user + nice + system + irq + sirq + steal) / CLK_TCK
            softirq += sirq
    busy["softirq"] = softirq / CLK_TCK
    return busy


@dataclass
class CpuSample:
    """One reading of the CPU counters that a measurement window needs."""

    wall: float
    server: float
    gen: float
    busy: dict[str, float]
    redis: float | None = None  # the Redis server's, when the servers under test use one


def cpu_sample(server_pids: list[int], gen_pid: int, redis_pid: int | None = None) -> CpuSample:
    """CPU time now of the servers' process trees (all workers), the generator, the machine's
    cores and, when given, the Redis server."""
    return CpuSample(
        wall=time.monotonic(),
        server=sum(cpu_seconds(process_tree(pid)) for pid in server_pids),
        gen=cpu_seconds([gen_pid]),
        busy=cpu_busy_seconds(),
        redis=None if redis_pid is None else cpu_seconds([redis_pid]),
    )


def cpu_window(a: CpuSample, b: CpuSample, server_cpus: set[int]) -> dict[str, float]:
    """Percent of one core used, between two samples, by: the server process tree(s), the
    generator, the server's core(s) as a whole (anything, softirq included), Redis (when the
    samples read it: ``redis_cpu_pct``, wherever it ran), and "other": all busy time that is
    neither server, generator, Redis nor softirq (other processes: noise)."""
    wall = max(b.wall - a.wall, 1e-9)

    def pct(seconds: float) -> float:
        return round(seconds / wall * 100, 1)

    delta = {k: b.busy[k] - a.busy.get(k, 0.0) for k in b.busy}
    cores = sum(v for k, v in delta.items() if k.startswith("cpu"))
    server = b.server - a.server
    gen = b.gen - a.gen
    redis = b.redis - a.redis if a.redis is not None and b.redis is not None else None
    window = {
        "server_cpu_pct": pct(server),
        "server_core_pct": pct(sum(delta.get(f"cpu{c}", 0.0) for c in server_cpus)),
        "gen_cpu_pct_proc": pct(gen),
        "machine_busy_pct": pct(cores),
        "softirq_pct": pct(delta["softirq"]),
        "other_cpu_pct": max(0.0, pct(cores - server - gen - (redis or 0.0))),
    }
    if redis is not None:
        window["redis_cpu_pct"] = pct(redis)
    return window


# ---------------------------------------------------------------------------------------------
# Servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerSpec:
    """How to start one of the servers under test."""

    key: str  # "ours" or "lf": the key in the results
    label: str  # shown in the table
    cmd: str  # command line with {port}
    env: dict[str, str] = field(default_factory=dict)

    def argv(self, port: int) -> list[str]:
        return shlex.split(self.cmd.replace("{port}", str(port)))


class ServerError(RuntimeError):
    """The server did not start, or died."""


class ServerProcess:
    """One running server, pinned to its core, in its own process group."""

    _started = 0  # numbers the log files: a port may come round again

    def __init__(self, spec: ServerSpec, cpus: str, log_dir: Path, startup_timeout: float):
        self.spec = spec
        self.port = free_port()
        ServerProcess._started += 1
        self.log_path = log_dir / f"{ServerProcess._started:03d}-{spec.key}-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        argv = ["taskset", "-c", cpus, *spec.argv(self.port)]
        t0 = time.monotonic()
        # taskset execs the command, so proc.pid is the server itself; start_new_session gives it
        # its own process group so that stop() also ends any workers it started, and only those.
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **spec.env},
            cwd=ROOT,
        )
        try:
            self._wait_ready(startup_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0

    @property
    def pid(self) -> int:
        return self.proc.pid

    # What the harness reads of any server under test, one process or a cluster of workers.
    redis_pid: int | None = None

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid]

    @property
    def ports(self) -> list[int]:
        return [self.port]

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def _wait_ready(self, timeout: float) -> None:
        """Waits until GET / gets any HTTP answer (the server is accepting and routing)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"{self.spec.key} exited with {self.proc.returncode} at start;"
                    f" log {self.log_path}:\n{self.log_tail()}"
                )
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            try:
                conn.request("GET", "/")
                conn.getresponse().read()
                return
            except OSError:
                time.sleep(0.05)
            finally:
                conn.close()
        raise ServerError(
            f"{self.spec.key} did not answer GET / within {timeout} s;"
            f" log {self.log_path}:\n{self.log_tail()}"
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after 5 s."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self._log.close()


@contextlib.contextmanager
def running_server(spec: ServerSpec, cfg: Config) -> Iterator[ServerProcess]:
    server = ServerProcess(spec, cfg.server_cpus, cfg.log_dir, cfg.startup_timeout_s)
    try:
        yield server
    finally:
        server.stop()


def free_consecutive_ports(count: int) -> int:
    """The first of ``count`` consecutive loopback ports that are free now."""
    for _ in range(100):
        first = free_port()
        try:
            with contextlib.ExitStack() as held:
                for port in range(first, first + count):
                    s = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise ServerError(f"no {count} consecutive free ports")


class Cluster:
    """Workers of one relay over Redis (``RELAY_REDIS_URL``), each started as ``spec`` starts our
    server, all pinned to the servers' core(s), sharing the database and a Redis key prefix of
    their own; stop() deletes that prefix's keys, and only those (the Redis may be shared).

    ``through_nginx``: ``deploy/cluster.py`` (what ``make run-cluster`` runs) starts the workers
    (``manage.py serve``, our spec's environment) and nginx in front of them, all pinned to the
    servers' core(s) (taskset's affinity is inherited); the harness sees one server, nginx's
    port, and counts the CPU time of the whole tree."""

    def __init__(
        self, spec: ServerSpec, cfg: Config, count: int = 2, through_nginx: bool = False
    ) -> None:
        self.redis_url = cfg.redis_url
        self.redis_pid = cfg.redis_pid
        self.prefix = f"bench:{secrets.token_hex(6)}:"
        env = {**spec.env, "RELAY_REDIS_URL": cfg.redis_url, "RELAY_REDIS_PREFIX": self.prefix}
        worker = ServerSpec(spec.key, spec.label, spec.cmd, env)
        if through_nginx:
            nginx = shutil.which("nginx") or "/usr/sbin/nginx"
            if not os.access(nginx, os.X_OK):
                raise ServerError("nginx is not installed (make run-cluster installs it)")
            worker = ServerSpec(
                spec.key,
                spec.label,
                f"{ROOT}/.venv/bin/python {ROOT}/deploy/cluster.py --workers {count}"
                f" --host 127.0.0.1 --port {{port}}"
                f" --worker-port {free_consecutive_ports(count)} --nginx {nginx}",
                env,
            )
            count = 1  # (one process tree: cluster.py, its workers and nginx)
        self.workers: list[ServerProcess] = []
        t0 = time.monotonic()
        try:
            for _ in range(count):
                self.workers.append(
                    ServerProcess(worker, cfg.server_cpus, cfg.log_dir, cfg.startup_timeout_s)
                )
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        self.keys_deleted = 0

    @property
    def port(self) -> int:
        return self.workers[0].port

    @property
    def ports(self) -> list[int]:
        return [w.port for w in self.workers]

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    @property
    def returncode(self) -> int | None:
        """The exit status of the first worker that has exited (None: all alive)."""
        return next((w.returncode for w in self.workers if not w.alive()), None)

    def alive(self) -> bool:
        return all(w.alive() for w in self.workers)

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(
            f"[worker {n}]\n{w.log_tail(lines)}" for n, w in enumerate(self.workers, 1)
        )

    def stop(self) -> None:
        """Stops every worker (SIGTERM: each leaves presence), then deletes this run's keys."""
        for w in self.workers:
            w.stop()
        with contextlib.suppress(redisctl.RedisError, OSError):
            self.keys_deleted = redisctl.delete_prefix(self.redis_url, self.prefix)


@contextlib.contextmanager
def running_cluster(spec: ServerSpec, cfg: Config, through_nginx: bool) -> Iterator[Cluster]:
    cluster = Cluster(spec, cfg, through_nginx=through_nginx)
    try:
        yield cluster
    finally:
        cluster.stop()


# Where the scale-out part puts the sockets (loadgen.mjs's placement): ONE, our server alone as
# the rest of the benchmark runs it (no Redis); LOCAL, two Redis-backed workers with both sockets
# of each pair on one of them, pairs alternating (what nginx's hash on the document id gives);
# SPLIT, peer A's sockets on the first worker and B's on the second, so that every pipe frame
# and every introduction crosses between them; NGINX, two workers behind make run-cluster's
# nginx, which places the sockets itself (a pipe's two on one worker, control sockets spread).
ONE, LOCAL, SPLIT, NGINX = "one", "local", "split", "nginx"
PLACEMENTS = (ONE, LOCAL, SPLIT, NGINX)
PLACEMENT_LABELS = {
    ONE: "1 worker",
    LOCAL: "2, pairs local",
    SPLIT: "2, pairs split",
    NGINX: "2 via nginx",
}


def placement_opts(placement: str) -> dict[str, Any]:
    """The generator's options for ``placement`` (none for ONE, and for NGINX, which has one
    address: the run is as it always was)."""
    return {"placement": placement} if placement in (LOCAL, SPLIT) else {}


def placement_tag(placement: str) -> str:
    """Part of the generator's id prefix, so that no two runs share a peer id."""
    return "" if placement == ONE else placement[0]


# ---------------------------------------------------------------------------------------------
# Load generator


class GeneratorError(RuntimeError):
    """The load generator failed (it printed an error or no result)."""


def run_generator(
    test: str,
    opts: dict[str, Any],
    server: ServerProcess | Cluster,
    cfg: Config,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Runs one loadgen.mjs test against ``server`` and returns its result object.

    CPU counters are sampled at the generator's window marks and merged into the result.
    ``on_ready`` is called for an {"event": "ready"} line (idle test) while the generator holds
    its sockets; the harness then tells it to close them.
    """
    limit = float(opts.get("hard_limit_s", 120))
    opts = {
        "port": server.port,
        **({"ports": server.ports} if len(server.ports) > 1 else {}),
        "client": cfg.client,
        "introduce": cfg.introduce,
        "hard_limit_s": limit,
        **opts,
    }
    argv = ["taskset", "-c", cfg.gen_cpus, "node", str(LOADGEN), test, json.dumps(opts)]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stdin=subprocess.PIPE, stderr=err, text=True, cwd=BENCH
        )
        stdout, stdin = proc.stdout, proc.stdin
        if stdout is None or stdin is None:  # cannot happen with PIPE; keeps the types honest
            proc.kill()
            raise GeneratorError("no pipes to the generator")
        # The generator bounds itself; this is the backstop if it hangs anyway.
        watchdog = threading.Timer(limit + 15, proc.kill)
        watchdog.start()
        result: dict[str, Any] | None = None
        error: str | None = None
        marks: dict[str, CpuSample] = {}
        try:
            for line in stdout:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                kind = event.get("event")
                if kind == "mark":
                    marks[event["name"]] = cpu_sample(server.pids, proc.pid, server.redis_pid)
                elif kind == "ready":
                    if on_ready is not None:
                        on_ready({**event, "marks": marks})
                    stdin.write("close\n")
                    stdin.flush()
                elif kind == "result":
                    result = event
                elif kind == "error":
                    error = event.get("message", "unknown error")
            proc.wait(timeout=30)
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        stderr = err.read().decode(errors="replace")[-2000:]
    if result is None:
        why = error or f"exit {proc.returncode}, no result"
        raise GeneratorError(f"{test}: {why}\n{stderr}".strip())
    result.pop("event", None)
    # Marks come in pairs NAME_start / NAME_end. "window" (the pipe test's measurement window)
    # goes into the result as percentages; any other pair as raw CPU seconds under cpu_windows,
    # for the test to divide by its own, more exact, elapsed time.
    windows: dict[str, dict[str, float]] = {}
    for name, start in marks.items():
        base = name.removesuffix("_start")
        if base != name and f"{base}_end" in marks:
            end = marks[f"{base}_end"]
            if base == "window":
                result.update(cpu_window(start, end, parse_cpu_list(cfg.server_cpus)))
            else:
                windows[base] = {
                    "server_cpu_s": end.server - start.server,
                    "gen_cpu_s": end.gen - start.gen,
                    "wall_s": end.wall - start.wall,
                }
                if start.redis is not None and end.redis is not None:
                    windows[base]["redis_cpu_s"] = end.redis - start.redis
    if windows:
        result["cpu_windows"] = windows
    return result


# ---------------------------------------------------------------------------------------------
# Tests


@dataclass
class Config:
    """Everything a run depends on (recorded in the JSON)."""

    sizes: list[int]
    pairs: list[int]
    warmup_s: float
    duration_s: float
    repeat: int
    noise_retries: int
    drain_timeout_s: float
    window_bytes: int
    window_frames: int
    single_window_bytes: int
    single_window_frames: int
    window_min: int
    echo_warmup: int
    echo_samples: int
    setup_warmup: int
    setup_samples: int
    intro_peers: int
    intro_rounds: int
    intro_warmup_rounds: int
    idle_count: int
    idle_warmup_count: int
    storm_count: int
    capacity_count: int
    tests: list[str]
    client: str
    introduce: bool
    server_cpus: str
    gen_cpus: str
    startup_timeout_s: float
    log_dir: Path = Path()
    # The scale-out part (tests xpipe, xecho, xintro): pipe cells, and the Redis of the workers.
    x_sizes: list[int] = field(default_factory=lambda: [64, 1024])
    x_pairs: list[int] = field(default_factory=lambda: [16])
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_pid: int | None = None

    def window(self, size: int, pairs: int) -> int:
        """Frames in flight per pipe: as many as fit in window_bytes, at most window_frames and
        at least window_min. A lone pipe gets a deeper window (single_*): with 256 KiB in
        flight one pipe leaves the LF server 10-25% idle, with 1 MiB it keeps it busy.
        """
        if pairs == 1:
            budget, frames = self.single_window_bytes, self.single_window_frames
        else:
            budget, frames = self.window_bytes, self.window_frames
        return max(self.window_min, min(frames, budget // size))


def order_for(rep: int, specs: list[ServerSpec]) -> list[ServerSpec]:
    """Alternates which server goes first on each repetition, so drift hits both alike."""
    return specs if rep % 2 == 0 else list(reversed(specs))


def error_entry(exc: BaseException, server: ServerProcess | Cluster | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"error": f"{type(exc).__name__}: {exc}", "valid": False}
    if server is not None:
        entry["server_alive"] = server.alive()
        entry["server_log_tail"] = server.log_tail()
    return entry


def measure(
    spec: ServerSpec,
    cfg: Config,
    body: Callable[[Any], dict[str, Any]],
    placement: str = ONE,
) -> dict[str, Any]:
    """Starts a fresh server (with a placement other than ONE, a fresh cluster of two workers),
    runs ``body`` against it, stops it; failures become results."""
    server: ServerProcess | Cluster | None = None
    try:
        if placement == ONE:
            started = running_server(spec, cfg)
        else:
            started = running_cluster(spec, cfg, through_nginx=placement == NGINX)
        with started as server:
            result = body(server)
            result["server_startup_s"] = round(server.startup_s, 3)
            if not server.alive():
                # returncode < 0: killed by that signal (from outside: we had not stopped it).
                result["valid"] = False
                result["server_died"] = True
                result["server_returncode"] = server.returncode
                result["server_log_tail"] = server.log_tail()
            return result
    except (ServerError, GeneratorError, OSError, subprocess.SubprocessError) as exc:
        return error_entry(exc, server)
    except Exception as exc:  # a harness bug: keep the other figures, report this one loudly
        entry = error_entry(exc, server)
        entry["traceback"] = traceback.format_exc()
        return entry


def pipe_cell(
    spec: ServerSpec, cfg: Config, size: int, pairs: int, rep: int, placement: str = ONE
) -> dict[str, Any]:
    window = cfg.window(size, pairs)
    opts = {
        **placement_opts(placement),
        "prefix": f"{spec.key}{placement_tag(placement)}{size}x{pairs}r{rep}",
        "pairs": pairs,
        "size": size,
        "window": window,
        "warmup_s": cfg.warmup_s,
        "duration_s": cfg.duration_s,
        "drain_timeout_s": cfg.drain_timeout_s,
        "hard_limit_s": cfg.warmup_s + cfg.duration_s + cfg.drain_timeout_s + 60,
    }
    result = measure(spec, cfg, lambda server: run_generator("pipe", opts, server, cfg), placement)
    gen = result.get("gen_cpu_pct")
    if isinstance(gen, int | float) and gen > 0:
        # The rate at which the generator would fill its own core, if its cost per message stays
        # the same: how much faster than this server a server could be and still be measured.
        result["gen_ceiling_msgs_per_s"] = result["msgs_per_s"] * 100 / gen
    return result


def pipe_cell_retrying(
    spec: ServerSpec,
    cfg: Config,
    size: int,
    pairs: int,
    rep: int,
    log: Callable[[str], None],
    placement: str = ONE,
) -> dict[str, Any]:
    """pipe_cell, run again (at most cfg.noise_retries times) while other processes took more
    than NOISE_PCT of a core during the window: this machine may be shared. The discarded runs
    stay in the result under "disturbed_runs"."""
    disturbed: list[dict[str, Any]] = []
    for attempt in range(cfg.noise_retries + 1):
        r = pipe_cell(spec, cfg, size, pairs, rep, placement)
        who = spec.key if placement == ONE and spec.key != "ours" else placement
        tag = f"[{who} #{rep + 1}{'' if attempt == 0 else f' retry {attempt}'}]"
        log(f"pipe {size:>5} B x {pairs:>3} {tag} {brief(r)}")
        if r.get("other_cpu_pct", 0.0) <= NOISE_PCT or attempt == cfg.noise_retries:
            break
        disturbed.append(r)
    if disturbed:
        r["disturbed_runs"] = disturbed
    return r


def echo_test(spec: ServerSpec, cfg: Config, placement: str = ONE) -> dict[str, Any]:
    opts = {
        **placement_opts(placement),
        "prefix": f"{spec.key}{placement_tag(placement)}echo",
        "size": 64,
        "warmup": cfg.echo_warmup,
        "samples": cfg.echo_samples,
        "max_s": 60,
        "hard_limit_s": 120,
    }
    return measure(spec, cfg, lambda server: run_generator("echo", opts, server, cfg), placement)


def setup_test(spec: ServerSpec, cfg: Config) -> dict[str, Any]:
    opts = {
        "prefix": f"{spec.key}setup",
        "warmup": cfg.setup_warmup,
        "samples": cfg.setup_samples,
        "max_s": 120,
        "hard_limit_s": 180,
    }

    def body(server: ServerProcess) -> dict[str, Any]:
        result = run_generator("setup", opts, server, cfg)
        # A frame held before pairing must arrive unchanged (docs/protocol.md); LF 4.2.2 re-encodes
        # it as MessagePack bin, which is recorded but accepted for LF alone.
        if spec.key != "lf" and result["first_frame"]["msgpack_wrapped"]:
            result["valid"] = False
        return result

    return measure(spec, cfg, body)


def intro_test(spec: ServerSpec, cfg: Config, placement: str = ONE) -> dict[str, Any]:
    opts = {
        **placement_opts(placement),
        "prefix": f"{spec.key}{placement_tag(placement)}intro",
        "peers": cfg.intro_peers,
        "rounds": cfg.intro_rounds,
        "warmup_rounds": cfg.intro_warmup_rounds,
        "timeout_s": 30,
        "hard_limit_s": 60 + 35 * (cfg.intro_rounds + cfg.intro_warmup_rounds),
    }

    def body(server: ServerProcess | Cluster) -> dict[str, Any]:
        result = run_generator("intro", opts, server, cfg)
        # Server CPU during each round (Joins sent -> last Introduction received): near 100%
        # means the server was the limit; well below it, the generator or the wiring was.
        windows = result.pop("cpu_windows", {})
        for i, rnd in enumerate(result["rounds"]):
            w = windows.get(f"round{i}")
            if w and rnd.get("elapsed_s"):
                rnd["server_cpu_pct"] = round(w["server_cpu_s"] / rnd["elapsed_s"] * 100, 1)
                if "redis_cpu_s" in w:
                    rnd["redis_cpu_pct"] = round(w["redis_cpu_s"] / rnd["elapsed_s"] * 100, 1)
        measured = [r for r in result["rounds"] if not r.get("warmup")]
        result["server_cpu_pct"] = median_of(measured, "server_cpu_pct")
        result["gen_cpu_pct"] = median_of(measured, "gen_cpu_pct")
        if placement != ONE:
            result["redis_cpu_pct"] = median_of(measured, "redis_cpu_pct")
        return result

    return measure(spec, cfg, body, placement)


def stable_rss(server: ServerProcess, max_wait_s: float) -> tuple[int, bool, list[int]]:
    """Polls the server's RSS every 0.25 s until five readings in a row agree within 1% (or
    64 KiB), or ``max_wait_s`` passes. Returns (last reading, settled, readings)."""
    readings: list[int] = []
    deadline = time.monotonic() + max_wait_s
    while True:
        readings.append(rss_kib(process_tree(server.pid)))
        last = readings[-5:]
        if len(last) == 5 and max(last) - min(last) <= max(64, 0.01 * max(last)):
            return readings[-1], True, readings
        if time.monotonic() > deadline:
            return readings[-1], False, readings
        time.sleep(0.25)


# Our relay writes its statistics of new sockets and lobbies 5 s after the first of them
# (RELAY_ANALYTICS_FLUSH_SECONDS), and what that write allocates stays in its RSS: readings are
# taken after it, rather than on whichever side of it they happen to fall (13.3, 11.9 and 12.8
# KiB per socket in three runs of the same code before this wait).
FLUSHED_S = 6.5


def memory_test(spec: ServerSpec, cfg: Config) -> dict[str, Any]:
    """RSS growth per idle control socket that has sent one Join (distinct documents)."""

    def body(server: ServerProcess) -> dict[str, Any]:
        # Warm-up: the first connections load code and grow pools that later ones reuse.
        warm = {"prefix": f"{spec.key}warm", "count": cfg.idle_warmup_count, "hold_max_s": 30}
        run_generator("idle", warm, server, cfg)
        time.sleep(FLUSHED_S)
        before, before_settled, _ = stable_rss(server, 10)
        after: dict[str, Any] = {}

        def on_ready(event: dict[str, Any]) -> None:
            time.sleep(FLUSHED_S)
            rss, settled, readings = stable_rss(server, 15)
            after.update(rss=rss, settled=settled, readings=len(readings))

        opts = {"prefix": f"{spec.key}idle", "count": cfg.idle_count, "hold_max_s": 60}
        gen = run_generator("idle", opts, server, cfg, on_ready=on_ready)
        if "rss" not in after:
            raise GeneratorError("the idle generator never reported ready")
        count = gen["opened"]
        return {
            "count": count,
            "rss_before_kib": before,
            "rss_after_kib": after["rss"],
            "per_conn_kib": (after["rss"] - before) / count if count else None,
            "settled": before_settled and after["settled"],
            "open_s": gen["open_s"],
            "messages_received": gen["messages_received"],
            "closed_by_server": gen["closed_by_server"],
            "valid": gen["valid"] and count == cfg.idle_count,
        }

    return measure(spec, cfg, body)


def until_server_idle(server: ServerProcess, quiet_s: float = 0.3) -> tuple[float, float]:
    """Polls the server's CPU time every 10 ms until it has used less than a twentieth of
    ``quiet_s`` for ``quiet_s``; returns (clock, CPU seconds) at the last reading that still
    showed work (more than 1 ms since the one before)."""
    last_wall, last_cpu = time.monotonic(), cpu_seconds(process_tree(server.pid))
    busy_wall, busy_cpu = last_wall, last_cpu
    while True:
        time.sleep(0.01)
        wall, cpu = time.monotonic(), cpu_seconds(process_tree(server.pid))
        if cpu - last_cpu > 0.001:
            busy_wall, busy_cpu = wall, cpu
        last_wall, last_cpu = wall, cpu
        if wall - busy_wall > quiet_s and cpu - busy_cpu < quiet_s / 20:
            return busy_wall, busy_cpu


def storm_test(spec: ServerSpec, cfg: Config) -> dict[str, Any]:
    """A reconnect storm: ``storm_count`` control sockets opened at once (64 connecting at a
    time), each sending its Join (a lobby of its own) as soon as it is open. Timed from the
    first connect until the server has finished the work (its CPU goes quiet): the sockets
    per second a restarted worker takes back, and the server's CPU time per socket."""

    def body(server: ServerProcess) -> dict[str, Any]:
        warm = {"prefix": f"{spec.key}warm", "count": cfg.idle_warmup_count, "hold_max_s": 30}
        run_generator("idle", warm, server, cfg)
        until_server_idle(server)
        after: dict[str, Any] = {}

        def on_ready(event: dict[str, Any]) -> None:
            start = event["marks"]["storm_start"]
            end_wall, end_cpu = until_server_idle(server)
            after.update(start=start, end_wall=end_wall, end_cpu=end_cpu)

        opts = {
            "prefix": f"{spec.key}storm",
            "count": cfg.storm_count,
            "join_on_open": True,
            "hold_max_s": 60,
        }
        gen = run_generator("idle", opts, server, cfg, on_ready=on_ready)
        if "start" not in after:
            raise GeneratorError("the storm generator never reported ready")
        count = gen["opened"]
        elapsed = after["end_wall"] - after["start"].wall
        return {
            "count": count,
            "open_s": gen["open_s"],
            "elapsed_s": elapsed,
            "sockets_per_s": count / elapsed if elapsed > 0 else None,
            "server_cpu_us_per_socket": (after["end_cpu"] - after["start"].server) / count * 1e6
            if count
            else None,
            "messages_received": gen["messages_received"],
            "closed_by_server": gen["closed_by_server"],
            "valid": gen["valid"] and count == cfg.storm_count,
        }

    return measure(spec, cfg, body)


def open_files_limit(pid: int) -> int:
    """The soft limit on open files of process ``pid`` (from /proc)."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft = line.split()[3]
                return 1 << 30 if soft == "unlimited" else int(soft)
    raise OSError(f"no open files limit for {pid}")


def capacity_test(spec: ServerSpec, cfg: Config) -> dict[str, Any]:
    """``capacity_count`` idle control sockets on one worker, each in a lobby of its own, or as
    many as the server's open files limit allows (the relay raises its own to the hard limit;
    the harness too, and several generator processes share the sockets when one's limit is
    not enough): the accept rate with Joins on open, the memory they take, and how long two
    new peers take to meet in a lobby (Joins to both Introductions) while they are connected."""

    def body(server: ServerProcess) -> dict[str, Any]:
        headroom = 100  # the server's own files: database, logs, listening socket
        server_limit = open_files_limit(server.pid)
        count = min(cfg.capacity_count, server_limit - headroom)
        per_generator = resource.getrlimit(resource.RLIMIT_NOFILE)[0] - headroom
        shares = [
            (first, min(per_generator, count - first)) for first in range(0, count, per_generator)
        ]
        warm = {"prefix": f"{spec.key}warm", "count": cfg.idle_warmup_count, "hold_max_s": 30}
        run_generator("idle", warm, server, cfg)
        until_server_idle(server)
        before, before_settled, _ = stable_rss(server, 10)
        opened: list[dict[str, Any]] = []
        found: dict[str, Any] = {}

        def hold(index: int) -> None:
            """Opens share ``index`` and, once it is open, the next share (its sockets held
            meanwhile); inside the last, measures."""
            first, n = shares[index]

            def on_ready(event: dict[str, Any]) -> None:
                opened.append({"opened": event["opened"], "open_s": event["open_s"]})
                if index + 1 < len(shares):
                    hold(index + 1)
                    return
                until_server_idle(server)
                rss, settled, _ = stable_rss(server, 30)
                meet = {
                    "prefix": f"{spec.key}meet",
                    "peers": 2,
                    "rounds": 20,
                    "warmup_rounds": 3,
                    "timeout_s": 30,
                    "hard_limit_s": 120,
                }
                found.update(
                    rss=rss, settled=settled, meet=run_generator("intro", meet, server, cfg)
                )

            opts = {
                "prefix": f"{spec.key}cap",
                "first": first,
                "count": n,
                "join_on_open": True,
                "hold_max_s": 900,
                "hard_limit_s": 1200,
            }
            gen = run_generator("idle", opts, server, cfg, on_ready=on_ready)
            opened[index].update(valid=gen["valid"], closed_by_server=gen["closed_by_server"])

        hold(0)
        if "rss" not in found:
            raise GeneratorError("the capacity generators never reported ready")
        total = sum(o["opened"] for o in opened)
        open_s = sum(o["open_s"] for o in opened)
        rounds = [r for r in found["meet"]["rounds"] if not r["warmup"]]
        meet_ms = sorted(r["elapsed_s"] * 1000 for r in rounds)
        return {
            "requested": cfg.capacity_count,
            "server_open_files_limit": server_limit,
            "generators": len(shares),
            "count": total,
            "open_s": open_s,
            "sockets_per_s": total / open_s if open_s else None,
            "rss_before_kib": before,
            "rss_after_kib": found["rss"],
            "rss_after_mib": found["rss"] / 1024,
            "per_conn_kib": (found["rss"] - before) / total if total else None,
            "settled": before_settled and found["settled"],
            "meet_ms_p50": statistics.median(meet_ms) if meet_ms else None,
            "meet_ms_max": meet_ms[-1] if meet_ms else None,
            "meet_valid": found["meet"]["valid"],
            "valid": all(o["valid"] for o in opened) and found["meet"]["valid"] and total == count,
        }

    return measure(spec, cfg, body)


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
    return statistics.median(values) if values else None


def summarize_cell(size: int, pairs: int, window: int, runs: list[dict[str, Any]]) -> dict:
    """Median over the repetitions; valid only if every repetition was."""
    return {
        "size": size,
        "pairs": pairs,
        "window": window,
        "msgs_per_s": median_of(runs, "msgs_per_s"),
        "mb_per_s": median_of(runs, "mb_per_s"),
        "server_cpu_pct": median_of(runs, "server_cpu_pct"),
        "server_core_pct": median_of(runs, "server_core_pct"),
        "gen_cpu_pct": median_of(runs, "gen_cpu_pct"),
        "gen_ceiling_msgs_per_s": median_of(runs, "gen_ceiling_msgs_per_s"),
        "other_cpu_pct": median_of(runs, "other_cpu_pct"),
        **(
            {"redis_cpu_pct": median_of(runs, "redis_cpu_pct")}
            if any("redis_cpu_pct" in r for r in runs)
            else {}
        ),
        "valid": all(r.get("valid") for r in runs),
        "runs": runs,
    }


def run_all(specs: list[ServerSpec], cfg: Config, log: Callable[[str], None]) -> dict:
    results: dict[str, dict[str, Any]] = {s.key: {} for s in specs}

    if "pipe" in cfg.tests:
        for s in specs:
            results[s.key]["pipe"] = {}
        for size in cfg.sizes:
            for pairs in cfg.pairs:
                runs: dict[str, list[dict[str, Any]]] = {s.key: [] for s in specs}
                for rep in range(cfg.repeat):
                    for spec in order_for(rep, specs):
                        r = pipe_cell_retrying(spec, cfg, size, pairs, rep, log)
                        runs[spec.key].append(r)
                for spec in specs:
                    cell = summarize_cell(size, pairs, cfg.window(size, pairs), runs[spec.key])
                    results[spec.key]["pipe"][f"{size}x{pairs}"] = cell

    for name, fn in (
        ("echo", echo_test),
        ("setup", setup_test),
        ("intro", intro_test),
        ("memory", memory_test),
        ("storm", storm_test),
        ("capacity", capacity_test),
    ):
        if name not in cfg.tests:
            continue
        for spec in specs:
            r = fn(spec, cfg)
            results[spec.key][name] = r
            log(f"{name:<6} [{spec.key}] {brief(r)}")
    return results


SCALE_OUT_TESTS = ("xpipe", "xecho", "xintro")
ONE_WORKER_TESTS = ("pipe", "echo", "setup", "intro", "memory", "storm", "capacity")


def run_scale_out(spec: ServerSpec, cfg: Config, log: Callable[[str], None]) -> dict:
    """The scale-out part, for our server only: each test in every placement (ONE, LOCAL,
    SPLIT), the pipe cells repeated with the order of the placements rotating, so that drift
    hits them alike. Returns {placement: {"pipe": {cell: ...}, "echo": ..., "intro": ...}},
    shaped as one server's results."""
    results: dict[str, dict[str, Any]] = {p: {} for p in PLACEMENTS}
    if "xpipe" in cfg.tests:
        for placement in PLACEMENTS:
            results[placement]["pipe"] = {}
        for size in cfg.x_sizes:
            for pairs in cfg.x_pairs:
                runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PLACEMENTS}
                for rep in range(cfg.repeat):
                    turn = rep % len(PLACEMENTS)
                    for placement in PLACEMENTS[turn:] + PLACEMENTS[:turn]:
                        r = pipe_cell_retrying(spec, cfg, size, pairs, rep, log, placement)
                        runs[placement].append(r)
                for placement in PLACEMENTS:
                    cell = summarize_cell(size, pairs, cfg.window(size, pairs), runs[placement])
                    results[placement]["pipe"][f"{size}x{pairs}"] = cell
    for test, fn in (("xecho", echo_test), ("xintro", intro_test)):
        if test not in cfg.tests:
            continue
        for placement in PLACEMENTS:
            r = fn(spec, cfg, placement)
            results[placement][test[1:]] = r
            log(f"{test[1:]:<6} [{placement}] {brief(r)}")
    return results


def iter_entries(results: dict[str, dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every figure's entry: each pipe cell and each other test, for every server."""
    for res in results.values():
        for name, entry in res.items():
            if name == "pipe":
                yield from entry.values()
            else:
                yield entry


def brief(r: dict[str, Any]) -> str:
    """One progress line for a result."""
    if "error" in r:
        return f"ERROR {r['error'].splitlines()[0]}"
    bits = []
    for key, fmt in (
        ("msgs_per_s", "{:,.0f} msg/s"),
        ("mb_per_s", "{:,.1f} MB/s"),
        ("p50_us", "p50 {:,.0f} µs"),
        ("p99_us", "p99 {:,.0f} µs"),
        ("intros_per_s_median", "{:,.0f} intro/s"),
        ("per_conn_kib", "{:,.1f} KiB/conn"),
        ("sockets_per_s", "{:,.0f} sockets/s"),
        ("server_cpu_us_per_socket", "{:,.0f} CPU µs/socket"),
        ("meet_ms_p50", "meet p50 {:,.2f} ms"),
        ("server_cpu_pct", "server {:.0f}%"),
        ("server_core_pct", "its core {:.0f}%"),
        ("redis_cpu_pct", "Redis {:.0f}%"),
        ("gen_cpu_pct", "gen {:.0f}%"),
        ("other_cpu_pct", "other {:.0f}%"),
    ):
        if isinstance(r.get(key), int | float):
            bits.append(fmt.format(r[key]))
    if not r.get("valid"):
        bits.append("INVALID")
    return ", ".join(bits)


# ---------------------------------------------------------------------------------------------
# Table


@dataclass
class Row:
    """One line of the side-by-side table."""

    metric: str
    unit: str
    better: str  # "higher" or "lower"
    values: dict[str, float | None]
    flags: dict[str, str]
    ratio: float | None = None


def flags_for(entry: dict[str, Any] | None, pipe: bool = False) -> str:
    """Flags: ! invalid or failed, * server core busy below 85% (not the limit), g generator above
    90% CPU, ~ other processes used more than 15% of a core."""
    if entry is None:
        return ""
    f = ""
    if not entry.get("valid") or "error" in entry:
        f += "!"
    core = entry.get("server_core_pct")
    if pipe and isinstance(core, int | float) and core < SATURATED_PCT:
        f += "*"
    if isinstance(entry.get("gen_cpu_pct"), int | float) and entry["gen_cpu_pct"] > GEN_BUSY_PCT:
        f += "g"
    if isinstance(entry.get("other_cpu_pct"), int | float) and entry["other_cpu_pct"] > NOISE_PCT:
        f += "~"
    return f


def build_table(results: dict[str, dict[str, Any]], cfg: Config) -> list[Row]:
    keys = list(results)
    rows: list[Row] = []

    def add(metric: str, unit: str, better: str, pick: Callable[[dict], Any], pipe=False) -> None:
        values: dict[str, float | None] = {}
        flags: dict[str, str] = {}
        for k in keys:
            entry = pick(results[k])
            v = entry.get("_value") if isinstance(entry, dict) else None
            values[k] = v if isinstance(v, int | float) else None
            flags[k] = flags_for(entry, pipe) if isinstance(entry, dict) else ""
        ratio = None
        if values.get("ours") and values.get("lf"):
            ratio = values["ours"] / values["lf"]
        rows.append(Row(metric, unit, better, values, flags, ratio))

    def field_of(test: str, key: str, sub: str | None = None) -> Callable[[dict], Any]:
        def pick(res: dict) -> dict | None:
            entry = res.get(test)
            if entry is None:
                return None
            if sub is not None:
                entry = entry.get(sub)
                if entry is None:
                    return None
            return {**entry, "_value": entry.get(key)}

        return pick

    if "pipe" in cfg.tests:
        for size in cfg.sizes:
            for pairs in cfg.pairs:
                label = f"pipe {fmt_size(size)} x {pairs} pair{'s' if pairs > 1 else ''}"
                cell = f"{size}x{pairs}"
                add(label, "msg/s", "higher", field_of("pipe", "msgs_per_s", cell), pipe=True)
                add(label, "MB/s", "higher", field_of("pipe", "mb_per_s", cell), pipe=True)
    if "echo" in cfg.tests:
        add("echo round trip p50", "µs", "lower", field_of("echo", "p50_us"))
        add("echo round trip p99", "µs", "lower", field_of("echo", "p99_us"))
    if "setup" in cfg.tests:
        add("pair set-up p50", "µs", "lower", field_of("setup", "p50_us"))
        add("pair set-up p99", "µs", "lower", field_of("setup", "p99_us"))
    if "intro" in cfg.tests:
        add(
            f"introductions ({cfg.intro_peers} peers)",
            "intro/s",
            "higher",
            field_of("intro", "intros_per_s_median"),
        )
    if "memory" in cfg.tests:
        add(
            f"memory per idle socket ({cfg.idle_count})",
            "KiB",
            "lower",
            field_of("memory", "per_conn_kib"),
        )
    if "storm" in cfg.tests:
        label = f"storm: {cfg.storm_count:,} sockets each Joining its own lobby"
        add(label, "sockets/s", "higher", field_of("storm", "sockets_per_s"))
        add(label, "CPU µs/socket", "lower", field_of("storm", "server_cpu_us_per_socket"))
    if "capacity" in cfg.tests:
        label = f"capacity ({cfg.capacity_count:,} asked)"
        add(f"{label}: idle sockets held", "sockets", "higher", field_of("capacity", "count"))
        add(
            f"{label}: accepted, Join on open",
            "sockets/s",
            "higher",
            field_of("capacity", "sockets_per_s"),
        )
        add(f"{label}: RSS", "MiB", "lower", field_of("capacity", "rss_after_mib"))
        add(f"{label}: memory per socket", "KiB", "lower", field_of("capacity", "per_conn_kib"))
        add(f"{label}: two new peers meet, p50", "ms", "lower", field_of("capacity", "meet_ms_p50"))
    return rows


def build_scale_out_table(results: dict[str, dict[str, Any]], cfg: Config) -> list[Row]:
    """The many-workers table: one column per placement, the ratio SPLIT / ONE."""
    rows: list[Row] = []

    def add(metric: str, unit: str, better: str, test: str, key: str, cell: str | None = None):
        values: dict[str, float | None] = {}
        flags: dict[str, str] = {}
        for placement in PLACEMENTS:
            entry = results.get(placement, {}).get(test)
            if entry is not None and cell is not None:
                entry = entry.get(cell)
            v = entry.get(key) if isinstance(entry, dict) else None
            values[placement] = v if isinstance(v, int | float) else None
            flags[placement] = flags_for(entry, test == "pipe") if isinstance(entry, dict) else ""
        ratio = None
        if values.get(SPLIT) and values.get(ONE):
            ratio = values[SPLIT] / values[ONE]
        rows.append(Row(metric, unit, better, values, flags, ratio))

    if "xpipe" in cfg.tests:
        for size in cfg.x_sizes:
            for pairs in cfg.x_pairs:
                label = f"pipe {fmt_size(size)} x {pairs} pair{'s' if pairs > 1 else ''}"
                cell = f"{size}x{pairs}"
                add(label, "msg/s", "higher", "pipe", "msgs_per_s", cell)
                add(label, "MB/s", "higher", "pipe", "mb_per_s", cell)
                add(f"{label}: Redis CPU", "% core", "lower", "pipe", "redis_cpu_pct", cell)
    if "xecho" in cfg.tests:
        add("echo round trip p50", "µs", "lower", "echo", "p50_us")
        add("echo round trip p99", "µs", "lower", "echo", "p99_us")
    if "xintro" in cfg.tests:
        add(
            f"introductions ({cfg.intro_peers} peers)",
            "intro/s",
            "higher",
            "intro",
            "intros_per_s_median",
        )
        add("introductions: Redis CPU", "% core", "lower", "intro", "redis_cpu_pct")
    return rows


def fmt_size(size: int) -> str:
    return f"{size // KIB} KiB" if size >= KIB and size % KIB == 0 else f"{size} B"


def fmt_value(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit in ("msg/s", "intro/s", "µs", "sockets/s", "sockets", "CPU µs/socket"):
        return f"{v:,.0f}"
    return f"{v:,.1f}"


def render_table(rows: list[Row], specs: list[ServerSpec]) -> str:
    """Our server against LF's (or one of them alone)."""
    columns = [(s.key, s.label) for s in specs]
    return render_rows(rows, columns, "ours/LF" if len(specs) == 2 else None)


def render_rows(rows: list[Row], columns: list[tuple[str, str]], ratio: str | None) -> str:
    """A table: metric, unit, one value (and its flags) per column, then, under the header
    ``ratio`` if given, each row's ratio and which direction is better."""
    keys = [key for key, _ in columns]
    headers = ["metric", "unit", *(label for _, label in columns)]
    if ratio is not None:
        headers += [ratio, "better"]
    lines = []
    body = []
    for row in rows:
        cells = [row.metric, row.unit]
        for k in keys:
            cells.append(fmt_value(row.values.get(k), row.unit) + row.flags.get(k, ""))
        if ratio is not None:
            cells.append("-" if row.ratio is None else f"{row.ratio:.2f}")
            cells.append(row.better)
        body.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *body, strict=True)]
    align_left = {0, 1}

    def fmt_line(cells: list[str]) -> str:
        out = []
        for i, (c, w) in enumerate(zip(cells, widths, strict=True)):
            out.append(str(c).ljust(w) if i in align_left else str(c).rjust(w))
        return "  ".join(out).rstrip()

    lines.append(fmt_line(headers))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(fmt_line(c) for c in body)
    lines.append(
        "flags: ! invalid or failed   * server's core below 85% busy (not the limit)   "
        "g generator above 90% CPU   ~ other processes above 15% of a core"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Machine and versions


def _cmd_output(argv: list[str], cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=cwd, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict[str, Any]:
    cpu_model = None
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_kib = None
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cpu_model": cpu_model,
        "cpus_online": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "mem_total_kib": mem_kib,
        "loadavg": list(os.getloadavg()),
    }


def _npm_version(*path: str) -> str | None:
    try:
        return json.loads((BENCH / "node_modules" / Path(*path) / "package.json").read_text())[
            "version"
        ]
    except (OSError, ValueError, KeyError):
        return None


def versions() -> dict[str, Any]:
    python_pkgs = {}
    for name in (
        "Django",
        "channels",
        "daphne",
        "uvicorn",
        "websockets",
        "uvloop",
        "msgpack",
        "redis",
        "hiredis",
        "channels-redis",
    ):
        try:
            python_pkgs[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            python_pkgs[name] = None
    return {
        "python": platform.python_version(),
        "python_executable": in_repository(os.path.normpath(sys.executable)),
        "python_packages": python_pkgs,
        "node": _cmd_output(["node", "--version"]),
        "npm_packages": {
            "@localfirst/relay": _npm_version("@localfirst", "relay"),
            "ws (load generator, LF pipes)": _npm_version("ws"),
            "ws (LF server sockets, via express-ws)": _npm_version(
                "express-ws", "node_modules", "ws"
            ),
            "express-ws": _npm_version("express-ws"),
            "msgpackr": _npm_version("msgpackr"),
        },
        "git_commit": _cmd_output(["git", "rev-parse", "HEAD"], cwd=ROOT),
        "git_dirty": bool(_cmd_output(["git", "status", "--porcelain"], cwd=ROOT)),
    }


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="short smoke run (about a minute)")
    p.add_argument("--only", choices=("ours", "lf"), help="run against one server only")
    p.add_argument(
        "--ours-cmd",
        default=DEFAULT_OURS_CMD,
        help="our server's command line; {port} is replaced (default: %(default)s)",
    )
    p.add_argument(
        "--ours-server", metavar="NAME", help="append '--server NAME' to --ours-cmd (e.g. daphne)"
    )
    p.add_argument(
        "--ours-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment variable for our server (repeatable)",
    )
    p.add_argument("--ours-label", help="our server's column title (default: ours[/server])")
    p.add_argument(
        "--tests",
        default=",".join(ONE_WORKER_TESTS),
        help="comma-separated subset; xpipe, xecho, xintro are the scale-out part",
    )
    p.add_argument(
        "--scale-out",
        action="store_true",
        help="also run the scale-out part (xpipe,xecho,xintro): our relay as one worker, as two"
        " Redis-backed workers with each pair on one, and with every pair split across them",
    )
    p.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/0",
        help="the Redis of the scale-out workers (their keys get a prefix of the run's own, "
        "deleted after; default %(default)s)",
    )
    p.add_argument(
        "--sizes", help="pipe frame sizes in bytes, comma-separated (64,1024,16384; xpipe 64,1024)"
    )
    p.add_argument("--pairs", help="pipe counts, comma-separated (1,16,128; xpipe 16)")
    p.add_argument("--duration", type=float, help="seconds measured per pipe cell (3)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up per pipe cell (1)")
    p.add_argument("--repeat", type=int, help="repetitions per pipe cell; the median counts (3)")
    p.add_argument(
        "--noise-retries",
        type=int,
        default=1,
        help="times a pipe run disturbed by other processes is run again (1)",
    )
    p.add_argument(
        "--window-bytes", type=int, default=256 * KIB, help="in-flight bytes per pipe (256 KiB)"
    )
    p.add_argument("--window-frames", type=int, default=256, help="in-flight frames per pipe")
    p.add_argument(
        "--single-window-bytes",
        type=int,
        default=1024 * KIB,
        help="in-flight bytes when there is one pipe (1 MiB)",
    )
    p.add_argument(
        "--single-window-frames", type=int, default=1024, help="in-flight frames, one pipe"
    )
    p.add_argument("--idle-count", type=int, help="idle control sockets for memory (2000)")
    p.add_argument(
        "--storm-count", type=int, help="control sockets opened at once, each Joining (2000)"
    )
    p.add_argument(
        "--capacity-count",
        type=int,
        help="idle control sockets of the capacity run (50000; fewer if the fd limits say so)",
    )
    p.add_argument(
        "--client",
        choices=("raw", "ws"),
        default="raw",
        help="generator transport: raw (default, cheapest) or the ws library (cross-check)",
    )
    p.add_argument(
        "--no-introduce",
        action="store_true",
        help="open pipes without introducing the peers first (bare LF flow)",
    )
    p.add_argument("--server-cpus", default="0", help="taskset CPU list for servers (0)")
    p.add_argument("--gen-cpus", default="1", help="taskset CPU list for the generator (1)")
    p.add_argument("--out", type=Path, help="JSON path (default bench/results/<timestamp>.json)")
    return p.parse_args(argv)


def make_config(args: argparse.Namespace, log_dir: Path) -> Config:
    q = args.quick

    def ints(text: str | None, default: list[int]) -> list[int]:
        return [int(x) for x in text.split(",")] if text else default

    tests = [t.strip() for t in args.tests.split(",") if t.strip()]
    if args.scale_out:
        tests += [t for t in SCALE_OUT_TESTS if t not in tests]
    unknown = set(tests) - {*ONE_WORKER_TESTS, *SCALE_OUT_TESTS}
    if unknown:
        raise SystemExit(f"unknown tests: {', '.join(sorted(unknown))}")
    return Config(
        sizes=ints(args.sizes, [64, 1024, 16384]),
        pairs=ints(args.pairs, [1, 16, 128]),
        x_sizes=ints(args.sizes, [64, 1024]),
        x_pairs=ints(args.pairs, [16]),
        redis_url=args.redis_url,
        warmup_s=args.warmup if args.warmup is not None else (0.3 if q else 1.0),
        duration_s=args.duration if args.duration is not None else (0.7 if q else 3.0),
        repeat=args.repeat if args.repeat is not None else (1 if q else 3),
        noise_retries=args.noise_retries,
        drain_timeout_s=10.0,
        window_bytes=args.window_bytes,
        window_frames=args.window_frames,
        single_window_bytes=args.single_window_bytes,
        single_window_frames=args.single_window_frames,
        window_min=16,
        echo_warmup=200 if q else 500,
        echo_samples=1000 if q else 5000,
        setup_warmup=10 if q else 20,
        setup_samples=50 if q else 300,
        intro_peers=100,
        intro_rounds=3 if q else 20,
        # The LF server's rate still climbs over the first rounds (JIT): they are left out.
        intro_warmup_rounds=1 if q else 3,
        idle_count=args.idle_count if args.idle_count is not None else (300 if q else 2000),
        idle_warmup_count=50 if q else 100,
        storm_count=args.storm_count if args.storm_count is not None else (300 if q else 2000),
        capacity_count=args.capacity_count
        if args.capacity_count is not None
        else (2000 if q else 50_000),
        tests=tests,
        client=args.client,
        introduce=not args.no_introduce,
        server_cpus=args.server_cpus,
        gen_cpus=args.gen_cpus,
        startup_timeout_s=60.0,
        log_dir=log_dir,
    )


def make_specs(args: argparse.Namespace) -> list[ServerSpec]:
    ours_cmd = args.ours_cmd
    if args.ours_server:
        ours_cmd += f" --server {shlex.quote(args.ours_server)}"
    # The generator is one address access for thousands of clients: the relay's limits per
    # client address (README, abuse limits) would measure the limits, not the relay.
    env = {"RELAY_MAX_CONNECTIONS_PER_ADDRESS": "0", "RELAY_HANDSHAKE_RATE": ""}
    for item in args.ours_env:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--ours-env wants KEY=VALUE, got {item!r}")
        env[key] = value
    label = args.ours_label or ("ours" + (f"/{args.ours_server}" if args.ours_server else ""))
    specs = [
        ServerSpec("ours", label, ours_cmd, env),
        ServerSpec("lf", "LF 4.2.2", f"node {shlex.quote(str(LF_SERVER))} {{port}}"),
    ]
    return [s for s in specs if args.only in (None, s.key)]


def parse_cpu_list(text: str) -> set[int]:
    """'1', '0,1' or '0-1' (taskset's list syntax) -> {cpu numbers}."""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def ensure_node_modules() -> None:
    """Installs the pinned Node packages (npm ci) if they are missing."""
    if (BENCH / "node_modules" / "@localfirst" / "relay").is_dir():
        return
    print("bench/node_modules missing: running npm ci", file=sys.stderr)
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BENCH, check=True, timeout=600)


def ensure_migrated(ours_cmd: str) -> None:
    """Applies the database migrations our default server needs (as `make run` does)."""
    if ours_cmd != DEFAULT_OURS_CMD:
        return  # a command of the caller's: its database is the caller's too
    manage = [f"{ROOT}/.venv/bin/python", f"{ROOT}/manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=ROOT, check=True, timeout=300)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_node_modules()
    ensure_migrated(args.ours_cmd)
    machine = machine_info()  # before the pinning below, which would hide a core
    # The harness wakes up only to read /proc at the generator's marks; it shares the
    # generator's core so that the servers' core stays theirs alone.
    os.sched_setaffinity(0, parse_cpu_list(args.gen_cpus))
    # The generators (and the LF server) inherit it: one descriptor per socket they open.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    log_dir = Path(tempfile.mkdtemp(prefix=f"relay-bench-{stamp}-"))
    cfg = make_config(args, log_dir)
    specs = make_specs(args)
    out = args.out or BENCH / "results" / f"{stamp}{'-quick' if args.quick else ''}.json"
    scale_out = [t for t in cfg.tests if t in SCALE_OUT_TESTS]
    ours = next((s for s in specs if s.key == "ours"), None)
    redis_server: dict[str, Any] | None = None
    if scale_out:
        if ours is None:
            raise SystemExit("the scale-out part (xpipe, xecho, xintro) measures our relay only")
        try:
            cfg.redis_pid = redisctl.server_pid(cfg.redis_url)
            redis_server = {**redisctl.server_info(cfg.redis_url), "pid": cfg.redis_pid}
        except redisctl.RedisError as exc:
            raise SystemExit(f"the scale-out part needs Redis: {exc}") from exc

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    t0 = time.monotonic()
    log(f"servers: {', '.join(f'{s.key}={s.cmd}' for s in specs)}; logs in {log_dir}")
    results = run_all(specs, cfg, log)
    scale = run_scale_out(ours, cfg, log) if scale_out and ours is not None else None
    machine["loadavg_end"] = list(os.getloadavg())
    rows = build_table(results, cfg)
    tables = [render_table(rows, specs)] if rows else []
    scale_rows: list[Row] = []
    if scale is not None:
        scale_rows = build_scale_out_table(scale, cfg)
        columns = [(p, PLACEMENT_LABELS[p]) for p in PLACEMENTS]
        tables.append(
            "Many workers (our relay; Redis CPU wherever it ran):\n"
            + render_rows(scale_rows, columns, "split/1")
        )

    entries = [*iter_entries(results), *iter_entries(scale or {})]
    all_valid = all(entry.get("valid", False) for entry in entries)
    report = {
        "schema": SCHEMA,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "elapsed_s": round(time.monotonic() - t0, 1),
        "quick": args.quick,
        "all_valid": all_valid,
        "config": {**asdict(cfg), "log_dir": str(log_dir)},
        "servers": {
            s.key: {"label": s.label, "cmd": in_repository(s.cmd), "env": s.env} for s in specs
        },
        "machine": machine,
        "versions": versions(),
        "table": [asdict(r) for r in rows],
        "results": results,
    }
    if scale is not None:
        # The scale-out part: shaped as "results" with placements for servers (one, local,
        # split), and its table, whose values are keyed by placement.
        report["scale_out"] = {
            "placements": PLACEMENT_LABELS,
            "redis": redis_server,
            "table": [asdict(r) for r in scale_rows],
            "results": scale,
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")

    print("\n\n".join(tables))
    print(f"\nresults: {out}")
    if not all_valid:
        print(f"\n*** SOME FIGURES ARE INVALID (lost/reordered/altered frames, failures): {out}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

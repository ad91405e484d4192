"""``make run-cluster``: several Redis-backed relay workers behind nginx, on this machine.

Starts ``--workers`` processes of ``manage.py serve`` on consecutive loopback ports (each with
``RELAY_REDIS_URL``, default ``redis://127.0.0.1:6379/0``), renders ``deploy/nginx/relay.conf`` for
those ports into ``<dir>/nginx.conf`` (``<dir>``: ``RELAY_DATA_DIR/cluster``, ``var/cluster`` by
default) and runs Debian's nginx binary on ``--port`` as an ordinary process with its own pid,
log and temporary files there (never the system's nginx service). Prints the one URL to use, and
stops everything on Ctrl-C or SIGTERM, or as soon as one of them exits. Each worker's
``/metrics`` is its own, so nginx refuses it: ``<dir>/prometheus.yml`` is a Prometheus
configuration that scrapes every worker on its port.

The database must be migrated and the static files collected first (``make run-cluster`` does);
every worker uses the same ones (``DATABASE_URL``, default SQLite under ``RELAY_DATA_DIR``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
NGINX_CONF = ROOT / "deploy" / "nginx" / "relay.conf"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
START_TIMEOUT = 60.0  # seconds for a worker (or nginx) to answer
STOP_TIMEOUT = 15.0  # seconds for everything to stop before it is killed


def render_nginx(template: str, worker_ports: list[int], listen: str, directory: Path) -> str:
    """A whole nginx configuration: ``template`` (``deploy/nginx/relay.conf``) with its upstreams
    listing ``worker_ports``, listening on ``listen`` (``host:port``), inside a main configuration
    that keeps every file nginx writes in ``directory``."""
    servers = "".join(f"    server 127.0.0.1:{port};\n" for port in worker_ports)
    rules = [
        (r"(?m)^(?:[ \t]*server 127\.0\.0\.1:\d+;\n)+", servers),  # each upstream's list
        (r"(?m)^([ \t]*)listen [^;]+;", rf"\g<1>listen {listen};"),
        (r"(?m)^([ \t]*)access_log \S+", rf"\g<1>access_log {directory / 'access.log'}"),
    ]
    for pattern, replacement in rules:
        template, found = re.subn(pattern, replacement, template)
        if not found:
            raise ValueError(f"{NGINX_CONF} has no line matching {pattern!r}")
    temp = directory / "tmp"
    return f"""# Rendered by deploy/cluster.py from deploy/nginx/relay.conf: changes here are lost.
daemon off;
worker_processes auto;
pid {directory / "nginx.pid"};
error_log {directory / "error.log"} warn;
events {{
    worker_connections 4096;
}}
http {{
    client_body_temp_path {temp / "body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};

{template}
}}
"""


def render_prometheus(worker_ports: list[int]) -> str:
    """A Prometheus configuration scraping every worker (``deploy/prometheus.yml``'s shape):
    each worker's numbers are its own, summed over workers by the queries."""
    targets = ", ".join(f'"127.0.0.1:{port}"' for port in worker_ports)
    return f"""# Rendered by deploy/cluster.py for its workers: `prometheus --config.file=THIS`.
global:
  scrape_interval: 15s
scrape_configs:
  - job_name: relay
    static_configs:
      - targets: [{targets}]
"""


def answers(port: int) -> bool:
    """Whether something answers HTTP on the loopback ``port`` (any status will do)."""
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of the log at ``path``."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Cluster:
    """The worker processes and nginx, started and stopped together."""

    def __init__(self) -> None:
        self.processes: list[tuple[str, subprocess.Popen, Path]] = []  # name, process, log

    def start(self, name: str, command: list[str], log: Path, env: dict[str, str]) -> None:
        """Start ``command``, its output appended to ``log`` (a file: a pipe nobody reads would
        stall it once full)."""
        with log.open("ab") as output:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
            )
        self.processes.append((name, process, log))

    def wait_until_answering(self, name: str, port: int) -> None:
        """Return once ``port`` answers; exit with the log's last lines if ``name`` dies or
        takes longer than START_TIMEOUT."""
        _, process, log = next(p for p in self.processes if p[0] == name)
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{name} did not start (log: {log}):\n{tail(log)}")
            time.sleep(0.1)

    def exited(self) -> str | None:
        """The name of a process that has exited, if any."""
        return next((name for name, p, _ in self.processes if p.poll() is not None), None)

    def stop(self) -> None:
        """SIGTERM to each (nginx first: no new connections), then SIGKILL to any still running
        after STOP_TIMEOUT."""
        for _, process, _ in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for _, process, _ in self.processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def redis_problem(url: str) -> str | None:
    """Why the workers could not use Redis at ``url``, or None."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except (redis.RedisError, ValueError) as exc:
        return f"Redis at {url} (RELAY_REDIS_URL) does not answer: {exc}"
    return None


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # one way out for Ctrl-C and SIGTERM


def main(argv: list[str] | None = None) -> int:
    """Run the cluster until interrupted; the exit status is 1 if a process failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", "2")))
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"), help="nginx's")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument(
        "--worker-port", type=int, help="the first worker's port (default: --port + 1)"
    )
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    options = parser.parse_args(argv)
    if options.workers < 1:
        parser.error("--workers must be at least 1")
    first = options.worker_port or options.port + 1
    worker_ports = list(range(first, first + options.workers))

    env = dict(os.environ)
    env.setdefault("RELAY_REDIS_URL", DEFAULT_REDIS_URL)
    if problem := redis_problem(env["RELAY_REDIS_URL"]):
        print(problem, file=sys.stderr)
        return 1
    data_dir = Path(env.get("RELAY_DATA_DIR", ROOT / "var"))
    directory = (data_dir / "cluster").resolve()
    (directory / "tmp").mkdir(parents=True, exist_ok=True)
    host = f"[{options.host}]" if ":" in options.host else options.host  # IPv6, bracketed
    listen = f"{host}:{options.port}"
    config = directory / "nginx.conf"
    config.write_text(render_nginx(NGINX_CONF.read_text(), worker_ports, listen, directory))
    (directory / "prometheus.yml").write_text(render_prometheus(worker_ports))

    # SIGINT too: a shell starts a background job with SIGINT ignored, which Python keeps.
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    cluster = Cluster()
    try:
        for port in worker_ports:
            command = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1"]
            log = directory / f"worker-{port}.log"
            cluster.start(f"worker {port}", [*command, "--port", str(port)], log, env)
        for port in worker_ports:
            cluster.wait_until_answering(f"worker {port}", port)
        error_log = directory / "error.log"  # from its start, before it reads its config
        nginx = [options.nginx, "-p", str(directory), "-c", str(config), "-e", str(error_log)]
        cluster.start("nginx", nginx, error_log, env)
        cluster.wait_until_answering("nginx", options.port)

        shown = "localhost" if options.host in ("0.0.0.0", "::") else host
        print(
            f"Relay cluster ({options.workers} workers behind nginx): http://{shown}:{options.port}/"
        )
        print(f"Clients connect to ws://{shown}:{options.port}")
        print(f"Metrics: each worker's, scraped as {directory / 'prometheus.yml'} lists them")
        print(f"Logs in {directory}; Ctrl-C stops everything.", flush=True)
        while (gone := cluster.exited()) is None:
            time.sleep(0.5)
        print(f"{gone} exited: stopping the cluster", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())

"""Run an ASGI app on a real socket of 127.0.0.1 in a background thread, for the HTTP and Telegram tests; run
`lookalike serve` itself, and replicas of it behind Debian's nginx."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(app, server: uvicorn.Server | None = None):
    """Serve ``app`` on 127.0.0.1 (any free port) while the block runs, with ``server`` if given; yields its base
    URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    server = server or uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def wait_until(condition, timeout: float = 60.0, what: str = "condition"):
    """Poll ``condition()`` until it returns something truthy; return it, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@contextlib.contextmanager
def lookalike_serve(data_dir, *options: str, stop: int = signal.SIGINT, environment: dict | None = None):
    """`lookalike serve` (one worker, unless ``options`` say otherwise) on a free port of 127.0.0.1 while the block
    runs, then stopped with ``stop`` and checked to exit with status 0 and no traceback; yields its URL and
    process."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "lookalike_cli", "serve", "--data-dir", str(data_dir),
                                "--port", str(port), "--workers", "1", *options],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    try:
        line = process.stdout.readline()
        assert f"on http://127.0.0.1:{port}/query" in line, (line, process.stderr.read())
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, what="healthz")
        yield url, process
    finally:
        process.send_signal(stop)
        _, errors = process.communicate(timeout=60)
    assert process.returncode == 0 and "Traceback" not in errors, errors


# --- nginx in front of `lookalike serve` replicas (deploy/nginx/lookalike.conf) -------------------------------

NGINX = Path("/usr/sbin/nginx")
REPO = Path(__file__).resolve().parent.parent
SALT = "deploy-test"
RELOAD_SECONDS = 1.0


def nginx_site(listen: int, replicas: list[int]) -> str:
    """deploy/nginx/lookalike.conf, listening on ``listen`` of 127.0.0.1, in front of the ``replicas``' ports."""
    site = (REPO / "deploy" / "nginx" / "lookalike.conf").read_text()
    for old, new in [("listen 8080;", f"listen 127.0.0.1:{listen};"),
                     ("server 127.0.0.1:8001 ", f"server 127.0.0.1:{replicas[0]} "),
                     ("server 127.0.0.1:8002 ", f"server 127.0.0.1:{replicas[1]} ")]:
        assert site.count(old) == 1, old
        site = site.replace(old, new)
    return site


def start_nginx(folder: Path, listen: int, replicas: list[int]) -> subprocess.Popen:
    """Debian's nginx with ``nginx_site``, its files in ``folder``, started and listening."""
    (folder / "lookalike.conf").write_text(nginx_site(listen, replicas))
    temp = " ".join(f"{kind}_temp_path {folder / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                       "scgi"))
    (folder / "nginx.conf").write_text(f"""
pid {folder / 'nginx.pid'};
error_log {folder / 'error.log'} warn;
worker_processes 1;
events {{ worker_connections 512; }}
http {{
    access_log {folder / 'access.log'};
    {temp}
    include {folder / 'lookalike.conf'};
}}
""")
    process = subprocess.Popen([str(NGINX), "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", "daemon off;"],
                               stderr=subprocess.PIPE, text=True)
    wait_until(lambda: process.poll() is not None or port_open(listen), 30, "nginx")
    assert process.poll() is None, process.stderr.read()
    return process


def port_open(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        return True
    except httpx.TransportError:
        return False


def start_replica(data: Path, port: int, log: Path, *options: str) -> subprocess.Popen:
    """`lookalike serve` of one worker behind nginx on 127.0.0.1 (its trusted proxy), writing the answer log
    ``log`` with salted clients; started and answering."""
    process = subprocess.Popen([sys.executable, "-m", "lookalike_cli", "serve", "--data-dir", str(data), "--port",
                                str(port), "--workers", "1", "--trusted-proxies", "127.0.0.1", "--client-salt",
                                SALT, "--log", str(log), "--reload-seconds", str(RELOAD_SECONDS),
                                "--max-client-photos", "8", *options],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: process.poll() is not None or port_open(port), 120, f"the replica on {port}")
    assert process.poll() is None, process.stderr.read()
    return process


def stop(process: subprocess.Popen, how: int = signal.SIGINT) -> None:
    """Stop a server (nginx: SIGQUIT), and wait for it."""
    if process.poll() is None:
        process.send_signal(how)
        process.communicate(timeout=60)

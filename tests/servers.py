"""Run an ASGI app on a real socket of 127.0.0.1 in a background thread, for the HTTP and Telegram tests; run
`lookalike serve` itself."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time

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
def lookalike_serve(data_dir, *options: str, stop: int = signal.SIGINT):
    """`lookalike serve` (one worker) on a free port of 127.0.0.1 while the block runs, then stopped with ``stop``
    and checked to exit with status 0 and no traceback; yields its URL and process."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "lookalike_cli", "serve", "--data-dir", str(data_dir),
                                "--port", str(port), "--workers", "1", *options],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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

"""Helpers of several test modules: the demo's photos, the HTTP API and `lookalike bot` run for real, processes
and raw answers, a generation published without one person."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np

from lookalike_cli.answers.recognizer import Recognizer
from lookalike_cli.config import load_config
from lookalike_cli.serving.api import create_app
from lookalike_cli.serving.http import http_server

from conftest import DEMO, FAST, side_by_side
from fake_telegram import FakeTelegram
from servers import running, wait_until

BODY_LIMIT = 600_000  # bytes: the demo portraits are about 60 kB, the no-face fixture 450 kB
TOKEN = "123456:TEST-token-that-must-never-be-logged"


def photo(alias: str) -> bytes:
    """The demo gallery's photo of ``alias``, as bytes."""
    return (DEMO / "images" / f"{alias}.jpg").read_bytes()


def two_people(demo_gallery: Path) -> np.ndarray:
    """Two demo portraits side by side: Ami Bera, then Bob Corker."""
    return np.asarray(side_by_side(demo_gallery / "ami-bera.jpg", demo_gallery / "bob-corker.jpg"))


@contextlib.contextmanager
def api(data_dir, **settings):
    """The API over ``data_dir`` with test settings, on a free port of 127.0.0.1; yields an httpx client and
    the recognizer."""
    config = load_config(None, {**FAST, "max_body_bytes": BODY_LIMIT, **settings})
    recognizer = Recognizer(data_dir, config)
    recognizer.start()
    try:
        app = create_app(recognizer, config)
        with running(app, http_server(app, config)) as url, httpx.Client(base_url=url, timeout=60) as client:
            yield client, recognizer
    finally:
        recognizer.close()


def best_alias(response: httpx.Response) -> str:
    """The alias of the best match of the first face of an API answer (which must be a 200)."""
    assert response.status_code == 200, response.text
    return response.json()["photos"][0]["faces"][0]["matches"][0]["alias"]


def raw_answer(port: int, request: bytes) -> bytes:
    """The status line of the answer to ``request`` sent on a connection of its own."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request)
        return sock.recv(65536).split(b"\r\n", 1)[0]


def descendants(pid: int) -> set[int]:
    """The processes below ``pid`` (Linux /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def start_bot(data_dir, api_url: str, log, *options: str) -> subprocess.Popen:
    """`lookalike -vv bot` pointed at the fake Bot API, logging into the file ``log`` (debug logging: the token
    must not show even there; a file, not a pipe, so that a full pipe never stalls the bot)."""
    return subprocess.Popen(
        [sys.executable, "-m", "lookalike_cli", "-vv", "bot", "--data-dir", str(data_dir), "--workers", "1",
         "--bot-api-url", f"{api_url}/bot", "--bot-file-url", f"{api_url}/file/bot", *options],
        env={**os.environ, "LOOKALIKE_BOT_TOKEN": TOKEN}, stdout=log, stderr=subprocess.STDOUT, text=True)


def stop_bot(process: subprocess.Popen, log) -> str:
    """Interrupt the bot; its log, checked for a clean exit and for the token."""
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    log.seek(0)
    output = log.read()
    assert process.returncode == 0, output[-3000:]
    assert TOKEN not in output and TOKEN.split(":")[1] not in output
    return output


def reply(fake: FakeTelegram, chat_id: int):
    """The one message the bot sent to ``chat_id``."""
    return wait_until(lambda: fake.replies(chat_id), what=f"a reply to chat {chat_id}")[0]


def publish_without(data: Path, alias: str, config) -> str:
    """Publish a new generation of ``data`` whose gallery lacks ``alias`` (no dlib: from its embeddings)."""
    import pyarrow.compute as pc

    from lookalike_cli import build_index, calibrate, clean_identities
    from lookalike_cli.io.artifacts import DataDir

    store = DataDir(data)
    with store.locked("test"):
        embeddings = store.read("embeddings")
        store.write("embeddings", embeddings.filter(pc.not_equal(embeddings["alias"], alias)))
        clean_identities(data, config)
        calibrate(data, config)
        return build_index(data, config).generation

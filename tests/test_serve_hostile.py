"""The HTTP API under attack, over real HTTP on 127.0.0.1 (real workers, real dlib models, the demo gallery).

Every hostile input is built here. Each case asserts the answer (status and JSON body), that the worker is free
again within the deadline plus a margin (an ordinary selfie sent right after is answered 200), the memory bound
of the worker where the case is about memory (its peak RSS from /proc), and that at most one line is logged.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from lookalike_cli.config import load_config
from lookalike_cli.answers.recognizer import Recognizer
from lookalike_cli.serving.api import create_app
from lookalike_cli.serving.http import http_server

import hostile
from conftest import DEMO, FAST, encoded
from servers import running, wait_until

SELFIE = (DEMO / "selfie.jpg").read_bytes()
MARGIN = 30.0  # seconds beyond a deadline for a killed worker to be replaced (it loads the models) on a busy machine
LIMITS = {"workers": 1, "queue_size": 2, "max_body_bytes": 2_000_000, "header_timeout": 2.0, "body_timeout": 2.0,
          "max_connections": 12, "max_body_chunks": 1000}
MB = 1 << 20
# dlib's CNN detector, which looks at a photo in which HOG finds no face, on a copy of detect.cnn_pixels (160,000):
# about 200 MB of activations at its peak, the same for any photo (measured; loaded on first use)
CNN_MEMORY = 240 * MB

pytestmark = pytest.mark.slow  # starts servers


@contextlib.contextmanager
def api(data_dir, **settings):
    """The API with ``settings`` on a free port of 127.0.0.1: yields an httpx client, the URL and the recognizer."""
    config = load_config(None, {**FAST, **settings})
    recognizer = Recognizer(data_dir, config)
    recognizer.start()
    try:
        app = create_app(recognizer, config)
        with running(app, http_server(app, config)) as url, \
                httpx.Client(base_url=url, timeout=120, headers={"connection": "close"}) as client:  # none left open
            yield client, url, recognizer
    finally:
        recognizer.close()


@pytest.fixture(scope="module")
def server(built):
    with api(built, **LIMITS) as running_api:
        yield running_api


@pytest.fixture
def client(server):
    return server[0]


@pytest.fixture
def recognizer(server):
    return server[2]


@pytest.fixture
def logged(caplog):
    """The log records at the CLI's default level (WARNING and above) during a test."""
    caplog.set_level(logging.DEBUG)
    return lambda: [r for r in caplog.records if r.levelno >= logging.WARNING]


def address(client: httpx.Client) -> tuple[str, int]:
    return client.base_url.host, client.base_url.port


def raw_connection(client: httpx.Client) -> socket.socket:
    sock = socket.create_connection(address(client), timeout=60)
    return sock


def read_answer(sock: socket.socket) -> tuple[int, dict]:
    """Status and JSON body of the one answer on a raw connection, read until the server closes it."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), httpx.Response(200, content=body).json()


def by_status(client: httpx.Client) -> dict[str, int]:
    return client.get("/stats").json()["requests"]["by_status"]


def worker_pid(recognizer: Recognizer) -> int:
    """The process id of the recognizer's one worker, once it is ready."""
    [pid] = wait_until(recognizer.ready_worker_pids, what="a ready worker")
    return pid


def peak_rss(pid: int, reset: bool = False) -> int:
    """The peak resident memory of a process in bytes (VmHWM); ``reset`` first sets it to the current RSS."""
    if reset:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def answered_right_after(client: httpx.Client, recognizer: Recognizer, since: float, deadline: float) -> None:
    """The worker is free again (idle, or replaced and ready) within ``deadline`` + MARGIN seconds of ``since``,
    and an ordinary selfie sent then is answered 200."""
    wait_until(lambda: recognizer.in_work == 0 and len(recognizer.ready_worker_pids()) == recognizer.workers,
               timeout=deadline + MARGIN, what="a free worker")
    assert time.monotonic() - since < deadline + MARGIN
    response = client.post("/query", content=SELFIE)
    assert response.status_code == 200 and response.json()["photos"][0]["faces"], response.text


# --- Decoding: time -------------------------------------------------------------------------------------------

def test_a_jpeg_of_thousands_of_scans_is_refused_at_once(client, recognizer, logged):
    replaced = recognizer.workers_replaced
    started = time.monotonic()
    response = client.post("/query", content=hostile.repeated_scans_jpeg(6000, 3000))  # minutes of decoding
    assert response.status_code == 413
    assert response.json() == {"error": "the image is too large: too_large: a JPEG of more than 100 scans is over "
                                        "the limit", "status": "rejected", "reason": "too_large"}
    answered_right_after(client, recognizer, started, 0)
    assert recognizer.workers_replaced == replaced and logged() == []


def test_a_slow_decode_is_stopped_at_the_decode_timeout(built, logged):
    with api(built, workers=1, decode_timeout=hostile.DECODE_TIMEOUT) as (client, _, recognizer):
        pid = worker_pid(recognizer)
        started = time.monotonic()
        response = client.post("/query", content=hostile.slow_jpeg())  # half a second of decoding and more
        assert response.status_code == 400
        assert response.json() == {"error": f"not a usable image: timeout: {hostile.DECODE_TIMED_OUT}",
                                   "status": "rejected", "reason": "timeout"}
        assert time.monotonic() - started < hostile.DECODE_TIMEOUT + MARGIN
        assert recognizer.workers_replaced == 1 and not Path(f"/proc/{pid}").exists()
        answered_right_after(client, recognizer, started, hostile.DECODE_TIMEOUT)
    assert logged() == []


def test_a_photo_over_the_request_timeout_is_504_and_its_worker_is_freed(built, logged):
    # Each face described as the mean of 50 jittered copies: the collage's 64 faces take 64 times the selfie's one
    # (about 40 s against 0.6 s here), so a timeout of 4 s is 6-10 times away from both here, 4-16 times on a
    # machine 2.5 times faster
    with api(built, workers=1, request_timeout=4.0, max_faces=64, query_num_jitters=50) as (client, _, recognizer):
        pid = worker_pid(recognizer)
        started = time.monotonic()
        response = client.post("/query", content=hostile.collage(64))
        assert response.status_code == 504
        assert response.json() == {"error": "the photo was not answered within 4 s", "status": "timeout"}
        assert not Path(f"/proc/{pid}").exists() and recognizer.workers_replaced == 1  # its work was stopped
        answered_right_after(client, recognizer, started, 4.0)
        assert by_status(client) == {"200": 1, "504": 1}
    assert logged() == []


def test_large_photos_never_hold_every_worker(built, logged):
    """Two workers, two large photos (16-bit PNGs of 39.6 Mpx, seconds each): one is worked on, the other waits,
    and a selfie sent meanwhile is answered by the second worker before either large one."""
    slow = hostile.sixteen_bit_png(6000, 6600)
    with api(built, workers=2) as (client, _, recognizer), ThreadPoolExecutor(2) as senders:
        large = [senders.submit(client.post, "/query", content=slow) for _ in range(2)]
        wait_until(lambda: client.get("/stats").json()["queue"]["depth"] == 1, what="one large photo waiting")
        assert client.post("/query", content=SELFIE).status_code == 200
        assert not any(answer.done() for answer in large)
        assert [answer.result().status_code for answer in large] == [200, 200]
    assert logged() == []


# --- Decoding: memory and formats -----------------------------------------------------------------------------

@pytest.mark.parametrize("make, status, reason, bound", [
    # 39.6 Mpx at 7 bytes a pixel to decode: refused from the header, nothing decoded
    (lambda: hostile.rgba_png(6000, 6600), 413, "too_large", 16 * MB),
    # 39.6 Mpx of 16-bit grey (198 MB to decode, under 200 MB): decoded; then dlib's detection copies it (4 bytes
    # a pixel) to shrink it to 1024 px (no face: the CNN's look comes after the decoding's peak, within it)
    (lambda: hostile.sixteen_bit_png(6000, 6600), 200, None, 200 * MB + 4 * 39_600_000 + 32 * MB),
    # 39.6 Mpx CMYK JPEG (4 + 4 + 3 bytes a pixel): decoded at half scale to fit; no face: the CNN looks too
    (lambda: encoded(Image.new("CMYK", (6000, 6600), (10, 20, 30, 40)), "JPEG"), 200, None,
     100 * MB + CNN_MEMORY),
])
def test_decoded_memory_is_bounded(client, recognizer, logged, make, status, reason, bound):
    data = make()
    pid = worker_pid(recognizer)
    before = peak_rss(pid, reset=True)
    response = client.post("/query", content=data)
    assert response.status_code == status, response.text
    if reason:
        assert response.json()["reason"] == reason and "bytes to decode, over the limit" in response.json()["error"]
    else:
        assert response.json()["photos"][0]["faces"] == []
    assert peak_rss(pid) - before < bound, (peak_rss(pid) - before) / MB
    answered_right_after(client, recognizer, time.monotonic(), 0)
    assert logged() == []


@pytest.mark.parametrize("make, found", [(hostile.eps, "EPS"),
                                          (lambda: encoded(Image.new("F", (64, 64)), "TIFF"), "TIFF")])
def test_formats_not_accepted_are_415_without_decoding(client, logged, make, found):
    response = client.post("/query", content=make())
    assert response.status_code == 415
    assert response.json() == {"error": f"not a usable image: unsupported_format: {found} images are not accepted "
                                        "(accepted: JPEG, PNG, WEBP, GIF, BMP)", "status": "rejected",
                               "reason": "unsupported_format"}
    assert logged() == []


# --- Faces ----------------------------------------------------------------------------------------------------

def test_a_collage_is_answered_for_its_largest_faces_and_says_how_many_were_left_out(client, recognizer, logged):
    response = client.post("/query", content=hostile.collage(40))
    answer = response.json()["photos"][0]
    assert response.status_code == 200 and len(answer["faces"]) == 10 and answer["faces_left_out"] == 30
    boxes = [face["box"] for face in answer["faces"]]
    assert boxes == sorted(boxes)  # left to right, as always
    answered_right_after(client, recognizer, time.monotonic(), 0)
    assert logged() == []


# --- The HTTP layer -------------------------------------------------------------------------------------------

def test_with_every_place_taken_a_request_is_503_from_its_headers(client, recognizer, logged):
    """Its 1.9 MB are never sent: a body is read only while the recognizer has a free place."""
    collage = hostile.collage(40)  # a second or more of work each
    before = by_status(client).get("503", 0)
    with ThreadPoolExecutor(3) as senders:
        for _ in range(3):  # 1 worker + 2 places
            senders.submit(client.post, "/query", content=collage)
        wait_until(lambda: client.get("/stats").json()["queue"] == {"depth": 2, "in_work": 1, "size": 2},
                   what="every place taken")
        with raw_connection(client) as late:
            late.sendall(b"POST /query HTTP/1.1\r\nHost: x\r\nContent-Length: 1900000\r\n\r\n")
            status, body = read_answer(late)
    assert status == 503 and body["error"] == "busy: every worker is taken and the queue is full, try again later"
    assert by_status(client)["503"] == before + 1 and logged() == []


def test_the_bytes_of_bodies_held_at_once_are_bounded(client, recognizer, logged):
    """Bodies that stall hold what they sent (here 3 x 1.9 MB of the 6 MB allowed: 3 places x 2 MB), not a place;
    the next body that would go over the bound is answered 503."""
    with contextlib.ExitStack() as stack:
        holders = [stack.enter_context(raw_connection(client)) for _ in range(3)]
        for sock in holders:
            sock.sendall(b"POST /query HTTP/1.1\r\nHost: x\r\nContent-Length: 1950000\r\n\r\n" + bytes(1_900_000))
        wait_until(lambda: client.get("/stats").json()["bodies"]["bytes_held"] == 3 * 1_900_000,
                   what="5.7 MB held")
        response = client.post("/query", content=bytes(1_000_000))
        assert response.status_code == 503
        assert response.json() == {"error": "busy: the server holds as many photo bytes as it may, try again later",
                                   "status": "busy"}
        answered_right_after(client, recognizer, time.monotonic(), 0)  # the places are free all along
        for sock in holders:  # the body timeout (2 s) answers them 408 and gives their bytes back
            assert read_answer(sock) == (408, {"error": "the photo did not arrive within 2 s", "status": "too_slow"})
    assert client.get("/stats").json()["bodies"] == {"receiving": 0, "bytes_held": 0, "bytes_limit": 6_000_000}
    assert logged() == []


def test_connections_over_the_limit_are_answered_503_and_closed(client, logged):
    before = by_status(client).get("503", 0)
    with contextlib.ExitStack() as stack:
        for _ in range(LIMITS["max_connections"]):
            stack.enter_context(raw_connection(client))
        time.sleep(0.2)  # let the server accept them
        with raw_connection(client) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            status, body = read_answer(extra)
    assert status == 503 and body == {"error": "over 12 connections are open: try again later"}
    wait_until(lambda: client.get("/healthz").status_code == 200, what="healthz")
    assert by_status(client)["503"] == before + 1 and logged() == []


def test_one_address_holding_connections_leaves_room_for_the_others(built):
    """A client at 127.0.0.2 opens 140 idle connections (more than --max-connections, 128): it gets
    --max-client-connections (16) of them, the rest are answered 503 at once, and a client at 127.0.0.1 is
    answered."""
    with api(built, **{**LIMITS, "max_connections": 128}) as (client, _, _), contextlib.ExitStack() as stack:
        hoard = [stack.enter_context(socket.create_connection(address(client), timeout=60,
                                                              source_address=("127.0.0.2", 0)))
                 for _ in range(140)]
        time.sleep(0.5)  # let the server accept them
        response = client.post("/query", content=SELFIE)
        assert response.status_code == 200 and response.json()["photos"][0]["faces"]
        answered, _, _ = select.select(hoard, [], [], 5)
        assert len(answered) == 140 - 16
        assert {(status, body["error"]) for status, body in map(read_answer, answered)} == {
            (503, "over 16 connections are open from your address: use those, or try again later")}


def post_from(client: httpx.Client, source: str, body: bytes, length: int | None = None) -> socket.socket:
    """A connection from the address ``source`` that posts ``body`` to /query (declaring ``length`` bytes)."""
    sock = socket.create_connection(address(client), timeout=60, source_address=(source, 0))
    head = f"POST /query HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {length or len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body)
    return sock


def test_one_address_has_at_most_its_share_of_photos_in_work(built):
    """Two photos from 127.0.0.2 whose bodies arrive slowly hold that address's share (--max-client-photos, 2):
    a third from it is answered 429 at once, while 127.0.0.1 is answered; once they end, 127.0.0.2 is again."""
    with api(built, **{**LIMITS, "max_client_photos": 2}) as (client, _, _), contextlib.ExitStack() as stack:
        slow = [stack.enter_context(post_from(client, "127.0.0.2", SELFIE[:10], len(SELFIE))) for _ in range(2)]
        time.sleep(0.3)  # let the server read their headers
        with post_from(client, "127.0.0.2", SELFIE) as third:
            status, body = read_answer(third)
        assert status == 429 and body == {"error": "your address has 2 photos in work already: wait for their "
                                                   "answers", "status": "too_many"}
        assert client.post("/query", content=SELFIE).status_code == 200  # from 127.0.0.1
        assert [read_answer(sock)[0] for sock in slow] == [408, 408]  # at the body timeout
        with post_from(client, "127.0.0.2", SELFIE) as again:
            assert read_answer(again)[0] == 200


def test_headers_not_sent_in_time_are_408(client, logged):
    before = by_status(client).get("408", 0)
    started = time.monotonic()
    with raw_connection(client) as slow:
        slow.sendall(b"POST /query HTTP/1.1\r\nHost: x\r\nContent-Le")  # and nothing more
        assert read_answer(slow) == (408, {"error": "the request's headers did not arrive within 2 s"})
    assert time.monotonic() - started < LIMITS["header_timeout"] + MARGIN
    assert by_status(client)["408"] == before + 1 and logged() == []


@pytest.mark.parametrize("path", ["/healthz", "/"])
def test_an_answered_request_whose_body_trickles_in_is_closed_at_the_header_timeout(client, path, logged):
    """A route that reads no body answers at once; a client then sending the declared body a byte at a time
    would hold a connection (a place of --max-connections) for as long as it likes."""
    with raw_connection(client) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 ")
        started = time.monotonic()
        sock.settimeout(0.25)
        while not closed_by_server(sock):  # a byte every quarter of a second
            assert time.monotonic() - started < LIMITS["header_timeout"] + MARGIN, "the connection is still open"
    assert logged() == []


def closed_by_server(sock: socket.socket) -> bool:
    """Sends a byte, reads what the server still sends until the socket's timeout: whether it closed ``sock``."""
    try:
        sock.sendall(b"x")
        while sock.recv(65536):  # the rest of an answer
            pass
        return True
    except socket.timeout:
        return False
    except OSError:  # reset: the server had closed it when the byte arrived
        return True


def test_a_content_length_larger_than_the_body_is_408_and_frees_the_place(client, recognizer, logged):
    with raw_connection(client) as short:
        short.sendall(b"POST /query HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + SELFIE[:5000])
        assert read_answer(short) == (408, {"error": "the photo did not arrive within 2 s", "status": "too_slow"})
    assert client.get("/stats").json()["bodies"]["receiving"] == 0
    answered_right_after(client, recognizer, time.monotonic(), 0)
    assert logged() == []


def test_a_body_in_thousands_of_one_byte_chunks_is_400(client, recognizer, logged):
    before = by_status(client).get("400", 0)
    with raw_connection(client) as sock:
        sock.sendall(b"POST /query HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(b"".join(b"1\r\n%c\r\n" % byte for byte in SELFIE[:5000]))
        with contextlib.suppress(OSError):  # the server may close before the last chunks are sent
            sock.sendall(b"0\r\n\r\n")
        assert read_answer(sock) == (400, {"error": "the body came in more than 1000 chunks"})
    assert by_status(client)["400"] == before + 1
    assert logged() == []  # uvicorn's "Invalid HTTP request received." is a debug line: strangers cannot fill the log
    answered_right_after(client, recognizer, time.monotonic(), 0)


def multipart(boundary: bytes, parts: list[tuple[bytes, bytes]], declared: bytes | None = None) -> tuple[dict, bytes]:
    body = b"".join(b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + content + b"\r\n" for head, content in parts)
    headers = {"content-type": (b"multipart/form-data; boundary=" + (declared or boundary)).decode()}
    return headers, body + b"--" + boundary + b"--\r\n"


@pytest.mark.parametrize("headers, body, says", [
    ({"content-type": "multipart/form-data"}, b"--x\r\n\r\n", "a broken multipart form"),
    (*multipart(b"right", [(b'Content-Disposition: form-data; name="photo"; filename="a.jpg"', SELFIE)],
                declared=b"wrong"), "a broken multipart form"),
    (*multipart(b"many", [(b'Content-Disposition: form-data; name="f%d"' % n, b"x") for n in range(1000)]),
     "a broken multipart form: Too many fields"),
], ids=["no boundary", "wrong boundary", "1000 parts"])
def test_malformed_multipart_is_400_json_and_counted(client, logged, headers, body, says):
    before = by_status(client).get("400", 0)
    response = client.post("/query", content=body, headers=headers)
    assert response.status_code == 400 and response.json()["error"].startswith(says), response.text
    assert by_status(client)["400"] == before + 1 and len(logged()) <= 1  # python-multipart's warning, if any


@pytest.mark.parametrize("upgrade", ["websocket", "h2c", "nonsense/9"])
def test_an_upgrade_request_is_answered_as_plain_http(client, logged, upgrade):
    with raw_connection(client) as sock:
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                     "Connection: close\r\n\r\n".encode())
        assert read_answer(sock) == (200, {"status": "ok"})
    assert logged() == []


def test_content_types_match_in_any_letter_case(client):
    headers, body = multipart(b"b0und", [(b'Content-Disposition: form-data; name="photo"; filename="me.jpg"', SELFIE)])
    headers["content-type"] = headers["content-type"].replace("multipart/form-data", "Multipart/Form-Data")
    response = client.post("/query", content=body, headers=headers)
    assert response.status_code == 200 and response.json()["photos"][0]["photo"] == "me.jpg"


def test_a_client_that_disconnects_mid_body_is_one_debug_line(client, caplog, logged):
    before = by_status(client).get("499", 0)
    with raw_connection(client) as gone:
        gone.sendall(b"POST /query HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + SELFIE[:1000])
        wait_until(lambda: client.get("/stats").json()["bodies"]["receiving"] == 1, what="the body to be awaited")
    wait_until(lambda: by_status(client).get("499", 0) == before + 1, what="the disconnect to be counted")
    lines = [r for r in caplog.records if r.name.startswith(("lookalike_cli", "uvicorn.error"))]
    assert len(lines) == 1 and lines[0].levelno == logging.DEBUG and "went away" in lines[0].getMessage()
    assert lines[0].exc_info is None and logged() == []


def test_errors_outside_query_are_json_too(client):
    assert client.get("/nowhere").json() == {"error": "Not Found"}
    total = client.get("/stats").json()["requests"]["total"]
    response = client.get("/query")
    assert response.status_code == 405 and response.json() == {"error": "Method Not Allowed"}
    assert client.get("/stats").json()["requests"]["total"] == total  # asked for nothing: no answer counted


def test_every_answer_says_nosniff(client):
    """A browser never takes a JSON answer (a stranger's text in an error) for a page."""
    for response in (client.get("/nowhere"), client.post("/query", content=b"<html>not a photo</html>"),
                     client.get("/stats"), client.get("/healthz"), client.get("/")):
        assert response.headers.get_list("x-content-type-options") == ["nosniff"], response.url


def test_stats_show_the_limits_in_force(client):
    assert client.get("/stats").json()["limits"] == {
        "max_connections": 12, "max_client_connections": 16, "max_client_photos": 1000, "header_timeout_s": 2.0,
        "body_timeout_s": 2.0, "max_body_bytes": 2_000_000, "max_body_chunks": 1000, "queue_size": 2, "request_timeout_s": 30.0,
        "large_photo_pixels": 16_000_000,
        "image_formats": ["JPEG", "PNG", "WEBP", "GIF", "BMP"], "max_image_pixels": 40_000_000,
        "max_decoded_bytes": 200_000_000, "max_jpeg_scans": 100, "max_jpeg_scan_pixels": 1_000_000_000,
        "decode_timeout_s": 10.0, "max_faces": 10}

"""``lookalike serve``: the HTTP API (Starlette on uvicorn) over the recognition pool.

``POST /query`` takes a photo as the raw body or as a multipart file (kept in memory: an upload is never
written to disk) and answers the JSON of ``query --json``, each match with the ``photo_url`` of its person instead
of a path (``?format=png``: the picture of ``query --out``). ``GET /healthz`` says it is up, ``GET /stats`` gives
the gallery, the queue and the request counts and latencies. A full queue answers 503 with Retry-After, a body
over the size limit 413, something that is not an image 400, a photo not answered in time 504. ``GET /`` is the
web page and ``GET /people/<alias>/photo`` a person's photo (``webpage.py``).
"""

from __future__ import annotations

import logging
import math
import signal
import socket
import threading
import time
from collections import Counter, deque
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Callable, Sequence

from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .config import Config
from .errors import LookalikeError
from .recognizer import Busy, RecognitionFailed, RecognitionTimeout, Recognizer, rejection_reason
from .webpage import page_routes, photo_url

log = logging.getLogger(__name__)

LATENCY_WINDOW = 10_000  # latencies kept for the percentiles of /stats


def latency_percentiles(seconds: Sequence[float], percents: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    """Nearest-rank percentiles of latencies in seconds, as milliseconds: {"p50": ..., "p99": ...}."""
    ordered = sorted(seconds)
    if not ordered:
        return {}
    return {f"p{p:g}": round(1000 * ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)], 1) for p in percents}


class RequestStats:
    """Counts of /query answers by status, and the latencies of the answered ones."""

    def __init__(self):
        self.started = time.monotonic()
        self.statuses: Counter[int] = Counter()
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def record(self, status: int, seconds: float) -> None:
        self.statuses[status] += 1
        if status == 200:
            self.latencies.append(seconds)

    def retry_after(self, waiting: int, workers: int) -> int:
        """Seconds after which a rejected client may try again: the queue ahead of it, at the median latency."""
        median = latency_percentiles(self.latencies, (50,)).get("p50", 1000.0) / 1000
        return max(1, math.ceil(median * (waiting + 1) / workers))

    def to_json(self) -> dict:
        return {"uptime_s": round(time.monotonic() - self.started, 1), "total": sum(self.statuses.values()),
                "by_status": {str(code): count for code, count in sorted(self.statuses.items())},
                "latency_ms": latency_percentiles(self.latencies)}


class BodyTooLarge(Exception):
    pass


class BadRequest(Exception):
    pass


def limited_receive(receive, limit: int):
    """An ASGI receive that raises BodyTooLarge once more than ``limit`` body bytes have arrived."""
    seen = 0

    async def wrapped():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge()
        return message
    return wrapped


@asynccontextmanager
async def form_in_memory(request: Request, limit: int) -> AsyncIterator[FormData]:
    """The request's multipart form (one file, a few fields), held in memory: Starlette writes a file part over
    its spool size (1 MB) to a temporary file, so the spool size is the body limit and an upload never touches
    the disk."""
    parser = MultiPartParser(request.headers, request.stream(), max_files=1, max_fields=20)
    parser.spool_max_size = limit
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadRequest(f"a broken multipart form: {exc.message}") from None
    try:
        yield form
    finally:
        await form.close()


async def read_photo(request: Request, limit: int) -> tuple[bytes, str]:
    """The photo's bytes and name, from a raw body or the first file of a multipart form."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise BodyTooLarge()
    limited = Request(request.scope, limited_receive(request.receive, limit))
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with form_in_memory(limited, limit) as form:
            files = [value for value in form.values() if isinstance(value, UploadFile)]
            if not files:
                raise BadRequest("the multipart form has no file: send the photo as a file field")
            return await files[0].read(), files[0].filename or "upload"
    return await limited.body(), "upload"


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(recognizer: Recognizer, config: Config) -> Starlette:
    """The API over a started recognizer."""
    stats = RequestStats()
    limit = config.serve.max_body_bytes

    async def answer(request: Request) -> Response:
        output = request.query_params.get("format", "json")
        if output not in ("json", "png"):
            return error(400, f"format must be json or png, not {output!r}")
        try:
            data, name = await read_photo(request, limit)
        except BodyTooLarge:
            return error(413, f"the photo is over the limit of {limit} bytes")
        except BadRequest as exc:
            return error(400, str(exc))
        if not data:
            return error(400, "send a photo as the request body, or as a multipart file")
        try:
            result, picture = await recognizer.recognize(data, name, picture=output == "png")
        except Busy:
            retry = stats.retry_after(recognizer.queue_depth, recognizer.workers)
            return error(503, "busy: every worker is taken and the queue is full, try again later",
                         {"Retry-After": str(retry)})
        except RecognitionTimeout:
            return error(504, f"the photo was not answered within {recognizer.timeout:g} s")
        except RecognitionFailed:
            return error(500, "a recognition worker failed on this photo")
        reason = rejection_reason(result)
        if reason == "too_large":
            return error(413, f"the image is too large: {result.error}")
        if reason:
            return error(400, f"not a usable image: {result.error}")
        if output == "png":
            if picture is None:
                return JSONResponse({"error": "no face found in the photo",
                                     "photos": [result.to_json(photo_url)]}, status_code=422)
            return Response(picture, media_type="image/png")
        return JSONResponse({"photos": [result.to_json(photo_url)]})

    async def query(request: Request) -> Response:
        started = time.perf_counter()
        response = await answer(request)
        stats.record(response.status_code, time.perf_counter() - started)
        return response

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def show_stats(request: Request) -> Response:
        return JSONResponse({
            "index": {key: recognizer.gallery[key] for key in ("backend", "size", "people")},
            "calibration": recognizer.gallery["calibration"],
            "workers": recognizer.workers,
            "queue": {"depth": recognizer.queue_depth, "in_work": recognizer.pending - recognizer.queue_depth,
                      "size": config.serve.queue_size},
            "requests": stats.to_json()})

    return Starlette(routes=[Route("/query", query, methods=["POST"]), Route("/healthz", healthz),
                             Route("/stats", show_stats), *page_routes(recognizer.data_dir, config)])


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: any free port); a one-line error when the address is taken."""
    try:
        return socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        raise LookalikeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def http_server(app: Starlette) -> "uvicorn.Server":
    """A uvicorn server for ``app`` that logs through the ``logging`` set up by the CLI."""
    import uvicorn

    verbose = logging.getLogger().getEffectiveLevel() <= logging.INFO
    return uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=verbose, timeout_graceful_shutdown=5))


def stop_on_terminate(signum, frame) -> None:
    """SIGTERM ends ``serve`` like Ctrl-C: the pool's workers are stopped too."""
    raise KeyboardInterrupt


def serve(data_dir: str | Path, config: Config, on_ready: Callable[[str], None] = print) -> None:
    """Run the API on ``config.serve.host:port`` until interrupted; ``on_ready`` gets its URL."""
    recognizer = Recognizer(data_dir, config)
    sock = listen(config.serve.host, config.serve.port)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop_on_terminate)  # uvicorn re-raises it after its graceful shutdown
    try:
        recognizer.start()
        host, port = sock.getsockname()[:2]
        on_ready(f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}")
        http_server(create_app(recognizer, config)).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn has shut down gracefully, then re-raises Ctrl-C or SIGTERM
        pass
    finally:
        recognizer.close()
        sock.close()

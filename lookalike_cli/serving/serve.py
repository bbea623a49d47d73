"""``lookalike serve``: the HTTP API (Starlette on uvicorn) over the recognition pool.

``POST /query`` takes a photo as the raw body or as a multipart file and answers the JSON of ``query --json``
(``?format=png``: the picture of ``query --out``; ``?picture=1``: the JSON with that picture as a data URL).
``GET /healthz`` says it is up, ``GET /stats`` gives the gallery, the queue, the limits in force and the request
counts and latencies. Every error is JSON, ``{"error": "..."}``, and counted in /stats by status: a full queue
answers 503 with Retry-After (before any byte of the body is read), a body over the size limit 413, a body not
sent in time 408, something that is not an image 400 (415: an image format not accepted), a photo not answered
in time 504. The rest of a refused body is read and dropped before the connection closes (``drop_rest_of_body``).

Every request is bounded: connections (``max_connections``), the time to send headers (``header_timeout``) and
a body (``body_timeout``), the body's bytes and, when chunked, its chunks. A body is read only while the
recognizer has a free place (checked from the headers), and the bytes of all bodies held at once are at most its
places times ``max_body_bytes`` (``BodyBytes``: slow bodies hold what they sent, not a place). The limits on
connections and headers are kept by the HTTP protocol itself (``guarded_protocol``), before the app sees a
request.

``POST /query`` answers each match with the ``photo_url`` of its person instead of a path, and a multipart
upload is kept in memory (never written to disk). ``GET /`` is the web page and ``GET /people/<alias>/photo`` a
person's photo (``webpage.py``). ``GET /metrics`` gives the counts for Prometheus; every /query answer counted in
/stats is also recorded by the monitor (``monitor.py``: the metrics, and the answer log).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import signal
import socket
import threading
import time
from collections import Counter, deque
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path
from typing import AsyncIterator, Callable, Sequence

from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..config import Config, ServeConfig
from ..errors import LookalikeError
from ..imaging.images import MAX_JPEG_SCAN_PIXELS, MAX_JPEG_SCANS
from ..answers.monitor import Monitor, http_status
from ..answers.query import PhotoResult
from ..answers.recognizer import Busy, RecognitionFailed, RecognitionTimeout, Recognizer
from .webpage import page_routes, photo_url

log = logging.getLogger(__name__)

LATENCY_WINDOW = 10_000  # latencies kept for the percentiles of /stats
CLIENT_GONE = 499  # counted for a client that disconnected before its answer (nginx's code)
REFUSED = "lookalike.refused"  # scope key: the status the protocol answered for a request left without a body
LINGER = 2.0  # seconds a refused connection is read (and dropped) before it is closed
BODY_READ = "lookalike.body"  # scope key: how much of the body the app has read, "started" or "ended"
DROP_FACTOR = 4  # the rest of a refused body is read and dropped up to this many times the body limit
DROP_SECONDS = 5.0  # and for this long at most
REJECTION_STATUS = {"too_large": 413, "unsupported_format": 415}  # other ImageReasons: 400


def latency_percentiles(seconds: Sequence[float], percents: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    """Nearest-rank percentiles of latencies in seconds, as milliseconds: {"p50": ..., "p99": ...}."""
    ordered = sorted(seconds)
    if not ordered:
        return {}
    return {f"p{p:g}": round(1000 * ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)], 1) for p in percents}


class RequestStats:
    """Counts of /query answers by status (refusals by the protocol included), and the latencies of the
    answered ones; each answer is also recorded by the ``monitor``, if any."""

    def __init__(self, monitor: Monitor | None = None):
        self.started = time.monotonic()
        self.statuses: Counter[int] = Counter()
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.monitor = monitor

    def record(self, status: int, seconds: float = 0.0, result: PhotoResult | None = None,
               client: str | None = None) -> None:
        """Count an answer: its HTTP status, seconds, the worker's result (if one answered) and the client."""
        self.statuses[status] += 1
        if status == 200:
            self.latencies.append(seconds)
        if self.monitor is not None:
            self.monitor.answered(http_status(status, result), seconds, result, client=client, code=status)

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


class BodyBytes:
    """The bytes of request bodies held at once, across all requests, kept under ``limit``: each message of a body
    is charged as it arrives (Busy when it would go over), and a request's bytes are given back when it is
    answered. Slow bodies hold only what they have sent, and no place of the recognizer."""

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0
        self.receiving = 0  # requests whose body is arriving

    @contextlib.asynccontextmanager
    async def reading(self, request: Request, max_body: int) -> AsyncIterator[Request]:
        """``request`` with a receive that charges its body here, and raises BodyTooLarge past ``max_body``
        bytes; its bytes are given back on exit."""
        charged = 0

        async def receive():
            nonlocal charged
            message = await request.receive()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                if charged + size > max_body:
                    raise BodyTooLarge()
                if self.held + size > self.limit:
                    raise Busy("the server holds as many photo bytes as it may")
                charged += size
                self.held += size
            return message

        try:
            yield Request(request.scope, receive)
        finally:
            self.held -= charged


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


async def read_photo(limited: Request, limit: int) -> tuple[bytes, str]:
    """The photo's bytes and name, from a raw body or the first file of a multipart form (content types in any
    letter case), of at most ``limit`` bytes; BadRequest for a broken form."""
    if limited.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        async with form_in_memory(limited, limit) as form:
            files = [value for value in form.values() if isinstance(value, UploadFile)]
            if not files:
                raise BadRequest("the multipart form has no file: send the photo as a file field")
            return await files[0].read(), files[0].filename or "upload"
    return await limited.body(), "upload"


def noting_body_read(request: Request) -> Request:
    """``request`` with a receive that notes in its scope (BODY_READ) how much of the body has been read."""
    async def receive():
        message = await request.receive()
        ended = message["type"] != "http.request" or not message.get("more_body", False)
        request.scope[BODY_READ] = "ended" if ended else "started"
        return message
    return Request(request.scope, receive)


async def drop_rest_of_body(request: Request, max_bytes: int, seconds: float) -> None:
    """Read and drop what is left of the body of ``request`` (made by ``noting_body_read``), at most ``max_bytes``
    for at most ``seconds``, so that an answer sent before the body was read reaches the client: a connection
    closed with bytes unread is reset, and the client can lose the answer. A body declared larger, and one not
    yet sent by a client waiting for "100 Continue", are left unread."""
    read = request.scope.get(BODY_READ)
    length = request.headers.get("content-length", "")
    if read == "ended" or (length.isdigit() and int(length) > max_bytes) or \
            (read is None and request.headers.get("expect", "").lower() == "100-continue"):
        return
    dropped = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while dropped <= max_bytes:
                message = await request.receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
                dropped += len(message.get("body", b""))


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """An error answer; the connection is closed after it."""
    return JSONResponse({"error": message}, status_code=status, headers={"connection": "close", **(headers or {})})


def limits_in_force(config: Config) -> dict:
    """The bounds every request meets, as /stats shows them."""
    serve, image = config.serve, config.image
    return {"max_connections": serve.max_connections, "header_timeout_s": serve.header_timeout,
            "body_timeout_s": serve.body_timeout, "max_body_bytes": serve.max_body_bytes,
            "max_body_chunks": serve.max_body_chunks, "queue_size": serve.queue_size,
            "request_timeout_s": serve.request_timeout, "large_photo_pixels": serve.large_photo_pixels,
            "image_formats": image.image_formats.split(),
            "max_image_pixels": image.max_image_pixels, "max_decoded_bytes": image.max_decoded_bytes,
            "max_jpeg_scans": MAX_JPEG_SCANS, "max_jpeg_scan_pixels": MAX_JPEG_SCAN_PIXELS,
            "decode_timeout_s": image.decode_timeout,
            "max_faces": config.query.max_faces}


def create_app(recognizer: Recognizer, config: Config) -> Counted:
    """The API over a started recognizer; its request counts are ``.stats``."""
    monitor = Monitor(config, "http", recognizer)
    stats = RequestStats(monitor)
    serving = config.serve
    limit = serving.max_body_bytes
    bodies = BodyBytes(recognizer.capacity * limit)

    async def answer(request: Request) -> Response:
        output = request.query_params.get("format", "json")
        if output not in ("json", "png"):
            return error(400, f"format must be json or png, not {output!r}")
        picture_param = request.query_params.get("picture", "0")
        if picture_param not in ("0", "1"):
            return error(400, f"picture must be 0 or 1, not {picture_param!r}")
        with_picture = picture_param == "1"
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return error(413, f"the photo is over the limit of {limit} bytes")
        try:
            if recognizer.pending >= recognizer.capacity:  # from the headers: no byte of the body is read
                raise Busy()
            async with bodies.reading(request, limit) as limited:
                bodies.receiving += 1
                try:
                    async with asyncio.timeout(serving.body_timeout):
                        data, name = await read_photo(limited, limit)
                finally:
                    bodies.receiving -= 1
                if not data:
                    return error(400, "send a photo as the request body, or as a multipart file")
                result, picture = await recognizer.recognize(data, name, picture=with_picture or output == "png")
        except Busy as exc:
            retry = stats.retry_after(recognizer.queue_depth, recognizer.workers)
            why = str(exc) or "every worker is taken and the queue is full"
            return error(503, f"busy: {why}, try again later", {"Retry-After": str(retry)})
        except TimeoutError:
            return error(408, f"the photo did not arrive within {serving.body_timeout:g} s")
        except BodyTooLarge:
            return error(413, f"the photo is over the limit of {limit} bytes")
        except BadRequest as exc:
            return error(400, str(exc))
        except RecognitionTimeout:
            return error(504, f"the photo was not answered within {recognizer.timeout:g} s")
        except RecognitionFailed as exc:
            return error(500, f"a recognition worker failed on this photo ({exc})")
        request.state.result = result  # for the monitor (Counted)
        if result.reason:
            status = REJECTION_STATUS.get(result.reason, 400)
            what = "the image is too large" if status == 413 else "not a usable image"
            return JSONResponse({"error": f"{what}: {result.error}", "reason": result.reason}, status_code=status)
        if output == "png":
            if picture is None:
                return JSONResponse({"error": "no face found in the photo",
                                     "photos": [result.to_json(photo_url)]}, status_code=422)
            return Response(picture, media_type="image/png")
        answered = {"photos": [result.to_json(photo_url)]}
        if with_picture:
            answered["picture"] = picture and f"data:image/png;base64,{base64.b64encode(picture).decode()}"
        return JSONResponse(answered)

    async def query(request: Request) -> Response:
        request = noting_body_read(request)
        try:
            response = await answer(request)
            if response.status_code != 408:  # a body too slow to arrive is not waited for again
                await drop_rest_of_body(request, DROP_FACTOR * limit, DROP_SECONDS)
            return response
        except ClientDisconnect:
            status = request.scope.get(REFUSED, CLIENT_GONE)
            log.debug("client %s went away before its photo was read (%s)", request.client, status)
            return Response(status_code=status)  # not sent: there is no one to send it to; counted

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def show_stats(request: Request) -> Response:
        gallery = recognizer.gallery
        return JSONResponse({
            "generation": gallery["generation"],
            "index": {key: gallery[key] for key in ("backend", "size", "people")},
            "calibration": gallery["calibration"],
            "workers": recognizer.workers, "workers_replaced": recognizer.workers_replaced,
            "queue": {"depth": recognizer.queue_depth, "in_work": recognizer.in_work, "size": serving.queue_size},
            "bodies": {"receiving": bodies.receiving, "bytes_held": bodies.held, "bytes_limit": bodies.limit},
            "limits": limits_in_force(config),
            "requests": stats.to_json()})

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error(exc.status_code, exc.detail)

    async def metrics(request: Request) -> Response:
        text, content_type = monitor.exposition()
        return Response(text, media_type=content_type)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        monitor.close()  # the answer log's last lines

    routes = [Route("/query", query, methods=["POST"]), Route("/healthz", healthz), Route("/stats", show_stats),
              *page_routes(recognizer, config)]
    if monitor.registry is not None:
        routes.append(Route("/metrics", metrics))
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    return Counted(app, stats)


class Counted:
    """An ASGI app that counts every /query answer of ``app`` in ``stats`` by status, with its latency, the
    worker's result (``request.state.result``) and the client's address."""

    def __init__(self, app: Starlette, stats: RequestStats):
        self.app = app
        self.stats = stats

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/query":
            return await self.app(scope, receive, send)
        started = time.perf_counter()

        async def send_counted(message):
            if message["type"] == "http.response.start":
                client = scope.get("client")
                self.stats.record(message["status"], time.perf_counter() - started,
                                  scope.get("state", {}).get("result"), client[0] if client else None)
            await send(message)
        return await self.app(scope, receive, send_counted)


def raw_response(status: int, message: str, headers: Sequence[str] = ()) -> bytes:
    """An HTTP/1.1 error answer as bytes (for the protocol, which answers before a request is parsed)."""
    body = json.dumps({"error": message}).encode()
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "content-type: application/json",
            f"content-length: {len(body)}", "connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class ClientWarningsAsDebug(logging.LoggerAdapter):
    """uvicorn's logger for a connection. What it warns of is a client's doing (a request h11 cannot parse, an
    upgrade this server does not offer), answered and counted: a debug line, so that strangers cannot fill the
    log with them."""

    @property
    def level(self) -> int:  # uvicorn reads it to decide on its trace lines
        return self.logger.level

    def warning(self, msg, *args, **kwargs) -> None:
        self.debug(msg, *args, **kwargs)


def guarded_protocol(limits: ServeConfig, stats: RequestStats) -> type:
    """uvicorn's h11 protocol, keeping the limits a request meets before the app: a connection over
    ``max_connections`` is answered 503 and closed, headers not complete within ``header_timeout`` 408, a
    chunked body in more than ``max_body_chunks`` chunks 400, a request h11 cannot parse 400: always JSON,
    counted in ``stats``."""
    import h11
    from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class ChunkCounting(h11.Connection):
        refusal = ""
        chunks = 0

        def next_event(self):
            event = super().next_event()
            if isinstance(event, h11.Request):
                self.chunks = 0
            elif isinstance(event, h11.Data) and event.chunk_start:
                self.chunks += 1
                if self.chunks > limits.max_body_chunks:
                    self.refusal = f"the body came in more than {limits.max_body_chunks} chunks"
                    raise h11.RemoteProtocolError(self.refusal)
            return event

    class GuardedProtocol(H11Protocol):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.logger = ClientWarningsAsDebug(self.logger, {})
            self.conn = ChunkCounting(h11.SERVER, self.config.h11_max_incomplete_event_size
                                      or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE)
            self.head_timer: asyncio.TimerHandle | None = None
            self.refused = False

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                self.refuse(503, f"over {limits.max_connections} connections are open: try again later",
                            ["retry-after: 1"])
            else:
                self.await_head()

        def await_head(self) -> None:
            self.stop_head_timer()
            self.head_timer = self.loop.call_later(limits.header_timeout, self.head_overdue)

        def stop_head_timer(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def head_overdue(self) -> None:
            self.head_timer = None
            if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:  # a request begun, not ended
                self.refuse(408, f"the request's headers did not arrive within {limits.header_timeout:g} s")
            elif self.conn.their_state is h11.IDLE or self.conn.our_state is h11.DONE:
                self.transport.close()  # an idle connection, or an answered one whose body still trickles in

        def data_received(self, data: bytes) -> None:
            if self.refused:
                return  # what a refused client still sends is read and dropped (see refuse)
            super().data_received(data)
            # a request has begun: the body timeout (where the app reads the body) takes over, until it is answered;
            # the body of an answered request (a route that reads none) gets no more time than headers do
            if self.head_timer is not None and self.conn.their_state is not h11.IDLE \
                    and self.conn.our_state is not h11.DONE:
                self.stop_head_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self.await_head()

        def connection_lost(self, exc) -> None:
            self.stop_head_timer()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            self.refuse(400, self.conn.refusal or "not a valid HTTP request")

        def refuse(self, status: int, message: str, headers: Sequence[str] = ()) -> None:
            """Answer ``status`` (unless an answer is under way) and end the connection: stop sending, drop what
            the client still sends, and close once it stops or after LINGER seconds (closing at once, with its
            bytes unread, would reset the connection, and the client could lose the answer)."""
            if self.refused or self.transport.is_closing():
                return
            self.refused = True
            self.stop_head_timer()
            if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                self.transport.write(raw_response(status, message, headers))
            if self.cycle is not None and not self.cycle.response_complete:
                self.scope[REFUSED] = status  # the app, left without the rest of the body, counts the request
                self.cycle.disconnected = True
                self.cycle.message_event.set()
            else:
                stats.record(status)
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER, self.transport.close)

    return GuardedProtocol


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: any free port); a one-line error when the address is taken."""
    try:
        return socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        raise LookalikeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def http_server(app: Counted, config: Config) -> "uvicorn.Server":
    """A uvicorn server for an app of ``create_app`` that keeps the request limits of ``config.serve`` and logs
    through the ``logging`` set up by the CLI. It speaks HTTP only: a WebSocket upgrade is answered as the plain
    request it also is."""
    import uvicorn

    verbose = logging.getLogger().getEffectiveLevel() <= logging.INFO
    return uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=verbose, timeout_graceful_shutdown=5,
                                         ws="none", http=guarded_protocol(config.serve, app.stats)))


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
        recognizer.watch(config.serve.reload_seconds)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, recognizer.check_now)
        host, port = sock.getsockname()[:2]
        on_ready(f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}")
        http_server(create_app(recognizer, config), config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn has shut down gracefully, then re-raises Ctrl-C or SIGTERM
        pass
    finally:
        recognizer.close()
        sock.close()

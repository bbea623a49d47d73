"""``lookalike serve``: the HTTP API (Starlette, behind the HTTP guard of ``http.py``) over the recognition pool.

``POST /query`` takes a photo as the raw body or as a multipart file and answers the JSON of ``query --json``
(``?format=png``: the picture of ``query --out``; ``?picture=1``: the JSON with that picture as a data URL).
``GET /healthz`` says it is up, ``GET /stats`` gives the gallery, the queue, the limits in force and the request
counts and latencies; ``GET /openapi.json`` describes it all (``openapi.json``, kept by hand and checked by a
schemathesis run in the tests). Every error is JSON, ``{"error": "..."}``, and counted in /stats by status: a full queue
answers 503 with Retry-After (before any byte of the body is read), a body over the size limit 413, a body not
sent in time 408, something that is not an image 400 (415: an image format not accepted), a photo not answered
in time 504. The rest of a refused body is read and dropped before the connection closes (``drop_rest_of_body``).

Every request is bounded: connections, the time to send headers and, when chunked, a body's chunks by the HTTP
guard (``http.py``); the time to send a body (``body_timeout``) and its bytes here. A body is read only while the
recognizer has a free place (checked from the headers), and the bytes of all bodies held at once are at most its
places times ``max_body_bytes`` (``BodyBytes``: slow bodies hold what they sent, not a place). Each error's
JSON says its ``status`` (``outcomes.py``).

``POST /query`` answers each match with the ``photo_url`` of its person instead of a path, and a multipart
upload is kept in memory (never written to disk). ``GET /`` is the web page and ``GET /people/<alias>/photo`` a
person's photo (``webpage.py``). ``GET /metrics`` gives the counts for Prometheus; every /query answer counted in
/stats is also recorded by the monitor (``answers/monitor.py``: the metrics, and the answer log).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..answers.monitor import Monitor
from ..answers.outcomes import OUTCOMES, http_status, rejection
from ..answers.recognizer import Busy, RecognitionFailed, RecognitionTimeout, Recognizer
from ..answers.results import PhotoResult
from ..config import Config
from ..files import OverLimit
from ..imaging.decode import MAX_JPEG_SCAN_PIXELS, MAX_JPEG_SCANS
from ..language import known_language
from .fairness import PhotosPerClient, TooMany
from .http import CLIENT_GONE, REFUSED, Counted, RequestStats, error, http_server, listen
from .languages import local_names
from .lifecycle import interrupt_on_terminate, serving_recognizer
from .webpage import PeoplePhotos, page_routes, photo_url

log = logging.getLogger(__name__)

BODY_READ = "lookalike.body"  # scope key: how much of the body the app has read, "started" or "ended"
DROP_FACTOR = 4  # the rest of a refused body is read and dropped up to this many times the body limit
DROP_SECONDS = 5.0  # and for this long at most
OPENAPI = (resources.files(__package__) / "openapi.json").read_bytes()  # the API, described (GET /openapi.json)


def refusal(status: str, message: str, headers: dict | None = None) -> JSONResponse:
    """The error answer of an outcome (``outcomes.OUTCOMES``) with no result: its HTTP code, and its status."""
    return error(OUTCOMES[status].http, message, headers, status=status)


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
        """``request`` with a receive that charges its body here, and raises OverLimit past ``max_body`` bytes;
        its bytes are given back on exit."""
        charged = 0

        async def receive():
            nonlocal charged
            message = await request.receive()
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                if charged + size > max_body:
                    raise OverLimit(max_body)
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


def limits_in_force(config: Config) -> dict:
    """The bounds every request meets, as /stats shows them."""
    serve, image = config.serve, config.image
    return {"max_connections": serve.max_connections, "max_client_connections": serve.max_client_connections,
            "max_client_photos": serve.max_client_photos,
            "header_timeout_s": serve.header_timeout,
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

    def record(code: int, seconds: float, result: PhotoResult | None, client: str | None) -> None:
        monitor.answered(http_status(code, result), seconds, result, client=client, code=code)

    stats = RequestStats(record)
    serving = config.serve
    limit = serving.max_body_bytes
    bodies = BodyBytes(recognizer.capacity * limit)
    photos = PhotosPerClient(serving.max_client_photos)  # per client address

    async def answer(request: Request) -> Response:
        output = request.query_params.get("format", "json")
        if output not in ("json", "png"):
            return refusal("bad_request", f"format must be json or png, not {output!r}")
        picture_param = request.query_params.get("picture", "0")
        if picture_param not in ("0", "1"):
            return refusal("bad_request", f"picture must be 0 or 1, not {picture_param!r}")
        with_picture = picture_param == "1"
        language = known_language(request.query_params.get("language")) or serving.language  # names, picture
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            return refusal("too_big", f"the photo is over the limit of {limit} bytes")
        try:
            if recognizer.pending >= recognizer.capacity:  # from the headers: no byte of the body is read
                raise Busy()
            client = request.client.host if request.client else ""
            with photos.holding(client):
                async with bodies.reading(request, limit) as limited:
                    bodies.receiving += 1
                    try:
                        async with asyncio.timeout(serving.body_timeout):
                            data, name = await read_photo(limited, limit)
                    finally:
                        bodies.receiving -= 1
                    if not data:
                        return refusal("bad_request", "send a photo as the request body, or as a multipart file")
                    result, picture = await recognizer.recognize(data, name, picture=with_picture or output == "png",
                                                                 client=client, language=language)
        except TooMany:
            retry = stats.retry_after(0, 1)
            return refusal("too_many", f"your address has {photos.limit} photos in work already: wait for their "
                                       "answers", {"Retry-After": str(retry)})
        except Busy as exc:
            retry = stats.retry_after(recognizer.queue_depth, recognizer.workers)
            why = str(exc) or "every worker is taken and the queue is full"
            return refusal("busy", f"busy: {why}, try again later", {"Retry-After": str(retry)})
        except TimeoutError:
            return refusal("too_slow", f"the photo did not arrive within {serving.body_timeout:g} s")
        except OverLimit:
            return refusal("too_big", f"the photo is over the limit of {limit} bytes")
        except BadRequest as exc:
            return refusal("bad_request", str(exc))
        except RecognitionTimeout:
            return refusal("timeout", f"the photo was not answered within {recognizer.timeout:g} s")
        except RecognitionFailed as exc:
            return refusal("failed", f"a recognition worker failed on this photo ({exc})")
        request.state.result = result  # for the monitor (Counted)
        if result.reason:
            code = rejection(result.reason)[0]
            what = "the image is too large" if code == 413 else "not a usable image"
            return JSONResponse({"error": f"{what}: {result.error}", "status": "rejected", "reason": result.reason},
                                status_code=code)
        if output == "png":
            if picture is None:
                return JSONResponse({"error": "no face found in the photo",
                                     "photos": [result.to_json(photo_url)]}, status_code=422)
            return Response(picture, media_type="image/png")
        answered = {"photos": [result.named(local_names(recognizer, language)).to_json(photo_url)]}
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
            "nodes": recognizer.nodes(),
            "queue": {"depth": recognizer.queue_depth, "in_work": recognizer.in_work, "size": serving.queue_size},
            "bodies": {"receiving": bodies.receiving, "bytes_held": bodies.held, "bytes_limit": bodies.limit},
            "limits": limits_in_force(config),
            "requests": stats.to_json()})

    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error(exc.status_code, exc.detail)

    async def openapi(request: Request) -> Response:
        return Response(OPENAPI, media_type="application/json")

    async def metrics(request: Request) -> Response:
        text, content_type = monitor.exposition()
        return Response(text, media_type=content_type)

    people = PeoplePhotos(config.image)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        monitor.close()  # the answer log's last lines
        people.close()

    routes = [Route("/query", query, methods=["POST"]), Route("/healthz", healthz), Route("/stats", show_stats),
              Route("/openapi.json", openapi),
              *page_routes(recognizer, config, people)]
    if monitor.registry is not None:
        routes.append(Route("/metrics", metrics))
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan)
    return Counted(app, stats)


def serve(data_dir: str | Path, config: Config, on_ready: Callable[[str], None] = print) -> None:
    """Run the API on ``config.serve.host:port`` until interrupted; ``on_ready`` gets its URL."""
    sock = listen(config.serve.host, config.serve.port)
    with sock, interrupt_on_terminate(), serving_recognizer(data_dir, config) as recognizer:
        host, port = sock.getsockname()[:2]
        on_ready(f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}")
        http_server(create_app(recognizer, config), config).run(sockets=[sock])

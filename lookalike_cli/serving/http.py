"""The HTTP guard: a uvicorn server whose every connection is bounded before an app sees a request.

Connections (``max_connections`` in all and ``max_client_connections`` from one address that is not a trusted
proxy: one more is answered 503 and closed), the time to send a request's headers (``header_timeout``: 408), the chunks of a chunked body
(``max_body_chunks``: 400), a request h11 cannot parse (400): each is refused by the HTTP protocol itself
(``guarded_protocol``), as JSON, and counted. ``serve``'s API
and the bot's webhook and metrics listen behind it.

Why not uvicorn's own limits: ``limit_concurrency`` counts connections and tasks together and refuses only once
a request's headers have arrived (in plain text, uncounted), so idle connections are never refused;
``timeout_keep_alive`` only times the wait between requests, so headers sent a byte at a time hold a connection
for good; nothing bounds a chunked body's chunks. The guard subclasses uvicorn's h11 protocol (and h11's
connection), which is why both are pinned to the tested minor versions in pyproject.toml.

Behind a reverse proxy (``trusted_proxies``), uvicorn's ProxyHeadersMiddleware makes a request from a trusted
address the client its ``X-Forwarded-For`` names; from any other address the header is ignored (uvicorn's default,
trusting 127.0.0.1, would let any local client name itself).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import socket
import time
from collections import Counter, deque
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Callable, Sequence

from starlette.applications import Starlette
from starlette.responses import JSONResponse

from ..config import Config, ServeConfig
from ..errors import LookalikeError

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger(__name__)

LATENCY_WINDOW = 10_000  # latencies kept for the percentiles of /stats
CLIENT_GONE = 499  # counted for a client that disconnected before its answer (nginx's code)
REFUSED = "lookalike.refused"  # scope key: the status the protocol answered for a request left without a body
LINGER = 2.0  # seconds a refused connection is read (and dropped) before it is closed
NOSNIFF = (b"x-content-type-options", b"nosniff")
AnswerRecorder = Callable[[int, float, Any, "str | None"], None]  # (HTTP status, seconds, result, client)


def latency_percentiles(seconds: Sequence[float], percents: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    """Nearest-rank percentiles of latencies in seconds, as milliseconds: {"p50": ..., "p99": ...}."""
    ordered = sorted(seconds)
    if not ordered:
        return {}
    return {f"p{p:g}": round(1000 * ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)], 1) for p in percents}


class RequestStats:
    """Counts of the counted route's answers by status (refusals by the protocol included), and the latencies of
    the answered ones; each answer is also handed to ``on_answer``, if any."""

    def __init__(self, on_answer: AnswerRecorder | None = None):
        self.started = time.monotonic()
        self.statuses: Counter[int] = Counter()
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.on_answer = on_answer

    def record(self, status: int, seconds: float = 0.0, result: Any = None, client: str | None = None) -> None:
        """Count an answer: its HTTP status, seconds, the app's result (``request.state.result``, if it set one)
        and the client's address."""
        self.statuses[status] += 1
        if status == 200:
            self.latencies.append(seconds)
        if self.on_answer is not None:
            self.on_answer(status, seconds, result, client)

    def retry_after(self, waiting: int, workers: int) -> int:
        """Seconds after which a rejected client may try again: the queue ahead of it, at the median latency."""
        median = latency_percentiles(self.latencies, (50,)).get("p50", 1000.0) / 1000
        return max(1, math.ceil(median * (waiting + 1) / workers))

    def to_json(self) -> dict:
        return {"uptime_s": round(time.monotonic() - self.started, 1), "total": sum(self.statuses.values()),
                "by_status": {str(code): count for code, count in sorted(self.statuses.items())},
                "latency_ms": latency_percentiles(self.latencies)}


def error(code: int, message: str, headers: dict | None = None, **fields) -> JSONResponse:
    """An error answer, ``{"error": message, **fields}``; the connection is closed after it."""
    return JSONResponse({"error": message, **fields}, status_code=code,
                        headers={"connection": "close", **(headers or {})})


class Counted:
    """An ASGI app that counts every answer of ``app`` to ``method`` ``path`` in ``stats`` by status, with its
    latency, the app's result (``request.state.result``) and the client's address (a request for another method
    is no answer). Every response says ``X-Content-Type-Options: nosniff``, so that no browser takes a JSON error
    for a page. ``http_server`` serves it."""

    def __init__(self, app: Starlette, stats: RequestStats, path: str = "/query", method: str = "POST"):
        self.app = app
        self.stats = stats
        self.path = path
        self.method = method

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        counted = scope["path"] == self.path and scope["method"] == self.method
        started = time.perf_counter()

        async def send_marked(message):
            if message["type"] == "http.response.start":
                headers = [(name, value) for name, value in message.get("headers", [])
                           if name.lower() != NOSNIFF[0]]
                message = {**message, "headers": [*headers, NOSNIFF]}
                if counted:
                    client = scope.get("client")
                    self.stats.record(message["status"], time.perf_counter() - started,
                                      scope.get("state", {}).get("result"), client[0] if client else None)
            await send(message)
        return await self.app(scope, receive, send_marked)


def raw_response(status: int, message: str, headers: Sequence[str] = ()) -> bytes:
    """An HTTP/1.1 error answer as bytes (for the protocol, which answers before a request is parsed)."""
    body = json.dumps({"error": message}).encode()
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "content-type: application/json",
            f"{NOSNIFF[0].decode()}: {NOSNIFF[1].decode()}",
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


def trusted_networks(limits: ServeConfig) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The networks of ``trusted_proxies`` (a bare address: a network of one)."""
    return [ipaddress.ip_network(word, strict=False) for word in limits.trusted_proxies.split()]


def is_trusted(address: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        host = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(host in network for network in networks)


def guarded_protocol(limits: ServeConfig, stats: RequestStats) -> type:
    """uvicorn's h11 protocol, keeping the limits a request meets before the app: a connection over
    ``max_connections``, or over ``max_client_connections`` from one client address (not a trusted proxy's), is
    answered 503 and closed, headers not complete within ``header_timeout`` 408, a chunked body in more than
    ``max_body_chunks`` chunks 400, a request h11 cannot parse 400: always JSON, counted in ``stats``."""
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

    per_client: Counter[str] = Counter()  # open connections by client address, across this server's connections
    proxies = trusted_networks(limits)

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
            self.address = self.client[0] if self.client else ""
            if is_trusted(self.address, proxies):
                self.address = ""  # a proxy's connections are its clients': counted in all only
            per_client[self.address] += 1
            if len(self.connections) > limits.max_connections:
                self.refuse(503, f"over {limits.max_connections} connections are open: try again later",
                            ["retry-after: 1"])
            elif self.address and per_client[self.address] > limits.max_client_connections:
                self.refuse(503, f"over {limits.max_client_connections} connections are open from your address: "
                                 "use those, or try again later", ["retry-after: 1"])
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
            per_client[self.address] -= 1
            if not per_client[self.address]:
                del per_client[self.address]
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
            self.connections.discard(self)  # lingering, it holds no place of max_connections (its address's, yes)
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


def http_server(app: Counted, config: Config) -> uvicorn.Server:
    """A uvicorn server for a counted app that keeps the request limits of ``config.serve`` and logs
    through the ``logging`` set up by the CLI. It speaks HTTP only: a WebSocket upgrade is answered as the plain
    request it also is."""
    import uvicorn

    verbose = logging.getLogger().getEffectiveLevel() <= logging.INFO
    proxies = [str(network) for network in trusted_networks(config.serve)]
    return uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=verbose, timeout_graceful_shutdown=5,
                                         ws="none", http=guarded_protocol(config.serve, app.stats),
                                         proxy_headers=bool(proxies), forwarded_allow_ips=proxies))

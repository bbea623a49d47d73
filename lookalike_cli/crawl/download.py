"""One URL to verified photo bytes, every problem a manifest status.

A download has one deadline for everything it does: resolving the host name, connecting, TLS, the response
headers and the body (requests' own timeouts are per socket read, so a server dripping a byte a second holds them
open for ever). The deadline is kept by the sockets themselves: every connection the crawl session opens is a
``DeadlineSocket`` (or its TLS twin) whose receives and sends wait only until the deadline of the download running
in the thread. Where a connection is opened, the host name is resolved once, the addresses are checked when the
URL came from a stranger (loopback, private, link-local, multicast, reserved: refused) and the socket connects to
the checked address, so a name that resolves differently a moment later (DNS rebinding) cannot slip through.
Redirects are followed here, a hop at a time, each one a new request through the same checks.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies, requote_uri, select_proxy
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError, ReadTimeoutError
from urllib3.util.ssl_ import create_urllib3_context

from ..config import CrawlConfig
from ..errors import Failure
from ..files import OverLimit, read_capped
from ..imaging.decode import ImageRejected

# Decoded image format -> file extension (never the server's name or content type).
EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
              "TIFF": "tif"}
HEADERS = {
    "User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/120.0 Safari/537.36",
    "Accept-Language": "en-US,en;q=0.8",
}
MAX_REDIRECTS = 10
# Kinds of addresses a URL from a stranger may not reach, in the order they are named.
NON_PUBLIC = ("unspecified", "loopback", "link_local", "multicast", "private", "reserved")

# The download running in this thread: its deadline (time.monotonic()) and whether addresses are checked.
_current = threading.local()


class DownloadFailed(Failure):
    """A URL that gave no usable bytes: the ``reason`` is the manifest's status; the HTTP status, if any."""

    def __init__(self, reason: str, detail: str, http_status: int | None = None):
        super().__init__(reason, detail)
        self.http_status = http_status


@dataclass(frozen=True)
class Attempt:
    """What one download gave: ``status`` ``ok`` with the photo, or the failure and its ``error``."""

    status: str
    seconds: float
    error: str = ""
    http_status: int | None = None
    size: int | None = None
    data: bytes = b""
    extension: str = ""
    width: int | None = None
    height: int | None = None
    sha256: str | None = None


Verify = Callable[[bytes], tuple[str, int, int]]  # bytes -> (Pillow format, width, height), or ImageRejected


def download(session: requests.Session, url: str, limits: CrawlConfig, check_addresses: bool,
             verify: Verify) -> Attempt:
    """Fetch ``url`` within the limits and prove with ``verify`` (``images.ImageVerifier.verify``: decoding under
    a time limit, in a process that is killed when it runs over) that it is a photo worth keeping; never raises
    for the URL's problems. ``check_addresses``: refuse hosts that resolve to non-public addresses (URLs from
    strangers)."""
    started = time.monotonic()
    data, http_status = None, None
    try:
        data = fetch(session, url, limits.download_timeout, limits.max_download_bytes, check_addresses)
        http_status = 200
        extension, width, height = verified_image(data, limits, verify)
    except DownloadFailed as exc:
        return Attempt(exc.reason, time.monotonic() - started, exc.detail, exc.http_status or http_status,
                       None if data is None else len(data))
    return Attempt("ok", time.monotonic() - started, http_status=200, size=len(data), data=data,
                   extension=extension, width=width, height=height, sha256=hashlib.sha256(data).hexdigest())


def verified_image(data: bytes, limits: CrawlConfig, verify: Verify) -> tuple[str, int, int]:
    """(extension, width, height) of downloaded bytes that ``verify`` decodes as an image within the limits; the
    one call that decodes a stranger's bytes. Raises DownloadFailed with the manifest status."""
    if not data:
        raise DownloadFailed("empty", "the response has no body")
    try:
        image_format, width, height = verify(data)
    except ImageRejected as exc:
        raise DownloadFailed("not_image" if exc.reason == "undecodable" else exc.reason, exc.detail) from None
    if min(width, height) < limits.min_download_side:
        raise DownloadFailed("too_small", f"{width}x{height} pixels, the shorter side is under "
                                          f"{limits.min_download_side}")
    if image_format not in EXTENSIONS:
        raise DownloadFailed("unsupported_format", f"{image_format} images are not kept")
    return EXTENSIONS[image_format], width, height


def fetch(session: requests.Session, url: str, timeout: float, max_bytes: int, check_addresses: bool,
          headers: dict | None = None) -> bytes:
    """The body of ``url`` (HTTP 200 after at most MAX_REDIRECTS redirects), received within ``timeout``
    seconds in total and at most ``max_bytes`` long (gzip undone as it comes). Raises DownloadFailed."""
    deadline = time.monotonic() + timeout
    _current.deadline, _current.check_addresses = deadline, check_addresses
    http_status = None
    try:
        for _ in range(MAX_REDIRECTS + 1):
            with session.get(url, timeout=timeout, stream=True, headers=headers, allow_redirects=False) as response:
                http_status = response.status_code
                target = session.get_redirect_target(response)
                if target is None:
                    if response.status_code != 200:
                        raise DownloadFailed("http_error", f"HTTP {response.status_code} {response.reason}",
                                             http_status)
                    body = read_body(response, max_bytes)
                    response.raw.release_conn()  # back to the pool (closing the response would close it)
                    return body
            url = requote_uri(urljoin(url, target))  # the redirect's body is never read: its connection closes
        raise DownloadFailed("too_many_redirects", f"more than {MAX_REDIRECTS} redirects", http_status)
    except DownloadFailed:
        raise
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
        if time.monotonic() >= deadline or isinstance(exc, (requests.Timeout, ReadTimeoutError, TimeoutError)):
            raise DownloadFailed("timeout", f"no complete answer within {timeout:g} s", http_status) from None
        if isinstance(exc, (requests.ConnectionError, urllib3.exceptions.HTTPError, OSError)):
            raise DownloadFailed("connection_error", str(exc), http_status) from None
        raise DownloadFailed("bad_url", str(exc), http_status) from None
    finally:
        _current.deadline, _current.check_addresses = None, False


def read_body(response: requests.Response, max_bytes: int) -> bytes:
    """The body of a streamed response (gzip undone), or DownloadFailed when it is over ``max_bytes``
    (announced or read)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise DownloadFailed("too_large", f"{declared} bytes announced, over the limit of {max_bytes}",
                             response.status_code)
    response.raw.decode_content = True
    try:
        return read_capped(response.raw, max_bytes)
    except OverLimit as exc:
        raise DownloadFailed("too_large", exc.strerror, response.status_code) from None


# --- the session: connections that keep the deadline and check addresses


def time_left() -> float | None:
    """Seconds until the deadline of the download running in this thread (None: no download runs); raises
    TimeoutError once it has passed."""
    deadline = getattr(_current, "deadline", None)
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the download's time ran out")
    return left


class KeepsDeadline:
    """Socket methods that wait at most until the deadline of the download in this thread."""

    def keep_deadline(self) -> None:
        left = time_left()
        if left is not None:
            self.settimeout(left)

    def recv_into(self, *args, **kwargs):
        self.keep_deadline()
        return super().recv_into(*args, **kwargs)

    def recv(self, *args, **kwargs):
        self.keep_deadline()
        return super().recv(*args, **kwargs)

    def sendall(self, *args, **kwargs):
        self.keep_deadline()
        return super().sendall(*args, **kwargs)


class DeadlineSocket(KeepsDeadline, socket.socket):
    pass


class DeadlineSSLSocket(KeepsDeadline, ssl.SSLSocket):
    pass


def non_public_kind(address: str) -> str | None:
    """What makes an IP address one that a URL from a stranger may not reach (``loopback``, ``private``...),
    or None for a public address. IPv4 addresses written as IPv6 (``::ffff:127.0.0.1``) count as IPv4."""
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind in NON_PUBLIC:
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if ip.is_global else "non-global"


@functools.cache
def resolver() -> ThreadPoolExecutor:
    """Threads for name lookups, which the C library cannot stop at a deadline (a stuck lookup keeps its thread
    until the resolver's own timeout)."""
    return ThreadPoolExecutor(16, thread_name_prefix="resolve")


def resolve(host: str, port: int) -> list[tuple]:
    """getaddrinfo's answers for a TCP connection, within the deadline."""
    return resolver().submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM).result(time_left())


def refuse_non_public(host: str, addresses: list[str]) -> None:
    """DownloadFailed ``blocked_address`` if any address of ``host`` is not public."""
    for address in addresses:
        kind = non_public_kind(address)
        if kind:
            raise DownloadFailed("blocked_address", f"{host} is at {address}, a {kind} address "
                                                    "(allow with --allow-private-addresses)")


def checking_addresses() -> bool:
    """Whether the download running in this thread may reach public addresses only."""
    return getattr(_current, "check_addresses", False)


def open_socket(addresses: list[tuple], options, source_address) -> DeadlineSocket:
    """A DeadlineSocket connected to the first of ``addresses`` that answers within the deadline."""
    error: OSError = OSError("no address to connect to")
    for family, kind, proto, _, sockaddr in addresses:
        sock = DeadlineSocket(family, kind, proto)
        try:
            for option in options or ():
                sock.setsockopt(*option)
            if source_address:
                sock.bind(source_address)
            sock.keep_deadline()
            sock.connect(sockaddr)
            sock.keep_deadline()  # the TLS handshake, if any, inherits this timeout
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error


class CheckedConnection:
    """urllib3's connection, opened by ``open_socket``: addresses checked and the socket connected to the
    address that was checked; a connection kept open from an earlier (trusted) request is checked again by
    the address it is connected to. Connections to the user's proxy are not checked."""

    def request(self, *args, **kwargs):
        if self.sock is not None and self.proxy is None and checking_addresses():
            refuse_non_public(self.host, [self.sock.getpeername()[0]])
        return super().request(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        try:
            addresses = resolve(self._dns_host, self.port)
            if self.proxy is None and checking_addresses():
                refuse_non_public(self.host, [sockaddr[0] for *_, sockaddr in addresses])
            return open_socket(addresses, self.socket_options, self.source_address)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"connecting to {self.host} took too long") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc


class CheckedHTTPConnection(CheckedConnection, HTTPConnection):
    pass


class CheckedHTTPSConnection(CheckedConnection, HTTPSConnection):
    pass


class CheckedHTTPPool(HTTPConnectionPool):
    ConnectionCls = CheckedHTTPConnection


class CheckedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = CheckedHTTPSConnection


CHECKED_POOLS = {"http": CheckedHTTPPool, "https": CheckedHTTPSPool}


@functools.cache
def tls_context() -> ssl.SSLContext:
    """urllib3's TLS settings, its sockets keeping the deadline."""
    context = create_urllib3_context()
    context.sslsocket_class = DeadlineSSLSocket
    return context


class CrawlAdapter(HTTPAdapter):
    """requests' adapter over checked connections, without automatic retries."""

    def __init__(self, threads: int):
        super().__init__(pool_connections=threads, pool_maxsize=threads, max_retries=0)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, ssl_context=tls_context(), **kwargs)
        self.poolmanager.pool_classes_by_scheme = CHECKED_POOLS

    def proxy_manager_for(self, proxy: str, **kwargs):
        manager = super().proxy_manager_for(proxy, ssl_context=tls_context(), **kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS proxies keep their own connection classes
            manager.pool_classes_by_scheme = CHECKED_POOLS
        return manager

    def send(self, request, *args, proxies=None, **kwargs):
        if checking_addresses() and select_proxy(request.url, proxies):
            # the proxy connects to the host: check its addresses here (the proxy resolves the name again)
            parts = urlsplit(request.url)
            refuse_non_public(parts.hostname, [sockaddr[0] for *_, sockaddr in resolve(parts.hostname, 0)])
        return super().send(request, *args, proxies=proxies, **kwargs)


class CrawlSession(requests.Session):
    """A session for many threads: checked connections, browser headers, and proxy settings read from the
    environment once per host (requests scans the whole environment on every request)."""

    def __init__(self, threads: int):
        super().__init__()
        self.trust_env = False
        self.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        self.headers.update(HEADERS)
        self.host_proxies: dict[tuple[str, str], dict] = {}
        for prefix in ("http://", "https://"):
            self.mount(prefix, CrawlAdapter(threads))

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        origin = urlsplit(url)[:2]
        if origin not in self.host_proxies:
            self.host_proxies[origin] = get_environ_proxies(url)
        proxies = self.host_proxies[origin] | (proxies or {})
        return super().merge_environment_settings(url, proxies, stream, verify, cert)

"""A local image-search server for the crawl tests and benchmark: Bing and Baidu result pages in the
engines' own formats, real photos, and the bad responses a crawler meets on the web.

It listens on 127.0.0.1 (or another loopback address) only, over HTTP or HTTPS, serves each connection in a
thread with at most ``max_connections`` at once, drops idle connections after a few seconds, and can delay every
response by ``latency`` seconds.

Run alone for the benchmark: ``python tests/crawl_server.py --people 1000 --per-person 5 --latency 0.04``
prints ``READY <url>`` and serves until stdin closes.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import html
import io
import itertools
import json
import ssl
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from PIL import Image

DEMO_IMAGES = Path(__file__).resolve().parent.parent / "data" / "demo" / "images"

# Path -> the status the crawler must record for it.
BAD_STATUSES = {
    "/bad/missing.jpg": "http_error",
    "/bad/error.jpg": "http_error",
    "/bad/slow.jpg": "timeout",
    "/bad/slow-headers.jpg": "timeout",
    "/bad/html.jpg": "not_image",
    "/bad/truncated.jpg": "not_image",
    "/bad/empty.jpg": "empty",
    "/bad/huge.png": "too_large",
    "/bad/big.jpg": "too_large",
    "/bad/loop.jpg": "too_many_redirects",
    "/bad/tiny.jpg": "too_small",
}
# Baidu's URL cipher (the inverse of icrawler's BaiduParser._decode_url).
BAIDU_CHARS = dict(zip("abcdefghijklmnopqrstuvw1234567890", "wkv1ju2it3hs4g5rq6fp7eo8dn9cm0bla"))
BAIDU_TOKENS = {":": "_z2C$q", ".": "_z&e3B", "/": "AzdH3F"}


def baidu_encode(url: str) -> str:
    """An image URL as Baidu's ``objURL`` field hides it."""
    return "".join(BAIDU_TOKENS.get(char) or BAIDU_CHARS.get(char, char) for char in url)


def encoded(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def demo_photo(name: str) -> bytes:
    return (DEMO_IMAGES / f"{name}.jpg").read_bytes()


@functools.cache
def bad_bodies() -> dict[str, bytes]:
    """The bodies of the bad cases that are real (or nearly real) image bytes."""
    face = Image.open(DEMO_IMAGES / "aaron-schock.jpg").convert("RGB")
    jpeg = demo_photo("aaron-schock")
    return {
        "/bad/truncated.jpg": jpeg[: len(jpeg) // 2],
        "/bad/huge.png": encoded(Image.new("L", (7000, 7000)), "PNG"),  # 49 MP, a few kB
        "/bad/big.jpg": encoded(face.resize((face.width * 6, face.height * 6)), "JPEG", quality=98),  # ~380 kB
        "/bad/tiny.jpg": encoded(face.resize((40, 48)), "JPEG"),
        "/bad/slow.jpg": jpeg,
    }


# Hostile search result pages, by kind: what the server sends for a query that ``pages`` maps to the kind.
PAGE_KINDS = ("announced-huge", "endless", "slow-headers")


class CrawlServer:
    """The server; ``results`` maps a search query to its image URLs (paths are on this server),
    ``files`` maps a path to (body, content type), ``pages`` a query to a hostile page kind (PAGE_KINDS).
    ``hits`` counts requests per path, ``authorization`` keeps the last Authorization header per path.
    ``tls``: (certificate file, key file) to serve HTTPS."""

    def __init__(self, results: dict[str, list[str]] | None = None,
                 files: dict[str, tuple[bytes, str]] | None = None, latency: float = 0.0,
                 max_connections: int = 256, drip_seconds: float = 4.0, pages: dict[str, str] | None = None,
                 host: str = "127.0.0.1", tls: tuple[Path, Path] | None = None):
        self.results = results if results is not None else {}
        self.files = files if files is not None else {}
        self.pages = pages if pages is not None else {}
        self.latency = latency
        self.drip_seconds = drip_seconds
        self.bodies = bad_bodies()
        self.hits: Counter[str] = Counter()
        self.authorization: dict[str, str | None] = {}
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(max_connections)
        self.httpd = BoundedServer((host, 0), handler_for(self), self.slots)
        self.scheme = "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="crawl-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"{self.scheme}://{host}:{port}"

    def absolute(self, url: str) -> str:
        return self.url + url if url.startswith("/") else url

    def start(self) -> "CrawlServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def __enter__(self) -> "CrawlServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def count(self, path: str, authorization: str | None) -> None:
        with self.lock:
            self.hits[path] += 1
            self.authorization[path] = authorization

    def bing_page(self, query: dict) -> bytes:
        """A page of Bing's ``images/async`` answer: one ``div.imgpt`` per result, its JSON in ``m``."""
        first = int(query.get("first", ["0"])[0])
        urls = self.results.get(query.get("q", [""])[0], [])[first:first + 35]
        metadata = [json.dumps({"murl": self.absolute(url), "turl": "https://tse.mm.bing.net/th?id=x"},
                               separators=(",", ":")) for url in urls]
        items = "".join(f'<div class="imgpt"><a class="iusc" href="/images/search?view=detailV2" '
                        f'm="{html.escape(m)}"><img src="/th?id={number}"></a></div>'
                        for number, m in enumerate(metadata))
        return f"<html><body><ul>{items}</ul></body></html>".encode()

    def baidu_page(self, query: dict) -> bytes:
        """A page of Baidu's ``acjson`` answer: ``objURL`` ciphered, or only a ``hoverURL``, and an empty
        last item, as Baidu sends them."""
        start = int(query.get("pn", ["0"])[0])
        urls = self.results.get(query.get("word", [""])[0], [])[start:start + 30]
        data = [{"objURL": baidu_encode(self.absolute(url))} if number % 2 == 0
                else {"hoverURL": self.absolute(url)} for number, url in enumerate(urls)]
        return json.dumps({"queryEnc": "", "listNum": len(urls), "data": data + [{}]}).encode()


class BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most as many as ``slots`` allows (further connections wait)."""

    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address, handler, slots: threading.BoundedSemaphore):
        super().__init__(address, handler)
        self.slots = slots

    def process_request(self, request, client_address):
        self.slots.acquire()
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def handler_for(server: CrawlServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 5  # an idle keep-alive connection gives its slot back
        disable_nagle_algorithm = True  # else headers and body wait for a delayed ACK (40 ms)

        def log_message(self, *args) -> None:
            pass

        def send(self, status: int, body: bytes = b"", content_type: str = "image/jpeg", **headers) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def drip_headers(self) -> None:
            """The status line, then the headers a byte every 0.1 s for ``drip_seconds`` (never finished)."""
            self.close_connection = True
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            end = time.monotonic() + server.drip_seconds
            for byte in itertools.cycle(b"X-Drip: a\r\n"):
                if time.monotonic() > end:
                    break
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.1)

        def stream(self, announced: int | None) -> None:
            """Zeros as fast as the client takes them, for ``drip_seconds`` at most; ``announced``: the
            Content-Length sent (None: none, the body ends when the connection does)."""
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            if announced is not None:
                self.send_header("Content-Length", str(announced))
            self.end_headers()
            self.close_connection = True
            end = time.monotonic() + server.drip_seconds
            block = bytes(1 << 16)
            while time.monotonic() < end:
                self.wfile.write(block)

        def hostile_page(self, kind: str) -> None:
            if kind == "announced-huge":
                self.stream(1_500_000_000)
            elif kind == "endless":
                self.stream(None)
            else:
                self.drip_headers()

        def drip(self, body: bytes) -> None:
            """Announce the whole body, then send a byte every 0.1 s for at most ``drip_seconds``."""
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.close_connection = True
            end = time.monotonic() + server.drip_seconds
            for offset in range(len(body)):
                if time.monotonic() > end:
                    break
                self.wfile.write(body[offset:offset + 1])
                self.wfile.flush()
                time.sleep(0.1)

        def unannounced(self, body: bytes) -> None:
            """A body without Content-Length, ended by closing the connection."""
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            self.wfile.write(body)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            server.count(parts.path, self.headers.get("Authorization"))
            if server.latency:
                time.sleep(server.latency)
            try:
                self.answer(parts.path, parse_qs(parts.query))
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                self.close_connection = True

        def answer(self, path: str, query: dict) -> None:
            bodies = server.bodies
            if path == "/images/async" and query.get("q", [""])[0] in server.pages:
                self.hostile_page(server.pages[query["q"][0]])
            elif path == "/images/async":
                self.send(200, server.bing_page(query), "text/html; charset=utf-8")
            elif path == "/search/acjson":
                self.send(200, server.baidu_page(query), "text/plain; charset=utf-8")
            elif path in server.files:
                self.send(200, *server.files[path])
            elif path == "/bad/missing.jpg":
                self.send(404, b"not found", "text/plain")
            elif path == "/bad/error.jpg":
                self.send(500, b"server error", "text/plain")
            elif path == "/bad/slow.jpg":
                self.drip(bodies[path])
            elif path == "/bad/slow-headers.jpg":
                self.drip_headers()
            elif path == "/redirect":
                self.send(302, b"", "text/plain", Location=query["to"][0])
            elif path == "/bad/html.jpg":
                self.send(200, b"<html><body>Sorry, this image was removed</body></html>", "image/jpeg")
            elif path == "/bad/empty.jpg":
                self.send(200, b"")
            elif path == "/bad/big.jpg":
                self.unannounced(bodies[path])
            elif path == "/gzipped.jpg":
                self.send(200, gzip.compress(demo_photo("aaron-schock")), Content_Encoding="gzip")
            elif path == "/bad/loop.jpg":
                self.send(302, b"", "text/plain", Location=path)
            elif path == "/bad/flaky.jpg":
                with server.lock:
                    first = server.hits[path] == 1
                self.send(503, b"busy", "text/plain") if first else self.send(200, demo_photo("jon-tester"))
            elif path in bodies:
                self.send(200, bodies[path], "image/png" if path.endswith(".png") else "image/jpeg")
            else:
                self.send(404, b"not found", "text/plain")

    return Handler


def demo_names() -> list[str]:
    return sorted(path.stem for path in DEMO_IMAGES.glob("*.jpg"))


def synthetic_world(people: int, per_person: int) -> tuple[list[dict], dict[str, list[str]], dict]:
    """A catalog of ``people`` made-up people, each with ``per_person`` + 2 search results among the demo
    photos (distinct within a person), and the files to serve."""
    names = demo_names()
    catalog = [{"name": f"Person {number:05d}", "alias": f"person-{number:05d}"} for number in range(people)]
    results = {entry["name"]: [f"/img/{names[(number + 7 * k) % len(names)]}.jpg" for k in range(per_person + 2)]
               for number, entry in enumerate(catalog)}
    files = {f"/img/{name}.jpg": (demo_photo(name), "image/jpeg") for name in names}
    return catalog, results, files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1000)
    parser.add_argument("--per-person", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every response")
    args = parser.parse_args()
    _, results, files = synthetic_world(args.people, args.per_person)
    with CrawlServer(results, files, latency=args.latency) as server:
        print("READY", server.url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()

"""Stage 0, crawl: download photos of every catalog person into ``DATA/images/<alias>/<sha256>.<ext>``.

Photos come from an image search (icrawler's Bing or Baidu feeder and parser, queried with the person's
name) or from a list of URLs. Many people are crawled at once, one thread per person at a time, each
trying its candidate URLs until it keeps ``per_person`` photos. Every downloaded file is streamed with a
byte cap and a total deadline, decoded to prove it is an image, named by its content hash and written
atomically; every attempt is a row of ``DATA/crawl.parquet``, so a re-run skips people who are complete and
URLs that cannot succeed, and retries the rest.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import logging
import os
import queue
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import quote_plus, urlsplit, urlunsplit

from .artifacts import Checkpoint, DataDir, rows_by_key, write_bytes
from .catalog import alias_problem, load_catalog
from .config import IMAGE_FORMATS, Config, CrawlConfig, ImageConfig
from .errors import LookalikeError
from .images import ImageRejected, verify_image

log = logging.getLogger(__name__)

# Decoded image format -> file extension (never the server's name or content type).
EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
              "TIFF": "tif"}
# Failures that may pass on another try; a re-run tries their URLs again.
RETRY_STATUSES = {"timeout", "connection_error", "search_error"}
RETRY_HTTP = {408, 425, 429, 500, 502, 503, 504}
HEADERS = {
    "User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                  "Chrome/120.0 Safari/537.36",
    "Accept-Language": "en-US,en;q=0.8",
}
MAX_REDIRECTS = 10
READ_SIZE = 1 << 16

Record = Callable[[dict], None]


@dataclass(frozen=True)
class PersonTask:
    """One person to crawl: what to search (or which URLs to try), what is kept already, what to skip."""

    alias: str
    query: str | None
    urls: tuple[str, ...]
    kept: frozenset[str]
    skip: frozenset[str]


@dataclass(frozen=True)
class CrawlSummary:
    people: int
    complete: int
    partial: int
    empty: int
    already_complete: int
    statuses: dict[str, int]


def now() -> str:
    """The time of an attempt, as recorded in the manifest (UTC, ISO 8601)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def rehost(url: str, host: str) -> str:
    """``url`` with its scheme and host replaced by those of ``host`` (``http://127.0.0.1:8000``)."""
    parts, target = urlsplit(url), urlsplit(host)
    return urlunsplit((target.scheme, target.netloc, parts.path, parts.query, parts.fragment))


def is_http_url(url: object) -> bool:
    return isinstance(url, str) and urlsplit(url).scheme in ("http", "https") and bool(urlsplit(url).netloc)


def retryable(row: dict) -> bool:
    """Whether a manifest row's URL is worth trying again on a re-run."""
    return row["status"] in RETRY_STATUSES or (row["status"] == "http_error" and row["http_status"] in RETRY_HTTP)


def manifest_row(alias: str, query: str | None, url: str, status: str, **values) -> dict:
    """A ``crawl`` row; columns not given are null."""
    return {"alias": alias, "query": query, "url": url, "path": None, "sha256": None, "bytes": None,
            "width": None, "height": None, "http_status": None, "status": status, "error": "",
            "seconds": None, "time": now()} | values


def verified_image(data: bytes, limits: CrawlConfig) -> tuple[str, int, int]:
    """(extension, width, height) of downloaded bytes that decode as an image within the limits.

    Raises ImageRejected with the manifest status as reason."""
    if not data:
        raise ImageRejected("empty", "the response has no body")
    try:
        image_format, width, height = verify_image(data, ImageConfig(image_formats=" ".join(IMAGE_FORMATS),
                                                                     max_image_pixels=limits.max_download_pixels))
    except ImageRejected as exc:
        raise ImageRejected("not_image" if exc.reason == "undecodable" else exc.reason, exc.detail) from None
    if min(width, height) < limits.min_download_side:
        raise ImageRejected("too_small", f"{width}x{height} pixels, the shorter side is under "
                                         f"{limits.min_download_side}")
    if image_format not in EXTENSIONS:
        raise ImageRejected("unsupported_format", f"{image_format} images are not kept")
    return EXTENSIONS[image_format], width, height


def read_capped(response, deadline: float, max_bytes: int) -> bytes:
    """The body of a streamed response, or ImageRejected when it is over ``max_bytes`` or arrives after
    ``deadline`` (checked after every read, so a slow drip of bytes cannot pass); gzip is undone as it comes."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ImageRejected("too_large", f"{declared} bytes announced, over the limit of {max_bytes}")
    chunks, size = [], 0
    while chunk := response.raw.read1(READ_SIZE, decode_content=True):
        size += len(chunk)
        if size > max_bytes:
            raise ImageRejected("too_large", f"over the limit of {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise ImageRejected("timeout", f"{size} bytes received when the time ran out")
        chunks.append(chunk)
    return b"".join(chunks)


def make_session(threads: int):
    """An icrawler session with a connection pool for ``threads`` threads and no automatic retries, that
    reads proxy settings from the environment once per host (requests scans it on every request)."""
    from icrawler.utils import ProxyPool, Session
    from requests.adapters import HTTPAdapter
    from requests.utils import get_environ_proxies

    class CrawlSession(Session):
        def __init__(self):
            super().__init__(ProxyPool())
            self.trust_env = False
            self.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
            self.host_proxies: dict[tuple[str, str], dict] = {}

        def merge_environment_settings(self, url, proxies, stream, verify, cert):
            origin = urlsplit(url)[:2]
            if origin not in self.host_proxies:
                self.host_proxies[origin] = get_environ_proxies(url)
            proxies = self.host_proxies[origin] | (proxies or {})
            return super().merge_environment_settings(url, proxies, stream, verify, cert)

    session = CrawlSession()
    session.headers.update(HEADERS)
    session.max_redirects = MAX_REDIRECTS
    for prefix in ("http://", "https://"):
        session.mount(prefix, HTTPAdapter(pool_connections=threads, pool_maxsize=threads, max_retries=0))
    return session


def image_store_class():
    """icrawler's storage interface over ``DATA/images``: atomic writes, ids are ``<alias>/<file>``."""
    from icrawler.storage import BaseStorage

    class ImageStore(BaseStorage):
        def __init__(self, root: Path):
            self.root = root.resolve()

        def path(self, id: str) -> Path:
            alias, _, name = id.partition("/")
            if alias_problem(alias) or alias_problem(name):
                raise LookalikeError(f"image {id!r} would be written outside {self.root}")
            return self.root / alias / name

        def write(self, id: str, data: bytes) -> None:
            write_bytes(self.path(id), data, durable=False)  # synced in bulk before the manifest names it

        def exists(self, id: str) -> bool:
            return self.path(id).exists()

        def max_file_idx(self) -> int:
            return 0

    return ImageStore


def downloader_class():
    """icrawler's Downloader made safe: byte cap, total deadline, full decode, content-hash names, atomic
    writes, and a manifest row for every attempt (icrawler's own keeps no status, size or hash)."""
    import requests
    import urllib3
    from icrawler import Downloader

    class VerifyingDownloader(Downloader):
        def __init__(self, thread_num, signal, session, storage, limits: CrawlConfig, record: Record):
            super().__init__(thread_num, signal, session, storage)
            self.limits = limits
            self.record = record

        def get_filename(self, task: dict, default_ext: str) -> str:
            return f"{task['alias']}/{task['sha256']}.{default_ext}"

        def fetch(self, task: dict, timeout: float) -> bytes:
            deadline = time.monotonic() + timeout
            try:
                with self.session.get(task["file_url"], timeout=timeout, stream=True) as response:
                    task["http_status"] = response.status_code
                    if response.status_code != 200:
                        raise ImageRejected("http_error", f"HTTP {response.status_code} {response.reason}")
                    data = read_capped(response, deadline, self.limits.max_download_bytes)
                    response.raw.release_conn()
                    return data
            except (requests.Timeout, urllib3.exceptions.TimeoutError) as exc:
                raise ImageRejected("timeout", str(exc)) from None
            except requests.TooManyRedirects:
                raise ImageRejected("too_many_redirects", f"more than {MAX_REDIRECTS} redirects") from None
            except (requests.ConnectionError, urllib3.exceptions.HTTPError) as exc:
                raise ImageRejected("connection_error", str(exc)) from None
            except requests.RequestException as exc:
                raise ImageRejected("bad_url", str(exc)) from None

        def download(self, task: dict, default_ext: str = "", timeout: float | None = None, max_retry: int = 1,
                     **kwargs) -> bool:
            """Fetch ``task["file_url"]`` for ``task["alias"]`` once; the task gets the manifest columns.

            ``task["kept"]`` holds the hashes this person keeps: a photo already among them is a duplicate."""
            started = time.monotonic()
            try:
                data = self.fetch(task, timeout or self.limits.download_timeout)
                task["bytes"] = len(data)
                extension, task["width"], task["height"] = verified_image(data, self.limits)
                task["sha256"] = hashlib.sha256(data).hexdigest()
                filename = self.get_filename(task, extension)
                task["path"] = f"images/{filename}"
                if task["sha256"] in task["kept"]:
                    task["status"] = "duplicate"
                else:
                    if not self.storage.exists(filename):
                        self.storage.write(filename, data)
                    task["kept"].add(task["sha256"])
                    task["status"] = "ok"
            except ImageRejected as exc:
                task["status"], task["error"] = exc.reason, exc.detail
            task["seconds"] = time.monotonic() - started
            return task["status"] == "ok"

        def process_meta(self, task: dict) -> None:
            self.record(manifest_row(task["alias"], task["query"], task["file_url"], task["status"],
                                     **{key: task.get(key) for key in ("path", "sha256", "bytes", "width",
                                                                       "height", "http_status", "seconds")},
                                     error=task.get("error", "")))

    return VerifyingDownloader


class Search:
    """Image URLs for a query from icrawler's Bing or Baidu feeder (the result page URLs) and parser."""

    def __init__(self, engine: str, session, config: CrawlConfig):
        from icrawler.builtin.baidu import BaiduFeeder, BaiduParser
        from icrawler.builtin.bing import BingFeeder, BingParser
        from icrawler.utils import Signal

        self.feeder_class = {"bing": BingFeeder, "baidu": BaiduFeeder}[engine]
        self.parser = {"bing": BingParser, "baidu": BaiduParser}[engine](1, Signal(), session)
        self.session = session
        self.config = config

    def pages(self, query: str) -> list[str]:
        """The result page URLs for ``query`` (a fresh feeder each time: its URL queue never forgets)."""
        from icrawler.utils import Signal

        feeder = self.feeder_class(1, Signal(), self.session)
        feeder.out_queue.maxsize = 0  # the feeder blocks once its queue holds 5 pages otherwise
        feeder.feed(keyword=quote_plus(query), offset=0, max_num=self.config.search_results)
        pages = list(feeder.out_queue.queue)
        return [rehost(page, self.config.search_host) for page in pages] if self.config.search_host else pages

    def image_urls(self, alias: str, query: str, record: Record) -> Iterator[str]:
        """Image URLs, a result page at a time; a page that fails is recorded as a ``search_error`` row."""
        for page in self.pages(query):
            started = time.monotonic()
            origin = "{0.scheme}://{0.netloc}".format(urlsplit(page))
            try:
                response = self.session.get(page, timeout=self.config.download_timeout, headers={"Referer": origin})
                if response.status_code != 200:
                    record(manifest_row(alias, query, page, "search_error", http_status=response.status_code,
                                        error=f"HTTP {response.status_code} {response.reason}",
                                        seconds=time.monotonic() - started))
                    return
                urls = [task["file_url"] for task in self.parser.parse(response)]
            except Exception as exc:  # network errors, and parsers that crash on unexpected pages
                record(manifest_row(alias, query, page, "search_error", error=f"{type(exc).__name__}: {exc}",
                                    seconds=time.monotonic() - started))
                return
            log.debug("%s: %d image URLs on %s", alias, len(urls), page)
            if not urls:
                return
            yield from urls


def crawl_person(task: PersonTask, per_person: int, downloader, search: Search | None,
                 stop: threading.Event) -> int:
    """Try a person's candidate URLs, one at a time, until ``per_person`` photos are kept. Returns how many
    are kept."""
    kept = set(task.kept)
    tried = set(task.skip)
    candidates = iter(task.urls) if search is None else search.image_urls(task.alias, task.query, downloader.record)
    for url in candidates:
        if stop.is_set():
            break
        if url in tried:
            continue
        tried.add(url)
        job = {"file_url": url, "alias": task.alias, "query": task.query, "kept": kept}
        downloader.download(job)
        downloader.process_meta(job)
        if len(kept) >= per_person:
            break
    return len(kept)


def url_list_rows(path: Path) -> tuple[list[str], list[tuple]]:
    """The column names and (alias, url) rows of a CSV or Parquet URL list."""
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                table = pq.read_table(path)
            except pa.ArrowException as exc:
                raise LookalikeError(f"URL list {path} is not a readable Parquet file: {exc}") from None
            header = table.column_names
            if not {"alias", "url"} <= set(header):
                return header, []
            return header, list(zip(table.column("alias").to_pylist(), table.column("url").to_pylist()))
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            return list(reader.fieldnames or []), [(row.get("alias"), row.get("url")) for row in reader]
    except FileNotFoundError:
        raise LookalikeError(f"URL list {path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LookalikeError(f"URL list {path} cannot be read: {exc}") from None


def read_url_list(path: str | Path, people: list[dict]) -> dict[str, list[str]]:
    """URLs per alias from a CSV or Parquet file with columns ``alias,url``, in file order; rows of people
    who are not in the catalog are left out (with a warning)."""
    path = Path(path)
    header, rows = url_list_rows(path)
    if not {"alias", "url"} <= set(header):
        raise LookalikeError(f"URL list {path} must have the columns alias and url, it has: {', '.join(header)}")
    known = {person["alias"] for person in people}
    urls: dict[str, list[str]] = defaultdict(list)
    unknown = 0
    for number, (alias, url) in enumerate(rows, 1):
        problem = alias_problem(alias)
        if problem:
            raise LookalikeError(f"URL list {path} row {number}: alias {alias!r} {problem}")
        if not is_http_url(url):
            raise LookalikeError(f"URL list {path} row {number}: {url!r} is not an http(s) URL")
        if alias not in known:
            unknown += 1
        elif url not in urls[alias]:
            urls[alias].append(url)
    if unknown:
        log.warning("%s: %d URLs of people who are not in the catalog are left out", path, unknown)
    return urls


def plan_person(person: dict, rows: list[dict], data: DataDir, config: CrawlConfig,
                urls: dict[str, list[str]]) -> PersonTask:
    """A person's task from their manifest rows: photos kept whose file is still there, URLs not to retry."""
    kept, skip = set(), set()
    for row in rows:
        file_there = row["path"] is not None and (data.root / row["path"]).exists()
        if row["status"] == "ok" and file_there:
            kept.add(row["sha256"])
        if not retryable(row) and (file_there or row["status"] not in ("ok", "duplicate")):
            skip.add(row["url"])
    query = None if config.engine == "urls" else f"{person['name']} {config.query_suffix}".strip()
    return PersonTask(person["alias"], query, tuple(urls.get(person["alias"], ())), frozenset(kept),
                      frozenset(skip))


def check_settings(config: CrawlConfig, urls: str | Path | None) -> None:
    if config.engine == "urls" and urls is None:
        raise LookalikeError("the urls engine needs a URL list: --urls FILE (CSV or Parquet with alias,url)")
    if config.engine != "urls" and urls is not None:
        raise LookalikeError(f"--urls is read by the urls engine only, not by {config.engine}: add --engine urls")
    if config.search_host and not (is_http_url(config.search_host) and urlsplit(config.search_host).path in ("", "/")):
        raise LookalikeError(f"search_host must look like http://host:port, got {config.search_host!r}")


def crawl(catalog: str | Path, data_dir: str | Path, config: Config = Config(),
          urls: str | Path | None = None) -> CrawlSummary:
    """Download up to ``config.crawl.per_person`` photos of every catalog person into ``data_dir/images``
    and record every attempt in ``data_dir/crawl.parquet``; resumes where an earlier run stopped."""
    settings = config.crawl
    check_settings(settings, urls)
    people = load_catalog(catalog)
    url_lists = read_url_list(urls, people) if urls is not None else {}
    data = DataDir(data_dir)
    with data.locked("crawl"):
        return _crawl(data, people, url_lists, settings)


def _crawl(data: DataDir, people: list[dict], url_lists: dict[str, list[str]], settings: CrawlConfig) -> CrawlSummary:
    from icrawler.utils import Signal
    from tqdm import tqdm

    checkpoint = Checkpoint(data, "crawl", before_save=os.sync)
    previous = checkpoint.resume()
    by_alias: dict[str, list[dict]] = defaultdict(list)
    for row in rows_by_key(previous, manifest_key).values():
        by_alias[row["alias"]].append(row)
    tasks = [plan_person(person, by_alias[person["alias"]], data, settings, url_lists) for person in people]
    todo = [task for task in tasks if len(task.kept) < settings.per_person]
    log.info("crawl: %d people, %d already complete, %d to crawl with %s", len(people), len(tasks) - len(todo),
             len(todo), settings.engine)

    wanted = sum(settings.per_person - len(task.kept) for task in todo)
    checkpoint.plan(wanted)
    made: queue.SimpleQueue[dict] = queue.SimpleQueue()  # rows from the crawl threads, saved by this one
    session = make_session(settings.threads)
    storage = image_store_class()(data.images)
    downloader = downloader_class()(settings.threads, Signal(), session, storage, settings, made.put)
    search = None if settings.engine == "urls" else Search(settings.engine, session, settings)
    stop = threading.Event()
    new_rows: list[dict] = []
    kept_now: dict[str, int] = {}
    with ThreadPoolExecutor(settings.threads, thread_name_prefix="crawl") as pool, \
            tqdm(total=len(todo), desc="crawl people", unit="person", disable=None, leave=False) as people_bar, \
            tqdm(total=wanted, desc="crawl images", unit="image", disable=None, leave=False) as images_bar:
        waiting = iter(todo)
        running: dict = {}  # future -> alias; a few per thread, so that waiting on them stays cheap
        try:
            while True:
                for task in itertools.islice(waiting, 2 * settings.threads - len(running)):
                    running[pool.submit(crawl_person, task, settings.per_person, downloader, search, stop)] = task.alias
                if not running:
                    break
                done, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                save_rows(made, new_rows, checkpoint, images_bar)
                for future in done:
                    kept_now[running.pop(future)] = future.result()
                    people_bar.update()
        except BaseException:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            save_rows(made, new_rows, checkpoint, images_bar)
            checkpoint.flush()

    crawled = {task.alias for task in todo}
    kept_rows = [row for row in previous if not (row["status"] == "search_error" and row["alias"] in crawled)]
    merged = rows_by_key(kept_rows + new_rows, manifest_key)
    data.write("crawl", list(merged.values()))
    checkpoint.clear()

    counts = [kept_now.get(task.alias, len(task.kept)) for task in tasks]
    return CrawlSummary(people=len(tasks), complete=sum(n >= settings.per_person for n in counts),
                        partial=sum(0 < n < settings.per_person for n in counts),
                        empty=sum(n == 0 for n in counts), already_complete=len(tasks) - len(todo),
                        statuses=dict(Counter(row["status"] for row in new_rows).most_common()))


def save_rows(made: queue.SimpleQueue, rows: list[dict], checkpoint: Checkpoint, images_bar) -> None:
    """Move the rows the crawl threads made so far into ``rows`` and the checkpoint."""
    while not made.empty():
        row = made.get()
        rows.append(row)
        checkpoint.add(row)
        if row["status"] == "ok":
            images_bar.update()


def manifest_key(row: dict) -> tuple[str, str]:
    """A manifest row per person and URL: a later attempt replaces the earlier one."""
    return row["alias"], row["url"]

"""Where the crawl's URLs come from: a ``Source`` per value of the ``crawl.engine`` setting, made by the factory
that ``SOURCES`` lists under its name. An image search (icrawler's Bing or Baidu feeder for the result page URLs,
its parser for the image URLs on them) or the user's list of alias,url rows (CSV or Parquet)."""

from __future__ import annotations

import csv
import logging
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator, Protocol
from urllib.parse import quote_plus, urlsplit, urlunsplit

import requests

from ..config import CrawlConfig
from ..errors import LookalikeError
from ..files import open_regular, open_regular_text, reason
from ..io.catalog import alias_problem
from .download import DownloadFailed, fetch
from .manifest import Record, manifest_row, without_credentials

log = logging.getLogger(__name__)


class Source(Protocol):
    """Where the candidate photo URLs of each person come from."""

    from_strangers: bool  # its URLs come from strangers: the addresses of their hosts are checked

    def query(self, person: dict) -> str | None:
        """What is searched for ``person`` (a catalog row), as the manifest records it; None: nothing is."""

    def image_urls(self, session: requests.Session, alias: str, query: str | None, record: Record) -> Iterator[str]:
        """A person's candidate URLs, best first; a failure of the source itself is ``record``ed as a row."""


# A source made from the crawl settings, the --urls file given (or None) and the catalog's people.
SourceFactory = Callable[[CrawlConfig, Path | None, list[dict]], Source]


def rehost(url: str, host: str) -> str:
    """``url`` with its scheme and host replaced by those of ``host`` (``http://127.0.0.1:8000``)."""
    parts, target = urlsplit(url), urlsplit(host)
    return urlunsplit((target.scheme, target.netloc, parts.path, parts.query, parts.fragment))


def is_http_url(url: object) -> bool:
    if not isinstance(url, str):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:  # a bracketed host left open, an invalid port...
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


class Search:
    """Image URLs for a person's name from icrawler's Bing or Baidu feeder (the result page URLs) and parser.
    Result pages are fetched like photos (one deadline, ``max_search_page_bytes``), from the engine's host or
    ``search_host``, which are trusted: their addresses are not checked."""

    from_strangers = True

    def __init__(self, engine: str, config: CrawlConfig):
        from icrawler.builtin.baidu import BaiduFeeder, BaiduParser
        from icrawler.builtin.bing import BingFeeder, BingParser

        self.feeder_class = {"bing": BingFeeder, "baidu": BaiduFeeder}[engine]
        self.parser_class = {"bing": BingParser, "baidu": BaiduParser}[engine]
        self.config = config

    def query(self, person: dict) -> str:
        return f"{person['name']} {self.config.query_suffix}".strip()

    def pages(self, session: requests.Session, query: str) -> list[str]:
        """The result page URLs for ``query`` (a fresh feeder each time: its URL queue never forgets)."""
        from icrawler.utils import Signal

        feeder = self.feeder_class(1, Signal(), session)
        feeder.out_queue.maxsize = 0  # the feeder blocks once its queue holds 5 pages otherwise
        feeder.feed(keyword=quote_plus(query), offset=0, max_num=self.config.search_results)
        pages = list(feeder.out_queue.queue)
        return [rehost(page, self.config.search_host) for page in pages] if self.config.search_host else pages

    def image_urls(self, session: requests.Session, alias: str, query: str | None, record: Record) -> Iterator[str]:
        """Image URLs, a result page at a time; a page that fails is recorded as a ``search_error`` row whose
        error starts with the reason (``too_large``, ``timeout``, ``http_error``...)."""
        from icrawler.utils import Signal

        parser = self.parser_class(1, Signal(), session)
        for page in self.pages(session, query):
            started = time.monotonic()
            origin = without_credentials("{0.scheme}://{0.netloc}".format(urlsplit(page)))
            try:
                body = fetch(session, page, self.config.download_timeout, self.config.max_search_page_bytes,
                             check_addresses=False, headers={"Referer": origin})
                # icrawler 0.6.10's parsers read only the response's content
                urls = [task["file_url"] for task in parser.parse(SimpleNamespace(content=body))]
            except DownloadFailed as exc:
                record(manifest_row(alias, query, page, "search_error", http_status=exc.http_status,
                                    error=str(exc), seconds=time.monotonic() - started))
                return
            except Exception as exc:  # parsers that crash on unexpected pages
                record(manifest_row(alias, query, page, "search_error", error=f"{type(exc).__name__}: {exc}",
                                    seconds=time.monotonic() - started))
                return
            log.debug("%s: %d image URLs on %s", alias, len(urls), without_credentials(page))
            if not urls:
                return
            yield from urls


def search_source(engine: str) -> SourceFactory:
    """The factory of an image search by ``engine`` (``bing``, ``baidu``), which takes no URL list."""
    def make(config: CrawlConfig, url_list: Path | None, people: list[dict]) -> Search:
        if url_list is not None:
            raise LookalikeError(f"--urls is read by the urls engine only, not by {engine}: add --engine urls")
        return Search(engine, config)
    return make


class UrlList:
    """The URLs of each person in the user's list, in its order; they are the user's: any address is fetched."""

    from_strangers = False

    def __init__(self, urls: dict[str, list[str]]):
        self.urls = urls

    @classmethod
    def read(cls, config: CrawlConfig, url_list: Path | None, people: list[dict]) -> UrlList:
        """The list given with --urls, its rows checked (see ``read_url_list``)."""
        if url_list is None:
            raise LookalikeError("the urls engine needs a URL list: --urls FILE (CSV or Parquet with alias,url)")
        return cls(read_url_list(url_list, people))

    def query(self, person: dict) -> None:
        return None

    def image_urls(self, session: requests.Session, alias: str, query: str | None, record: Record) -> Iterator[str]:
        return iter(self.urls.get(alias, ()))


def url_list_rows(path: Path) -> tuple[list[str], list[tuple]]:
    """The column names and (alias, url) rows of a CSV (with or without a byte-order mark) or Parquet URL
    list."""
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                with open_regular(path) as fh:
                    table = pq.read_table(fh)
            except pa.ArrowException as exc:
                raise LookalikeError(f"URL list {path} is not a readable Parquet file: {exc}") from None
            header = table.column_names
            if not {"alias", "url"} <= set(header):
                return header, []
            return header, list(zip(table.column("alias").to_pylist(), table.column("url").to_pylist()))
        with open_regular_text(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            return list(reader.fieldnames or []), [(row.get("alias"), row.get("url")) for row in reader]
    except FileNotFoundError:
        raise LookalikeError(f"URL list {path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LookalikeError(f"URL list {path} cannot be read: {reason(exc)}") from None


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
            shown = without_credentials(url) if isinstance(url, str) else url
            raise LookalikeError(f"URL list {path} row {number}: {shown!r} is not an http(s) URL")
        if alias not in known:
            unknown += 1
        elif url not in urls[alias]:
            urls[alias].append(url)
    if unknown:
        log.warning("%s: %d URLs of people who are not in the catalog are left out", path, unknown)
    return urls


# The sources by the name the ``crawl.engine`` setting gives them (its choices are these names).
SOURCES: dict[str, SourceFactory] = {"bing": search_source("bing"), "baidu": search_source("baidu"),
                                     "urls": UrlList.read}

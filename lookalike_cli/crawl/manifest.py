"""The crawl manifest (``DATA/crawl.parquet``): one row per person and attempted URL, and which rows are worth
trying again. The sources, the downloader and the crawl loop all make rows through ``manifest_row``."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Callable

# Failures that may pass on another try; a re-run tries their URLs again.
RETRY_STATUSES = {"timeout", "connection_error", "search_error"}
RETRY_HTTP = {408, 425, 429, 500, 502, 503, 504}
# The user:password@ part of a URL, also inside a longer text (an error message).
CREDENTIALS = re.compile(r"(?<=//)[^/?#\s]*@")

Record = Callable[[dict], None]


def now() -> str:
    """The time of an attempt, as recorded in the manifest (UTC, ISO 8601)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def without_credentials(text: str) -> str:
    """``text`` (a URL, or a message naming URLs) with every URL's user:password@ removed."""
    return CREDENTIALS.sub("", text)


def manifest_row(alias: str, query: str | None, url: str, status: str, **values) -> dict:
    """A ``crawl`` row; columns not given are null. Credentials never reach the manifest: they are removed
    from the URL and the error."""
    row = {"alias": alias, "query": query, "url": url, "path": None, "sha256": None, "bytes": None,
           "width": None, "height": None, "http_status": None, "status": status, "error": "",
           "seconds": None, "time": now()} | values
    row["url"], row["error"] = without_credentials(row["url"]), without_credentials(row["error"])
    return row


def manifest_key(row: dict) -> tuple[str, str]:
    """A manifest row per person and URL: a later attempt replaces the earlier one."""
    return row["alias"], row["url"]


def retryable(row: dict) -> bool:
    """Whether a manifest row's URL is worth trying again on a re-run."""
    return row["status"] in RETRY_STATUSES or (row["status"] == "http_error" and row["http_status"] in RETRY_HTTP)

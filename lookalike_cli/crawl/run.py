"""Stage 0, crawl: download photos of every catalog person into ``DATA/images/<alias>/<sha256>.<ext>``.

The URLs come from a source (``sources.py``: an image search by the person's name, or a URL list), each is
fetched and verified by ``download.py``, and every attempt is a row of ``DATA/crawl.parquet`` (``manifest.py``).
This module plans from the manifest (people who are complete and URLs that cannot succeed are skipped on a
re-run), crawls many people at once (one thread per person at a time, each trying its candidates until it keeps
``per_person`` photos), writes the photos and saves the manifest in parts as it goes.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import queue
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..config import Config, CrawlConfig, ImageConfig
from ..errors import LookalikeError
from ..files import write_bytes
from ..imaging.decode import ImageVerifier
from ..io import syncing
from ..io.artifacts import Checkpoint, DataDir, rows_by_key
from ..io.catalog import load_catalog
from ..io.syncing import fsync_path
from .download import Attempt, CrawlSession, Verify, download
from .manifest import Record, manifest_key, manifest_row, retryable, without_credentials
from .sources import SOURCES, Source, is_http_url

log = logging.getLogger(__name__)

SYNC_PAUSE = 0.2


@dataclass(frozen=True)
class PersonTask:
    """One person to crawl: what its source searches (None: nothing), what is kept already, what to skip."""

    alias: str
    query: str | None
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


class Syncer:
    """Passes each row on to ``record`` once the photo it names, and the folders whose entries changed, are on
    disk (fsync): a power cut cannot leave a manifest row whose file is missing. Neither the downloads nor the
    manifest wait for the disk: the rows of ``SYNC_PAUSE`` seconds make a batch, whose files, then folders, are
    synced at once by a helper process (``syncing.py``), and then recorded."""

    def __init__(self, record: Record):
        self.record = record
        self.waiting: queue.SimpleQueue[tuple[dict, tuple[Path, ...]] | None] = queue.SimpleQueue()
        self.failure: LookalikeError | None = None
        self.closing = threading.Event()
        self.helper = subprocess.Popen([sys.executable, syncing.__file__], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True, encoding="utf-8")
        self.thread = threading.Thread(target=self.sync_batches, name="sync-batches", daemon=True)
        self.thread.start()

    def add(self, row: dict, *paths: Path) -> None:
        """Record ``row`` once ``paths`` (a file, then its folders) are synced; at once when there are none."""
        if paths:
            self.waiting.put((row, paths))
        else:
            self.record(row)

    def sync_batches(self) -> None:
        closed = False
        while not closed:
            batch = [self.waiting.get()]
            self.closing.wait(SYNC_PAUSE)
            while not self.waiting.empty():
                batch.append(self.waiting.get())
            closed = batch[-1] is None
            batch = [item for item in batch if item is not None]
            try:
                self.sync({paths[0] for _, paths in batch})
                self.sync({folder for _, paths in batch for folder in paths[1:]})
            except LookalikeError as exc:
                self.failure = exc  # the batch's rows are dropped: their files may not be on disk
                continue
            for row, _ in batch:
                self.record(row)

    def sync(self, paths: set[Path]) -> None:
        """fsync ``paths`` in the helper process; LookalikeError when one cannot be synced."""
        if paths:
            try:
                self.helper.stdin.write(json.dumps([os.fsdecode(path) for path in paths]) + "\n")
                self.helper.stdin.flush()
                answer = json.loads(self.helper.stdout.readline() or '"the process that syncs photos stopped"')
            except OSError:
                answer = "the process that syncs photos stopped"
            if answer != "ok":
                raise LookalikeError(answer)

    def close(self) -> None:
        """Wait until the rows in work are recorded."""
        self.closing.set()
        self.waiting.put(None)
        self.thread.join()
        try:
            self.helper.stdin.close()
        except OSError:
            pass  # it stopped already: the failure is recorded
        self.helper.wait()

    def check(self) -> None:
        """Raise the first sync failure, if any."""
        if self.failure is not None:
            raise self.failure


@dataclass(frozen=True)
class Crawler:
    """What the crawl threads share: the limits, the session, the source of URLs, where rows go and the images
    folder."""

    limits: CrawlConfig
    session: CrawlSession
    source: Source
    syncer: Syncer
    images: Path
    stop: threading.Event
    verify: Verify

    def crawl_person(self, task: PersonTask) -> int:
        """Try a person's candidate URLs, one at a time, until ``per_person`` photos are kept. Returns how
        many are kept. URLs from strangers (a search) are fetched from public addresses only."""
        kept = set(task.kept)
        tried = set(task.skip)
        check_addresses = self.source.from_strangers and not self.limits.allow_private_addresses
        for url in self.source.image_urls(self.session, task.alias, task.query, self.syncer.add):
            if self.stop.is_set():
                break
            shown = without_credentials(url)
            if shown in tried:
                continue
            tried.add(shown)
            attempt = download(self.session, url, self.limits, check_addresses, self.verify)
            self.syncer.add(*self.kept_row(task, url, attempt, kept))
            if len(kept) >= self.limits.per_person:
                break
        return len(kept)

    def kept_row(self, task: PersonTask, url: str, attempt: Attempt, kept: set[str]) -> tuple[dict, ...]:
        """The manifest row of an attempt, then the paths to sync before it is recorded: a photo new for the
        person is written (synced by the Syncer), and its hash added to ``kept``; one it has already is a
        ``duplicate``."""
        status, values, written = attempt.status, {}, ()
        if status == "ok":
            folder, name = self.images / task.alias, f"{attempt.sha256}.{attempt.extension}"
            values = {"path": f"images/{task.alias}/{name}", "sha256": attempt.sha256, "width": attempt.width,
                      "height": attempt.height}
            if attempt.sha256 in kept:
                status = "duplicate"
            else:
                new_folder = not folder.is_dir()
                write_bytes(folder / name, attempt.data, durable=False)
                written = (folder / name, folder, self.images) if new_folder else (folder / name, folder)
                kept.add(attempt.sha256)
        row = manifest_row(task.alias, task.query, url, status, bytes=attempt.size, http_status=attempt.http_status,
                           error=attempt.error, seconds=attempt.seconds, **values)
        return row, *written


def plan_person(person: dict, rows: list[dict], data: DataDir, source: Source) -> PersonTask:
    """A person's task from their manifest rows: photos kept whose file is still there, URLs not to retry."""
    kept, skip = set(), set()
    for row in rows:
        file_there = row["path"] is not None and (data.root / row["path"]).exists()
        if row["status"] == "ok" and file_there:
            kept.add(row["sha256"])
        if not retryable(row) and (file_there or row["status"] not in ("ok", "duplicate")):
            skip.add(row["url"])
    return PersonTask(person["alias"], source.query(person), frozenset(kept), frozenset(skip))


def check_settings(config: CrawlConfig) -> None:
    if config.search_host and not (is_http_url(config.search_host) and urlsplit(config.search_host).path in ("", "/")):
        raise LookalikeError(f"search_host must look like http://host:port, got "
                             f"{without_credentials(config.search_host)!r}")


def crawl(catalog: str | Path, data_dir: str | Path, config: Config = Config(),
          urls: str | Path | None = None) -> CrawlSummary:
    """Download up to ``config.crawl.per_person`` photos of every catalog person into ``data_dir/images``
    and record every attempt in ``data_dir/crawl.parquet``; resumes where an earlier run stopped."""
    settings = config.crawl
    check_settings(settings)
    people = load_catalog(catalog)
    source = SOURCES[settings.engine](settings, None if urls is None else Path(urls), people)
    data = DataDir(data_dir)
    with data.locked("crawl"), ImageVerifier(download_policy(config)) as verifier:
        return _crawl(data, people, source, settings, verifier.verify)


def download_policy(config: Config) -> ImageConfig:
    """How downloaded photos are checked: the image policy (formats, decoded bytes, decode time), with the
    crawl's own pixel bound."""
    return dataclasses.replace(config.image, max_image_pixels=config.crawl.max_download_pixels)


def _crawl(data: DataDir, people: list[dict], source: Source, settings: CrawlConfig, verify: Verify) -> CrawlSummary:
    from tqdm import tqdm

    try:
        data.images.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LookalikeError(f"cannot create {data.images}: {exc.strerror}") from None
    try:
        fsync_path(data.root)
    except OSError as exc:
        raise LookalikeError(f"cannot sync {data.root}: {exc.strerror}") from None
    checkpoint = Checkpoint(data, "crawl")
    previous = checkpoint.resume()
    by_alias: dict[str, list[dict]] = defaultdict(list)
    for row in rows_by_key(previous, manifest_key).values():
        by_alias[row["alias"]].append(row)
    tasks = [plan_person(person, by_alias[person["alias"]], data, source) for person in people]
    todo = [task for task in tasks if len(task.kept) < settings.per_person]
    log.info("crawl: %d people, %d already complete, %d to crawl with %s", len(people), len(tasks) - len(todo),
             len(todo), settings.engine)

    wanted = sum(settings.per_person - len(task.kept) for task in todo)
    checkpoint.plan(wanted)
    made: queue.SimpleQueue[dict] = queue.SimpleQueue()  # rows from the crawl threads, saved by this one
    new_rows: list[dict] = []
    kept_now: dict[str, int] = {}
    with CrawlSession(settings.threads) as session, \
            ThreadPoolExecutor(settings.threads, thread_name_prefix="crawl") as pool, \
            tqdm(total=len(todo), desc="crawl people", unit="person", disable=None, leave=False) as people_bar, \
            tqdm(total=wanted, desc="crawl images", unit="image", disable=None, leave=False) as images_bar:
        crawler = Crawler(settings, session, source, Syncer(made.put), data.images, threading.Event(), verify)
        waiting = iter(todo)
        running: dict = {}  # future -> alias; a few per thread, so that waiting on them stays cheap
        try:
            while True:
                for task in itertools.islice(waiting, 2 * settings.threads - len(running)):
                    running[pool.submit(crawler.crawl_person, task)] = task.alias
                if not running:
                    break
                done, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                crawler.syncer.check()
                save_rows(made, new_rows, checkpoint, images_bar)
                for future in done:
                    kept_now[running.pop(future)] = future.result()
                    people_bar.update()
        except BaseException:
            crawler.stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            crawler.syncer.close()
            save_rows(made, new_rows, checkpoint, images_bar)
            checkpoint.flush()
    crawler.syncer.check()

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

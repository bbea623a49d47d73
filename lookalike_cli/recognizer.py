"""Recognition for the HTTP API and the Telegram bot: a process pool behind a bounded queue.

dlib holds the GIL, so photos are answered in worker processes; each loads the gallery and dlib's models once
(pool initializer). In front of the pool a counter bounds the photos waiting or in work: when it is full,
``Recognizer.recognize`` raises ``Busy`` at once instead of letting requests pile up.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path

from .config import Config
from .errors import LookalikeError
from .images import ImageRejected, decode_image
from .parallel import resolve_workers
from .query import Lookalike, PhotoResult

log = logging.getLogger(__name__)


class Busy(Exception):
    """Every worker is busy and the queue is full."""


class RecognitionTimeout(Exception):
    """A photo waited and was worked on longer than the request timeout."""


class RecognitionFailed(Exception):
    """A worker process died while answering (the pool is restarted)."""


_engine: Lookalike | None = None


def load_engine(data_dir: str, config: Config) -> None:
    """Pool initializer: load the gallery and dlib's models into this worker process."""
    global _engine
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which then stops the pool
    _engine = Lookalike(data_dir, config)
    _engine.models  # load now, not on the first photo


def worker_ready() -> bool:
    """Answered by a worker once its initializer has run."""
    return _engine is not None


def recognize_photo(data: bytes, photo: str, picture: bool) -> tuple[PhotoResult, bytes | None]:
    """In a worker: the answer for one photo's bytes (as ``query --json`` gives it), and its PNG picture when
    ``picture`` is set and a face was found."""
    assert _engine is not None, "load_engine must run first"
    try:
        image = decode_image(data, _engine.config.filter.max_image_pixels)
    except ImageRejected as exc:
        return PhotoResult(photo=photo, error=f"{exc.reason}: {exc.detail}"), None
    result = PhotoResult(photo=photo, faces=_engine.query_image(image))
    if not (picture and result.faces):
        return result, None
    from .render import render_png

    return result, render_png(image, result.faces)


def rejection_reason(result: PhotoResult) -> str | None:
    """The ImageRejected reason of a result that could not be read (``too_large``, ``undecodable``...)."""
    return result.error.split(":", 1)[0] if result.error else None


class Recognizer:
    """A pool of ``workers`` processes with room for ``workers + queue_size`` photos at a time."""

    def __init__(self, data_dir: str | Path, config: Config):
        self.data_dir = str(data_dir)
        self.config = config
        self.workers = resolve_workers(config.runtime.workers)
        self.capacity = self.workers + config.serve.queue_size
        self.timeout = config.serve.request_timeout
        gallery = Lookalike(data_dir, config)  # checks the data directory here, with a one-line error
        self.gallery = {"backend": gallery.meta["backend"], "size": len(gallery.index), "people": gallery.people,
                        "calibration": asdict(gallery.calibration)}
        self._pending = 0
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("forkserver"),
                                             initializer=load_engine, initargs=(self.data_dir, self.config))
        return self._executor

    def start(self) -> None:
        """Start the workers and wait until each has loaded the models."""
        self._new_pool()
        try:
            for future in [self._executor.submit(worker_ready) for _ in range(self.workers)]:
                future.result()
        except BrokenProcessPool:
            self.close()
            raise LookalikeError(f"the recognition workers could not load {self.data_dir} "
                                 "(their error is printed above)") from None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    @property
    def pending(self) -> int:
        """Photos waiting or in work."""
        return self._pending

    @property
    def queue_depth(self) -> int:
        """Photos waiting for a free worker."""
        return max(0, self._pending - self.workers)

    def _release(self, _future: Future) -> None:
        with self._lock:
            self._pending -= 1

    async def recognize(self, data: bytes, photo: str = "upload",
                        picture: bool = False) -> tuple[PhotoResult, bytes | None]:
        """Answer one photo in a worker (see recognize_photo); raises Busy, RecognitionTimeout or
        RecognitionFailed. A photo stays counted until its worker is done with it, even after a timeout."""
        executor = self._executor
        if executor is None:
            raise RuntimeError("Recognizer.start() was not called")
        with self._lock:
            if self._pending >= self.capacity:
                raise Busy()
            self._pending += 1
        try:
            future = executor.submit(recognize_photo, data, photo, picture)
        except BrokenProcessPool:
            self._release(None)
            self._restart(executor)
            raise RecognitionFailed() from None
        future.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)
        except (TimeoutError, asyncio.TimeoutError):
            raise RecognitionTimeout() from None
        except BrokenProcessPool:
            self._restart(executor)
            raise RecognitionFailed() from None

    def _restart(self, broken: ProcessPoolExecutor) -> None:
        """Replace a pool whose worker died (once, however many requests saw it break)."""
        with self._lock:
            if self._executor is not broken:
                return
            log.error("a recognition worker died; restarting the pool")
            self._new_pool()
        broken.shutdown(wait=False, cancel_futures=True)

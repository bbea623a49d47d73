"""Recognition for the HTTP API and the Telegram bot: a process pool behind a bounded count of places.

dlib holds the GIL, so photos are answered in worker processes (``runtime.pool.ProcessPool``); each loads the gallery
and dlib's models once. A photo takes a place (a worker, or one of ``queue_size`` places waiting for one) before
its bytes are read, and gives it back when its worker is done with it: when every place is taken, ``place``
raises ``Busy`` at once instead of letting requests pile up. A photo not answered within ``request_timeout``
has its worker killed and replaced, so the place it frees is really free; an image that takes longer than
``decode_timeout`` to decode is stopped the same way and answered as an unusable image (``timeout``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Hashable

from ..config import Config
from ..errors import LookalikeError
from ..gallery.generations import current_generation, hold, published_summary
from ..imaging.decode import ImageRejected
from ..imaging.headers import header_pixels
from ..io.artifacts import DataDir
from ..language import SOURCE_LANGUAGE
from ..runtime.pool import ProcessPool, ProcessSlots, TaskFailed, resolve_workers

if TYPE_CHECKING:
    from ..runtime.ray_workers import RaySlots, RayWorkers
from .query import Gate, Lookalike
from .results import PhotoResult

log = logging.getLogger(__name__)


class Busy(Exception):
    """Every worker is busy and the queue is full."""


class RecognitionTimeout(Exception):
    """A photo waited and was worked on longer than the request timeout (its worker was replaced)."""


class RecognitionFailed(Exception):
    """The worker died on the photo, or failed on it with an error (a worker died is replaced)."""


_engine: Lookalike | None = None


def load_engine(data_dir: str, config: Config, generation: str, fallback_gate: Gate | None = None) -> None:
    """Worker initializer: load a generation of the gallery and dlib's models into this worker process."""
    global _engine
    _engine = Lookalike(data_dir, config, generation=generation, fallback_gate=fallback_gate)
    _engine.models  # load now, not on the first photo


def fallback_workers(workers: int) -> int:
    """Workers that may run the detection fallback at once: all but one, or the only one."""
    return max(1, workers - 1)


def recognize_photo(data: bytes, photo: str, picture: bool,
                    language: str = SOURCE_LANGUAGE) -> tuple[PhotoResult, bytes | None]:
    """In a worker: ``Lookalike.answer_bytes`` of one photo (its picture in ``language``)."""
    assert _engine is not None, "load_engine must run first"
    return _engine.answer_bytes(data, photo, picture, language=language)


class Recognizer:
    """A pool of ``workers`` processes with room for ``workers + queue_size`` photos at a time."""

    def __init__(self, data_dir: str | Path, config: Config):
        self.data_dir = str(data_dir)
        self.config = config
        self.timeout = config.serve.request_timeout
        self.data = DataDir(data_dir)
        # The generation served is held, so that no publication removes it while a replaced worker may load it
        # again; its figures come from its JSON files (the gallery itself is loaded by the workers only).
        self.generation, self._held = hold(self.data)
        self.gallery = published_summary(self.data, self.generation)
        self._taken = 0
        self._lock = threading.Lock()
        self._fallback_slots = self._new_slots()
        self._pool = self._new_pool(self.generation)
        self._switching = threading.Lock()
        self._check = threading.Event()
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None

    def _new_slots(self) -> ProcessSlots | RaySlots:
        """The detection fallback's slots. The fallback (a second of dlib's CNN for a photo where HOG finds no
        face) runs in all workers but one at most, as large photos do: photos with no face, however many, never
        take every worker."""
        runtime = self.config.runtime
        if runtime.executor == "ray":
            from ..runtime.ray_workers import RaySlots, cluster_size

            return RaySlots(fallback_workers(cluster_size(runtime.workers, runtime.ray_address)))
        return ProcessSlots(fallback_workers(resolve_workers(runtime.workers)))

    def _initargs(self, generation: str) -> tuple:
        """What load_engine takes to load ``generation`` in a worker."""
        return self.data_dir, self.config, generation, self._fallback_slots

    def _new_pool(self, generation: str) -> ProcessPool | RayWorkers:
        """The workers of a generation (processes of this machine, or actors of a Ray cluster: ``--executor``),
        sharing the fallback's slots with those of any other generation."""
        runtime = self.config.runtime
        initargs = self._initargs(generation)
        if runtime.executor == "ray":
            from ..runtime.ray_workers import RayWorkers

            return RayWorkers(runtime.workers, load_engine, initargs, runtime.ray_address, self._fallback_slots)
        return ProcessPool(resolve_workers(runtime.workers), load_engine, initargs)

    def start(self) -> None:
        """Start the workers and wait until each has loaded the gallery and the models."""
        try:
            self._pool.start()
        except LookalikeError as exc:
            self.close()
            raise LookalikeError(f"the recognition workers could not load {self.data_dir}: {exc}") from None

    def close(self) -> None:
        self._closing.set()
        self._check.set()
        if self._watcher is not None:
            self._watcher.join()
        self._pool.close()
        self._held.close()
        self._fallback_slots.close()

    def switch_to_published(self) -> bool:
        """Serve the current generation if it is not the one served: a new pool loads it while the old one goes
        on answering; photos then go to the new one, and the old one stops once its photos are answered (at the
        latest after the request timeout). On Ray the same actors load it, one by one as they are free
        (RayWorkers.reload). Returns whether it switched; LookalikeError if the new generation cannot be loaded
        (the old one is still served)."""
        with self._switching:
            if current_generation(self.data) == self.generation:
                return False
            generation, held_file = hold(self.data)
            if self.config.runtime.executor == "ray":
                return self._reload(generation, held_file)
            pool = self._new_pool(generation)
            try:
                pool.start()
                gallery = published_summary(self.data, generation)
            except LookalikeError:
                pool.close()
                held_file.close()
                raise
            old_pool, old_held = self._pool, self._held
            self._pool, self._held, self.generation, self.gallery = pool, held_file, generation, gallery
        log.warning("now answering from generation %s (%d people)", generation, gallery["people"] or 0)
        deadline = time.monotonic() + self.timeout + 1
        while old_pool.queued + old_pool.busy and time.monotonic() < deadline:
            time.sleep(0.05)
        old_pool.close()
        old_held.close()
        return True

    def _reload(self, generation: str, held_file) -> bool:
        """Switch the Ray workers to ``generation`` (held by ``held_file``) in place."""
        try:
            self._pool.reload(self._initargs(generation))
            gallery = published_summary(self.data, generation)
        except LookalikeError:
            held_file.close()
            raise
        old_held, self._held, self.generation, self.gallery = self._held, held_file, generation, gallery
        log.warning("now answering from generation %s (%d people)", generation, gallery["people"] or 0)
        old_held.close()
        return True

    def watch(self, seconds: float) -> None:
        """Switch to a newly published generation, checking every ``seconds`` (0: only when ``check_now`` is
        called, as ``serve`` and ``bot`` do on SIGHUP), in a thread of this process."""
        def watching() -> None:
            while not self._closing.is_set():
                self._check.wait(seconds or None)
                self._check.clear()
                if self._closing.is_set():
                    return
                try:
                    self.switch_to_published()
                except LookalikeError as exc:
                    log.warning("still answering from generation %s: %s", self.generation, exc)

        self._watcher = threading.Thread(target=watching, name="generation-watch", daemon=True)
        self._watcher.start()

    def check_now(self, *_signal_args) -> None:
        """Look for a newly published generation at once (a signal handler)."""
        self._check.set()

    @property
    def workers(self) -> int:
        """Recognition workers (on Ray with ``workers`` 0: the cluster's CPUs, as they come and go)."""
        return self._pool.size

    @property
    def capacity(self) -> int:
        """Photos at a time: one per worker, and ``queue_size`` waiting."""
        return self.workers + self.config.serve.queue_size

    def nodes(self) -> dict[str, dict[str, int]]:
        """Per node (this machine, or each Ray node): its workers and the photos they answered."""
        return self._pool.nodes()

    @property
    def pending(self) -> int:
        """Places taken: photos being received, waiting for a worker or in work."""
        return self._taken

    @property
    def queue_depth(self) -> int:
        """Photos waiting for a free worker."""
        return self._pool.queued

    @property
    def in_work(self) -> int:
        return self._pool.busy

    @property
    def workers_replaced(self) -> int:
        """Workers killed over a deadline or found dead, and replaced, since the start."""
        return self._pool.replaced

    def worker_pids(self) -> list[int]:
        """The process ids of the served generation's workers (see ProcessPool.worker_pids)."""
        return self._pool.worker_pids()

    def ready_worker_pids(self) -> list[int]:
        """The process ids of the served generation's workers that have loaded it and take photos."""
        return self._pool.ready_worker_pids()

    def place(self) -> Place:
        """A place for one photo, taken now (Busy when there is none), given back when its answer is done."""
        with self._lock:
            if self._taken >= self.capacity:
                raise Busy()
            self._taken += 1
        return Place(self)

    def _give_back(self, _future: Future | None = None) -> None:
        with self._lock:
            self._taken -= 1

    async def recognize(self, data: bytes, photo: str = "upload", picture: bool = False,
                        client: Hashable = None,
                        language: str = SOURCE_LANGUAGE) -> tuple[PhotoResult, bytes | None]:
        """Take a place and answer one photo (see Place.recognize)."""
        with self.place() as place:
            return await place.recognize(data, photo, picture, client, language)


class Place:
    """One photo's room in the recognizer, held while its bytes arrive and its worker answers it (a context
    manager: a place not used for a photo is given back on exit)."""

    def __init__(self, recognizer: Recognizer):
        self.recognizer = recognizer
        self._handed_over = False

    def __enter__(self) -> Place:
        return self

    def __exit__(self, *exc_info) -> None:
        if not self._handed_over:
            self.recognizer._give_back()

    async def recognize(self, data: bytes, photo: str = "upload", picture: bool = False,
                        client: Hashable = None,
                        language: str = SOURCE_LANGUAGE) -> tuple[PhotoResult, bytes | None]:
        """Answer one photo in a worker (see recognize_photo), its picture in ``language``; raises
        RecognitionTimeout or RecognitionFailed. The place is given back when the worker is done with the photo
        (killed, at the latest, at the request timeout). A free worker takes the waiting photo of the ``client``
        (an address, a chat) that has used the least worker time lately (see ProcessPool.submit)."""
        recognizer = self.recognizer
        pixels = header_pixels(data)
        large = pixels is None or pixels > recognizer.config.serve.large_photo_pixels
        future = recognizer._pool.submit(recognize_photo, data, photo, picture, language,
                                         timeout=recognizer.timeout, large=large, client=client)
        self._handed_over = True
        future.add_done_callback(recognizer._give_back)
        try:
            return await asyncio.wrap_future(future)
        except ImageRejected as exc:  # killed over the decode time limit
            return PhotoResult.rejected(photo, exc), None
        except TaskFailed as exc:
            if exc.reason == "timeout":
                raise RecognitionTimeout() from None
            if exc.reason == "lost":  # its Ray worker's node went away, twice: a new try finds the others
                raise Busy("the node of the recognition worker was lost") from None
            log.warning("recognition of a photo failed: %s", exc.detail)
            raise RecognitionFailed(exc.detail) from None
        except Exception as exc:  # raised by the worker's code, or workers that cannot start again
            log.warning("recognition of a photo failed: %s: %s", type(exc).__name__, exc)
            raise RecognitionFailed(f"{type(exc).__name__}: {exc}") from None

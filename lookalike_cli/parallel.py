"""Run a function over many items in worker processes (dlib holds the GIL, so threads would not help)."""

from __future__ import annotations

import multiprocessing
import os
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence, TypeVar

from tqdm import tqdm

if TYPE_CHECKING:
    from .config import RuntimeConfig

T = TypeVar("T")
R = TypeVar("R")


def resolve_workers(workers: int) -> int:
    """``workers``, or one per available core when 0."""
    if workers > 0:
        return workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def progress(results: Iterable[R], total: int, desc: str, unit: str) -> Iterator[R]:
    """``results`` as they come, counted on a progress bar."""
    with tqdm(total=total, desc=desc, unit=unit, disable=None, leave=False) as bar:
        for result in results:
            bar.update()
            yield result


class WorkerPool:
    """Worker processes that run ``initializer(*initargs)`` once each (to load models) and then serve every
    ``map`` call until closed, so that the stages of one build share them. The processes start on the first
    ``map`` that has work for them; with one worker everything runs in this process.

    The interface every engine offers (``ray_engine.RayPool`` is the other): ``map``, ``close``, a context
    manager, and ``nodes``."""

    nodes: dict[str, int] = {}  # items done per cluster node in the last ``map`` (empty: all on this machine)

    def __init__(self, workers: int, initializer: Callable[..., None], initargs: tuple = ()):
        self.workers = resolve_workers(workers)
        self.initializer = initializer
        self.initargs = initargs
        self._pool = None
        self._initialized_here = False

    def map(self, func: Callable[[T], R], items: Sequence[T], desc: str = "", unit: str = "image",
            failed: Callable[[T, str], R] | None = None) -> Iterator[R]:
        """Yield ``func(item)`` for every item, in completion order, with a progress bar. ``failed(item, why)``
        is what an engine that outlives a worker process dying on an item (Ray) yields for that item; this
        pool does not use it."""
        yield from progress(self._results(func, items), len(items), desc, unit)

    def _results(self, func: Callable[[T], R], items: Sequence[T]) -> Iterable[R]:
        if self._pool is None and (self.workers == 1 or len(items) == 1):
            if not self._initialized_here:
                self.initializer(*self.initargs)
                self._initialized_here = True
            return map(func, items)
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            self._pool = context.Pool(self.workers, initializer=self.initializer, initargs=self.initargs)
        # One item at a time: an item takes 10 ms to a few seconds, and a chunk would keep one worker busy
        # at the end while the other waits.
        return self._pool.imap_unordered(func, items)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def worker_pool(runtime: RuntimeConfig, initializer: Callable[..., None], initargs: tuple = ()) -> WorkerPool:
    """The pool of ``runtime.executor``: worker processes on this machine, or actors on a Ray cluster."""
    if runtime.executor == "ray":
        from .ray_engine import RayPool

        return RayPool(runtime.workers, initializer, initargs, runtime.ray_address)  # type: ignore[return-value]
    return WorkerPool(runtime.workers, initializer, initargs)

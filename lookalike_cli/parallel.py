"""Run a function over many items in worker processes (dlib holds the GIL, so threads would not help)."""

from __future__ import annotations

import multiprocessing
import os
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from tqdm import tqdm

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


class WorkerPool:
    """Worker processes that run ``initializer(*initargs)`` once each (to load models) and then serve every
    ``map`` call until closed, so that the stages of one build share them. The processes start on the first
    ``map`` that has work for them; with one worker everything runs in this process."""

    def __init__(self, workers: int, initializer: Callable[..., None], initargs: tuple = ()):
        self.workers = resolve_workers(workers)
        self.initializer = initializer
        self.initargs = initargs
        self._pool = None
        self._initialized_here = False

    def map(self, func: Callable[[T], R], items: Sequence[T], desc: str = "", unit: str = "image") -> Iterator[R]:
        """Yield ``func(item)`` for every item, in completion order, with a progress bar."""
        with tqdm(total=len(items), desc=desc, unit=unit, disable=None, leave=False) as bar:
            for result in self._results(func, items):
                bar.update()
                yield result

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

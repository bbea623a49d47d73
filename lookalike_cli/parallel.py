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


def parallel_map(func: Callable[[T], R], items: Sequence[T], *, workers: int,
                 initializer: Callable[..., None], initargs: tuple = (), desc: str = "",
                 unit: str = "image") -> Iterator[R]:
    """Yield ``func(item)`` for every item, in completion order, with a progress bar.

    ``initializer(*initargs)`` runs once per worker process (to load models); with one worker, or one
    item, everything runs in this process.
    """
    workers = min(resolve_workers(workers), max(1, len(items)))
    with tqdm(total=len(items), desc=desc, unit=unit, disable=None, leave=False) as bar:
        if workers == 1:
            initializer(*initargs)
            results: Iterable[R] = map(func, items)
            for result in results:
                bar.update()
                yield result
            return
        context = multiprocessing.get_context("forkserver")
        chunksize = max(1, min(16, len(items) // (workers * 8)))
        with context.Pool(workers, initializer=initializer, initargs=initargs) as pool:
            for result in pool.imap_unordered(func, items, chunksize=chunksize):
                bar.update()
                yield result

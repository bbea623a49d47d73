"""The local engine: worker processes of this machine that load models once and serve every ``map``."""

from __future__ import annotations

import queue
from concurrent.futures import Future
from typing import Callable, Iterator, Sequence, TypeVar

from ..errors import Failure
from .pool import ProcessPool, progress, resolve_workers

T = TypeVar("T")
R = TypeVar("R")


class LocalPool:
    """Worker processes that run ``initializer(*initargs)`` once each (to load models) and then serve every
    ``map`` call until closed, so that the stages of one build share them. The processes start on the first
    ``map`` that has work for them. Every item runs in a worker process, so that a time limit can stop it.

    An ``Engine`` (``engines``), as ``ray_pool.RayPool`` is."""

    nodes: dict[str, int] = {}  # items done per cluster node in the last ``map`` (empty: all on this machine)

    def __init__(self, workers: int, initializer: Callable[..., None], initargs: tuple = ()):
        self.workers = resolve_workers(workers)
        self._pool = ProcessPool(self.workers, initializer, initargs)

    def map(self, func: Callable[[T], R], items: Sequence[T], desc: str = "", unit: str = "image",
            failed: Callable[[T, Failure], R] | None = None) -> Iterator[R]:
        """Yield ``func(item)`` for every item, in completion order, with a progress bar. An item whose worker
        died or overran a time limit yields ``failed(item, failure)`` (without ``failed``: the failure is
        raised); what ``func`` itself raises is raised."""
        done: queue.SimpleQueue[Future] = queue.SimpleQueue()
        futures = {}
        try:
            for item in items:
                future = self._pool.submit(func, item)
                futures[future] = item
                future.add_done_callback(done.put)
            for future in progress((done.get() for _ in range(len(items))), len(items), desc, unit):
                error = future.exception()
                if error is None:
                    yield future.result()
                elif failed is not None and isinstance(error, Failure):
                    yield failed(futures[future], error)
                else:
                    raise error
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

"""Engines: what the stages map their dlib work over, chosen by name (``runtime.executor``).

An engine is anything with the ``Engine`` interface; ``local.LocalPool`` (processes of this machine) and
``ray_pool.RayPool`` (actors on a Ray cluster) are the two. Another engine goes in ``ENGINES``, not in the stages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator, Protocol, Sequence, TypeVar

from ..errors import Failure

if TYPE_CHECKING:
    from ..config import RuntimeConfig

T = TypeVar("T")
R = TypeVar("R")


class Engine(Protocol):
    """Workers that ran an initializer once each (to load models) and serve every ``map`` until closed."""

    nodes: dict[str, int]  # items done per cluster node in the last ``map`` (empty: all on this machine)

    def map(self, func: Callable[[T], R], items: Sequence[T], desc: str = "", unit: str = "image",
            failed: Callable[[T, Failure], R] | None = None) -> Iterator[R]:
        """Yield ``func(item)`` for every item, in completion order; an item whose worker died or overran a time
        limit yields ``failed(item, failure)`` (without ``failed`` the failure is raised)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc_info) -> None: ...


def _local(runtime: RuntimeConfig, initializer: Callable[..., None], initargs: tuple) -> Engine:
    from .local import LocalPool

    return LocalPool(runtime.workers, initializer, initargs)


def _ray(runtime: RuntimeConfig, initializer: Callable[..., None], initargs: tuple) -> Engine:
    from .ray_pool import RayPool

    return RayPool(runtime.workers, initializer, initargs, runtime.ray_address)


ENGINES: dict[str, Callable[[RuntimeConfig, Callable[..., None], tuple], Engine]] = {"local": _local, "ray": _ray}


def worker_pool(runtime: RuntimeConfig, initializer: Callable[..., None], initargs: tuple = ()) -> Engine:
    """The engine named by ``runtime.executor``."""
    return ENGINES[runtime.executor](runtime, initializer, initargs)

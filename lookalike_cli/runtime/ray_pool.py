"""The Ray engine (``--executor ray``): an ``Engine`` whose workers are actors on a Ray cluster.

Each actor holds one CPU, loads the models once and runs one item at a time. The driver (this process) sends
items in batches of up to ``MAX_BATCH`` (fewer as the work runs out, so that the last ones still spread over the
actors), keeps ``QUEUED`` batches in flight per actor and sends the next one as a batch comes back: its memory
does not grow with the number of photos, a round trip through Ray is paid once per batch, and results come in
completion order, as from the local pool. Actors read the
photos themselves, by path: the images must be at the same path on every node (checked when an actor starts);
the data directory stays with the driver, which writes every artifact.

An actor that dies (its process killed, its node lost, dlib crashing on a photo) is replaced, and the items it
held go to the other actors; those of the batch it was running are suspects and go alone from then on. An item
that has been running in ``MAX_DEATHS`` actors when they died is given up: ``failed(item, failure)`` stands for
its result.

There are no Ray tasks beside the actors (no Ray Data reads), so the actors may take every CPU of a node: the
hang of ray-project/ray#44687 needs tasks that wait for a CPU the actors hold.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter, deque
from importlib import metadata
from typing import Any, Callable, Iterator, Sequence, TypeVar

from ..errors import Failure, LookalikeError
from .pool import TaskFailed, progress, resolve_workers

log = logging.getLogger(__name__)

LOCAL_NODE_ADDRESS = "127.0.0.2"
T = TypeVar("T")
R = TypeVar("R")

INSTALL_HINT = "--executor ray needs Ray: pip install 'lookalike[ray]'"
QUEUED = 2  # batches sent to an actor ahead of their results: one running, one waiting behind it
MAX_BATCH = 8  # items per round trip at most
MAX_DEATHS = 3  # actors that may die running one item before it is given up
STALL_SECONDS = 600.0  # no result and no actor started for this long: the cluster is stuck
CLIENT_ATTEMPTS = 3  # a Ray Client connection the head fails to set up is tried this many times
CLIENT_PAUSE = 2.0  # seconds before the second attempt (twice that before the third)
CLIENT_SERVER_LOG = "ray.util.client.logsclient"  # the logger Ray Client hands the head's log of this driver to


class ClientServerLog(logging.Handler):
    """The lines of the head's log that Ray Client streams to this driver, as debug lines of this module (seen
    with -vv); errors, Ray Client's own included, at their level. Ray's logger for them has no handler and does
    not propagate, so Python would print each warning on stderr: Ray's "SIGTERM handler is not set because
    current thread is not the main thread." on every build."""

    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelno if record.levelno >= logging.ERROR or record.exc_info else logging.DEBUG
        log.log(level, "Ray Client server: %s", record.getMessage().rstrip(), exc_info=record.exc_info)


def hear_client_server() -> None:
    """Route Ray Client's stream of the head's log through ClientServerLog (once per process)."""
    streamed = logging.getLogger(CLIENT_SERVER_LOG)
    if not any(isinstance(handler, ClientServerLog) for handler in streamed.handlers):
        streamed.addHandler(ClientServerLog())


def first_line(error: BaseException) -> str:
    """The error's first line; when that only announces what follows (a server's traceback), with the last."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return f"{lines[0]} {lines[-1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]


def check_reachable(address: str) -> None:
    """A one-line error now, rather than Ray retrying for minutes, when nothing listens at ``address``."""
    if address in ("", "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise LookalikeError(f"--ray-address {address!r} must be auto, host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise LookalikeError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}): start it "
                             "(ray start --head) or correct --ray-address") from None


def batch_size(waiting: int, actors: int) -> int:
    """Items in the next batch: ``MAX_BATCH`` while there is plenty of work, down to one for the last ones, so
    that every actor keeps about ``4 * QUEUED`` batches of what is left."""
    return max(1, min(MAX_BATCH, waiting // (4 * QUEUED * max(1, actors))))


def probe_path(items: Sequence[Any]) -> str:
    """A file the items name (``item.path``) that this machine can read: every node must read it too."""
    for item in items[:100]:
        path = getattr(item, "path", "")
        if path and os.access(path, os.R_OK):
            return str(path)
    return ""


def join_cluster(ray: Any, address: str, workers: int) -> bool:
    """Join the Ray cluster at ``address`` (``auto``, ``host:port``, ``ray://host:port``), or start Ray on this
    machine (for ``workers`` CPUs, 0: every core) when it is empty; nothing when this process has joined already.
    Whether it joined now (and so should leave: ``ray.shutdown``)."""
    if ray.is_initialized():
        return False
    check_reachable(address)
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    for attempt in range(1, CLIENT_ATTEMPTS + 1):
        try:
            if address:
                if address.startswith("ray://"):
                    hear_client_server()
                ray.init(address=address, **quiet)
            else:
                # on a loopback address of its own: a Ray started here serves this machine only (Ray would take
                # the host's network address for 127.0.0.1)
                ray.init(num_cpus=resolve_workers(workers), include_dashboard=False,
                         _node_ip_address=LOCAL_NODE_ADDRESS, **quiet)
            return True
        except ConnectionAbortedError as exc:  # Ray Client: the head could not start this driver's server
            if attempt == CLIENT_ATTEMPTS:
                raise LookalikeError(f"cannot join the Ray cluster at {address} ({attempt} attempts): "
                                     f"{first_line(exc)}") from None
            log.warning("Ray Client at %s refused attempt %d (%s); trying again", address, attempt, first_line(exc))
            time.sleep(CLIENT_PAUSE * attempt)
        except ConnectionError as exc:
            raise LookalikeError(f"cannot join the Ray cluster at {address}: {first_line(exc)}") from None
    return True


class DlibActor:
    """One Ray actor: ``start`` loads the models once, ``run`` runs a batch of items."""

    def start(self, initializer: Callable[..., None], initargs: tuple, version: str, probe: str) -> tuple[str, str]:
        """(this node's address, why this actor cannot work, or "")."""
        import ray

        node = ray.util.get_node_ip_address()
        here = metadata.version("lookalike")
        if here != version:
            return node, f"runs lookalike {here}, the driver {version}: install the same version on every node"
        if probe and not os.access(probe, os.R_OK):
            return node, (f"cannot read {probe}: the images must be at the same path on every node (a shared "
                          "filesystem such as NFS)")
        try:
            initializer(*initargs)
        except Exception as exc:  # reported as one line by the driver
            return node, str(exc) if isinstance(exc, LookalikeError) else f"{type(exc).__name__}: {exc}"
        return node, ""

    def run(self, func: Callable[[T], R], items: list[T]) -> list[R]:
        return [func(item) for item in items]


class RayPool:
    """``engines.Engine`` over Ray: ``workers`` actors (0: one per CPU of the cluster) that run
    ``initializer(*initargs)`` once each and serve every ``map`` until closed. Ray is joined at ``address``
    (``auto``, ``host:port``, ``ray://host:port``), or started on this machine when it is empty, on the first
    ``map``; ``nodes`` counts the items each node did in the last ``map``."""

    def __init__(self, workers: int, initializer: Callable[..., None], initargs: tuple = (), address: str = ""):
        try:
            import ray
        except ImportError:
            raise LookalikeError(INSTALL_HINT) from None
        self._ray = ray
        self.workers = workers
        self.initializer = initializer
        self.initargs = initargs
        self.address = address
        self.nodes: Counter[str] = Counter()
        self._actor_class: Any = None
        self._connected_here = False
        self._version = metadata.version("lookalike")
        self._probe = ""
        self._starting: dict[Any, Any] = {}  # start() result -> actor
        self._ready: dict[Any, deque] = {}  # actor -> its batches in flight: (result ref, [(item, deaths), ...])
        self._node_of: dict[Any, str] = {}
        self._start_deaths = 0

    def map(self, func: Callable[[T], R], items: Sequence[T], desc: str = "", unit: str = "image",
            failed: Callable[[T, Failure], R] | None = None) -> Iterator[R]:
        """Yield ``func(item)`` for every item, in completion order, with a progress bar; ``failed(item,
        failure)`` (reason ``crashed``) for an item that killed ``MAX_DEATHS`` actors (without ``failed``, such
        an item is an error)."""
        self.nodes = Counter()
        if items:
            yield from progress(self._results(func, items, failed), len(items), desc, unit)

    def _connect(self) -> None:
        if self._actor_class is not None:
            return
        self._connected_here = join_cluster(self._ray, self.address, self.workers)
        self._actor_class = self._ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(DlibActor)

    def _spawn(self) -> None:
        actor = self._actor_class.remote()
        self._starting[actor.start.remote(self.initializer, self.initargs, self._version, self._probe)] = actor

    def _results(self, func: Callable[[T], R], items: Sequence[T], failed: Callable[[T, Failure], R] | None):
        ray = self._ray
        self._connect()
        self._probe = probe_path(items)
        if not self._ready and not self._starting:
            cpus = int(ray.cluster_resources().get("CPU", 0))
            if cpus < 1:
                raise LookalikeError("the Ray cluster has no CPU to run on")
            for _ in range(self.workers or cpus):
                self._spawn()
        source = iter(items)
        retry: deque[tuple[Any, int]] = deque()  # (item, deaths) of items queued behind a batch whose actor died
        suspects: deque[tuple[Any, int]] = deque()  # (item, deaths) of items in a batch whose actor died: alone
        owner: dict[Any, Any] = {}  # result ref -> actor
        left = unsent = len(items)  # not yielded yet; not yet taken from ``items``
        while left:
            for actor, queue in self._ready.items():
                while len(queue) < QUEUED and (suspects or retry or unsent):
                    if suspects:
                        batch = [suspects.popleft()]
                    else:
                        size = batch_size(len(retry) + unsent, len(self._ready) + len(self._starting))
                        batch = [retry.popleft() for _ in range(min(size, len(retry)))]
                        fresh = min(size - len(batch), unsent)
                        batch += [(next(source), 0) for _ in range(fresh)]
                        unsent -= fresh
                    ref = actor.run.remote(func, [item for item, _ in batch])
                    queue.append((ref, batch))
                    owner[ref] = actor
            done, _ = ray.wait(list(owner) + list(self._starting), num_returns=1, timeout=STALL_SECONDS)
            if not done:
                raise LookalikeError(f"the Ray cluster did nothing for {STALL_SECONDS:.0f} s ({len(self._ready)} "
                                     f"workers running, {len(self._starting)} waiting for a CPU)")
            ref = done[0]
            if ref in self._starting:
                self._started(ref)
                continue
            actor = owner.pop(ref)
            try:
                results = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                given_up = self._lost(actor, exc, owner, retry, suspects)
                if given_up is None:
                    continue
                if failed is None:
                    raise LookalikeError(f"{given_up[0]!r}: {given_up[1]}") from None
                results = [failed(given_up[0], TaskFailed("crashed", given_up[1]))]
            else:
                queue = self._ready[actor]
                queue.remove(next(entry for entry in queue if entry[0] == ref))
                self.nodes[self._node_of[actor]] += len(results)
            for result in results:
                left -= 1
                yield result

    def _started(self, ref: Any) -> None:
        actor = self._starting.pop(ref)
        try:
            node, problem = self._ray.get(ref)
        except self._ray.exceptions.RayActorError as exc:
            self._start_deaths += 1
            if self._start_deaths >= MAX_DEATHS:
                raise LookalikeError(f"Ray workers die while they load the models: {first_line(exc)}") from None
            self._spawn()
            return
        if problem:
            raise LookalikeError(f"the Ray worker on node {node} {problem}")
        self._start_deaths = 0
        self._ready[actor] = deque()
        self._node_of[actor] = node

    def _lost(self, actor: Any, error: BaseException, owner: dict, retry: deque,
              suspects: deque) -> tuple[Any, str] | None:
        """Replace a dead actor and queue its items again, those of the batch it was running as suspects; (item,
        why) when that batch was one item that has now been running in ``MAX_DEATHS`` dead actors."""
        queue = self._ready.pop(actor)
        self._node_of.pop(actor)
        self._ray.kill(actor)
        self._spawn()
        for ref, _ in queue:
            owner.pop(ref, None)
        (_, running), *behind = queue  # an actor runs its batches in order: the first was running
        for _, batch in reversed(behind):
            for entry in reversed(batch):
                (suspects if entry[1] else retry).appendleft(entry)
        if len(running) == 1 and running[0][1] + 1 >= MAX_DEATHS:
            return running[0][0], f"its worker process died {MAX_DEATHS} times running it ({first_line(error)})"
        suspects.extendleft((item, deaths + 1) for item, deaths in reversed(running))
        return None

    def close(self) -> None:
        for actor in [*self._ready, *self._starting.values()]:
            self._ray.kill(actor)
        self._ready.clear()
        self._starting.clear()
        self._node_of.clear()
        if self._connected_here:
            self._ray.shutdown()
            self._connected_here = False
        self._actor_class = None

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

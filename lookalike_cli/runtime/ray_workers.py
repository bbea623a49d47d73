"""Recognition workers on a Ray cluster (``serve`` and ``bot`` with ``--executor ray``): the local pool's
``submit``, with the bounds it keeps, over actors spread on the cluster's nodes.

Each actor answers on one CPU of its node, runs the pool's initializer once (the models and the gallery) and answers one photo at
a time. A supervising thread gives a free actor the next waiting photo (``scheduling.TaskQueue``: the client that
used least worker time first, large photos kept off the last ready actor), kills an actor whose photo runs past
its deadline and starts another in its place, and replaces an actor that dies, with its process or its node. A
photo whose actor was lost is sent once more to another actor (a query has no side effects); a second loss fails
it (``lost``: the recognizer answers it as busy, to be tried again). With ``workers`` 0 the pool keeps one actor per CPU of the cluster, counted every
``NODES_CHECK`` seconds: a node that joins is used without a restart, one that leaves is not waited for.

A newly published generation is loaded by the same actors, one first, then the others, each when it is free
(``reload``): the cluster's CPUs are the actors', and a second pool's actors would wait for them. The detection
fallback's slots (``RaySlots``) are an actor of their own, so that the bound holds across nodes; a
slot held by an actor that is killed or lost is given back by this driver.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable

from ..errors import LookalikeError
from .pool import TaskFailed
from .ray_pool import INSTALL_HINT, MAX_DEATHS, DlibActor, first_line, join_cluster
from .scheduling import SupervisedPool, Task

log = logging.getLogger(__name__)

POLL = 0.005  # seconds between two looks at the actors while photos are in work
IDLE_WAIT = 0.5  # seconds the supervisor sleeps when nothing is in work (a new photo wakes it)
NODES_CHECK = 2.0  # seconds between two counts of the cluster's CPUs (workers 0)


def joined(address: str, workers: int) -> Any:
    """The ``ray`` module, this process joined to the cluster at ``address`` (see ray_pool.join_cluster)."""
    try:
        import ray
    except ImportError:
        raise LookalikeError(INSTALL_HINT) from None
    join_cluster(ray, address, workers)
    return ray


def cluster_cpus() -> int:
    """The CPUs of the cluster's live nodes."""
    import ray

    return int(ray.cluster_resources().get("CPU", 0))


def cluster_size(workers: int, address: str) -> int:
    """The recognition workers of ``workers`` on the cluster at ``address``: that many, or 0: one per CPU now."""
    joined(address, workers)
    return workers or max(1, cluster_cpus())


class RecognitionActor(DlibActor):
    """A recognition worker: ``start`` as every lookalike actor, then one call at a time."""

    def ident(self) -> str:
        import ray

        return ray.get_runtime_context().get_actor_id()

    def call(self, func: Callable[..., Any], args: tuple) -> Any:
        return func(*args)


class SlotsActor:
    """``count`` slots, each held by one actor id at a time."""

    def __init__(self, count: int):
        self.count = count
        self.holders: set[str] = set()

    def acquire(self, holder: str) -> bool:
        if holder in self.holders or len(self.holders) < self.count:
            self.holders.add(holder)
            return True
        return False

    def release(self, holder: str) -> None:
        self.holders.discard(holder)


class RaySlots:
    """At most ``count`` holders at a time among the actors given this object (as ``runtime.pool.ProcessSlots`` is
    among processes): ``acquire`` never waits; the driver gives back the slot of an actor it lost (``forget``)."""

    def __init__(self, count: int):
        import ray

        self.count = count
        self._actor = ray.remote(num_cpus=0)(SlotsActor).remote(count)

    def acquire(self, block: bool = False) -> bool:
        import ray

        return ray.get(self._actor.acquire.remote(ray.get_runtime_context().get_actor_id()))

    def release(self) -> None:
        import ray

        ray.get(self._actor.release.remote(ray.get_runtime_context().get_actor_id()))

    def forget(self, holder: str) -> None:
        self._actor.release.remote(holder)

    def close(self) -> None:
        import ray

        ray.kill(self._actor)


@dataclass
class _Actor:
    handle: Any
    node: str
    ident: str
    task: Task | None = None
    ref: Any = None  # the result of its task, or of its reload
    stale: bool = False  # to run the initializer again (reload)
    reloading: bool = False

    @property
    def idle(self) -> bool:
        return self.task is None and not self.reloading


class RayWorkers(SupervisedPool):
    """``workers`` recognition actors (0: one per CPU of the cluster) on the Ray cluster at ``address`` (see
    ``ray_pool.join_cluster``), each running ``initializer(*initargs)`` once; ``slots``: the fallback's slots to give
    back for a lost actor. The interface of ``runtime.pool.ProcessPool`` that the recognizer uses."""

    thread_name = "ray-workers"

    def __init__(self, workers: int, initializer: Callable[..., None], initargs: tuple = (), address: str = "",
                 slots: RaySlots | None = None):
        super().__init__()
        self._ray = ray = joined(address, workers)
        self.workers = workers
        self.initializer = initializer
        self.initargs = initargs
        self.slots = slots
        self.size = cluster_size(workers, address)
        self.replaced = 0
        self.answered: Counter[str] = Counter()  # photos answered, by node
        self._class = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0,
                                 scheduling_strategy="SPREAD")(RecognitionActor)
        self._version = metadata.version("lookalike")
        self._starting: dict[Any, Any] = {}  # start() result -> actor handle
        self._actors: list[_Actor] = []
        self._start_deaths = 0
        self._awake = threading.Event()
        self._counted = 0.0
        self._reload_problem: str | None = None
        self._reload_proven = False  # an actor has run the new initializer

    # What the recognizer uses.

    def _all_started(self) -> bool:
        return len(self._actors) >= self.size

    def reload(self, initargs: tuple) -> None:
        """Run the initializer again with ``initargs`` in every actor (and in those started from now on), each when
        it is free, the others answering meanwhile: first in one actor, then in the rest at once. Returns when all
        have; LookalikeError if the first could not (every actor then goes on as it was)."""
        with self._lock:
            self.initargs = initargs
            self._reload_problem, self._reload_proven = None, False
            for actor in self._actors:
                actor.stale = True
        self._wake()
        while True:
            with self._lock:
                if self._reload_problem is not None or self._closing:
                    raise LookalikeError(self._reload_problem or "the pool is closing")
                if not any(actor.stale or actor.reloading for actor in self._actors):
                    return
            time.sleep(0.02)

    @property
    def busy(self) -> int:
        return sum(actor.task is not None for actor in self._actors)

    def worker_pids(self) -> list[int]:
        return []  # processes of other machines: the recognizer's memory checks are for the local pool

    ready_worker_pids = worker_pids

    def nodes(self) -> dict[str, dict[str, int]]:
        """Per node: its ready workers and the photos they answered."""
        with self._lock:
            workers = Counter(actor.node for actor in self._actors)
            return {node: {"workers": workers[node], "answers": self.answered[node]}
                    for node in sorted(set(workers) | set(self.answered))}

    def close(self) -> None:
        """Cancel the waiting tasks, stop the supervising thread and kill the actors (failing their tasks)."""
        if not self._stop_supervising():
            return
        for actor in self._actors:
            if actor.task is not None:
                actor.task.future.cancel() or actor.task.future.set_exception(TaskFailed("crashed", "pool closed"))
            self._ray.kill(actor.handle)
        for handle in self._starting.values():
            self._ray.kill(handle)
        self._actors.clear()
        self._starting.clear()

    # The supervising thread.

    def _wake(self) -> None:
        self._awake.set()

    def _supervise(self) -> None:
        ray = self._ray
        while True:
            with self._lock:
                if self._closing:
                    return
                self._fill()
                self._dispatch()
                refs = list(self._starting) + [actor.ref for actor in self._actors if actor.ref is not None]
            if refs:
                done, _ = ray.wait(refs, num_returns=1, timeout=POLL)
            else:
                self._awake.wait(IDLE_WAIT)
                done = []
            self._awake.clear()
            with self._lock:
                for ref in done:
                    if ref in self._starting:
                        self._started(ref)
                    else:
                        self._finished(ref)
                self._check_deadlines()

    def _fill(self) -> None:
        """Start actors up to the pool's size (one per CPU of the cluster, counted now and then, for workers 0)."""
        if self.workers == 0 and time.monotonic() - self._counted > NODES_CHECK:
            self._counted = time.monotonic()
            cpus = cluster_cpus()
            if cpus and cpus != self.size:
                log.warning("the Ray cluster has %d CPUs now: %d recognition workers", cpus, cpus)
                self.size = cpus
        while not self._broken and len(self._actors) + len(self._starting) < self.size:
            handle = self._class.remote()
            self._starting[handle.start.remote(self.initializer, self.initargs, self._version, "")] = handle
        while len(self._starting) and len(self._actors) + len(self._starting) > self.size:
            ref, handle = next(iter(self._starting.items()))  # waiting for a CPU that left with its node
            del self._starting[ref]
            self._ray.kill(handle)
        idle = [actor for actor in self._actors if actor.idle]
        while idle and len(self._actors) > self.size:  # the cluster has fewer CPUs: fewer actors share them
            actor = idle.pop()
            self._actors.remove(actor)
            self._ray.kill(actor.handle)

    def _started(self, ref: Any) -> None:
        handle = self._starting.pop(ref)
        try:
            node, problem = self._ray.get(ref)
            ident = self._ray.get(handle.ident.remote())
        except self._ray.exceptions.RayActorError as exc:
            self._start_deaths += 1  # a node lost while its actor started, or an actor that cannot start
            if self._start_deaths >= MAX_DEATHS and not self._actors:
                self._break(f"Ray workers die while they load the gallery: {first_line(exc)}")
            return
        if problem:
            self._break(f"the Ray worker on node {node} {problem}")
            return
        self._start_deaths = 0
        self._actors.append(_Actor(handle, node, ident))

    def _dispatch(self) -> None:
        reloading = sum(actor.reloading for actor in self._actors)
        for actor in self._actors:
            if actor.idle and actor.stale and (self._reload_proven or not reloading):
                actor.stale, actor.reloading, reloading = False, True, reloading + 1
                actor.ref = actor.handle.start.remote(self.initializer, self.initargs, self._version, "")
            if not actor.idle:
                continue
            running = [a.task for a in self._actors if a.task is not None]
            task = self._queue.take(running, len(self._actors), self.size)
            if task is None:
                continue  # none may start on this one; another may still have a reload to begin
            if not task.future.set_running_or_notify_cancel():
                continue
            task.started = time.monotonic()
            actor.task, actor.ref = task, actor.handle.call.remote(task.func, task.args)

    def _finished(self, ref: Any) -> None:
        actor = next(actor for actor in self._actors if actor.ref is ref)
        if actor.reloading:
            self._reloaded(actor, ref)
            return
        task, actor.task, actor.ref = actor.task, None, None
        self._queue.charge(task)
        try:
            result = self._ray.get(ref)
        except self._ray.exceptions.RayActorError as exc:
            self._lose(actor, TaskFailed("lost", f"its Ray worker on {actor.node} was lost ({first_line(exc)})"),
                       task)
        except self._ray.exceptions.RayTaskError as exc:  # what the function raised
            task.future.set_exception(exc.as_instanceof_cause())
        else:
            self.answered[actor.node] += 1
            task.future.set_result(result)

    def _reloaded(self, actor: _Actor, ref: Any) -> None:
        actor.reloading, actor.ref = False, None
        try:
            _, problem = self._ray.get(ref)
        except self._ray.exceptions.RayActorError as exc:
            self._lose(actor, TaskFailed("crashed", f"lost while it loaded anew ({first_line(exc)})"))
            return
        if problem and not self._reload_proven:
            self._reload_problem = f"the Ray worker on node {actor.node} {problem}"
            for other in self._actors:
                other.stale = False
        elif problem:
            log.warning("Ray worker on %s could not load anew (%s): replaced", actor.node, problem)
            self._lose(actor, TaskFailed("crashed", problem))
        else:
            self._reload_proven = True

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for actor in list(self._actors):
            task = actor.task
            if task is not None and task.deadline is not None and now >= task.deadline:
                actor.task = actor.ref = None
                self._queue.charge(task)
                self._lose(actor, TaskFailed("timeout", f"not done within {task.timeout:g} s"))
                task.future.set_exception(TaskFailed("timeout", f"not done within {task.timeout:g} s"))
        for task in self._queue.expired(now):
            task.future.set_exception(TaskFailed("timeout", f"not done within {task.timeout:g} s"))

    def _lose(self, actor: _Actor, failure: TaskFailed, task: Task | None = None) -> None:
        """Kill and drop an actor (``_fill`` starts another); its ``task``, if given, goes to another actor once,
        then fails with ``failure``."""
        self._actors.remove(actor)
        self._ray.kill(actor.handle)
        self.replaced += 1
        if self.slots is not None:
            self.slots.forget(actor.ident)
        log.info("Ray worker on %s replaced: %s", actor.node, failure)
        if task is None:
            return
        task.attempts += 1
        if task.attempts > 1 or (task.deadline is not None and time.monotonic() >= task.deadline):
            task.future.set_exception(failure)
        else:
            task.future = _rerun(task.future)
            self._queue.waiting.appendleft(task)



def _rerun(future: Future) -> Future:
    """A running future again pending, for a task sent once more (a Future cannot go back from running)."""
    again: Future = Future()
    again.add_done_callback(lambda done: _copy_outcome(done, future))
    return again


def _copy_outcome(source: Future, target: Future) -> None:
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())
    else:
        target.set_result(source.result())

"""Which waiting task a free worker takes: the task of the client that has used the least worker time lately, and
a large task only while a ready worker is left for the others. Shared by the local process pool (``pool``) and
the recognition workers on Ray (``ray_workers``)."""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable

from ..errors import LookalikeError

USAGE_HALF_LIFE = 10.0  # seconds: a client's worker time counts half as much this long after it was spent
MAX_CLIENTS_TRACKED = 10_000  # clients whose worker time is remembered


@dataclass
class Task:
    func: Callable[..., Any]
    args: tuple
    future: Future
    deadline: float | None  # time.monotonic() by which it must be done
    timeout: float | None
    large: bool = False
    client: Hashable = None  # whose task: waiting tasks are taken by their clients' worker time (see TaskQueue.take)
    started: float = 0.0  # time.monotonic() when a worker took it
    attempts: int = 0  # workers lost while they ran it (a pool may send it once more)


class TaskQueue:
    """Tasks waiting for a worker, and the worker time each client has used lately (not thread-safe: its pool's
    lock guards it)."""

    def __init__(self) -> None:
        self.waiting: deque[Task] = deque()
        self._usage: dict[Hashable, tuple[float, float]] = {}  # client -> (worker seconds, when last charged)

    def __len__(self) -> int:
        return len(self.waiting)

    def add(self, func: Callable[..., Any], args: tuple, timeout: float | None, large: bool,
            client: Hashable) -> Future:
        """Queue ``func(*args)``; its future, which fails with the pool's failures."""
        future: Future = Future()
        deadline = time.monotonic() + timeout if timeout else None
        self.waiting.append(Task(func, args, future, deadline, timeout, large, client))
        return future

    def take(self, running: Iterable[Task], ready: int, size: int) -> Task | None:
        """The waiting task a free worker starts now, taken off the queue (None: none may start). Of the tasks that
        may start (a large one only while another ready worker, not one still starting, is left for the tasks
        that are not large; with a pool of one worker, whenever it is free), the first of the client that has
        used the least worker time (``client_usage``). ``running``: the tasks in work; ``ready``: the workers
        that take tasks; ``size``: the workers the pool should have."""
        running = list(running)
        may_start_large = size == 1 or sum(task.large for task in running) < ready - 1
        waiting = [task for task in self.waiting if may_start_large or not task.large]
        if not waiting:
            return None
        if len({task.client for task in waiting}) < 2:
            chosen = waiting[0]
        else:
            now = time.monotonic()
            chosen = min(waiting, key=lambda task: self.client_usage(task.client, now, running))  # first of equals
        self.waiting.remove(chosen)
        return chosen

    def client_usage(self, client: Hashable, now: float, running: Iterable[Task] = ()) -> float:
        """The worker seconds ``client`` has used, halved every USAGE_HALF_LIFE seconds since, and those its tasks
        in ``running`` have used so far."""
        spent, when = self._usage.get(client, (0.0, now))
        in_work = sum(now - task.started for task in running if task.client == client)
        return spent * 0.5 ** ((now - when) / USAGE_HALF_LIFE) + in_work

    def charge(self, task: Task) -> None:
        """Add a finished (or killed) task's worker time to its client's."""
        now = time.monotonic()
        spent, when = self._usage.get(task.client, (0.0, now))
        self._usage[task.client] = (spent * 0.5 ** ((now - when) / USAGE_HALF_LIFE) + now - task.started, now)
        if len(self._usage) > MAX_CLIENTS_TRACKED:  # forget the clients that used least, lately
            for client, _ in sorted(self._usage.items(), key=lambda item: item[1][0])[:len(self._usage) // 2]:
                del self._usage[client]

    def expired(self, now: float) -> list[Task]:
        """The waiting tasks past their deadline, taken off the queue."""
        late = [task for task in self.waiting if task.deadline is not None and now >= task.deadline]
        for task in late:
            self.waiting.remove(task)
        return late

    def deadlines(self) -> list[float]:
        return [task.deadline for task in self.waiting if task.deadline is not None]

    def drain(self) -> list[Task]:
        """Every waiting task, taken off the queue."""
        tasks = list(self.waiting)
        self.waiting.clear()
        return tasks


class SupervisedPool:
    """Workers fed from a TaskQueue by a supervising thread: what the local process pool and the Ray workers share.
    A subclass starts its workers, hands them tasks and watches them in ``_supervise`` (under ``_lock``), says when
    every worker has started (``_all_started``), how to wake the thread (``_wake``) and how to stop (``close``)."""

    thread_name = "pool"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue = TaskQueue()
        self._broken: str | None = None  # why workers cannot start: every task fails with it
        self._closing = False
        self._thread: threading.Thread | None = None

    def submit(self, func: Callable[..., Any], *args: Any, timeout: float | None = None, large: bool = False,
               client: Hashable = None) -> Future:
        """Run ``func(*args)`` in a worker; the future fails with the pool's TaskFailed when the worker dies or
        the task is not done ``timeout`` seconds from now (waiting included), or with what ``func`` raised; with
        LookalikeError when workers cannot start. ``large`` tasks (expensive ones) leave a ready worker to the
        others, so that a burst of them never holds every worker: a task that is not large may start before large
        ones that wait. Of the tasks waiting, a free worker takes one of the ``client`` that has used the least
        worker time lately (first come first served among equals), so that a client sending costly photos waits
        behind the others (TaskQueue.take)."""
        with self._lock:
            if self._closing:
                raise RuntimeError("the pool is closed")
            if self._broken:
                future: Future = Future()
                future.set_exception(LookalikeError(self._broken))
                return future
            future = self._queue.add(func, args, timeout, large, client)
            self._ensure_thread()
        self._wake()
        return future

    def start(self) -> None:
        """Start the workers and wait until each has run its initializer; LookalikeError if they cannot."""
        with self._lock:
            self._ensure_thread()
        self._wake()
        while True:
            with self._lock:
                if self._broken:
                    raise LookalikeError(self._broken)
                if self._all_started():
                    return
            time.sleep(0.01)

    @property
    def queued(self) -> int:
        """Tasks waiting for a worker."""
        return len(self._queue)

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _stop_supervising(self) -> bool:
        """Cancel the waiting tasks and end the supervising thread; False when the pool was closed already."""
        with self._lock:
            if self._closing:
                return False
            self._closing = True
            for task in self._queue.drain():
                task.future.cancel()
        self._wake()
        if self._thread is not None:
            self._thread.join()
        return True

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._supervise, name=self.thread_name, daemon=True)
            self._thread.start()

    def _break(self, message: str) -> None:
        """Workers cannot start: fail every task, now and later, with ``message``."""
        self._broken = message
        for task in self._queue.drain():
            task.future.set_exception(LookalikeError(message))

    def _all_started(self) -> bool:
        raise NotImplementedError

    def _wake(self) -> None:
        raise NotImplementedError

    def _supervise(self) -> None:
        raise NotImplementedError

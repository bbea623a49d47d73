"""Worker processes for dlib and image work (dlib holds the GIL, so threads would not help), that outlive a task
gone wrong.

``ProcessPool`` runs tasks one at a time per worker process. A task fails, and the run goes on, when its worker
dies (a crash in a decoder or in dlib), when it is not done by the deadline given with it, or when it overruns a
time limit it set for a part of its work (``time_limit``, e.g. decoding an image): the worker is killed, which
really stops the work, and a new one takes its place. The engines (``engines``) map a function over many items
with it or with a Ray cluster.
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterable, Iterator, TypeVar

from tqdm import tqdm

from ..errors import Failure, LookalikeError
from .scheduling import SupervisedPool, Task

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

STOP_GRACE = 2.0  # seconds a closing pool gives its idle workers to exit before they are killed


class TaskFailed(Failure):
    """A task that did not finish: its worker died (reason ``crashed``; on Ray, ``lost`` with its node) or it ran
    past its deadline (``timeout``). A task that overruns a ``time_limit`` fails with the failure given to it
    instead."""


class ProcessSlots:
    """At most ``count`` holders at a time among the processes given this object (it pickles to its folder), and
    a holder that dies gives its slot back: slot i is an exclusive ``flock`` on file i of a private folder, which
    the kernel releases with the process (a semaphore taken by a worker killed at its deadline is never given
    back). ``acquire`` never waits. ``close`` (in the process that made it) removes the folder."""

    def __init__(self, count: int):
        self.count = count
        self.folder = tempfile.mkdtemp(prefix="lookalike-slots-")
        self._held: int | None = None  # the descriptor of this process's slot

    def __getstate__(self) -> dict:
        return {"count": self.count, "folder": self.folder, "_held": None}

    def acquire(self, block: bool = False) -> bool:
        """Take a free slot now (``block`` is not supported: never waits); False when all are held."""
        for number in range(self.count):
            fd = os.open(os.path.join(self.folder, str(number)), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._held = fd
            return True
        return False

    def release(self) -> None:
        if self._held is not None:
            os.close(self._held)  # closing the only descriptor of the file releases its lock
            self._held = None

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def resolve_workers(workers: int) -> int:
    """``workers``, or one per available core when 0."""
    if workers > 0:
        return workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


_to_pool: Connection | None = None  # in a worker process: its pipe to the pool


@contextmanager
def time_limit(seconds: float, failure: Failure) -> Iterator[None]:
    """Run the block within ``seconds``: in a ``ProcessPool`` worker, the pool kills this process when the
    block runs over, and the task fails with ``failure``. Elsewhere (a command's own process) the block runs
    unbounded."""
    if _to_pool is None:
        yield
        return
    _to_pool.send(("limit", time.monotonic() + seconds, failure))  # one clock for every process of the machine
    try:
        yield
    finally:
        _to_pool.send(("limit", None, None))


def _serve(connection: Connection, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    """A worker process: run the initializer once, then one task after another until told to stop."""
    global _to_pool
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the pool decides
    try:
        if initializer is not None:
            initializer(*initargs)
    except Exception as exc:
        connection.send(("broken", str(exc) if isinstance(exc, LookalikeError) else f"{type(exc).__name__}: {exc}"))
        return
    _to_pool = connection
    connection.send(("ready",))
    while (task := connection.recv()) is not None:
        func, args = task
        try:
            connection.send(("done", func(*args)))
        except Exception as exc:
            try:
                connection.send(("error", exc))
            except Exception:  # an exception that cannot be sent
                connection.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))


@dataclass
class _Worker:
    process: Any
    connection: Connection
    ready: bool = False
    task: Task | None = None
    limit: tuple[float, Failure] | None = None  # (monotonic deadline, failure) of the time_limit in force

    def overdue(self, now: float) -> Failure | None:
        """The failure of its task if the task has run past its deadline or its time limit."""
        task = self.task
        if task is None:
            return None
        if self.limit is not None and now >= self.limit[0]:
            return self.limit[1]
        if task.deadline is not None and now >= task.deadline:
            return TaskFailed("timeout", f"not done within {task.timeout:g} s")
        return None


class ProcessPool(SupervisedPool):
    """``workers`` processes that each run ``initializer(*initargs)`` once (to load models), then tasks given to
    ``submit``, first come first served. Processes start on the first ``submit`` (or ``start``) and are replaced
    when they die or are killed over a deadline. Thread-safe; a supervising thread does all the bookkeeping."""

    thread_name = "process-pool"

    def __init__(self, workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()):
        super().__init__()
        self.size = workers
        self.initializer = initializer
        self.initargs = initargs
        self._context = multiprocessing.get_context("forkserver")
        self._workers: list[_Worker] = []
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        self.replaced = 0  # workers killed over a deadline or found dead, and replaced
        self.answered = 0  # tasks done

    def _all_started(self) -> bool:
        return len(self._workers) == self.size and all(worker.ready for worker in self._workers)

    @property
    def busy(self) -> int:
        """Tasks in work."""
        return sum(worker.task is not None for worker in self._workers)

    def worker_pids(self) -> list[int]:
        """The process ids of the workers, those still running their initializer included."""
        with self._lock:
            return [worker.process.pid for worker in self._workers]

    def ready_worker_pids(self) -> list[int]:
        """The process ids of the workers that have run their initializer and take tasks."""
        with self._lock:
            return [worker.process.pid for worker in self._workers if worker.ready]

    def nodes(self) -> dict[str, dict[str, int]]:
        """This machine (by its host name), its ready workers and the tasks they did."""
        with self._lock:
            return {socket.gethostname(): {"workers": sum(worker.ready for worker in self._workers),
                                           "answers": self.answered}}

    def close(self) -> None:
        """Cancel the waiting tasks, stop the workers (killing those in work) and the supervising thread."""
        if self._stop_supervising():
            os.close(self._wake_read)
            os.close(self._wake_write)

    # The supervising thread.

    def _wake(self) -> None:
        try:
            os.write(self._wake_write, b".")
        except (BlockingIOError, OSError):  # the pipe is full (the thread will wake anyway) or closed
            pass

    def _supervise(self) -> None:
        while True:
            with self._lock:
                if self._closing:
                    break
                self._fill()
                self._dispatch()
                waits = [self._wake_read] + [w.connection for w in self._workers] + \
                        [w.process.sentinel for w in self._workers]
                timeout = self._next_deadline()
            ready = wait(waits, timeout)
            with self._lock:
                if self._wake_read in ready:
                    while True:
                        try:
                            if not os.read(self._wake_read, 4096):
                                break
                        except BlockingIOError:
                            break
                for worker in list(self._workers):
                    if worker in self._workers:  # not discarded by a worker before it
                        self._receive(worker)
                now = time.monotonic()
                for worker in list(self._workers):
                    failure = worker.overdue(now)
                    if failure is not None:
                        self._discard(worker, failure)
                for task in self._queue.expired(now):
                    task.future.set_exception(TaskFailed("timeout", f"not done within {task.timeout:g} s"))
        self._stop_workers()

    def _fill(self) -> None:
        """Start workers up to the pool's size (none once broken)."""
        while not self._broken and len(self._workers) < self.size:
            ours, theirs = self._context.Pipe()
            process = self._context.Process(target=_serve, args=(theirs, self.initializer, self.initargs),
                                            daemon=True, name="lookalike-worker")
            process.start()
            theirs.close()
            self._workers.append(_Worker(process, ours))

    def _dispatch(self) -> None:
        for worker in self._workers:
            while worker.ready and worker.task is None and (task := self._next_task()) is not None:
                if not task.future.set_running_or_notify_cancel():
                    continue  # cancelled while it waited
                try:
                    worker.connection.send((task.func, task.args))
                except (OSError, ValueError):  # died meanwhile: the sentinel says so next
                    pass
                task.started = time.monotonic()
                worker.task = task

    def _next_task(self) -> Task | None:
        running = [worker.task for worker in self._workers if worker.task is not None]
        return self._queue.take(running, sum(worker.ready for worker in self._workers), self.size)

    def _next_deadline(self) -> float | None:
        times = self._queue.deadlines()
        for worker in self._workers:
            if worker.task is not None:
                times += [worker.task.deadline] if worker.task.deadline is not None else []
                times += [worker.limit[0]] if worker.limit is not None else []
        return max(0.0, min(times) - time.monotonic()) if times else None

    def _receive(self, worker: _Worker) -> None:
        """Handle what a worker sent, or its death."""
        try:
            while worker.connection.poll():
                message = worker.connection.recv()
                kind = message[0]
                if kind == "ready":
                    worker.ready = True
                elif kind == "limit":
                    worker.limit = (message[1], message[2]) if message[1] is not None else None
                elif kind == "broken":
                    self._break(message[1])
                    return
                else:
                    task, worker.task, worker.limit = worker.task, None, None
                    if task is not None:
                        self._queue.charge(task)
                        self.answered += 1
                        (task.future.set_result if kind == "done" else task.future.set_exception)(message[1])
        except (EOFError, OSError):
            pass
        if worker.process.exitcode is not None or not worker.process.is_alive():
            if not worker.ready:
                self._break(f"a worker process exited with code {worker.process.exitcode} while starting")
            else:
                self._discard(worker, TaskFailed("crashed", f"the worker process died ({_exit_name(worker)})"))

    def _discard(self, worker: _Worker, failure: Failure) -> None:
        """Kill a worker (if it still runs), fail its task with ``failure``; ``_fill`` replaces it."""
        worker.process.kill()
        worker.process.join()
        worker.connection.close()
        self._workers.remove(worker)
        self.replaced += 1
        if worker.task is not None:
            log.info("task failed (%s); worker %d replaced", failure, worker.process.pid)
            self._queue.charge(worker.task)
            worker.task.future.set_exception(failure)

    def _break(self, message: str) -> None:
        super()._break(message)
        for worker in list(self._workers):
            self._discard(worker, LookalikeError(message))

    def _stop_workers(self) -> None:
        for worker in self._workers:
            if worker.task is None:
                try:
                    worker.connection.send(None)
                except (OSError, ValueError):
                    pass
            else:
                worker.process.kill()
                worker.task.future.cancel() or worker.task.future.set_exception(TaskFailed("crashed", "pool closed"))
        deadline = time.monotonic() + STOP_GRACE
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.connection.close()
        self._workers.clear()


def _exit_name(worker: _Worker) -> str:
    code = worker.process.exitcode
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"


def progress(results: Iterable[R], total: int, desc: str, unit: str) -> Iterator[R]:
    """``results`` as they come, counted on a progress bar."""
    with tqdm(total=total, desc=desc, unit=unit, disable=None, leave=False) as bar:
        for result in results:
            bar.update()
            yield result

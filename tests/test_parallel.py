"""The process pools: models load once per worker; a worker that dies, or a task over its deadline or its time
limit, fails that task with a reason, its worker is replaced and the other tasks go on."""

import logging
import os
import signal
import time
from pathlib import Path

import pytest
from PIL import Image

from lookalike_cli.config import ImageConfig
from lookalike_cli.errors import Failure, LookalikeError
from lookalike_cli.imaging.decode import ImageRejected, decode_image
from lookalike_cli.runtime.local import LocalPool
from lookalike_cli.runtime.pool import ProcessPool, ProcessSlots, TaskFailed, time_limit

import hostile
from conftest import encoded
from servers import wait_until

MARGIN = 5.0  # seconds allowed beyond a deadline for the pool to notice it and kill the worker (a busy machine)


def note_pid(log: str) -> None:
    with open(log, "a") as fh:
        fh.write(f"{os.getpid()}\n")


def square_with_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def sleep_then_double(seconds: float) -> float:
    with time_limit(0.5, Failure("timeout", "over half a second")):
        time.sleep(seconds)
    return seconds * 2


def exit_at_once(code: int) -> None:
    os._exit(code)


def kill_myself(_) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def raise_value_error(text: str) -> None:
    raise ValueError(text)


def fail_to_start() -> None:
    raise LookalikeError("the models folder lacks a file")


@pytest.mark.parametrize("workers", [1, 2])
def test_one_pool_serves_several_stages_and_initializes_each_worker_once(tmp_path: Path, workers: int):
    log = tmp_path / "initialized.txt"
    with LocalPool(workers, note_pid, (str(log),)) as pool:
        first = list(pool.map(square_with_pid, range(20)))
        second = list(pool.map(square_with_pid, range(20, 30)))
    initialized = log.read_text().split()
    assert sorted(value for value, _ in first + second) == [x * x for x in range(30)]
    assert len(set(initialized)) == len(initialized) == workers  # each worker initialized once, none again
    assert {pid for _, pid in first + second} <= {int(pid) for pid in initialized}
    assert str(os.getpid()) not in initialized  # every item runs in a worker, where a time limit can stop it


def test_a_worker_that_dies_fails_its_item_and_the_map_goes_on():
    failed = []
    with LocalPool(2, note_pid, (os.devnull,)) as pool:
        results = list(pool.map(exit_at_once, [3], failed=lambda item, failure: failed.append(failure)))
        assert [(f.reason, f.detail) for f in failed] == [("crashed", "the worker process died (exit code 3)")]
        assert results == [None]
        assert sorted(value for value, _ in pool.map(square_with_pid, range(6))) == [0, 1, 4, 9, 16, 25]


def test_an_item_over_its_time_limit_is_stopped_and_the_others_are_done():
    with LocalPool(2, note_pid, (os.devnull,)) as pool:
        started = time.monotonic()
        results = sorted(pool.map(sleep_then_double, [0.1, 30.0, 0.2, 0.3], failed=lambda item, failure:
                                  (item, failure.reason, failure.detail)), key=str)
        assert time.monotonic() - started < 0.5 + MARGIN  # not 30 s: the sleeping worker was killed
    assert results == [(30.0, "timeout", "over half a second"), 0.2, 0.4, 0.6]


def test_without_failed_a_failure_is_raised_and_an_error_of_the_function_always():
    with LocalPool(1, note_pid, (os.devnull,)) as pool:
        with pytest.raises(TaskFailed, match="crashed"):
            list(pool.map(kill_myself, [None]))
        with pytest.raises(ValueError, match="bad item"):
            list(pool.map(raise_value_error, ["bad item"], failed=lambda item, failure: None))


def test_a_task_not_done_by_its_deadline_fails_and_its_worker_is_replaced():
    with ProcessPool(1) as pool:
        pool.start()  # the worker is up before the tasks come: the first one runs, and is killed at its deadline
        started = time.monotonic()
        late = pool.submit(time.sleep, 60, timeout=0.5)
        queued = pool.submit(time.sleep, 60, timeout=0.5)  # its deadline passes while it waits
        with pytest.raises(TaskFailed, match="timeout: not done within 0.5 s"):
            late.result()
        with pytest.raises(TaskFailed, match="timeout"):
            queued.result()
        assert time.monotonic() - started < 0.5 + MARGIN
        assert pool.submit(square_with_pid, 7).result()[0] == 49 and pool.replaced == 1


def note_then_sleep(log: str, label: str, seconds: float) -> None:
    with open(log, "a") as fh:
        fh.write(label + "\n")
    time.sleep(seconds)


def test_a_free_worker_takes_the_photo_of_the_client_that_used_least_worker_time(tmp_path):
    """One worker; client "a" sends three tasks, then "b" one: b's starts second (a's first is running), not
    after all of a's, as first come first served would have it. Tasks of one client keep their order."""
    log = str(tmp_path / "order.log")
    with ProcessPool(1) as pool:
        pool.start()
        futures = [pool.submit(note_then_sleep, log, f"a{n}", 1.0, client="a") for n in (1, 2, 3)]
        wait_until(lambda: Path(log).exists(), what="a1 to start")
        futures.append(pool.submit(note_then_sleep, log, "b1", 0.0, client="b"))
        for future in futures:
            future.result(timeout=60)
    assert Path(log).read_text().split() == ["a1", "b1", "a2", "a3"]


def test_tasks_without_clients_are_first_come_first_served(tmp_path):
    log = str(tmp_path / "order.log")
    with ProcessPool(1) as pool:
        futures = [pool.submit(note_then_sleep, log, f"t{n}", 0.0) for n in range(5)]
        for future in futures:
            future.result(timeout=60)
    assert Path(log).read_text().split() == ["t0", "t1", "t2", "t3", "t4"]


def test_a_worker_that_cannot_start_is_one_error_not_a_loop():
    pool = ProcessPool(2, fail_to_start)
    with pytest.raises(LookalikeError, match="^the models folder lacks a file$"):
        pool.start()
    with pytest.raises(LookalikeError, match="lacks a file"):
        pool.submit(square_with_pid, 1).result(timeout=10)
    pool.close()


def test_decoding_over_the_decode_timeout_is_stopped_for_real():
    slow = hostile.slow_jpeg()  # within every bound; half a second of decoding and more
    policy = ImageConfig(decode_timeout=hostile.DECODE_TIMEOUT)
    with ProcessPool(1) as pool:
        started = time.monotonic()
        with pytest.raises(ImageRejected) as caught:
            pool.submit(decode_image, slow, policy).result()
        assert time.monotonic() - started < hostile.DECODE_TIMEOUT + MARGIN
        assert (caught.value.reason, caught.value.detail) == ("timeout", hostile.DECODE_TIMED_OUT)
        assert pool.replaced == 1
        small = encoded(Image.new("RGB", (64, 48)), "JPEG")
        assert pool.submit(decode_image, small, policy).result().pixels.shape == (48, 64, 3)


def test_ray_batches_shrink_to_single_items_as_the_work_runs_out():
    from lookalike_cli.runtime.ray_pool import MAX_BATCH, QUEUED, batch_size

    assert batch_size(1_000_000, 64) == MAX_BATCH
    assert batch_size(100, 2) == 100 // (4 * QUEUED * 2) < MAX_BATCH
    assert batch_size(5, 2) == batch_size(1, 1) == batch_size(3, 0) == 1


def started_at(seconds: float) -> float:
    began = time.monotonic()
    time.sleep(seconds)
    return began


@pytest.mark.slow
def test_large_tasks_never_hold_every_worker():
    with ProcessPool(2) as pool:
        pool.start()
        large = [pool.submit(started_at, 2.0, large=True) for _ in range(2)]
        small = pool.submit(started_at, 0.0)
        assert small.result() < large[0].result() + 2.0  # the second worker took the small task...
        assert large[1].result() >= large[0].result() + 2.0  # ...and the second large one waited for the first


@pytest.mark.parametrize("message, line", [
    ("Initialization failure from server:\nTraceback (most recent call last):\n  File x\nRuntimeError: no port\n",
     "Initialization failure from server: RuntimeError: no port"),
    ("Initialization failure from server:\n", "Initialization failure from server:"),
    ("connection refused\nmore detail", "connection refused"),
    ("", "ConnectionError"),
])
def test_an_engine_error_is_told_in_one_line(message, line):
    from lookalike_cli.runtime.ray_pool import first_line
    assert first_line(ConnectionError(message)) == line


def test_what_ray_client_streams_from_the_head_is_a_debug_line(monkeypatch, caplog, capsys):
    from lookalike_cli.runtime.ray_pool import CLIENT_SERVER_LOG, hear_client_server
    streamed = logging.getLogger(CLIENT_SERVER_LOG)
    monkeypatch.setattr(streamed, "handlers", [])
    monkeypatch.setattr(streamed, "propagate", False)  # as Ray sets it: Python would print its warnings on stderr
    caplog.set_level(logging.DEBUG, logger="lookalike_cli.runtime.ray_pool")
    hear_client_server()
    hear_client_server()  # each engine's connection asks again: still one handler
    streamed.warning("SIGTERM handler is not set because current thread is not the main thread.\n")
    streamed.error("Unexpected exception:")
    assert capsys.readouterr().err == "" and len(streamed.handlers) == 1
    assert [(record.levelname, record.getMessage()) for record in caplog.records] == [
        ("DEBUG", "Ray Client server: SIGTERM handler is not set because current thread is not the main thread."),
        ("ERROR", "Ray Client server: Unexpected exception:")]


def hold_a_slot(slots: ProcessSlots) -> bool:
    """In a worker: take a slot and keep it (the worker is then killed)."""
    return slots.acquire(False)


def test_process_slots_are_shared_by_processes_and_a_killed_holder_gives_its_slot_back():
    slots = ProcessSlots(1)
    try:
        with ProcessPool(1) as pool:
            assert pool.submit(hold_a_slot, slots).result(timeout=60)
            assert not slots.acquire(False)  # held by the worker
            [holder] = pool.worker_pids()
            os.kill(holder, signal.SIGKILL)
            wait_until(lambda: slots.acquire(False), timeout=30, what="the dead holder's slot")
        slots.release()
        assert slots.acquire(False) and not slots.acquire(False)
        slots.release()
    finally:
        slots.close()
    assert not Path(slots.folder).exists()

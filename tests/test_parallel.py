"""WorkerPool: the initializer (model loading) runs once per worker, however many stages use the pool."""

import os
from pathlib import Path

import pytest

from lookalike_cli.parallel import WorkerPool


def note_pid(log: str) -> None:
    with open(log, "a") as fh:
        fh.write(f"{os.getpid()}\n")


def square_with_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


@pytest.mark.parametrize("workers", [1, 2])
def test_one_pool_serves_several_stages_and_initializes_each_worker_once(tmp_path: Path, workers: int):
    log = tmp_path / "initialized.txt"
    with WorkerPool(workers, note_pid, (str(log),)) as pool:
        first = list(pool.map(square_with_pid, range(20)))
        second = list(pool.map(square_with_pid, range(20, 30)))
    initialized = log.read_text().split()
    assert sorted(value for value, _ in first + second) == [x * x for x in range(30)]
    # every process that did work initialized once; the second map started none (a worker that got no item
    # may be stopped before it initializes)
    assert len(set(initialized)) == len(initialized) <= workers
    assert {pid for _, pid in first + second} <= {int(pid) for pid in initialized}
    assert (str(os.getpid()) in initialized) == (workers == 1)


def test_a_pool_starts_no_process_for_a_single_item(tmp_path: Path):
    log = tmp_path / "initialized.txt"
    with WorkerPool(2, note_pid, (str(log),)) as pool:
        assert list(pool.map(square_with_pid, [3])) == [(9, os.getpid())]
    assert log.read_text().split() == [str(os.getpid())]


def test_an_image_that_crashes_its_workers_is_rejected_as_crashed_and_not_retried():
    """What filter and embed record for an item that an engine gives up because it killed its workers."""
    from lookalike_cli.config import Config
    from lookalike_cli.embed import EmbedTask, embed_failed
    from lookalike_cli.filter import RETRY_REASONS, DetectTask, crashed, decide

    config = Config()
    row = crashed(DetectTask("a/1.jpg", config.detect, 1000, "", 10), "its worker process died 3 times")
    assert row["path"] == "a/1.jpg" and row["detail"] == "its worker process died 3 times"
    assert decide(row, config.filter) == ("rejected", "crashed") and "crashed" not in RETRY_REASONS
    task = EmbedTask("a/1.jpg", (0, 0, 9, 9), ((1.0, 1.0),) * 5, 1, 1000, "")
    assert embed_failed(task, "died") == ("a/1.jpg", None, "died")

"""Test-only functions that Ray workers run (they import this module: the tests put tests/ on PYTHONPATH)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

POISON = 3  # kills every worker that runs it
KILLED_ONCE = 5  # kills the first worker that runs it


def note_start(log: str) -> None:
    """The pool's initializer: one line per worker process that loads "the models"."""
    with open(log, "a") as fh:
        fh.write(f"{os.getpid()}\n")


def square_or_die(item: tuple[int, str]) -> tuple[int, int]:
    """(x * x, this process) for item (x, folder); the poison item aborts the process (as a crash in dlib
    would), the other one is killed the first time only."""
    x, folder = item
    if x == POISON:
        os.abort()
    marker = Path(folder) / f"{x}.killed"
    if x == KILLED_ONCE and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x, os.getpid()


def gave_up(item: tuple[int, str], failure) -> tuple[str, int, str]:
    return "failed", item[0], failure.detail

"""The life of a front end (``serve``, ``bot``): a recognizer started, watching for new generations (SIGHUP: look
now), closed on the way out; SIGTERM ending it as Ctrl-C does."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from typing import Iterator

from ..answers.recognizer import Recognizer
from ..config import Config


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def serving_recognizer(data_dir: str | Path, config: Config) -> Iterator[Recognizer]:
    """A started recognizer of ``data_dir`` that switches to a newly published generation every
    ``serve.reload_seconds`` and on SIGHUP; its workers are stopped on exit."""
    recognizer = Recognizer(data_dir, config)
    try:
        recognizer.start()
        recognizer.watch(config.serve.reload_seconds)
        if in_main_thread():
            signal.signal(signal.SIGHUP, recognizer.check_now)
        yield recognizer
    finally:
        recognizer.close()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def interrupt_on_terminate() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does (uvicorn re-raises either after its graceful shutdown);
    either ends the block quietly."""
    if in_main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.suppress(KeyboardInterrupt):
        yield

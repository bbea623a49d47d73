"""fsync many paths at once, in a process of its own, for the crawl.

Run as a script (``python lookalike_cli/syncing.py``): it reads a JSON list of paths per line on standard input,
fsyncs them on THREADS threads at once (fsyncs that overlap share one journal commit) and answers a JSON string
per list: ``"ok"``, or what failed. It ends when its input does (Ctrl-C is left to the crawl). Inside the crawl's
process each fsync would pass the GIL back and forth among the busy download threads: twice the context
switches, and a slower crawl (benchmarks/RESULTS.md#crawl).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

THREADS = 16


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file, or a folder (so that the names in it survive a power cut); raises OSError."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with ThreadPoolExecutor(THREADS) as pool:
        for line in sys.stdin:
            try:
                list(pool.map(fsync_path, json.loads(line)))
                answer = "ok"
            except OSError as exc:
                answer = f"cannot sync {exc.filename}: {exc.strerror}"
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()

"""`make bench` / `make bench-full`: every benchmark, one after the other; reports in benchmarks/results/.

    .venv/bin/python benchmarks/run_all.py [--full] [--only dlib,embed,...]

Runs every ``bench_<topic>.py`` of this folder, the quick ones first.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
# the longest (index) last but one; search_pruning reuses the vectors index caches
ORDER = ("dlib", "embed", "query", "detect", "crawl", "serve", "serve_hostile", "descriptor", "index", "search_pruning")
TOPICS = sorted((p.stem.removeprefix("bench_") for p in FOLDER.glob("bench_*.py")),
                key=lambda topic: ORDER.index(topic) if topic in ORDER else len(ORDER))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="larger N (1M vectors: an hour or more)")
    parser.add_argument("--only", default=",".join(TOPICS), help="comma-separated topics")
    args = parser.parse_args()
    for topic in args.only.split(","):
        if topic not in TOPICS:
            sys.exit(f"unknown topic {topic!r}: one of {', '.join(TOPICS)}")
        command = [sys.executable, str(FOLDER / f"bench_{topic}.py")] + (["--full"] if args.full else [])
        print(f"# {' '.join(command[1:])}", flush=True)
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()

"""`lookalike stats` over answer logs of growing size: its time and its peak memory, side by side in one run.

    .venv/bin/python benchmarks/bench_stats.py          # quick: logs of 25, 50 and 100 MB, 3 runs each
    .venv/bin/python benchmarks/bench_stats.py --full   # logs of 250 MB, 500 MB and 1 GB (the default retention
                                                        # of an answer log is 1.1 GB), 3 runs each

The logs are written here as the server writes them (`answer_entry` lines with their time), answering the demo
gallery's people with 1 to 3 faces a line; the gallery is the demo's (bench_serve's, 1 jitter), built into benchmarks/.cache. Each run is a
`lookalike stats --json` process of its own, whose peak resident memory is read from the kernel (wait4).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from bench_serve import demo_gallery
from common import CACHE, REPO, header, markdown_table, median, write_report

from lookalike_cli.answers.log import answer_entry
from lookalike_cli.answers.results import FaceResult, Match, PhotoResult

DEMO = REPO / "data" / "demo"
STATUSES = ["ok"] * 90 + ["no_face"] * 6 + ["busy"] * 2 + ["rejected", "timeout"]


def write_log(path: Path, megabytes: int, aliases: list[str], seed: int = 0) -> int:
    """An answer log of about ``megabytes`` MB; returns its lines."""
    rng = random.Random(seed)
    lines, size, limit = 0, 0, megabytes * 1_000_000
    with open(path, "w", encoding="utf-8") as fh:
        while size < limit:
            status = rng.choice(STATUSES)
            faces = [FaceResult(box=[0, 0, 1, 1], detector="hog",
                                matches=[Match(alias, alias, rng.uniform(0.3, 0.8), rng.random(), "")])
                     for alias in rng.choices(aliases, k=rng.randint(1, 3))] if status == "ok" else []
            entry = answer_entry("http", "20261208T000000-00000000", status, rng.uniform(0.1, 2.0),
                                 PhotoResult("upload", faces=faces), client="0123456789abcdef")
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_800_000_000 + lines // 20))
            line = json.dumps({"time": f"{stamp}.000Z"} | entry, ensure_ascii=False, separators=(",", ":")) + "\n"
            fh.write(line)
            size += len(line)
            lines += 1
    return lines


def timed_stats(log: Path, data_dir: Path) -> tuple[float, float]:
    """Seconds and peak resident MB of one `lookalike stats --json` process."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "lookalike_cli", "stats", "--log", str(log), "--data-dir",
                                str(data_dir), "--json"], cwd=REPO, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        sys.exit(f"lookalike stats failed on {log} (status {status})")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="logs of up to 1 GB")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sizes = (250, 500, 1000) if args.full else (25, 50, 100)
    data_dir = demo_gallery()
    aliases = [person["alias"] for person in json.loads((DEMO / "catalog.json").read_text())]
    rows = []
    for megabytes in sizes:
        log = CACHE / f"answers-{megabytes}mb.jsonl"
        lines = write_log(log, megabytes, aliases)
        runs = [timed_stats(log, data_dir) for _ in range(args.runs)]
        seconds, memory = median([s for s, _ in runs]), median([m for _, m in runs])
        rows.append([f"{megabytes} MB", f"{lines:,}", f"{seconds:.1f} s", f"{lines / seconds / 1000:.0f} k",
                     f"{memory:.0f} MB"])
        log.unlink()
    text = "\n".join([
        header("lookalike stats over answer logs of growing size", sys.argv), "",
        f"Medians of {args.runs} runs, each a `lookalike stats --json` process over the demo gallery "
        "(48 people); peak memory is the process's maximum resident set.", "",
        markdown_table(["log", "lines", "time", "lines/s", "peak memory"], rows), ""])
    write_report("stats-full" if args.full else "stats-quick", text)


if __name__ == "__main__":
    main()

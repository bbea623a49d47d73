"""Crawl throughput: made-up people, each with a Bing result page and 5 photos to keep, served by the
local test server (tests/crawl_server.py, in its own process) with and without 40 ms per response.

    .venv/bin/python benchmarks/bench_crawl.py          # quick: 200 people x 5 images, 1 run each
    .venv/bin/python benchmarks/bench_crawl.py --full   # 1,000 people x 5 images, median of 3 runs

Every run starts from an empty data directory and runs the real stage (``lookalike_cli.crawl.run.crawl``: search
page, icrawler's Bing parser, download, full decode, SHA-256, atomic write, manifest). Prints a Markdown
table, also kept as benchmarks/results/crawl-quick.md (or crawl-full.md): images kept per second by thread
count, and the ratio to the fewest threads at the same latency.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from common import REPO, header, markdown_table, median, write_report

sys.path.insert(0, str(REPO / "tests"))

from crawl_server import synthetic_world  # noqa: E402

from lookalike_cli.config import load_config  # noqa: E402
from lookalike_cli.crawl.run import crawl  # noqa: E402

PER_PERSON = 5
LIBRARIES = ("icrawler", "requests", "urllib3")


def start_server(people: int, latency: float) -> tuple[subprocess.Popen, str]:
    """The test server in a process of its own (so that it does not share this process's GIL)."""
    server = subprocess.Popen([sys.executable, str(REPO / "tests" / "crawl_server.py"), "--people", str(people),
                               "--per-person", str(PER_PERSON), "--latency", str(latency)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline().split()
    if line[:1] != ["READY"]:
        server.kill()
        raise SystemExit(f"the test server did not start: {line}")
    return server, line[1]


def run_once(catalog: Path, url: str, threads: int) -> tuple[float, int]:
    """Seconds for one crawl into an empty data directory, and the photos it kept."""
    config = load_config(None, {"search_host": url, "threads": threads, "per_person": PER_PERSON,
                                "allow_private_addresses": True})
    with tempfile.TemporaryDirectory(prefix="bench-crawl-") as data:
        started = time.perf_counter()
        summary = crawl(catalog, data, config)
        seconds = time.perf_counter() - started
    if summary.complete != summary.people:
        raise SystemExit(f"only {summary.complete} of {summary.people} people complete: {summary.statuses}")
    return seconds, summary.statuses.get("ok", 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="1,000 people, 3 runs per setting (a few minutes)")
    args = parser.parse_args()
    people, repeats = (1000, 3) if args.full else (200, 1)
    thread_counts = (4, 16, 32, 64)
    latencies = (0.0, 0.04)

    catalog_entries, _, _ = synthetic_world(people, PER_PERSON)
    report = header("Crawl", ["benchmarks/bench_crawl.py", *sys.argv[1:]])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-crawl-catalog-") as folder:
        catalog = Path(folder) / "catalog.json"
        catalog.write_text(json.dumps(catalog_entries))
        for latency in latencies:
            server, url = start_server(people, latency)
            try:
                base = None
                for threads in thread_counts:
                    runs = [run_once(catalog, url, threads) for _ in range(repeats)]
                    seconds = median([s for s, _ in runs])
                    rate = runs[0][1] / seconds
                    base = base or rate
                    rows.append((f"{latency * 1000:.0f} ms", threads, f"{seconds:.1f}", f"{rate:.0f}",
                                 f"{rate / base:.2f}x"))
                    print(f"latency {latency * 1000:.0f} ms, {threads} threads: {rate:.0f} images/s",
                          file=sys.stderr, flush=True)
            finally:
                server.stdin.close()
                server.wait(timeout=30)
    report += (f"\n{people} people x {PER_PERSON} images kept (+1 Bing result page each), median of {repeats} "
               f"run(s) per setting; server in its own process on 127.0.0.1; "
               f"{', '.join(f'{name} {metadata.version(name)}' for name in LIBRARIES)}.\n\n")
    report += markdown_table(["latency per response", "threads", "seconds", "images/s", "vs 4 threads"], rows)
    write_report(f"crawl-{'full' if args.full else 'quick'}", report)


if __name__ == "__main__":
    main()

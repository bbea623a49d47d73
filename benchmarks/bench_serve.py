"""Load on `lookalike serve` over loopback: answered queries per second and latency p50/p99, 1 and 2 workers.

    .venv/bin/python benchmarks/bench_serve.py          # quick: 2 rounds of 8 s per row (about 1 min 30 s)
    .venv/bin/python benchmarks/bench_serve.py --full   # 3 rounds of 20 s per row
    .venv/bin/python benchmarks/bench_serve.py --monitoring [--demo] [--rounds 6]
        # 2 workers with the answer log and metrics on (and /metrics scraped every second) against both off

The server is the real command (`lookalike serve`, its own process, default queue of 16) over the 879 congress
portraits (cached `lookalike build`); with no ../shared, over the 48-person demo gallery. Closed-loop clients
(threads of this process, one keep-alive connection each) POST photos back to back for a fixed time after a
warm-up; a 503 (queue full) is counted and retried after 50 ms. Photos: the demo selfie (225x275 px, 65 kB),
and the 55 labelled photos of faces/people (150 to 2333 px, as they are), cycled. With --monitoring the server
with the log writes it to benchmarks/results/serve-answers.jsonl (the `lookalike stats` report of docs/operations.md).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx

from common import (CACHE, CONGRESS, REPO, RESULTS, congress_gallery, header, load_average, markdown_table, median,
                    ms, percentile, repeat_timed, run_cli, shared_photos, tree_env, write_report)

CLIENTS = 4  # concurrent clients: more than the workers, so that the queue is used
WARM_UP = 2.0  # seconds of load before measuring
WORKERS = (1, 2)
SELFIE = "selfie 225x275"
ANSWER_LOG = RESULTS / "serve-answers.jsonl"
SCRAPE_EVERY = 1.0  # seconds between two GET /metrics while the monitored server is loaded


def demo_gallery(tree: Path = REPO) -> Path:
    """The demo gallery (1 jitter) built by the source ``tree`` (cached)."""
    data_dir = CACHE / ("demo-j1" if tree == REPO else f"demo-j1-{tree.name}")
    if not (data_dir / "generations" / "CURRENT").exists():
        run_cli(["build", "--images", str(REPO / "data/demo/images"), "--catalog", str(REPO / "data/demo/catalog.json"),
                 "--data-dir", str(data_dir), "--num-jitters", "1"], tree)
    return data_dir


def served_gallery() -> Path:
    """The congress gallery, or the demo one without ../shared."""
    return congress_gallery() if CONGRESS.is_dir() else demo_gallery()


@contextlib.contextmanager
def serving(data_dir: Path, workers: int, *options: str, tree: Path = REPO,
            environment: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen, str]]:
    """A server of ``start_server`` while the block runs, then interrupted."""
    process, url = start_server(data_dir, workers, *options, tree=tree, environment=environment)
    try:
        yield process, url
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)


def start_server(data_dir: Path, workers: int, *options: str, tree: Path = REPO,
                 environment: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """`lookalike serve` of the source ``tree`` (a reference_tree from before the per-client share of photos
    takes no ``--max-client-photos``), with ``environment`` added to this one's, and the URL of its /query."""
    # the benchmark's clients stand for many people, all at 127.0.0.1: no per-address share of photos
    share = ["--max-client-photos", "1000"] if tree == REPO else []
    server = subprocess.Popen([sys.executable, "-m", "lookalike_cli", "serve", "--data-dir", str(data_dir),
                               "--port", "0", "--workers", str(workers), *share, *options],
                              stdout=subprocess.PIPE, text=True, cwd=tree, env=tree_env(tree) | (environment or {}))
    line = server.stdout.readline()
    if " on http://" not in line:
        server.kill()
        raise SystemExit(f"lookalike serve did not start: {line!r}")
    return server, line.split(" on ")[1].split()[0]  # http://127.0.0.1:PORT/query


def scraper(url: str, until: float) -> threading.Thread:
    """A thread that GETs ``url`` every SCRAPE_EVERY seconds until ``until`` (perf_counter), as Prometheus would."""
    def scrape() -> None:
        with httpx.Client(timeout=30) as http:
            while time.perf_counter() < until:
                http.get(url).raise_for_status()
                time.sleep(SCRAPE_EVERY)
    return threading.Thread(target=scrape)


def process_cpu(pid: int) -> float:
    """CPU seconds (user and system) that a process has used, its children not counted (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(server: tuple[subprocess.Popen, str], photos: list[bytes], seconds: float,
         metrics: str | None = None) -> dict:
    """Closed-loop load by CLIENTS threads on a server (its process and URL); latencies and counts of the requests
    that started after the warm-up, and the CPU time the server's own process (HTTP, JSON, the monitor; not its
    workers) took per photo answered, warm-up included. With ``metrics``, that URL is scraped during the load."""
    process, url = server
    start, cpu = time.perf_counter(), process_cpu(process.pid)
    measure_from, stop_at = start + WARM_UP, start + WARM_UP + seconds
    latencies: list[float] = []
    rejected, completed = [0], [0]
    lock = threading.Lock()

    def client(number: int) -> None:
        with httpx.Client(timeout=120) as http:
            sent = number
            while (began := time.perf_counter()) < stop_at:
                response = http.post(url, content=photos[sent % len(photos)])
                sent += CLIENTS
                with lock:
                    if response.status_code == 503:
                        rejected[0] += began >= measure_from
                        time.sleep(0.05)
                    elif response.status_code != 200:
                        raise SystemExit(f"unexpected {response.status_code}: {response.text}")
                    else:
                        completed[0] += 1
                        if began >= measure_from:
                            latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    threads += [scraper(metrics, stop_at)] if metrics else []
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"answered": len(latencies), "per_second": len(latencies) / seconds, "rejected": rejected[0],
            "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
            "server_cpu": (process_cpu(process.pid) - cpu) / max(1, completed[0])}


def load_at_once(targets: dict[str, tuple[tuple[subprocess.Popen, str], str | None]], photos: list[bytes],
                 seconds: float) -> dict[str, dict]:
    """``load`` on every server of ``targets`` (name: the server, and its metrics URL or None) at the same time,
    so that they share the machine's every moment."""
    runs: dict[str, dict] = {}

    def run(name: str, server: tuple[subprocess.Popen, str], metrics: str | None) -> None:
        runs[name] = load(server, photos, seconds, metrics)

    threads = [threading.Thread(target=run, args=(name, *target)) for name, target in targets.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return runs


def service_times(data_dir: Path, photo_sets: dict[str, list[bytes]]) -> dict[str, float]:
    """Median seconds of one query in this process (decode, detect, describe, search), no HTTP, no other
    query at the same time: what one worker needs per photo. Every 5th photo of a set, the selfie 5 times."""
    from lookalike_cli.config import ImageConfig
    from lookalike_cli.imaging.decode import decode_image
    from lookalike_cli.answers.query import Lookalike

    engine = Lookalike(data_dir)
    engine.query_image(decode_image(photo_sets[SELFIE][0], ImageConfig()).pixels)  # loads the models
    times = {}
    for name, photos in photo_sets.items():
        sample = photos[::5] if len(photos) > 1 else photos * 5
        times[name] = median([repeat_timed(lambda: engine.query_image(decode_image(photo, ImageConfig()).pixels), 1)[0]
                              for photo in sample])
    return times


def monitoring_costs(data_dir: Path, answers: int = 20_000) -> dict[str, float]:
    """Seconds per answer that the monitor costs the event loop (Monitor.answered: metrics and the log's queue)
    and its writer thread (the JSON line and the write), and per GET /metrics, measured alone in this process
    over ``answers`` answers of the selfie's real result."""
    import tempfile

    from lookalike_cli.config import load_config
    from lookalike_cli.answers.monitor import Monitor
    from lookalike_cli.answers.query import Lookalike
    from lookalike_cli.answers.results import PhotoResult
    from lookalike_cli.answers.recognizer import Recognizer

    result = PhotoResult("upload", Lookalike(data_dir).query_file(REPO / "data/demo/selfie.jpg").faces)
    with tempfile.TemporaryDirectory() as folder:
        config = load_config(None, {"log": str(Path(folder) / "answers.jsonl")})
        monitor = Monitor(config, "http", Recognizer(data_dir, config))
        started = time.perf_counter()
        for _ in range(answers):
            monitor.answered("ok", 0.2, result, client="127.0.0.1", code=200)
        recorded = time.perf_counter()
        monitor.close()  # waits until the writer thread has written every line
        written = time.perf_counter()
        scrape = median(repeat_timed(monitor.exposition, 200))
    return {"answered": (recorded - started) / answers, "writer": (written - recorded) / answers,
            "scrape": scrape}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="3 rounds of 20 s per row instead of 2 of 8 s")
    parser.add_argument("--rounds", type=int, help="rounds per row (default: 2, --full 3)")
    parser.add_argument("--monitoring", action="store_true",
                        help="2 workers with the answer log and metrics on, against both off")
    parser.add_argument("--demo", action="store_true", help="the 48-person demo gallery even with ../shared")
    args = parser.parse_args()
    rounds, seconds = (3, 20.0) if args.full else (2, 8.0)
    rounds = args.rounds or rounds
    shared = CONGRESS.is_dir()
    data_dir = congress_gallery() if shared and not args.demo else demo_gallery()
    photo_sets = {SELFIE: [(REPO / "data/demo/selfie.jpg").read_bytes()]}
    if shared:
        photo_sets["faces/people, 55 photos"] = [path.read_bytes() for path in shared_photos("people/*/*")]
    head = header("lookalike serve under load (loopback)", ["benchmarks/bench_serve.py", *sys.argv[1:]])
    alone = service_times(data_dir, photo_sets)
    if args.monitoring:
        ANSWER_LOG.unlink(missing_ok=True)
        variants = {"off": ("--no-metrics",), "on": ("--log", str(ANSWER_LOG))}
        servers = {name: start_server(data_dir, 2, *options) for name, options in variants.items()}
    else:
        servers = {str(workers): start_server(data_dir, workers) for workers in WORKERS}
    baseline = next(iter(servers))
    results: dict[tuple[str, str], list[dict]] = {}
    try:
        for _ in range(rounds):
            for name, photos in photo_sets.items():
                if args.monitoring:  # loaded at the same time: both see the same machine
                    runs = load_at_once({"off": (servers["off"], None), "on": (
                        servers["on"], servers["on"][1].replace("/query", "/metrics"))}, photos, seconds)
                else:  # the servers take turns, so that each has the machine to itself
                    runs = {name: load(server, photos, seconds) for name, server in servers.items()}
                for server in servers:
                    results.setdefault((name, server), []).append(runs[server])
                    print(name, server, runs[server], flush=True)
    finally:
        for process, _ in servers.values():
            process.send_signal(signal.SIGINT)
            process.wait(30)
    rows = []
    for (name, server), runs in results.items():
        base = results[(name, baseline)]

        def ratio(key: str) -> str:  # the median of the rounds' ratios to the baseline
            return f"{median([run[key] / first[key] for run, first in zip(runs, base)]):.3f}"
        rows.append([name, ms(alone[name]), server, f"{median([run['per_second'] for run in runs]):.2f}",
                     ratio("per_second"), ms(median([run["p50"] for run in runs])),
                     ms(median([run["p99"] for run in runs])), ratio("p99"),
                     ms(median([run["server_cpu"] for run in runs])), sum(run["answered"] for run in runs),
                     sum(run["rejected"] for run in runs)])
    gallery = ("879 congress portraits" if shared and not args.demo else "48-person demo gallery" +
               ("" if args.demo else " (../shared is absent)"))
    costs = ""
    if args.monitoring:
        cost = monitoring_costs(data_dir)
        costs = (f"\n\nAlone in the benchmark's process, over 20,000 answers of the selfie's result: recording an "
                 f"answer (Monitor.answered: counters, histograms, the log's queue) takes "
                 f"{cost['answered'] * 1e6:.1f} us of the event loop, its JSON line and write "
                 f"{cost['writer'] * 1e6:.1f} us of the writer thread; one GET /metrics {ms(cost['scrape'])} ms. "
                 f"One query of the selfie alone: {ms(alone[SELFIE])} ms, so the monitor adds "
                 f"{(cost['answered'] + cost['writer']) / alone[SELFIE]:.4%} of the work of an answer.")
    varied = ("the servers without (off: --no-metrics, no log) and with the answer log and metrics (on: --log, "
              f"GET /metrics every {SCRAPE_EVERY:g} s during the load), 2 workers each, loaded at the same time "
              f"({CLIENTS} clients each)") if args.monitoring else "the servers with 1 and 2 workers taking turns"
    column = "log and metrics" if args.monitoring else "workers"
    text = "\n".join([
        head,
        f"Gallery: {gallery}. {CLIENTS} closed-loop clients; {rounds} rounds of {seconds:g} s measured after "
        f"{WARM_UP:g} s of warm-up, {varied}; medians over the rounds (vs {baseline}: of the rounds' ratios). Query "
        "num_jitters 1, upsample 1; the clients share the machine with the workers. "
        f"Load at the end: {load_average()}.", "",
        "One query alone: the median time of one query in the benchmark's process, without HTTP or other "
        "queries (what a worker needs per photo). Server CPU: the CPU time of the server's own process (HTTP, "
        "JSON, the queue, the monitor; not its workers) per photo answered, from /proc: unlike the rates, it does "
        "not depend on what else the machine runs.", "",
        markdown_table(["photos", "one query alone, ms", column, "answered/s", f"vs {baseline}", "p50 ms", "p99 ms",
                        f"p99 vs {baseline}", "server CPU ms/answer", "answered", "503s"], rows) + costs])
    mode = "serve-monitoring" if args.monitoring else "serve"
    write_report(f"{mode}{'-demo' if args.demo else ''}-{'full' if args.full else 'quick'}", text)


if __name__ == "__main__":
    main()

"""Load on `lookalike serve` over loopback: answered queries per second and latency p50/p99, 1 and 2 workers.

    .venv/bin/python benchmarks/bench_serve.py          # quick: 2 rounds of 8 s per row (about 1 min 30 s)
    .venv/bin/python benchmarks/bench_serve.py --full   # 3 rounds of 20 s per row

The server is the real command (`lookalike serve`, its own process, default queue of 16) over the 879 congress
portraits (cached `lookalike build`); with no ../shared, over the 48-person demo gallery. Closed-loop clients
(threads of this process, one keep-alive connection each) POST photos back to back for a fixed time after a
warm-up; a 503 (queue full) is counted and retried after 50 ms. Photos: the demo selfie (225x275 px, 65 kB),
and the 55 labelled photos of faces/people (150 to 2333 px, as they are), cycled.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from common import (CACHE, CONGRESS, REPO, congress_gallery, header, load_average, markdown_table, median, ms,
                    percentile, repeat_timed, run_cli, shared_photos, write_report)

CLIENTS = 4  # concurrent clients: more than the workers, so that the queue is used
WARM_UP = 2.0  # seconds of load before measuring
WORKERS = (1, 2)
SELFIE = "selfie 225x275"


def demo_gallery() -> Path:
    data_dir = CACHE / "demo-j1"
    if not (data_dir / "index" / "index.json").exists():
        run_cli(["build", "--images", str(REPO / "data/demo/images"), "--catalog", str(REPO / "data/demo/catalog.json"),
                 "--data-dir", str(data_dir), "--num-jitters", "1"])
    return data_dir


def start_server(data_dir: Path, workers: int) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen([sys.executable, "-m", "lookalike_cli", "serve", "--data-dir", str(data_dir),
                               "--port", "0", "--workers", str(workers)], stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    if " on http://" not in line:
        server.kill()
        raise SystemExit(f"lookalike serve did not start: {line!r}")
    return server, line.split(" on ")[1].split()[0]  # http://127.0.0.1:PORT/query


def load(url: str, photos: list[bytes], seconds: float) -> dict:
    """Closed-loop load by CLIENTS threads; latencies and counts of the requests that started after the warm-up."""
    start = time.perf_counter()
    measure_from, stop_at = start + WARM_UP, start + WARM_UP + seconds
    latencies: list[float] = []
    rejected = [0]
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
                    elif began >= measure_from:
                        latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"answered": len(latencies), "per_second": len(latencies) / seconds, "rejected": rejected[0],
            "p50": percentile(latencies, 50), "p99": percentile(latencies, 99)}


def service_times(data_dir: Path, photo_sets: dict[str, list[bytes]]) -> dict[str, float]:
    """Median seconds of one query in this process (decode, detect, describe, search), no HTTP, no other
    query at the same time: what one worker needs per photo. Every 5th photo of a set, the selfie 5 times."""
    from lookalike_cli.config import ImageConfig
    from lookalike_cli.images import decode_image
    from lookalike_cli.query import Lookalike

    engine = Lookalike(data_dir)
    engine.query_image(decode_image(photo_sets[SELFIE][0], ImageConfig()).pixels)  # loads the models
    times = {}
    for name, photos in photo_sets.items():
        sample = photos[::5] if len(photos) > 1 else photos * 5
        times[name] = median([repeat_timed(lambda: engine.query_image(decode_image(photo, ImageConfig()).pixels), 1)[0]
                              for photo in sample])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="3 rounds of 20 s per row instead of 2 of 8 s")
    args = parser.parse_args()
    rounds, seconds = (3, 20.0) if args.full else (2, 8.0)
    shared = CONGRESS.is_dir()
    data_dir = congress_gallery() if shared else demo_gallery()
    photo_sets = {SELFIE: [(REPO / "data/demo/selfie.jpg").read_bytes()]}
    if shared:
        photo_sets["faces/people, 55 photos"] = [path.read_bytes() for path in shared_photos("people/*/*")]
    head = header("lookalike serve under load (loopback)", ["benchmarks/bench_serve.py", *sys.argv[1:]])
    alone = service_times(data_dir, photo_sets)
    servers = {workers: start_server(data_dir, workers) for workers in WORKERS}
    results: dict[tuple[str, int], list[dict]] = {}
    try:
        for _ in range(rounds):  # the two servers take turns, so that both see the same machine load
            for name, photos in photo_sets.items():
                for workers, (_, url) in servers.items():
                    results.setdefault((name, workers), []).append(load(url, photos, seconds))
                    print(name, workers, results[(name, workers)][-1], flush=True)
    finally:
        for process, _ in servers.values():
            process.send_signal(signal.SIGINT)
            process.wait(30)
    rows = []
    for (name, workers), runs in results.items():
        rate = median([run["per_second"] for run in runs])
        single = median([run["per_second"] for run in results[(name, WORKERS[0])]])
        rows.append([name, ms(alone[name]), workers, f"{rate:.1f}", f"{rate / single:.2f}",
                     ms(median([run["p50"] for run in runs])),
                     ms(median([run["p99"] for run in runs])), sum(run["answered"] for run in runs),
                     sum(run["rejected"] for run in runs)])
    gallery = "879 congress portraits" if shared else "48-person demo gallery (../shared is absent)"
    text = "\n".join([
        head,
        f"Gallery: {gallery}. {CLIENTS} closed-loop clients; {rounds} rounds of {seconds:g} s measured after "
        f"{WARM_UP:g} s of warm-up, the servers with 1 and 2 workers taking turns; medians over the rounds. Query "
        "num_jitters 1, upsample 1; the clients share the machine with the workers. "
        f"Load at the end: {load_average()}.", "",
        "One query alone: the median time of one query in the benchmark's process, without HTTP or other "
        "queries (what a worker needs per photo).", "",
        markdown_table(["photos", "one query alone, ms", "workers", "answered/s", "vs 1 worker", "p50 ms", "p99 ms",
                        "answered", "503s"], rows)])
    write_report("serve-full" if args.full else "serve-quick", text)


if __name__ == "__main__":
    main()

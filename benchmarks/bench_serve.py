"""Load on `lookalike serve` over loopback: answered queries per second and latency p50/p99, 1 and 2 workers;
then ordinary selfies with 1 request in 20 hostile (every kind of tests/hostile.py and of the HTTP layer) against
the clean load, on the same server in the same run.

    .venv/bin/python benchmarks/bench_serve.py          # quick: 2 rounds of 8 s per row, 3 of 30 s mixed/clean
    .venv/bin/python benchmarks/bench_serve.py --full   # 3 rounds of 20 s per row, 3 of 60 s mixed/clean

The server is the real command (`lookalike serve`, its own process, default queue of 16) over the 879 congress
portraits (cached `lookalike build`); with no ../shared, over the 48-person demo gallery. Closed-loop clients
(threads of this process, one keep-alive connection each) POST photos back to back for a fixed time after a
warm-up; a 503 (queue full) is counted and retried after 50 ms. Photos: the demo selfie (225x275 px, 65 kB),
and the 55 labelled photos of faces/people (150 to 2333 px, as they are), cycled.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable

import httpx

from common import (CACHE, CONGRESS, REPO, congress_gallery, header, load_average, markdown_table, median, ms,
                    percentile, repeat_timed, run_cli, shared_photos, write_report)

sys.path.insert(0, str(REPO / "tests"))
import hostile  # noqa: E402  (the hostile inputs, built from their recipes)

CLIENTS = 4  # concurrent clients: more than the workers, so that the queue is used
WARM_UP = 2.0  # seconds of load before measuring
WORKERS = (1, 2)
SELFIE = "selfie 225x275"
HOSTILE_EVERY = 20  # in the mixed load, every 20th request a client sends is hostile


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


def post(body: bytes, headers: dict | None = None) -> Callable[[str], int]:
    """A hostile request that is a plain POST."""
    def send(url: str) -> int:
        return httpx.post(url, content=body, headers=headers, timeout=300).status_code
    return send


def raw(request: bytes, then: str = "read") -> Callable[[str], int]:
    """A hostile request written on a raw socket: read the answer, or (``then="leave"``) go away without it."""
    def send(url: str) -> int:
        host, port = url.split("//")[1].split("/")[0].split(":")
        with socket.create_connection((host, int(port)), timeout=300) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(request)
            if then == "leave":
                time.sleep(0.2)
                return 499
            answer = b""
            with contextlib.suppress(OSError):
                while chunk := sock.recv(65536):
                    answer += chunk
        return int(answer.split()[1]) if answer.startswith(b"HTTP/") else 0
    return send


def hostile_kinds() -> dict[str, Callable[[str], int]]:
    """Every kind of hostile request, by name: decoding (time, memory, formats), faces, and the HTTP layer."""
    head = b"POST /query HTTP/1.1\r\nHost: bench\r\n"
    selfie = (REPO / "data/demo/selfie.jpg").read_bytes()
    many_parts = b"".join(b"--b\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\nx\r\n" % n for n in range(1000))
    return {
        "JPEG of 3,010 scans, 36 Mpx": post(hostile.repeated_scans_jpeg(6000, 3000)),
        "JPEG of 100 scans, 36 Mpx (slow, allowed)": post(hostile.repeated_scans_jpeg(6000, 90)),
        "16-bit PNG, 39.6 Mpx (allowed)": post(hostile.sixteen_bit_png(6000, 6600)),
        "RGBA PNG, 39.6 Mpx": post(hostile.rgba_png(6000, 6600)),
        "CMYK JPEG, 39.6 Mpx": post(hostile.encoded(hostile.Image.new("CMYK", (6000, 6600), (9, 9, 9, 9)), "JPEG")),
        "EPS": post(hostile.eps()),
        "collage of 64 faces": post(hostile.collage(64)),
        "multipart of 1,000 parts": post(many_parts + b"--b--\r\n", {"content-type": "multipart/form-data; boundary=b"}),
        "12,000 one-byte chunks": raw(head + b"Transfer-Encoding: chunked\r\n\r\n" +
                                      b"".join(b"1\r\nx\r\n" for _ in range(12_000)) + b"0\r\n\r\n"),
        "headers never finished": raw(head + b"Content-Le"),
        "Content-Length over the body": raw(head + b"Content-Length: 100000\r\n\r\n" + selfie[:5000]),
        "gone mid-body": raw(head + b"Content-Length: 100000\r\n\r\n" + selfie[:1000], then="leave"),
    }


def descendants(pid: int) -> set[int]:
    """The processes below ``pid`` (Linux /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a process in MB (0 once it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class PeakMemory:
    """The peak RSS of a server's main process and of its workers (replaced ones included), sampled every 0.2 s
    while the block runs."""

    def __init__(self, server_pid: int):
        self.server_pid = server_pid
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        for pid in {self.server_pid} | descendants(self.server_pid):
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM back to the current RSS
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            for pid in {self.server_pid} | descendants(self.server_pid):
                self.peaks[pid] = max(self.peaks.get(pid, 0.0), peak_rss_mb(pid))

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def main(self) -> float:
        return self.peaks.get(self.server_pid, 0.0)

    @property
    def worker(self) -> float:
        return max((mb for pid, mb in self.peaks.items() if pid != self.server_pid), default=0.0)


def mixed_load(url: str, selfie: bytes, seconds: float, kinds: dict[str, Callable[[str], int]] | None) -> dict:
    """Closed-loop selfies by CLIENTS threads, as in ``load``; with ``kinds``, every HOSTILE_EVERY-th request a
    client sends is the next hostile kind instead, sent from a thread of its own (an attacker does not wait for
    its answer) and not counted among the selfies. Returns the selfies' figures and the hostile answers."""
    start = time.perf_counter()
    measure_from, stop_at = start + WARM_UP, start + WARM_UP + seconds
    latencies: list[float] = []
    others: Counter[int] = Counter()
    hostile_answers: dict[str, Counter[int]] = defaultdict(Counter)
    attacks: list[threading.Thread] = []
    names = list(kinds or {})
    lock = threading.Lock()

    def attack(name: str) -> None:
        status = kinds[name](url)
        with lock:
            hostile_answers[name][status] += 1

    def client(number: int) -> None:
        with httpx.Client(timeout=300) as http:
            sent = 0
            while (began := time.perf_counter()) < stop_at:
                sent += 1
                if kinds and sent % HOSTILE_EVERY == 0:
                    with lock:
                        name = names[len(attacks) % len(names)]
                        attacks.append(threading.Thread(target=attack, args=(name,)))
                        attacks[-1].start()
                    continue
                response = http.post(url, content=selfie)
                with lock:
                    if response.status_code == 200 and began >= measure_from:
                        latencies.append(time.perf_counter() - began)
                    elif response.status_code != 200:
                        others[response.status_code] += began >= measure_from
                        time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for thread in list(attacks):  # hostile requests still under way end before the next round starts
        thread.join()
    return {"answered": len(latencies), "per_second": len(latencies) / seconds, "others": others,
            "p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "hostile": hostile_answers,
            "hostile_sent": len(attacks)}


def mixed_report(server: subprocess.Popen, url: str, rounds: int, seconds: float) -> str:
    """Clean and mixed rounds taking turns on one server; the Markdown of their comparison."""
    selfie = (REPO / "data/demo/selfie.jpg").read_bytes()
    kinds = hostile_kinds()
    runs: dict[str, list[dict]] = {"clean": [], "mixed": []}
    memory: dict[str, list[PeakMemory]] = {"clean": [], "mixed": []}
    for _ in range(rounds):
        for name in ("clean", "mixed"):
            with PeakMemory(server.pid) as peaks:
                runs[name].append(mixed_load(url, selfie, seconds, kinds if name == "mixed" else None))
            memory[name].append(peaks)
            print(name, {k: v for k, v in runs[name][-1].items() if k != "hostile"}, flush=True)
    rows = []
    clean_p99 = median([run["p99"] for run in runs["clean"]])
    for name, done in runs.items():
        p99 = median([run["p99"] for run in done])
        others = sum((run["others"] for run in done), Counter())
        rows.append([name, f"{median([run['per_second'] for run in done]):.1f}", ms(median([r["p50"] for r in done])),
                     ms(p99), f"{p99 / clean_p99:.2f}", sum(run["answered"] for run in done),
                     ", ".join(f"{count} x {status}" for status, count in sorted(others.items())) or "none",
                     sum(run.get("hostile_sent", 0) for run in done),
                     f"{max(peaks.worker for peaks in memory[name]):.0f}",
                     f"{max(peaks.main for peaks in memory[name]):.0f}"])
    answers: dict[str, Counter[int]] = defaultdict(Counter)
    for run in runs["mixed"]:
        for name, statuses in run["hostile"].items():
            answers[name] += statuses
    return "\n".join([
        markdown_table(["load", "selfies answered/s", "selfie p50 ms", "selfie p99 ms", "p99 vs clean",
                        "selfies answered", "selfies not 200", "hostile sent", "worker peak RSS MB",
                        "server peak RSS MB"], rows), "",
        "What the hostile requests were answered (all rounds):", "",
        markdown_table(["hostile request", "answers"],
                       [[name, ", ".join(f"{count} x {status}" for status, count in sorted(answers[name].items()))]
                        for name in kinds])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="3 rounds of 20 s per row instead of 2 of 8 s, and "
                                                            "mixed rounds of 60 s instead of 30 s")
    args = parser.parse_args()
    rounds, seconds = (3, 20.0) if args.full else (2, 8.0)
    mixed_seconds = 60.0 if args.full else 30.0
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
        mixed = mixed_report(*servers[WORKERS[-1]], 3, mixed_seconds)
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
                        "answered", "503s"], rows), "",
        f"## Under attack: selfies with 1 request in {HOSTILE_EVERY} hostile", "",
        f"The {WORKERS[-1]}-worker server with its default limits; the same {CLIENTS} closed-loop clients send the demo "
        f"selfie, and every {HOSTILE_EVERY}th request of each is the next hostile kind below, sent from a thread of "
        "its own (not waited for, not counted among the selfies). Clean and mixed rounds take turns, 3 of "
        f"{mixed_seconds:g} s each after {WARM_UP:g} s of warm-up; a mixed round ends when its last hostile request "
        "has its answer. Peak RSS: the largest VmHWM of any worker process (replaced ones included) and of the "
        f"server's main process, sampled every 0.2 s. Load at the end: {load_average()}.", "",
        mixed])
    write_report("serve-full" if args.full else "serve-quick", text)


if __name__ == "__main__":
    main()

"""Ordinary selfies on `lookalike serve` with 1 request in 20 hostile (every kind of tests/hostile.py and of the
HTTP layer) against the clean load, on the same server (2 workers) in the same run: selfies answered/s, p50/p99,
what the hostile requests were answered, and the peak memory of the server and its workers.

    .venv/bin/python benchmarks/bench_serve_hostile.py          # 3 rounds each of mixed and clean
    .venv/bin/python benchmarks/bench_serve_hostile.py --full   # 6 rounds each

A round is 20 requests per hostile kind (240) from 4 closed-loop clients, after 2 s of selfies: in a mixed round
every 20th is the next hostile kind (each once), sent from a thread of its own (an attacker does not wait for its
answer) and not counted among the selfies; a clean round sends selfies only. Mixed and clean rounds take turns;
a mixed round ends when its last hostile request has its answer.

The server and the clients are those of bench_serve.py (the congress gallery, or the demo one without ../shared).
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable

import httpx

from bench_serve import CLIENTS, WARM_UP, served_gallery, serving
from common import (CONGRESS, REPO, answer_counts, header, load_average, markdown_table, median, ms, percentile,
                    write_report)

sys.path.insert(0, str(REPO / "tests"))
import hostile  # noqa: E402  (the hostile inputs, built from their recipes)

HOSTILE_EVERY = 20  # in the mixed load, every 20th request a client sends is hostile


def post(body: bytes, headers: dict | None = None) -> Callable[[str], int]:
    """A hostile request that is a plain POST."""
    def send(url: str) -> int:
        return httpx.post(url, content=body, headers=headers, timeout=300).status_code
    return send


def raw(request: bytes, then: str = "read") -> Callable[[str], int]:
    """A hostile request written on a raw socket: read the answer until the server closes the connection, or
    (``then="leave"``) go away without it, or (``then="drip"``) send a byte every 0.25 s meanwhile."""
    def send(url: str) -> int:
        host, port = url.split("//")[1].split("/")[0].split(":")
        with socket.create_connection((host, int(port)), timeout=0.25 if then == "drip" else 300) as sock:
            with contextlib.suppress(OSError):
                sock.sendall(request)
            if then == "leave":
                time.sleep(0.2)
                return 499
            answer = b""
            with contextlib.suppress(OSError):
                while True:
                    try:
                        if not (chunk := sock.recv(65536)):
                            break
                        answer += chunk
                    except socket.timeout:
                        if then != "drip":
                            break
                        sock.sendall(b"x")
        return int(answer.split()[1]) if answer.startswith(b"HTTP/") else 0
    return send


def hostile_kinds() -> dict[str, Callable[[str], int]]:
    """Every kind of hostile request, by name: decoding (time, memory, formats), faces, and the HTTP layer."""
    head = b"POST /query HTTP/1.1\r\nHost: bench\r\n"
    selfie = (REPO / "data/demo/selfie.jpg").read_bytes()
    many_parts = b"".join(b"--b\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\nx\r\n" % n for n in range(1000))
    return {  # the kinds that wait for a timeout first, so that it runs out while the round goes on
        "Content-Length over the body": raw(head + b"Content-Length: 100000\r\n\r\n" + selfie[:5000]),
        "headers never finished": raw(head + b"Content-Le"),
        "a body dripped after its answer (GET /healthz)": raw(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n"
                                                              b"Content-Length: 100000\r\n\r\n", then="drip"),
        "JPEG of 27 scans, 36 Mpx (the slowest allowed)": post(hostile.slow_jpeg()),
        "16-bit PNG, 39.6 Mpx (allowed)": post(hostile.sixteen_bit_png(6000, 6600)),
        "JPEG of 3,010 scans, 36 Mpx": post(hostile.repeated_scans_jpeg(6000, 3000)),
        "1x1 JPEG of 2.4 million empty comments (9.6 MB)": post(hostile.comment_bomb_jpeg(2_400_000)),
        "1x1 JPEG with 9.9 MB of fill bytes": post(hostile.fill_bomb_jpeg(9_900_000)),
        "RLE8 BMP, 16 Mpx": post(hostile.rle8_bmp(4000, 4000)),
        "JPEG of 100 scans, 36 Mpx": post(hostile.repeated_scans_jpeg(6000, 90)),
        "RGBA PNG, 39.6 Mpx": post(hostile.rgba_png(6000, 6600)),
        "CMYK JPEG, 39.6 Mpx": post(hostile.encoded(hostile.Image.new("CMYK", (6000, 6600), (9, 9, 9, 9)), "JPEG")),
        "EPS": post(hostile.eps()),
        "collage of 64 faces": post(hostile.collage(64)),
        "multipart of 1,000 parts": post(many_parts + b"--b--\r\n", {"content-type": "multipart/form-data; boundary=b"}),
        "12,000 one-byte chunks": raw(head + b"Transfer-Encoding: chunked\r\n\r\n" +
                                      b"".join(b"1\r\nx\r\n" for _ in range(12_000)) + b"0\r\n\r\n"),
        "gone mid-body": raw(head + b"Content-Length: 100000\r\n\r\n" + selfie[:1000], then="leave"),
        "140 idle connections from 127.0.0.2, held 3 s": hoard(140, 3.0),
    }


def hoard(count: int, seconds: float) -> Callable[[str], int]:
    """A client at 127.0.0.2 opening ``count`` connections that send nothing, held for ``seconds``: the status of
    the connections it was refused (503), or 0 when it got them all."""
    def send(url: str) -> int:
        host, port = url.split("//")[1].split("/")[0].split(":")
        with contextlib.ExitStack() as stack:
            sockets = []
            for _ in range(count):
                with contextlib.suppress(OSError):
                    sockets.append(stack.enter_context(socket.create_connection(
                        (host, int(port)), timeout=seconds, source_address=("127.0.0.2", 0))))
            time.sleep(seconds)
            refused = 0
            for sock in sockets:
                with contextlib.suppress(OSError):
                    refused += sock.recv(12).startswith(b"HTTP/1.1 503")
        return 503 if refused else 0
    return send


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


def mixed_load(url: str, selfie: bytes, kinds: dict[str, Callable[[str], int]], hostile: bool) -> dict:
    """CLIENTS closed-loop threads send HOSTILE_EVERY requests per hostile kind in all, after WARM_UP s of
    selfies: with ``hostile``, every HOSTILE_EVERY-th request is the next kind (each kind once), sent from a
    thread of its own (an attacker does not wait for its answer) and not counted among the selfies; without, a
    selfie. Returns the selfies' figures and the hostile answers, once every hostile request has its answer."""
    names = list(kinds)
    counter = iter(range(HOSTILE_EVERY * len(names)))
    latencies: list[float] = []
    sending: list[float] = []
    others: Counter[int] = Counter()
    answers: dict[str, Counter[int]] = defaultdict(Counter)
    attacks: list[threading.Thread] = []
    lock = threading.Lock()
    warm_until = time.perf_counter() + WARM_UP

    def attack(name: str) -> None:
        status = kinds[name](url)
        with lock:
            answers[name][status] += 1

    def client() -> None:
        with httpx.Client(timeout=300) as http:
            while time.perf_counter() < warm_until:
                http.post(url, content=selfie)
            started = time.perf_counter()
            while (number := next(counter, None)) is not None:
                if hostile and number % HOSTILE_EVERY == HOSTILE_EVERY - 1:
                    attacks.append(threading.Thread(target=attack, args=(names[number // HOSTILE_EVERY],)))
                    attacks[-1].start()
                    continue
                began = time.perf_counter()
                response = http.post(url, content=selfie)
                with lock:
                    if response.status_code == 200:
                        latencies.append(time.perf_counter() - began)
                    else:
                        others[response.status_code] += 1
            sending.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for thread in attacks:  # hostile requests still under way end before the next round starts
        thread.join()
    return {"answered": len(latencies), "per_second": len(latencies) / max(sending), "others": others,
            "p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "hostile": answers,
            "hostile_sent": len(attacks)}


def mixed_report(server: subprocess.Popen, url: str, rounds: int) -> str:
    """Clean and mixed rounds taking turns on one server; the Markdown of their comparison."""
    selfie = (REPO / "data/demo/selfie.jpg").read_bytes()
    kinds = hostile_kinds()
    runs: dict[str, list[dict]] = {"clean": [], "mixed": []}
    memory: dict[str, list[PeakMemory]] = {"clean": [], "mixed": []}
    for _ in range(rounds):
        for name in ("clean", "mixed"):
            with PeakMemory(server.pid) as peaks:
                runs[name].append(mixed_load(url, selfie, kinds, hostile=name == "mixed"))
            memory[name].append(peaks)
            print(name, {k: v for k, v in runs[name][-1].items() if k != "hostile"}, flush=True)
    rows = []
    clean_p99 = median([run["p99"] for run in runs["clean"]])
    for name, done in runs.items():
        p99 = median([run["p99"] for run in done])
        others = sum((run["others"] for run in done), Counter())
        rows.append([name, f"{median([run['per_second'] for run in done]):.1f}", ms(median([r["p50"] for r in done])),
                     ms(p99), f"{p99 / clean_p99:.2f}", sum(run["answered"] for run in done),
                     answer_counts(others),
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
                       [[name, answer_counts(answers[name])] for name in kinds])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="6 rounds each of mixed and clean instead of 3")
    args = parser.parse_args()
    head = header("lookalike serve under a mixed load (loopback)", ["benchmarks/bench_serve_hostile.py",
                                                                     *sys.argv[1:]])
    rounds = 6 if args.full else 3
    with serving(served_gallery(), 2) as (process, url):
        table = mixed_report(process, url, rounds)
    gallery = "879 congress portraits" if CONGRESS.is_dir() else "the 48-person demo gallery (../shared is absent)"
    text = (f"`lookalike serve --workers 2` with its default limits over {gallery}. A round is {HOSTILE_EVERY} "
            f"requests per hostile kind from {CLIENTS} closed-loop clients after {WARM_UP:g} s of selfies; in a mixed "
            f"round every {HOSTILE_EVERY}th request is the next hostile kind (each once), sent from a thread of its "
            "own and not counted among the selfies, and the round ends when the last one has its answer. Clean and "
            f"mixed rounds take turns, {rounds} of each; medians over the rounds. Peak RSS: the largest VmHWM of any "
            "worker process (replaced ones included) and of the server's main process, sampled every 0.2 s. "
            f"Load at the end: {load_average()}.")
    write_report("serve-hostile-full" if args.full else "serve-hostile", "\n".join([head, text, "", table]))


if __name__ == "__main__":
    main()

"""Ordinary selfies on `lookalike serve` while one client loops the worst inputs, against the same selfies alone, on
the same server (2 workers, its default per-client limits) in the same run: issue 24's target is selfies' p99 within
2x of the clean rounds and their throughput at least 0.8x.

    .venv/bin/python benchmarks/bench_serve_attacker.py          # 3 rounds each of attacked and clean
    .venv/bin/python benchmarks/bench_serve_attacker.py --full   # 6 rounds each

Each of CLIENTS selfie clients has an address of its own (127.0.0.10, .11, ...), as people do; the attacker is
two threads at 127.0.0.2 that send the worst inputs of tests/hostile.py one after the other, each waiting for its
answer, for as long as the round lasts. A round is ROUND_SELFIES selfies after WARM_UP s of them.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import threading
import time
from collections import Counter

import httpx

from bench_serve import CLIENTS, WARM_UP, served_gallery, serving
from common import (CONGRESS, REPO, answer_counts, header, load_average, markdown_table, median, ms, percentile,
                    write_report)

sys.path.insert(0, str(REPO / "tests"))
import hostile  # noqa: E402  (the hostile inputs, built from their recipes)

ROUND_SELFIES = 200
ATTACKERS = 2  # threads of the one attacking address


def worst_inputs() -> dict[str, bytes]:
    """The inputs that cost a worker most, and the bombs that used to."""
    return {"JPEG of 27 scans, 36 Mpx": hostile.slow_jpeg(), "collage of 64 faces": hostile.collage(64),
            "16-bit PNG, 39.6 Mpx": hostile.sixteen_bit_png(6000, 6600),
            "1x1 JPEG of 2.4 million comments": hostile.comment_bomb_jpeg(2_400_000)}


def client_at(address: str) -> httpx.Client:
    return httpx.Client(timeout=300, transport=httpx.HTTPTransport(local_address=address))


def load(url: str, selfie: bytes, worst: dict[str, bytes] | None) -> dict:
    """ROUND_SELFIES selfies from CLIENTS addresses, after WARM_UP s; with ``worst``, the attacker loops meanwhile."""
    counter = iter(range(ROUND_SELFIES))
    latencies: list[float] = []
    others: Counter[int] = Counter()
    attacked: Counter[tuple[str, int]] = Counter()
    lock = threading.Lock()
    done = threading.Event()
    warm_until = time.perf_counter() + WARM_UP
    spans: list[float] = []

    def selfies(address: str) -> None:
        with client_at(address) as http:
            while time.perf_counter() < warm_until:
                http.post(url, content=selfie)
            started = time.perf_counter()
            while next(counter, None) is not None:
                began = time.perf_counter()
                status = http.post(url, content=selfie).status_code
                with lock:
                    if status == 200:
                        latencies.append(time.perf_counter() - began)
                    else:
                        others[status] += 1
            spans.append(time.perf_counter() - started)

    def attack(kinds: list[str]) -> None:
        with client_at("127.0.0.2") as http:
            for name in itertools.cycle(kinds):
                if done.is_set():
                    return
                status = http.post(url, content=worst[name]).status_code
                with lock:
                    attacked[(name, status)] += 1

    threads = [threading.Thread(target=selfies, args=(f"127.0.0.{10 + n}",)) for n in range(CLIENTS)]
    attackers = [threading.Thread(target=attack, args=(list(worst)[n:] + list(worst)[:n],))
                 for n in range(ATTACKERS)] if worst else []
    for thread in attackers + threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    for thread in attackers:
        thread.join()
    return {"per_second": len(latencies) / max(spans), "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99), "others": others, "attacked": attacked}


def report(url: str, rounds: int) -> str:
    selfie = (REPO / "data/demo/selfie.jpg").read_bytes()
    worst = worst_inputs()
    runs: dict[str, list[dict]] = {"clean": [], "attacked": []}
    for _ in range(rounds):
        for name in runs:
            runs[name].append(load(url, selfie, worst if name == "attacked" else None))
            print(name, {k: v for k, v in runs[name][-1].items() if k != "attacked"}, flush=True)
    clean_rate = median([run["per_second"] for run in runs["clean"]])
    clean_p99 = median([run["p99"] for run in runs["clean"]])
    rows = []
    for name, done in runs.items():
        rate, p99 = median([run["per_second"] for run in done]), median([run["p99"] for run in done])
        others = sum((run["others"] for run in done), Counter())
        rows.append([name, f"{rate:.1f}", f"{rate / clean_rate:.2f}", ms(median([run["p50"] for run in done])),
                     ms(p99), f"{p99 / clean_p99:.2f}",
                     answer_counts(others)])
    attacked: Counter[tuple[str, int]] = sum((run["attacked"] for run in runs["attacked"]), Counter())
    return "\n".join([
        markdown_table(["load", "selfies/s", "vs clean", "selfie p50 ms", "selfie p99 ms", "p99 vs clean",
                        "selfies not 200"], rows), "",
        "What the attacker's requests were answered (all rounds):", "",
        markdown_table(["input", "answers"],
                       [[name, answer_counts({status: count for (kind, status), count in attacked.items()
                                              if kind == name})] for name in worst])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="6 rounds each instead of 3")
    args = parser.parse_args()
    rounds = 6 if args.full else 3
    with serving(served_gallery(), 2, "--max-client-photos", "2") as (_, url):  # the default share, per address
        table = report(url, rounds)
    gallery = "879 congress portraits" if CONGRESS.is_dir() else "the 48-person demo gallery"
    text = (f"`lookalike serve --workers 2` with its default limits over {gallery}; {CLIENTS} selfie clients at "
            f"addresses of their own, {ROUND_SELFIES} selfies a round after {WARM_UP:g} s; in an attacked round "
            f"{ATTACKERS} threads at 127.0.0.2 loop the worst inputs. Attacked and clean rounds take turns, {rounds} "
            f"of each; medians over the rounds. Load at the end: {load_average()}.")
    write_report("serve-attacker-full" if args.full else "serve-attacker",
                 "\n".join([header("lookalike serve while one client loops the worst inputs (loopback)", sys.argv),
                            text, "", table]))


if __name__ == "__main__":
    main()

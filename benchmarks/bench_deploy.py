"""Serving past one machine, side by side in one run: answers per second with recognition on Ray (1 node x 1 CPU,
2 nodes x 1 CPU, on loopback) and on the local pool (1 and 2 workers), and the latency nginx adds in front of two
replicas.

    .venv/bin/python benchmarks/bench_deploy.py          # quick: 2 rounds of 10 s per row
    .venv/bin/python benchmarks/bench_deploy.py --full   # 3 rounds of 20 s per row

Every server is the real `lookalike serve` over the demo gallery (1 jitter); 4 closed-loop clients post the labelled
photos of ../shared/faces/people resized to 1280 px (bench_answer's, cached), cycled; rows run in turn, round
after round. The Ray clusters are separate `ray start` processes on 127.0.0.2 and 127.0.0.3 (tests/ray_cluster.py),
each node limited to 1 CPU; the machine has 2 cores, so "2 nodes" means both. nginx: Debian's, with
deploy/nginx/lookalike.conf (addresses changed), in front of two replicas of 1 worker; one client posts the demo
selfie (225x275) alternately to nginx and straight to a replica, and the difference of the percentiles is what
nginx adds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

from common import REPO, header, markdown_table, median, ms, percentile, require_shared, write_report

sys.path.insert(0, str(REPO / "tests"))

from ray_cluster import LoopbackCluster  # noqa: E402

from bench_answer import photo_sets  # noqa: E402
from bench_serve import demo_gallery, load, serving  # noqa: E402

CPUS = {"local pool, 1 worker": 1, "local pool, 2 workers": 2, "Ray, 1 node x 1 CPU": 1, "Ray, 2 nodes x 1 CPU": 2}


def server(row: str, data: Path, clusters: dict[int, LoopbackCluster]):
    """The server of a row: the local pool, or Ray workers on the cluster of as many nodes as the row's CPUs."""
    if row.startswith("local"):
        return serving(data, CPUS[row])
    cluster = clusters[CPUS[row]]
    return serving(data, 0, "--executor", "ray", "--ray-address", cluster.address, environment=cluster.environment)


def throughput(data: Path, photos: list[bytes], rounds: int, seconds: float) -> list[list]:
    runs: dict[str, list[dict]] = {row: [] for row in CPUS}
    with LoopbackCluster(nodes=1, cpus=1) as one, LoopbackCluster(nodes=2, cpus=1) as two:
        clusters = {1: one, 2: two}
        for _ in range(rounds):
            for row in CPUS:
                with server(row, data, clusters) as running:
                    runs[row].append(load(running, photos, seconds))
    rows = []
    for row, results in runs.items():
        per_second = median([r["per_second"] for r in results])
        rows.append([row, f"{per_second:.2f}", f"{per_second / CPUS[row]:.2f}", ms(median([r["p50"] for r in results])),
                     ms(median([r["p99"] for r in results]))])
    return rows


def nginx_latency(data: Path, requests: int) -> list[list]:
    from servers import free_port, start_nginx, start_replica, stop

    selfie = (REPO / "data/demo/selfie.jpg").read_bytes()
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        ports = [free_port(), free_port()]
        replicas = [start_replica(data, port, folder / f"answers-{port}.jsonl") for port in ports]
        listen = free_port()
        nginx = start_nginx(folder, listen, ports)
        try:
            times: dict[str, list[float]] = {"straight to a replica": [], "through nginx": []}
            urls = {"straight to a replica": f"http://127.0.0.1:{ports[0]}/query",
                    "through nginx": f"http://127.0.0.1:{listen}/query"}
            with httpx.Client(timeout=60) as http:
                for number in range(requests):
                    for name, url in urls.items():
                        started = time.perf_counter()
                        assert http.post(url, content=selfie).status_code == 200
                        times[name].append(time.perf_counter() - started)
                    time.sleep(0.25)  # under nginx's 5 a second per client
        finally:
            stop(nginx)
            for replica in replicas:
                stop(replica)
    rows = [[name, ms(percentile(values, 50)), ms(percentile(values, 99))] for name, values in times.items()]
    direct, proxied = times.values()
    rows.append(["added by nginx", ms(percentile(proxied, 50) - percentile(direct, 50)),
                 ms(percentile(proxied, 99) - percentile(direct, 99))])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    require_shared()
    data = demo_gallery()
    photos = [path.read_bytes() for path in photo_sets(False)["people 1280 px"]]
    report = [header("Serving past one machine: Ray workers, nginx", sys.argv)]
    rows = throughput(data, photos, 3 if args.full else 2, 20 if args.full else 10)
    by_row = {row[0]: float(row[1]) for row in rows}
    report += ["", "Answers per second, 4 clients posting 1280 px photos (medians of the rounds):", "",
               markdown_table(["recognition", "answers/s", "per CPU", "p50 ms", "p99 ms"], rows), "",
               f"2 nodes / 1 node: {by_row['Ray, 2 nodes x 1 CPU'] / by_row['Ray, 1 node x 1 CPU']:.2f}x; "
               f"Ray / local pool per CPU: {by_row['Ray, 1 node x 1 CPU'] / by_row['local pool, 1 worker']:.2f}x "
               f"(1 CPU), {by_row['Ray, 2 nodes x 1 CPU'] / by_row['local pool, 2 workers']:.2f}x (2 CPUs)"]
    report += ["", "The latency nginx adds (the demo selfie, one client, alternately; ms):", "",
               markdown_table(["path", "p50", "p99"], nginx_latency(data, 200 if args.full else 60))]
    write_report(f"deploy-{'full' if args.full else 'quick'}", "\n".join(report))


if __name__ == "__main__":
    main()

"""Ray vs the local pool: filter + embed of the same congress portraits (num_jitters 1) in one run, and the
driver's memory with a million photo paths.

    .venv/bin/python benchmarks/bench_ray.py                  # 200 portraits, 3 rounds; 1M paths, 20,000 streamed
    .venv/bin/python benchmarks/bench_ray.py --full           # 5 rounds; all 1M paths streamed (30 min more)

Two runs: the local pool (2 worker processes) beside Ray started here with 2 CPUs, then the local pool beside a
two-node Ray cluster of separate processes on this machine (1 CPU each, loopback addresses: tests/ray_cluster.py).
In each run both pools are open at once; each has its start-up measured (Ray started or joined, a worker up,
models loaded, one photo detected) and a warm-up over 20 other portraits, then the engines alternate over rounds
of `filter_images` + `embed_faces` over the portraits into an empty data directory (one pool for both stages, as
`build` does): medians, and the median of the per-round ratio.

Driver memory: the resident size of this process holding the filter stage's per-photo state for 1M synthetic
paths (a row and a task each, as `filter_images` keeps them), then while the Ray engine streams those tasks
through its actors (a function returning a row without dlib): the engine keeps a few items per actor, so the
second figure must not grow with the number streamed.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Callable

from common import CONGRESS, REPO, header, markdown_table, median, require_shared, write_report

sys.path.insert(0, str(REPO / "tests"))

from ray_cluster import LoopbackCluster, ray_settings  # noqa: E402

WARM_UP = 20


def resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def copy_portraits(paths: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for path in paths:
        shutil.copy2(path, folder / path.name)
    return folder


def process_table() -> dict[int, tuple[int, float, bytes]]:
    """pid -> (parent pid, user + system CPU seconds, command line) of every process of the machine."""
    ticks = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                table[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks,
                                          (entry / "cmdline").read_bytes())
            except (OSError, IndexError):
                continue
    return table


def engine_cpu(roots: Callable[[dict], set[int]]) -> float:
    """CPU seconds so far of the processes ``roots(table)`` names, their descendants, and this process."""
    table = process_table()
    found, todo = set(), set(roots(table))
    while todo:
        found |= todo
        todo = {pid for pid, (parent, _, _) in table.items() if parent in todo} - found
    return sum(table[pid][1] for pid in found if pid in table) + time.process_time()


def forkserver(table: dict) -> set[int]:
    """The local pool's processes: the forkserver this process started, and its children."""
    return {pid for pid, (parent, _, command) in table.items() if parent == os.getpid() and b"forkserver" in command}


def ray_started_here(table: dict) -> set[int]:
    """The Ray this process started: its children other than the forkserver."""
    return {pid for pid, (parent, _, _) in table.items() if parent == os.getpid()} - forkserver(table)


def timed_run(pool, config, images: Path, root: Path, roots: Callable[[dict], set[int]]) -> dict:
    """Seconds and CPU seconds (the engine's processes and this one) of filter + embed over ``images`` into a
    new data directory, and the photos per node."""
    from lookalike_cli.stages.embed import embed_faces
    from lookalike_cli.stages.filter import filter_images

    data = Path(tempfile.mkdtemp(dir=root))
    cpu = engine_cpu(roots)
    started = time.perf_counter()
    filtered = filter_images(images, data, None, config, pool)
    after_filter = time.perf_counter()
    embedded = embed_faces(data, config, pool)
    ended = time.perf_counter()
    cpu = engine_cpu(roots) - cpu
    return {"filter": after_filter - started, "embed": ended - after_filter, "photos": filtered.images,
            "faces": embedded.faces, "rate": filtered.images / (ended - started), "cpu": cpu / filtered.images,
            "nodes": {node: filtered.nodes.get(node, 0) + embedded.nodes.get(node, 0)
                      for node in filtered.nodes.keys() | embedded.nodes.keys()}}


def side_by_side(engines: dict, measured: Path, warm: Path, root: Path, rounds: int) -> dict[str, dict]:
    """Every engine (name -> (config, its processes)) opened at once: its start-up (pool opened to the first
    photo detected), a warm-up over ``warm``, then ``rounds`` timed runs over ``measured``, the engines
    alternating."""
    from lookalike_cli.config import Config
    from lookalike_cli.stages.filter import DetectTask, detect_image
    from lookalike_cli.face.models import process_models
    from lookalike_cli.runtime.engines import worker_pool

    first = sorted(warm.iterdir())[0]
    task = DetectTask(str(first), Config().detect, Config().image, False, "", first.stat().st_size)
    with ExitStack() as stack:
        pools, results = {}, {}
        for name, (config, roots) in engines.items():
            started = time.perf_counter()
            pools[name] = stack.enter_context(worker_pool(config.runtime, process_models, ("",)))
            next(iter(pools[name].map(detect_image, [task, task])))  # two: the local pool starts its processes
            results[name] = {"start_up": time.perf_counter() - started, "runs": []}
            timed_run(pools[name], config, warm, root, roots)
        for number in range(rounds):
            for name in (list(engines) if number % 2 == 0 else reversed(engines)):
                config, roots = engines[name]
                results[name]["runs"].append(timed_run(pools[name], config, measured, root, roots))
    return results


def driver_memory(paths: int, streamed: int) -> dict:
    """Resident MiB of this process: at start, holding ``paths`` photos' filter state, and after streaming
    ``streamed`` of them through a Ray engine started here."""
    from lookalike_cli.config import Config
    from lookalike_cli.errors import Failure
    from lookalike_cli.stages.filter import DetectTask, detect_key, detection_failed, undetected
    from lookalike_cli.runtime.ray_pool import RayPool

    config = Config()
    key = detect_key(config.detect, config.image)
    before = resident_mb()
    rows: dict[str, dict] = {}
    tasks: list[DetectTask] = []
    for number in range(paths):
        path = f"/mnt/gallery/images/person-{number // 5:07d}/{number % 5}.jpg"
        rows[path] = undetected(path) | {"alias": f"person-{number // 5:07d}", "sha256": f"{number:064x}",
                                         "size": 100_000, "mtime_ns": 1_700_000_000_000_000_000 + number,
                                         "detect_key": key, "status": "rejected"}
        tasks.append(DetectTask(path, config.detect, config.image, False, "", 100_000))
    held = resident_mb()
    started = time.perf_counter()
    no_dlib = functools.partial(detection_failed, failure=Failure("crashed", ""))  # a row, as detect_image returns
    with RayPool(2, len, ("",)) as pool:
        for result in pool.map(no_dlib, tasks[:streamed]):
            rows[result["path"]].update(result)
        streaming = resident_mb()
    return {"paths": paths, "streamed": streamed, "before": before, "held": held, "streaming": streaming,
            "items_per_s": streamed / (time.perf_counter() - started)}


def report(phases: list[dict[str, dict]], memory: dict, cluster_start: float, rounds: int, argv: list[str]) -> str:
    rows = []
    for results in phases:
        local = results["local pool"]["runs"]
        for name, result in results.items():
            runs = result["runs"]
            ratios = [run["rate"] / base["rate"] for run, base in zip(runs, local)]
            efficiency = [base["cpu"] / run["cpu"] for run, base in zip(runs, local)]
            rows.append([name, f"{result['start_up']:.1f} s", f"{median([r['filter'] for r in runs]):.1f} s",
                         f"{median([r['embed'] for r in runs]):.1f} s", f"{median([r['rate'] for r in runs]):.2f}",
                         f"{median(ratios):.2f}x" if name != "local pool" else "1",
                         f"{median([r['cpu'] for r in runs]):.3f}",
                         f"**{median(efficiency):.2f}x**" if name != "local pool" else "1",
                         " ".join(f"{run['rate']:.2f}" for run in runs),
                         ", ".join(f"{node} {count}" for node, count in sorted(runs[-1]["nodes"].items()))
                         or "this machine"])
    sample = phases[0]["local pool"]["runs"][0]
    memory_rows = [
        ["Python, lookalike imported", f"{memory['before']:.0f} MiB"],
        [f"+ filter state of {memory['paths']:,} paths (a row and a task each)", f"{memory['held']:.0f} MiB"],
        [f"+ Ray started, {memory['streamed']:,} of them streamed through 2 actors",
         f"{memory['streaming']:.0f} MiB"],
    ]
    return "\n".join([
        header("Ray engine vs the local pool", ["benchmarks/bench_ray.py", *argv]),
        f"{sample['photos']} congress portraits ({sample['faces']} faces), num_jitters 1. Two runs, each opening "
        f"the local pool (2 processes) and one Ray engine at once, then {rounds} timed rounds of filter + embed "
        "with the engines alternating; medians, and the median of the per-round ratio Ray / local pool. "
        "Start-up: pool opened to the first photo detected (Ray started or joined, a worker up, models loaded), "
        f"before a warm-up of {WARM_UP} other portraits. The two-node cluster took {cluster_start:.1f} s to start "
        "(not in its start-up: a cluster is there before a build). Ray's workers run at this process's "
        "niceness here (RAY_worker_niceness=0), as the local pool's do. CPU s per photo: user + system time of "
        "the engine's processes (the local pool's forkserver and workers; Ray's servers and actors) and of this "
        "process, over the photos: on a shared machine the wall-clock rate also measures how the kernel shares "
        "the cores between sessions (Ray puts every actor in a session of its own, and each session gets its "
        "share under the kernel's autogroup scheduling), the CPU time only the engines' cost.\n",
        markdown_table(["engine", "start-up", "filter", "embed", "photos/s", "vs local pool (same round)",
                        "CPU s per photo", "photos per CPU s vs local pool (same round)", "photos/s per round",
                        "photos per node (filter + embed, last round)"], rows),
        "",
        f"Driver memory (resident), {memory['paths']:,} synthetic photo paths; the engine streamed "
        f"{memory['items_per_s']:.0f} items/s through 2 actors with a function that does no dlib work (batches of up "
        "to 8): about what one driver can feed here.\n",
        markdown_table(["driver holds", "resident"], memory_rows),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="5 rounds, and stream all the paths through Ray")
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--paths", type=int, default=1_000_000)
    args = parser.parse_args()
    require_shared()
    from lookalike_cli.config import load_config

    rounds = 5 if args.full else 3
    local = load_config(None, {"num_jitters": 1, "workers": 2})
    on_ray = replace(local, runtime=replace(local.runtime, executor="ray"))
    portraits = sorted((CONGRESS / "images").glob("*.jpg"))
    with tempfile.TemporaryDirectory(prefix="lkbench", dir="/tmp") as temp:
        root = Path(temp)
        # Ray lowers its workers' priority (niceness +15) by default: on this shared machine that would compare
        # priorities, not engines; with 0 they run at this process's niceness, as the local pool's workers do.
        os.environ.update(ray_settings(root / "ray"), RAY_worker_niceness="0")
        measured = copy_portraits(portraits[:args.photos], root / "images")
        warm = copy_portraits(portraits[args.photos:args.photos + WARM_UP], root / "warm")
        phases = [side_by_side({"local pool": (local, forkserver),
                                "Ray, started here (2 CPUs)": (on_ray, ray_started_here)}, measured, warm, root,
                               rounds)]
        started = time.perf_counter()
        with LoopbackCluster(nodes=2, cpus=1) as cluster:
            cluster_start = time.perf_counter() - started
            two_nodes = replace(on_ray, runtime=replace(on_ray.runtime, workers=0, ray_address=cluster.address))
            nodes = {process.pid for process in cluster.processes}
            phases.append(side_by_side({"local pool": (local, forkserver),
                                        "Ray, 2 nodes x 1 CPU": (two_nodes, lambda table: nodes)}, measured, warm,
                                       root, rounds))
        memory = driver_memory(args.paths, args.paths if args.full else min(args.paths, 20_000))
    write_report("ray-full" if args.full else "ray-quick",
                 report(phases, memory, cluster_start, rounds, sys.argv[1:]))


if __name__ == "__main__":
    main()

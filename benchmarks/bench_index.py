"""Nearest-neighbour search, 128-d, Euclidean: the project's exact numpy search vs HNSW (nmslib, the
project's; faiss, hnswlib and usearch for comparison, when installed) on real descriptors and on synthetic ones matched to them.

    .venv/bin/python benchmarks/bench_index.py          # quick: real, 12k and 100k vectors
    .venv/bin/python benchmarks/bench_index.py --full   # adds 1M vectors and a wider parameter sweep

Real descriptors: the congress portraits and the labelled faces, embedded once by `lookalike build` (cached in
benchmarks/.cache). Synthetic ones: a Gaussian with the real descriptors' mean and covariance, scaled so that the
nearest-neighbour distance of a sample as large as the real set has the real median (both histograms are in the
report). Queries are held-out vectors of the same kind; the truth is the exact search. "1st distance excess"
is how much farther the first answer is than the true nearest (99th percentile over the queries): what a miss
costs the user, who sees a slightly less similar lookalike. Every HNSW build runs in a
child process with a time limit, so a setting that takes too long is reported as such instead of stalling the run.
"""

from __future__ import annotations

import os

# One BLAS thread, like the single-threaded HNSW queries: on a busy machine numpy's two OpenBLAS threads
# spin-wait for each other and a single exact query at 12k vectors took 16 ms instead of 0.3 ms.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from common import (CACHE, header, markdown_table, median, ms, percentile, real_descriptors, recall_at,
                    save_json, write_report)

K = 10
EF_SEARCH = (10, 20, 40, 80, 160, 400)
REAL_QUERIES = 100  # real descriptors held out as queries; the rest is the real gallery
ORIGINAL = (100, 2000)  # the original service's M and efConstruction (efSearch 400)


def nearest_distances(vectors: np.ndarray) -> np.ndarray:
    """Each vector's distance to its nearest other vector (exact)."""
    from lookalike_cli.gallery.search import ExactIndex

    _, distances = ExactIndex(vectors).search(vectors, 2)
    return distances[:, 1]


def sampler(real: np.ndarray):
    """A function (n, seed) -> n synthetic vectors: Gaussian with the real mean and covariance, times a
    scale fitted so that the median nearest-neighbour distance matches the real one at the real size."""
    mean = real.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(real, rowvar=False))
    basis = vectors * np.sqrt(np.maximum(values, 0.0))

    def sample(n: int, seed: int, scale: float = 1.0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = np.empty((n, real.shape[1]), dtype=np.float32)
        for start in range(0, n, 100_000):
            z = rng.standard_normal((min(100_000, n - start), real.shape[1]))
            out[start:start + len(z)] = mean + scale * (z @ basis.T)
        return out

    target = float(np.median(nearest_distances(real)))
    low, high = 0.5, 2.0
    for _ in range(20):  # the median nearest distance grows with the scale: bisect
        scale = (low + high) / 2
        if np.median(nearest_distances(sample(len(real), 1, scale))) < target:
            low = scale
        else:
            high = scale
    scale = (low + high) / 2
    return lambda n, seed: sample(n, seed, scale), scale


def text_histogram(named: dict[str, np.ndarray], bins: int = 16) -> str:
    """Side-by-side text histograms (share of vectors per distance bin)."""
    edges = np.linspace(min(v.min() for v in named.values()), max(v.max() for v in named.values()), bins + 1)
    shares = {name: np.histogram(values, edges)[0] / len(values) for name, values in named.items()}
    lines = ["distance      " + "".join(f"{name:<34}" for name in named)]
    for i in range(bins):
        cells = "".join(f"{'#' * round(share[i] * 100):<26}{share[i]:>6.1%}  " for share in shares.values())
        lines.append(f"{edges[i]:.3f}-{edges[i + 1]:.3f}  {cells}")
    return "```\n" + "\n".join(lines) + "\n```"


def dataset(name: str, n: int, queries: int, sample) -> tuple[Path, Path]:
    """Cached .npy files of a gallery of ``n`` vectors and its held-out queries."""
    CACHE.mkdir(parents=True, exist_ok=True)
    gallery, held_out = CACHE / f"{name}-{n}.npy", CACHE / f"{name}-{n}-queries-{queries}.npy"
    if not gallery.exists():
        np.save(gallery, sample(n, 2))
    if not held_out.exists():
        np.save(held_out, sample(queries, 3))
    return gallery, held_out


def time_queries(search, queries: np.ndarray) -> dict:
    """Single-query median and p99, batched time per query, and the ids found (k = 10)."""
    single, found = [], []
    for query in queries:
        started = time.perf_counter()
        ids, _ = search(query[None, :])
        single.append(time.perf_counter() - started)
        found.append(ids[0])
    started = time.perf_counter()
    search(queries)
    batched = (time.perf_counter() - started) / len(queries)
    return {"median": median(single), "p99": percentile(single, 99), "batched": batched,
            "ids": np.asarray(found)}


def measure_exact(gallery: np.ndarray, queries: np.ndarray) -> dict:
    from lookalike_cli.gallery.search import ExactIndex

    started = time.perf_counter()
    index = ExactIndex(gallery)
    build = time.perf_counter() - started
    result = time_queries(lambda q: index.search(q, K), queries)
    return result | {"build": build, "size": gallery.nbytes}


def parquet_gallery(gallery: np.ndarray) -> dict:
    """Seconds to write and read back ``gallery.parquet`` (the project's artifact) of these vectors, its size."""
    import pyarrow as pa

    from lookalike_cli.io.artifacts import EMBEDDING_SIZE, DataDir, load_table, table_vectors, write_table

    names = pa.array([f"person-{i:07d}" for i in range(len(gallery))])
    table = pa.table({"alias": names, "kind": pa.array(["photo"] * len(gallery)), "path": names, "image": names,
                      "embed_key": pa.array(["model=x;num_jitters=10"] * len(gallery)),
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(gallery.reshape(-1)), EMBEDDING_SIZE)})
    with tempfile.TemporaryDirectory() as folder:
        data = DataDir(Path(folder))
        started = time.perf_counter()
        write_table(data.path("gallery"), "gallery", table)
        write = time.perf_counter() - started
        started = time.perf_counter()
        table_vectors(load_table(data.path("gallery"), "gallery"))
        return {"write": write, "read": time.perf_counter() - started, "size": data.path("gallery").stat().st_size}


def peak_memory() -> int:
    """This process's peak resident memory in bytes (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def file_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))


def build_nmslib(gallery: np.ndarray, m: int, ef_construction: int, threads: int, path: Path):
    """The project's index: build, save to ``path``, load back. Every builder returns (search, set_ef, build
    seconds, load seconds)."""
    from lookalike_cli.config import IndexConfig
    from lookalike_cli.gallery.search import HnswIndex

    started = time.perf_counter()
    built = HnswIndex.build(gallery, m, ef_construction, IndexConfig().hnsw_ef_search, threads)
    build = time.perf_counter() - started
    built.save(path)
    started = time.perf_counter()
    index = HnswIndex.load(path, len(gallery), 10)
    load = time.perf_counter() - started
    return (lambda q: index.search(q, K)), (lambda ef: index.index.setQueryTimeParams({"efSearch": ef})), build, load


def build_faiss(gallery: np.ndarray, m: int, ef_construction: int, threads: int, path: Path):
    import faiss

    faiss.omp_set_num_threads(threads)
    started = time.perf_counter()
    index = faiss.IndexHNSWFlat(gallery.shape[1], m)
    index.hnsw.efConstruction = ef_construction
    index.add(gallery)
    build = time.perf_counter() - started
    faiss.write_index(index, str(path))
    started = time.perf_counter()
    index = faiss.read_index(str(path))
    load = time.perf_counter() - started
    faiss.omp_set_num_threads(1)

    def set_ef(ef: int) -> None:
        index.hnsw.efSearch = ef
    return (lambda q: index.search(q, K)[::-1]), set_ef, build, load  # (distances, ids) -> (ids, distances)


def build_hnswlib(gallery: np.ndarray, m: int, ef_construction: int, threads: int, path: Path):
    import hnswlib

    started = time.perf_counter()
    index = hnswlib.Index(space="l2", dim=gallery.shape[1])
    index.init_index(max_elements=len(gallery), M=m, ef_construction=ef_construction)
    index.add_items(gallery, num_threads=threads)
    build = time.perf_counter() - started
    index.save_index(str(path))
    started = time.perf_counter()
    index = hnswlib.Index(space="l2", dim=gallery.shape[1])
    index.load_index(str(path))
    load = time.perf_counter() - started
    return (lambda q: index.knn_query(q, k=K, num_threads=1)), index.set_ef, build, load


def build_usearch(gallery: np.ndarray, m: int, ef_construction: int, threads: int, path: Path):
    from usearch.index import Index

    started = time.perf_counter()
    index = Index(ndim=gallery.shape[1], metric="l2sq", dtype="f32", connectivity=m, expansion_add=ef_construction)
    index.add(np.arange(len(gallery)), gallery, threads=threads)
    build = time.perf_counter() - started
    index.save(str(path))
    started = time.perf_counter()
    index = Index.restore(str(path))
    load = time.perf_counter() - started

    def search(q: np.ndarray):
        found = index.search(q, K, threads=1)
        return np.atleast_2d(found.keys), np.atleast_2d(found.distances)

    def set_ef(ef: int) -> None:
        index.expansion_search = ef
    return search, set_ef, build, load


BUILDERS = {"nmslib": build_nmslib, "faiss": build_faiss, "hnswlib": build_hnswlib, "usearch": build_usearch}


def child(library: str, gallery_file: str, queries_file: str, m: int, ef_construction: int,
          threads: int) -> dict:
    """Build one HNSW index and sweep efSearch (runs in a child process; prints JSON)."""
    gallery, queries = np.load(gallery_file), np.load(queries_file)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "index.bin"
        search, set_ef, build, load = BUILDERS[library](gallery, m, ef_construction, threads, path)
        size = file_size(path)
    sweep = {}
    for ef in EF_SEARCH:
        set_ef(ef)
        result = time_queries(search, queries)
        sweep[ef] = result | {"ids": result["ids"].tolist()}
    return {"build": build, "load": load, "size": size, "peak_rss": peak_memory(),
            "sweep": sweep}


def run_child(library: str, gallery: Path, queries: Path, m: int, ef_construction: int, threads: int,
              limit: float) -> dict | None:
    """``child`` in its own process, or None when it did not finish within ``limit`` seconds."""
    command = [sys.executable, __file__, "--child", library, str(gallery), str(queries), str(m),
               str(ef_construction), str(threads)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit, check=True)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(done.stdout)


def size_text(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def bench(name: str, gallery_file: Path, queries_file: Path, settings: list[tuple[str, int, int]],
          threads: int, limit: float) -> tuple[str, list[dict]]:
    """One gallery: exact vs every HNSW setting, as a Markdown table and raw rows."""
    gallery, queries = np.load(gallery_file), np.load(queries_file)
    exact = measure_exact(gallery, queries)
    truth = exact["ids"]
    nearest = np.linalg.norm(gallery[truth[:, 0]] - queries, axis=1)
    rows = [["exact (numpy)", "-", ms(exact["build"]), size_text(exact["size"]), ms(exact["median"]),
             ms(exact["p99"]), ms(exact["batched"]), "1.000", "1.000", "0.0%", "1.0x"]]
    raw = [{"backend": "exact", "n": len(gallery), **{k: v for k, v in exact.items() if k != "ids"}}]
    for library, m, ef_construction in settings:
        started = time.perf_counter()
        result = run_child(library, gallery_file, queries_file, m, ef_construction, threads, limit)
        label = f"{library} M={m} efC={ef_construction}"
        if result is None:
            rows.append([label, "-", f"not finished in {time.perf_counter() - started:.0f} s"] + ["-"] * 8)
            raw.append({"backend": library, "n": len(gallery), "M": m, "efConstruction": ef_construction,
                        "timeout": limit})
            continue
        for ef, found in result["sweep"].items():
            ids = np.asarray(found["ids"])
            r1, r10 = recall_at(ids, truth, 1), recall_at(ids, truth, K)
            excess = percentile(np.linalg.norm(gallery[ids[:, 0]] - queries, axis=1) / nearest - 1, 99)
            rows.append([label, ef, f"{result['build']:.1f} s", size_text(result["size"]), ms(found["median"]),
                         ms(found["p99"]), ms(found["batched"]), f"{r1:.3f}", f"{r10:.3f}", f"{excess:.1%}",
                         f"{exact['median'] / found['median']:.1f}x"])
            raw.append({"backend": library, "n": len(gallery), "M": m, "efConstruction": ef_construction,
                        "efSearch": int(ef), "build": result["build"], "load": result["load"],
                        "size": result["size"],
                        "peak_rss": result["peak_rss"], "median": found["median"], "p99": found["p99"],
                        "batched": found["batched"], "recall1": r1, "recall10": r10, "excess_p99": excess})
    table = markdown_table(["index", "efSearch", "build", "size", "query median ms", "p99 ms",
                            "batched ms/query", "recall@1", "recall@10", "1st distance excess p99",
                            "speed-up (median)"], rows)
    parquet = parquet_gallery(gallery)
    loads = [[f"{r['backend']} M={r['M']} efC={r['efConstruction']}", f"{r['build']:.1f}", size_text(r["size"]),
              f"{r['load']:.2f}", f"{r['peak_rss'] / 2**20:.0f} MiB"]
             for r in raw if r.get("efSearch") == EF_SEARCH[0]]
    scale = markdown_table(["index file", "build s", "size", "load s", "peak memory of build + queries"], loads)
    return (f"### {name}: {len(gallery):,} vectors, {len(queries)} queries, k={K}\n\n{table}\n\n"
            f"`gallery.parquet` of these vectors: {size_text(parquet['size'])}, written in {parquet['write']:.2f} s, "
            f"read (`table_vectors`) in {parquet['read']:.2f} s; the exact index is those vectors in memory.\n\n"
            f"{scale}\n"), raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="1M vectors and a wider sweep (an hour or more)")
    parser.add_argument("--threads", type=int, default=2, help="build threads")
    parser.add_argument("--sizes", help="only these synthetic sizes, e.g. 1000000 (default: by mode)")
    parser.add_argument("--exact-only", action="store_true", help="no HNSW builds (exact search, Parquet)")
    parser.add_argument("--settings", help="these builds instead of the mode's, e.g. nmslib:32:200,hnswlib:32:200 "
                                           f"(library:M:efConstruction; libraries: {', '.join(BUILDERS)})")
    args = parser.parse_args()
    started = time.perf_counter()

    real, labels = real_descriptors()
    sample, scale = sampler(real)
    synthetic = sample(len(real), 4)
    real_nn, synthetic_nn = nearest_distances(real), nearest_distances(synthetic)
    quantiles = [5, 25, 50, 75, 95]
    parts = [header("Nearest-neighbour search", ["benchmarks/bench_index.py", *sys.argv[1:]]),
             f"Real descriptors: {len(real)} photos of {len(set(labels))} people (congress portraits and "
             "faces/people, dlib ResNet, num_jitters 1). Synthetic: Gaussian with their mean and covariance, "
             f"scale {scale:.3f}. Nearest-neighbour distance at {len(real)} vectors:\n",
             markdown_table(["set"] + [f"p{q}" for q in quantiles],
                            [[name] + [f"{percentile(values, q):.3f}" for q in quantiles] for name, values in
                             (("real", real_nn), ("synthetic", synthetic_nn))]), "",
             text_histogram({"real": real_nn, "synthetic": synthetic_nn}), ""]

    rng = np.random.default_rng(0)
    held = rng.permutation(len(real))
    CACHE.mkdir(parents=True, exist_ok=True)
    real_gallery, real_queries = CACHE / "real-gallery.npy", CACHE / "real-queries.npy"
    np.save(real_gallery, real[held[REAL_QUERIES:]])
    np.save(real_queries, real[held[:REAL_QUERIES]])

    core = [("nmslib", 16, 100), ("nmslib", 32, 200), ("faiss", 16, 100)]
    wide = [("faiss", 32, 200), ("nmslib", 8, 50), ("nmslib", 48, 400), ("nmslib", *ORIGINAL)]
    queries = 1000 if args.full else 300
    # (name, synthetic size or None for the real set, HNSW builds, time limit per build in seconds)
    plan = [("Real descriptors", None, core, 120),
            ("Synthetic", 12_000, core + (wide if args.full else [("nmslib", *ORIGINAL)]), 900 if args.full else 300),
            ("Synthetic", 100_000, core + (wide if args.full else []), 1800)]
    if args.full or args.sizes:
        plan.append(("Synthetic", 1_000_000, [("nmslib", 16, 100), ("faiss", 16, 100), ("nmslib", 32, 200)], 3600))
    if args.sizes:
        sizes = {int(size) for size in args.sizes.split(",")}
        plan = [entry for entry in plan if (entry[1] or len(real) - REAL_QUERIES) in sizes]
    chosen = [(library, int(m), int(ef)) for library, m, ef in
              (item.split(":") for item in args.settings.split(","))] if args.settings else None
    missing = {library for library in BUILDERS if importlib.util.find_spec(library) is None}
    if missing:  # the comparisons are optional: pip install 'lookalike[bench]' (hnswlib compiles from source)
        print(f"not installed, skipped: {', '.join(sorted(missing))}", file=sys.stderr)
    raw = []
    for name, size, settings, limit in plan:
        settings = [] if args.exact_only else chosen or settings
        gallery, held_out = (real_gallery, real_queries) if size is None else \
            dataset("synthetic", size, queries, sample)
        text, rows = bench(name, gallery, held_out, [s for s in settings if s[0] not in missing], args.threads,
                           limit)
        parts.append(text)
        raw += rows
        print(text, file=sys.stderr, flush=True)
    parts.append(f"Load at end: {os.getloadavg()[0]:.2f}; whole run {time.perf_counter() - started:.0f} s. Build "
                 f"threads: {args.threads}; queries one at a time on one thread (batched: all at once).")
    mode = ("full" if args.full else "quick") + ("-" + args.sizes.replace(",", "-") if args.sizes else "") + \
        ("-exact" if args.exact_only else "") + ("-" + args.settings.replace(":", "").replace(",", "-")
                                                  if args.settings else "")
    write_report(f"index-{mode}", "\n".join(parts))
    save_json(f"index-{mode}", raw)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        library, gallery_file, queries_file, m, ef_construction, threads = sys.argv[2:8]
        print(json.dumps(child(library, gallery_file, queries_file, int(m), int(ef_construction), int(threads))))
    else:
        main()

"""Search without a graph at 100k vectors: faiss's inverted file (IVF) and a PCA first pass with an exact
re-rank, against the project's exact search, on the same synthetic vectors and queries as bench_index.py.

    .venv/bin/python benchmarks/bench_search_pruning.py          # quick: 300 queries
    .venv/bin/python benchmarks/bench_search_pruning.py --full   # 1000 queries

The question it answers: can anything that skips most of the gallery reach recall@1 >= 0.995 at 20x the exact
search (issue 7's target at 100k), where the HNSW libraries of bench_index.py cannot? The IVF rows need faiss
('.[bench]'); without it they are skipped.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as in bench_index.py: single-threaded queries

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from bench_index import K, dataset, measure_exact, sampler, time_queries  # noqa: E402
from common import header, markdown_table, ms, real_descriptors, recall_at, write_report  # noqa: E402

SIZE = 100_000


def ivf_rows(gallery: np.ndarray, queries: np.ndarray, truth: np.ndarray, exact_ms: float) -> list[list]:
    import faiss

    faiss.omp_set_num_threads(1)
    rows = []
    for lists in (256, 1024):
        started = time.perf_counter()
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(gallery.shape[1]), gallery.shape[1], lists)
        index.train(gallery)
        index.add(gallery)
        build = time.perf_counter() - started
        for probes in (8, 16, 32, 64, 128):
            index.nprobe = probes
            found = time_queries(lambda q: index.search(q, K)[::-1], queries)
            rows.append(row(f"faiss IVFFlat, {lists} lists", f"nprobe {probes}", build, found, truth, exact_ms))
    return rows


def pca_rows(gallery: np.ndarray, queries: np.ndarray, truth: np.ndarray, exact_ms: float) -> list[list]:
    """Exact search over the first principal components for candidates, then exact distances over those."""
    from lookalike_cli.gallery.search import ExactIndex

    rows = []
    for dims in (16, 32, 48):
        started = time.perf_counter()
        mean = gallery.mean(axis=0)
        components = np.linalg.svd(gallery[:20_000] - mean, full_matrices=False)[2][:dims].T.astype(np.float32)
        reduced = ExactIndex((gallery - mean) @ components)
        build = time.perf_counter() - started
        for candidates in (50, 200):
            def search(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                ids = reduced.search((q - mean) @ components, candidates)[0]
                distances = np.linalg.norm(gallery[ids] - q[:, None, :], axis=2)
                order = np.argsort(distances, axis=1)[:, :K]
                return np.take_along_axis(ids, order, axis=1), np.take_along_axis(distances, order, axis=1)

            found = time_queries(search, queries)
            rows.append(row(f"PCA {dims} dims + exact re-rank", f"{candidates} candidates", build, found, truth,
                            exact_ms))
    return rows


def row(name: str, breadth: str, build: float, found: dict, truth: np.ndarray, exact_ms: float) -> list:
    return [name, breadth, f"{build:.1f} s", ms(found["median"]), f"{recall_at(found['ids'], truth, 1):.3f}",
            f"{recall_at(found['ids'], truth, K):.3f}", f"{exact_ms / found['median']:.1f}x"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="1000 queries")
    args = parser.parse_args()
    sample, _ = sampler(real_descriptors()[0])
    gallery_file, queries_file = dataset("synthetic", SIZE, 1000 if args.full else 300, sample)
    gallery, queries = np.load(gallery_file), np.load(queries_file)
    exact = measure_exact(gallery, queries)
    rows = [["exact (numpy, the project's)", "-", "-", ms(exact["median"]), "1.000", "1.000", "1.0x"]]
    if importlib.util.find_spec("faiss"):
        rows += ivf_rows(gallery, queries, exact["ids"], exact["median"])
    else:
        print("faiss is not installed: no IVF rows (pip install '.[bench]')", file=sys.stderr)
    rows += pca_rows(gallery, queries, exact["ids"], exact["median"])
    text = "\n".join([
        header("Search that prunes the gallery, without a graph", ["benchmarks/bench_search_pruning.py",
                                                                    *sys.argv[1:]]),
        f"{SIZE:,} synthetic vectors and {len(queries)} held-out queries (bench_index.py's), k={K}, queries one "
        "at a time on one thread; recall against the exact search.\n",
        markdown_table(["method", "search breadth", "build", "query median ms", "recall@1", "recall@10",
                        "speed-up vs exact"], rows)])
    write_report(f"search-pruning-{'full' if args.full else 'quick'}", text)


if __name__ == "__main__":
    main()

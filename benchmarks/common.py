"""Shared helpers of the benchmarks: timing, medians, machine facts, Markdown tables, cached real data.

Every benchmark compares things side by side in one run on the same data, so that the ratios hold even when
the (shared) machine is busy; each report starts with the machine, the library versions and the load.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "benchmarks" / ".cache"  # computed data (real descriptors, galleries, synthetic vectors): gitignored
RESULTS = REPO / "benchmarks" / "results"
SHARED = Path(os.environ.get("LOOKALIKE_SHARED", REPO.parent / "shared"))
CONGRESS = SHARED / "congress"
FACES = SHARED / "faces"
PHOTO_SUFFIXES = (".jpg", ".png")
VERSIONED = ("dlib-bin", "dlib", "nmslib", "faiss-cpu", "hnswlib", "usearch", "numpy", "pillow", "pyarrow",
             "onnxruntime")

sys.path.insert(0, str(REPO))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, linear between ranks."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def repeat_timed(func: Callable[[], object], times: int) -> list[float]:
    """Seconds taken by each of ``times`` calls of ``func``."""
    seconds = []
    for _ in range(times):
        started = time.perf_counter()
        func()
        seconds.append(time.perf_counter() - started)
    return seconds


def recall_at(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean share of the true ``k`` nearest neighbours (rows of ``truth``) among the first ``k`` found."""
    hits = [len(set(row_found[:k].tolist()) & set(row_truth[:k].tolist())) for row_found, row_truth in
            zip(found, truth)]
    return float(np.mean(hits) / k)


def ms(seconds: float) -> str:
    """Seconds as milliseconds with 2 to 3 significant digits."""
    value = seconds * 1000
    return f"{value:.3f}" if value < 0.1 else f"{value:.2f}" if value < 10 else f"{value:.0f}" \
        if value >= 100 else f"{value:.1f}"


def answer_counts(counts: Mapping[int, int]) -> str:
    """Counts of answers by status, as "3 x 200, 1 x 413" ("none" for none)."""
    return ", ".join(f"{count} x {status}" for status, count in sorted(counts.items())) or "none"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> str:
    found = []
    for name in VERSIONED:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def dlib_build() -> str:
    """Which dlib this process runs: version, BLAS, AVX (what `lookalike info` prints)."""
    from lookalike_cli.face.descriptors import dlib_build_info

    info = dlib_build_info()
    return f"dlib {info['version']} (BLAS {'on' if info['blas'] else 'off'}, AVX {'on' if info['avx'] else 'off'})"


def shared_photos(pattern: str) -> list[Path]:
    """The JPEG and PNG files of ``../shared/faces`` matching ``pattern`` ("people/*/*": the labelled photos),
    sorted."""
    return sorted(p for p in FACES.glob(pattern) if p.suffix.lower() in PHOTO_SUFFIXES)


def header(title: str, argv: Sequence[str]) -> str:
    """The head of a report: what, the command, the machine, versions and the load when it started."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return "\n".join([
        f"## {title}", "",
        f"Command: `{' '.join(argv)}`  ",
        f"Machine: {cores} cores, {cpu_model()}, Python {platform.python_version()}, {platform.system()}  ",
        f"Versions: {versions()}  ",
        f"Load (1, 5, 15 min) at start: {load_average()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        ""])


def write_report(name: str, text: str) -> Path:
    """Print a report and keep it as ``benchmarks/results/<name>.md``."""
    print(text, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text + "\n")
    return path


def require_shared() -> None:
    if not CONGRESS.is_dir():
        sys.exit(f"{CONGRESS} is missing: the benchmarks need the shared face photos (set LOOKALIKE_SHARED)")


def congress_gallery(num_jitters: int = 1) -> Path:
    """A data directory built by `lookalike build` over the 879 congress portraits (cached; resumes)."""
    require_shared()
    data_dir = CACHE / f"congress-j{num_jitters}"
    if not (data_dir / "generations" / "CURRENT").exists():
        run_cli(["build", "--images", str(CONGRESS / "images"), "--catalog", str(CONGRESS / "catalog.json"),
                 "--data-dir", str(data_dir), "--num-jitters", str(num_jitters)])
    return data_dir


def faces_embeddings(num_jitters: int = 1) -> Path:
    """A data directory with filter + embed run over the labelled photos of ``faces/people`` (cached)."""
    require_shared()
    data_dir = CACHE / f"faces-j{num_jitters}"
    if not (data_dir / "embeddings.parquet").exists():
        run_cli(["filter", "--images", str(FACES / "people"), "--data-dir", str(data_dir)])
        run_cli(["embed", "--data-dir", str(data_dir), "--num-jitters", str(num_jitters)])
    return data_dir


def run_cli(args: Sequence[str], tree: Path = REPO) -> None:
    """``lookalike`` with ``args``, run from the source ``tree`` (this one, or a reference_tree)."""
    subprocess.run([sys.executable, "-m", "lookalike_cli", *args], check=True, cwd=tree, env=tree_env(tree))


def reference_tree(commit: str) -> Path:
    """The source tree of an earlier commit of this repository (``git archive``, cached), to run side by side with
    this one: its commands run with ``run_cli(..., tree)`` or ``tree_env``."""
    tree = CACHE / f"tree-{commit}"
    if not (tree / "lookalike_cli").is_dir():
        partial = tree.with_name(tree.name + ".partial")
        subprocess.run(["rm", "-rf", str(partial)], check=True)
        partial.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(partial)], input=archive.stdout, check=True)
        partial.rename(tree)
    return tree


def tree_env(tree: Path) -> dict[str, str]:
    """The environment that makes Python import ``lookalike_cli`` from ``tree``."""
    return dict(os.environ, PYTHONPATH=str(tree))


def real_descriptors(num_jitters: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(N x 128 float32 descriptors, person labels) of every embedded congress and faces/people photo."""
    from lookalike_cli.io.artifacts import DataDir

    vectors, labels = [], []
    for data_dir in (congress_gallery(num_jitters), faces_embeddings(num_jitters)):
        rows, found = DataDir(data_dir).vectors("embeddings")
        vectors.append(found)
        labels += [f"{data_dir.name}/{row['alias']}" for row in rows]
    return np.concatenate(vectors), np.asarray(labels)


def save_json(name: str, data: object) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")

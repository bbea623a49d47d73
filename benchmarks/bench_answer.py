"""What an answer costs, side by side with main at b7e6332 (before coarse-to-fine detection), in one run:
worker time per photo, `serve` throughput, `filter` over congress portraits, and whether every answer is the same.

    .venv/bin/python benchmarks/bench_answer.py          # quick: every 5th photo, 1 round of 10 s per server
    .venv/bin/python benchmarks/bench_answer.py --full   # every photo, 879 congress portraits, 3 rounds of 20 s

The reference is the source of b7e6332 (`git archive`, cached under benchmarks/.cache) with the demo gallery its
own `lookalike build` made (1 jitter); this tree answers from the demo gallery it builds. Each runs in its own
process (benchmarks/answer_worker.py: the recognition worker's own function on the photo's bytes, decode to
search), and the photos go to the two in turn, each answered 3 times (the median kept): they never run at the
same moment, and both see the machine's every minute.

Photos: the demo selfie (225x275) as it is; the labelled photos of ../shared/faces/people and faces/hard resized to
1280 px on the longer side (what the web page and Telegram send; JPEG quality 90); 12 of them resized to 12 Mpx
(a phone's full photo); the congress portraits as they are (225x275). For every photo the faces (boxes), top-1 and
the look that found them are compared. `serve`: 2 workers each, 4 closed-loop clients posting the 1280 px photos,
alternate rounds. `filter`: `lookalike filter` over 200 congress portraits, 2 workers, alternate runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from common import (CACHE, CONGRESS, FACES, REPO, header, markdown_table, median, ms, reference_tree,
                    require_shared, tree_env, write_report)

REFERENCE = "b7e6332"
REPEAT = 3
SIDE = 1280
MEGAPIXELS = 12_000_000
LARGE_PHOTOS = 12
FILTERED = 200


def resized(source: Path, target: Path, factor_of) -> Path:
    """``source`` resized (Lanczos) by ``factor_of(width, height)`` and saved as a JPEG at ``target`` (cached)."""
    if not target.exists():
        from PIL import Image

        image = Image.open(source).convert("RGB")
        factor = factor_of(*image.size)
        image = image.resize((round(image.width * factor), round(image.height * factor)), Image.LANCZOS)
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, quality=90)
    return target


def photo_sets(full: bool) -> dict[str, list[Path]]:
    folder = CACHE / "answer-photos"
    people = sorted(p for p in (FACES / "people").glob("*/*") if p.suffix.lower() in (".jpg", ".png"))
    hard = sorted(p for p in (FACES / "hard").glob("*") if p.suffix.lower() in (".jpg", ".png"))
    step = 1 if full else 5
    to_side = lambda width, height: SIDE / max(width, height)  # noqa: E731
    to_pixels = lambda width, height: (MEGAPIXELS / (width * height)) ** 0.5  # noqa: E731
    name = lambda path: f"{path.parent.name}-{path.stem}.jpg"  # noqa: E731
    congress = sorted((CONGRESS / "images").glob("*.jpg"))
    return {
        "demo selfie 225x275": [REPO / "data/demo/selfie.jpg"],
        "people 1280 px": [resized(p, folder / "1280" / name(p), to_side) for p in people[::step]],
        "hard cases 1280 px": [resized(p, folder / "1280" / name(p), to_side) for p in hard[::1 if full else 2]],
        "people 12 Mpx": [resized(p, folder / "12mpx" / name(p), to_pixels)
                          for p in people[::len(people) // LARGE_PHOTOS][:LARGE_PHOTOS if full else 4]],
        "congress 225x275": congress[::1 if full else 8],
    }


class Worker:
    """answer_worker.py of a source tree, answering from a data directory."""

    def __init__(self, tree: Path, data_dir: Path):
        self.process = subprocess.Popen([sys.executable, str(REPO / "benchmarks/answer_worker.py"), str(data_dir)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tree,
                                        env=tree_env(tree))
        assert json.loads(self.process.stdout.readline())["ready"]

    def answer(self, path: Path, repeat: int) -> dict:
        self.process.stdin.write(json.dumps({"path": str(path), "repeat": repeat}) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)


def worker_times(trees: dict[str, tuple[Path, Path]], sets: dict[str, list[Path]]) -> tuple[list, list, Counter]:
    """Per set, the median worker seconds per photo of each tree; the photos whose answers differ; looks."""
    workers = {name: Worker(tree, data) for name, (tree, data) in trees.items()}
    rows, differences, looks = [], [], Counter()
    try:
        for set_name, paths in sets.items():
            seconds: dict[str, list[float]] = {name: [] for name in workers}
            faces = 0
            for path in paths:
                repeat = REPEAT * 2 if len(paths) == 1 else REPEAT
                answers = {name: worker.answer(path, repeat) for name, worker in workers.items()}
                for name, answer in answers.items():
                    seconds[name].append(median(answer["seconds"]))
                before, now = answers.values()
                strip = lambda answer: [(f["box"], f["top1"]) for f in answer["faces"]]  # noqa: E731
                if strip(before) != strip(now) or before["reason"] != now["reason"]:
                    differences.append((set_name, path.name, before, now))
                faces += len(now["faces"])
                looks.update(f"{set_name}: {face['detector']}" for face in now["faces"])
            old, new = (median(values) for values in seconds.values())
            rows.append([set_name, len(paths), faces, ms(old), ms(new), f"{new / old:.2f}", f"{old / new:.1f}x"])
    finally:
        for worker in workers.values():
            worker.close()
    return rows, differences, looks


def serve_throughput(trees: dict[str, tuple[Path, Path]], photos: list[bytes], rounds: int, seconds: float) -> list:
    from bench_serve import load, serving

    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for _ in range(rounds):
        for name, (tree, data) in trees.items():
            with serving(data, 2, tree=tree) as server:
                runs[name].append(load(server, photos, seconds))
    rows = []
    for name, results in runs.items():
        per_second = median([r["per_second"] for r in results])
        rows.append([name, f"{per_second:.2f}", ms(median([r["p50"] for r in results])),
                     ms(median([r["p99"] for r in results])), sum(r["answered"] for r in results)])
    old, new = (float(row[1]) for row in rows)
    rows.append(["ratio", f"{new / old:.2f}x", "", "", ""])
    return rows


def filter_times(trees: dict[str, tuple[Path, Path]], runs: int) -> list:
    images = CACHE / f"congress-{FILTERED}" / "images"  # copies: filter reads regular files, never links
    if not images.is_dir():
        images.mkdir(parents=True)
        for path in sorted((CONGRESS / "images").glob("*.jpg"))[:FILTERED]:
            (images / path.name).write_bytes(path.read_bytes())
    times: dict[str, list[float]] = {name: [] for name in trees}
    for run in range(runs):
        for name, (tree, _) in trees.items():
            data = CACHE / f"filter-{name.split()[0]}-{run}"
            subprocess.run(["rm", "-rf", str(data)], check=True)
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "lookalike_cli", "filter", "--images", str(images),
                            "--data-dir", str(data), "--workers", "2"], check=True, cwd=tree, env=tree_env(tree),
                           capture_output=True)
            times[name].append(time.perf_counter() - started)
    old, new = (median(values) for values in times.values())
    return [[name, f"{median(values):.1f}", " ".join(f"{v:.1f}" for v in values)] for name, values in times.items()
            ] + [["ratio", f"{old / new:.2f}x faster", ""]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    require_shared()
    from bench_serve import demo_gallery

    reference = reference_tree(REFERENCE)
    trees = {f"{REFERENCE} (fine look only)": (reference, demo_gallery(reference)),
             "this tree (coarse to fine)": (REPO, demo_gallery())}
    sets = photo_sets(args.full)
    report = [header("Answer cost: coarse-to-fine detection against main at b7e6332", sys.argv)]

    def say(*lines: str) -> None:  # each part as it is measured, so that a failure later keeps it
        print("\n".join(lines), flush=True)
        report.extend(lines)

    rows, differences, looks = worker_times(trees, sets)
    say("", "Worker time per photo (decode to search, the worker's own function), median of per-photo medians:",
        "", markdown_table(["photos", "n", "faces", f"{REFERENCE} ms", "now ms", "now / then", "faster"], rows),
        "", "Faces by the look that found them (this tree): " + ", ".join(
            f"{key} {count}" for key, count in sorted(looks.items())), "",
        f"Answers that differ (boxes or top-1): {len(differences)}",
        *[f"- {set_name} {name}: {json.dumps(old)} -> {json.dumps(new)}"
          for set_name, name, old, new in differences])
    photos = [path.read_bytes() for path in sets["people 1280 px"]]
    say("", "`lookalike serve`, 2 workers, 4 clients posting the 1280 px people photos:", "",
        markdown_table(["server", "answers/s", "p50 ms", "p99 ms", "answered"],
                       serve_throughput(trees, photos, 3 if args.full else 1, 20 if args.full else 10)))
    say("", f"`lookalike filter` over {FILTERED} congress portraits, 2 workers (seconds, whole command):", "",
        markdown_table(["tree", "median s", "runs"], filter_times(trees, 3 if args.full else 2)))
    write_report(f"answer-{'full' if args.full else 'quick'}", "\n".join(report))


if __name__ == "__main__":
    main()

"""Consistent gallery snapshots: queries read one published generation while the gallery is rebuilt, and a
copied, untarred or read-only gallery answers like the original."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lookalike_cli import LookalikeError, build
from lookalike_cli.io.artifacts import DataDir
from lookalike_cli.answers.query import Lookalike

from conftest import DEMO, REPO, run
from helpers import publish_without

PHOTO = DEMO / "selfie.jpg"
REBUILDS = 40


def make_immutable(folder: Path) -> list[Path]:
    """Forbid every write below ``folder`` (root ignores mode bits, so root uses chattr +i); returns what to undo."""
    paths = [folder, *sorted(folder.rglob("*"))]
    if os.geteuid() != 0:
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        return paths
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here, and root ignores a read-only mode")
    subprocess.run(["chattr", "-R", "+i", str(folder)], check=True)
    return paths


def undo_immutable(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-R", "-i", str(folder)], check=True)
    else:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def answer(data: Path, config, models) -> list[tuple[str, float]]:
    result = Lookalike(data, config, models=models).query_file(PHOTO, top_k=3)
    return [(match.alias, round(match.distance, 6)) for match in result.faces[0].matches]


def test_copied_untarred_and_read_only_galleries_answer_like_the_original(built, engine, fast_config, tmp_path):
    original = answer(built, fast_config, engine.models)
    plain = tmp_path / "plain"
    shutil.copytree(built, plain, copy_function=shutil.copyfile)  # new times, no metadata
    with tarfile.open(tmp_path / "gallery.tar", "w") as archive:
        archive.add(built, arcname="gallery")
    with tarfile.open(tmp_path / "gallery.tar") as archive:
        archive.extractall(tmp_path / "untarred", filter="data")
    assert answer(plain, fast_config, engine.models) == original
    assert answer(tmp_path / "untarred" / "gallery", fast_config, engine.models) == original

    before = snapshot(plain)
    make_immutable(plain)
    try:
        assert answer(plain, fast_config, engine.models) == original
        assert snapshot(plain) == before  # nothing was written to read it
    finally:
        undo_immutable(plain)


REBUILDER = textwrap.dedent("""
    import sys
    from lookalike_cli import build_index, calibrate, clean_identities, load_config
    from lookalike_cli.io.artifacts import DataDir

    data, first, second, rebuilds = DataDir(sys.argv[1]), DataDir(sys.argv[2]), DataDir(sys.argv[3]), int(sys.argv[4])
    tables = [first.read("embeddings"), second.read("embeddings")]
    for number in range(rebuilds):
        config = load_config(None, {"backend": "hnsw" if number % 4 == 3 else "exact", "workers": 1})
        with data.locked("rebuild test"):
            data.write("embeddings", tables[number % 2])
            clean_identities(data.root, config)
            calibrate(data.root, config)
            build_index(data.root, config)
        print(number, flush=True)
""")


@pytest.mark.slow
def test_queries_during_rebuilds_answer_from_one_whole_generation(tmp_path, demo_gallery, fast_config):
    """One process rebuilds the gallery back and forth between two sets of people; this one loads and searches
    it in a loop. Every load must be one whole gallery: its people, its vectors and its index agree."""
    names = sorted(path.name for path in demo_gallery.iterdir())
    halves = {}
    for half, chosen in (("first", names[:6]), ("second", names[6:12])):
        images = tmp_path / half / "images"
        images.mkdir(parents=True)
        for name in chosen:
            shutil.copy(demo_gallery / name, images)
        build(images, tmp_path / half / "data", DEMO / "catalog.json", fast_config)
        halves[half] = DataDir(tmp_path / half / "data").vectors("embeddings")
    people = {half: {row["alias"] for row in rows} for half, (rows, _) in halves.items()}
    probes = {half: (rows[0]["alias"], vectors[0]) for half, (rows, vectors) in halves.items()}
    data = tmp_path / "served"
    shutil.copytree(tmp_path / "first" / "data", data)

    rebuilder = subprocess.Popen([sys.executable, "-c", REBUILDER, str(data), str(tmp_path / "first" / "data"),
                                  str(tmp_path / "second" / "data"), str(REBUILDS)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    loads, wrong, errors, seen = 0, [], [], set()
    deadline = time.monotonic() + 600
    while rebuilder.poll() is None and time.monotonic() < deadline:
        try:
            engine = Lookalike(data, fast_config)
        except LookalikeError as exc:
            errors.append(str(exc))
            continue
        loads += 1
        aliases = {row["alias"] for row in engine.gallery}
        half = next((half for half, group in people.items() if aliases == group), None)
        if half is None:
            wrong.append(f"a gallery of mixed people: {sorted(aliases)}")
            continue
        seen.add(engine.generation)
        alias, probe = probes[half]
        best = engine.nearest_people(probe, 1)[0]
        if best.alias != alias or best.distance > 1e-4 or best.name != engine.names[alias]:
            wrong.append(f"{alias} answered as {best.alias} at {best.distance}")
    output, problems = rebuilder.communicate(timeout=60)
    assert rebuilder.returncode == 0, problems
    assert len(output.split()) == REBUILDS
    print(f"{loads} loads during {REBUILDS} rebuilds, {len(seen)} generations seen, {len(wrong)} wrong answers, "
          f"{len(errors)} errors")
    assert (wrong, errors) == ([], [])
    assert loads >= REBUILDS and len(seen) >= 5  # readers kept loading throughout (about 360 loads, 40 seen here)
    # every generation but the current one was removed once no reader was loading it
    assert len([path for path in (data / "generations").iterdir() if path.is_dir()]) <= 2


def test_a_generation_being_loaded_is_kept_and_removed_by_a_later_publication(built, fast_config, tmp_path):
    import fcntl

    from lookalike_cli import build_index

    data = tmp_path / "data"
    shutil.copytree(built, data)
    first = (data / "generations" / "CURRENT").read_text().strip()
    with open(data / "generations" / first / ".readers", "rb") as reader:
        fcntl.flock(reader.fileno(), fcntl.LOCK_SH)  # a reader is loading the first generation
        second = build_index(data, fast_config).generation
        assert (data / "generations" / first / "index.json").exists()
    third = build_index(data, fast_config).generation
    left = sorted(path.name for path in (data / "generations").iterdir())
    assert left == sorted(["CURRENT", third]) and second != third


def as_schema_version(data: Path, version: int) -> None:
    """Tag every artifact of a data directory, its generations' too, as written at schema ``version``."""
    for path in data.rglob("*.parquet"):
        table = pq.read_table(path)
        metadata = table.schema.metadata
        name = metadata[b"lookalike.artifact"].decode().partition("/")[0]
        tagged = metadata | {b"lookalike.artifact": f"{name}/{version}".encode()}
        pq.write_table(table.replace_schema_metadata(tagged), path)
    for path in data.rglob("*.json"):
        path.write_text(json.dumps(json.loads(path.read_text()) | {"schema_version": version}))


def test_a_data_directory_of_schema_version_1_is_told_to_run_the_stage_again(built, tmp_path):
    data = tmp_path / "old"
    shutil.copytree(built, data)
    as_schema_version(data, 1)
    current = (data / "generations" / "CURRENT").read_text().strip()
    for command, path, stage in (("query", f"generations/{current}/index.json", "index"),
                                 ("index", "gallery.parquet", "clean")):
        args = [PHOTO] if command == "query" else []
        result = run(command, *args, "--data-dir", data, code=1)
        assert result.output == (f"Error: {data / path} was written by another version of lookalike: run "
                                 f"`lookalike {stage} --data-dir {data}` again\n")


@pytest.mark.slow
def test_serve_switches_to_a_new_generation_on_sighup_without_a_failed_answer(built, fast_config, tmp_path):
    import signal
    import threading

    import httpx

    from servers import lookalike_serve, wait_until

    data = tmp_path / "data"
    shutil.copytree(built, data)
    first = (data / "generations" / "CURRENT").read_text().strip()
    photo = (DEMO / "images" / "bob-corker.jpg").read_bytes()
    with lookalike_serve(data, "--reload-seconds", "0") as (url, process):
        answers, stop = [], threading.Event()

        def ask_all_the_time():
            while not stop.is_set():
                response = httpx.post(f"{url}/query", content=photo, timeout=60)
                answers.append((response.status_code, response.json()["photos"][0]["faces"][0]["matches"][0]["alias"]
                                if response.status_code == 200 else response.text))

        asker = threading.Thread(target=ask_all_the_time)
        asker.start()
        try:
            second = publish_without(data, "bob-corker", fast_config)
            assert httpx.get(f"{url}/stats").json()["generation"] == first  # until told
            assert (data / "generations" / first).is_dir()  # held by the server: not removed
            process.send_signal(signal.SIGHUP)
            wait_until(lambda: httpx.get(f"{url}/stats").json()["generation"] == second, timeout=120,
                       what="the server to answer from the new generation")
            count = len(answers)
            wait_until(lambda: len(answers) > count + 2, timeout=60, what="answers from the new generation")
        finally:
            stop.set()
            asker.join()
        assert all(status == 200 for status, _ in answers), answers
        assert answers[0][1] == "bob-corker" and answers[-1][1] != "bob-corker"
        third = publish_without(data, "ami-bera", fast_config)  # the first is free now: removed; the second held
        left = {path.name for path in (data / "generations").iterdir()}
        assert left == {"CURRENT", second, third}

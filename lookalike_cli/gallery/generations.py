"""Published galleries: what queries read, switched in one atomic step.

``DATA/generations/<id>/`` holds everything a reader needs (``gallery.parquet``, ``people.parquet``,
``calibration.json``, ``index.json`` and the HNSW file, if any) and ``DATA/generations/CURRENT`` names the one in
use. ``lookalike index`` writes a new generation folder completely, then replaces ``CURRENT`` (temp file + rename):
a reader reads ``CURRENT`` once and opens the files of that generation only, so it sees the old gallery or the new
one, never a mix. A generation is never changed once published.

Readers hold a shared lock on the generation's ``.readers`` file while they load it. After publishing, the
publisher removes every other generation whose ``.readers`` it can lock exclusively, that is, that no reader is
loading; a reader that finds its generation gone (removed between reading ``CURRENT`` and locking) starts over.
Nothing is written to read a gallery: a read-only or copied data directory answers queries.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np

from ..errors import LookalikeError
from ..files import NotRegularFile, open_regular, read_regular, reason, write_bytes, write_json
from ..io.artifacts import (
    JSON_FIELDS,
    SCHEMA_VERSION,
    ArtifactProblem,
    DataDir,
    load_json,
    load_table,
    problem_message,
    table_id,
    table_vectors,
)
from ..io.catalog import names_by_language
from ..io.syncing import fsync_path

log = logging.getLogger(__name__)

CURRENT = "CURRENT"
MAX_CURRENT_BYTES = 1000  # CURRENT names a generation: a few dozen bytes
READERS = ".readers"
INDEX_FILE = "index.json"
# Artifacts copied (hard-linked) from the data directory into a generation.
PUBLISHED = ("gallery", "people", "calibration")
INDEX_FIELDS = {"backend": "text", "size": "count", "dimensions": "count", "embed_key": "text",
                "files": "table", "hnsw": "table"}
OPEN_ATTEMPTS = 20


@dataclass(frozen=True)
class Published:
    """One generation, loaded: gallery rows (alias, image) and vectors, people's names, calibration, index meta."""

    generation: str
    rows: list[dict]
    vectors: Any  # N x 128 float32
    names: dict[str, str]
    calibration: dict
    meta: dict
    index: Any  # search.ExactIndex or search.HnswIndex


def new_generation_id() -> str:
    """Sortable by time of publication, unique."""
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


def staging_folder(data: DataDir) -> Path:
    """A new, empty folder for the generation being built (a hidden name until it is published)."""
    folder = data.generations / f".building-{new_generation_id()}"
    folder.mkdir(parents=True)
    return folder


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _place(data: DataDir, name: str, folder: Path) -> str:
    """Put an artifact into the staged generation (a hard link, or a copy); returns its content id."""
    identity = data.id_of(name)
    _link_or_copy(data.path(name), folder / data.path(name).name)
    return identity


def publish(data: DataDir, folder: Path, meta: dict) -> str:
    """Complete the staged generation ``folder`` (the artifacts of ``PUBLISHED``, and ``index.json`` from
    ``meta``), make it current in one step, and remove the generations no reader is loading. Returns its id."""
    files = {name: _place(data, name, folder) for name in PUBLISHED}
    write_json(folder / INDEX_FILE, meta | {"schema_version": SCHEMA_VERSION, "files": files})
    (folder / READERS).touch()
    fsync_path(folder)
    generation = folder.name.removeprefix(".building-")
    os.rename(folder, data.generations / generation)
    write_bytes(data.generations / CURRENT, f"{generation}\n".encode())
    fsync_path(data.generations)
    removed = remove_unused(data, keep=generation)
    log.info("published generation %s; removed %d unused", generation, removed)
    return generation


def remove_unused(data: DataDir, keep: str) -> int:
    """Remove the generations other than ``keep`` that no reader is loading, and abandoned staging folders
    (call with the data directory locked)."""
    removed = 0
    for folder in sorted(data.generations.iterdir()):
        if folder.name in (keep, CURRENT) or not folder.is_dir():
            continue
        if folder.name.startswith(".building-"):
            shutil.rmtree(folder, ignore_errors=True)
            continue
        try:
            fh = open_regular(folder / READERS)
        except (FileNotFoundError, NotRegularFile):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
            continue
        with fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("generation %s is being loaded by a reader; kept until the next publication", folder.name)
                continue
            (folder / INDEX_FILE).unlink(missing_ok=True)  # readers waiting for the lock see it gone first
            for path in folder.iterdir():
                if path.name != READERS:
                    path.unlink(missing_ok=True)
            (folder / READERS).unlink(missing_ok=True)
        folder.rmdir()
        removed += 1
    return removed


def current_generation(data: DataDir) -> str:
    """The id named by ``CURRENT``; one-line errors for a data directory without a published gallery."""
    if not data.root.is_dir():
        raise LookalikeError(f"data directory {data.root} does not exist: run `lookalike build` first")
    try:
        generation = read_regular(data.generations / CURRENT, MAX_CURRENT_BYTES).decode("utf-8").strip()
    except FileNotFoundError:
        raise LookalikeError(f"{data.generations / CURRENT} does not exist: run "
                             f"`{data.command('index')}` first") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LookalikeError(f"{data.generations / CURRENT} cannot be read ({reason(exc)}): run "
                             f"`{data.command('index')}` again") from None
    if not generation or "/" in generation or generation.startswith("."):
        raise LookalikeError(f"{data.generations / CURRENT} is damaged: run `{data.command('index')}` again")
    return generation


def hold(data: DataDir, generation: str | None = None) -> tuple[str, BinaryIO]:
    """Take a shared lock on a generation (the current one when None) and return its id and the open lock file:
    no publication removes a generation while a process holds it. A reader holds one while it loads it; a server
    holds the one it serves, so that a worker it replaces loads the same gallery again. The current generation,
    when it is replaced and removed between reading ``CURRENT`` and locking, is looked up again."""
    names = set()
    for _ in range(OPEN_ATTEMPTS):
        name = generation or current_generation(data)
        names.add(name)
        folder = data.generations / name
        try:
            fh = open_regular(folder / READERS)
        except (FileNotFoundError, NotADirectoryError, NotRegularFile) as exc:
            fh, problem = None, f"{folder / READERS}: {exc.strerror}"
        except OSError as exc:  # out of file descriptors, a read error...: not the data directory's fault
            raise LookalikeError(f"cannot open {folder / READERS}: {reason(exc)}") from None
        if fh is not None:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
            except OSError:  # a filesystem without locks: nothing removes generations under a reader there
                pass
            if (folder / INDEX_FILE).exists():  # not removed while the lock was awaited
                return name, fh
            fh.close()
            problem = f"{folder / INDEX_FILE} is missing"
        if generation is not None:
            raise LookalikeError(f"generation {generation} of {data.root} was removed: it is no longer published")
    if len(names) == 1:  # not a publication racing this reader: the data directory is damaged
        raise LookalikeError(f"{data.generations / CURRENT} names generation {name}, which cannot be read "
                             f"({problem}): run `{data.command('index')}` again")
    raise LookalikeError(f"{data.generations} changed {OPEN_ATTEMPTS} times while being read: try again")


@contextmanager
def held(data: DataDir, generation: str | None = None) -> Iterator[Path]:
    """The folder of a generation (the current one when None), held while the ``with`` block reads it."""
    name, fh = hold(data, generation)
    with fh:
        yield data.generations / name


def read_index_meta(folder: Path, command: str) -> dict:
    try:
        return load_json(folder / INDEX_FILE, INDEX_FIELDS)
    except ArtifactProblem as problem:
        raise LookalikeError(problem_message(folder / INDEX_FILE, problem, command)) from None


def _published_file(data: DataDir, folder: Path, meta: dict, name: str, command: str,
                    columns: list[str] | None = None):
    """One artifact of a generation (a Table, of ``columns`` only when given, or a JSON dict), checked to be
    the file its ``index.json`` lists."""
    path = folder / data.path(name).name
    try:
        value = (load_json(path, JSON_FIELDS.get(name, {})) if path.suffix == ".json"
                 else load_table(path, name, columns))
    except ArtifactProblem as problem:
        raise LookalikeError(problem_message(path, problem, command)) from None
    recorded = value.get("id") if isinstance(value, dict) else table_id(value)
    if recorded != meta["files"].get(name):
        raise LookalikeError(f"{path} is not the file {folder / INDEX_FILE} lists: run `{command}` again")
    return value


def load_published(data: DataDir, generation: str | None = None) -> Published:
    """Load a generation (the current one when None): gallery rows and vectors, names, calibration, index
    metadata, checking that its files are the ones its ``index.json`` lists."""
    command = data.command("index")
    with held(data, generation) as folder:
        meta = read_index_meta(folder, command)
        loaded = {name: _published_file(data, folder, meta, name, command) for name in PUBLISHED}
        rows, vectors = table_vectors(loaded["gallery"].select(["alias", "image", "embedding"]))
        if not np.isfinite(vectors).all():
            raise LookalikeError(f"{folder / 'gallery.parquet'} is damaged (a descriptor is not finite): "
                                 f"run `{command}` again")
        if len(rows) != meta["size"]:
            raise LookalikeError(f"{folder / INDEX_FILE} is damaged (size {meta['size']} but the gallery has "
                                 f"{len(rows)} vectors): run `{command}` again")
        names = {row["alias"]: row["name"] for row in loaded["people"].select(["alias", "name"]).to_pylist()}
        return Published(folder.name, rows, vectors, names, loaded["calibration"], meta,
                         open_search(folder, meta, vectors, command))


def published_photos(data: DataDir, generation: str | None = None) -> dict[str, str]:
    """Each person's representative photo in a generation (the current one when None), alias -> image path
    (the gallery's vectors are not read)."""
    command = data.command("index")
    with held(data, generation) as folder:
        gallery = _published_file(data, folder, read_index_meta(folder, command), "gallery", command,
                                  ["alias", "image"])
        return dict(zip(gallery.column("alias").to_pylist(), gallery.column("image").to_pylist()))


def published_names(data: DataDir, generation: str | None = None) -> dict[str, dict[str, str]]:
    """People's names per language in a generation (the current one when None), from the catalog's ``names``:
    lower-case language code (``ru``, ``pt-br``) -> alias -> name."""
    command = data.command("index")
    with held(data, generation) as folder:
        people = _published_file(data, folder, read_index_meta(folder, command), "people", command,
                                 ["alias", "extra"])
    by_language: dict[str, dict[str, str]] = {}
    for alias, extra in zip(people.column("alias").to_pylist(), people.column("extra").to_pylist()):
        for code, name in names_by_language(extra).items():
            by_language.setdefault(code, {})[alias] = name
    return by_language


def open_search(folder: Path, meta: dict, vectors, command: str):
    """The search backend that ``index.json`` names."""
    from .search import ExactIndex, HnswIndex

    if meta["backend"] == "exact":
        return ExactIndex(vectors)
    if meta["backend"] != "hnsw" or not isinstance(meta.get("file"), str) or "/" in meta["file"]:
        raise LookalikeError(f"{folder / INDEX_FILE} is damaged (backend {meta['backend']!r}, file "
                             f"{meta.get('file')!r}): run `{command}` again")
    path = folder / meta["file"]
    if not path.is_file():
        raise LookalikeError(f"{path} does not exist: run `{command}` again")
    return HnswIndex.load(path, meta["size"], int(meta["hnsw"].get("efSearch", 400)))


def published_summary(data: DataDir, generation: str | None = None) -> dict:
    """The figures of a generation (the current one when None), from its JSON files alone (no table is read)."""
    command = data.command("index")
    with held(data, generation) as folder:
        meta = read_index_meta(folder, command)
        calibration = _published_file(data, folder, meta, "calibration", command)
    return {"generation": folder.name, "backend": meta["backend"], "size": meta["size"],
            "people": calibration.get("people"), "calibration": {
                key: calibration[key] for key in ("mean", "std", "count", "min_similarity")}}

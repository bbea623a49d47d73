"""Where every artifact lives in a data directory, what its columns are, and how it is written.

All writes are atomic (temp file in the same folder, fsync, rename), so a killed run leaves either the old
file or the new one. Long stages also write checkpoint parts under ``parts/<stage>/`` as they go; a re-run
reads them back, and the stage's final Parquet replaces them.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from .errors import LookalikeError

SCHEMA_VERSION = 1
EMBEDDING_SIZE = 128

# Column name -> pyarrow type name, per artifact. The single definition of every table's schema.
COLUMNS: dict[str, dict[str, str]] = {
    "crawl": {
        "alias": "string", "query": "string", "url": "string", "path": "string", "sha256": "string",
        "bytes": "int64", "width": "int32", "height": "int32", "http_status": "int32", "status": "string",
        "error": "string", "seconds": "float32", "time": "string",
    },
    "people": {
        "alias": "string", "name": "string", "role": "string", "n_movies": "int64", "extra": "string",
    },
    "filter": {
        "path": "string", "alias": "string", "sha256": "string", "size": "int64", "mtime_ns": "int64",
        "detect_key": "string", "width": "int32", "height": "int32", "n_faces": "int32",
        "box": "box", "landmarks": "landmarks", "score": "float32", "eye_distance": "float32",
        "tilt": "float32", "status": "string", "reason": "string", "detail": "string",
    },
    "embeddings": {
        "path": "string", "alias": "string", "sha256": "string", "box": "box", "embed_key": "string",
        "embedding": "embedding",
    },
    "identities": {
        "path": "string", "alias": "string", "sha256": "string", "status": "string", "reason": "string",
        "medoid_distance": "float32", "person_status": "string", "representative": "bool",
    },
    "gallery": {
        "alias": "string", "kind": "string", "path": "string", "image": "string", "embed_key": "string",
        "embedding": "embedding",
    },
}


def arrow_schema(artifact: str):
    """The pyarrow schema of an artifact, tagged with its name and schema version."""
    import pyarrow as pa

    types = {
        "string": pa.string(), "bool": pa.bool_(), "int64": pa.int64(), "int32": pa.int32(), "float32": pa.float32(),
        "box": pa.list_(pa.int32(), 4), "landmarks": pa.list_(pa.float32(), 10),
        "embedding": pa.list_(pa.float32(), EMBEDDING_SIZE),
    }
    fields = [pa.field(name, types[kind]) for name, kind in COLUMNS[artifact].items()]
    return pa.schema(fields, metadata={"lookalike.artifact": f"{artifact}/{SCHEMA_VERSION}"})


@dataclass(frozen=True)
class DataDir:
    """The paths of one data directory's artifacts."""

    root: Path

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def crawl(self) -> Path:
        return self.root / "crawl.parquet"

    @property
    def people(self) -> Path:
        return self.root / "people.parquet"

    @property
    def filter(self) -> Path:
        return self.root / "filter.parquet"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings.parquet"

    @property
    def identities(self) -> Path:
        return self.root / "identities.parquet"

    @property
    def gallery(self) -> Path:
        return self.root / "gallery.parquet"

    @property
    def clean(self) -> Path:
        return self.root / "clean.json"

    @property
    def calibration(self) -> Path:
        return self.root / "calibration.json"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def index_meta(self) -> Path:
        return self.index_dir / "index.json"

    @property
    def hnsw(self) -> Path:
        return self.index_dir / "hnsw.bin"

    def parts(self, stage: str) -> Path:
        return self.root / "parts" / stage

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    def require(self, path: Path, stage: str) -> Path:
        """``path`` if it exists, else an error saying which command makes it."""
        if not path.exists():
            raise LookalikeError(f"{path} does not exist: run `lookalike {stage} --data-dir {self.root}` first")
        return path


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _replace_atomically(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _writing(path: Path):
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LookalikeError(f"cannot create {path.parent}: {exc.strerror}") from None
    return _tmp_path(path)


def write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write a file atomically; ``durable=False`` skips the fsync, for many small files that the caller
    syncs at once later (a killed process still leaves the whole file or none)."""
    tmp = _writing(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise LookalikeError(f"cannot write {path}: {exc.strerror}") from None


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically."""
    write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def read_json(path: Path, stage: str) -> dict:
    """Read a JSON artifact; a damaged one is an error that says how to rebuild it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LookalikeError(f"{path} does not exist: run `lookalike {stage}` first") from None
    except (OSError, ValueError) as exc:
        raise LookalikeError(f"{path} is damaged ({exc}): delete it and run `lookalike {stage}` again") from None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        raise LookalikeError(f"{path} was written by another version of lookalike: "
                             f"delete it and run `lookalike {stage}` again")
    return data


def write_table(path: Path, artifact: str, rows: list[dict] | Any) -> None:
    """Write rows (a list of dicts, or a pyarrow Table) as a Parquet artifact, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(artifact)
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=schema)
    table = table.select(list(COLUMNS[artifact])).cast(schema)
    tmp = _writing(path)
    try:
        pq.write_table(table, tmp)
        _replace_atomically(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise LookalikeError(f"cannot write {path}: {exc.strerror or exc}") from None


def read_table(path: Path, artifact: str, stage: str):
    """Read a Parquet artifact as a pyarrow Table, checking that it is the artifact this version writes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        raise LookalikeError(f"{path} does not exist: run `lookalike {stage}` first")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise LookalikeError(f"{path} is damaged ({str(exc).splitlines()[0]}): "
                             f"delete it and run `lookalike {stage}` again") from None
    tag = (table.schema.metadata or {}).get(b"lookalike.artifact", b"").decode()
    if tag != f"{artifact}/{SCHEMA_VERSION}" or table.schema.names != list(COLUMNS[artifact]):
        raise LookalikeError(f"{path} is not a {artifact} table of this lookalike version: "
                             f"delete it and run `lookalike {stage}` again")
    return table


# The stage that writes each artifact holding descriptors.
VECTOR_STAGES = {"embeddings": "embed", "gallery": "clean"}


def read_vectors(data: DataDir, artifact: str = "gallery"):
    """Rows (without descriptors) and the N x 128 float32 descriptor matrix of the searched ``gallery`` or
    of every photo's ``embeddings``, in row order."""
    import numpy as np

    stage = VECTOR_STAGES[artifact]
    table = read_table(data.require(getattr(data, artifact), stage), artifact, stage)
    column = table.column("embedding").combine_chunks()
    vectors = column.values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(table), EMBEDDING_SIZE)
    return table.drop_columns(["embedding"]).to_pylist(), vectors


def artifact_id(path: Path) -> str:
    """The identity of an artifact file (size, modification time): what later stages record they were made from."""
    stat = path.stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


class Checkpoint:
    """Rows of a long stage saved as they are made, so that a killed run loses at most one part:
    a part every ``MAX_ROWS`` rows, every tenth of the work, or every ``SECONDS``, whichever comes first."""

    MAX_ROWS = 64
    SECONDS = 30.0

    def __init__(self, data: DataDir, stage: str, artifact: str, before_save: Callable[[], None] | None = None):
        """``before_save`` runs before each part is written (crawl syncs the images its rows point to)."""
        self.folder = data.parts(stage)
        self.artifact = artifact
        self.before_save = before_save
        self.every = self.MAX_ROWS
        self.pending: list[dict] = []
        self.last = time.monotonic()

    def plan(self, total: int) -> None:
        """Size the parts for a run that will add ``total`` rows."""
        self.every = max(1, min(self.MAX_ROWS, total // 10))

    def resume(self, path: Path, stage: str) -> list[dict]:
        """The rows of the stage's artifact ``path`` from its last run (none when it is damaged: that work is
        redone), then the rows that interrupted runs saved in parts."""
        rows = []
        if path.exists():
            try:
                rows = read_table(path, self.artifact, stage).to_pylist()
            except LookalikeError as exc:
                logging.getLogger(__name__).warning("ignoring the previous %s results: %s", stage, exc)
        return rows + self.read(stage)

    def read(self, stage: str) -> list[dict]:
        """Rows saved by earlier, interrupted runs (damaged parts are skipped: their work is redone)."""
        rows: list[dict] = []
        for part in sorted(self.folder.glob("part-*.parquet")) if self.folder.exists() else []:
            try:
                rows.extend(read_table(part, self.artifact, stage).to_pylist())
            except LookalikeError:
                part.unlink(missing_ok=True)
        return rows

    def add(self, row: dict) -> None:
        self.pending.append(row)
        if len(self.pending) >= self.every or time.monotonic() - self.last > self.SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            if self.before_save:
                self.before_save()
            write_table(self.folder / f"part-{time.time_ns():020d}.parquet", self.artifact, self.pending)
            self.pending = []
        self.last = time.monotonic()

    def clear(self) -> None:
        """Remove the parts once the stage's final artifact holds their rows."""
        if self.folder.exists():
            for part in self.folder.glob("*"):
                part.unlink(missing_ok=True)
            self.folder.rmdir()
            if not any(self.folder.parent.iterdir()):
                self.folder.parent.rmdir()


def remove_stale_temp_files(root: Path) -> int:
    """Delete temp files that killed runs left behind (call with the data directory locked)."""
    count = 0
    for tmp in root.rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        count += 1
    return count


class DataDirLock:
    """An exclusive lock on a data directory for commands that write to it; says who holds it."""

    def __init__(self, data: DataDir, command: str):
        self.data = data
        self.command = command
        self.fh = None

    def __enter__(self) -> "DataDirLock":
        try:
            self.data.root.mkdir(parents=True, exist_ok=True)
            self.fh = open(self.data.lock, "a+", encoding="utf-8")
        except OSError as exc:
            raise LookalikeError(f"cannot use data directory {self.data.root}: {exc.strerror}") from None
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.seek(0)
            holder = self.fh.read().strip() or "another process"
            self.fh.close()
            raise LookalikeError(f"data directory {self.data.root} is in use by {holder}; "
                                 "wait for it to finish or stop it") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"pid {os.getpid()} on {socket.gethostname()} (lookalike {self.command}, "
                      f"since {time.strftime('%Y-%m-%d %H:%M:%S')})")
        self.fh.flush()
        remove_stale_temp_files(self.data.root)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.fh is not None:
            self.fh.truncate(0)
            self.fh.close()


def rows_by_key(rows: Iterable[dict], key) -> dict:
    """Index rows by ``key(row)``; later rows win."""
    return {key(row): row for row in rows}

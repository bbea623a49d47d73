"""The data directory: which artifact lives where, who makes it, its schema, and how it is read and written.

Every artifact has a registry entry (file, producing stage, Parquet columns or JSON) and is read through
``DataDir.read``, which checks that it exists, is intact, is this version's, and is fresh: each artifact records
a content id and the ids of the artifacts it was made from, so a copied, untarred or read-only data directory
stays valid (no timestamps are compared). All writes are atomic (temp file in the same folder, fsync, rename).
Long stages also write checkpoint parts under ``parts/<stage>/``; a re-run reads them back.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..errors import Failure, LookalikeError
from ..files import open_regular, reason, temp_name, temp_path_for, write_json

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
EMBEDDING_SIZE = 128


@dataclass(frozen=True)
class Artifact:
    """One artifact of a data directory: its file, the command that writes it, its Parquet columns (column
    name -> type name; None for a JSON artifact) and the artifacts it is made from (checked for freshness)."""

    name: str
    file: str
    stage: str
    columns: dict[str, str] | None = None
    made_from: tuple[str, ...] = ()


ARTIFACTS: dict[str, Artifact] = {artifact.name: artifact for artifact in (
    Artifact("crawl", "crawl.parquet", "crawl", {
        "alias": "string", "query": "string", "url": "string", "path": "string", "sha256": "string",
        "bytes": "int64", "width": "int32", "height": "int32", "http_status": "int32", "status": "string",
        "error": "string", "seconds": "float32", "time": "string",
    }),
    Artifact("people", "people.parquet", "filter", {
        "alias": "string", "name": "string", "role": "string", "n_movies": "int64", "extra": "string",
    }),
    Artifact("filter", "filter.parquet", "filter", {
        "path": "string", "alias": "string", "sha256": "string", "size": "int64", "mtime_ns": "int64",
        "detect_key": "string", "width": "int32", "height": "int32", "n_faces": "int32",
        "box": "box", "landmarks": "landmarks", "score": "float32", "eye_distance": "float32",
        "tilt": "float32", "status": "string", "reason": "string", "detail": "string",
    }),
    Artifact("embeddings", "embeddings.parquet", "embed", {
        "path": "string", "alias": "string", "sha256": "string", "box": "box", "embed_key": "string",
        "embedding": "embedding",
    }),
    Artifact("identities", "identities.parquet", "clean", {
        "path": "string", "alias": "string", "sha256": "string", "status": "string", "reason": "string",
        "medoid_distance": "float32", "person_status": "string", "representative": "bool",
    }, made_from=("embeddings",)),
    Artifact("gallery", "gallery.parquet", "clean", {
        "alias": "string", "kind": "string", "path": "string", "image": "string", "embed_key": "string",
        "embedding": "embedding",
    }, made_from=("embeddings",)),
    Artifact("clean", "clean.json", "clean", made_from=("embeddings", "gallery")),
    Artifact("calibration", "calibration.json", "calibrate", made_from=("gallery",)),
)}

# Column name -> type name, per Parquet artifact: the single definition of every table's schema.
COLUMNS: dict[str, dict[str, str]] = {name: a.columns for name, a in ARTIFACTS.items() if a.columns is not None}


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


def new_id() -> str:
    """A fresh content id for an artifact being written."""
    return uuid.uuid4().hex


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
        and value not in (float("inf"), float("-inf"))


# What a valid JSON artifact holds: key -> (check, what it must be). Checked on every read.
JSON_CHECKS: dict[str, Callable[[Any], bool]] = {
    "finite": _number,
    "positive": lambda v: _number(v) and v > 0,
    "count": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**53,
    "fraction": lambda v: _number(v) and 0 <= v <= 1,
    "text": lambda v: isinstance(v, str),
    "table": lambda v: isinstance(v, dict),
}
JSON_FIELDS: dict[str, dict[str, str]] = {
    "clean": {"photos": "count", "kept": "count", "people": "table"},
    "calibration": {"mean": "finite", "std": "positive", "count": "count", "min_similarity": "fraction"},
}


def json_problem(data: Any, fields: dict[str, str]) -> str | None:
    """What is wrong with a JSON artifact's content, or None."""
    if not isinstance(data, dict):
        return "not a JSON object"
    for key, check in fields.items():
        if key not in data:
            return f"no {key!r}"
        if not JSON_CHECKS[check](data[key]):
            return f"{key!r} is not a {check} value: {str(data[key])[:40]!r}"
    return None


def write_table(path: Path, artifact: str, rows: list[dict] | Any, metadata: dict[str, str] | None = None) -> None:
    """Write rows (a list of dicts, or a pyarrow Table) as a Parquet artifact's file, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(artifact)
    if metadata:
        schema = schema.with_metadata(schema.metadata | {k.encode(): v.encode() for k, v in metadata.items()})
    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=schema)
    table = table.select(list(COLUMNS[artifact])).cast(schema)
    tmp = temp_path_for(path)
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise LookalikeError(f"cannot write {path}: {exc.strerror or exc}") from None


class ArtifactProblem(Failure):
    """Why an artifact file cannot be used: the ``reason`` is missing, damaged or version."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason, detail)


def load_table(path: Path, artifact: str, columns: Sequence[str] | None = None):
    """A Parquet artifact file as a pyarrow Table (only ``columns``, when given), checked against this version's
    schema; raises ArtifactProblem."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with open_regular(path) as fh:  # not a folder (read as a dataset) nor a device
            table = pq.read_table(fh, columns=columns)
    except FileNotFoundError:
        raise ArtifactProblem("missing") from None
    except OSError as exc:
        raise ArtifactProblem("damaged", reason(exc)) from None
    except pa.ArrowException as exc:
        raise ArtifactProblem("damaged", str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    tag = (table.schema.metadata or {}).get(b"lookalike.artifact", b"").decode(errors="replace")
    if tag != f"{artifact}/{SCHEMA_VERSION}":
        raise ArtifactProblem("version")
    expected = arrow_schema(artifact).remove_metadata()
    if columns is not None:
        expected = pa.schema([expected.field(name) for name in columns])
    if not table.schema.remove_metadata().equals(expected):
        raise ArtifactProblem("damaged", "its columns are not the expected ones")
    return table


def load_json(path: Path, fields: dict[str, str]) -> dict:
    """A JSON artifact file, checked; raises ArtifactProblem."""
    try:
        with open_regular(path) as fh:
            data = json.loads(fh.read())
    except FileNotFoundError:
        raise ArtifactProblem("missing") from None
    except OSError as exc:
        raise ArtifactProblem("damaged", reason(exc)) from None
    except (ValueError, RecursionError) as exc:
        raise ArtifactProblem("damaged", str(exc) or "JSON nested too deeply") from None
    if isinstance(data, dict) and data.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactProblem("version")
    problem = json_problem(data, fields)
    if problem:
        raise ArtifactProblem("damaged", problem)
    return data


def problem_message(path: Path, problem: ArtifactProblem, command: str) -> str:
    """The one-line error for an artifact that cannot be used; ``command`` remakes it."""
    if problem.reason == "missing":
        return f"{path} does not exist: run `{command}` first"
    if problem.reason == "version":
        return f"{path} was written by another version of lookalike: run `{command}` again"
    return f"{path} is damaged ({problem.detail}): run `{command}` again"


def table_id(table_or_schema) -> str | None:
    """The content id recorded in a Parquet artifact, or None when it has none."""
    value = (table_or_schema.schema.metadata if hasattr(table_or_schema, "schema") else
             table_or_schema.metadata or {}).get(b"lookalike.id")
    return value.decode() if value else None


def recorded_inputs(value) -> dict[str, str]:
    """The ids of the artifacts that an artifact (Table or JSON dict) was made from."""
    if isinstance(value, dict):
        return dict(value.get("inputs", {}))
    raw = (value.schema.metadata or {}).get(b"lookalike.inputs")
    return json.loads(raw) if raw else {}


@dataclass(frozen=True)
class DataDir:
    """A data directory: its artifacts, read and written through the registry."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    def path(self, name: str) -> Path:
        return self.root / ARTIFACTS[name].file

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def generations(self) -> Path:
        return self.root / "generations"

    def parts(self, stage: str) -> Path:
        return self.root / "parts" / stage

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    def command(self, stage: str) -> str:
        return f"lookalike {stage} --data-dir {self.root}"

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def read(self, name: str, fresh: bool = True):
        """An artifact: a pyarrow Table, or a dict for JSON. One-line errors when it is missing, damaged, of
        another version, or (``fresh``) older than an artifact it was made from."""
        artifact = ARTIFACTS[name]
        path = self.path(name)
        try:
            value = load_table(path, name) if artifact.columns else load_json(path, JSON_FIELDS.get(name, {}))
        except ArtifactProblem as problem:
            raise LookalikeError(problem_message(path, problem, self.command(artifact.stage))) from None
        if fresh:
            recorded = recorded_inputs(value)
            for source in artifact.made_from:
                if recorded.get(source) != self.id_of(source):
                    raise LookalikeError(f"{path} is older than {self.path(source)}: "
                                         f"run `{self.command(artifact.stage)}` again")
        return value

    def id_of(self, name: str) -> str:
        """The content id of an artifact; a one-line error when it has none."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        artifact = ARTIFACTS[name]
        path = self.path(name)
        try:
            recorded = table_id(pq.read_schema(path)) if artifact.columns else load_json(path, {}).get("id")
            if not recorded:
                raise ArtifactProblem("damaged", "it records no content id")
        except FileNotFoundError:
            raise LookalikeError(problem_message(path, ArtifactProblem("missing"),
                                                 self.command(artifact.stage))) from None
        except ArtifactProblem as problem:
            raise LookalikeError(problem_message(path, problem, self.command(artifact.stage))) from None
        except (OSError, pa.ArrowException) as exc:
            raise LookalikeError(f"{path} is damaged ({exc}): run `{self.command(artifact.stage)}` again") from None
        return recorded

    def vectors(self, name: str = "gallery"):
        """Rows (without descriptors) and the N x 128 float32 descriptor matrix of an artifact with an
        ``embedding`` column, in row order."""
        return table_vectors(self.read(name))

    def write(self, name: str, value) -> str:
        """Write an artifact (rows or a Table; a dict for JSON) with a new id and the ids of the artifacts it is
        made from; returns its id."""
        artifact = ARTIFACTS[name]
        identity = new_id()
        inputs = {source: self.id_of(source) for source in artifact.made_from}
        path = self.path(name)
        if artifact.columns:
            write_table(path, name, value, {"lookalike.id": identity, "lookalike.inputs": json.dumps(inputs)})
        else:
            write_json(path, value | {"schema_version": SCHEMA_VERSION, "id": identity, "inputs": inputs})
        return identity

    @contextmanager
    def locked(self, command: str) -> Iterator[None]:
        """Hold this data directory's exclusive lock (re-entrant within a process: ``build`` holds it for its
        stages); says who holds it when it is taken."""
        with _lock(self, command):
            yield


def table_vectors(table):
    """Rows (without descriptors) and the N x 128 float32 descriptor matrix of a Table with an ``embedding``
    column."""
    import numpy as np

    column = table.column("embedding").combine_chunks()
    vectors = column.values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(table), EMBEDDING_SIZE)
    return table.drop_columns(["embedding"]).to_pylist(), vectors


class Checkpoint:
    """Rows of a long stage saved as they are made, so that a killed run loses at most one part:
    a part every ``MAX_ROWS`` rows, every tenth of the work, or every ``SECONDS``, whichever comes first."""

    MAX_ROWS = 64
    SECONDS = 30.0

    def __init__(self, data: DataDir, artifact: str):
        self.data = data
        self.artifact = artifact
        self.folder = data.parts(ARTIFACTS[artifact].stage)
        self.every = self.MAX_ROWS
        self.pending: list[dict] = []
        self.last = time.monotonic()

    def plan(self, total: int) -> None:
        """Size the parts for a run that will add ``total`` rows."""
        self.every = max(1, min(self.MAX_ROWS, total // 10))

    def resume(self) -> list[dict]:
        """The rows of the stage's artifact from its last run (none when it cannot be used: that work is
        redone), then the rows that interrupted runs saved in parts."""
        rows = []
        if self.data.exists(self.artifact):
            try:
                rows = self.data.read(self.artifact, fresh=False).to_pylist()
            except LookalikeError as exc:
                log.warning("ignoring the previous %s results: %s", self.artifact, exc)
        return rows + self.read_parts()

    def read_parts(self) -> list[dict]:
        """Rows saved by earlier, interrupted runs (damaged parts are deleted: their work is redone)."""
        rows: list[dict] = []
        for part in sorted(self.folder.glob("part-*.parquet")) if self.folder.exists() else []:
            try:
                rows.extend(load_table(part, self.artifact).to_pylist())
            except ArtifactProblem:
                part.unlink(missing_ok=True)
        return rows

    def add(self, row: dict) -> None:
        self.pending.append(row)
        if len(self.pending) >= self.every or time.monotonic() - self.last > self.SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.pending:
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


def _check_writable(root: Path) -> None:
    """Fail before any work when files cannot be created in ``root`` (a read-only or immutable folder)."""
    probe = temp_name(root / "probe")
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise LookalikeError(f"cannot use data directory {root}: {exc.strerror}") from None


_held_locks: dict[Path, list] = {}  # data directory -> [open lock file, depth], for re-entrant locking
_held_guard = threading.Lock()


@contextmanager
def _lock(data: DataDir, command: str) -> Iterator[None]:
    try:
        data.root.mkdir(parents=True, exist_ok=True)
        key = data.root.resolve()
    except FileExistsError:
        raise LookalikeError(f"data directory {data.root} is a file") from None
    except OSError as exc:
        raise LookalikeError(f"cannot use data directory {data.root}: {exc.strerror}") from None
    with _held_guard:
        held = _held_locks.get(key)
        if held:
            held[1] += 1
    if held:
        try:
            yield
        finally:
            with _held_guard:
                held[1] -= 1
        return
    try:
        fh = open(data.lock, "a+", encoding="utf-8")
    except OSError as exc:
        raise LookalikeError(f"cannot use data directory {data.root}: {exc.strerror}") from None
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip()[:200] or "another process"
        fh.close()
        raise LookalikeError(f"data directory {data.root} is in use by {holder}; "
                             "wait for it to finish or stop it") from None
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} (lookalike {command}, "
                 f"since {time.strftime('%Y-%m-%d %H:%M:%S')})")
        fh.flush()
        remove_stale_temp_files(data.root)
        _check_writable(data.root)
        with _held_guard:
            _held_locks[key] = [fh, 1]
        yield
    finally:
        with _held_guard:
            _held_locks.pop(key, None)
        fh.truncate(0)
        fh.close()


def rows_by_key(rows: Iterable[dict], key) -> dict:
    """Index rows by ``key(row)``; later rows win."""
    return {key(row): row for row in rows}

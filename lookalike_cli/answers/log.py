"""The answer log: one JSON line per photo answered by ``serve``, ``bot`` or ``query --log``.

A line says what was answered, never what was asked: the time, the channel, the gallery generation, the status,
the latency, the number of faces found and, per face answered (at most ``query.max_faces``), its best match
(alias, distance, similarity, and the detector that found the face; lines written before the detection fallback
have none). Never the photo, its file name or a path, a chat id or an address: with ``serve.client_salt`` set, a
keyed hash of the client tells one client's answers apart without saying who it is.

The lines are written by a thread of the serving process (a logging ``QueueListener``), so that an answer never
waits for the disk, into a file rotated by size (``RotatingFileHandler``: FILE, then FILE.1 ... FILE.N) and only
ever appended to. A process killed in the middle of a line leaves it torn: a writer that opens a file not ending
in a newline starts on a new line, and ``AnswerLines`` skips every line that is not a whole entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
import queue
import re
import sys
import time
from logging.handlers import QueueListener, RotatingFileHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from ..errors import LookalikeError
from ..files import open_regular, reason
from .outcomes import OUTCOMES, photo_status

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ..config import AnswersConfig
    from .query import Lookalike
    from .results import PhotoResult

# The fields of a line and their JSON types (optional: "reason", "code", "client"; per match "detector").
FIELDS = {"time": str, "channel": str, "generation": str, "status": str, "latency_ms": (int, float),
          "faces": int, "matches": list}
MATCH_FIELDS = {"alias": str, "distance": (int, float), "similarity": (int, float)}
MAX_LINE_BYTES = 1_000_000  # a longer line is not an entry of this log
TIME_FORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")  # as JsonLine writes it, UTC


def client_hash(client: str, salt: str) -> str:
    """A keyed hash of a client's address or chat id: the same client gives the same hash under one salt, and
    without the salt nobody can tell which client it was."""
    return hmac.new(salt.encode(), client.encode(), hashlib.sha256).hexdigest()[:16]


def answer_entry(channel: str, generation: str, status: str, seconds: float, result: PhotoResult | None = None,
                 **extra) -> dict:
    """The line of one answer, without its time (the writer adds it). ``extra``: "code" (HTTP status) or
    "client" (a client_hash), if known."""
    entry = {"channel": channel, "generation": generation, "status": status,
             "latency_ms": round(1000 * seconds, 1), "faces": 0, "matches": []}
    if result is not None:
        if result.reason:
            entry["reason"] = result.reason
        entry["faces"] = len(result.faces) + result.faces_left_out
        entry["matches"] = [top_match(face) for face in result.faces if face.matches]
    return entry | extra


def top_match(face) -> dict:
    best = face.matches[0]
    return {"alias": best.alias, "distance": round(best.distance, 4), "similarity": round(best.similarity, 4),
            "detector": face.detector}


class JsonLine(logging.Formatter):
    """A record whose message is an entry, as one JSON line with its time (UTC, milliseconds)."""

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "line"):  # RotatingFileHandler formats twice: to measure, then to write
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            record.line = json.dumps({"time": f"{stamp}.{int(record.msecs):03d}Z"} | record.msg,
                                     ensure_ascii=False, separators=(",", ":"))
        return record.line


def end_torn_line(path: Path) -> None:
    """Add a newline to a file whose last line was left torn, so that the next entry starts a line of its own."""
    try:
        with open(path, "rb+") as fh:
            if fh.seek(0, 2) == 0:
                return
            fh.seek(-1, 2)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
    except FileNotFoundError:
        pass


class LogFile(RotatingFileHandler):
    """The answer log's file. A line it cannot write (a full disk) is lost whole and counted in ``lost``; each
    time writing stops working a warning says so, and another how many answers went unlogged once it works
    again (or the log is closed), rather than a traceback for each line."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lost = 0  # answers not logged, in all
        self.unlogged = 0  # answers not logged since writing last stopped working
        self.failing = False

    def emit(self, record: logging.LogRecord) -> None:
        lost = self.lost
        super().emit(record)  # which calls handleError when it fails
        if self.failing and self.lost == lost:
            self._tell_unlogged("is written again")

    def _tell_unlogged(self, what: str) -> None:
        log.warning("the answer log %s %s (answers not logged: %d)", self.baseFilename, what, self.unlogged)
        self.failing, self.unlogged = False, 0

    def _open(self):
        end_torn_line(Path(self.baseFilename))  # a line cut short by a crash or a failed write
        return super()._open()

    def handleError(self, record: logging.LogRecord | None) -> None:
        if record is not None:
            self.lost += 1
            self.unlogged += 1
        stream, self.stream = self.stream, None  # the next line reopens the file (see _open)
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()  # what it still held is lost with the line
        if not self.failing:
            self.failing = True
            error = sys.exc_info()[1]
            log.warning("cannot write the answer log %s: %s; answers go unlogged until it can", self.baseFilename,
                        reason(error))

    def close(self) -> None:
        try:
            super().close()
        except OSError:  # what was left to write could not be
            self.handleError(None)
        if self.failing:
            self._tell_unlogged("was closed while it could not be written")


class AnswerLog:
    """Appends entries to the answer log from a thread of its own; ``write`` only puts an entry on a queue."""

    def __init__(self, settings: AnswersConfig):
        path = Path(settings.log)
        if path.is_dir() or not path.parent.is_dir():
            raise LookalikeError(f"answer log {path}: give a file in an existing folder")
        try:
            self._handler = LogFile(path, maxBytes=settings.log_max_bytes, backupCount=settings.log_backups,
                                    encoding="utf-8")
        except OSError as exc:
            raise LookalikeError(f"cannot write the answer log {path}: {exc.strerror or exc}") from None
        self._handler.setFormatter(JsonLine())
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._listener = QueueListener(self._queue, self._handler)
        self._listener.start()
        self._running = True

    def write(self, entry: dict) -> None:
        self._queue.put(logging.makeLogRecord({"msg": entry}))

    def close(self) -> None:
        """Write what is queued, then close the file."""
        if self._running:
            self._running = False
            self._listener.stop()
            self._handler.close()


def is_entry(value) -> bool:
    """Whether a parsed line is an answer entry: every field there, with its type, a time as the writer writes
    it, a known status, and its numbers in range (a latency and a distance of at least 0, a similarity from 0 to
    1; JSON's NaN and Infinity are none of these)."""
    return (isinstance(value, dict) and all(isinstance(value.get(key), kind) for key, kind in FIELDS.items())
            and TIME_FORMAT.fullmatch(value["time"]) is not None and value["status"] in OUTCOMES
            and 0 <= value["latency_ms"] < math.inf and value["faces"] >= 0
            and all(isinstance(match, dict) and all(isinstance(match.get(key), kind)
                                                     for key, kind in MATCH_FIELDS.items())
                    and 0 <= match["distance"] < math.inf and 0 <= match["similarity"] <= 1
                    for match in value["matches"]))


class AnswerLines:
    """The entries of answer logs, read a line at a time each time they are iterated, so that memory does not grow
    with the logs; ``skipped`` counts the lines of the last pass that were not whole entries (torn by a crash, or
    not this log's)."""

    def __init__(self, paths: Iterable[str | Path]):
        self.paths = list(paths)
        self.skipped = 0

    def __iter__(self) -> Iterator[dict]:
        self.skipped = 0
        for path in self.paths:
            try:
                with open_regular(path) as fh:
                    for line in iter(lambda: fh.readline(MAX_LINE_BYTES + 1), b""):
                        try:
                            value = json.loads(line) if len(line) <= MAX_LINE_BYTES else None
                        except (ValueError, RecursionError):  # a torn line (not JSON, not UTF-8), or not this log's
                            value = None
                        if is_entry(value):
                            yield value
                        elif line.strip():
                            self.skipped += 1
            except OSError as exc:
                raise LookalikeError(f"cannot read the answer log {path}: {exc.strerror or exc}") from None


def query_files(engine: Lookalike, paths: Iterable[str | Path], settings: AnswersConfig,
                answer: Callable[[Any], tuple[PhotoResult, bytes | None]] | None = None,
                ) -> list[tuple[PhotoResult, bytes | None]]:
    """``answer`` (by default ``engine.answer_file``) of each path, each answer logged (channel "query") when
    ``settings.log`` is set."""
    answers = AnswerLog(settings) if settings.log else None
    if answers is not None:
        engine.models  # loaded before the first answer is timed
    results = []
    try:
        for path in paths:
            started = time.perf_counter()
            result, picture = (answer or engine.answer_file)(path)
            results.append((result, picture))
            if answers is not None:
                answers.write(answer_entry("query", engine.generation, photo_status(result),
                                           time.perf_counter() - started, result))
    finally:
        if answers is not None:
            answers.close()
    return results

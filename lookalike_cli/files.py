"""Files that a user names (a photo, a config, a catalog, a URL list) or that a data directory points to: opened
only when they are regular files, so that a device such as ``/dev/zero`` or a FIFO nobody writes to is never
read, and read up to a bound where one is given. Files are written atomically (a temp file beside, fsync, rename).
"""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import uuid
from pathlib import Path
from typing import Any, BinaryIO

from .errors import LookalikeError

READ_SIZE = 1 << 16  # bytes read_capped asks a stream for at a time


class NotRegularFile(OSError):
    """The path names a folder, a device, a FIFO or a socket."""

    def __init__(self):
        super().__init__(errno.EINVAL, "not a regular file")


def reason(error: BaseException) -> str:
    """What went wrong, in a few words: an OSError's own (``No such file or directory``), else the error's text."""
    return getattr(error, "strerror", None) or str(error)


def open_regular(path: str | Path) -> BinaryIO:
    """``path`` opened for reading bytes; OSError when it cannot be, NotRegularFile when it is not a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO must not wait for a writer
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile()
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class OverLimit(OSError):
    """A file or stream that holds more bytes than may be read of it."""

    def __init__(self, limit: int):
        super().__init__(errno.EFBIG, f"over the limit of {limit} bytes")


def read_capped(stream: BinaryIO, limit: int) -> bytes:
    """The bytes of a binary stream (a file, standard input, an HTTP response's raw body) to its end, read as
    they arrive; OverLimit as soon as they pass ``limit`` (read no further)."""
    chunks, size = [], 0
    while chunk := stream.read1(READ_SIZE):
        size += len(chunk)
        if size > limit:
            raise OverLimit(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def read_regular(path: str | Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; OSError otherwise (OverLimit when over)."""
    with open_regular(path) as fh:
        return read_capped(fh, limit)


def open_regular_text(path: str | Path, **options) -> io.TextIOWrapper:
    """``open_regular`` for reading text (``options`` as for ``io.TextIOWrapper``: encoding, newline...)."""
    return io.TextIOWrapper(open_regular(path), **options)


def temp_name(path: Path) -> Path:
    """A hidden name beside ``path``, unique to this process and call."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def temp_path_for(path: Path) -> Path:
    """A temporary name beside ``path`` (its folder made), to write into and rename over it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LookalikeError(f"cannot create {path.parent}: {exc.strerror}") from None
    return temp_name(path)


def write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write a file atomically; ``durable=False`` skips the fsync, for many small files that the caller
    syncs later (a killed process still leaves the whole file or none)."""
    tmp = temp_path_for(path)
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

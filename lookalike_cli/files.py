"""Files that a user names (a photo, a config, a catalog, a URL list) or that a data directory points to: opened
only when they are regular files, so that a device such as ``/dev/zero`` or a FIFO nobody writes to is never
read, and read up to a bound where one is given."""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path
from typing import BinaryIO


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


def read_regular(path: str | Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; OSError otherwise (when over, read no further)."""
    with open_regular(path) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"over the limit of {limit} bytes")
    return data


def open_regular_text(path: str | Path, **options) -> io.TextIOWrapper:
    """``open_regular`` for reading text (``options`` as for ``io.TextIOWrapper``: encoding, newline...)."""
    return io.TextIOWrapper(open_regular(path), **options)

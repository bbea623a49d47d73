"""A gallery folder on disk: the photos of each person, and the entries that are not photos (with why)."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import LookalikeError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif")


@dataclass(frozen=True)
class GalleryImage:
    """One image file of one person, or a file that cannot be used (``problem`` says why)."""

    alias: str
    path: str
    problem: str | None = None


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def printable_path(path: Path) -> str:
    """A path as text that can be stored and shown: bytes that are not UTF-8 as backslash escapes."""
    return os.fsdecode(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def file_problem(path: Path, root: Path) -> str | None:
    """Why a listed file cannot be read as a gallery photo, or None."""
    try:
        os.fsdecode(path).encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8"
    try:
        if path.is_symlink() and not path.resolve(strict=True).is_relative_to(root):
            return "symbolic link points outside the images folder"
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "broken symbolic link"
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symbolic link loop (Python 3.11)
        return "symbolic link loop" if "loop" in str(exc).lower() else f"cannot be read: {exc}"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    return None


def _listed(folder: Path) -> tuple[list[Path], str | None]:
    """The entries of a folder, sorted, or the reason it cannot be listed."""
    try:
        return sorted(folder.iterdir()), None
    except OSError as exc:
        return [], f"folder cannot be listed: {exc.strerror or exc}"


def list_gallery(images_dir: str | Path) -> list[GalleryImage]:
    """Images of a gallery tree: ``DIR/<alias>/*.jpg`` (several per person) or ``DIR/<alias>.jpg`` (one).
    An entry that cannot be used (a broken or looping link, a name that is not UTF-8, a FIFO, a folder that
    cannot be listed...) is listed with its ``problem``: one entry never stops the listing.

    Sorted by alias, then path, so that every run sees the same order.
    """
    root = Path(images_dir).resolve()
    entries, problem = _listed(root)
    if problem:
        raise LookalikeError(f"images folder {images_dir}: {problem}")
    found: list[GalleryImage] = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            alias = printable_path(Path(entry.name))
            folder_problem = None if alias == entry.name else "folder name is not valid UTF-8"
            files, listing_problem = _listed(entry)
            if listing_problem:
                found.append(GalleryImage(alias, printable_path(entry), listing_problem))
            for path in files:
                if _is_image(path):
                    found.append(GalleryImage(alias, printable_path(path),
                                              folder_problem or file_problem(path, root)))
        elif _is_image(entry):
            found.append(GalleryImage(printable_path(Path(entry.stem)), printable_path(entry),
                                      file_problem(entry, root)))
    return sorted(found, key=lambda image: (image.alias, image.path))


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

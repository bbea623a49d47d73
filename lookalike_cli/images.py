"""Finding gallery images on disk and decoding any image into an RGB array."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import LookalikeError

EXIF_ORIENTATION = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # rotated by 90 degrees: width and height swap
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class ImageRejected(Exception):
    """An image that cannot be used, with a short machine-readable reason and a human detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


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


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode image bytes into an RGB uint8 array (H, W, 3): EXIF orientation applied, transparency on
    white, 16-bit scaled, first frame of an animation. Raises ImageRejected."""
    from PIL import ImageOps

    with _opened(data, max_pixels) as image:
        image.load()
        image = ImageOps.exif_transpose(image) or image
        return _to_rgb(image)


def verify_image(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """(Pillow format, width, height as displayed) of image bytes that decode to the end, without keeping the
    pixels: a JPEG is decoded at 1/8 scale (libjpeg still reads all of its data, so truncation and corruption
    are caught as in a full decode, at a fraction of the cost). Raises ImageRejected."""
    with _opened(data, max_pixels) as image:
        image_format, (width, height) = image.format, image.size
        if image.getexif().get(EXIF_ORIENTATION) in TRANSPOSING_ORIENTATIONS:
            width, height = height, width
        image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
        return image_format, width, height


@contextmanager
def _opened(data: bytes, max_pixels: int):
    """The Pillow image of ``data`` once its header shows at most ``max_pixels``; anything Pillow raises
    inside the ``with`` block becomes ImageRejected."""
    from PIL import Image

    if not data:
        raise ImageRejected("undecodable", "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageRejected("too_large", f"{width}x{height} pixels is over the limit of {max_pixels}")
            yield image
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("too_large", str(exc)) from None
    except Image.UnidentifiedImageError:
        raise ImageRejected("undecodable", "not an image format Pillow knows") from None
    except Exception as exc:  # Pillow raises many types for broken files
        raise ImageRejected("undecodable", f"{type(exc).__name__}: {exc}") from None


def _to_rgb(image) -> np.ndarray:
    from PIL import Image

    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode != "F" and values.max(initial=0) > 255 else max(values.max(initial=0), 1.0)
        image = Image.fromarray(np.clip(values * (255.0 / top), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def read_image(path: str | Path, max_pixels: int, max_bytes: int | None = None) -> np.ndarray:
    """Read and decode an image file (see decode_image): a regular file only (a FIFO or a device is never
    read, so ``/dev/zero`` cannot fill memory), of at most ``max_bytes``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO must not wait for a writer
    except OSError as exc:
        raise ImageRejected("unreadable", exc.strerror or str(exc)) from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ImageRejected("unreadable", "not a regular file")
        try:
            data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
        except OSError as exc:
            raise ImageRejected("unreadable", exc.strerror or str(exc)) from None
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageRejected("too_large", f"the file is over the limit of {max_bytes} bytes")
    return decode_image(data, max_pixels)

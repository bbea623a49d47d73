"""Finding gallery images on disk, and reading any image under one policy (``config.ImageConfig``).

Every command that reads an image a stranger may have made (gallery photo, crawled download, query, upload)
goes through ``decode_image`` or ``verify_image``: only the accepted formats reach a decoder (recognised from
their first bytes, as Pillow's plugins do, without parsing anything); the pixels declared in the header, the
scans of a progressive JPEG and the memory the decoded image will take are bounded before any pixel is
decoded (a JPEG over the memory bound is decoded at a smaller DCT scale instead); and the decoding runs under a
time limit that stops it for real in a pool's worker process (``runtime.pool.time_limit``).
"""

from __future__ import annotations

import io
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator, Literal

import numpy as np

from .. import files
from ..errors import Failure
from ..files import open_regular, reason
from ..runtime.pool import ProcessPool, TaskFailed, resolve_workers, time_limit
from .headers import RLE_BMP, JpegTooComplex, bmp_compression, jpeg_scans

if TYPE_CHECKING:
    from ..config import ImageConfig

EXIF_ORIENTATION = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # rotated by 90 degrees: width and height swap
# A progressive JPEG holds about 10 scans (libjpeg's script: 10 for colour, 6 for grey); each scan is a pass over
# every block of the image (about 40 ms at 36 Mpx here), so a file that repeats scans costs minutes to decode in a
# few kB. Bounded are the scans, and the scans times the pixels: 25 passes over 40 Mpx (about a second).
MAX_JPEG_SCANS = 100
MAX_JPEG_SCAN_PIXELS = 1_000_000_000
# libwebp decodes a whole frame into a buffer of its own, which Pillow gets as a bytes copy before it makes the
# image: 8 bytes a pixel besides the image (measured: a 27 Mpx lossless WebP of 1 kB took 444 MB, 16 a pixel)
WEBP_DECODER_BYTES = 8
JPEG_FORMATS = ("JPEG", "MPO")  # MPO: a camera's JPEG with more pictures after the first, decoded as a JPEG
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
GREY_MODES = (*SIXTEEN_BIT_MODES, "I", "F")  # grey of more than 8 bits, scaled down to 8


class ImageRejected(Failure):
    """An image that cannot be used; its ``reason`` is one of ``ImageReason``."""


# Why an image cannot be used: its file cannot be read, its bytes are no image (or a broken one), its format is
# not accepted, it is over a bound (pixels, decoded bytes, JPEG scans), or decoding it took too long.
ImageReason = Literal["unreadable", "undecodable", "unsupported_format", "too_large", "timeout"]


@dataclass(frozen=True)
class Decoded:
    """An image's pixels: RGB uint8 (H, W, 3), EXIF orientation applied, transparency on white, 16-bit scaled,
    first frame of an animation. ``scale`` is the photo's size over the pixels' (1, or 2, 4 or 8 for a JPEG
    decoded at a smaller scale to fit ``max_decoded_bytes``): boxes found in ``pixels`` times ``scale`` are
    boxes of the photo."""

    pixels: np.ndarray
    scale: float = 1.0


def decode_image(data: bytes, policy: ImageConfig) -> Decoded:
    """Decode image bytes under ``policy``. Raises ImageRejected."""
    _load_pillow()
    with time_limit(policy.decode_timeout, _overdue(policy)), _pillow_errors():
        return _decode(_open(data, policy), policy.max_decoded_bytes)


def verify_image(data: bytes, policy: ImageConfig) -> tuple[str, int, int]:
    """(Pillow format, width, height as displayed) of image bytes that ``decode_image`` accepts, checked by
    decoding them to the end without keeping the pixels: a JPEG at 1/8 scale (libjpeg still reads all of its
    data, so truncation and corruption are caught as in a full decode, at a fraction of the cost). Raises
    ImageRejected."""
    _load_pillow()
    with time_limit(policy.decode_timeout, _overdue(policy)), _pillow_errors():
        image = _open(data, policy)
        image_format, (width, height) = image.format, image.size
        if _orientation(image) in TRANSPOSING_ORIENTATIONS:
            width, height = height, width
        image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
        _fit(image, policy.max_decoded_bytes, turned=False)
        image.load()
        return image_format, width, height


class ImageVerifier:
    """``verify_image`` in worker processes, for callers that cannot afford a decode that hangs (the crawl):
    ``verify`` may be called from many threads at once, blocks until a worker has checked the bytes, and raises
    ImageRejected as verify_image does, with the reason ``timeout`` when decoding overran ``decode_timeout``
    (the worker is killed and replaced, so the time is really given back) and ``undecodable`` when the decoder
    crashed its process. A context manager; the processes start on the first ``verify``."""

    def __init__(self, policy: ImageConfig, workers: int = 0):
        self.policy = policy
        self._pool = ProcessPool(resolve_workers(workers))

    def verify(self, data: bytes) -> tuple[str, int, int]:
        try:
            return self._pool.submit(verify_image, data, self.policy).result()
        except TaskFailed as exc:
            raise ImageRejected("undecodable", f"the decoder failed: {exc.detail}") from None

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> ImageVerifier:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _load_pillow() -> None:
    """Import Pillow and its format plugins (once per process, before a time limit starts: on a busy machine
    the imports alone can take a second)."""
    from PIL import Image

    Image.init()


def _overdue(policy: ImageConfig) -> ImageRejected:
    return ImageRejected("timeout", f"not decoded within {policy.decode_timeout:g} s")


def accepted_formats(policy: ImageConfig) -> tuple[str, ...]:
    """Pillow's names of the formats ``policy`` lets a decoder read."""
    formats = tuple(policy.image_formats.split())
    return formats + (("MPO",) if "JPEG" in formats else ())


def sniffed_format(data: bytes) -> str | None:
    """Pillow's name for the format of ``data`` from its first 16 bytes, by each plugin's signature test alone
    (no plugin parses anything); None when no plugin claims it."""
    from PIL import Image

    Image.init()
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        if accept is not None and accept(data[:16]):
            return name
    return None


@contextmanager
def _pillow_errors() -> Iterator[None]:
    """Anything Pillow raises for a broken or hostile file, as ImageRejected; what it warns of (corrupt EXIF
    data...) unsaid, but a decompression bomb."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("too_large", str(exc)) from None
    except Exception as exc:  # Pillow raises many types for broken files
        raise ImageRejected("undecodable", f"{type(exc).__name__}: {exc}") from None


def _open(data: bytes, policy: ImageConfig):
    """The Pillow image of ``data``, nothing decoded yet, once its format is accepted and its header is within
    the bounds on pixels and JPEG scans."""
    from PIL import Image

    if not data:
        raise ImageRejected("undecodable", "empty file")
    found = sniffed_format(data)
    if found is None:
        raise ImageRejected("undecodable", "not an image format Pillow knows")
    accepted = accepted_formats(policy)
    if found not in accepted:
        raise ImageRejected("unsupported_format", f"{found} images are not accepted (accepted: "
                                                  f"{', '.join(policy.image_formats.split())})")
    scans = 0
    if found in JPEG_FORMATS:  # its markers bounded before Pillow walks them
        try:
            scans = jpeg_scans(data, MAX_JPEG_SCANS)
        except JpegTooComplex as exc:
            raise ImageRejected("too_large", str(exc)) from None
    elif found == "BMP" and bmp_compression(data) in RLE_BMP:
        raise ImageRejected("unsupported_format", "a run-length-encoded (RLE4, RLE8) BMP is not accepted: its "
                                                  "decoder takes seconds per megapixel")
    try:
        image = Image.open(io.BytesIO(data), formats=accepted)
    except Image.UnidentifiedImageError:
        raise ImageRejected("undecodable", f"a broken {found} header") from None
    except Image.DecompressionBombError:  # Pillow's own bound, far above ours, said in our terms
        raise ImageRejected("too_large", f"its header gives more pixels than the limit of "
                                         f"{policy.max_image_pixels}") from None
    width, height = image.size
    if width * height > policy.max_image_pixels:
        raise ImageRejected("too_large", f"{width}x{height} pixels is over the limit of {policy.max_image_pixels}")
    if scans * width * height > MAX_JPEG_SCAN_PIXELS:
        raise ImageRejected("too_large", f"a JPEG of {scans} scans over {width}x{height} pixels is over the limit "
                                         f"of {MAX_JPEG_SCAN_PIXELS} scanned pixels")
    return image


def stored_bytes(mode: str, pixels: int) -> int:
    """The bytes Pillow takes for ``pixels`` of ``mode``: 1 a pixel for 1, L, P; 2 for 16-bit grey; 4 for every
    other mode, RGB included."""
    return pixels * (1 if mode in ("1", "L", "P") else 2 if mode in SIXTEEN_BIT_MODES else 4)


def _working_mode(image) -> str:
    """The mode whose pixels ``_pixels`` copies out: the image's own, or the one it is converted to first."""
    mode = image.mode
    if mode in ("RGB", "RGBA", "L", *GREY_MODES):
        return mode
    if mode in ("LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
        return "RGBA"
    return "L" if mode == "1" else "RGB"


def decoding_bytes(image, turned: bool) -> int:
    """The memory decoding an opened image takes at most: what its decoder holds besides (WebP's), the image as
    decoded, its copy in the working mode (when converted), and the RGB array (twice when an EXIF orientation
    turns it)."""
    pixels = image.width * image.height
    working = _working_mode(image)
    converted = stored_bytes(working, pixels) if working != image.mode else 0
    decoder = WEBP_DECODER_BYTES * pixels if image.format == "WEBP" else 0
    return decoder + stored_bytes(image.mode, pixels) + converted + 3 * pixels * (2 if turned else 1)


def _fit(image, max_bytes: int, turned: bool) -> float:
    """Make the opened ``image`` decode within ``max_bytes``: a JPEG at the largest DCT scale (1/2, 1/4, 1/8)
    that fits. Raises ImageRejected when it does not fit; returns the scale (size before / after)."""
    width, height = image.size
    if image.format in JPEG_FORMATS and decoding_bytes(image, turned) > max_bytes:
        scale = next((s for s in (2, 4, 8) if decoding_bytes(image, turned) / s / s <= max_bytes), 8)
        image.draft(image.mode, (max(1, width // scale), max(1, height // scale)))
    needed = decoding_bytes(image, turned)
    if needed > max_bytes:
        raise ImageRejected("too_large", f"{image.width}x{image.height} pixels of mode {image.mode} take {needed} "
                                         f"bytes to decode, over the limit of {max_bytes}")
    return width / image.width


# EXIF orientation -> the turn of the stored pixels that shows them upright (as PIL.ImageOps.exif_transpose).
ORIENTATIONS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1), 7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1], 8: lambda a: np.rot90(a, 1)}


def _orientation(image) -> int | None:
    """The EXIF orientation of an opened image, from what its header holds (for a PNG without an eXIf chunk
    before its pixels, Pillow's getexif would decode the whole image to look for one after them)."""
    if image.format == "PNG" and "exif" not in image.info:
        return None
    return image.getexif().get(EXIF_ORIENTATION)


def _decode(image, max_bytes: int) -> Decoded:
    """Decode an opened image; this function holds the only reference to it, so that each step frees the
    image of the step before."""
    turn = ORIENTATIONS.get(_orientation(image))
    scale = _fit(image, max_bytes, turned=turn is not None)
    image.load()
    if _working_mode(image) != image.mode:
        image = image.convert(_working_mode(image))
    pixels = _pixels(image)
    del image
    if turn is not None:
        pixels = np.ascontiguousarray(turn(pixels))
    return Decoded(pixels, scale)


STRIP_ROWS = 256  # rows copied out of a Pillow image at a time


def _pixels(image) -> np.ndarray:
    """The RGB uint8 array of a loaded image of mode RGB, RGBA (composited on white), L, or 16/32-bit grey
    (scaled to 8 bits), copied a strip of rows at a time: never a second copy of the whole image."""
    sixteen_bit, factor = False, np.float32(1)
    if image.mode in GREY_MODES:  # 16-bit data keeps its brightness; other values are stretched to 0..255
        high = image.getextrema()[1]
        sixteen_bit = image.mode != "F" and high > 255
        factor = np.float32(255 / (65535 if sixteen_bit else max(float(high), 1.0)))
    out = np.empty((image.height, image.width, 3), dtype=np.uint8)
    for top in range(0, image.height, STRIP_ROWS):
        strip = np.asarray(image.crop((0, top, image.width, min(top + STRIP_ROWS, image.height))))
        if sixteen_bit:
            strip = (strip // 257).astype(np.uint8)[..., None]  # 0..65535 to 0..255
        elif image.mode in GREY_MODES:
            strip = np.clip(strip * factor, 0, 255).astype(np.uint8)[..., None]
        elif image.mode == "L":
            strip = strip[..., None]
        elif image.mode == "RGBA":
            alpha = strip[..., 3:].astype(np.uint16)
            strip = (strip[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
        out[top:top + strip.shape[0]] = strip
    return out


def read_capped(stream: BinaryIO, limit: int) -> bytes:
    """``files.read_capped`` for an image: ImageRejected (too_large) when the stream holds more than ``limit``
    bytes (read no further), (unreadable) when it cannot be read."""
    try:
        return files.read_capped(stream, limit)
    except files.OverLimit:
        raise ImageRejected("too_large", f"the file is over the limit of {limit} bytes") from None
    except OSError as exc:
        raise ImageRejected("unreadable", reason(exc)) from None


def read_photo_file(path: str | Path, policy: ImageConfig) -> bytes:
    """The bytes of an image file: a regular file only (a FIFO or a device is never read, so ``/dev/zero``
    cannot fill memory), of at most ``policy.max_file_bytes``; ImageRejected otherwise."""
    try:
        photo = open_regular(path)
    except OSError as exc:
        raise ImageRejected("unreadable", reason(exc)) from None
    with photo:
        return read_capped(photo, policy.max_file_bytes)


def read_image(path: str | Path, policy: ImageConfig) -> Decoded:
    """Read and decode an image file (see read_photo_file and decode_image)."""
    return decode_image(read_photo_file(path, policy), policy)



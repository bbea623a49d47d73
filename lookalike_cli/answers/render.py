"""A picture of the answer: per face, the user's face (box drawn) beside the best match's photo, with name and percent.

Pillow only. Used by ``lookalike query --out``, the HTTP API's ``?format=png`` and the Telegram bot.
"""

from __future__ import annotations

import functools
import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..imaging.geometry import scale_box
from ..io.catalog import display_name
from ..language import N_, SOURCE_LANGUAGE, decimal, percent, translate

if TYPE_CHECKING:
    from .results import FaceResult

log = logging.getLogger(__name__)

TILE = 320  # side of the square tiles, in pixels
PAD = 16
CAPTION = 76
MAX_PANELS = 8  # faces drawn at most (Telegram refuses photos taller than about 10000 px)
FACE_MARGIN = 0.6  # around the user's face, in face widths
BACKGROUND = (28, 30, 36)
TILE_BACKGROUND = (52, 55, 64)
BOX_COLOUR = (255, 196, 0)
TEXT = (245, 245, 245)
SUBTLE = (170, 175, 185)
FONT_FILE = Path(__file__).parent / "fonts" / "DejaVuSans.ttf"  # accented, Greek, Cyrillic... letters (fonts/README)
FACE_NUMBER = N_("Face {number}: ")
CLOSEST = N_("you, and the closest gallery photo (distance {distance})")
FACES_NOT_SHOWN = N_("faces not shown: {count}")
NOT_AVAILABLE = N_("photo not available")


@functools.lru_cache(maxsize=None)
def picture_font(size: int) -> ImageFont.FreeTypeFont:
    """The pictures' font at ``size`` pixels."""
    return ImageFont.truetype(str(FONT_FILE), size)


def face_square(box: Sequence[int], width: int, height: int, margin: float = FACE_MARGIN) -> tuple[int, ...]:
    """A square around a face box with ``margin`` face sizes on each side, kept inside the image."""
    left, top, right, bottom = box
    side = max(right - left, bottom - top) * (1 + 2 * margin)
    centre_x, centre_y = (left + right) / 2, (top + bottom) / 2
    return (max(0, round(centre_x - side / 2)), max(0, round(centre_y - side / 2)),
            min(width, round(centre_x + side / 2)), min(height, round(centre_y + side / 2)))


def fit_tile(image: Image.Image) -> tuple[Image.Image, float, tuple[int, int]]:
    """``image`` scaled to fit a TILE square, centred on the tile colour; returns the tile, scale, offset."""
    scale = min(TILE / image.width, TILE / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    tile = Image.new("RGB", (TILE, TILE), TILE_BACKGROUND)
    offset = ((TILE - size[0]) // 2, (TILE - size[1]) // 2)
    tile.paste(image.resize(size, Image.LANCZOS), offset)
    return tile, scale, offset


def user_tile(photo: Image.Image, box: Sequence[int]) -> Image.Image:
    """The user's face cut from their photo, its detection box drawn."""
    square = face_square(box, photo.width, photo.height)
    tile, scale, (dx, dy) = fit_tile(photo.crop(square))
    drawn = [(box[0] - square[0]) * scale + dx, (box[1] - square[1]) * scale + dy,
             (box[2] - square[0]) * scale + dx, (box[3] - square[1]) * scale + dy]
    ImageDraw.Draw(tile).rectangle(drawn, outline=BOX_COLOUR, width=3)
    return tile


def match_tile(path: str, language: str = SOURCE_LANGUAGE) -> Image.Image:
    """The matched person's gallery photo, or a plain tile saying it is not available."""
    try:
        with Image.open(path) as photo:
            return fit_tile(ImageOps.exif_transpose(photo).convert("RGB"))[0]
    except Exception as exc:  # moved or deleted gallery files must not break the answer
        log.warning("cannot show gallery photo %s: %s", path, exc)
        tile = Image.new("RGB", (TILE, TILE), TILE_BACKGROUND)
        ImageDraw.Draw(tile).text((TILE // 2, TILE // 2), translate(language, NOT_AVAILABLE), fill=SUBTLE,
                                  font=picture_font(18), anchor="mm")
        return tile


def shorten(text: str, font: ImageFont.ImageFont, width: float) -> str:
    """``text`` cut with an ellipsis so that it fits ``width`` pixels: a binary search over the prefixes of at
    most ``width`` characters (no glyph is narrower than a pixel), so the cost grows with log(len(text))."""
    text = text[:max(0, int(width)) + 1]
    if font.getlength(text) <= width:
        return text
    shortest, longest = 0, len(text) - 1
    while shortest < longest:
        middle = (shortest + longest + 1) // 2
        if font.getlength(text[:middle] + "…") <= width:
            shortest = middle
        else:
            longest = middle - 1
    return text[:shortest] + "…"


def panel_title(prefix: str, name: str, similarity: float, title_font: ImageFont.FreeTypeFont, width: float,
                language: str = SOURCE_LANGUAGE) -> str:
    """``Face 2: Name  43%`` within ``width`` pixels: a long name is shortened, never the percent."""
    shown = f"  {percent(similarity, language)}"
    return prefix + shorten(display_name(name), title_font, width - title_font.getlength(prefix + shown)) + shown


def render_answer(image: np.ndarray, faces: Sequence[FaceResult], scale: float = 1.0,
                  language: str = SOURCE_LANGUAGE) -> Image.Image:
    """One panel per face (at most MAX_PANELS): the face beside its best match, name and percent below, its
    words in ``language``. ``scale``: the photo's size over the image's, in which the faces' boxes are given
    (see images.Decoded)."""
    if not faces:
        raise ValueError("no face to draw")
    photo = Image.fromarray(image)
    shown = faces[:MAX_PANELS]
    width = 2 * TILE + 3 * PAD
    panel_height = TILE + CAPTION
    footer = 36 if len(faces) > len(shown) else 0
    canvas = Image.new("RGB", (width, PAD + len(shown) * (panel_height + PAD) + footer), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    title_font, detail_font = picture_font(26), picture_font(19)
    for number, face in enumerate(shown, 1):
        top = PAD + (number - 1) * (panel_height + PAD)
        canvas.paste(user_tile(photo, scale_box(face.box, scale)), (PAD, top))
        best = face.matches[0]
        canvas.paste(match_tile(best.image, language), (2 * PAD + TILE, top))
        prefix = translate(language, FACE_NUMBER, number=number) if len(faces) > 1 else ""
        title = panel_title(prefix, best.name, best.similarity, title_font, width - 2 * PAD, language)
        draw.text((PAD, top + TILE + 10), title, fill=TEXT, font=title_font)
        detail = translate(language, CLOSEST, distance=decimal(best.distance, language, 2))
        draw.text((PAD, top + TILE + 44), shorten(detail, detail_font, width - 2 * PAD), fill=SUBTLE,
                  font=detail_font)
    if footer:
        not_shown = translate(language, FACES_NOT_SHOWN, count=len(faces) - len(shown))
        draw.text((PAD, canvas.height - footer), not_shown, fill=SUBTLE, font=detail_font)
    return canvas


def render_png(image: np.ndarray, faces: Sequence[FaceResult], scale: float = 1.0,
               language: str = SOURCE_LANGUAGE) -> bytes:
    """render_answer as PNG bytes."""
    buffer = io.BytesIO()
    render_answer(image, faces, scale, language).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def thumbnail_jpeg(image: np.ndarray, side: int, quality: int = 85) -> bytes:
    """An RGB image shrunk to at most ``side`` pixels on its longer side (never enlarged), as JPEG bytes."""
    picture = Image.fromarray(image)
    picture.thumbnail((side, side), Image.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()

"""The picture of the answer: `query --out`, one panel per face, on real photos and real matches."""

import numpy as np
from click.testing import CliRunner
from PIL import Image

from lookalike_cli.cli import cli
from lookalike_cli.answers.results import FaceResult, Match
from lookalike_cli.answers.render import MAX_PANELS, TILE, TILE_BACKGROUND, face_square, render_answer

from conftest import DEMO, FIXTURES
from helpers import two_people


def test_query_out_draws_the_face_beside_its_match(built, tmp_path):
    out = tmp_path / "answer.png"
    result = CliRunner().invoke(cli, ["query", str(DEMO / "selfie.jpg"), "--data-dir", str(built), "--out", str(out)])
    assert result.exit_code == 0, result.output
    image = Image.open(out)
    assert image.format == "PNG" and image.width > 2 * TILE
    pixels = np.asarray(image.convert("RGB")).astype(int)
    assert pixels[20:20 + TILE // 2, 20:TILE].std() > 20  # the user's face is drawn, not a blank tile
    assert pixels[20:20 + TILE // 2, TILE + 40:2 * TILE].std() > 20  # and so is the matched photo


def test_query_out_takes_one_photo_and_writes_nothing_without_a_face(built, tmp_path):
    out = tmp_path / "answer.png"
    result = CliRunner().invoke(cli, ["query", str(DEMO / "selfie.jpg"), str(DEMO / "selfie.jpg"), "--data-dir",
                                      str(built), "--out", str(out)])
    assert result.exit_code == 1 and "--out draws the answer for one photo, but 2 were given" in result.output
    result = CliRunner().invoke(cli, ["query", str(FIXTURES / "no_face_coffee_cc0.png"), "--data-dir", str(built),
                                      "--out", str(out)])
    assert result.exit_code == 1 and not out.exists()


def test_one_panel_per_face(engine, demo_gallery):
    image = two_people(demo_gallery)
    faces = engine.query_image(image)
    assert [face.matches[0].alias for face in faces] == ["ami-bera", "bob-corker"]
    one, two = render_answer(image, faces[:1]), render_answer(image, faces)
    assert two.width == one.width and two.height > 1.9 * one.height


def test_many_faces_are_capped_and_a_missing_gallery_photo_is_a_plain_tile(tmp_path):
    image = np.full((200, 200, 3), 128, np.uint8)
    match = Match(alias="x", name="X", distance=0.5, similarity=0.5, image=str(tmp_path / "moved.jpg"))
    faces = [FaceResult(box=[50, 50, 150, 150], matches=[match])] * (MAX_PANELS + 3)
    capped = render_answer(image, faces)
    assert capped.height < render_answer(image, faces[:1]).height * (MAX_PANELS + 1)
    tile = np.asarray(capped)[40:40 + TILE // 2, TILE + 40:2 * TILE]
    assert (tile == TILE_BACKGROUND).all(axis=2).mean() > 0.9  # a plain tile with a line of text, no photo


def test_face_square_keeps_a_margin_inside_the_image():
    assert face_square((100, 100, 200, 200), 1000, 1000, margin=0.5) == (50, 50, 250, 250)
    assert face_square((0, 10, 100, 110), 150, 120, margin=0.5) == (0, 0, 150, 120)


def test_names_are_drawn_with_their_accents_and_the_percent_always_shows():
    from PIL import ImageDraw

    from lookalike_cli.answers.render import panel_title, picture_font

    font = picture_font(26)

    def drawn(text: str) -> np.ndarray:
        canvas = Image.new("L", (80, 60))
        ImageDraw.Draw(canvas).text((5, 5), text, font=font, fill=255)
        return np.asarray(canvas)

    missing = drawn("\U0010fffd")  # no font has this letter: what is drawn for a letter the font lacks
    assert [letter for letter in "úéñçøДλשا" if np.array_equal(drawn(letter), missing)] == []
    title = panel_title("Face 2: ", "Jean-Baptiste " * 50, 0.43, font, 600)
    assert title.startswith("Face 2: Jean-Baptiste") and title.endswith("…  43%") and font.getlength(title) <= 600


def test_long_and_multi_line_names_are_shortened_with_an_ellipsis_everywhere(tmp_path):
    from PIL import ImageFont

    from lookalike_cli.serving.bot import caption
    from lookalike_cli.io.catalog import SHOWN_NAME_CHARS, display_name
    from lookalike_cli.cli import format_photo
    from lookalike_cli.answers.results import PhotoResult
    from lookalike_cli.answers.render import shorten

    huge = "Jean-Baptiste " * 80_000  # over a megabyte, as in a people table written before names were checked
    assert display_name("Ann\nLee") == "Ann Lee"
    assert len(display_name(huge)) == SHOWN_NAME_CHARS and display_name(huge).endswith("…")
    font = ImageFont.load_default(26)
    cut = shorten(huge, font, 300)
    assert cut.endswith("…") and font.getlength(cut) <= 300 < font.getlength(cut[:-1] + "xx…")

    match = Match(alias="x", name=huge + "\nsecond line", distance=0.5, similarity=0.5, image=str(tmp_path / "x.jpg"))
    faces = [FaceResult(box=[50, 50, 150, 150], matches=[match])] * 10
    lines = format_photo(PhotoResult(photo="me.jpg", faces=faces[:1]))
    assert len(lines) == 1 and len(lines[0]) < 120
    # a file name holding a newline or a direction override stays on its line, escaped
    named = format_photo(PhotoResult(photo="a\nb\u202e.jpg", faces=faces[:1]))
    assert len(named) == 1 and named[0].startswith("a\\nb\\u202e.jpg face 1: ")
    assert format_photo(PhotoResult(photo="a\\nb.jpg", faces=faces[:1]))[0].startswith("a\\\\nb.jpg face 1: ")
    assert format_photo(PhotoResult(photo="a\nb.jpg", reason="unreadable", detail="gone")) == [
        "a\\nb.jpg: cannot read the image (unreadable: gone)"]
    assert len(caption(faces)) <= 1024 and len(caption(faces[:1])) <= 1024  # Telegram's caption limit
    render_answer(np.full((200, 200, 3), 128, np.uint8), faces)  # draws in linear time, and does not fail


def test_the_picture_speaks_the_language_and_draws_cyrillic_names(tmp_path):
    """A Russian answer: its words and a Cyrillic name drawn with the bundled font (no letter missing), its percent
    as Russian writes it."""
    from PIL import ImageDraw

    from lookalike_cli.answers.render import panel_title, picture_font

    font = picture_font(26)

    def drawn(text: str) -> np.ndarray:
        canvas = Image.new("L", (900, 60))
        ImageDraw.Draw(canvas).text((5, 5), text, font=font, fill=255)
        return np.asarray(canvas)

    missing = drawn("\U0010fffd")[:, :40]
    name = "Алла Пугачёва"
    assert [letter for letter in set(name + "Лицо: сходство") if letter != " " and
            np.array_equal(drawn(letter)[:, :40], missing)] == []
    title = panel_title("Лицо 2: ", name, 0.43, font, 600, "ru")
    assert title == "Лицо 2: Алла Пугачёва  43\xa0%"
    image = np.full((200, 200, 3), 128, np.uint8)
    match = Match(alias="alla", name=name, distance=0.5, similarity=0.43, image=str(tmp_path / "moved.jpg"))
    faces = [FaceResult(box=[50, 50, 150, 150], matches=[match])] * 2
    english, russian = (np.asarray(render_answer(image, faces, language=code)) for code in ("en", "ru"))
    assert english.shape == russian.shape and not np.array_equal(english, russian)  # other words drawn

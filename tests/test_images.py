"""Decoding real image files made with Pillow: every mode and container a crawl brings in."""


import numpy as np
import pytest
from PIL import Image

from lookalike_cli.images import ImageRejected, decode_image, list_gallery, verify_image

from conftest import DEMO, corrupt_png, encoded

PORTRAIT = DEMO / "images" / "aaron-schock.jpg"


CORRUPT_PNG = corrupt_png()


@pytest.fixture(scope="module")
def portrait() -> Image.Image:
    return Image.open(PORTRAIT).convert("RGB")


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "LA", "I;16", "1"])
def test_every_mode_becomes_rgb(portrait, mode):
    image = portrait.convert("L").convert("I;16") if mode == "I;16" else portrait.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG" if mode != "1" else "BMP"
    array = decode_image(encoded(image, fmt), 10**8)
    assert array.dtype == np.uint8 and array.shape == (portrait.height, portrait.width, 3)


def test_sixteen_bit_png_keeps_its_contrast(portrait):
    gray = np.asarray(portrait.convert("L"), dtype=np.uint16) * 257
    array = decode_image(encoded(Image.fromarray(gray), "PNG"), 10**8)
    assert abs(int(array.max()) - int(np.asarray(portrait.convert("L")).max())) <= 1


def test_transparent_pixels_become_white(portrait):
    rgba = portrait.convert("RGBA")
    rgba.putalpha(0)
    assert decode_image(encoded(rgba, "PNG"), 10**8).min() == 255


@pytest.mark.parametrize("orientation, turn", [(6, Image.Transpose.ROTATE_270), (8, Image.Transpose.ROTATE_90),
                                               (3, Image.Transpose.ROTATE_180)])
def test_exif_orientation_is_applied(portrait, orientation, turn):
    stored = portrait.transpose({6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270,
                                 3: Image.Transpose.ROTATE_180}[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    array = decode_image(encoded(stored, "PNG", exif=exif), 10**8)
    assert array.shape[:2] == (portrait.height, portrait.width)
    assert np.abs(array.astype(int) - np.asarray(portrait, dtype=int)).mean() < 1
    assert verify_image(encoded(stored, "JPEG", exif=exif), 10**8) == ("JPEG", portrait.width, portrait.height)


def test_animated_gif_gives_its_first_frame(portrait):
    frames = [portrait, portrait.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(data, 10**8).shape == (portrait.height, portrait.width, 3)


def test_webp(portrait):
    assert decode_image(encoded(portrait, "WEBP"), 10**8).shape[2] == 3


@pytest.mark.parametrize("data, reason", [
    (b"", "undecodable"),
    (b"<html><body>not an image</body></html>", "undecodable"),
    (PORTRAIT.read_bytes()[:2000], "undecodable"),
    (PORTRAIT.read_bytes()[:len(PORTRAIT.read_bytes()) * 2 // 3], "undecodable"),  # the last third of the scan
    (CORRUPT_PNG, "undecodable"),
])
@pytest.mark.parametrize("check", [decode_image, verify_image])
def test_broken_files_are_rejected(data, reason, check):
    with pytest.raises(ImageRejected) as caught:
        check(data, 10**8)
    assert caught.value.reason == reason


@pytest.mark.parametrize("check", [decode_image, verify_image])
def test_a_decompression_bomb_is_refused_from_its_header(check):
    bomb = encoded(Image.new("1", (30000, 30000)), "PNG")  # 900 Mpx in a few hundred kB
    with pytest.raises(ImageRejected) as caught:
        check(bomb, 40_000_000)
    assert caught.value.reason == "too_large"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_verify_image_reads_format_and_size_of_whole_files(portrait, fmt):
    assert verify_image(encoded(portrait, fmt), 10**8) == (fmt, portrait.width, portrait.height)


def test_list_gallery_reads_both_layouts_and_flags_bad_files(tmp_path):
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "1.jpg").write_bytes(b"x")
    (tmp_path / "ann" / "notes.txt").write_text("skip me")
    (tmp_path / "bob.png").write_bytes(b"x")
    (tmp_path / ".hidden.jpg").write_bytes(b"x")
    outside = tmp_path.parent / "outside.jpg"
    outside.write_bytes(b"x")
    (tmp_path / "ann" / "link.jpg").symlink_to(outside)
    found = {(image.alias, image.path.rsplit("/", 1)[1]): image.problem for image in list_gallery(tmp_path)}
    assert found == {("ann", "1.jpg"): None, ("bob", "bob.png"): None,
                     ("ann", "link.jpg"): "symbolic link points outside the images folder"}


def test_an_unknown_format_is_named_plainly():
    with pytest.raises(ImageRejected) as caught:
        decode_image(b"<html>404</html>", 10**8)
    assert caught.value.detail == "not an image format Pillow knows"

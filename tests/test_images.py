"""Decoding real image files made with Pillow: every mode and container a crawl brings in."""


import io
import warnings

import numpy as np
import pytest
from PIL import Image, ImageOps

from lookalike_cli.config import ImageConfig
from lookalike_cli.imaging.gallery import list_gallery
from lookalike_cli.imaging.headers import MAX_JPEG_FILL, MAX_JPEG_SEGMENTS, JpegTooComplex, header_pixels, jpeg_scans
from lookalike_cli.imaging.decode import ImageRejected, ImageVerifier, decode_image, verify_image
from lookalike_cli.imaging.tones import dim_tones, stretching_tones, tone_range

import hostile
from conftest import DEMO, corrupt_png, encoded

PORTRAIT = DEMO / "images" / "aaron-schock.jpg"
POLICY = ImageConfig(max_image_pixels=10**8)


CORRUPT_PNG = corrupt_png()


@pytest.fixture(scope="module")
def portrait() -> Image.Image:
    return Image.open(PORTRAIT).convert("RGB")


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "LA", "I;16", "1"])
def test_every_mode_becomes_rgb(portrait, mode):
    image = portrait.convert("L").convert("I;16") if mode == "I;16" else portrait.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG" if mode != "1" else "BMP"
    array = decode_image(encoded(image, fmt), POLICY).pixels
    assert array.dtype == np.uint8 and array.shape == (portrait.height, portrait.width, 3)


def test_sixteen_bit_png_keeps_its_contrast(portrait):
    gray = np.asarray(portrait.convert("L"), dtype=np.uint16) * 257
    array = decode_image(encoded(Image.fromarray(gray), "PNG"), POLICY).pixels
    assert abs(int(array.max()) - int(np.asarray(portrait.convert("L")).max())) <= 1


def test_transparent_pixels_become_white(portrait):
    rgba = portrait.convert("RGBA")
    rgba.putalpha(0)
    assert decode_image(encoded(rgba, "PNG"), POLICY).pixels.min() == 255


@pytest.mark.parametrize("orientation, turn", [(6, Image.Transpose.ROTATE_270), (8, Image.Transpose.ROTATE_90),
                                               (3, Image.Transpose.ROTATE_180)])
def test_exif_orientation_is_applied(portrait, orientation, turn):
    stored = portrait.transpose({6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270,
                                 3: Image.Transpose.ROTATE_180}[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    array = decode_image(encoded(stored, "PNG", exif=exif), POLICY).pixels
    assert array.shape[:2] == (portrait.height, portrait.width)
    assert np.abs(array.astype(int) - np.asarray(portrait, dtype=int)).mean() < 1
    assert verify_image(encoded(stored, "JPEG", exif=exif), POLICY) == ("JPEG", portrait.width, portrait.height)


def test_animated_gif_gives_its_first_frame(portrait):
    frames = [portrait, portrait.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(data, POLICY).pixels.shape == (portrait.height, portrait.width, 3)


def test_webp(portrait):
    assert decode_image(encoded(portrait, "WEBP"), POLICY).pixels.shape[2] == 3


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
        check(data, POLICY)
    assert caught.value.reason == reason


@pytest.mark.parametrize("check", [decode_image, verify_image])
@pytest.mark.slow
def test_a_decompression_bomb_is_refused_from_its_header(check):
    bomb = encoded(Image.new("1", (30000, 30000)), "PNG")  # 900 Mpx in a few hundred kB
    with pytest.raises(ImageRejected) as caught:
        check(bomb, ImageConfig())
    # Pillow's own bound (179 Mpx) stops this one, said in lookalike's terms
    assert (caught.value.reason, caught.value.detail) == ("too_large", "its header gives more pixels than the "
                                                                       "limit of 40000000")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_verify_image_reads_format_and_size_of_whole_files(portrait, fmt):
    assert verify_image(encoded(portrait, fmt), POLICY) == (fmt, portrait.width, portrait.height)


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
        decode_image(b"<html>404</html>", POLICY).pixels
    assert caught.value.detail == "not an image format Pillow knows"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_turns_as_pillow_does(portrait, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(portrait, "PNG", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert np.array_equal(decode_image(data, POLICY).pixels, expected)


@pytest.mark.parametrize("make, found", [
    (hostile.eps, "EPS"),
    (lambda: encoded(Image.new("F", (64, 64), 0.5), "TIFF"), "TIFF"),
    (lambda: encoded(Image.new("RGB", (64, 64)), "JPEG2000"), "JPEG2000"),
    (lambda: encoded(Image.new("RGB", (64, 64)), "AVIF"), "AVIF"),
    (lambda: encoded(Image.new("RGB", (64, 64)), "ICO"), "ICO"),
])
@pytest.mark.parametrize("check", [decode_image, verify_image])
def test_formats_not_accepted_are_refused_before_any_decoder_runs(make, found, check):
    with pytest.raises(ImageRejected) as caught:
        check(make(), POLICY)
    assert caught.value.reason == "unsupported_format"
    assert caught.value.detail == f"{found} images are not accepted (accepted: JPEG, PNG, WEBP, GIF, BMP)"


def test_a_format_can_be_allowed(portrait):
    with_tiff = ImageConfig(image_formats="JPEG TIFF")
    grey = Image.fromarray(np.asarray(portrait.convert("L"), dtype=np.float32) / 255)  # float samples, 0..1
    array = decode_image(encoded(grey, "TIFF"), with_tiff).pixels
    assert np.abs(array[..., 0].astype(int) - np.asarray(portrait.convert("L"), dtype=int)).max() <= 1
    with pytest.raises(ImageRejected, match="PNG images are not accepted"):
        decode_image(encoded(portrait, "PNG"), with_tiff)


def test_scans_are_counted_from_the_markers(portrait):
    assert jpeg_scans(encoded(portrait, "JPEG"), 100) == 1
    assert jpeg_scans(encoded(portrait, "JPEG", progressive=True), 100) == 10
    assert jpeg_scans(hostile.repeated_scans_jpeg(64, 500), 1000) == 510
    with pytest.raises(JpegTooComplex, match="more than 100 scans"):
        jpeg_scans(hostile.repeated_scans_jpeg(64, 500), 100)
    with pytest.raises(JpegTooComplex, match=f"more than {MAX_JPEG_SEGMENTS} marker segments"):
        jpeg_scans(hostile.repeated_scans_jpeg(64, 3000), 5000)


@pytest.mark.parametrize("check", [decode_image, verify_image])
def test_a_jpeg_of_thousands_of_scans_is_refused_from_its_markers(check):
    data = hostile.repeated_scans_jpeg(6000, 3000)  # 36 Mpx in 300 kB, minutes of decoding
    with pytest.raises(ImageRejected) as caught:
        check(data, ImageConfig())
    assert (caught.value.reason, caught.value.detail) == ("too_large", "a JPEG of more than 100 scans is over the "
                                                                       "limit")


@pytest.mark.parametrize("check", [decode_image, verify_image])
@pytest.mark.parametrize("data, detail", [
    (lambda: hostile.comment_bomb_jpeg(2_400_000), f"more than {MAX_JPEG_SEGMENTS} marker segments"),  # 9.6 MB
    (lambda: hostile.fill_bomb_jpeg(9_900_000), f"more than {MAX_JPEG_FILL} fill bytes"),
])
def test_a_jpeg_padded_with_markers_or_fill_is_refused_before_pillow_walks_them(check, data, detail):
    """Pillow walks a JPEG's markers in Python: 2.4 million empty comments took 19.5 s, 9.9 MB of fill 33.9 s."""
    with pytest.raises(ImageRejected) as caught:
        check(data(), ImageConfig())
    assert caught.value.reason == "too_large" and detail in caught.value.detail


def test_the_jpeg_marker_bounds_leave_room_for_real_photos():
    assert decode_image(hostile.comment_bomb_jpeg(MAX_JPEG_SEGMENTS - 10), ImageConfig()).pixels.shape == (1, 1, 3)
    assert decode_image(hostile.fill_bomb_jpeg(MAX_JPEG_FILL), ImageConfig()).pixels.shape == (1, 1, 3)
    for photo in sorted((DEMO / "images").glob("*.jpg")):
        assert jpeg_scans(photo.read_bytes(), 100) >= 1


def test_a_webp_counts_its_decoders_frame():
    """libwebp decodes into a frame of its own that Pillow copies: a 27 Mpx lossless WebP of 1 kB took 444 MB
    against --max-decoded-bytes 200 MB. Counted, it is refused; a 12 Mpx one (180 MB with its frame) decodes."""
    with pytest.raises(ImageRejected) as caught:
        decode_image(hostile.flat_webp(16000, 1700), ImageConfig())
    assert caught.value.reason == "too_large" and "408000000 bytes to decode" in caught.value.detail
    assert decode_image(hostile.flat_webp(4000, 3000), ImageConfig()).pixels.shape == (3000, 4000, 3)


@pytest.mark.parametrize("check", [decode_image, verify_image])
def test_a_run_length_encoded_bmp_is_refused(check):
    data = hostile.rle8_bmp(4000, 4000)
    assert Image.open(io.BytesIO(data)).info["compression"] == 1  # Pillow reads it as RLE8
    with pytest.raises(ImageRejected) as caught:
        check(data, ImageConfig())
    assert caught.value.reason == "unsupported_format" and "run-length-encoded" in caught.value.detail
    plain = encoded(Image.new("RGB", (40, 30), (9, 99, 199)), "BMP")
    assert decode_image(plain, ImageConfig()).pixels.shape == (30, 40, 3)


@pytest.mark.parametrize("check", [decode_image, verify_image])
@pytest.mark.slow
def test_the_scans_of_a_large_jpeg_are_bounded_by_their_pixels_too(check):
    with pytest.raises(ImageRejected) as caught:
        check(hostile.repeated_scans_jpeg(6000, 90), ImageConfig())  # 100 scans over 36 Mpx: seconds
    assert caught.value.detail == ("a JPEG of 100 scans over 6000x6000 pixels is over the limit of 1000000000 "
                                   "scanned pixels")
    assert check(hostile.slow_jpeg(), ImageConfig()) is not None  # 27 scans over 36 Mpx: within the bound


@pytest.mark.parametrize("make, per_pixel", [(hostile.sixteen_bit_png, 2 + 3), (hostile.rgba_png, 4 + 3)])
def test_decoded_memory_is_bounded_from_the_header(make, per_pixel):
    data = make(1000, 800)  # bytes Pillow takes a pixel, plus the RGB array
    exact = ImageConfig(max_decoded_bytes=per_pixel * 1000 * 800)
    assert decode_image(data, exact).pixels.shape == (800, 1000, 3)
    with pytest.raises(ImageRejected) as caught:
        decode_image(data, ImageConfig(max_decoded_bytes=exact.max_decoded_bytes - 1))
    assert caught.value.reason == "too_large" and "bytes to decode, over the limit" in caught.value.detail


def test_a_jpeg_over_the_memory_bound_is_decoded_at_a_smaller_scale(portrait):
    data = encoded(portrait.resize((portrait.width * 4, portrait.height * 4)), "JPEG")
    full = decode_image(data, POLICY)
    assert full.scale == 1 and full.pixels.shape == (portrait.height * 4, portrait.width * 4, 3)
    quarter = decode_image(data, ImageConfig(max_decoded_bytes=7 * portrait.width * portrait.height))
    assert quarter.scale == 4 and quarter.pixels.shape == (portrait.height, portrait.width, 3)
    assert verify_image(data, ImageConfig(max_decoded_bytes=7 * portrait.width * portrait.height))[0] == "JPEG"


def test_what_pillow_warns_of_in_a_photo_is_not_printed(portrait):
    corrupt_exif = encoded(portrait, "JPEG", exif=b"Exif\0\0MM\0*\0\0\0\x08\xff\xff" + b"\0" * 64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert decode_image(corrupt_exif, ImageConfig()).pixels.shape[:2] == (portrait.height, portrait.width)
        assert verify_image(corrupt_exif, ImageConfig())[0] == "JPEG"
    assert caught == []


def test_the_crawl_s_verifier_stops_a_slow_decode_and_goes_on(portrait):
    slow = hostile.slow_jpeg()  # within every bound; half a second of decoding and more
    with ImageVerifier(ImageConfig(decode_timeout=hostile.DECODE_TIMEOUT), workers=1) as verifier:
        with pytest.raises(ImageRejected) as caught:
            verifier.verify(slow)
        assert (caught.value.reason, caught.value.detail) == ("timeout", hostile.DECODE_TIMED_OUT)
        with pytest.raises(ImageRejected, match="undecodable"):
            verifier.verify(b"<html>404</html>")
        assert verifier.verify(encoded(portrait, "PNG")) == ("PNG", portrait.width, portrait.height)


@pytest.mark.parametrize("fmt, options", [("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}), ("GIF", {}),
                                          ("BMP", {}), ("WEBP", {}), ("WEBP", {"lossless": True}),
                                          ("WEBP", {"exif": b"Exif\x00\x00II*\x00"})])
def test_header_pixels_read_as_pillow_does(portrait, fmt, options):
    for image in (portrait, portrait.resize((3001, 1999))):
        assert header_pixels(encoded(image, fmt, **options)) == image.width * image.height


def test_header_pixels_are_unknown_rather_than_guessed():
    assert header_pixels(hostile.eps()) is None and header_pixels(b"\x89PNG") is None
    markers = b"\xff\xd8" + b"\xff\xe1\x00\x02" * 64  # 64 empty APP1 segments before any frame header
    assert header_pixels(markers + encoded(Image.new("RGB", (8, 8)), "JPEG")[2:]) is None
    fill = b"\xff\xd8" + b"\xff" * 10_000_000  # more fill than a JPEG may hold: its size is not guessed
    assert header_pixels(fill + encoded(Image.new("RGB", (8, 8)), "JPEG")[2:]) is None
    scan_first = b"\xff\xd8\xff\xda\x00\x02" + b"\xff\x00" * 5_000_000 + b"\xff\xc0\x00\x11\x08\x00\x10\x00\x10"
    assert header_pixels(scan_first) is None  # a frame header comes before the first scan, or there is none
    truncated = encoded(Image.new("RGB", (8, 8)), "JPEG")
    frame = truncated.index(b"\xff\xc0")
    assert header_pixels(truncated[:frame + 8]) is None and header_pixels(truncated[:frame + 9]) == 64


def test_tone_range_leaves_the_darkest_and_brightest_percent_out():
    levels = np.repeat(np.arange(40, 81, dtype=np.uint8), 100)  # 4,100 pixels from 40 to 80, evenly
    extremes = np.array([0] * 20 + [255] * 20, dtype=np.uint8)  # under 1% at each end
    grey = np.concatenate([levels, extremes]).reshape(-1, 1).repeat(3, axis=1).reshape(1, -1, 3)
    assert tone_range(grey) == (40, 80)
    large = np.random.default_rng(0).integers(60, 121, (3000, 4000, 1), dtype=np.uint8).repeat(3, axis=2)
    every_pixel = np.quantile(large[..., 0], [0.01, 0.99])  # tone_range reads a sample of 250,000
    assert np.abs(np.array(tone_range(large)) - every_pixel).max() <= 1


def test_stretching_tones_map_the_range_to_0_255_alike_in_every_channel():
    image = np.array([[[40, 40, 40], [80, 80, 80], [60, 50, 40], [10, 200, 70]]], dtype=np.uint8)
    assert stretching_tones(40, 80)[image].tolist() == [[[0, 0, 0], [255, 255, 255], [128, 64, 0], [0, 255, 191]]]
    assert stretching_tones(90, 90)[90] == 0 and stretching_tones(90, 90)[91] == 255  # no range: no division by 0


def test_only_a_dim_image_is_stretched_not_a_bright_or_a_flat_one():
    dim = np.linspace(10, 70, 300, dtype=np.uint8).reshape(1, -1, 1).repeat(3, axis=2)  # 60 levels
    bright = np.linspace(10, 250, 300, dtype=np.uint8).reshape(1, -1, 1).repeat(3, axis=2)  # 240 levels
    tones = dim_tones(dim, 128)
    assert tones is not None and tones[dim].min() == 0 and tones[dim].max() == 255
    assert dim_tones(bright, 128) is None and dim_tones(dim, 0) is None
    for level in (0, 90, 255):  # one colour: nothing to stretch (a stretch would turn it black or white)
        assert dim_tones(np.full((40, 40, 3), level, dtype=np.uint8), 128) is None

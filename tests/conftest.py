"""Shared fixtures: the bundled demo gallery, ../shared's real photos, and one gallery built per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from lookalike_cli.config import load_config

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "data" / "demo"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED = Path(os.environ.get("LOOKALIKE_SHARED", REPO.parent / "shared"))

# Fast settings for tests: no jitter (10 jitters cost 10x and change nothing that is tested here).
# The tests' servers answer many clients of one address (127.0.0.1): no per-address share of photos, but where said.
FAST = {"num_jitters": 1, "workers": 2, "max_client_photos": 1000}
# The demo selfie made small, compressed and blurred: HOG finds no face in it (even enlarged, and after the web
# page re-encodes it as a JPEG of any quality), dlib's CNN does.
HARD_SELFIE = "shrink:160,jpeg:35,blur:4"


def run(*args, code: int = 0):
    """Run the ``lookalike`` command in this process (Click's runner); asserts its exit code."""
    from click.testing import CliRunner

    from lookalike_cli.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result


def encoded(image, image_format: str, **options) -> bytes:
    """A Pillow image saved in ``image_format``, as bytes."""
    import io

    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def corrupt_png() -> bytes:
    """A real portrait as PNG with 64 bytes in the middle overwritten: its header is fine, its data is not."""
    from PIL import Image

    data = bytearray(encoded(Image.open(DEMO / "images" / "ami-bera.jpg"), "PNG"))
    data[len(data) // 2:len(data) // 2 + 64] = b"\xff" * 64
    return bytes(data)


def side_by_side(*paths: Path):
    """A real photo with several faces: portraits pasted side by side on white."""
    from PIL import Image

    images = [Image.open(path).convert("RGB") for path in paths]
    both = Image.new("RGB", (sum(image.width for image in images), max(image.height for image in images)), "white")
    left = 0
    for image in images:
        both.paste(image, (left, 0))
        left += image.width
    return both


def hard_selfie() -> bytes:
    """The demo selfie degraded by HARD_SELFIE, as PNG bytes."""
    from PIL import Image

    from lookalike_cli.config import ImageConfig
    from lookalike_cli.evaluation.degrade import degrade, parse_degradation
    from lookalike_cli.imaging.decode import read_image

    pixels = read_image(DEMO / "selfie.jpg", ImageConfig()).pixels
    return encoded(Image.fromarray(degrade(pixels, parse_degradation(HARD_SELFIE))), "PNG")


def shared_path(*parts: str) -> Path:
    """A path under ../shared (or $LOOKALIKE_SHARED); the test is skipped, saying why, if it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: set LOOKALIKE_SHARED to the folder with congress/ and faces/")
    return path


@pytest.fixture(scope="session", autouse=True)
def descriptor_cache(tmp_path_factory) -> Path:
    """The cache of the numpy descriptor backend (converted network, equivalence guard): a fresh folder per
    session, never the user's; worker processes and the CLI inherit it."""
    folder = tmp_path_factory.mktemp("cache")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    return folder / "lookalike" / "descriptor"


@pytest.fixture(scope="session")
def fast_config():
    return load_config(None, FAST)


@pytest.fixture(scope="session")
def demo_gallery(tmp_path_factory) -> Path:
    """A copy of the demo gallery's images, one file per person."""
    folder = tmp_path_factory.mktemp("gallery") / "images"
    shutil.copytree(DEMO / "images", folder)
    return folder


@pytest.fixture(scope="session")
def built(tmp_path_factory, demo_gallery, fast_config) -> Path:
    """A data directory built once from the demo gallery (read-only for the tests that use it)."""
    from lookalike_cli import build

    data = tmp_path_factory.mktemp("built")
    build(demo_gallery, data, DEMO / "catalog.json", fast_config)
    return data


@pytest.fixture(scope="session")
def engine(built, fast_config):
    from lookalike_cli.answers.query import Lookalike

    return Lookalike(built, fast_config)

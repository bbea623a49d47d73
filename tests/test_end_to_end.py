"""Build a real gallery, then query altered copies of its photos; re-runs redo only what changed."""

import io
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

from lookalike_cli import build
from lookalike_cli.gallery.search import ExactIndex, HnswIndex
from lookalike_cli.io.artifacts import DataDir
from lookalike_cli.config import load_config
from lookalike_cli.stages.filter import filter_images

from conftest import DEMO, FAST, FIXTURES, side_by_side

ALIASES = ["aaron-schock", "ami-bera", "barack-obama", "bob-corker", "beto-orourke"]


def recompressed(image):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=30)
    return Image.open(io.BytesIO(buffer.getvalue()))


ALTERATIONS = {
    "mirrored": ImageOps.mirror,
    "rescaled": lambda im: im.resize((im.width * 2, im.height * 2), Image.BICUBIC),
    "shrunk": lambda im: im.resize((int(im.width * 0.8), int(im.height * 0.8)), Image.BICUBIC),
    "recompressed": recompressed,
    "rotated": lambda im: im.rotate(8, resample=Image.BICUBIC, fillcolor=(128, 128, 128)),
}


@pytest.mark.parametrize("alteration", ALTERATIONS)
def test_altered_gallery_photos_come_back_as_the_right_person(engine, alteration):
    for alias in ALIASES:
        photo = ALTERATIONS[alteration](Image.open(DEMO / "images" / f"{alias}.jpg").convert("RGB"))
        faces = engine.query_image(np.asarray(photo))
        assert len(faces) == 1
        best = faces[0].matches[0]
        assert best.alias == alias, (alteration, alias, best)
        assert best.similarity > 0.9


def test_every_face_of_a_group_photo_is_answered(engine):
    image = np.asarray(Image.open(FIXTURES / "astronaut_eileen_collins.png").convert("RGB"))
    assert len(engine.query_image(image)) == 2  # her face and, at a low score, her mission patch


def test_hnsw_answers_like_exact_search(built):
    rows, vectors = DataDir(built).vectors("gallery")
    exact = ExactIndex(vectors)
    settings = load_config().index
    hnsw = HnswIndex.build(vectors, settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef_search, threads=1)
    ids_exact, d_exact = exact.search(vectors, 5)
    ids_hnsw, d_hnsw = hnsw.search(vectors, 5)
    assert (ids_exact[:, 0] == np.arange(len(vectors))).all()
    assert (ids_hnsw[:, 0] == ids_exact[:, 0]).mean() == 1.0
    np.testing.assert_allclose(d_hnsw, d_exact, atol=1e-3)


@pytest.mark.slow
def test_rebuild_redoes_only_new_photos_and_keeps_the_rest(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for alias in ALIASES[:3]:
        shutil.copy(DEMO / "images" / f"{alias}.jpg", images)
    data = tmp_path / "data"
    config = load_config(None, FAST)
    first = build(images, data, DEMO / "catalog.json", config)
    assert (first.filter.detected, first.embed.computed) == (3, 3)
    before = pq.read_table(data / "embeddings.parquet").to_pylist()

    again = build(images, data, DEMO / "catalog.json", config)
    assert (again.filter.detected, again.embed.computed) == (0, 0)

    for alias in ALIASES[3:]:
        shutil.copy(DEMO / "images" / f"{alias}.jpg", images)
    grown = build(images, data, DEMO / "catalog.json", config)
    assert (grown.filter.detected, grown.embed.computed) == (2, 2)
    after = {row["path"]: row for row in pq.read_table(data / "embeddings.parquet").to_pylist()}
    assert len(after) == 5
    for row in before:
        assert after[row["path"]]["embedding"] == row["embedding"]

    stricter = filter_images(images, data, DEMO / "catalog.json", load_config(None, FAST | {"min_eye_distance": 1e3}))
    assert stricter.detected == 0 and stricter.reasons == {"small_face": 5}
    assert not list(tmp_path.rglob("*.tmp")) and not (data / "parts").exists()


@pytest.mark.slow
def test_several_faces_policy(tmp_path, demo_gallery):
    images = tmp_path / "images"
    images.mkdir()
    side_by_side(demo_gallery / "ami-bera.jpg", demo_gallery / "bob-corker.jpg").save(images / "pair.jpg")
    shutil.copy(demo_gallery / "aaron-schock.jpg", images)
    config = load_config(None, FAST)
    assert filter_images(images, tmp_path / "a", None, config).reasons == {"several_faces": 1}
    largest = load_config(None, FAST | {"multiple_faces": "largest"})
    assert filter_images(images, tmp_path / "a", None, largest).accepted == 2

"""Identity cleaning: the maths on made-up vectors, then "dirty crawls" of real photos through `build`."""

import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

from lookalike_cli import build
from lookalike_cli import calibrate
from lookalike_cli.stages.clean import clean_identities
from lookalike_cli.stages.embed import embed_faces
from lookalike_cli.face.identity import dominant_identity, gallery_selection
from lookalike_cli.config import load_config
from lookalike_cli.errors import LookalikeError
from lookalike_cli.stages.index import build_index
from lookalike_cli.answers.query import Lookalike

from conftest import DEMO, FAST, shared_path


def around(centre, count, spread, seed):
    """``count`` vectors at distance ``spread`` from ``centre``, in random directions."""
    directions = np.random.default_rng(seed).normal(size=(count, len(centre)))
    return centre + spread * directions / np.linalg.norm(directions, axis=1, keepdims=True)


A, B, C = (np.eye(128)[i] for i in range(3))  # pairwise 1.41 apart


def test_the_largest_agreeing_group_is_kept_and_the_rest_rejected():
    vectors = np.concatenate([around(A, 4, 0.25, 0), B[None], C[None]])
    identity = dominant_identity(vectors, 0.6)
    assert identity.status == "agree"
    assert identity.kept.tolist() == [True] * 4 + [False] * 2
    assert identity.medoid < 4
    assert (identity.medoid_distances[:4] <= 0.6).all() and (identity.medoid_distances[4:] > 1).all()


def test_one_photo_two_equal_groups_or_no_group_are_marked_and_keep_everything():
    assert dominant_identity(A[None], 0.6).status == "single_photo"
    for vectors in (np.stack([A, B, C]), np.concatenate([around(A, 2, 0.2, 1), around(B, 2, 0.2, 2)])):
        identity = dominant_identity(vectors, 0.6)
        assert identity.status == "no_agreement"
        assert identity.kept.all()


def test_a_tie_in_group_size_goes_to_the_tighter_group():
    vectors = np.concatenate([around(A, 3, 0.1, 3), around(A + 0.05, 3, 0.3, 4)])
    assert dominant_identity(vectors, 0.25).medoid < 3


@pytest.mark.parametrize("mode, count", [("photos", 5), ("mean", 2), ("both", 7)])
def test_gallery_selection(mode, count):
    vectors = np.concatenate([around(A, 3, 0.2, 5), around(B, 2, 0.2, 6)]).astype(np.float32)
    labels = np.array(["a", "a", "a", "b", "b"], dtype=object)
    selected, selected_labels, sources = gallery_selection(vectors, labels, mode)
    assert len(selected) == len(selected_labels) == len(sources) == count
    means = selected[sources < 0]
    assert len(means) == {"photos": 0, "mean": 2, "both": 2}[mode]
    if len(means):
        np.testing.assert_allclose(means[0], vectors[:3].mean(axis=0), rtol=1e-5)
        assert selected_labels[sources < 0].tolist() == ["a", "b"]


def identities(data):
    return {row["path"].rsplit("/", 2)[-2] + "/" + row["path"].rsplit("/", 1)[-1]: row
            for row in pq.read_table(data / "identities.parquet").to_pylist()}


@pytest.mark.slow
def test_dirty_crawl_of_altered_copies_loses_exactly_the_intruders(tmp_path):
    """In-repo data: four altered copies of one portrait, mixed with two other people's portraits."""
    folder = tmp_path / "images" / "barack-obama"
    folder.mkdir(parents=True)
    portrait = Image.open(DEMO / "images" / "barack-obama.jpg").convert("RGB")
    portrait.save(folder / "a.jpg")
    ImageOps.mirror(portrait).save(folder / "b.jpg")
    portrait.resize((portrait.width * 2, portrait.height * 2), Image.BICUBIC).save(folder / "c.jpg")
    portrait.save(folder / "d.jpg", quality=30)
    for intruder in ("ami-bera", "bob-corker"):
        shutil.copy(DEMO / "images" / f"{intruder}.jpg", folder / f"x-{intruder}.jpg")
    shutil.copy(DEMO / "images" / "aaron-schock.jpg", tmp_path / "images")
    photos = load_config(None, FAST | {"gallery_vectors": "photos"})
    summary = build(tmp_path / "images", tmp_path / "data", DEMO / "catalog.json", photos)
    rows = identities(tmp_path / "data")
    rejected = sorted(key for key, row in rows.items() if row["status"] == "rejected")
    assert rejected == ["barack-obama/x-ami-bera.jpg", "barack-obama/x-bob-corker.jpg"]
    assert {row["reason"] for key, row in rows.items() if key in rejected} == {"other_identity"}
    assert summary.clean.people == {"agree": 1, "single_photo": 1, "no_agreement": 0}
    assert summary.index.vectors == 5

    means = build(tmp_path / "images", tmp_path / "data", DEMO / "catalog.json",
                  load_config(None, FAST | {"other_identities": "keep"}))
    assert (means.filter.detected, means.embed.computed) == (0, 0)
    assert (means.clean.kept, means.clean.rejected, means.index.vectors) == (7, 2, 2)
    gallery = pq.read_table(tmp_path / "data" / "gallery.parquet").to_pylist()
    assert [row["kind"] for row in gallery] == ["mean", "mean"]
    representative = [key for key, row in identities(tmp_path / "data").items() if row["representative"]]
    assert sorted(row["image"].rsplit("/", 2)[-2] + "/" + row["image"].rsplit("/", 1)[-1] for row in gallery) == \
        sorted(representative)


@pytest.mark.slow
def test_stages_refuse_a_gallery_older_than_the_embeddings_and_queries_keep_the_published_one(tmp_path,
                                                                                             demo_gallery):
    images = tmp_path / "images"
    images.mkdir()
    for alias in ("ami-bera", "bob-corker", "aaron-schock"):
        shutil.copy(demo_gallery / f"{alias}.jpg", images)
    data = tmp_path / "data"
    config = load_config(None, FAST)
    published = build(images, data, None, config).index.generation
    os.utime(data / "embeddings.parquet", ns=(1, 1))  # times do not matter: a copy keeps its content ids
    calibrate(data, config)
    embed_faces(data, config)  # rewritten: a new content id
    for stage in (calibrate, build_index):
        with pytest.raises(LookalikeError, match="gallery.parquet is older than .*run `lookalike clean .*` again"):
            stage(data, config)
    assert Lookalike(data, config).generation == published  # queries answer from the published gallery
    clean_identities(data, config)
    with pytest.raises(LookalikeError, match="calibration.json is older than .*gallery.parquet"):
        build_index(data, config)
    calibrate(data, config)
    assert build_index(data, config).generation != published
    assert Lookalike(data, config).query_file(images / "ami-bera.jpg").faces[0].matches[0].alias == "ami-bera"


@pytest.mark.slow
def test_dirty_crawl_of_real_photos_through_build_and_query(tmp_path):
    """../shared: Obama's four photos with Biden, Kit Harington and two congress members mixed in."""
    faces = shared_path("faces", "people")
    congress = shared_path("congress", "images")
    images = tmp_path / "images"
    obama = images / "barack_obama"
    shutil.copytree(faces / "barack_obama", obama)
    intruders = {"x-biden.jpg": faces / "joe_biden" / "1.jpg", "x-kit.jpg": faces / "kit_harington" / "1.jpg",
                 "x-adams.jpg": congress / "alma-s-adams.jpg", "x-corker.jpg": congress / "bob-corker.jpg"}
    for name, source in intruders.items():
        shutil.copy(source, obama / name)
    shutil.copytree(faces / "bbt_penny", images / "bbt_penny")
    shutil.copytree(faces / "alex_lacamoire", images / "alex_lacamoire")
    shutil.copy(faces / "bbt_amy" / "1.png", images / "bbt_penny" / "x-amy.png")
    (images / "mixed").mkdir()
    shutil.copy(faces / "rose_leslie" / "1.jpg", images / "mixed")
    shutil.copy(faces / "bbt_raj" / "1.png", images / "mixed")
    config = load_config(None, FAST)
    summary = build(images, tmp_path / "data", None, config)

    rows = identities(tmp_path / "data")
    rejected = sorted(key for key, row in rows.items() if row["status"] == "rejected")
    assert rejected == sorted(["bbt_penny/x-amy.png"] + [f"barack_obama/{name}" for name in intruders])
    status = {row["alias"]: row["person_status"] for row in rows.values()}
    assert status == {"barack_obama": "agree", "bbt_penny": "agree", "alex_lacamoire": "agree",
                      "mixed": "no_agreement"}
    assert summary.clean.no_agreement == ["mixed"]
    representative = [key for key, row in rows.items() if row["representative"] and row["alias"] == "barack_obama"]
    assert len(representative) == 1 and not representative[0].startswith("barack_obama/x-")

    engine = Lookalike(tmp_path / "data", config)
    match = engine.query_file(faces / "barack_obama" / "2.jpg").faces[0].matches[0]
    assert match.alias == "barack_obama" and match.image.endswith(representative[0])
    for source in intruders.values():  # a rejected photo is not in the index: it does not find itself
        assert engine.query_file(source).faces[0].matches[0].distance > 0.3

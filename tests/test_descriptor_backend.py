"""The numpy descriptor backend: dlib's network read from its own file gives dlib's descriptors on real faces;
anything else is refused in one line and dlib is used; galleries of either backend answer alike."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from lookalike_cli import build
from lookalike_cli.config import ImageConfig, load_config
from lookalike_cli.stages.embed import embed_faces
from lookalike_cli.errors import LookalikeError
from lookalike_cli.imaging.decode import read_image
from lookalike_cli.face.descriptors import (EQUIVALENCE_TOLERANCE, MAX_DESCRIPTOR_MODEL_BYTES, descriptor_backend,
                                           dlib_descriptors, guard_chips, jittered_chips, numpy_network)
from lookalike_cli.face.model_files import DESCRIPTOR_FILE, LANDMARKS_FILE, models_folder
from lookalike_cli.face.models import FaceModels
from lookalike_cli.answers.query import Lookalike
from lookalike_cli.face.resnet import read_dlib_network

from conftest import DEMO, FAST, FIXTURES, shared_path

GUARD_FACES = ["barack-obama", "debbie-stabenow", "emanuel-cleaver", "ami-bera"]  # the chips of guard_chips.png


@pytest.fixture(scope="module")
def models() -> FaceModels:
    return FaceModels()


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return (models_folder() / DESCRIPTOR_FILE).read_bytes()


def largest_face_chip(models: FaceModels, path: Path) -> np.ndarray:
    image = read_image(path, ImageConfig()).pixels
    return models.chip(image, models.detect(image, 1)[0])


def test_the_guard_chips_are_demo_faces_as_dlib_aligns_them(models):
    """guard_chips.png is made by this: the largest face of each GUARD_FACES demo photo, side by side."""
    chips = np.stack([largest_face_chip(models, DEMO / "images" / f"{alias}.jpg") for alias in GUARD_FACES])
    np.testing.assert_array_equal(guard_chips(), chips)


def swapped(old: bytes, new: bytes):
    return lambda data: data.replace(old, new, 1)


REFUSED = {
    "dlib's landmarks model": (lambda data: (models_folder() / LANDMARKS_FILE).read_bytes(), "an unexpected string"),
    "an empty file": (lambda data: b"", "the file ends early"),
    "a truncated file": (lambda data: data[:len(data) // 2], "the file ends early"),
    "bytes after the network": (lambda data: data + b"\0", "more data after the network"),
    "another pooling layer": (swapped(b"max_pool_2", b"avg_pool_2"), "'avg_pool_2' where 'max_pool_2' was expected"),
    "another input layer": (swapped(b"input_rgb_image_sized", b"input_rgb_image_sizeX"),
                            "layer 'input_rgb_image_sizeX'"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_anything_but_dlibs_network_is_refused_in_one_line(case, model_bytes):
    make, says = REFUSED[case]
    with pytest.raises(LookalikeError) as error:
        read_dlib_network(make(model_bytes))
    message = str(error.value)
    assert message.startswith("not dlib's face recognition network: ") and says in message, message
    assert "\n" not in message


def models_dir_with(folder: Path, descriptor: bytes) -> str:
    folder.mkdir()
    shutil.copy(models_folder() / LANDMARKS_FILE, folder)
    (folder / DESCRIPTOR_FILE).write_bytes(descriptor)
    return str(folder)


def test_a_model_file_dlib_reads_but_not_the_converter_falls_back_to_dlib(tmp_path, models, model_bytes, caplog):
    """dlib ignores bytes after its network; the converter refuses them: `auto` warns and uses dlib."""
    models_dir = models_dir_with(tmp_path / "models", model_bytes + b"trailing")
    with caplog.at_level(logging.WARNING):
        assert descriptor_backend(models_dir, "auto") == "dlib"
    assert "more data after the network" in caplog.text and "descriptors are computed by dlib" in caplog.text
    with pytest.raises(LookalikeError, match="more data after the network"):
        descriptor_backend(models_dir, "numpy")
    image = read_image(DEMO / "images" / "ami-bera.jpg", ImageConfig()).pixels
    face = models.detect(image, 1)[0]
    np.testing.assert_array_equal(FaceModels(models_dir).descriptor(image, face),
                                  models.descriptor(image, face, backend="dlib"))


def test_a_huge_model_file_is_refused_before_it_is_read(tmp_path):
    models_dir = models_dir_with(tmp_path / "models", b"")
    os.truncate(Path(models_dir) / DESCRIPTOR_FILE, MAX_DESCRIPTOR_MODEL_BYTES + 1)  # sparse: no disk used
    with pytest.raises(LookalikeError, match=f"has {MAX_DESCRIPTOR_MODEL_BYTES + 1} bytes"):
        descriptor_backend(models_dir, "numpy")


def test_a_failed_guard_is_remembered_and_dlib_is_used(descriptor_cache, caplog):
    numpy_network()
    record_path = next(descriptor_cache.glob("*.guard.json"))
    passed = record_path.read_text()
    record = json.loads(passed)
    assert record["max_l2"] < EQUIVALENCE_TOLERANCE and record["chips"] == len(GUARD_FACES)
    try:
        record_path.write_text(json.dumps(record | {"max_l2": 1e-3}))  # as if the guard had measured that
        descriptor_backend.cache_clear()
        with caplog.at_level(logging.WARNING):
            assert descriptor_backend("", "auto") == "dlib"
        assert "differ from dlib's by up to 1.0e-03" in caplog.text
        with pytest.raises(LookalikeError, match="differ from dlib's by up to 1.0e-03"):
            descriptor_backend("", "numpy")
    finally:
        record_path.write_text(passed)
        descriptor_backend.cache_clear()
    assert descriptor_backend("", "auto") == "numpy"


def test_a_damaged_conversion_is_made_again(descriptor_cache, caplog):
    numpy_network()
    converted = next(descriptor_cache.glob("*.npz"))
    converted.write_bytes(b"PK\3\4 not a zip")
    with caplog.at_level(logging.WARNING):
        network = numpy_network()
    assert "converting" in caplog.text and "again" in caplog.text
    chips = guard_chips()[:1]
    np.testing.assert_array_equal(network.descriptors(chips), numpy_network().descriptors(chips))


def test_jittered_copies_depend_only_on_the_chip():
    first, second = guard_chips()[:2]
    copies = jittered_chips(first, 6)
    assert copies.shape == (6, 150, 150, 3) and copies.dtype == np.uint8
    np.testing.assert_array_equal(copies, jittered_chips(first.copy(), 6))
    assert len({copy.tobytes() for copy in copies}) == 6
    assert not np.array_equal(jittered_chips(second, 6)[0], second)


def test_jittered_descriptors_are_reproducible_across_processes_models_and_backends(models):
    image = read_image(DEMO / "images" / "bob-corker.jpg", ImageConfig()).pixels
    face = models.detect(image, 1)[0]
    numpy_jittered = models.descriptor(image, face, 5, "numpy")
    np.testing.assert_array_equal(numpy_jittered, FaceModels().descriptor(image, face, 5, "numpy"))
    assert np.linalg.norm(numpy_jittered - models.descriptor(image, face, 5, "dlib")) < EQUIVALENCE_TOLERANCE
    assert np.linalg.norm(numpy_jittered - models.descriptor(image, face, 1, "numpy")) > 0.01


def test_a_batch_gives_the_same_bits_again_and_the_same_descriptors_in_other_batches():
    """The same batch gives the same bits; chips batched otherwise may differ in their last bits, on some BLAS
    kernels, never by EQUIVALENCE_TOLERANCE (see ResNet.descriptors)."""
    network = numpy_network()
    chips = np.concatenate([jittered_chips(chip, 2) for chip in guard_chips()])
    batch = network.descriptors(chips)
    np.testing.assert_array_equal(batch, network.descriptors(chips))
    for size in (1, 3):
        batched_otherwise = np.concatenate([network.descriptors(chips[i:i + size]) for i in range(0, len(chips), size)])
        assert np.linalg.norm(batch - batched_otherwise, axis=1).max() < EQUIVALENCE_TOLERANCE, size


def real_faces() -> list[Path]:
    people = sorted(p for p in shared_path("faces", "people").glob("*/*") if p.suffix in (".jpg", ".png"))
    congress = sorted(shared_path("congress", "images").glob("*.jpg"))[:50]
    return people + congress


@pytest.mark.slow
def test_numpy_descriptors_equal_dlibs_on_real_faces(models, record_property):
    """Every face dlib's detector finds in ../shared/faces/people and in 50 congress portraits: dlib's own
    descriptor of the photo (jitters 0 and 1) against numpy's of the chip; dlib's of the chip is the same."""
    chips, by_dlib, by_dlib_once, of_chip = [], [], [], []
    for path in real_faces():
        image = read_image(path, ImageConfig()).pixels
        for face in models.detect(image, 1, max_size=1024):
            shape = models.dlib_shape(face)
            by_dlib.append(models.encoder.compute_face_descriptor(image, shape, 0))
            by_dlib_once.append(models.encoder.compute_face_descriptor(image, shape, 1))
            chips.append(models.chip(image, face))
            of_chip.append(dlib_descriptors(models.encoder, chips[-1][None])[0])
    chips = np.stack(chips)
    numpy = np.concatenate([models.network.descriptors(chips[i:i + 8]) for i in range(0, len(chips), 8)])
    differences = {name: np.linalg.norm(numpy - np.asarray(values, dtype=np.float32), axis=1)
                   for name, values in (("jitters 0", by_dlib), ("jitters 1", by_dlib_once))}
    worst = {name: float(values.max()) for name, values in differences.items()}
    record_property("faces", len(chips))
    record_property("max_l2", worst)
    print(f"\n{len(chips)} faces: largest L2 difference numpy - dlib {worst}")
    assert len(chips) >= 100
    assert max(worst.values()) < EQUIVALENCE_TOLERANCE, worst
    np.testing.assert_array_equal(np.asarray(of_chip), np.asarray(by_dlib, dtype=np.float32))
    in_another_batch = np.linalg.norm(numpy[:3] - models.network.descriptors(chips[:3]), axis=1)
    assert in_another_batch.max() < EQUIVALENCE_TOLERANCE, in_another_batch


@pytest.mark.slow
def test_the_jitter_is_dlibs_jitter(models):
    """Our jittered copies (seeded) against dlib's own (its generator): the mean of 10 lands as near dlib's as
    dlib's two draws land from each other, and nearer than the descriptor without jitter."""
    encoder = FaceModels().encoder  # a fresh dlib generator
    ours_to_dlib, dlib_to_dlib, plain_to_dlib = [], [], []
    for alias in ["aaron-schock", "bob-corker", "carolyn-mccarthy", "chris-collins", "don-young", "frank-r-wolf"]:
        image = read_image(DEMO / "images" / f"{alias}.jpg", ImageConfig()).pixels
        face = models.detect(image, 1)[0]
        shape = models.dlib_shape(face)
        first, second = (np.asarray(encoder.compute_face_descriptor(image, shape, 10)) for _ in range(2))
        ours = models.descriptor(image, face, 10, "dlib")
        ours_to_dlib.append(np.linalg.norm(ours - first))
        dlib_to_dlib.append(np.linalg.norm(second - first))
        plain_to_dlib.append(np.linalg.norm(models.descriptor(image, face, 1, "dlib") - first))
    assert np.mean(ours_to_dlib) < 1.5 * np.mean(dlib_to_dlib), (ours_to_dlib, dlib_to_dlib)
    assert np.mean(ours_to_dlib) < 0.75 * np.mean(plain_to_dlib), (ours_to_dlib, plain_to_dlib)


def query_photos() -> dict[str, np.ndarray]:
    photos = {alias: np.asarray(Image.open(DEMO / "images" / f"{alias}.jpg").convert("RGB").transpose(
        Image.Transpose.FLIP_LEFT_RIGHT)) for alias in ["aaron-schock", "ami-bera", "barack-obama", "bob-corker"]}
    photos["selfie"] = np.asarray(Image.open(DEMO / "selfie.jpg").convert("RGB"))
    photos["group"] = np.asarray(Image.open(FIXTURES / "astronaut_eileen_collins.png").convert("RGB"))
    return photos


@pytest.mark.slow
def test_galleries_of_either_backend_answer_alike(built, demo_gallery, tmp_path):
    """The demo gallery built with dlib and with numpy: the same descriptors within the tolerance, and
    queries by either backend against either gallery give the same people."""
    configs = {backend: load_config(None, FAST | {"descriptor_backend": backend}) for backend in ("dlib", "numpy")}
    galleries = {"numpy": built, "dlib": tmp_path / "dlib"}
    build(demo_gallery, galleries["dlib"], DEMO / "catalog.json", configs["dlib"])
    rows = {backend: {row["path"]: row for row in pq.read_table(data / "embeddings.parquet").to_pylist()}
            for backend, data in galleries.items()}
    assert rows["dlib"].keys() == rows["numpy"].keys()
    for backend in galleries:
        assert all(row["embed_key"].endswith(f";descriptor={backend}") for row in rows[backend].values())
    gaps = [np.linalg.norm(np.subtract(rows["dlib"][path]["embedding"], rows["numpy"][path]["embedding"]))
            for path in rows["dlib"]]
    assert max(gaps) < EQUIVALENCE_TOLERANCE

    answers = {}
    for gallery, data in galleries.items():
        for backend, config in configs.items():
            engine = Lookalike(data, config)
            answers[gallery, backend] = {name: [(face.matches[0].alias, face.matches[0].distance)
                                                for face in engine.query_image(photo)]
                                         for name, photo in query_photos().items()}
    reference = answers["dlib", "dlib"]
    assert [alias for alias, _ in reference["barack-obama"]] == ["barack-obama"]
    for combination, found in answers.items():
        for name, faces in found.items():
            assert [alias for alias, _ in faces] == [alias for alias, _ in reference[name]], (combination, name)
            assert np.allclose([d for _, d in faces], [d for _, d in reference[name]], atol=2 * EQUIVALENCE_TOLERANCE)

    again = embed_faces(galleries["dlib"], configs["numpy"])  # descriptors of either backend serve the other
    assert again.computed == 0 and again.faces == len(rows["dlib"])

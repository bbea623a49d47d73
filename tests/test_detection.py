"""The detection chain (HOG, HOG on an enlarged copy, dlib's CNN) on real photos of ../shared/faces degraded here:
it finds faces a single HOG pass misses, answers them right, and still finds no face where there is none."""

import dataclasses
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike_cli import build
from lookalike_cli.config import ImageConfig, load_config
from lookalike_cli.evaluation.degrade import degrade, parse_degradation
from lookalike_cli.errors import LookalikeError
from lookalike_cli.stages.filter import filter_images
from lookalike_cli.imaging.decode import read_image
from lookalike_cli.face.model_files import CNN_DETECTOR_FILE, DESCRIPTOR_FILE, LANDMARKS_FILE, models_folder
from lookalike_cli.face.models import FaceModels
from lookalike_cli.answers.outcomes import photo_status
from lookalike_cli.answers.query import Lookalike
from lookalike_cli.answers.recognizer import fallback_workers

from conftest import FAST, shared_path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from bench_fallback import landscape  # noqa: E402  (the drawn landscape the benchmark counts false faces on)

pytestmark = pytest.mark.slow  # builds a gallery of its own

SMALL = "shrink:160,jpeg:35"  # a thumbnail forwarded from a chat
DIM = "dark:0.15"  # a photo taken in a dark room
DEGRADATIONS = (SMALL, "shrink:320,blur:3", "rotate:20", DIM)
# Measured on ../shared/faces/people (55 photos) with the default settings: HOG alone misses a face in 19 of the
# degraded photos (5 small, 10 blurred, 1 turned, 3 dim), the chain finds all 19 (2 by HOG on the dim photos with
# their tones stretched, 5 by the enlarged HOG look, 12 by the CNN), and 15 of them are answered with the right
# person among these people and congress portraits (Obama's and Biden's faces, 8 px between the eyes at 160 px,
# are not).
MISSED = 19
FOUND = 19
RIGHT = 15
DIM_MISSED = 3
DISTRACTORS = 20  # congress portraits besides the people
GALLERY = {"min_image_size": 64, "min_eye_distance": 10.0}  # the people's photos include 150x150 crops
POLICY = ImageConfig()


def with_fallback(config, fallback: bool, **detect):
    return dataclasses.replace(config, detect=dataclasses.replace(config.detect, fallback=fallback, **detect))


def people_photos() -> list:
    return sorted(path for person in sorted(shared_path("faces", "people").iterdir()) for path in person.iterdir())


def degraded(path, spec: str) -> np.ndarray:
    return degrade(read_image(path, POLICY).pixels, parse_degradation(spec))


@pytest.fixture(scope="module")
def missed():
    """(photo, degradation, image) of every degraded photo of the people in which HOG alone finds no face."""
    models = FaceModels()
    detect = load_config(None, FAST).detect
    found = []
    for spec in DEGRADATIONS:
        for path in people_photos():
            image = degraded(path, spec)
            if not models.find_faces(image, detect.upsample, detect.min_detection_score, detect.detect_max_size):
                found.append((path, spec, image))
    return found


@pytest.fixture(scope="module")
def chain_gallery(missed, tmp_path_factory):
    """A gallery of the people's photos HOG finds a face in however degraded, and congress distractors."""
    images = tmp_path_factory.mktemp("chain") / "images"
    held_out = {path for path, _, _ in missed}
    for path in people_photos():
        if path not in held_out:
            (images / path.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, images / path.parent.name)
    portraits = [p for p in sorted(shared_path("congress", "images").glob("*.jpg"))
                 if p.stem not in ("barack-obama", "joseph-r-biden-jr")]
    for portrait in portraits[:DISTRACTORS]:
        shutil.copy(portrait, images / portrait.name)
    config = load_config(None, FAST | GALLERY)
    assert config.detect.fallback and not config.filter.gallery_fallback
    build(images, images.parent / "data", None, config)
    return images.parent / "data"


@pytest.fixture(scope="module")
def engines(chain_gallery):
    """The gallery's engine with the chain (the default) and without it (HOG alone), sharing the models."""
    config = load_config(None, FAST | GALLERY)
    chain = Lookalike(chain_gallery, config)
    return chain, Lookalike(chain_gallery, with_fallback(config, False), chain.models)


def test_the_chain_finds_faces_hog_misses_and_answers_them_right(missed, engines):
    chain, hog_alone = engines
    assert len(missed) >= MISSED
    found, right = [], []
    for path, spec, image in missed:
        assert hog_alone.query_image(image) == [], (path, spec)
        faces = chain.query_image(image)
        if faces:
            assert len(faces) == 1, (path, spec, faces)
            assert faces[0].detector in ("hog-stretched", "hog-upsampled", "cnn")
            found.append((path, spec, faces[0].detector))
            if faces[0].matches[0].alias == path.parent.name:
                right.append((path, spec))
    assert len(found) >= FOUND, found
    assert len(right) >= RIGHT, right
    assert {spec for _, spec, _ in found} == set(DEGRADATIONS)
    assert {detector for _, _, detector in found} == {"hog-stretched", "hog-upsampled", "cnn"}


def test_dim_photos_are_looked_at_with_their_tones_stretched(missed, engines, chain_gallery):
    chain, _ = engines
    dim = [(path, image) for path, spec, image in missed if spec == DIM]
    assert len(dim) >= DIM_MISSED
    found = {path: chain.query_image(image) for path, image in dim}
    assert all(found.values()), found
    assert "hog-stretched" in {faces[0].detector for faces in found.values()}
    assert [path for path, faces in found.items() if faces[0].matches[0].alias != path.parent.name] == []
    unstretched = Lookalike(chain_gallery, with_fallback(chain.config, True, fallback_stretch_span=0), chain.models)
    assert sum(bool(unstretched.query_image(image)) for _, image in dim) < len(dim)


def test_a_photo_without_a_face_still_has_no_face(engines):
    chain, _ = engines
    coffee = read_image(shared_path("faces", "public_domain", "no_face_coffee_cc0.png"), POLICY).pixels
    noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    for name, image in [("coffee", coffee), ("noise", noise), ("landscape", landscape())]:
        for spec in ("", *DEGRADATIONS):
            shown = degrade(image, parse_degradation(spec)) if spec else image
            assert chain.query_image(shown) == [], (name, spec)
    for height, width in [(2, 20_000), (20_000, 3), (1, 1)]:  # dlib's CNN fails on a copy a few pixels thin
        thin = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        assert chain.query_image(thin) == [], (height, width)
    assert chain.models.cnn_loaded  # every look looked


def test_fallback_faces_must_pass_the_score_eye_distance_and_tilt_checks(missed, engines, chain_gallery):
    chain, _ = engines
    by_detector = {}
    for path, spec, image in missed:
        faces = chain.query_image(image)
        if faces:
            by_detector.setdefault(faces[0].detector, image)
    config = chain.config
    for guard in ({"fallback_min_eye_distance": 1000.0}, {"fallback_max_tilt": 0.0}, {"cnn_min_score": 10.0}):
        strict = Lookalike(chain_gallery, with_fallback(config, True, **guard), chain.models)
        kept = {detector: strict.query_image(image) for detector, image in by_detector.items()}
        if "cnn_min_score" in guard:
            assert kept["cnn"] == [] and kept["hog-upsampled"] and kept["hog-stretched"], guard
        else:
            assert kept == {"cnn": [], "hog-upsampled": [], "hog-stretched": []}, guard
        ordinary = strict.query_file(shared_path("faces", "people", "barack_obama", "1.jpg"))
        assert [face.detector for face in ordinary.faces] == ["hog-coarse"]  # the first look is not checked


def test_the_cnn_detector_loads_only_when_a_photo_needs_it(missed):
    models = FaceModels()
    detect = load_config(None, FAST).detect
    ordinary = read_image(shared_path("faces", "people", "barack_obama", "1.jpg"), POLICY).pixels
    assert len(models.find_faces(ordinary, detect.upsample, detect.min_detection_score, detect.detect_max_size)) == 1
    small = next(image for path, spec, image in missed if models.upsampled_faces(image, detect))
    assert [face.detector for face in models.fallback_faces(small, detect)] == ["hog-upsampled"]
    assert not models.cnn_loaded
    blurred = next(image for path, spec, image in missed if not models.upsampled_faces(image, detect)
                   and models.cnn_faces(image, detect))
    loaded = models.cnn_detector
    assert [face.detector for face in models.fallback_faces(blurred, detect)] == ["cnn"]
    assert models.cnn_detector is loaded


def test_a_models_folder_without_the_cnn_model_is_said_at_once(tmp_path, built):
    folder = models_folder()
    for name in (LANDMARKS_FILE, DESCRIPTOR_FILE):
        (tmp_path / name).symlink_to(folder / name)
    config = load_config(None, FAST | {"models_dir": str(tmp_path)})
    with pytest.raises(LookalikeError, match=f"models folder {tmp_path} lacks {CNN_DETECTOR_FILE}"):
        Lookalike(built, config)
    assert Lookalike(built, with_fallback(config, False)).people == 48


def test_filter_uses_the_chain_only_when_asked(missed, tmp_path):
    images = tmp_path / "images"
    (images / "someone").mkdir(parents=True)
    path, spec, image = next((path, spec, image) for path, spec, image in missed if spec != SMALL)
    Image.fromarray(image).save(images / "someone" / "degraded.png")
    summaries = {}
    for fallback in (False, True):
        config = load_config(None, FAST | GALLERY | {"workers": 1, "gallery_fallback": fallback})
        summaries[fallback] = filter_images(images, tmp_path / "data", config=config)
    assert summaries[False].reasons == {"no_face": 1} and summaries[False].accepted == 0, (path, spec)
    assert summaries[True].accepted == 1 and summaries[True].detected == 1, (path, spec)  # another cache key


def test_the_fallback_looks_only_when_its_gate_is_free(missed, engines, chain_gallery):
    """In the recognition pool a semaphore keeps the fallback off one worker: taken, the photo is no face and
    says the fallback was busy; free, the fallback finds the face. HOG's faces never wait for the gate."""
    chain, _ = engines
    gate = threading.BoundedSemaphore(1)
    gated = Lookalike(chain_gallery, chain.config, chain.models, fallback_gate=gate)
    _, _, needs_fallback = missed[0]
    ordinary = read_image(next(path for path in people_photos() if path not in {p for p, _, _ in missed}),
                          POLICY).pixels
    assert gate.acquire(False)
    busy = gated.answer_image(needs_fallback, "small.jpg")
    assert busy.faces == [] and busy.fallback_busy and busy.to_json()["fallback_busy"] is True
    assert photo_status(busy) == "fallback_busy"
    assert [face.detector for face in gated.answer_image(ordinary).faces] in (["hog-coarse"], ["hog"])
    gate.release()
    free = gated.answer_image(needs_fallback, "small.jpg")
    assert free.faces and not free.fallback_busy and "fallback_busy" not in free.to_json()
    assert gate.acquire(False)  # given back after the look
    gate.release()


@pytest.mark.parametrize("workers, looking", [(1, 1), (2, 1), (3, 2), (8, 7)])
def test_all_workers_but_one_may_run_the_fallback(workers, looking):
    assert fallback_workers(workers) == looking

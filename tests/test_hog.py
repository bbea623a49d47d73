"""HOG's first look, coarse to fine, on real photos: the pyramid made here is dlib's own, a face found from a
higher level of it has the full run's box and score, and the coarse look settles portraits and selfies with the
fine look's faces while group photos with small faces still get the fine look."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from lookalike_cli.config import DetectConfig, ImageConfig
from lookalike_cli.face.hog import HogPyramid, first_level_for, smallest_face
from lookalike_cli.face.models import FaceModels
from lookalike_cli.imaging.decode import read_image
from lookalike_cli.imaging.geometry import shrink_factor
from lookalike_cli.imaging.tones import scaled_image

from conftest import DEMO, shared_path

SETTINGS = DetectConfig()


@pytest.fixture(scope="module")
def models() -> FaceModels:
    return FaceModels()


def photo(path, longer: int = 0) -> np.ndarray:
    """A photo as an RGB array, resized to ``longer`` pixels on its longer side (bilinear) when given."""
    image = read_image(path, ImageConfig()).pixels
    if longer:
        image = scaled_image(image, longer / max(image.shape[:2]))
    return image


def detection_copy(image: np.ndarray) -> np.ndarray:
    """The copy HOG's first look searches (detect_max_size)."""
    factor = shrink_factor(image.shape[1], image.shape[0], SETTINGS.detect_max_size)
    return scaled_image(image, factor) if factor != 1 else image


def full_run(models: FaceModels, image: np.ndarray, upsample: int) -> list[tuple]:
    rects, scores, _ = models.detector.run(image, upsample, 0.0)
    return sorted(((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in zip(rects, scores))


def portraits() -> list:
    return [DEMO / "selfie.jpg"] + sorted((DEMO / "images").glob("*.jpg"))[:6]


def groups() -> list:
    return [shared_path("faces", "hard", name) for name in
            ("group_bbt_cast_1.jpg", "group_bbt_cast_4.jpg", "group_obama_biden_stage.jpg")]


@pytest.mark.parametrize("upsample", [0, 1, 2])
def test_the_pyramid_is_dlibs_own(models, upsample):
    for path in portraits()[:3]:
        image = photo(path)
        found = HogPyramid(models._dlib, models.detector, image, upsample).detect(0)
        assert found is not None
        assert sorted((box, score) for box, score, _ in found) == full_run(models, image, upsample), path


def test_a_face_found_above_the_first_level_is_the_full_runs(models):
    """From every first level up to 9: each face found on a higher level is one of the full run's, box and
    score; a face found on the first level itself may not be (a smaller detection of it can win the full run)."""
    compared = moved = 0
    for path, longer in [(path, 1280) for path in portraits()[:3]] + [(path, 0) for path in groups()]:
        copy = detection_copy(photo(path, longer))
        full = full_run(models, copy, 1)
        pyramid = HogPyramid(models._dlib, models.detector, copy, 1)
        for first in range(1, 10):
            for box, score, level in pyramid.detect(first) or ():
                if level > first:
                    assert (box, score) in full, (path, first, box)
                    compared += 1
                elif (box, score) not in full:
                    moved += 1
    assert compared > 40 and moved > 0  # both cases were met


def test_levels_match_face_sizes():
    assert smallest_face(0, 1) == 36.5 and first_level_for(36.5, 1) == 0 and first_level_for(10, 1) == 0
    for size in (50, 120, 400):
        level = first_level_for(size, 1)
        assert smallest_face(level, 1) <= size < smallest_face(level + 1, 1)


def look(models, image, **settings):
    return models.first_look(image, dataclasses.replace(SETTINGS, **settings))


def test_the_coarse_look_settles_portraits_with_the_fine_looks_faces(models):
    for path in portraits():
        for longer in (0, 1280):
            image = photo(path, longer)
            boxes, settled_by = look(models, image)
            fine, fine_look = look(models, image, coarse_face_share=0.0)
            assert settled_by == "hog-coarse" and fine_look == "hog", (path, longer)
            assert boxes == fine == models.find_faces(image, 1, 0.0, SETTINGS.detect_max_size)


def test_group_photos_with_small_faces_get_the_fine_look(models):
    for path in groups():
        image = photo(path)
        boxes, settled_by = look(models, image)
        assert settled_by == "hog" and len(boxes) >= 3, path
        assert boxes == models.find_faces(image, 1, 0.0, SETTINGS.detect_max_size)


def test_a_large_face_beside_small_ones_is_settled_alone(models):
    """The rule's price, on a photo built to show it: a face larger than the coarse look's smallest settles the
    photo, and faces smaller than that beside it are not looked for (the fine look finds them)."""
    portrait = Image.open(DEMO / "selfie.jpg").convert("RGB")
    canvas = Image.new("RGB", (1280, 960), (128, 128, 128))
    canvas.paste(portrait.resize((450, 550)), (40, 200))
    small = [Image.open(path).convert("RGB").resize((90, 110)) for path in portraits()[1:7]]
    for number, face in enumerate(small):
        canvas.paste(face, (600 + 110 * (number % 3), 300 + 140 * (number // 3)))
    image = np.asarray(canvas)
    boxes, settled_by = look(models, image)
    fine, _ = look(models, image, coarse_face_share=0.0)
    assert settled_by == "hog-coarse" and len(boxes) == 1 and boxes[0] == fine[0]
    assert len(fine) == 1 + len(small)
    assert max(box[2] - box[0] for box, _ in fine[1:]) < SETTINGS.coarse_face_share * 960


def test_a_photo_too_small_for_the_coarse_look_gets_the_fine_one(models):
    image = photo(DEMO / "selfie.jpg", 120)
    assert look(models, image) == look(models, image, coarse_face_share=0.0)
    assert look(models, image)[1] == "hog"

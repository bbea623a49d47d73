"""Real photos from ../shared/faces (not in the repo): other photos of a gallery person find that person."""

import shutil

import pytest

from lookalike_cli import build
from lookalike_cli.config import load_config
from lookalike_cli.answers.query import Lookalike

from conftest import FAST, shared_path

pytestmark = pytest.mark.slow  # every test here builds a gallery of its own




def test_other_photos_of_a_gallery_person_find_that_person(built, fast_config):
    photos = sorted(shared_path("faces", "people", "barack_obama").iterdir())
    engine = Lookalike(built, fast_config)
    for photo in photos:
        result = engine.query_file(photo)
        assert len(result.faces) == 1, photo
        assert result.faces[0].matches[0].alias == "barack-obama", (photo, result.faces[0].matches[0])


def test_a_labelled_gallery_identifies_held_out_photos(tmp_path):
    """One photo per person in the gallery, every other photo of theirs as a probe."""
    people = shared_path("faces", "people")
    gallery = tmp_path / "images"
    probes = []
    for person in sorted(people.iterdir()):
        photos = sorted(person.iterdir())
        if len(photos) < 2:
            continue
        (gallery / person.name).mkdir(parents=True)
        shutil.copy(photos[0], gallery / person.name)
        probes += [(person.name, photo) for photo in photos[1:]]
    config = load_config(None, FAST | {"min_image_size": 64, "min_eye_distance": 10.0})
    build(gallery, tmp_path / "data", None, config)
    engine = Lookalike(tmp_path / "data", config)
    correct = sum(engine.query_file(photo).faces[0].matches[0].alias == person for person, photo in probes)
    assert correct / len(probes) >= 0.9, f"{correct} of {len(probes)}"

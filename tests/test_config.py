

import pytest

from lookalike_cli.config import SECTIONS, Config, config_from_dict, load_config, section_fields
from lookalike_cli.errors import LookalikeError

from conftest import REPO


def test_default_toml_is_the_built_in_defaults():
    assert load_config(REPO / "configs" / "default.toml") == Config()


def test_every_key_name_is_unique_so_options_map_to_one_key():
    names = [f.name for section in SECTIONS for f in section_fields(section)]
    assert len(names) == len(set(names))


def test_overrides_beat_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[filter]\nmax_tilt = 10\n[embed]\nnum_jitters = 3\n")
    config = load_config(path, {"max_tilt": 15.0, "top_k": None})
    assert config.filter.max_tilt == 15.0
    assert config.embed.num_jitters == 3
    assert config.query.top_k == 1


@pytest.mark.parametrize("data, message", [
    ({"filter": {"max_tilte": 1}}, "unknown key filter.max_tilte"),
    ({"filters": {}}, "unknown section [filters]"),
    ({"embed": {"num_jitters": -1}}, "embed.num_jitters must be at least 1"),
    ({"filter": {"max_tilt": 95}}, "filter.max_tilt must be at most 90"),
    ({"embed": {"num_jitters": "ten"}}, "embed.num_jitters must be int"),
    ({"embed": {"num_jitters": True}}, "embed.num_jitters must be int"),
    ({"index": {"backend": "faiss"}}, "index.backend must be one of auto, exact, hnsw"),
    ({"image": {"image_formats": "JPEG EPS"}}, "image.image_formats must list some of JPEG, PNG, WEBP"),
    ({"image": {"image_formats": " "}}, "image.image_formats must list some of"),
    ({"detect": {"min_detection_score": float("nan")}}, "detect.min_detection_score must be a finite number"),
    ({"filter": {"min_eye_distance": float("inf")}}, "filter.min_eye_distance must be a finite number"),
    ({"serve": {"request_timeout": 3e6}}, "serve.request_timeout must be at most 86400"),
    ({"image": {"decode_timeout": 1e9}}, "image.decode_timeout must be at most 86400"),
    ({"image": {"max_file_bytes": 10**30}}, "image.max_file_bytes must be between 1 and 1000000000000000, got"),
    ({"runtime": {"workers": 10**16}}, "runtime.workers must be between 0 and 256, got"),  # its own range
    ({"filter": {"min_eye_distance": 10**400}}, "filter.min_eye_distance must be between"),
])
def test_bad_values_name_the_key(data, message):
    with pytest.raises(LookalikeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict(data)


def test_a_broken_toml_file_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[filter\nmax_tilt = ")
    with pytest.raises(LookalikeError, match="cannot be read"):
        load_config(path)
    with pytest.raises(LookalikeError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_ints_are_accepted_for_floats():
    assert config_from_dict({"filter": {"max_tilt": 10}}).filter.max_tilt == 10.0

import json

import pytest

from lookalike_cli.io.catalog import alias_problem, load_catalog
from lookalike_cli.errors import LookalikeError


def write(tmp_path, data) -> str:
    path = tmp_path / "catalog.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_seed_format_with_extra_keys_kept(tmp_path):
    rows = load_catalog(write(tmp_path, [
        {"name": "Ann A", "alias": "ann-a", "role": "actor", "n_movies": 3, "imdb": "nm1"},
        {"alias": "bob"},
    ]))
    assert rows[0] == {"alias": "ann-a", "name": "Ann A", "role": "actor", "n_movies": 3, "extra": '{"imdb": "nm1"}'}
    assert rows[1]["name"] == "bob" and rows[1]["role"] is None


@pytest.mark.parametrize("data, message", [
    ("not json", "not valid JSON"),
    ({"name": "x"}, "must be a JSON list"),
    ([{"name": "x"}], "entry 0 has no alias"),
    (["x"], "entry 0 must be an object"),
    ([{"alias": "a"}, {"alias": "a"}], "entry 1: alias 'a' is already used by entry 0"),
    ([{"alias": "../etc"}], "starts with a dot"),
    ([{"alias": "a/b"}], "contains '/'"),
    ([{"alias": "a\\b"}], "contains"),
    ([{"alias": "a\0b"}], "contains"),
    ([{"alias": ""}], "is empty"),
    ([{"alias": 5}], "must be a string"),
    ([{"alias": "a", "n_movies": "3"}], "n_movies must be int"),
    ([{"alias": "a", "name": ["x"]}], "name must be str"),
    ([{"alias": "a", "names": ["Анна"]}], "entry 0: names must be an object of language codes and names, got list"),
    ([{"alias": "a", "names": {"russian": "Анна"}}], "names has 'russian', which is not a language code"),
    ([{"alias": "a", "names": {"../ru": "Анна"}}], "not a language code such as ru, de or pt-BR"),
    ([{"alias": "a", "names": {"ru": 5}}], "names ru: the name must be a non-empty string, got '5'"),
    ([{"alias": "a", "names": {"ru": " "}}], "the name must be a non-empty string"),
    ([{"alias": "a", "names": {"ru": "А" * 201}}], "is longer than 200 characters"),
    ([{"alias": "a", "names": {"ru": "Анна\nЛи"}}], "holds a control character"),
    ([{"alias": "a", "names": {f"a{chr(97 + i // 26)}{chr(97 + i % 26)}": "A" for i in range(51)}}],
     "has more than 50 languages"),
])
def test_bad_catalogs_name_the_entry(tmp_path, data, message):
    with pytest.raises(LookalikeError, match=message.replace("\\", "\\\\").replace(".", r"\.")):
        load_catalog(write(tmp_path, data))


def test_names_per_language_are_kept_for_the_answers(tmp_path):
    from lookalike_cli.io.catalog import names_by_language

    rows = load_catalog(write(tmp_path, [
        {"name": "Ann Lee", "alias": "ann", "names": {"ru": "Энн Ли", "de": "Ann Lee", "pt-BR": "Ana Li"}},
        {"alias": "bob"}]))
    assert names_by_language(rows[0]["extra"]) == {"ru": "Энн Ли", "de": "Ann Lee", "pt-br": "Ana Li"}
    assert names_by_language(rows[1]["extra"]) == {}


def test_missing_catalog(tmp_path):
    with pytest.raises(LookalikeError, match="does not exist"):
        load_catalog(tmp_path / "nope.json")


def test_alias_problem_accepts_ordinary_aliases():
    assert alias_problem("aaron-schock") is None
    assert alias_problem("Zoë Saldaña") is None


def test_a_large_catalog_loads_and_adds_the_photos_people(tmp_path, demo_gallery):
    """Every entry is kept in order, and the people found only in the images folder are added by alias."""
    from lookalike_cli.stages.filter import people_rows
    from lookalike_cli.imaging.gallery import list_gallery

    entries = [{"name": f"Person {i}", "alias": f"person-{i}", "role": "actor", "n_movies": i % 50}
               for i in range(2_000)]
    rows = load_catalog(write(tmp_path, entries))
    assert len(rows) == 2_000 and rows[-1]["alias"] == "person-1999"
    people = people_rows(list_gallery(demo_gallery), write(tmp_path, entries))
    assert len(people) == 2_000 + 48  # the demo photos' aliases are not in this catalog: named by alias

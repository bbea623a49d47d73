"""The languages people are answered in (lookalike_cli/language.py): the catalogs complete for every message of the
English source, codes from strangers bounded and matched, numbers written per locale."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from lookalike_cli import language
from lookalike_cli.language import (
    LANGUAGES,
    LOCALES,
    SOURCE_LANGUAGE,
    accepted_language,
    catalog_path,
    decimal,
    known_language,
    language_name,
    percent,
    translate,
)

from conftest import REPO

FIELD = re.compile(r"\{(\w*)[^{}]*\}")


def source_messages() -> set[str]:
    """Every message the code marks (N_), extracted now as `make messages` does (babel.cfg)."""
    with open(REPO / "babel.cfg") as config:
        from babel.messages.frontend import parse_mapping_cfg

        method_map, options_map = parse_mapping_cfg(config)
    return {message for _, _, message, *_ in extract_from_dir(REPO / "lookalike_cli", method_map, options_map,
                                                              keywords={"N_": None})}


def untranslated(path: Path, messages: set[str]) -> list[str]:
    """The messages of ``messages`` that the catalog at ``path`` does not translate: missing, empty, fuzzy, or
    with other {fields} than the English."""
    with path.open("rb") as file:
        catalog = read_po(file)
    problems = []
    for message in sorted(messages):
        entry = catalog.get(message)
        if entry is None or not entry.string or entry.fuzzy:
            problems.append(message)
        elif sorted(FIELD.findall(entry.string)) != sorted(FIELD.findall(message)):
            problems.append(f"{message} (its fields differ)")
    return problems


def test_the_template_holds_every_message_of_the_source():
    with (LOCALES / "messages.pot").open("rb") as file:
        template = {message.id for message in read_po(file) if message.id}
    assert template == source_messages(), "run `make messages` and translate what it adds"


@pytest.mark.parametrize("code", [code for code in LANGUAGES if code != SOURCE_LANGUAGE])
def test_every_catalog_translates_every_message(code):
    assert untranslated(catalog_path(code), source_messages()) == []


def test_a_message_missing_from_a_catalog_fails_the_check(tmp_path):
    with catalog_path("ru").open("rb") as file:
        catalog = read_po(file)
    dropped = "Take a selfie"
    catalog.delete(dropped)
    catalog["Choose a photo"].flags.add("fuzzy")
    catalog["Face {number}"].string = "Лицо"  # its field lost
    path = tmp_path / "messages.po"
    with path.open("wb") as file:
        write_po(file, catalog)
    assert untranslated(path, source_messages()) == ["Choose a photo", "Face {number} (its fields differ)", dropped]


def test_russian_and_german_are_found_with_english_the_source():
    assert LANGUAGES[0] == SOURCE_LANGUAGE == "en" and {"ru", "de"} <= set(LANGUAGES)
    assert [language_name(code) for code in ("en", "ru", "de")] == ["English", "Русский", "Deutsch"]
    assert translate("ru", "Who do you look like?") == "Кто твой двойник?"
    assert translate("de", "Face {number}: ", number=3) == "Gesicht 3: "
    assert translate("en", "Face {number}: ", number=3) == "Face 3: "
    assert translate("de", "a message no catalog has") == "a message no catalog has"  # said in English


def test_a_language_is_added_by_its_catalog_alone(tmp_path, monkeypatch):
    shutil.copytree(LOCALES, tmp_path / "locales")
    french = tmp_path / "locales" / "fr" / "LC_MESSAGES"
    french.mkdir(parents=True)
    shutil.copy(catalog_path("de"), french / "messages.po")
    monkeypatch.setattr(language, "LOCALES", tmp_path / "locales")
    assert language.catalog_languages() == ("en", "de", "fr", "ru")


@pytest.mark.parametrize(("code", "expected"), [
    ("ru", "ru"), ("RU", "ru"), ("de-DE", "de"), ("de_AT", "de"), (" en-GB ", "en"), ("fr", None), ("", None),
    (None, None), (42, None), ("ru" + "-x" * 40, None), ("../ru", None), ("ru;q=1", None), ("р", None),
    ("\ud800", None), ("*", None)])
def test_a_strangers_language_code_is_bounded_and_matched(code, expected):
    assert known_language(code) == expected


@pytest.mark.parametrize(("header", "expected"), [
    ("ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7", "ru"), ("fr-FR, de;q=0.5, en;q=0.4", "de"), ("en;q=0.1, de", "de"),
    ("*", None), ("", None), (None, None), ("de;q=abc, ru;q=0", None), ("fr," * 10_000 + "ru", None),
    ("x" * 100_000, None), ("de;q=2", None)])
def test_accept_language_picks_the_preferred_known_language(header, expected):
    assert accepted_language(header) == expected


def test_numbers_and_percents_are_written_as_each_language_does():
    assert [percent(0.874, code) for code in ("en", "ru", "de")] == ["87%", "87\xa0%", "87\xa0%"]
    assert [decimal(12.5, code, 1) for code in ("en", "ru", "de")] == ["12.5", "12,5", "12,5"]
    assert decimal(12345, "ru") == "12\xa0345" and decimal(10.0, "de") == "10"

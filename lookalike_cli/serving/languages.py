"""The front ends' languages: the gallery's people named in a person's language (the catalog's ``names``)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from ..gallery.generations import published_names
from ..io.artifacts import DataDir
from ..io.catalog import names_key

if TYPE_CHECKING:
    from ..answers.recognizer import Recognizer


@functools.lru_cache(maxsize=2)
def names_of_generation(data: DataDir, generation: str) -> dict[str, dict[str, str]]:
    """A generation's names per language, read once (a generation never changes)."""
    return published_names(data, generation)


def local_names(recognizer: Recognizer, language: str) -> dict[str, str]:
    """The names in ``language`` (alias -> name) of the people of the generation ``recognizer`` answers from."""
    return names_of_generation(recognizer.data, recognizer.generation).get(names_key(language), {})

"""The languages people are answered in: one gettext catalog per language,
``locales/<language>/LC_MESSAGES/messages.po`` (English is the source: its messages are the ids), read at run time
with Babel; numbers and percents formatted per locale.

A language is a folder of ``locales/``: adding one takes a translated ``messages.po`` and no code (docs/serve.md).
Codes from strangers (``Accept-Language``, Telegram's ``language_code``, ``/language``, ``?language=``) go through
``known_language``: bounded, matched against the catalogs found, else None.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

LOCALES = Path(__file__).parent / "locales"
DOMAIN = "messages"
SOURCE_LANGUAGE = "en"
MAX_CODE_CHARS = 35  # a language tag (BCP 47 allows 35 characters)
MAX_ACCEPT_CHARS = 1000  # an Accept-Language header read at most
MAX_ACCEPTED = 20  # its languages considered at most
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8})*")


def N_(message: str) -> str:
    """Marks an English message for extraction (``make messages``); ``translate`` says it in a language."""
    return message


def catalog_languages() -> tuple[str, ...]:
    """The source language, then every language with a catalog in LOCALES, by code."""
    found = sorted(path.parent.parent.name for path in LOCALES.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))
    return (SOURCE_LANGUAGE, *(code for code in found if code != SOURCE_LANGUAGE))


LANGUAGES = catalog_languages()


def catalog_path(language: str) -> Path:
    return LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.lru_cache(maxsize=None)
def messages_of(language: str) -> dict[str, str]:
    """A language's translations, English message -> translated (empty for the source language); a message
    not translated yet, or marked fuzzy, is left out (it is said in English)."""
    if language == SOURCE_LANGUAGE:
        return {}
    from babel.messages.pofile import read_po

    with catalog_path(language).open("rb") as file:
        catalog = read_po(file, locale=language)
    return {message.id: message.string for message in catalog
            if message.id and isinstance(message.id, str) and message.string and not message.fuzzy}


def translate(language: str, message: str, /, **values: object) -> str:
    """``message`` (English, with ``{name}`` fields) said in ``language``, its fields filled with ``values``."""
    text = messages_of(language).get(message, message)
    return text.format(**values) if values else text


def known_language(code: object) -> str | None:
    """The language of LANGUAGES a stranger's code names (``ru``, ``de-DE``, ``pt_BR``, ``RU``), or None: an
    exact match first, then its primary language."""
    if not isinstance(code, str) or len(code) > MAX_CODE_CHARS or not LANGUAGE_TAG.fullmatch(code.strip()):
        return None
    tag = code.strip().replace("_", "-").lower()
    by_lower = {language.lower(): language for language in LANGUAGES}
    return by_lower.get(tag) or by_lower.get(tag.split("-")[0])


def accepted_language(header: str | None) -> str | None:
    """The known language a browser's ``Accept-Language`` prefers most (its ``q`` weights), or None."""
    weighted = []
    for position, item in enumerate((header or "")[:MAX_ACCEPT_CHARS].split(",")[:MAX_ACCEPTED]):
        code, _, parameters = item.partition(";")
        weight = 1.0
        if parameters.strip().startswith("q="):
            try:
                weight = float(parameters.strip()[2:])
            except ValueError:
                continue
        language = known_language(code)
        if language and 0 < weight <= 1:
            weighted.append((-weight, position, language))
    return min(weighted)[2] if weighted else None


def percent(similarity: float, language: str) -> str:
    """A similarity as a whole percent, as ``language`` writes it (``43%``, ``43 %``)."""
    from babel.numbers import format_percent

    return format_percent(similarity, locale=language)


def decimal(value: float, language: str, digits: int | None = None) -> str:
    """A number as ``language`` writes it (``1,500.5``, ``1 500,5``): with ``digits`` decimals, or as few as it
    takes (at most 3)."""
    from babel.numbers import format_decimal

    return format_decimal(value, None if digits is None else "#,##0." + "0" * digits, locale=language)


def language_name(language: str) -> str:
    """A language's name in itself (``Deutsch``, ``Русский``), for a switch between languages."""
    from babel import Locale

    name = Locale.parse(language.replace("-", "_")).get_display_name(language.replace("-", "_")) or language
    return name[:1].upper() + name[1:]

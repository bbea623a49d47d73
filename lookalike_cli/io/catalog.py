"""The catalog of people: the seed's JSON format ``[{"name", "alias", "role", "n_movies"}, ...]``, and optionally
a person's name per language, ``"names": {"ru": "...", "de": "..."}`` (kept with the other keys in ``extra``)."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

from ..errors import LookalikeError
from ..files import open_regular, reason

KNOWN_KEYS = ("alias", "name", "role", "n_movies")
MAX_NAME_CHARS = 200  # a name or role in the catalog
MAX_N_MOVIES = 1_000_000
MAX_EXTRA_BYTES = 10_000  # an entry's other keys, as JSON
SHOWN_NAME_CHARS = 60  # a name in answers: text lines, pictures, captions
NOT_UNICODE = "is not valid Unicode (it holds a lone surrogate)"
CONTROL_CATEGORIES = ("Cc", "Cf", "Zl", "Zp")  # Unicode's control and format characters, line separators
MAX_NAMES = 50  # languages of one person's names
LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,2}")  # ru, de, pt-BR, zh-Hant-TW


def is_control(char: str) -> bool:
    """Whether ``char`` is a control or format character (a newline, a tab, a direction override...)."""
    return unicodedata.category(char) in CONTROL_CATEGORIES


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds a control or format character."""
    return any(map(is_control, text))


def escaped(text: str) -> str:
    """``text`` with its control and format characters (and backslashes, so that none is mistaken for one) as
    backslash escapes: a file name kept on one line."""
    return "".join(char.encode("unicode_escape").decode("ascii") if char == "\\" or is_control(char) else char
                   for char in text)


def display_name(name: str, limit: int = SHOWN_NAME_CHARS) -> str:
    """A name as answers show it: control characters as spaces, at most ``limit`` characters (an ellipsis ends
    a shortened one)."""
    shown = name if len(name) <= limit else name[:limit - 1].rstrip() + "…"
    if has_control_characters(shown):
        shown = "".join(" " if is_control(char) else char for char in shown)
    return shown


def is_unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode: JSON's escapes can make a lone surrogate, which no file can hold."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_problem(value: str) -> str | None:
    """Why a catalog name or role cannot be shown in one line, or None."""
    if not is_unicode(value):
        return NOT_UNICODE
    if len(value) > MAX_NAME_CHARS:
        return f"is longer than {MAX_NAME_CHARS} characters"
    if has_control_characters(value):
        return "holds a control character (a newline, a tab...)"
    return None


def alias_problem(alias: object) -> str | None:
    """Why ``alias`` cannot name a folder under the images directory, or None when it can."""
    if not isinstance(alias, str):
        return f"must be a string, not {type(alias).__name__}"
    if not alias.strip():
        return "is empty"
    if not is_unicode(alias):
        return NOT_UNICODE
    if alias.startswith("."):
        return "starts with a dot"
    for bad in ("/", "\\", "\0"):
        if bad in alias:
            return f"contains {bad!r}"
    if has_control_characters(alias):
        return "holds a control character"
    if len(alias.encode("utf-8", "surrogatepass")) > 200:
        return "is longer than 200 bytes"
    return None


def names_problem(names: object) -> str | None:
    """Why an entry's ``names`` (language code -> name) cannot be used, or None."""
    if not isinstance(names, dict):
        return f"must be an object of language codes and names, got {type(names).__name__}"
    if len(names) > MAX_NAMES:
        return f"has more than {MAX_NAMES} languages"
    for code, name in names.items():
        if not LANGUAGE_CODE.fullmatch(code):
            return f"has {code[:40]!r}, which is not a language code such as ru, de or pt-BR"
        if not isinstance(name, str) or not name.strip():
            return f"{code}: the name must be a non-empty string, got {str(name)[:40]!r}"
        problem = text_problem(name)
        if problem:
            return f"{code}: the name {name[:40]!r}... {problem}"
    return None


def names_key(language: str) -> str:
    """How ``names_by_language`` keys a language: ``pt_BR`` and ``pt-BR`` as ``pt-br``."""
    return language.replace("_", "-").lower()


def names_by_language(extra: str | None) -> dict[str, str]:
    """A ``people`` row's names per language (from its ``extra``), by ``names_key``."""
    names = json.loads(extra).get("names") if extra else None
    if not isinstance(names, dict):
        return {}
    return {names_key(code): name for code, name in names.items() if isinstance(name, str)}


def person_row(entry: dict) -> dict:
    """A catalog entry as a ``people`` row; keys beyond the seed's four are kept as JSON in ``extra``."""
    extra = {k: v for k, v in entry.items() if k not in KNOWN_KEYS}
    return {
        "alias": entry["alias"],
        "name": entry.get("name") or entry["alias"],
        "role": entry.get("role"),
        "n_movies": entry.get("n_movies"),
        "extra": json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else None,
    }


def load_catalog(path: str | Path) -> list[dict]:
    """Read and check a catalog file; every problem names the entry's position. Returns ``people`` rows."""
    try:
        with open_regular(path) as fh:
            entries = json.load(fh)
    except FileNotFoundError:
        raise LookalikeError(f"catalog {path} does not exist") from None
    except OSError as exc:
        raise LookalikeError(f"catalog {path} cannot be read: {reason(exc)}") from None
    except ValueError as exc:
        raise LookalikeError(f"catalog {path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise LookalikeError(f"catalog {path} is not a catalog: its JSON is nested too deeply") from None
    if not isinstance(entries, list):
        raise LookalikeError(f"catalog {path} must be a JSON list of people, got {type(entries).__name__}")
    rows, seen = [], {}
    for position, entry in enumerate(entries):
        where = f"catalog {path} entry {position}"
        if not isinstance(entry, dict):
            raise LookalikeError(f"{where} must be an object with name and alias, got {type(entry).__name__}")
        if "alias" not in entry:
            raise LookalikeError(f"{where} has no alias")
        problem = alias_problem(entry["alias"])
        if problem:
            raise LookalikeError(f"{where}: alias {entry['alias']!r} {problem}")
        for key, kind in (("name", str), ("role", str), ("n_movies", int)):
            value = entry.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                raise LookalikeError(f"{where}: {key} must be {kind.__name__}, got {str(value)[:40]!r}")
            problem = text_problem(value) if isinstance(value, str) else None
            if problem:
                raise LookalikeError(f"{where}: {key} {value[:40]!r}... {problem}")
        problem = names_problem(entry["names"]) if "names" in entry else None
        if problem:
            raise LookalikeError(f"{where}: names {problem}")
        if not 0 <= (entry.get("n_movies") or 0) <= MAX_N_MOVIES:
            raise LookalikeError(f"{where}: n_movies must be between 0 and {MAX_N_MOVIES}, "
                                 f"got {str(entry['n_movies'])[:40]}")
        row = person_row(entry)
        extra = row["extra"] or ""
        if not is_unicode(extra) or len(extra.encode("utf-8")) > MAX_EXTRA_BYTES:
            raise LookalikeError(f"{where}: its other keys must be valid Unicode of at most {MAX_EXTRA_BYTES} "
                                 "bytes as JSON")
        alias = unicodedata.normalize("NFC", entry["alias"])  # one name typed two ways is one person
        if alias in seen:
            raise LookalikeError(f"{where}: alias {entry['alias']!r} is already used by entry {seen[alias]}")
        seen[alias] = position
        rows.append(row)
    return rows

"""The catalog of people: the seed's JSON format ``[{"name", "alias", "role", "n_movies"}, ...]``."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import LookalikeError

KNOWN_KEYS = ("alias", "name", "role", "n_movies")


def alias_problem(alias: object) -> str | None:
    """Why ``alias`` cannot name a folder under the images directory, or None when it can."""
    if not isinstance(alias, str):
        return f"must be a string, not {type(alias).__name__}"
    if not alias.strip():
        return "is empty"
    if alias.startswith("."):
        return "starts with a dot"
    for bad in ("/", "\\", "\0"):
        if bad in alias:
            return f"contains {bad!r}"
    if len(alias.encode("utf-8", "surrogatepass")) > 200:
        return "is longer than 200 bytes"
    return None


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
        with open(path, "rb") as fh:
            entries = json.load(fh)
    except FileNotFoundError:
        raise LookalikeError(f"catalog {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise LookalikeError(f"catalog {path} is not valid JSON: {exc}") from None
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
                raise LookalikeError(f"{where}: {key} must be {kind.__name__}, got {value!r}")
        alias = entry["alias"]
        if alias in seen:
            raise LookalikeError(f"{where}: alias {alias!r} is already used by entry {seen[alias]}")
        seen[alias] = position
        rows.append(person_row(entry))
    return rows

"""lookalike: which celebrity do I look like?

The stages are plain functions (``build``, ``filter_images``, ``embed_faces``, ``clean_identities``,
``calibrate``, ``build_index``) and ``Lookalike`` answers photos; the ``lookalike`` command is a thin layer
over them. They are imported on first use, so that importing the package (and ``lookalike --help``) stays fast;
no module at the package's top bears an exported name, so importing a module never shadows an export.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "Lookalike": "answers.query", "PhotoResult": "answers.results", "build": "stages.build",
    "filter_images": "stages.filter", "embed_faces": "stages.embed", "clean_identities": "stages.clean",
    "calibrate": "stages.calibrate", "build_index": "stages.index",
    "Config": "config", "load_config": "config", "LookalikeError": "errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)

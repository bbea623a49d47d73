"""matplotlib for the pictures of ``lookalike eval`` and ``lookalike stats`` (the ``eval`` extra), drawn off-screen."""

from __future__ import annotations

import io

from .errors import LookalikeError


def require_matplotlib(command: str):
    """matplotlib's pyplot on the Agg backend; a one-line error naming ``command`` when it is not installed."""
    try:
        import matplotlib
    except ImportError:
        raise LookalikeError(f"lookalike {command} draws its histogram with matplotlib, which is not installed: "
                             "pip install 'lookalike[eval]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(plt, figure) -> bytes:
    """A laid-out figure as PNG bytes; the figure is closed."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()

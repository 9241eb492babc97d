"""Tables and glued numbers for the notebooks.

A table is displayed as Markdown (so the book renders it) whose ``text/plain`` is the same table
text, not an object repr: nbval compares that text, and it does not change when IPython does.
"""
from __future__ import annotations

import math


def _fmt(value, digits: int) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return "–" if value is None else str(value)


def markdown_table(rows: list[dict], columns: list[str] | None = None, digits: int = 2) -> str:
    """A Markdown table of ``rows`` (dicts); ``columns`` picks and orders the keys (default: every
    key of any row, in the order they first appear; a row without one shows a dash)."""
    if not rows:
        return "(no rows)"
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))

    def cells(texts):  # a "|" inside a cell (as in "gate |w|") would start a new column
        return "| " + " | ".join(text.replace("|", "\\|") for text in texts) + " |"
    lines = [cells(columns), "|" + "---|" * len(columns)]
    lines += [cells(_fmt(row.get(c), digits) for c in columns) for row in rows]
    return "\n".join(lines)


def _ipython_display():
    """IPython's ``display`` when running inside IPython, else None."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return None
    return display if get_ipython() is not None else None


def show_table(rows: list[dict], columns: list[str] | None = None, digits: int = 2) -> None:
    """Display a table: Markdown (with the same text as its plain form) in IPython, printed elsewhere."""
    text = markdown_table(rows, columns, digits)
    display = _ipython_display()
    if display is None:
        print(text)
    else:
        display({"text/markdown": text, "text/plain": text}, raw=True)


def count(n: int, noun: str) -> str:
    """``n`` of ``noun`` in words: "1 seed", "3 seeds"."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def words(items, empty: str = "none") -> str:
    """Items as prose: "1", "1 and 2", "1, 2 and 4"; ``empty`` when there are none."""
    items = [str(item) for item in items]
    if len(items) < 2:
        return items[0] if items else empty
    return f"{', '.join(items[:-1])} and {items[-1]}"


def glue(name: str, value, display: bool = False):
    """Store ``value`` under ``name`` for the book's prose (``{glue:text}`name:.2f` `` in Markdown).

    This is myst-nb's ``glue`` where myst-nb is installed (the book build); on a reader's runtime
    without it (Colab) the value is only returned, since the prose references render only in the
    book. Returns ``value`` so a cell can glue and use a number in one line. A NumPy or torch
    scalar is stored as the Python number it holds: myst-nb formats the stored repr, and
    ``np.float64(0.8)`` is not a number it can read.
    """
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        return value
    if _ipython_display() is not None:
        myst_glue(name, value, display=display)
    return value

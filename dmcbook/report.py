"""Tables for the notebooks: Markdown in Jupyter (so the book renders them), plain text elsewhere."""
from __future__ import annotations

import math


def _fmt(value, digits: int) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return "–" if value is None else str(value)


def markdown_table(rows: list[dict], columns: list[str] | None = None, digits: int = 2) -> str:
    """A Markdown table of ``rows`` (dicts); ``columns`` picks and orders the keys."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c), digits) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def show_table(rows: list[dict], columns: list[str] | None = None, digits: int = 2) -> None:
    """Display a table: as Markdown inside IPython, printed otherwise."""
    text = markdown_table(rows, columns, digits)
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
        if get_ipython() is not None:
            display(Markdown(text))
            return
    except ImportError:
        pass
    print(text)


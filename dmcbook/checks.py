"""Validation shared by the models, the data and the training engine: one clear line that says
what was expected, raised before any work starts."""
from __future__ import annotations


def check_choice(what: str, value, choices) -> None:
    """Raise a ValueError naming the valid choices when ``value`` is not one of them."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(map(repr, choices))}")

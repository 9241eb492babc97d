"""Validation shared by the models, the data and the training engine: one clear line that says
what was expected, raised before any work starts."""
from __future__ import annotations

import numbers


def check_choice(what: str, value, choices) -> None:
    """Raise a ValueError naming the valid choices when ``value`` is not one of them."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(map(repr, choices))}")


def is_integer(value) -> bool:
    """Whether ``value`` is an integer (numpy's too), and not a bool, which Python counts as one:
    ``True`` passed for a width or a batch size would silently mean 1."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)

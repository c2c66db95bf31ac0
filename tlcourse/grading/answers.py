"""Calling a student's function on the collect side, and reading what it returned on the grade side.

A question that grades a function calls it on inputs drawn from the seed (in the student's
kernel or the sandbox) and must carry back whatever happened as plain data: the value, or the
exception it raised. The grade side then needs one float out of it, or a message that says what
came back instead. Those two halves are here so that every chapter's checks word them the same
way.

>>> from tlcourse.grading import plain
>>> entry = plain.roundtrip(call(lambda x: x * 2, 1.5))
>>> returned_float(entry, "double(1.5)", "3.0")
3.0
>>> returned_float(plain.roundtrip(call(lambda x: 1 / 0, 1.5)), "f(1.5)", "3.0")
Traceback (most recent call last):
AssertionError: f(1.5) raised ZeroDivisionError: division by zero; expected 3.0
>>> returned_float(plain.roundtrip(call(lambda: ...)), "f()", "3.0")
Traceback (most recent call last):
AssertionError: f() returned `...`, the exercise's placeholder; expected 3.0, a single float
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .plain import PlainDataError, to_plain

__all__ = ["plain_or_type", "call", "describe", "returned_float", "scalar", "NOT_PLAIN", "not_plain", "shown"]

# What a collect step returns in place of a value that cannot cross as plain data (a tensor with
# grad, a model, the placeholder ``...``): a string that the grade step recognises and names.
NOT_PLAIN = "<not plain data: "


def plain_or_type(value):
    """``value`` as plain data, or ``{"unsupported": type name}`` when it cannot cross."""
    try:
        return to_plain(value)
    except PlainDataError:
        return {"unsupported": type(value).__name__}


def scalar(value):
    """A number answer as a float (Python and NumPy numbers, 0-d tensors and arrays), or a
    ``NOT_PLAIN`` description of anything else (a bool, a list, a 1-element tensor), for a collect step.

    >>> scalar(np.float32(0.5)), scalar(3), scalar(True), scalar([1.0])
    (0.5, 3.0, '<not plain data: bool>', '<not plain data: list>')
    """
    import numbers

    if isinstance(value, (bool, np.bool_)):
        return f"{NOT_PLAIN}bool>"
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype != object:
        return float(value)
    if type(value).__module__.startswith("torch") and getattr(value, "ndim", None) == 0:
        return float(value)
    if isinstance(value, (numbers.Real, np.generic)) and not isinstance(value, str):
        return float(value)
    return f"{NOT_PLAIN}{type(value).__name__}>"


def call(function, *args, **kwargs) -> dict:
    """``{"value": result as plain data}``, or ``{"raised": exception type, "message": ...}``."""
    try:
        return {"value": plain_or_type(function(*args, **kwargs))}
    except Exception as exc:  # noqa: BLE001 - the grade side reports what was raised
        return {"raised": type(exc).__name__, "message": str(exc)[:200]}


def describe(value) -> str:
    """A short description of a returned value for a message: its type, shape or start."""
    if isinstance(value, dict) and set(value) == {"unsupported"}:
        kind = value["unsupported"]
        if kind == "ellipsis":
            return "`...`, the exercise's placeholder"
        return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) < 60 else text[:57] + '...'}"


def returned_float(entry, what: str, expected: str) -> float:
    """The float a :func:`call` returned, or an ``AssertionError`` saying what happened instead.

    ``what`` names the call in the message (``"leep_score(case 1)"``); ``expected`` is what the
    grader expected, as text. A 1-element array counts as its element; booleans, NaN and infinities do not count.
    """
    if not (isinstance(entry, dict) and ("value" in entry or "raised" in entry)):
        raise AssertionError("the collected answer is malformed: run the notebook from the top, then check again")
    if "raised" in entry:
        raise AssertionError(f"{what} raised {entry['raised']}: {entry.get('message', '')}; "
                             f"expected {expected}")
    value = entry["value"]
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        value = value.reshape(()).item()
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise AssertionError(f"{what} returned {describe(value)}; expected {expected}, a single float")
    if not math.isfinite(value):
        raise AssertionError(f"{what} returned {value}; expected {expected}")
    return float(value)


def not_plain(value) -> str:
    """The marker a collect step returns for a value that is not plain data: ``<not plain data: Tensor>``."""
    return f"{NOT_PLAIN}{type(value).__name__}>"


def shown(value, limit: int = 60) -> str:
    """A collected value as a message shows it: a :func:`not_plain` marker named, anything else its repr.

    >>> shown(not_plain(...)), shown(not_plain(object())), shown(0.25), shown("x" * 80, limit=10)
    ("`...`, the exercise's placeholder", 'an object', '0.25', "'xxxxxx...")
    """
    if isinstance(value, str) and value.startswith(NOT_PLAIN):
        kind = value[len(NOT_PLAIN):-1]
        if kind == "ellipsis":
            return "`...`, the exercise's placeholder"
        return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."

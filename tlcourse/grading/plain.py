"""Plain data between the student's kernel and the trusted grader: JSON and ``.npz``, nothing else.

A question's ``collect`` step runs where the student's code runs (the notebook's kernel, inside the
sandbox when an instructor grades). What it returns crosses to the trusted side as plain data
only: ``None``, ``bool``, ``int``, ``float``, ``str``, lists, dicts with ``str`` keys, and numeric
arrays. :func:`to_plain` converts the student's values (``np.float32``, 0-d tensors, tuples, tensors,
``float`` subclasses) into exactly those types *on the student's side*, so the trusted side never
calls a method of a student's object. :func:`dump` writes ``<stem>.json`` (and ``<stem>.npz`` when
there are arrays); :func:`load` reads them back with ``json`` and ``numpy.load(allow_pickle=False)``,
refusing files over a size limit, any other type and any array reference it was not given.

>>> tree = to_plain({"acc": np.float32(0.5), "pair": (1, 2), "w": torch.ones(2)})
>>> tree["acc"], tree["pair"], tree["w"].tolist()
(0.5, [1, 2], [1.0, 1.0])
>>> type(to_plain(True)), type(to_plain(np.int64(3)))
(<class 'bool'>, <class 'int'>)
"""
from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["to_plain", "dump", "load", "roundtrip", "PlainDataError", "MAX_BYTES"]

MAX_BYTES = 256 * 2**20  # per file: a digit CNN's weights are under 1 MiB
_ARRAY_KEY = "__array__"
_KINDS = "biuf"  # bool, signed and unsigned integers, floats


class PlainDataError(ValueError):
    """The collected answer holds something other than plain data, or its files are malformed."""


def _number(value) -> bool | int | float:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    return float(value)


def to_plain(value: Any, _depth: int = 0) -> Any:
    """``value`` as plain data: arrays for tensors and arrays, Python scalars for scalars.

    0-d arrays and tensors become Python numbers, tuples become lists. Raises
    :class:`PlainDataError` for anything else (a model, a function, an object array).
    """
    if _depth > 20:
        raise PlainDataError("the answer is nested more than 20 levels deep")
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (numbers.Number, np.generic)) and not isinstance(value, complex):
        return _number(value)
    try:
        import torch
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _KINDS:
            raise PlainDataError(f"arrays must hold numbers, not dtype {value.dtype}")
        return _number(value.item()) if value.ndim == 0 else np.array(value, copy=True)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise PlainDataError(f"dictionary keys must be strings, got {type(key).__name__}")
            out[str.__str__(key)] = to_plain(item, _depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [to_plain(item, _depth + 1) for item in value]
    raise PlainDataError(f"cannot pass a {type(value).__name__} to the grader; return numbers, "
                         f"strings, lists, dicts or arrays")


def _split(tree, arrays: dict[str, np.ndarray]):
    if isinstance(tree, np.ndarray):
        name = f"a{len(arrays)}"
        arrays[name] = tree
        return {_ARRAY_KEY: name}
    if isinstance(tree, dict):
        return {key: _split(item, arrays) for key, item in tree.items()}
    if isinstance(tree, list):
        return [_split(item, arrays) for item in tree]
    if isinstance(tree, float) and not math.isfinite(tree):
        return {"__float__": repr(tree)}  # JSON has no inf or nan
    return tree


def dump(stem: Path | str, tree: Any) -> None:
    """Write plain data ``tree`` (from :func:`to_plain`) to ``<stem>.json`` and ``<stem>.npz``."""
    stem, arrays = Path(stem), {}
    document = _split(to_plain(tree), arrays)
    if arrays:
        np.savez(stem.with_suffix(".npz"), **arrays)
    tmp = stem.with_suffix(".json.part")
    tmp.write_text(json.dumps(document), encoding="utf-8")
    os.replace(tmp, stem.with_suffix(".json"))  # the JSON appears last, complete


def _regular(path: Path) -> None:
    """Only a regular file, not a link (to a file the sandbox should not make us read) or a FIFO
    (which would block the grader)."""
    import stat

    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError as exc:
        raise PlainDataError(f"{path.name} is missing") from exc
    if not stat.S_ISREG(mode):
        raise PlainDataError(f"{path.name} is a link or not a regular file")


def _read(path: Path, max_bytes: int) -> bytes:
    _regular(path)
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PlainDataError(f"{path.name} is larger than {max_bytes} bytes")
    return data


def _join(tree, arrays: Mapping[str, np.ndarray], used: set[str], depth: int = 0):
    if depth > 22:
        raise PlainDataError("the answer is nested too deeply")
    if isinstance(tree, dict):
        if set(tree) == {_ARRAY_KEY}:
            name = tree[_ARRAY_KEY]
            if not isinstance(name, str) or name not in arrays:
                raise PlainDataError(f"the answer refers to a missing array {name!r}")
            used.add(name)
            return arrays[name]
        if set(tree) == {"__float__"}:
            if tree["__float__"] not in ("inf", "-inf", "nan"):
                raise PlainDataError("malformed special float")
            return float(tree["__float__"])
        return {key: _join(item, arrays, used, depth + 1) for key, item in tree.items()}
    if isinstance(tree, list):
        return [_join(item, arrays, used, depth + 1) for item in tree]
    if tree is None or type(tree) in (bool, int, float, str):
        return tree
    raise PlainDataError(f"unexpected {type(tree).__name__} in the answer")


def load(stem: Path | str, max_bytes: int = MAX_BYTES) -> Any:
    """Read what :func:`dump` wrote; only JSON and non-object arrays are accepted."""
    stem = Path(stem)
    try:
        document = json.loads(_read(stem.with_suffix(".json"), max_bytes))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlainDataError(f"{stem.name}.json is not valid JSON ({exc})") from exc
    arrays: dict[str, np.ndarray] = {}
    npz = stem.with_suffix(".npz")
    if os.path.lexists(npz):
        _regular(npz)
        if npz.stat().st_size > max_bytes:
            raise PlainDataError(f"{npz.name} is larger than {max_bytes} bytes")
        try:
            with np.load(npz, allow_pickle=False) as stored:
                for name in stored.files:
                    array = stored[name]
                    if array.dtype.kind not in _KINDS:
                        raise PlainDataError(f"array {name} has dtype {array.dtype}")
                    arrays[name] = array
        except (ValueError, OSError, EOFError) as exc:
            raise PlainDataError(f"{npz.name} is not a plain .npz file ({exc})") from exc
    return _join(document, arrays, set())


def roundtrip(tree: Any) -> Any:
    """The value as the trusted side would see it after :func:`dump` and :func:`load`, in memory.

    Self-study feedback uses it so that a check behaves the same in the notebook and in grading.
    """
    arrays: dict[str, np.ndarray] = {}
    document = json.loads(json.dumps(_split(to_plain(tree), arrays)))
    return _join(document, {k: np.array(v, copy=True) for k, v in arrays.items()}, set())


try:  # doctest namespace
    import torch  # noqa: F401
except ImportError:  # pragma: no cover
    pass

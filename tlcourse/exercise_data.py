"""The data splits of the graded exercises, in one place for the notebooks and for the checks.

An exercise notebook and the check that grades it must agree on which images are the test split;
if each built it on its own, a change to one would silently change what the other measures. So
both call the functions here: the notebook to get its splits, the check (in the trusted process)
to rebuild the same test split itself, never taking it from the student's variables.

Every split is class-balanced and disjoint from the others. Within a class the images are dealt
out in a fixed order: the test split first (a fixed size), then the training and validation splits
(``n_per_class`` each). So the test split is the same whatever ``n_per_class`` a student chooses,
and a larger ``n_per_class`` only adds training images.

T06 also keeps back a *grader's* split that no notebook receives: a correct answer never touches
it, so a model that scores clearly better on the test split than on it has seen the test images
(see :mod:`tlcourse.checks.t06`).

>>> splits = t06_letter_splits(5)
>>> {name: len(idx) for name, idx in splits.items()}
{'train': 95, 'val': 95, 'test': 570}
>>> splits["test"].tolist() == t06_letter_splits(15)["test"].tolist()  # fixed test split
True
"""
from __future__ import annotations

import numpy as np

__all__ = ["balanced_splits", "t06_letter_splits", "t07_letter_splits", "T06_TEST_PER_CLASS",
           "T07_TEST_PER_CLASS", "SOURCE_HELDOUT_START"]

T06_TEST_PER_CLASS = 30     # 570 test letters: one image is 0.18 points of accuracy
T06_GRADER_PER_CLASS = 40   # 760 letters only the grader uses (the memorisation check)
T07_TEST_PER_CLASS = 20     # 380 test letters
SOURCE_HELDOUT_START = 8000  # zoo.pretrained_digit_cnn trains on EMNIST digits [:8000]; the rest is held out
_MAX_PER_CLASS = 200


def balanced_splits(labels, sizes: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Disjoint class-balanced index sets: ``sizes[name]`` examples of every class in each split.

    Within each class the examples are shuffled once (from ``seed``) and dealt to the splits in
    the order of ``sizes``, so a split keeps its members when a *later* split changes size.
    Indices come back sorted.

    >>> y = np.repeat(np.arange(3), 10)
    >>> parts = balanced_splits(y, {"test": 2, "train": 3})
    >>> [np.bincount(y[parts[name]]).tolist() for name in ("test", "train")]
    [[2, 2, 2], [3, 3, 3]]
    >>> bool(np.intersect1d(parts["test"], parts["train"]).size)
    False
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {labels.shape}")
    for name, n in sizes.items():
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise ValueError(f"size of split {name!r} must be a non-negative integer, got {n!r}")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in sizes}
    needed = sum(int(n) for n in sizes.values())
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        if len(members) < needed:
            raise ValueError(f"class {cls} has {len(members)} examples, fewer than the {needed} "
                             f"the splits {dict(sizes)} need")
        start = 0
        for name, n in sizes.items():
            parts[name].append(members[start:start + int(n)])
            start += int(n)
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def _check_per_class(n_per_class) -> int:
    if not isinstance(n_per_class, (int, np.integer)) or isinstance(n_per_class, bool) or not (
            1 <= n_per_class <= _MAX_PER_CLASS):
        raise ValueError(f"n_per_class must be an integer from 1 to {_MAX_PER_CLASS}, got {n_per_class!r}")
    return int(n_per_class)


def _letters_labels() -> np.ndarray:
    from .data import load

    return load("emnist_letters").labels


def _t06_all_splits(n_per_class: int) -> dict[str, np.ndarray]:
    """T06's splits including the grader's own (``"grader"``), which no notebook receives."""
    n = _check_per_class(n_per_class)
    return balanced_splits(_letters_labels(), {"test": T06_TEST_PER_CLASS,
                                               "grader": T06_GRADER_PER_CLASS,
                                               "train": n, "val": n}, seed=0)


def t06_letter_splits(n_per_class: int = 15) -> dict[str, np.ndarray]:
    """Exercise T06: indices into ``load("emnist_letters")`` for ``"train"``, ``"val"`` and ``"test"``.

    ``n_per_class`` letters of each of the 19 classes for training and as many for validation;
    the test split is fixed at 30 per class (570 images) whatever ``n_per_class`` is.
    """
    splits = _t06_all_splits(n_per_class)
    return {name: splits[name] for name in ("train", "val", "test")}


def t07_letter_splits(n_per_class: int = 20) -> dict[str, np.ndarray]:
    """Exercise T07: indices into ``load("emnist_letters")`` for ``"train"`` and ``"test"``.

    ``n_per_class`` letters per class to fine-tune on; the test split is fixed at 20 per class
    (380 images). The source's held-out digits are ``load("emnist_digits")`` images from
    :data:`SOURCE_HELDOUT_START` on.

    >>> {name: len(idx) for name, idx in t07_letter_splits(20).items()}
    {'train': 380, 'test': 380}
    """
    n = _check_per_class(n_per_class)
    splits = balanced_splits(_letters_labels(), {"test": T07_TEST_PER_CLASS, "train": n}, seed=1)
    return {"train": splits["train"], "test": splits["test"]}

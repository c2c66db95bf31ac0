"""Zero-shot classification: attributes for unseen classes, its generalised evaluation, calibrated
stacking, and a text classifier by label-description similarity.

A zero-shot classifier never sees an example of its test classes. It needs *side information*
that links every class, seen or not, to a shared space: a vector of attributes per class (Lampert,
Nickisch & Harmeling, 2009/2014, "Attribute-based classification for zero-shot visual object
categorization", TPAMI), or an embedding of the class's name or description.

- :func:`fit_attribute_map` / :func:`predict_attributes`: a linear map from input features to
  the attribute space, fitted on the *seen* classes only (ridge regression, closed form). A
  simple compatibility model: like DAP it predicts attributes and compares them with each class's
  vector, but with one linear regressor and a cosine instead of per-attribute probabilities.
- :func:`attribute_scores`: cosine compatibility of predicted attributes with every class vector.
- :func:`gzsl_accuracy`: generalised zero-shot evaluation (Xian, Lampert, Schiele & Akata, 2018,
  "Zero-shot learning: a comprehensive evaluation of the good, the bad and the ugly", TPAMI):
  seen and unseen test images are classified among *all* classes; per-class accuracy on each
  group and their harmonic mean.
- :func:`calibrated_stacking` and :func:`choose_gamma`: Chao, Changpinyo, Gong & Sha (2016), "An
  empirical study and analysis of generalized zero-shot learning for object recognition in the
  wild", ECCV: subtract a constant gamma from the scores of the seen classes, gamma chosen on a
  validation split.
- :func:`cosine_scores` and :func:`label_embeddings`: zero-shot text classification by the cosine
  between a sentence embedding and an embedding of each label's description(s), the idea of CLIP's
  prompts (Radford et al., 2021) with a sentence encoder; no NLI model involved.
- :data:`LETTER_STROKES` and :func:`letter_attributes`: hand-made stroke attributes of the EMNIST
  letters A-S, used by chapter T09.

>>> scores = torch.tensor([[0.9, 0.8], [0.7, 0.1]])          # 2 images, classes 0 (seen) and 1 (unseen)
>>> calibrated_stacking(scores, torch.tensor([True, False]), gamma=0.2).argmax(1).tolist()
[1, 0]
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["AttributeMap", "fit_attribute_map", "predict_attributes", "attribute_scores",
           "GZSLAccuracy", "per_class_accuracy", "harmonic_mean", "gzsl_accuracy",
           "calibrated_stacking", "choose_gamma", "restrict_to", "ZSLSplit", "zsl_split",
           "cosine_scores", "label_embeddings",
           "LETTER_STROKES", "STROKE_ATTRIBUTES", "letter_attributes"]


def _matrix(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 2 or not t.is_floating_point():
        raise ValueError(f"{name} must be a float matrix (rows, columns), got "
                         f"{t.dtype} {tuple(t.shape)}")
    return t


def _labels(y, n: int, name: str = "labels") -> torch.Tensor:
    t = torch.as_tensor(y)
    if t.ndim != 1 or t.is_floating_point() or t.dtype == torch.bool or len(t) != n:
        raise ValueError(f"{name} must be integers of shape ({n},), got {t.dtype} {tuple(t.shape)}")
    return t.long()


# --------------------------------------------------------------------------- attribute map
class AttributeMap(NamedTuple):
    """A linear map to attribute space, ``a_hat = (x - mean) @ weight + bias``: ``mean`` (D,),
    ``weight`` (D, A), ``bias`` (A,)."""

    mean: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor


def fit_attribute_map(features, labels, class_attributes, l2: float = 1.0) -> AttributeMap:
    """Ridge regression from features to the attribute vector of each example's class.

    Each training example i (a seen class) gets the target ``s_{y_i}``, the row of
    ``class_attributes`` of its class. With centred features ``Xc`` and centred targets ``Sc``,
    ``W = (Xc^T Xc + l2 * I)^{-1} Xc^T Sc`` and the bias is the mean target, so the solution is
    closed form and deterministic. Shapes: features (N, D), labels (N,) in 0..C-1,
    class_attributes (C, A) with 0/1 or scored entries. Computed in float64; returned in the
    features' dtype.

    >>> x = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    >>> m = fit_attribute_map(x, torch.tensor([0, 0, 1, 1]), torch.tensor([[0.0], [1.0]]), l2=1e-9)
    >>> predict_attributes(m, torch.tensor([[4.0]])).round(decimals=3)
    tensor([[1.5000]])
    """
    x = _matrix(features, "features")
    y = _labels(labels, len(x))
    s = _matrix(class_attributes, "class_attributes")
    if len(y) and (y.min() < 0 or y.max() >= len(s)):
        raise ValueError(f"labels must index the {len(s)} rows of class_attributes, got "
                         f"[{int(y.min())}, {int(y.max())}]")
    if not (isinstance(l2, (int, float)) and l2 > 0 and math.isfinite(l2)):
        raise ValueError(f"l2 must be a positive finite number, got {l2!r}")
    xd, target = x.double(), s.double()[y]
    mean = xd.mean(0)
    xc = xd - mean
    bias = target.mean(0)
    gram = xc.T @ xc + l2 * torch.eye(x.shape[1], dtype=torch.float64)
    weight = torch.linalg.solve(gram, xc.T @ (target - bias))
    return AttributeMap(mean.to(x.dtype), weight.to(x.dtype), bias.to(x.dtype))


def predict_attributes(attribute_map: AttributeMap, features) -> torch.Tensor:
    """Predicted attribute vectors (N, A) of features (N, D): ``(x - mean) @ W + b``."""
    x = _matrix(features, "features")
    if x.shape[1] != attribute_map.weight.shape[0]:
        raise ValueError(f"features have {x.shape[1]} columns but the map was fitted on "
                         f"{attribute_map.weight.shape[0]}")
    return (x - attribute_map.mean) @ attribute_map.weight + attribute_map.bias


def attribute_scores(predicted, class_attributes) -> torch.Tensor:
    """Compatibility (N, C) of predicted attributes (N, A) with class vectors (C, A): cosine.

    ``score[i, c] = <a_hat_i, s_c> / (||a_hat_i|| ||s_c||)``; the predicted class is the argmax
    over the candidate classes (the unseen ones for ZSL, all of them for generalised ZSL).

    >>> attribute_scores(torch.tensor([[1.0, 0.1]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])).argmax(1)
    tensor([0])
    """
    a = _matrix(predicted, "predicted")
    s = _matrix(class_attributes, "class_attributes")
    if a.shape[1] != s.shape[1]:
        raise ValueError(f"predicted has {a.shape[1]} attributes, class_attributes {s.shape[1]}")
    return F.normalize(a, dim=1) @ F.normalize(s.to(a.dtype), dim=1).T


# --------------------------------------------------------------------------- generalised ZSL
class GZSLAccuracy(NamedTuple):
    """Per-class mean accuracy on the seen and on the unseen test images, and their harmonic mean."""

    seen: float
    unseen: float
    harmonic: float


def per_class_accuracy(y_true, y_pred, classes: Sequence[int]) -> float:
    """Mean over ``classes`` of the accuracy on that class's examples (classes absent from
    ``y_true`` are skipped), the average that keeps a large class from dominating.

    >>> per_class_accuracy([0, 0, 0, 1], [0, 0, 0, 0], classes=[0, 1])
    0.5
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-d of the same length, got {y_true.shape} "
                         f"and {y_pred.shape}")
    accs = [float((y_pred[y_true == c] == c).mean()) for c in classes if (y_true == c).any()]
    if not accs:
        raise ValueError(f"none of the classes {list(classes)[:5]} occurs in y_true")
    return float(np.mean(accs))


def harmonic_mean(a: float, b: float) -> float:
    """``2ab / (a + b)`` (0 when both are 0): high only when both are high.

    >>> harmonic_mean(0.9, 0.1), harmonic_mean(0.5, 0.5)
    (0.18, 0.5)
    """
    return 0.0 if a + b == 0 else round(2 * a * b / (a + b), 12)


def gzsl_accuracy(y_true, y_pred, seen: Sequence[int], unseen: Sequence[int]) -> GZSLAccuracy:
    """Generalised zero-shot accuracy (Xian et al., 2018): predictions over seen **and** unseen classes.

    ``seen`` = per-class accuracy on the test images of seen classes, ``unseen`` = the same on
    the images of unseen classes, ``harmonic = 2 * seen * unseen / (seen + unseen)``. ``y_pred``
    must come from an argmax over the union of the two label sets; plain ZSL (argmax over unseen
    classes only) is the easier, optimistic protocol.

    >>> gzsl_accuracy([0, 0, 1, 1], [0, 0, 0, 1], seen=[0], unseen=[1])
    GZSLAccuracy(seen=1.0, unseen=0.5, harmonic=0.666666666667)
    """
    if set(seen) & set(unseen):
        raise ValueError(f"seen and unseen classes overlap: {sorted(set(seen) & set(unseen))}")
    s = per_class_accuracy(y_true, y_pred, seen)
    u = per_class_accuracy(y_true, y_pred, unseen)
    return GZSLAccuracy(s, u, harmonic_mean(s, u))


def calibrated_stacking(scores, seen_mask, gamma: float) -> torch.Tensor:
    """Chao et al. (2016): ``score[i, c] - gamma * 1[c is seen]``, shapes (N, C) and (C,) -> (N, C).

    A positive gamma moves decisions towards the unseen classes; gamma = 0 is the uncalibrated
    classifier and a very large gamma turns generalised ZSL into plain ZSL. Choose gamma on a
    validation split (:func:`choose_gamma`), never on the test images.
    """
    s = _matrix(scores, "scores")
    mask = torch.as_tensor(seen_mask)
    if mask.dtype != torch.bool or mask.shape != (s.shape[1],):
        raise ValueError(f"seen_mask must be a bool tensor of shape ({s.shape[1]},), one per class, "
                         f"got {mask.dtype} {tuple(mask.shape)}")
    return s - float(gamma) * mask.to(s.dtype)


def choose_gamma(scores, y_true, seen: Sequence[int], unseen: Sequence[int],
                 gammas: Sequence[float]) -> tuple[float, list[GZSLAccuracy]]:
    """The gamma of ``gammas`` with the best harmonic mean on a validation split, and every result.

    ``scores`` (N, C) are the validation images' scores over all C classes (columns indexed by
    class id); ``seen`` and ``unseen`` are the class ids of the validation label space. Ties go
    to the smallest gamma.

    >>> s = torch.tensor([[0.9, 0.8], [0.7, 0.1]])
    >>> choose_gamma(s, [1, 0], seen=[0], unseen=[1], gammas=[0.0, 0.2, 0.7])[0]
    0.2
    """
    s = _matrix(scores, "scores")
    y = _labels(y_true, len(s), "y_true")
    mask = torch.zeros(s.shape[1], dtype=torch.bool)
    mask[list(seen)] = True
    results = [gzsl_accuracy(y, calibrated_stacking(s, mask, g).argmax(1), seen, unseen) for g in gammas]
    best = max(range(len(results)), key=lambda i: (results[i].harmonic, -gammas[i]))
    return float(gammas[best]), results


def restrict_to(scores, classes: Sequence[int]) -> torch.Tensor:
    """Scores (N, C) with every column outside ``classes`` set to ``-inf``: the argmax then runs
    over that label space only (the unseen classes for ZSL, seen + unseen for generalised ZSL).

    >>> restrict_to(torch.tensor([[3.0, 2.0, 1.0]]), [1, 2]).argmax(1)
    tensor([1])
    """
    s = _matrix(scores, "scores").clone()
    keep = torch.zeros(s.shape[1], dtype=torch.bool)
    keep[list(classes)] = True
    s[:, ~keep] = -math.inf
    return s


class ZSLSplit(NamedTuple):
    """Classes and rows of a zero-shot experiment. ``seen`` classes train the model (rows
    ``train``); ``val_unseen`` and ``test_unseen`` are never trained on. ``val`` holds held-out
    images of the seen classes plus all images of ``val_unseen`` (every choice is made there);
    ``test`` holds other held-out seen images plus all images of ``test_unseen`` (reported only)."""

    seen: tuple[int, ...]
    val_unseen: tuple[int, ...]
    test_unseen: tuple[int, ...]
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def zsl_split(labels, n_seen: int, n_val_unseen: int, seed: int = 0,
              fractions: tuple[float, float] = (0.6, 0.2)) -> ZSLSplit:
    """Draw a seen / validation-unseen / test-unseen split of the classes, and the rows of each part.

    The classes present in ``labels`` are permuted by ``np.random.default_rng(seed)``: the first
    ``n_seen`` are seen, the next ``n_val_unseen`` validation-unseen, the rest test-unseen. Each
    seen class's images are permuted too and cut by ``fractions`` into train / validation / test
    (the last part gets the remainder). Rows come back sorted.

    >>> sp = zsl_split(np.repeat(np.arange(6), 10), n_seen=3, n_val_unseen=1, seed=0)
    >>> len(sp.seen), len(sp.val_unseen), len(sp.test_unseen), len(sp.train), len(sp.val), len(sp.test)
    (3, 1, 2, 18, 16, 26)
    """
    y = np.asarray(labels)
    classes = np.unique(y)
    if not (n_seen >= 1 and n_val_unseen >= 1 and n_seen + n_val_unseen < len(classes)):
        raise ValueError(f"need n_seen >= 1, n_val_unseen >= 1 and at least one test-unseen class: "
                         f"{len(classes)} classes, n_seen={n_seen}, n_val_unseen={n_val_unseen}")
    rng = np.random.default_rng(seed)
    order = classes[rng.permutation(len(classes))]
    seen, val_u, test_u = order[:n_seen], order[n_seen:n_seen + n_val_unseen], order[n_seen + n_val_unseen:]
    parts = ([], [], [])
    for c in seen:
        rows = rng.permutation(np.flatnonzero(y == c))
        a = int(round(fractions[0] * len(rows)))
        b = a + int(round(fractions[1] * len(rows)))
        for part, chunk in zip(parts, (rows[:a], rows[a:b], rows[b:])):
            part.extend(chunk.tolist())
    train = np.sort(parts[0])
    val = np.sort(np.concatenate([parts[1], np.flatnonzero(np.isin(y, val_u))])).astype(int)
    test = np.sort(np.concatenate([parts[2], np.flatnonzero(np.isin(y, test_u))])).astype(int)
    as_tuple = lambda a: tuple(int(c) for c in sorted(a))  # noqa: E731
    return ZSLSplit(as_tuple(seen), as_tuple(val_u), as_tuple(test_u), train, val, test)


# --------------------------------------------------------------------------- text
def cosine_scores(embeddings, label_embeddings) -> torch.Tensor:
    """Cosine similarity (N, C) between N embeddings (N, D) and C label embeddings (C, D).

    The zero-shot text classifier predicts ``argmax_c cos(e(x), e(label_c))``.

    >>> cosine_scores(torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    tensor([[0.6000, 0.8000]])
    """
    e, l_ = _matrix(embeddings, "embeddings"), _matrix(label_embeddings, "label_embeddings")
    if e.shape[1] != l_.shape[1]:
        raise ValueError(f"embeddings have {e.shape[1]} dimensions, label_embeddings {l_.shape[1]}")
    return F.normalize(e, dim=1) @ F.normalize(l_.to(e.dtype), dim=1).T


def label_embeddings(description_embeddings, description_labels, num_classes: int) -> torch.Tensor:
    """One vector per class (C, D): the normalised mean of its descriptions' normalised embeddings.

    Several descriptions per label ("World", "world news about politics and conflicts", ...)
    averaged this way are the prompt ensembling of Radford et al. (2021). Shapes: (M, D) and
    (M,) -> (num_classes, D); every class needs at least one description.

    >>> label_embeddings(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 5.0]]), [0, 0, 1], 2)
    tensor([[0.7071, 0.7071],
            [0.0000, 1.0000]])
    """
    e = F.normalize(_matrix(description_embeddings, "description_embeddings"), dim=1)
    y = _labels(description_labels, len(e), "description_labels")
    counts = torch.bincount(y, minlength=num_classes)
    if len(counts) > num_classes or (counts == 0).any():
        raise ValueError(f"every class 0..{num_classes - 1} needs at least one description, got "
                         f"counts {counts.tolist()}")
    sums = torch.zeros(num_classes, e.shape[1], dtype=e.dtype).index_add_(0, y, e)
    return F.normalize(sums, dim=1)


# --------------------------------------------------------------------------- the chapter's attributes
#: Stroke attributes, made by hand for chapter T09 (not from any dataset).
STROKE_ATTRIBUTES = ("closed loop", "straight vertical", "horizontal bar", "diagonal", "open curve",
                     "descender", "dot", "two or more parts", "two stacked curves",
                     "two humps or peaks")

#: For each letter, the attributes (by index into STROKE_ATTRIBUTES) its upper case and its lower
#: case have, as a typical print hand writes them. EMNIST merges both cases into one class.
LETTER_STROKES = {
    #     upper case        lower case
    "A": ((0, 2, 3),        (0, 1, 4)),
    "B": ((0, 1, 4, 8),     (0, 1, 4)),
    "C": ((4,),             (4,)),
    "D": ((0, 1, 4),        (0, 1, 4)),
    "E": ((1, 2, 7),        (0, 2, 4)),
    "F": ((1, 2, 7),        (1, 2, 4, 7)),
    "G": ((2, 4),           (0, 4, 5, 8)),
    "H": ((1, 2, 7),        (1, 4)),
    "I": ((1,),             (1, 6, 7)),
    "J": ((1, 4),           (1, 4, 5, 6, 7)),
    "K": ((1, 3, 7),        (1, 3, 7)),
    "L": ((1, 2),           (1,)),
    "M": ((1, 3, 9),        (1, 4, 9)),
    "N": ((1, 3),           (1, 4)),
    "O": ((0, 4),           (0, 4)),
    "P": ((0, 1, 4),        (0, 1, 4, 5)),
    "Q": ((0, 3, 4, 7),     (0, 1, 4, 5)),
    "R": ((0, 1, 3, 4),     (1, 4)),
    "S": ((4, 8),           (4, 8)),
}


def letter_attributes(letters: Sequence[str] = tuple(LETTER_STROKES)) -> torch.Tensor:
    """Scored attribute vectors (len(letters), 10) of EMNIST letters from :data:`LETTER_STROKES`.

    Entry ``[c, a]`` is the share of the two cases of letter c that have attribute a: 1 (both),
    0.5 (one) or 0 (neither), because an EMNIST letter class holds both cases.

    >>> letter_attributes("AO")[:, :5]      # closed loop, vertical, bar, diagonal, open curve
    tensor([[1.0000, 0.5000, 0.5000, 0.5000, 0.5000],
            [1.0000, 0.0000, 0.0000, 0.0000, 1.0000]])
    """
    unknown = [c for c in letters if c not in LETTER_STROKES]
    if unknown:
        raise ValueError(f"no stroke attributes for {unknown}; known letters: {''.join(LETTER_STROKES)}")
    out = torch.zeros(len(letters), len(STROKE_ATTRIBUTES))
    for i, c in enumerate(letters):
        for case in LETTER_STROKES[c]:
            out[i, list(case)] += 0.5
    return out

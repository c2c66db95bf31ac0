"""Imbalanced targets: making a stated imbalance, class weights, resampling, logit adjustment,
thresholds chosen on validation, and the metrics that do not flatter a majority-class model.

**Imbalance ratio.** ``rho = n_max / n_min``, the size of the largest class over the smallest.
:func:`make_imbalanced` subsamples a labelled set to a stated ``rho`` with the exponential profile of
Cui et al. (2019): the class of rank ``r`` (0 for the largest, ``K - 1`` for the smallest) keeps
``n_r = round(n_max * rho ** (-r / (K - 1)))`` examples; with two classes that is ``n_max`` and
``n_max / rho``. :func:`imbalanced_splits` cuts disjoint train/validation/test sets that all carry
the same imbalance, as a stratified split of one imbalanced collection would.

**Class weights** (King & Zeng, 2001; sklearn's ``"balanced"`` heuristic):
``w_c = N / (K * n_c)``, so that every class carries the same total weight ``N / K``.
:func:`class_weights` returns them as a dict keyed by the *labels themselves*, built with
``zip(classes, weights)``; ``dict(enumerate(weights))`` is only right when the labels are exactly
``0 .. K-1`` (with labels ``{1, 3}`` it keys the weights 0 and 1, and Keras then gives label 1 the
weight meant for label 3 and label 3 the default weight 1). In PyTorch,
``F.cross_entropy(logits, y, weight=w)`` with ``reduction="mean"`` divides by the **sum of the
weights in the batch**, ``sum_i w_{y_i} l_i / sum_i w_{y_i}``, not by the batch size.

**Random oversampling** (:func:`random_oversample`) repeats minority examples, drawn with
replacement, until every class is as large as the largest: in expectation the same as weighting
each example by ``n_max / n_c``. Doing both *double-counts*: the minority's effective weight
becomes ``(n_max / n_min) ** 2`` relative to the majority. SMOTE (Chawla et al., 2002) instead
interpolates between a minority example and one of its minority nearest neighbours,
``x_new = x_i + u (x_nn - x_i)``, ``u ~ U(0, 1)``; in pixel space that blends two images into a
ghosted overlay, so it belongs, if anywhere, on a frozen backbone's features.

**Logit adjustment** (Menon et al., 2021, "Long-tail learning via logit adjustment"): a model
trained with the plain cross-entropy estimates ``p(y | x)``, which carries the training prior
``pi_y``. Predicting ``argmax_y f_y(x) - tau * log(pi_y)`` with ``tau = 1`` removes the prior and is
Bayes-optimal for the *balanced* error (the mean per-class error, one minus balanced accuracy);
:func:`logit_adjust` applies it after training. For two classes it is a threshold on the logit
margin ``f_1 - f_0 >= tau * log(pi_1 / pi_0)``; :func:`choose_threshold` instead picks the
threshold that maximises a metric on a **validation** split.

**Metrics** (:func:`imbalance_metrics`): accuracy, macro-F1 (the unweighted mean of the per-class
F1 = 2PR / (P + R)), balanced accuracy (the mean per-class recall), PR-AUC as average precision
``AP = sum_k (R_k - R_{k-1}) P_k`` (Davis & Goadrich, 2006; its chance level is the positive rate),
ROC-AUC (chance level 0.5 whatever the imbalance, which is why it flatters a detector of a rare
class: it counts false positives relative to the many negatives), and every class's recall.

:func:`train_classifier` trains any classifier (a new head on frozen features, or a whole network)
with Adam for exactly ``steps`` steps, optionally class-weighted or on an oversampled index set,
and keeps the checkpoint with the best validation macro-F1: the number of steps is chosen on
validation data, the budget is the same for every arm.

>>> y = np.array([0] * 8 + [1] * 2)
>>> class_weights(y)                      # N / (K n_c): 10 / (2 * 8) and 10 / (2 * 2)
{0: 0.625, 1: 2.5}
>>> class_weights(np.array([1] * 8 + [3] * 2))  # keyed by the labels, not by their position
{1: 0.625, 3: 2.5}
>>> np.bincount(y[random_oversample(y, seed=0)]).tolist()
[8, 8]
>>> np.round(logit_adjust(np.array([[2.0, 0.0]]), prior=[0.8, 0.2]), 3).tolist()
[[2.223, 1.609]]
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from sklearn.metrics import (accuracy_score, average_precision_score, balanced_accuracy_score, f1_score,
                             recall_score, roc_auc_score)
from sklearn.utils.class_weight import compute_class_weight
from torch import nn
from torch.nn import functional as F

from .batchnorm import keep_frozen_batchnorm_in_eval
from .train import model_device, predict

__all__ = ["imbalance_sizes", "make_imbalanced", "imbalanced_splits", "class_weights", "weight_tensor",
           "random_oversample", "smote", "logit_adjust", "binary_margin", "choose_threshold", "imbalance_metrics",
           "train_classifier"]


def _labels(y) -> np.ndarray:
    y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(f"labels must be a non-empty 1-D array (N,), got shape {y.shape}")
    return y


def imbalance_sizes(n_max: int, ratio: float, n_classes: int) -> list[int]:
    """Class sizes of the exponential profile, largest first: ``round(n_max * ratio ** (-r / (K - 1)))``.

    >>> imbalance_sizes(100, 10, 3)
    [100, 32, 10]
    >>> imbalance_sizes(1000, 50, 2)
    [1000, 20]
    """
    if not ratio >= 1:
        raise ValueError(f"ratio = n_max / n_min must be >= 1, got {ratio!r}")
    if n_classes < 2 or n_max < 1:
        raise ValueError(f"need n_classes >= 2 and n_max >= 1, got {n_classes} and {n_max}")
    sizes = [max(1, round(n_max * ratio ** (-r / (n_classes - 1)))) for r in range(n_classes)]
    return [int(s) for s in sizes]


def _order(y: np.ndarray, order) -> list:
    classes = np.unique(y).tolist()
    if order is None:
        return classes
    order = [c.item() if isinstance(c, np.generic) else c for c in order]
    if sorted(order) != classes:
        raise ValueError(f"order must list every class of y once, largest first: got {order}, classes {classes}")
    return order


def make_imbalanced(y, ratio: float, seed: int = 0, *, n_max: int | None = None, order: Sequence | None = None
                    ) -> np.ndarray:
    """Sorted indices of a subset of ``y`` (N,) whose classes follow the imbalance ``ratio``.

    ``order`` lists the classes from the one kept largest to the one kept smallest (default: the
    sorted labels, so the lowest label is the majority); ``n_max`` is the size of the largest
    (default: as many as that class has). Members are drawn without replacement from ``seed``.

    >>> y = np.repeat([0, 1, 2], 100)
    >>> np.bincount(y[make_imbalanced(y, ratio=10)]).tolist()
    [100, 32, 10]
    >>> np.bincount(y[make_imbalanced(y, ratio=4, n_max=40, order=[2, 1, 0])]).tolist()
    [10, 20, 40]
    """
    y = _labels(y)
    order = _order(y, order)
    n_max = int((y == order[0]).sum()) if n_max is None else int(n_max)
    rng = np.random.default_rng(seed)
    keep = []
    for cls, n in zip(order, imbalance_sizes(n_max, ratio, len(order))):
        members = np.flatnonzero(y == cls)
        if len(members) < n:
            raise ValueError(f"class {cls} has {len(members)} examples, fewer than the {n} that ratio {ratio} "
                             f"with n_max = {n_max} needs")
        keep.append(rng.choice(members, size=n, replace=False))
    return np.sort(np.concatenate(keep))


def imbalanced_splits(y, ratio: float, n_max: Mapping[str, int], seed: int = 0, *, order: Sequence | None = None
                      ) -> dict[str, np.ndarray]:
    """Disjoint index sets, one per name of ``n_max``, each with the imbalance ``ratio``.

    ``n_max[name]`` is the size of the largest class in that split; the others follow
    :func:`imbalance_sizes`. Each class is shuffled once (from ``seed``) and dealt to the splits in
    the order of ``n_max``, so the splits never share an example. Indices come back sorted.

    >>> y = np.array([0] * 400 + [1] * 30)
    >>> parts = imbalanced_splits(y, 20, {"train": 100, "val": 100, "test": 200})
    >>> {k: np.bincount(y[v]).tolist() for k, v in parts.items()}
    {'train': [100, 5], 'val': [100, 5], 'test': [200, 10]}
    """
    y = _labels(y)
    order = _order(y, order)
    rng = np.random.default_rng(seed)
    sizes = {name: imbalance_sizes(int(n), ratio, len(order)) for name, n in n_max.items()}
    parts: dict[str, list[np.ndarray]] = {name: [] for name in n_max}
    for r, cls in enumerate(order):
        members = rng.permutation(np.flatnonzero(y == cls))
        need = sum(s[r] for s in sizes.values())
        if len(members) < need:
            raise ValueError(f"class {cls} has {len(members)} examples, fewer than the {need} the splits need")
        start = 0
        for name in n_max:
            parts[name].append(members[start:start + sizes[name][r]])
            start += sizes[name][r]
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def class_weights(y, classes: Sequence | None = None) -> dict:
    """sklearn's ``"balanced"`` weights ``N / (K n_c)`` as ``{label: weight}``, built with ``zip``.

    ``classes`` defaults to the labels present in ``y``; every class listed must occur in ``y``
    (a class with no example has no finite weight). Keys and values are plain Python numbers, so
    the dict goes straight into Keras' ``fit(class_weight=...)``.
    """
    y = _labels(y)
    classes = np.unique(y) if classes is None else np.asarray(classes)
    missing = sorted(set(classes.tolist()) - set(np.unique(y).tolist()))
    if missing:
        raise ValueError(f"classes {missing} have no example in y: their balanced weight would be infinite")
    weights = compute_class_weight("balanced", classes=classes, y=y)
    return {c.item() if isinstance(c, np.generic) else c: float(w) for c, w in zip(classes, weights)}


def weight_tensor(weights: Mapping, n_classes: int, device=None) -> torch.Tensor:
    """The ``weight`` argument of ``F.cross_entropy`` (K,) from ``{label: weight}`` with labels 0..K-1.

    Raises when the keys are not exactly ``0 .. n_classes - 1`` (a dict made for other labels would
    otherwise be applied to the wrong classes).
    """
    keys = sorted(int(k) for k in weights)
    if keys != list(range(n_classes)):
        raise ValueError(f"weights must be keyed by the class indices 0..{n_classes - 1}, got keys {keys}")
    return torch.tensor([float(weights[k]) for k in range(n_classes)], dtype=torch.float32, device=device)


def random_oversample(y, seed: int = 0) -> np.ndarray:
    """Indices (M,) that keep every example of ``y`` and add minority examples, drawn with replacement,
    until every class has as many as the largest: imbalanced-learn's ``RandomOverSampler`` applied to
    the row numbers, so any tensor can be indexed with the result.

    >>> np.bincount(np.array([0, 0, 0, 1])[random_oversample([0, 0, 0, 1])]).tolist()
    [3, 3]
    """
    from imblearn.over_sampling import RandomOverSampler

    y = _labels(y)
    rows, _ = RandomOverSampler(random_state=seed).fit_resample(np.arange(len(y)).reshape(-1, 1), y)
    return rows[:, 0].astype(np.int64)


def smote(x, y, k: int = 5, seed: int = 0):
    """SMOTE (Chawla et al., 2002) through imbalanced-learn: ``(x_resampled, y_resampled)``, the
    originals followed by synthetic minority points until every class is as large as the largest.

    Each synthetic point is ``x_i + u (x_j - x_i)`` with ``x_i`` a random member of the class,
    ``x_j`` one of its ``k`` nearest neighbours *within the class* (Euclidean, on the flattened
    rows) and ``u ~ U(0, 1)``. ``x`` (N, ...) NumPy or torch (returned as the same type, shape
    (M, ...)); ``y`` (N,). ``k`` is lowered to the smallest class's size minus one when that class
    is smaller. Interpolating raw images blends two pictures into a double exposure; on a frozen
    backbone's features the same formula stays inside the feature space the head reads.

    >>> xs, ys = smote(np.array([[0.0], [1.0], [2.0], [10.0], [11.0]]), np.array([0, 0, 0, 1, 1]), k=1)
    >>> np.bincount(ys).tolist(), bool(((xs[5:] >= 10) & (xs[5:] <= 11)).all())
    ([3, 3], True)
    """
    from imblearn.over_sampling import SMOTE

    y = _labels(y)
    is_torch = isinstance(x, torch.Tensor)
    arr = np.asarray(x.detach().cpu() if is_torch else x, dtype=np.float32)
    if len(arr) != len(y):
        raise ValueError(f"x has {len(arr)} rows but y has {len(y)} labels")
    classes, counts = np.unique(y, return_counts=True)
    if counts.min() < 2:
        c = classes[counts.argmin()]
        raise ValueError(f"class {c} has {counts.min()} example: SMOTE needs at least two to interpolate")
    sampler = SMOTE(k_neighbors=min(k, int(counts.min()) - 1), random_state=seed)
    flat, ys = sampler.fit_resample(arr.reshape(len(arr), -1), y)
    xs = flat.astype(np.float32).reshape(-1, *arr.shape[1:])
    ys = ys.astype(y.dtype)
    return (torch.from_numpy(xs), torch.from_numpy(ys)) if is_torch else (xs, ys)


def logit_adjust(logits, prior, tau: float = 1.0):
    """Post-hoc logit adjustment (Menon et al., 2021): ``logits - tau * log(prior)``, same type and shape.

    ``logits`` (N, K) NumPy or torch; ``prior`` (K,) the training class frequencies, positive,
    summing to 1. ``argmax`` of the result is Bayes-optimal for the balanced error when ``tau = 1``
    and the logits estimate ``log p(y | x)`` up to a constant.
    """
    prior = np.asarray(prior, dtype=np.float64)
    if prior.ndim != 1 or (prior <= 0).any() or abs(prior.sum() - 1) > 1e-6:
        raise ValueError(f"prior must be positive class frequencies summing to 1, got {prior.tolist()}")
    if logits.shape[-1] != len(prior):
        raise ValueError(f"logits have {logits.shape[-1]} classes, prior has {len(prior)}")
    shift = tau * np.log(prior)
    if isinstance(logits, torch.Tensor):
        return logits - torch.as_tensor(shift, dtype=logits.dtype, device=logits.device)
    return np.asarray(logits) - shift


def binary_margin(logits) -> np.ndarray:
    """``f_1 - f_0`` (N,) of two-class logits (N, 2): the log-odds of class 1 for a softmax model."""
    z = np.asarray(logits.detach().cpu() if isinstance(logits, torch.Tensor) else logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"binary_margin needs logits of shape (N, 2), got {z.shape}")
    return z[:, 1] - z[:, 0]


def choose_threshold(y_val, scores_val, metric: str = "macro_f1") -> tuple[float, float]:
    """The threshold ``t`` on ``scores_val`` (N,) (predict class 1 when ``score >= t``) that maximises
    ``metric`` (``"macro_f1"`` or ``"balanced_accuracy"``) on the validation labels ``y_val`` in {0, 1}.

    Candidates are the midpoints between consecutive distinct scores plus one below all of them; a
    tie goes to the middle one of the tied candidates (the upper middle of an even number). Returns ``(t, metric value)``.
    Choose it on validation data: a threshold fitted to the test split reports an optimistic score.

    >>> t, value = choose_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> round(t, 3), round(value, 3)   # 0.225 ties with 0.6; the upper middle of the tied candidates wins
    (0.6, 0.733)
    """
    y, s = _labels(y_val), np.asarray(scores_val, dtype=np.float64)
    if s.shape != y.shape or not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError("choose_threshold needs binary labels (N,) in {0, 1} and scores of the same shape")
    if metric not in ("macro_f1", "balanced_accuracy"):
        raise ValueError(f"metric must be 'macro_f1' or 'balanced_accuracy', got {metric!r}")
    u = np.unique(s)
    candidates = np.concatenate([[u[0] - 1.0], (u[1:] + u[:-1]) / 2]) if len(u) > 1 else np.array([u[0]])
    # confusion counts of every candidate at once: how many positives / negatives score >= t
    pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
    tp = len(pos) - np.searchsorted(pos, candidates, side="left")
    fp = len(neg) - np.searchsorted(neg, candidates, side="left")
    fn, tn = len(pos) - tp, len(neg) - fp
    if metric == "macro_f1":
        f1_pos = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
        f1_neg = np.where(2 * tn + fn + fp > 0, 2 * tn / np.maximum(2 * tn + fn + fp, 1), 0.0)
        values = (f1_pos + f1_neg) / 2
    else:
        values = (tp / max(len(pos), 1) + tn / max(len(neg), 1)) / 2
    best = np.flatnonzero(values >= values.max() - 1e-12)
    pick = best[len(best) // 2]
    return float(candidates[pick]), float(values[pick])


def imbalance_metrics(y_true, y_pred, scores=None, classes: Sequence | None = None) -> dict:
    """Accuracy, macro-F1, balanced accuracy, every class's recall and, given ``scores``, PR-AUC and ROC-AUC.

    ``y_true``, ``y_pred`` (N,); ``scores`` (N,) for two classes (higher means class 1, the
    minority by convention) or (N, K) one column per class, in the order of ``classes``. With K > 2
    the AUCs are macro averages over one-vs-rest problems. Keys: ``accuracy``, ``macro_f1``,
    ``balanced_accuracy``, ``pr_auc``, ``roc_auc``, ``recall_<class>``.

    >>> m = imbalance_metrics([0] * 98 + [1] * 2, [0] * 100, scores=np.zeros(100))
    >>> {k: round(v, 3) for k, v in m.items()}
    {'accuracy': 0.98, 'macro_f1': 0.495, 'balanced_accuracy': 0.5, 'recall_0': 1.0, 'recall_1': 0.0, 'pr_auc': 0.02, 'roc_auc': 0.5}
    """
    y, p = _labels(y_true), _labels(y_pred)
    classes = np.unique(y) if classes is None else np.asarray(classes)
    recalls = recall_score(y, p, labels=classes, average=None, zero_division=0)
    out = {"accuracy": float(accuracy_score(y, p)),
           "macro_f1": float(f1_score(y, p, labels=classes, average="macro", zero_division=0)),
           "balanced_accuracy": float(np.mean(recalls)),
           **{f"recall_{c}": float(r) for c, r in zip(classes.tolist(), recalls)}}
    if scores is not None:
        s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
        if s.ndim == 1:
            if len(classes) != 2:
                raise ValueError("1-D scores need exactly two classes")
            target = (y == classes[1]).astype(int)
            out["pr_auc"] = float(average_precision_score(target, s))
            out["roc_auc"] = float(roc_auc_score(target, s))
        else:
            onehot = (y[:, None] == classes[None, :]).astype(int)
            out["pr_auc"] = float(average_precision_score(onehot, s, average="macro"))
            out["roc_auc"] = float(roc_auc_score(onehot, s, average="macro"))
    return out


def _macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Macro-F1 from the confusion counts (the same number as sklearn's, without its validation cost)."""
    tp = np.bincount(y[pred == y], minlength=n_classes)
    predicted, actual = np.bincount(pred, minlength=n_classes), np.bincount(y, minlength=n_classes)
    denominator = predicted + actual
    return float(np.mean(np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)))


def _average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of binary labels ``y`` for ``scores``, ties grouped as sklearn groups them."""
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the end of each group of tied scores
    tp = np.cumsum(t)[last]
    precision, recall = tp / (last + 1), tp / max(int(t.sum()), 1)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _validation_score(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int, select: str) -> float:
    logits = predict(model, x, batch_size=1000)
    y = y.cpu().numpy()
    if select == "macro_f1":
        return _macro_f1(y, logits.argmax(1).numpy(), n_classes)
    return _average_precision((y == 1).astype(int), binary_margin(logits))


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
                     *, lr: float, steps: int, weight: torch.Tensor | None = None, indices=None,
                     batch_size: int = 64, eval_every: int = 25, select: str = "macro_f1", seed: int = 0) -> dict:
    """Train the parameters of ``model`` that require grad with Adam for exactly ``steps`` steps.

    The loss is ``F.cross_entropy(model(x_b), y_b, weight=weight)`` (class-weighted when ``weight``
    (K,) is given; the mean then divides by the batch's sum of weights). ``indices`` (M,) is the
    training set as indices into ``x`` (N, ...), repeats allowed: pass :func:`random_oversample`'s
    output to train on an oversampled set. Batches of ``batch_size`` are drawn without replacement
    from a generator seeded with ``seed`` and reshuffled after every pass. Every ``eval_every``
    steps the validation split ``(x_val, y_val)`` is scored and the best weights are kept (the
    earliest on ties): by ``select = "macro_f1"`` at the argmax decision, or by ``"pr_auc"``, the
    average precision of class 1 ranked by the logit margin (two classes only), which judges the
    ranking and leaves the decision threshold to be chosen afterwards. Frozen BatchNorm layers run
    in inference mode.

    Returns ``{"model": the best model (a copy, eval mode), "best_step", "val_score", "steps"}``;
    ``model`` itself is left trained to the end.
    """
    if steps < 1 or lr <= 0 or batch_size < 1 or eval_every < 1:
        raise ValueError(f"steps, batch_size, eval_every must be >= 1 and lr > 0, got {steps}, {batch_size}, "
                         f"{eval_every}, {lr}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    device = model_device(model)
    n_classes = int(max(int(y.max()), int(y_val.max())) + 1)
    if select not in ("macro_f1", "pr_auc") or (select == "pr_auc" and n_classes != 2):
        raise ValueError(f"select must be 'macro_f1', or 'pr_auc' for two classes, got {select!r} with "
                         f"{n_classes} classes")
    order = torch.as_tensor(np.arange(len(x)) if indices is None else np.asarray(indices), dtype=torch.long)
    if len(order) < 2:
        raise ValueError("need at least two training examples")
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    best = {"model": copy.deepcopy(model).eval(), "best_step": 0,
            "val_score": _validation_score(model, x_val, y_val, n_classes, select)}
    queue: list[torch.Tensor] = []
    for step in range(1, steps + 1):
        if not queue:
            queue = list(order[torch.randperm(len(order), generator=generator)].split(batch_size))
            if len(queue) > 1 and len(queue[-1]) == 1:  # BatchNorm cannot normalise a batch of one
                queue[-2] = torch.cat([queue[-2], queue.pop()])
        idx = queue.pop(0)
        model.train()
        keep_frozen_batchnorm_in_eval(model)
        loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device), weight=weight)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}: lower lr={lr}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % eval_every == 0 or step == steps:
            score = _validation_score(model, x_val, y_val, n_classes, select)
            if score > best["val_score"]:
                best = {"model": copy.deepcopy(model).eval(), "best_step": step, "val_score": score}
    model.eval()
    return {**best, "steps": steps}

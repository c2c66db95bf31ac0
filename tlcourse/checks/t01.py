"""Checks for exercise T01 (what is transfer learning): a balanced target set, scratch vs
transferred accuracy measured honestly, and the gain as a relative error reduction."""
from __future__ import annotations

import copy
import math

import numpy as np

from tlcourse.grading import Question


def _check_balanced(ns):
    fn = ns["balanced_indices"]
    labels = np.repeat(np.arange(5), 12)
    np.random.default_rng(7).shuffle(labels)
    idx = np.asarray(fn(labels, 3, seed=0))
    assert idx.ndim == 1 and idx.dtype.kind in "iu", f"return a 1-D integer array of indices, got {idx.dtype} {idx.shape}"
    assert len(idx) == 15, f"5 classes x 3 per class should give 15 indices, got {len(idx)}"
    assert len(set(idx.tolist())) == len(idx), "indices repeat: draw without replacement"
    assert idx.min() >= 0 and idx.max() < len(labels), "indices fall outside the label array"
    counts = np.bincount(labels[idx], minlength=5)
    assert (counts == 3).all(), f"per-class counts should all be 3, got {counts.tolist()}"
    again = np.asarray(fn(labels, 3, seed=0))
    assert np.array_equal(np.sort(idx), np.sort(again)), "the same seed must give the same subset"
    other = [np.sort(np.asarray(fn(labels, 3, seed=s))) for s in (1, 2, 3)]
    assert any(not np.array_equal(np.sort(idx), o) for o in other), "different seeds should give different subsets"
    try:
        fn(labels, 13, seed=0)
    except ValueError:
        pass
    else:
        raise AssertionError("asking for more examples than a class has must raise ValueError")
    train_idx = np.asarray(ns["train_idx"])
    y_pool = np.asarray(ns["y_pool"])
    n = ns["n_per_class"]
    assert len(train_idx) == 19 * n and (np.bincount(y_pool[train_idx], minlength=19) == n).all(), (
        f"train_idx should hold {n} indices of every one of the 19 letters in y_pool")


def _heldout_digits():
    from tlcourse.data import load
    from tlcourse.train import make_loader

    x, y = load("emnist_digits").to_tensors()
    return make_loader(x[8000:9000], y[8000:9000], batch_size=500)  # not seen by the source model


def _check_scratch_vs_transfer(ns):
    from tlcourse import zoo
    from tlcourse.models import DigitCNN
    from tlcourse.train import evaluate, make_loader

    scratch, transfer = ns["scratch_model"], ns["transfer_model"]
    for name, model in (("scratch_model", scratch), ("transfer_model", transfer)):
        assert isinstance(model, DigitCNN), f"{name} should be a DigitCNN, got {type(model).__name__}"
        assert model.head.out_features == 19, f"{name}.head must have 19 outputs (letters A-S), has {model.head.out_features}"
    assert scratch is not transfer, "scratch_model and transfer_model must be two different models"
    # Put the source's digit head back on each trained body: a body that started from the
    # pretrained digit CNN still recognises digits after a short fine-tune; one that started from
    # random weights does not. (Comparing weights directly is unreliable: a DigitCNN seeded like the
    # source starts from the very weights the source started from.)
    digits = _heldout_digits()
    source = zoo.pretrained_digit_cnn(seed=0)
    for name, model, ok, message in (
            ("transfer_model", transfer, lambda a: a > 0.4,
             "start it from zoo.pretrained_digit_cnn(seed=0) and replace only the head"),
            ("scratch_model", scratch, lambda a: a < 0.3, "it must start from random weights")):
        probe = copy.deepcopy(model).cpu()
        probe.head = copy.deepcopy(source.head)
        acc = evaluate(probe, digits)["accuracy"]
        assert ok(acc), (f"{name}'s body with the source's digit head scores {acc:.2f} on held-out digits: "
                         f"{message}")
    loader = make_loader(ns["x_test"], ns["y_test"], batch_size=512)
    for name, model in (("scratch_acc", scratch), ("transfer_acc", transfer)):
        reported = ns[name]
        assert isinstance(reported, float) and 0 <= reported <= 1, f"{name} must be a float in [0, 1], got {reported!r}"
        actual = evaluate(model, loader)["accuracy"]
        assert abs(actual - reported) < 0.005, (
            f"{name} = {reported:.3f} but the model scores {actual:.3f} on (x_test, y_test): report the "
            "held-out test accuracy of the trained model")
        assert actual > 0.2, f"{name} is {actual:.3f}, barely above chance (1/19): was the model trained?"


def _check_error_reduction(ns):
    fn = ns["relative_error_reduction"]
    cases = [((0.8, 0.9), 0.5), ((0.5, 0.5), 0.0), ((0.9, 0.8), -1.0), ((0.0, 0.75), 0.75)]
    for args, expected in cases:
        got = fn(*args)
        assert isinstance(got, float) and math.isclose(got, expected, abs_tol=1e-9), (
            f"relative_error_reduction{args} returned {got!r}; expected {expected}")
    for bad in ((1.2, 0.5), (0.5, -0.1), (1.0, 1.0)):
        try:
            fn(*bad)
        except ValueError:
            continue
        raise AssertionError(f"relative_error_reduction{bad} must raise ValueError")


QUESTIONS = [
    Question("q1", points=2, names=("balanced_indices", "train_idx", "y_pool", "n_per_class"),
             check=_check_balanced,
             hint="For each class, take the indices where labels == class, permute them with "
                  "np.random.default_rng(seed) and keep the first n_per_class."),
    Question("q2", points=3, names=("scratch_model", "transfer_model", "scratch_acc", "transfer_acc", "x_test", "y_test"),
             check=_check_scratch_vs_transfer,
             hint="scratch: DigitCNN(num_classes=19); transferred: replace_head(zoo.pretrained_digit_cnn(seed=0), 19). "
                  "Train both with train_on_subset on x_pool[train_idx], y_pool[train_idx] and keep its 'accuracy'."),
    Question("q3", points=1, names=("relative_error_reduction",), check=_check_error_reduction,
             hint="Errors are 1 - accuracy; the reduction is (e_scratch - e_transfer) / e_scratch. "
                  "Raise ValueError for accuracies outside [0, 1] or when scratch has no error left."),
]

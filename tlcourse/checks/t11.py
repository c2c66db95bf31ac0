"""Checks for exercise T11 (imbalanced targets): class weights keyed by label, a decision threshold
chosen on the validation split with its honest test macro-F1, what the majority-only predictor and
the PR-AUC say, and one prediction about ROC-AUC and PR-AUC at a heavier imbalance.

Every ``collect`` runs in the student's kernel and returns plain data; every ``grade`` runs in the
trusted process and rebuilds what it compares with itself: the chapter's pool of letters through
the frozen digit CNN (:func:`tlcourse.imbalance_demo.letter_detection_pool`, with the smaller
split sizes ``N_MAX``: 1,000 + 20 train, 1,000 + 20 validation, 1,500 + 30 test), the split of seed
``SPLIT_SEED`` (:func:`tlcourse.imbalance_demo.splits_of`) and the unweighted logistic head
(:func:`tlcourse.imbalance_demo.fit_head`, deterministic). Nothing in the student's namespace
(``y_te``, ``m_te``) is trusted.

- **q1** (2 points) ``balanced_weights(labels)`` -> ``{label: weight}``. *collect*: the function on
  four label arrays (labels 0/1, labels 1 and 3, three classes 2/5/7 in shuffled order, labels -1
  and 1). *grade*: each dict must have exactly the labels as keys and ``N / (K n_c)`` as values;
  keys by position (``dict(enumerate(...))``), ``n_c / N``, unnormalised ``1 / n_c`` and weights
  that do not sum to ``N`` over the examples are recognised and named.
- **q2** (2 points) ``threshold`` on the head's validation margins and ``test_macro_f1``. The
  threshold must reach the best validation macro-F1 that any threshold reaches (any threshold in
  the best interval is accepted); ``test_macro_f1`` must be the test macro-F1 at that threshold.
  With this split the threshold that is best on the test split is worse on validation, so choosing
  on the test split fails, and so do the default threshold 0 and the validation score reported as
  the test score.
- **q3** (1 point) ``majority_accuracy``, ``majority_macro_f1`` (the always-"other" predictor on
  the test split) and ``test_pr_auc`` (average precision of the head's test margins). PR-AUC
  computed from hard predictions, ROC-AUC in its place, and the F1 of the E alone are named.
- **q4** (1 point) ``answer_q4``: a choice, checked by letter.
"""
from __future__ import annotations

import functools
import numbers

import numpy as np

from tlcourse.grading import Question
from tlcourse.grading.answers import NOT_PLAIN as _NOT_PLAIN, shown as _shown
from tlcourse.grading.choice import choice_question

SPLIT_SEED = 5       # splits_of(pool, SPLIT_SEED): 1:50 in train, validation and test
LETTER = "E"
N_MAX = {"train": 1000, "val": 1000, "test": 1500}   # negatives per split (a smaller pool than the chapter's)
Q1_LABELS = (
    [0] * 12 + [1] * 3,
    [1] * 8 + [3] * 2,
    [7, 2, 5, 2, 2, 7, 2, 2, 5, 2, 2, 2],
    [-1] * 6 + [1] * 4,
)


def _number(value):
    if isinstance(value, bool):
        return f"{_NOT_PLAIN}bool>"
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype != object:
        return float(value)
    if hasattr(value, "ndim") and getattr(value, "ndim", 1) == 0 and hasattr(value, "item"):
        return float(value.item())
    if isinstance(value, (numbers.Real, np.generic)) and not isinstance(value, str):
        return float(value)
    return f"{_NOT_PLAIN}{type(value).__name__}>"


def _fraction(value, what: str) -> float:
    assert not isinstance(value, str), f"{what} should be a float, got {_shown(value)}"
    assert 0 <= value <= 1, f"{what} = {value!r}; a score is a fraction in [0, 1]"
    return float(value)


# ---------------------------------------------------------------- q1
def _collect_weights(ns, seed):
    fn = ns["balanced_weights"]
    out = []
    for labels in Q1_LABELS:
        try:
            result = fn(np.array(labels))
        except NotImplementedError:
            return {"error": "balanced_weights raises NotImplementedError: replace the placeholder with your code"}
        except Exception as exc:  # noqa: BLE001 - reported to the student
            return {"error": f"balanced_weights(np.array({labels})) raised {type(exc).__name__}: {str(exc)[:200]}"}
        if not isinstance(result, dict):
            return {"error": f"balanced_weights should return a dict {{label: weight}}, got {type(result).__name__}"}
        out.append([[_number(k), _number(v)] for k, v in result.items()])  # non-str keys cross as pairs
    return {"dicts": out}


def _right_weights(labels) -> dict:
    classes, counts = np.unique(labels, return_counts=True)
    return {float(c): len(labels) / (len(classes) * n) for c, n in zip(classes, counts)}


def _grade_weights(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    assert "error" not in answer, answer.get("error")
    for labels, pairs in zip(Q1_LABELS, answer["dicts"]):
        bad = [v for pair in pairs for v in pair if isinstance(v, str)]
        assert not bad, f"balanced_weights(np.array({labels})) has keys or weights that are not numbers: {bad[0]}"
        got = {k: v for k, v in pairs}
        want = _right_weights(labels)
        classes, counts = np.unique(labels, return_counts=True)
        if sorted(got) != sorted(want):
            if sorted(got) == [float(i) for i in range(len(want))] and sorted(want) != sorted(got):
                raise AssertionError(
                    f"for labels {sorted(set(labels))} your keys are {sorted(int(k) for k in got)}: the weights "
                    "are keyed by their position (dict(enumerate(weights))), so Keras would give each weight to "
                    "the wrong label and weight 1 to the missing ones. Key them by the labels: "
                    "dict(zip(classes, weights))")
            raise AssertionError(f"for labels {sorted(set(labels))} the keys should be exactly those labels, "
                                 f"got {sorted(got)}")
        if all(abs(got[k] - want[k]) <= 1e-6 * max(1, want[k]) for k in want):
            continue
        freq = {float(c): n / len(labels) for c, n in zip(classes, counts)}
        inverse = {float(c): 1 / n for c, n in zip(classes, counts)}
        if all(abs(got[k] - freq[k]) < 1e-9 for k in want):
            raise AssertionError("the weights are the class frequencies n_c / N: the rare class must get the LARGE "
                                 "weight, N / (K n_c)")
        ratio = {k: got[k] / want[k] for k in want if want[k]}
        if max(ratio.values()) - min(ratio.values()) < 1e-6 * max(ratio.values()):
            what = "1 / n_c" if all(abs(got[k] - inverse[k]) < 1e-9 for k in want) else "proportional to N / (K n_c)"
            raise AssertionError(
                f"the weights are {what} but not normalised: the balanced weights are N / (K n_c), so that the "
                "average weight per example is 1 (with other scales the loss and the effective learning rate change)")
        k = next(k for k in want if abs(got[k] - want[k]) > 1e-6 * max(1, want[k]))
        raise AssertionError(f"for labels {labels} the weight of class {k:g} is {got[k]:.4f}, expected N / (K n_c) = "
                             f"{len(labels)} / ({len(classes)} * {int(counts[list(classes).index(k)])}) = {want[k]:.4f}")


# ---------------------------------------------------------------- q2, q3
@functools.lru_cache(maxsize=1)
def reference() -> dict:
    """The exercise's head, fitted here: validation and test margins and labels (NumPy arrays)."""
    from tlcourse.imbalance_demo import fit_head, letter_detection_pool, splits_of

    pool = letter_detection_pool(LETTER, n_max=N_MAX)
    feats, y = pool["features"].numpy(), pool["labels"].numpy()
    split = splits_of(pool, SPLIT_SEED)
    tr, va, te = split["train"], split["val"], split["test"]
    head, _, _ = fit_head(feats[tr], y[tr], feats[va], y[va])
    return {"m_va": head.decision_function(feats[va]), "y_va": y[va],
            "m_te": head.decision_function(feats[te]), "y_te": y[te]}


def macro_f1_at(y, margin, threshold) -> float:
    """Macro-F1 of the decision ``margin >= threshold`` (sklearn's ``f1_score(average="macro")``)."""
    from sklearn.metrics import f1_score

    return float(f1_score(y, (margin >= threshold).astype(int), average="macro", labels=[0, 1], zero_division=0))


def _collect_threshold(ns, seed):
    return {"threshold": _number(ns["threshold"]), "test_macro_f1": _number(ns["test_macro_f1"])}


def _grade_threshold(answer, seed):
    from tlcourse.imbalance import choose_threshold

    t = answer["threshold"]
    assert not isinstance(t, str), f"threshold should be a number (a threshold on m_va), got {_shown(t)}"
    ref = reference()
    best_t, best_val = choose_threshold(ref["y_va"], ref["m_va"])
    val_at_t = macro_f1_at(ref["y_va"], ref["m_va"], t)
    test_best_t, _ = choose_threshold(ref["y_te"], ref["m_te"])
    if val_at_t < best_val - 1e-9:
        if abs(t) < 1e-12:
            raise AssertionError(
                f"threshold = 0 is the default decision (the argmax); its validation macro-F1 is {val_at_t:.4f}, "
                f"and a threshold chosen on m_va reaches {best_val:.4f}: choose it on the validation split")
        if macro_f1_at(ref["y_te"], ref["m_te"], t) >= macro_f1_at(ref["y_te"], ref["m_te"], test_best_t) - 1e-9:
            raise AssertionError(
                f"threshold = {t:.4f} is the best threshold on the TEST split; its validation macro-F1 is "
                f"{val_at_t:.4f}, below the {best_val:.4f} the validation split allows: choose the threshold on "
                "(m_va, y_va) only, then score the test split once")
        raise AssertionError(
            f"threshold = {t:.4f} gives a validation macro-F1 of {val_at_t:.4f}, but the best threshold on m_va "
            f"reaches {best_val:.4f}: try every candidate (e.g. the midpoints between sorted validation margins)")
    reported = answer["test_macro_f1"]
    reported = _fraction(reported, "test_macro_f1")
    want = macro_f1_at(ref["y_te"], ref["m_te"], t)
    if abs(reported - want) <= 1e-6:
        return
    if abs(reported - val_at_t) <= 1e-6:
        raise AssertionError(f"test_macro_f1 = {reported:.4f} is the VALIDATION macro-F1 of your threshold; score "
                             f"(m_te >= threshold) against y_te ({want:.4f} expected)")
    if abs(reported - macro_f1_at(ref["y_te"], ref["m_te"], 0.0)) <= 1e-6:
        raise AssertionError(f"test_macro_f1 = {reported:.4f} is the test macro-F1 of the default threshold 0; "
                             f"score the threshold you chose ({want:.4f} expected)")
    raise AssertionError(f"test_macro_f1 = {reported:.4f}, but (m_te >= {t:.4f}) scores a macro-F1 of {want:.4f} "
                         "on the test split (f1_score(y_te, pred, average='macro'))")


def _collect_metrics(ns, seed):
    return {k: _number(ns[k]) for k in ("majority_accuracy", "majority_macro_f1", "test_pr_auc")}


def _grade_metrics(answer, seed):
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    ref = reference()
    y, m = ref["y_te"], ref["m_te"]
    acc = _fraction(answer["majority_accuracy"], "majority_accuracy")
    want_acc = float((y == 0).mean())
    assert abs(acc - want_acc) < 1e-6, (
        f"majority_accuracy = {acc:.4f}; the always-'other' predictor is right on every other letter of the test "
        f"split: {want_acc:.4f}")
    f1 = _fraction(answer["majority_macro_f1"], "majority_macro_f1")
    zeros = np.zeros_like(y)
    want_f1 = float(f1_score(y, zeros, average="macro", labels=[0, 1], zero_division=0))
    if abs(f1 - want_f1) > 1e-6:
        if abs(f1) < 1e-9:
            raise AssertionError("majority_macro_f1 = 0 is the F1 of the E alone (f1_score's default "
                                 "average='binary'); macro-F1 averages the F1 of both classes: average='macro'")
        raise AssertionError(f"majority_macro_f1 = {f1:.4f}; the mean of the two classes' F1 is {want_f1:.4f}")
    ap = _fraction(answer["test_pr_auc"], "test_pr_auc")
    want_ap = float(average_precision_score(y, m))
    if abs(ap - want_ap) <= 1e-6:
        return
    if abs(ap - float(average_precision_score(y, (m >= 0).astype(int)))) <= 1e-6:
        raise AssertionError("test_pr_auc was computed from hard predictions (0/1): the area under the "
                             "precision-recall curve ranks the SCORES, average_precision_score(y_te, m_te)")
    if abs(ap - float(roc_auc_score(y, m))) <= 1e-6:
        raise AssertionError(f"test_pr_auc = {ap:.4f} is the ROC-AUC; the PR-AUC is average_precision_score(y_te, m_te)")
    raise AssertionError(f"test_pr_auc = {ap:.4f}, but the average precision of m_te on the test split is {want_ap:.4f}")


# ---------------------------------------------------------------- q4
Q4_CHOICES = {
    "a": "Both fall by about the same amount: the test set is harder.",
    "b": "ROC-AUC stays about the same; PR-AUC falls, because ten times more negatives at the same "
         "false-positive rate mean ten times more false alarms per true positive.",
    "c": "Both stay the same: the model and its scores on each class have not changed.",
    "d": "ROC-AUC falls; PR-AUC stays the same, because precision is normalised by the number of positives.",
}
_Q4_FEEDBACK = {
    "a": "ROC-AUC is the probability that a random positive outranks a random negative. Does adding more "
         "negatives from the same distribution change that probability?",
    "c": "the per-class score distributions are the same, so one of the two areas stays put; but precision "
         "counts false positives against true positives. What happens to it when the negatives multiply?",
    "d": "which of the two rates is divided by the number of negatives, the false-positive rate or precision?",
}
_Q4_ANSWER = "b"


QUESTIONS = [
    Question("q1", points=2, names=("balanced_weights",), collect=_collect_weights, grade=_grade_weights,
             hint="classes, counts = np.unique(labels, return_counts=True); "
                  "return dict(zip(classes.tolist(), (len(labels) / (len(classes) * counts)).tolist()))"),
    Question("q2", points=2, names=("threshold", "test_macro_f1"), collect=_collect_threshold,
             grade=_grade_threshold,
             hint="threshold, _ = choose_threshold(y_va, m_va); "
                  "test_macro_f1 = f1_score(y_te, (m_te >= threshold).astype(int), average='macro')"),
    Question("q3", points=1, names=("majority_accuracy", "majority_macro_f1", "test_pr_auc"),
             collect=_collect_metrics, grade=_grade_metrics,
             hint="zeros = np.zeros_like(y_te); f1_score(y_te, zeros, average='macro', zero_division=0); "
                  "average_precision_score(y_te, m_te)"),
    choice_question("q4", "answer_q4", choices=Q4_CHOICES, answer=_Q4_ANSWER, feedback=_Q4_FEEDBACK, points=1,
                    hint="Look at step 3 of the chapter: the same model scored at 1:1, 1:5, 1:20 and 1:50."),
]


def prepare() -> None:
    """Before a batch: train or load the source model once, so each sandbox copies a warm cache."""
    from tlcourse import zoo

    zoo.pretrained_digit_cnn(seed=0)

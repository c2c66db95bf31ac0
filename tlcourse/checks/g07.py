"""Checks for exercise G07 (domain similarity): LEEP from soft source probabilities, the unbiased
MMD² with a Gaussian kernel, a domain classifier scored on held-out data, and one question on
reading a separable pair that transfers well.

Every ``collect`` runs in the student's kernel, calls the student's function on inputs drawn from
the grading seed and returns plain data; every ``grade`` runs in the trusted process, redraws the
same inputs from the seed and computes the reference itself (:func:`tlcourse.transferability.leep`,
:func:`tlcourse.divergence.mmd2_unbiased`). Nothing from the student's namespace is trusted.

- **q1** (2 points) ``leep_score(source_probs, target_labels)``: three seeded cases (40-80
  examples, 3-8 source classes, 2-5 target classes, probabilities from a Dirichlet with labels
  tied to the source argmax), compared with the package's LEEP within 1e-6. The argmax version
  (NCE's hard pseudo-labels), the joint used without dividing by P(z), and a positive score are
  each recognised and explained.
- **q2** (2 points) ``mmd2_unbiased_rbf(x, y, sigma)`` with ``k(a, b) = exp(-|a - b|² / (2 sigma²))``:
  four seeded cases (samples of 8-20 points in 2-5 dimensions, one pair from the same
  distribution), compared with the package's estimator at that single bandwidth within 1e-6
  relative. The biased V-statistic (diagonal kept) and the kernel without the 2 are recognised.
- **q3** (2 points) ``domain_accuracy(source_features, target_features, seed)``: the held-out
  accuracy of any domain classifier. Two pairs of samples from the same 300-dimensional Gaussian
  (150 each) and one pair shifted by 0.5 in every coordinate. Over 100 grading seeds, both correct
  answers of the tests passed every time: standardised logistic regression on a 50 % split, and a
  random forest on a 20 % split, the weakest tried (0.93-1.00 on the shifted pair; 0.85-0.95 at a
  shift of 0.3, too close to the bar). Scored on its training data, logistic regression reaches
  1.00 on the same-distribution pairs and is caught on 30 of 30 seeds. The mean of the two same-distribution pairs must lie in
  [0.3, 0.7], neither may exceed 0.85 (the training-data trap) and the shifted pair must reach 0.8.
- **q4** (1 point) ``answer_q4``: what a domain classifier at 94 % with a probe at 0.94 shows,
  by choice.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from tlcourse.grading import Question
from tlcourse.grading.choice import choice_question
from tlcourse.grading.answers import call as _call
from tlcourse.grading.answers import returned_float as _result

_REL_TOL = 1e-6
_SAME_MEAN_RANGE = (0.3, 0.7)
_TRAINING_DATA_TRAP = 0.85
_SHIFTED_MIN = 0.8
_DIM, _PER_DOMAIN, _SHIFT = 300, 150, 0.5


# ---------------------------------------------------------------- helpers (both sides)
def _cases(answer, n: int) -> list:
    cases = answer.get("cases") if isinstance(answer, dict) else None
    assert isinstance(cases, list) and len(cases) == n, (
        "the collected answer is malformed: run the notebook from the top, then check again")
    return cases


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_REL_TOL, abs_tol=_REL_TOL)


# ---------------------------------------------------------------- q1: LEEP
def _leep_cases(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng([seed, 1])
    out = []
    for _ in range(3):
        n, z, k = int(rng.integers(40, 81)), int(rng.integers(3, 9)), int(rng.integers(2, 6))
        probs = rng.dirichlet(np.full(z, 0.4), size=n)
        # target labels follow the source argmax through a random map, with 30 % noise
        mapping = rng.integers(0, k, size=z)
        labels = mapping[probs.argmax(1)]
        noisy = rng.random(n) < 0.3
        labels[noisy] = rng.integers(0, k, size=int(noisy.sum()))
        labels[:k] = np.arange(k)  # every class present
        out.append((probs, labels.astype(np.int64)))
    return out


def _leep_without_marginal(probs, labels) -> float:
    joint = np.stack([probs[labels == c].sum(0) for c in range(labels.max() + 1)]) / len(labels)
    return float(np.mean(np.log((probs @ joint.T)[np.arange(len(labels)), labels])))


def _collect_leep(ns, seed):
    fn = ns["leep_score"]
    return {"cases": [_call(fn, p.copy(), y.copy()) for p, y in _leep_cases(seed)]}


def _grade_leep(answer, seed):
    from tlcourse.transferability import leep

    for i, ((probs, labels), entry) in enumerate(zip(_leep_cases(seed), _cases(answer, 3))):
        expected = leep(probs, labels)
        call = f"leep_score(case {i + 1}: {probs.shape[0]} examples, {probs.shape[1]} source classes)"
        got = _result(entry, call, f"{expected:.6f}")
        if _close(got, expected):
            continue
        hard = leep(np.eye(probs.shape[1])[probs.argmax(1)], labels)
        if _close(got, hard):
            raise AssertionError(
                f"{call} = {got:.6f}, which is LEEP on argmax pseudo-labels (the hard-label score behind "
                f"NCE); LEEP keeps the soft probabilities theta(x_i): expected {expected:.6f}")
        if _close(got, _leep_without_marginal(probs, labels)):
            raise AssertionError(
                f"{call} = {got:.6f}: you used the joint P(y, z) where LEEP needs the conditional "
                f"P(y | z) = P(y, z) / P(z); expected {expected:.6f}")
        assert got <= 1e-12, (
            f"{call} = {got:.6f} > 0, impossible for a mean log-likelihood: LEEP <= 0. Expected {expected:.6f}")
        raise AssertionError(
            f"{call} = {got:.6f}, expected {expected:.6f}. Build P(y, z) = (1/n) sum over examples of class y "
            "of theta(x_i)_z, divide by P(z) = sum_y P(y, z), then average log sum_z P(y_i | z) theta(x_i)_z")


# ---------------------------------------------------------------- q2: MMD²
def _mmd_cases(seed: int) -> list[tuple[np.ndarray, np.ndarray, float]]:
    rng = np.random.default_rng([seed, 2])
    out = []
    for shift in (0.0, 0.5, 1.0, 2.0):
        n, m, d = int(rng.integers(8, 21)), int(rng.integers(8, 21)), int(rng.integers(2, 6))
        x = rng.normal(size=(n, d))
        y = rng.normal(size=(m, d)) * float(rng.uniform(0.8, 1.5)) + shift
        out.append((x, y, float(rng.uniform(0.5, 3.0))))
    return out


def _mmd_reference(x, y, sigma, biased=False, factor=2.0) -> float:
    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.exp(-d2 / (factor * sigma ** 2))
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    if biased:
        return float(kxx.mean() + kyy.mean() - 2 * kxy.mean())
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2 * kxy.mean())


def _collect_mmd(ns, seed):
    fn = ns["mmd2_unbiased_rbf"]
    return {"cases": [_call(fn, x.copy(), y.copy(), sigma) for x, y, sigma in _mmd_cases(seed)]}


def _grade_mmd(answer, seed):
    from tlcourse.divergence import mmd2_unbiased

    for i, ((x, y, sigma), entry) in enumerate(zip(_mmd_cases(seed), _cases(answer, 4))):
        expected = float(mmd2_unbiased(torch.from_numpy(x), torch.from_numpy(y),
                                       bandwidths=torch.tensor([sigma], dtype=torch.float64)))
        call = f"mmd2_unbiased_rbf(x {x.shape}, y {y.shape}, sigma={sigma:.3f})"
        got = _result(entry, call, f"{expected:.6f}")
        if _close(got, expected):
            continue
        if _close(got, _mmd_reference(x, y, sigma, biased=True)):
            raise AssertionError(
                f"{call} = {got:.6f}: that is the biased estimate, which keeps the i = j terms k(x_i, x_i) = 1. "
                f"The unbiased one averages k(x_i, x_j) over i != j only, dividing by n(n - 1); expected {expected:.6f}")
        if _close(got, _mmd_reference(x, y, sigma, factor=1.0)):
            raise AssertionError(
                f"{call} = {got:.6f}: the kernel is exp(-|a - b|^2 / (2 sigma^2)); you left out the 2. "
                f"Expected {expected:.6f}")
        raise AssertionError(
            f"{call} = {got:.6f}, expected {expected:.6f}: mean of k(x_i, x_j) over i != j, plus the same for y, "
            "minus twice the mean of k(x_i, y_j) over all pairs")


# ---------------------------------------------------------------- q3: a held-out domain classifier
def _domain_cases(seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng([seed, 3])
    draw = lambda: rng.normal(size=(_PER_DOMAIN, _DIM))  # noqa: E731
    return [("same distribution, draw 1", draw(), draw()),
            ("same distribution, draw 2", draw(), draw()),
            (f"target shifted by {_SHIFT} in every coordinate", draw(), draw() + _SHIFT)]


def _collect_domain(ns, seed):
    fn = ns["domain_accuracy"]
    return {"cases": [_call(fn, a.copy(), b.copy(), int(seed % 2**31)) for _, a, b in _domain_cases(seed)]}


def _grade_domain(answer, seed):
    cases = _domain_cases(seed)
    got = []
    for (what, a, b), entry in zip(cases, _cases(answer, 3)):
        call = f"domain_accuracy({what}: {a.shape} vs {b.shape})"
        value = _result(entry, call, "an accuracy in [0, 1]")
        assert 0 <= value <= 1, f"{call} = {value}; an accuracy is a fraction in [0, 1]"
        got.append(value)
    same, shifted = got[:2], got[2]
    assert max(same) <= _TRAINING_DATA_TRAP, (
        f"on two samples from the same distribution your classifier reaches {max(same):.2f}: it was scored "
        f"on the examples it was fitted on. With {_DIM} features and {2 * _PER_DOMAIN} examples any linear "
        "classifier separates them; fit on one part of the pooled examples and score on the other")
    low, high = _SAME_MEAN_RANGE
    assert low <= np.mean(same) <= high, (
        f"on samples from the same distribution the held-out accuracy should be near chance (0.5); yours "
        f"averages {np.mean(same):.2f}. Is the domain label 0 for source and 1 for target, and is the "
        "split stratified?")
    assert shifted >= _SHIFTED_MIN, (
        f"on a clearly shifted pair your accuracy is only {shifted:.2f}"
        + (" (below chance: are you returning the error rather than the accuracy?)" if shifted < 0.3 else
           "; a standardised logistic regression reaches about 0.98. Did you fit the classifier?"))


# ---------------------------------------------------------------- q4: reading a separable pair
Q4_CHOICES = {
    "a": "The domain classifier overfits; scored on its training data it would be reliable.",
    "b": "Transfer to USPS will fail, so the source CNN should not be used.",
    "c": "The classifier detects style differences (stroke width, size, blur) that digit labels do not "
         "depend on: separable inputs say little about whether the labelling rule carries over.",
    "d": "The CNN's features are faulty: the same digit should give the same features in both datasets.",
}
_Q4_ANSWER = "c"
_Q4_FEEDBACK = {
    "a": "the 94 % is measured on held-out examples, which is what makes it meaningful; on its training "
         "data any two samples look separable (question 3). Ask what the classifier is picking up.",
    "b": "the probe on the same frozen features reaches 0.94 on USPS: transfer worked. What does the "
         "domain classifier see that the digit labels ignore?",
    "d": "features always differ between datasets (resolution, stroke, centring); a good feature "
         "extractor only needs the digit classes to stay separable, and the probe shows they do.",
}


QUESTIONS = [
    Question("q1", points=2, names=("leep_score",), collect=_collect_leep, grade=_grade_leep,
             hint="joint[y] = probs[labels == y].sum(0) / n; conditional = joint / joint.sum(0); then "
                  "np.mean(np.log((probs @ conditional.T)[np.arange(n), labels]))."),
    Question("q2", points=2, names=("mmd2_unbiased_rbf",), collect=_collect_mmd, grade=_grade_mmd,
             hint="K = np.exp(-squared_distances / (2 * sigma**2)) for xx, yy and xy; drop the diagonals of "
                  "Kxx and Kyy and divide by n(n - 1) and m(m - 1)."),
    Question("q3", points=2, names=("domain_accuracy",), collect=_collect_domain, grade=_grade_domain,
             hint="np.r_[source, target] with labels 0 and 1; train_test_split(..., stratify=labels, "
                  "random_state=seed); fit on the training part, .score on the other."),
    choice_question("q4", "answer_q4", choices=Q4_CHOICES, answer=_Q4_ANSWER,
                    feedback=_Q4_FEEDBACK, points=1,
                    hint="Compare the EMNIST -> USPS row of the chapter's table: domain accuracy and probe accuracy."),
]

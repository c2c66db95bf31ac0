"""Checks for exercise S06 (why transfer works): the right-hand side of the Ben-David et al. (2010)
bound from its measured terms, lambda estimated with target labels, and two questions on reading
the chapter's results (a vacuous bound; the layer-transfer curve).

Every ``collect`` runs in the student's kernel, calls the student's function on inputs drawn from
the grading seed and returns plain data; every ``grade`` runs in the trusted process, redraws the
same inputs from the seed and computes the reference itself. Nothing from the student's namespace
is trusted.

- **q1** (2 points) ``bound_estimate(source_error, domain_error, lambda_)``: five seeded cases of
  measured terms (one with a domain classifier worse than chance, whose proxy A-distance is clipped
  to 0). Expected: ``source_error + 1/2 * clip(2 (1 - 2 domain_error), 0, 2) + lambda_`` within
  1e-6 (float32 answers pass). The bound without the 1/2, the domain error used as if it were the distance, the proxy
  without its factor 2, the unclipped proxy and a dropped lambda are each recognised and named.
- **q2** (2 points) ``estimate_lambda(x_s, y_s, x_t, y_t, seed)`` for the hypothesis class of
  (standardised) logistic regression: three domain pairs from
  :func:`tlcourse.bounds.rotated_blobs` (0, 90 and 135 degrees, 1,000 points per class and
  domain). The reference is lambda of the same class on 16,000 fresh points per domain; an
  answer passes within 0.08 of it. Over 20 seeds, the package's estimate and a 70/30 split with an
  unscaled, weakly regularised logistic regression stayed within 0.05, the source-only classifier
  (its source plus target errors) was 0.20-0.39 too high at 90 and 135 degrees, and twice the
  source error 0.13-0.47 too low: both are recognised.
- **q3** (1 point) ``answer_q3``: what a bound estimate above 1 says, by choice
  (:func:`tlcourse.grading.choice.choice_question`).
- **q4** (1 point) ``answer_q4``: what the frozen and fine-tuned layer-transfer curves show, by choice.
"""
from __future__ import annotations

import math

import numpy as np

from tlcourse.grading import Question
from tlcourse.grading.choice import choice_question
from tlcourse.grading.answers import call as _call
from tlcourse.grading.answers import returned_float as _number

_TOL_Q1 = 1e-6
_TOL_LAMBDA = 0.08
Q2_ANGLES = (0, 90, 135)
Q2_PER_CLASS = 1000
_REFERENCE_PER_CLASS = 8000


# ---------------------------------------------------------------- helpers (both sides)
def _cases(answer, n: int) -> list:
    cases = answer.get("cases") if isinstance(answer, dict) else None
    assert isinstance(cases, list) and len(cases) == n, (
        "the collected answer is malformed: run the notebook from the top, then check again")
    return cases


# ---------------------------------------------------------------- q1: the bound's right-hand side
def q1_cases(seed: int) -> list[tuple[float, float, float]]:
    """(source_error, domain_error, lambda_) of the five q1 cases; the fourth domain error is above 0.5."""
    rng = np.random.default_rng([seed, 61])
    cases = []
    for i in range(5):
        source_error = float(rng.uniform(0.02, 0.2))
        domain_error = float(rng.uniform(0.52, 0.6) if i == 3 else rng.uniform(0.03, 0.45))
        cases.append((source_error, domain_error, float(rng.uniform(0.05, 0.5))))
    return cases


def bound_reference(source_error: float, domain_error: float, lambda_: float) -> float:
    """``eps_S + 1/2 d_A + lambda`` with the proxy ``d_A = clip(2 (1 - 2 err), 0, 2)``."""
    return source_error + 0.5 * min(max(2.0 * (1.0 - 2.0 * domain_error), 0.0), 2.0) + lambda_


def _q1_mistakes(s: float, e: float, lam: float) -> list[tuple[float, str]]:
    pad = min(max(2.0 * (1.0 - 2.0 * e), 0.0), 2.0)
    return [
        (s + pad + lam, "that is eps_S + d_A + lambda, the bound without its 1/2: Theorem 2 of Ben-David et al. "
                        "(2010) has 1/2 d_HΔH, and the proxy A-distance 2 (1 - 2 err) estimates d, not d / 2"),
        (s + 0.5 * e + lam, "you used the domain classifier's error as if it were the distance; convert it first: "
                            "d_A = 2 (1 - 2 err), so a classifier at chance (err = 0.5) means d_A = 0"),
        (s + e + lam, "you used the domain classifier's error as if it were the distance; convert it first: "
                      "d_A = 2 (1 - 2 err), so a classifier at chance (err = 0.5) means d_A = 0"),
        (s + 0.5 * (1.0 - 2.0 * e) + lam, "the proxy A-distance is 2 (1 - 2 err), with the factor 2 (it ranges over "
                                          "[0, 2]); you halved it twice"),
        (s + (1.0 - 2.0 * e) + lam, "a domain classifier worse than chance on held-out data found no separation: "
                                    "clip the proxy 2 (1 - 2 err) to [0, 2] before halving it, it is never negative"),
        (s + 0.5 * pad, "lambda is missing: the bound is eps_S + 1/2 d + lambda, and lambda is the error of the "
                        "best joint hypothesis, which can be large even when the domains look alike"),
    ]


def _collect_bound(ns, seed):
    fn = ns["bound_estimate"]
    return {"cases": [_call(fn, s, e, lam) for s, e, lam in q1_cases(seed)]}


def _grade_bound(answer, seed):
    for (s, e, lam), entry in zip(q1_cases(seed), _cases(answer, 5)):
        expected = bound_reference(s, e, lam)
        call = f"bound_estimate(source_error={s:.4f}, domain_error={e:.4f}, lambda_={lam:.4f})"
        got = _number(entry, call, f"{expected:.4f}")
        if math.isclose(got, expected, rel_tol=_TOL_Q1, abs_tol=_TOL_Q1):
            continue
        for value, why in _q1_mistakes(s, e, lam):
            if math.isclose(got, value, rel_tol=_TOL_Q1, abs_tol=_TOL_Q1):
                raise AssertionError(f"{call} = {got:.4f}: {why}. Expected {expected:.4f}")
        raise AssertionError(f"{call} = {got:.4f}, expected {expected:.4f} = source_error + "
                             "1/2 * clip(2 (1 - 2 domain_error), 0, 2) + lambda_")


# ---------------------------------------------------------------- q2: lambda needs target labels
def q2_domains(seed: int) -> list[tuple[int, tuple[np.ndarray, ...]]]:
    """``(angle, (x_s, y_s, x_t, y_t))`` of the three q2 domain pairs."""
    base = int(np.random.default_rng([seed, 62]).integers(0, 2**31 - 10))
    return [(angle, _rotated(angle, Q2_PER_CLASS, base + i)) for i, angle in enumerate(Q2_ANGLES)]


def _rotated(angle, n_per_class, seed):
    from tlcourse.bounds import rotated_blobs

    return rotated_blobs(angle, n_per_class=n_per_class, seed=seed)


def lambda_reference(angle: float, seed: int) -> tuple[float, float, float]:
    """``(lambda, source-only errors summed, twice the source error)`` for linear ``H`` on fresh, large
    samples of the q2 distribution: fitted on one sample, scored on another."""
    from tlcourse.bounds import default_hypothesis_class

    fit_s = _rotated(angle, _REFERENCE_PER_CLASS, seed + 1_000_003)
    score_s = _rotated(angle, _REFERENCE_PER_CLASS, seed + 2_000_003)
    xs, ys, xt, yt = fit_s
    xs2, ys2, xt2, yt2 = score_s
    joint = default_hypothesis_class().fit(np.concatenate([xs, xt]), np.concatenate([ys, yt]))
    source = default_hypothesis_class().fit(xs, ys)
    err = lambda h, x, y: float(np.mean(h.predict(x) != y))  # noqa: E731
    return (err(joint, xs2, ys2) + err(joint, xt2, yt2), err(source, xs2, ys2) + err(source, xt2, yt2),
            2 * err(source, xs2, ys2))


def _collect_lambda(ns, seed):
    fn = ns["estimate_lambda"]
    split_seed = int(seed % 2**31)
    return {"cases": [_call(fn, *(a.copy() for a in data), split_seed) for _, data in q2_domains(seed)]}


def _grade_lambda(answer, seed):
    base = int(np.random.default_rng([seed, 62]).integers(0, 2**31 - 10))
    for i, ((angle, _), entry) in enumerate(zip(q2_domains(seed), _cases(answer, len(Q2_ANGLES)))):
        call = f"estimate_lambda(blobs rotated by {angle} degrees)"
        expected, source_only, twice_source = lambda_reference(angle, base + i)
        got = _number(entry, call, f"about {expected:.3f}")
        assert 0.0 <= got <= 2.0, f"{call} = {got:.3f}: lambda is a sum of two error rates, in [0, 2]"
        if abs(got - expected) <= _TOL_LAMBDA:
            continue
        if abs(got - source_only) < abs(got - expected):
            raise AssertionError(
                f"{call} = {got:.3f}, close to {source_only:.3f}, the source-only classifier's source plus target "
                f"errors; lambda is about {expected:.3f}. Lambda belongs to the best *joint* hypothesis: fit one "
                "classifier on the labelled training parts of both domains, then add its held-out errors")
        if abs(got - twice_source) < abs(got - expected):
            raise AssertionError(
                f"{call} = {got:.3f}, close to twice the source error ({twice_source:.3f}); lambda is about "
                f"{expected:.3f}. It cannot be computed from the source alone: it needs target labels")
        raise AssertionError(
            f"{call} = {got:.3f}, but lambda for logistic regression is about {expected:.3f}: fit one classifier on "
            "the training halves of both domains (labels included) and return its held-out source error plus "
            "its held-out target error")


# ---------------------------------------------------------------- q3, q4: choices
Q3_CHOICES = {
    "a": "Transfer fails for every rotation: the bound allows a target error of 100 %.",
    "b": "The bound is vacuous there: an upper bound above 1 rules nothing out, so the target error must be "
         "measured on labelled target data; the terms still say what to shrink.",
    "c": "The finite-sample term is an artefact and should be dropped: without it the estimate is a guarantee.",
    "d": "The 1/2 in front of the divergence is a typo; without it the bound would be tighter.",
}
Q3_ANSWER = "b"
_Q3_FEEDBACK = {
    "a": "an error rate is at most 1 anyway, so a bound above 1 says nothing either way: at 0 degrees the "
         "measured target error is about 8 %. An upper bound can be loose without the quantity being large.",
    "c": "the finite-sample term is part of Theorem 2: without it the plug-in estimate is no guarantee at all "
         "(it can even fall below the true error by sampling noise).",
    "d": "removing the 1/2 makes the right-hand side larger, not smaller, and the theorem has it: "
         "1/2 d_HΔH comes from the triangle inequality in its proof.",
}
Q4_CHOICES = {
    "a": "Frozen copies get fewer training steps than the baseline, so they fall behind.",
    "b": "Cutting between co-adapted layers is the cause: the BnB control falls just as AnB does.",
    "c": "The copied upper layers are specific to digits 0-4; frozen, the new layers cannot undo that, while "
         "fine-tuning adapts them and recovers; the flat BnB control rules out co-adaptation in this network.",
    "d": "Deeper copies overfit the 100 training images of task B.",
}
Q4_ANSWER = "c"
_Q4_FEEDBACK = {
    "a": "every arm gets the same epochs, batch size and learning rate (the chapter asserts equal steps); "
         "frozen arms update fewer parameters, not fewer times.",
    "b": "look at the BnB row: copying the network's *own* first layers, frozen, stays at the baseline in this "
         "run, so cutting between layers is not what costs AnB its accuracy here (it was in Yosinski's 8-layer net).",
    "d": "the frozen arms train fewer parameters the deeper the copy, which makes overfitting less likely, not more.",
}


QUESTIONS = [
    Question("q1", points=2, names=("bound_estimate",), collect=_collect_bound, grade=_grade_bound,
             hint="d_A = 2 * (1 - 2 * domain_error), clipped to [0, 2]; return source_error + d_A / 2 + lambda_."),
    Question("q2", points=2, names=("estimate_lambda",), collect=_collect_lambda, grade=_grade_lambda,
             hint="train_test_split each domain (random_state=seed); fit one LogisticRegression on both training "
                  "parts; lambda = its held-out source error + its held-out target error."),
    choice_question("q3", "answer_q3", choices=Q3_CHOICES, answer=Q3_ANSWER, feedback=_Q3_FEEDBACK,
                    hint="What does an upper bound of 1.3 on an error rate rule out?"),
    choice_question("q4", "answer_q4", choices=Q4_CHOICES, answer=Q4_ANSWER, feedback=_Q4_FEEDBACK,
                    hint="Compare the AnB, AnB+ and BnB rows of the chapter's table at n = 3 and 4."),
]

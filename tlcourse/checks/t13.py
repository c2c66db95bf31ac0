"""Checks for exercise T13 (knowledge distillation): the distillation loss written by hand, a
temperature chosen on the validation split with its honest test accuracy, and one question on what
a student that never saw a class learns at T = 1.

Every ``collect`` runs in the student's kernel and returns plain data; every ``grade`` runs in the
trusted process and rebuilds what it compares with from the seed and from data it loads itself:
the digits splits from :func:`tlcourse.distill_demo.digits_splits`, a teacher and students trained
by :func:`tlcourse.distill_demo.train_teacher` and :func:`tlcourse.distill_demo.train_student` (all
on the CPU, seeded). Nothing in the student's namespace (``x_test``, ``teacher``) is trusted.

- **q1** (2 points) ``kd_loss(student_logits, teacher_logits, labels, temperature, alpha)``.
  *collect*: the student's function on five (T, alpha) cases of random logits drawn from the seed
  (16 examples, 10 classes). *grade*: each value must equal
  ``alpha * T**2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)`` (batch-mean KL)
  computed here in float64; the usual mistakes (no ``T**2``, ``nn.KLDivLoss`` fed probabilities,
  ``reduction="mean"``, the reversed KL, an unsoftened student, alpha on the wrong term, a summed
  batch) are recognised and named.
- **q2** (2 points) ``val_acc_by_T``, ``best_T`` and ``best_T_test_acc``. The students of the
  sweep are seeded, so the grader trains the same three itself (a teacher and three students,
  about 2 s, cached for the session). ``val_acc_by_T`` must match its validation accuracies to one image;
  ``best_T`` must be the best temperature *in the student's own* ``val_acc_by_T``; and
  ``best_T_test_acc`` the grader's test accuracy of that student to one image. With the exercise's
  splits the validation split picks T = 4 while the test split would pick T = 16, so choosing on
  the test split fails, and so does the validation accuracy reported as the test accuracy.
- **q3** (1 point) ``answer_q3``: a choice, checked by letter.
"""
from __future__ import annotations

import functools
import numbers

import numpy as np
import torch
from torch.nn import functional as F

from tlcourse.grading import Question
from tlcourse.grading.answers import NOT_PLAIN as _NOT_PLAIN, shown as _shown, scalar as _scalar
from tlcourse.grading.choice import choice_question

# ---------------------------------------------------------------- the exercise's fixed setting
SPLIT_SEED = 3             # digits_splits(SPLIT_SEED) and the teacher's initialisation
STUDENT_SEED = 0           # every student of the sweep starts from the same weights
TEMPERATURES = (1, 4, 16)
ALPHA = 0.9
Q1_CASES = ((4.0, 0.9), (1.0, 0.5), (8.0, 1.0), (2.0, 0.0), (3.0, 0.7))
_N, _C = 16, 10


# ---------------------------------------------------------------- q1
def q1_inputs(seed: int):
    """The (student_logits, teacher_logits, labels) of every q1 case, drawn from ``seed`` (float32)."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in Q1_CASES:
        s = torch.tensor(3 * rng.standard_normal((_N, _C)), dtype=torch.float32)
        t = torch.tensor(3 * rng.standard_normal((_N, _C)), dtype=torch.float32)
        y = torch.tensor(rng.integers(0, _C, _N), dtype=torch.long)
        cases.append((s, t, y))
    return cases


def _collect_loss(ns, seed):
    fn = ns["kd_loss"]
    values = []
    for (s, t, y), (T, alpha) in zip(q1_inputs(seed), Q1_CASES):
        try:
            values.append(_scalar(fn(s.clone(), t.clone(), y.clone(), T, alpha)))
        except NotImplementedError:
            return {"error": "kd_loss raises NotImplementedError: replace the placeholder with your code"}
        except Exception as exc:  # noqa: BLE001 - reported to the student
            return {"error": f"kd_loss(student_logits, teacher_logits, labels, temperature={T}, alpha={alpha}) "
                             f"raised {type(exc).__name__}: {str(exc)[:200]}"}
    return {"values": values}


def _kl(q, log_q, log_p, reduce="batchmean"):
    per_example = (q * (log_q - log_p)).sum(1)
    return {"batchmean": per_example.mean(), "mean": per_example.mean() / q.shape[1],
            "sum": per_example.sum()}[reduce]


def _variants(s, t, y, T, alpha) -> dict:
    """The right loss and the usual wrong ones, in float64."""
    s, t = s.double(), t.double()
    log_p, log_q = F.log_softmax(s / T, 1), F.log_softmax(t / T, 1)
    p, q = log_p.exp(), log_q.exp()
    ce = F.cross_entropy(s, y)
    kl = _kl(q, log_q, log_p)
    mix = lambda soft, hard=ce: alpha * soft + (1 - alpha) * hard  # noqa: E731
    # nn.KLDivLoss(reduction="batchmean")(input=p, target=q): sum q (log q - p) / N
    probs_in = (q * (log_q - p)).sum(1).mean()
    return {
        "right": mix(T ** 2 * kl),
        "the T**2 factor is missing: without it the soft term's gradients shrink like 1/T**2, so "
        "multiply the KL by temperature ** 2": mix(kl),
        "nn.KLDivLoss / F.kl_div got probabilities as its input: the input must be the student's "
        "LOG-probabilities, F.log_softmax(student_logits / T, dim=1)": mix(T ** 2 * probs_in),
        "the KL is averaged over classes as well as examples (reduction='mean'): use "
        "reduction='batchmean', which sums over classes and divides by the batch size":
            mix(T ** 2 * _kl(q, log_q, log_p, "mean")),
        "the KL is summed over the batch (reduction='sum'): use reduction='batchmean'":
            mix(T ** 2 * _kl(q, log_q, log_p, "sum")),
        "the KL goes the wrong way, KL(student || teacher): the teacher's probabilities are the "
        "target, so the input is the student's log-probabilities and the target the teacher's "
        "probabilities": mix(T ** 2 * _kl(p, log_p, log_q)),
        "the student's logits are not divided by the temperature: soften both, student and teacher":
            mix(T ** 2 * _kl(q, log_q, F.log_softmax(s, 1))),
        "alpha weighs the wrong term: alpha multiplies the soft (KL) term, 1 - alpha the "
        "cross-entropy": (1 - alpha) * T ** 2 * kl + alpha * ce,
        "the cross-entropy uses the softened student: the hard-label term is the ordinary "
        "cross-entropy at T = 1": mix(T ** 2 * kl, F.cross_entropy(s / T, y)),
    }


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-4 * max(1.0, abs(b))


def _grade_loss(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    assert "error" not in answer, answer.get("error")
    values = answer["values"]
    for v, (T, alpha) in zip(values, Q1_CASES):
        assert not isinstance(v, str), (
            f"kd_loss(..., temperature={T}, alpha={alpha}) returned {_shown(v)}; return a scalar tensor "
            "(or a float)")
    cases = [_variants(s, t, y, T, alpha) for (s, t, y), (T, alpha) in zip(q1_inputs(seed), Q1_CASES)]
    wrong = [(T, alpha, v, float(c["right"])) for v, c, (T, alpha) in zip(values, cases, Q1_CASES)
             if not _close(v, float(c["right"]))]
    if not wrong:
        return
    for mistake in cases[0]:
        if mistake != "right" and all(_close(v, float(c[mistake])) for v, c in zip(values, cases)):
            raise AssertionError(f"kd_loss is off on random logits: {mistake}")
    T, alpha, got, want = wrong[0]
    raise AssertionError(
        f"kd_loss(..., temperature={T}, alpha={alpha}) = {got:.5f} on random logits, expected {want:.5f} "
        f"(wrong in {len(wrong)} of {len(Q1_CASES)} cases). The loss is alpha * T**2 * KL(teacher || "
        "student), both softened by T and averaged over the batch, plus (1 - alpha) * cross-entropy at T = 1")


# ---------------------------------------------------------------- q2
@functools.lru_cache(maxsize=1)
def reference_sweep() -> dict:
    """The exercise's sweep, trained here: ``{"val": {T: acc}, "test": {T: acc}, "n_val", "n_test"}``."""
    from tlcourse.distill_demo import accuracy, digits_splits, train_student, train_teacher
    from tlcourse.train import predict

    splits = digits_splits(SPLIT_SEED)
    teacher = train_teacher(*splits["transfer"], seed=SPLIT_SEED)
    x_lab, y_lab = splits["labelled"]
    stored = predict(teacher, x_lab)
    out = {"val": {}, "test": {}, "n_val": len(splits["val"][1]), "n_test": len(splits["test"][1])}
    for T in TEMPERATURES:
        student, _ = train_student(x_lab, y_lab, stored, seed=STUDENT_SEED, temperature=T, alpha=ALPHA)
        out["val"][T] = accuracy(student, *splits["val"])
        out["test"][T] = accuracy(student, *splits["test"])
    return out


def _collect_sweep(ns, seed):
    raw = ns["val_acc_by_T"]
    # dict keys cross as pairs: plain data allows only str keys
    by_t = ([[_scalar(k), _scalar(v)] for k, v in raw.items()] if isinstance(raw, dict) else _scalar(raw))
    return {"val_acc_by_T": by_t, "best_T": _scalar(ns["best_T"]), "best_T_test_acc": _scalar(ns["best_T_test_acc"])}


def _accuracy(value, what: str) -> float:
    assert not isinstance(value, str), f"{what} should be a float accuracy, got {_shown(value)}"
    assert 0 <= value <= 1, f"{what} = {value!r}; an accuracy is a fraction in [0, 1]"
    return float(value)


def _grade_sweep(answer, seed):
    by_t = answer["val_acc_by_T"]
    if isinstance(by_t, list):
        by_t = {k: v for k, v in by_t}
    assert isinstance(by_t, dict), (
        f"val_acc_by_T should be a dict {{temperature: validation accuracy}}, got {_shown(by_t)}")
    assert all(not isinstance(k, str) for k in by_t) and sorted(by_t) == sorted(TEMPERATURES), (
        f"val_acc_by_T should have one entry per temperature {list(TEMPERATURES)}, has keys "
        f"{[_shown(k) for k in by_t]}")
    ref = reference_sweep()
    one_val, one_test = 1.01 / ref["n_val"], 1.01 / ref["n_test"]
    for T in TEMPERATURES:
        got = _accuracy(by_t[T], f"val_acc_by_T[{T}]")
        if abs(got - ref["val"][T]) <= one_val:
            continue
        if abs(got - ref["test"][T]) <= one_test:
            raise AssertionError(
                f"val_acc_by_T[{T}] = {got:.4f} is the student's accuracy on the TEST split; score each "
                f"student on (x_val, y_val): the test split must not take part in choosing T")
        raise AssertionError(
            f"val_acc_by_T[{T}] = {got:.4f}, but the student distilled at T = {T} (alpha = {ALPHA}, "
            f"train_student with seed={STUDENT_SEED}) scores {ref['val'][T]:.4f} on the validation split")
    best = answer["best_T"]
    assert not isinstance(best, str) and best in by_t, (
        f"best_T = {_shown(best)} should be one of the temperatures {list(TEMPERATURES)}")
    top = max(by_t.values())
    assert by_t[best] >= top - 1e-12, (
        f"best_T = {best:g} has validation accuracy {by_t[best]:.4f}, but the best in val_acc_by_T is "
        f"{top:.4f}: choose T on the validation split, not on the test split")
    reported = _accuracy(answer["best_T_test_acc"], "best_T_test_acc")
    want = ref["test"][int(best)]
    if abs(reported - want) <= one_test:
        return
    if abs(reported - by_t[best]) < 1e-9:
        raise AssertionError(
            f"best_T_test_acc = {reported:.4f} is the validation accuracy of T = {best:g}; the "
            f"validation split chose T, now report that student's accuracy on the test split ({want:.4f} expected)")
    raise AssertionError(
        f"best_T_test_acc = {reported:.4f}, but the student distilled at T = {best:g} scores {want:.4f} on "
        f"the {ref['n_test']} test images")


# ---------------------------------------------------------------- q3
Q3_CHOICES = {
    "a": "About as many as at T = 8: the KL term matches the teacher's whole distribution whatever the "
         "temperature.",
    "b": "Almost none: at T = 1 the teacher gives class 3 a tiny probability on the other digits, so "
         "the soft targets carry almost no signal about 3s.",
    "c": "About one in ten, chance level for ten classes.",
    "d": "All of them: with alpha = 1 the hard labels, which contain no 3, are ignored.",
}
_Q3_ANSWER = "b"
_Q3_FEEDBACK = {
    "a": "the gradient is the difference between the two softened distributions; look at how big the "
         "teacher's probability of a 3 is on a training 5 or 8 at T = 1, and what that leaves to learn.",
    "c": "a student that never learns to output 3 does not guess it at random: what would make its "
         "class-3 logit win on a 3?",
    "d": "ignoring the hard labels is not enough: the student must still learn from somewhere that an "
         "image is a 3. Where would that signal come from at T = 1?",
}


QUESTIONS = [
    Question("q1", points=2, names=("kd_loss",), collect=_collect_loss, grade=_grade_loss,
             hint="log_p = F.log_softmax(s / T, 1); q = F.softmax(t / T, 1); "
                  "kl = F.kl_div(log_p, q, reduction='batchmean'); "
                  "return alpha * T**2 * kl + (1 - alpha) * F.cross_entropy(s, y)"),
    Question("q2", points=2, names=("val_acc_by_T", "best_T", "best_T_test_acc"),
             collect=_collect_sweep, grade=_grade_sweep,
             hint="score every student on (x_val, y_val); best_T = max(val_acc_by_T, key=val_acc_by_T.get); "
                  "then the test accuracy of that student only."),
    choice_question("q3", "answer_q3", choices=Q3_CHOICES, answer=_Q3_ANSWER,
                    feedback=_Q3_FEEDBACK, points=1,
                    hint="Look at the teacher's probability of class 3 at T = 1 in the chapter's dark-knowledge step."),
]

"""Checks for exercise T08 (one-shot learning): the contrastive loss written by hand, a verification
threshold chosen on held-out classes and reported honestly on the test alphabets, and one
prediction about N-way one-shot accuracy as N grows.

Every ``collect`` runs in the student's kernel and returns plain data; every ``grade`` runs in the
trusted process and rebuilds what it compares with from the seed and from data it loads itself
(:func:`exercise_pairs` reads Omniglot through ``tlcourse.data``). Nothing in the student's
namespace (``pairs``) is trusted.

- **q1** (2 points) ``contrastive_loss(z1, z2, same, margin)``, Hadsell et al. (2006):
  ``mean[ same * d**2 / 2 + (1 - same) * max(0, margin - d)**2 / 2 ]``. *collect*: the student's
  function on five cases of random embeddings drawn from the seed. *grade*: the values against a
  float64 computation; the usual mistakes (labels read the other way round, as in Hadsell et al.'s
  own Y = 0 for similar; the hinge on the squared distance; the hinge not squared; the 1/2 dropped;
  a sum over pairs; a margin on the same-class pairs too) are recognised and named.
- **q2** (2 points) ``threshold``, ``test_far``, ``test_frr``. :func:`exercise_pairs` gives the
  distances and same/different labels of pairs from the training alphabets, the Greek validation
  alphabet and the test alphabets. The threshold must sit at the validation split's equal error
  rate (false accept rate as close to the false reject rate as any threshold allows, within one
  point), so any method that finds it passes; a threshold balanced on the test pairs or on the
  training pairs instead is named as such. ``test_far`` and ``test_frr`` must be the test rates at
  the student's own threshold.
- **q3** (1 point) ``answer_q3``: a choice, checked by letter.
"""
from __future__ import annotations

import functools
import numbers

import numpy as np
import torch

from tlcourse.grading import Question
from tlcourse.grading.answers import NOT_PLAIN as _NOT_PLAIN, shown as _shown
from tlcourse.grading.choice import choice_question

Q1_CASES = ((1.0, 12), (0.5, 9), (2.0, 16), (1.5, 7), (0.8, 20))   # (margin, pairs)
_D = 4
PAIR_SEED = 8              # the exercise's pairs: the same for every student
N_PAIRS = 2000




def _scalar(value):
    """A number (0-d tensors and NumPy scalars included) as a float; anything else described."""
    if isinstance(value, bool):
        return f"{_NOT_PLAIN}bool>"
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return float(value.detach().cpu().reshape(()))
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype != object:
        return float(value.reshape(()))
    if isinstance(value, (numbers.Real, np.generic)) and not isinstance(value, str):
        return float(value)
    return f"{_NOT_PLAIN}{type(value).__name__}>"


# ---------------------------------------------------------------- q1
def q1_inputs(seed: int):
    """``(z1, z2, same)`` of every q1 case, float32 embeddings at distances around the margin."""
    rng = np.random.default_rng(seed)
    cases = []
    for margin, n in Q1_CASES:
        z1 = rng.standard_normal((n, _D))
        step = rng.standard_normal((n, _D))
        # pattern of 4: same, same, different inside the margin, different beyond it; then shuffled
        kind = np.arange(n) % 4
        scale = np.where(kind == 3, rng.uniform(1.1, 1.8, n), rng.uniform(0.2, 0.9, n))
        step *= (margin * scale[:, None]) / np.linalg.norm(step, axis=1, keepdims=True)
        same = (kind < 2).astype(float)
        order = rng.permutation(n)
        z1, step, same = z1[order], step[order], same[order]
        cases.append((torch.tensor(z1, dtype=torch.float32), torch.tensor(z1 + step, dtype=torch.float32),
                      torch.tensor(same, dtype=torch.float32)))
    return cases


def _collect_loss(ns, seed):
    fn = ns["contrastive_loss"]
    values = []
    for (z1, z2, same), (margin, _) in zip(q1_inputs(seed), Q1_CASES):
        try:
            out = fn(z1.clone(), z2.clone(), same.clone(), margin)
        except NotImplementedError:
            return {"error": "contrastive_loss raises NotImplementedError: replace the placeholder with your code"}
        except Exception as exc:  # noqa: BLE001 - reported to the student
            return {"error": f"contrastive_loss(z1, z2, same, margin={margin}) raised {type(exc).__name__}: "
                             f"{str(exc)[:200]}"}
        values.append(_scalar(out))
    return {"values": values}


def _variants(z1, z2, same, margin) -> dict:
    """The right loss and the usual wrong ones, in float64."""
    d = np.linalg.norm(z1.double().numpy() - z2.double().numpy(), axis=1)
    y = same.double().numpy()
    hinge = np.maximum(0.0, margin - d)

    def loss(pos, neg, reduce=np.mean):
        return float(reduce(y * pos + (1 - y) * neg))

    return {
        "right": loss(d ** 2 / 2, hinge ** 2 / 2),
        "the labels are read the other way round: here same = 1 means a same-class pair, which is pulled "
        "together (d**2); Hadsell et al. write Y = 0 for similar, so check which convention you use":
            loss(hinge ** 2 / 2, d ** 2 / 2),
        "the hinge is on the squared distance: use max(0, margin - d)**2 with d the Euclidean distance, "
        "not max(0, margin - d**2)": loss(d ** 2 / 2, np.maximum(0.0, margin - d ** 2) ** 2 / 2),
        "the hinge is on the squared distance: use max(0, margin - d)**2 with d the Euclidean distance, "
        "not max(0, margin**2 - d**2)": loss(d ** 2 / 2, np.maximum(0.0, margin ** 2 - d ** 2) / 2),
        "the hinge is not squared: the different-class term is max(0, margin - d)**2 / 2":
            loss(d ** 2 / 2, hinge / 2),
        "the factors 1/2 are missing: both terms are halved": loss(d ** 2, hinge ** 2),
        "the loss is summed over pairs: average it (mean over the P pairs)":
            loss(d ** 2 / 2, hinge ** 2 / 2, np.sum),
        "same-class pairs get a margin too: they cost d**2 / 2 whatever their distance, only "
        "different-class pairs have a hinge": loss(np.maximum(0.0, d - margin) ** 2 / 2, hinge ** 2 / 2),
    }


def _grade_loss(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    assert "error" not in answer, answer.get("error")
    cases = [_variants(*inputs, margin) for inputs, (margin, _) in zip(q1_inputs(seed), Q1_CASES)]
    for value, case, (margin, n) in zip(answer["values"], cases, Q1_CASES):
        assert not isinstance(value, str), (
            f"contrastive_loss(..., margin={margin}) returned {_shown(value)}; return one number (a 0-d tensor "
            "or a float), the mean over the pairs")
        if np.isclose(value, case["right"], rtol=1e-4, atol=1e-6):
            continue
        for mistake, wrong in case.items():
            if mistake != "right" and np.isclose(value, wrong, rtol=1e-4, atol=1e-6):
                raise AssertionError(f"contrastive_loss(..., margin={margin}) is off: {mistake}")
        raise AssertionError(
            f"contrastive_loss(..., margin={margin}) = {value:.5f} on {n} pairs, expected {case['right']:.5f}: "
            "d = ||z1 - z2|| per pair, then mean[same * d**2 / 2 + (1 - same) * max(0, margin - d)**2 / 2]")


# ---------------------------------------------------------------- q2
@functools.lru_cache(maxsize=1)
def exercise_pairs() -> dict:
    """The exercise's verification pairs: ``{split: (distances (P,), same (P,))}`` as NumPy arrays.

    Splits ``"train"`` (the four training alphabets), ``"validation"`` (Greek) and ``"test"``
    (Balinese, Early Aramaic, Tagalog), ``N_PAIRS`` balanced pairs each, drawn with ``PAIR_SEED``.
    The distance is the Euclidean distance between the two 28x28 images' pixels (the chapter's raw
    pixel baseline): it needs no training, so the grader rebuilds it in about a second.
    """
    from tlcourse.meta.episodes import EVALUATION_ALPHABETS, omniglot_by_alphabet
    from tlcourse.meta.siamese import pair_distances, sample_pairs

    omni = omniglot_by_alphabet(rotations=False)
    with_val = omniglot_by_alphabet(rotations=False, evaluation=EVALUATION_ALPHABETS + ("Greek",))
    splits = {"train": with_val.train_classes,
              "validation": sorted(set(with_val.test_classes) - set(omni.test_classes)),
              "test": omni.test_classes}
    z = omni.images.flatten(1)
    out = {}
    for i, (name, classes) in enumerate(splits.items()):
        p = sample_pairs(omni.labels, N_PAIRS, classes=classes, seed=1000 * PAIR_SEED + i)
        out[name] = (pair_distances(z[p.first], z[p.second]).numpy().astype(np.float64), p.same.numpy())
    return out


def _rates(d: np.ndarray, same: np.ndarray, threshold: float) -> tuple[float, float]:
    accept = d <= threshold
    return float(accept[same == 0].mean()), float((~accept[same == 1]).mean())


def _best_balance(d: np.ndarray, same: np.ndarray) -> float:
    """The smallest |FAR - FRR| any threshold reaches on these pairs."""
    cuts = np.r_[-np.inf, np.sort(d)]
    return min(abs(np.subtract(*_rates(d, same, t))) for t in cuts)


BALANCE_TOLERANCE = 0.01   # one point of |FAR - FRR| above the best any threshold reaches


def _collect_threshold(ns, seed):
    return {name: _scalar(ns[name]) for name in ("threshold", "test_far", "test_frr")}


def _grade_threshold(answer, seed):
    for name in ("threshold", "test_far", "test_frr"):
        assert not isinstance(answer[name], str), f"{name} should be a number, got {_shown(answer[name])}"
    pairs = exercise_pairs()
    t = answer["threshold"]
    gap = {k: abs(np.subtract(*_rates(*pairs[k], t))) for k in pairs}
    best = {k: _best_balance(*pairs[k]) for k in pairs}
    balanced = {k: gap[k] <= best[k] + BALANCE_TOLERANCE for k in pairs}
    if not balanced["validation"]:
        for split, what in (("test", "the TEST pairs: the test alphabets must not take part in choosing it"),
                            ("train", "the TRAINING alphabets' pairs: choose it on held-out classes, the Greek "
                                      "validation pairs, because distances on the classes an embedding was "
                                      "built on are not those of new classes")):
            if balanced[split]:
                raise AssertionError(f"threshold = {t:.4f} balances false accepts and false rejects on {what}")
        far, frr = _rates(*pairs["validation"], t)
        raise AssertionError(
            f"threshold = {t:.4f} gives FAR {far:.3f} and FRR {frr:.3f} on the validation pairs; put it at their "
            "equal error rate (FAR = FRR), e.g. from sklearn.metrics.roc_curve on -distances")
    far, frr = _rates(*pairs["test"], t)
    for name, want in (("test_far", far), ("test_frr", frr)):
        got = answer[name]
        assert 0 <= got <= 1, f"{name} = {got!r}; a rate is a fraction in [0, 1]"
        if abs(got - want) <= 1.01 / (N_PAIRS // 2):
            continue
        val = dict(zip(("test_far", "test_frr"), _rates(*pairs["validation"], t)))
        if abs(got - val[name]) <= 1.01 / (N_PAIRS // 2):
            raise AssertionError(f"{name} = {got:.4f} is the rate on the VALIDATION pairs; apply the threshold to "
                                 "the test pairs and report their rate")
        other = "test_frr" if name == "test_far" else "test_far"
        if abs(got - dict(zip(("test_far", "test_frr"), (far, frr)))[other]) <= 1.01 / (N_PAIRS // 2):
            raise AssertionError(f"{name} = {got:.4f} is the other rate: the false accept rate counts "
                                 "different-class pairs with d <= threshold, the false reject rate same-class "
                                 "pairs with d > threshold")
        raise AssertionError(f"{name} = {got:.4f}, but at threshold {t:.4f} the test pairs give {want:.4f} "
                             "(accept a pair when its distance is <= threshold)")


# ---------------------------------------------------------------- q3
Q3_CHOICES = {
    "a": "It stays about the same: each query is compared with one support image at a time, so the "
         "number of classes does not matter.",
    "b": "It falls steadily, but stays several times above chance (1/N): more classes mean more "
         "chances that a wrong support image is the nearest.",
    "c": "It falls to chance (1/N) by N = 20: one example per class is too little once there are many classes.",
    "d": "It rises: with more support images the nearest one is more likely to be a good match.",
}
_Q3_ANSWER = "b"
_Q3_FEEDBACK = {
    "a": "the query is correct only if its own class's support image is nearer than ALL N - 1 others; "
         "what happens to that chance as N - 1 grows?",
    "c": "the embedding still ranks same-class images closer most of the time; look at the chapter's "
         "step 4 against the dashed chance line.",
    "d": "the extra support images belong to other classes: each one is one more way to be wrong.",
}


QUESTIONS = [
    Question("q1", points=2, names=("contrastive_loss",), collect=_collect_loss, grade=_grade_loss,
             hint="d = (z1 - z2).norm(dim=1); return (same * d**2 + (1 - same) * "
                  "torch.clamp(margin - d, min=0)**2).mean() / 2"),
    Question("q2", points=2, names=("threshold", "test_far", "test_frr"),
             collect=_collect_threshold, grade=_grade_threshold,
             hint="far, tar, t = roc_curve(same_val, -d_val); threshold = -t[argmin |far - (1 - tar)|]; then "
                  "test_far = mean(d_test[same_test == 0] <= threshold), test_frr = mean(d_test[same_test == 1] > threshold)"),
    choice_question("q3", "answer_q3", choices=Q3_CHOICES, answer=_Q3_ANSWER,
                    feedback=_Q3_FEEDBACK, points=1,
                    hint="Look at the chapter's step 4 plot: accuracy against N, with the chance line 1/N."),
]

"""Tests of the T08 checks: each question accepts correct answers written in more than one way and
rejects the obvious wrong approach (the chapter's seed errors) with a message that names it."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve
from torch.nn import functional as F

from tlcourse.checks import t08
from tlcourse.grading.feedback import evaluate_question
from tlcourse.meta import siamese

SEED = 1234


# ---------------------------------------------------------------- q1 answers, right and wrong
def loss_torch(z1, z2, same, margin):
    d = (z1 - z2).norm(dim=1)
    return (same * d ** 2 + (1 - same) * torch.clamp(margin - d, min=0) ** 2).mean() / 2


def loss_numpy(z1, z2, same, margin):
    d = np.linalg.norm(z1.numpy() - z2.numpy(), axis=1)
    y = same.numpy()
    return float(np.mean(0.5 * y * d ** 2 + 0.5 * (1 - y) * np.maximum(0, margin - d) ** 2))


def loss_package(z1, z2, same, margin):
    return siamese.contrastive_loss(z1, z2, same, margin=margin)


def loss_pairwise(z1, z2, same, margin):
    d = F.pairwise_distance(z1, z2, eps=0)
    return torch.where(same.bool(), d.pow(2), F.relu(margin - d).pow(2)).mean() * 0.5


def swapped(z1, z2, same, margin):
    return loss_torch(z1, z2, 1 - same, margin)


def hinge_on_squared(z1, z2, same, margin):
    d2 = (z1 - z2).pow(2).sum(1)
    return (same * d2 + (1 - same) * torch.clamp(margin - d2, min=0) ** 2).mean() / 2


def hinge_not_squared(z1, z2, same, margin):
    d = (z1 - z2).norm(dim=1)
    return (same * d ** 2 + (1 - same) * torch.clamp(margin - d, min=0)).mean() / 2


def no_half(z1, z2, same, margin):
    return 2 * loss_torch(z1, z2, same, margin)


def summed(z1, z2, same, margin):
    return loss_torch(z1, z2, same, margin) * len(same)


def margin_on_positives(z1, z2, same, margin):
    d = (z1 - z2).norm(dim=1)
    return (same * F.relu(d - margin) ** 2 + (1 - same) * F.relu(margin - d) ** 2).mean() / 2


# ---------------------------------------------------------------- q2 answers, right and wrong
def threshold_roc(split="validation", drop=True):
    d, same = t08.exercise_pairs()[split]
    far, tar, t = roc_curve(same, -d, drop_intermediate=drop)
    return float(-t[np.argmin(np.abs(far - (1 - tar)))])


def threshold_grid(split="validation"):
    """Another way: a brute-force grid of 2,000 thresholds, no scikit-learn."""
    d, same = t08.exercise_pairs()[split]
    grid = np.linspace(d.min(), d.max(), 2000)
    gaps = [abs((d[same == 0] <= t).mean() - (d[same == 1] > t).mean()) for t in grid]
    return float(grid[int(np.argmin(gaps))])


def rates(threshold, split="test"):
    d, same = t08.exercise_pairs()[split]
    return float((d[same == 0] <= threshold).mean()), float((d[same == 1] > threshold).mean())


def q2_answer(threshold, split="test"):
    far, frr = rates(threshold, split)
    return dict(threshold=threshold, test_far=far, test_frr=frr)


@pytest.fixture
def namespace():
    return dict(contrastive_loss=loss_torch, answer_q3="b", **q2_answer(threshold_roc()))


def grade(namespace, question, seed=SEED, **changes):
    q = next(q for q in t08.QUESTIONS if q.name == question)
    return evaluate_question(q, {**namespace, **changes}, seed, time_limit=None)


def passes(namespace, question, seed=SEED, **changes):
    result = grade(namespace, question, seed=seed, **changes)
    assert result.passed, f"{question}: {result.message}"


def fails(namespace, question, words, **changes):
    result = grade(namespace, question, **changes)
    assert not result.passed, f"{question} passed although it should not"
    assert words in result.message, result.message
    return result


def test_points_come_from_the_questions():
    assert [(q.name, q.points) for q in t08.QUESTIONS] == [("q1", 2), ("q2", 2), ("q3", 1)]


# ---------------------------------------------------------------- q1
@pytest.mark.parametrize("fn", [loss_torch, loss_numpy, loss_package, loss_pairwise])
def test_q1_accepts_the_loss_written_several_ways(namespace, fn):
    for seed in (0, 1, SEED):
        passes(namespace, "q1", seed=seed, contrastive_loss=fn)


@pytest.mark.parametrize("wrong, words", [
    (swapped, "the labels are read the other way round"),
    (hinge_on_squared, "the hinge is on the squared distance"),
    (hinge_not_squared, "the hinge is not squared"),
    (no_half, "the factors 1/2 are missing"),
    (summed, "summed over pairs"),
    (margin_on_positives, "same-class pairs get a margin too"),
])
def test_q1_names_each_classic_mistake(namespace, wrong, words):
    fails(namespace, "q1", words, contrastive_loss=wrong)


def test_q1_rejects_other_wrong_answers(namespace):
    fails(namespace, "q1", "expected", contrastive_loss=lambda *a: loss_torch(*a) + 0.01)
    fails(namespace, "q1", "NotImplementedError",
          contrastive_loss=lambda *a: (_ for _ in ()).throw(NotImplementedError("replace this line")))
    fails(namespace, "q1", "return one number", contrastive_loss=lambda *a: ...)
    fails(namespace, "q1", "raised TypeError", contrastive_loss=lambda z1, z2: 0.0)


def test_q1_cases_put_pairs_on_both_sides_of_the_margin():
    for (z1, z2, same), (margin, _) in zip(t08.q1_inputs(SEED), t08.Q1_CASES):
        d = (z1 - z2).norm(dim=1)
        different = d[same == 0]
        assert (different < margin).any() and (different > margin).any()


# ---------------------------------------------------------------- q2
@pytest.mark.parametrize("threshold", [lambda: threshold_roc(), lambda: threshold_roc(drop=False),
                                       lambda: threshold_grid(),
                                       lambda: siamese.verification_roc(*t08.exercise_pairs()["validation"]).eer_threshold])
def test_q2_accepts_any_threshold_at_the_validation_equal_error_rate(namespace, threshold):
    passes(namespace, "q2", **q2_answer(threshold()))


def test_q2_rejects_a_threshold_chosen_on_the_test_pairs(namespace):
    fails(namespace, "q2", "the TEST pairs", **q2_answer(threshold_roc("test")))
    fails(namespace, "q2", "the TEST pairs", **q2_answer(threshold_grid("test")))


def test_q2_rejects_a_threshold_chosen_on_the_training_classes(namespace):
    fails(namespace, "q2", "the TRAINING alphabets", **q2_answer(threshold_roc("train")))


def test_q2_rejects_validation_rates_reported_as_test_rates(namespace):
    t = threshold_roc()
    fails(namespace, "q2", "rate on the VALIDATION pairs", **q2_answer(t, split="validation"))
    far, frr = rates(t)
    fails(namespace, "q2", "is the other rate", threshold=t, test_far=frr, test_frr=far)
    fails(namespace, "q2", "should be a number", threshold=..., test_far=far, test_frr=frr)
    fails(namespace, "q2", "equal error rate", **q2_answer(t + 1.0))


def test_q2_splits_are_disjoint_and_the_three_thresholds_differ():
    pairs = t08.exercise_pairs()
    assert {len(d) for d, _ in pairs.values()} == {t08.N_PAIRS}
    ts = [threshold_roc(s) for s in ("train", "validation", "test")]
    assert min(abs(a - b) for i, a in enumerate(ts) for b in ts[i + 1:]) > 0.1


# ---------------------------------------------------------------- q3
@pytest.mark.parametrize("answer", ["b", "B", " (b) "])
def test_q3_accepts_the_right_choice_in_any_spelling(namespace, answer):
    passes(namespace, "q3", answer_q3=answer)


def test_q3_rejects_the_wrong_predictions_without_giving_the_answer_away(namespace):
    for wrong in ("a", "c", "D"):
        result = fails(namespace, "q3", "not '", answer_q3=wrong)
        assert t08.Q3_CHOICES["b"] not in result.message
    fails(namespace, "q3", "one letter as a string", answer_q3=2)

"""Tests of the T09 checks: each question accepts correct answers written in more than one way and
rejects the obvious wrong approach (pooled queries, gamma tuned on the test classes, the seed
errors of the chapter) with a message that names it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tlcourse.checks import t09
from tlcourse.meta.episodes import mean_confidence_interval
from tlcourse.zeroshot import GZSLAccuracy, calibrated_stacking, choose_gamma, gzsl_accuracy
from tests.check_helpers import question_helpers

SEED = 1234


# ---------------------------------------------------------------- answers, right and wrong
def episode_ci(correct):
    acc = np.asarray(correct, dtype=float).mean(axis=1)
    return acc.mean(), 1.96 * acc.std(ddof=1) / np.sqrt(len(acc))


def episode_ci_torch(correct):
    """Another way: torch, ddof = 0, a tensor pair."""
    acc = torch.as_tensor(correct).float().mean(1)
    return torch.stack([acc.mean(), 1.96 * acc.std(unbiased=False) / len(acc) ** 0.5])


def episode_ci_t_quantile(correct):
    from scipy import stats

    acc = correct.mean(1)
    return float(acc.mean()), float(stats.t.ppf(0.975, len(acc) - 1) * stats.sem(acc))


def episode_ci_package(correct):
    return mean_confidence_interval(correct.mean(1))


def pooled_queries(correct):
    flat = correct.reshape(-1)
    return flat.mean(), 1.96 * flat.std(ddof=1) / np.sqrt(flat.size)


def spread_not_error(correct):
    acc = correct.mean(1)
    return acc.mean(), 1.96 * acc.std(ddof=1)


def standard_error_only(correct):
    acc = correct.mean(1)
    return acc.mean(), acc.std(ddof=1) / np.sqrt(len(acc))


def divided_by_n(correct):
    acc = correct.mean(1)
    return acc.mean(), 1.96 * acc.std(ddof=1) / len(acc)


@pytest.fixture(scope="module")
def scores():
    return t09.exercise_scores()


@pytest.fixture(scope="module")
def namespace(scores):
    sp = scores["split"]
    gamma, _ = choose_gamma(scores["val"], scores["y_val"], sp.seen, sp.val_unseen, t09.GAMMAS)
    test = gzsl_accuracy(scores["y_test"], calibrated_stacking(scores["test"], scores["seen_mask"], gamma).argmax(1),
                         sp.seen, sp.test_unseen)
    return dict(episode_ci=episode_ci, gamma_val=gamma, test_gzsl=test, answer_q3="b")


grade, passes, fails = question_helpers(t09, SEED)


def test_points_come_from_the_questions():
    assert [(q.name, q.points) for q in t09.QUESTIONS] == [("q1", 2), ("q2", 2), ("q3", 1)]


# ---------------------------------------------------------------- q1
@pytest.mark.parametrize("fn", [episode_ci, episode_ci_torch, episode_ci_t_quantile, episode_ci_package])
def test_q1_accepts_the_interval_written_several_ways(namespace, fn):
    for seed in (0, 1, SEED):
        result = grade(namespace, "q1", seed=seed, episode_ci=fn)
        assert result.passed, result.message


@pytest.mark.parametrize("wrong, words", [
    (pooled_queries, "every query is treated as an independent trial"),
    (spread_not_error, "divide by sqrt(number of episodes)"),
    (standard_error_only, "1.96 standard errors"),
    (divided_by_n, "divides by its square root"),
])
def test_q1_names_each_classic_mistake(namespace, wrong, words):
    fails(namespace, "q1", words, episode_ci=wrong)


def test_q1_pooling_the_queries_gives_a_too_narrow_interval():
    correct = t09.q1_inputs(SEED)[0]
    assert pooled_queries(correct)[1] < 0.8 * episode_ci(correct)[1]


def test_q1_rejects_other_wrong_answers_with_a_useful_message(namespace):
    fails(namespace, "q1", "expected", episode_ci=lambda c: (c.mean(1).mean(), 1.1 * episode_ci(c)[1]))
    fails(namespace, "q1", "per-episode accuracies", episode_ci=lambda c: (c.mean() + 0.01, episode_ci(c)[1]))
    fails(namespace, "q1", "NotImplementedError",
          episode_ci=lambda c: (_ for _ in ()).throw(NotImplementedError("replace this line")))
    fails(namespace, "q1", "raised ValueError", episode_ci=lambda c: c.reshape(7, -1))
    fails(namespace, "q1", "pair (mean, half_width)", episode_ci=lambda c: c.mean())


# ---------------------------------------------------------------- q2
def test_q2_accepts_the_solution_and_other_spellings(namespace):
    passes(namespace, "q2")
    g, test = namespace["gamma_val"], namespace["test_gzsl"]
    passes(namespace, "q2", gamma_val=np.float32(g), test_gzsl=[np.float64(v) for v in test])
    passes(namespace, "q2", gamma_val=torch.tensor(g), test_gzsl=tuple(test))


def test_q2_reference_is_the_setting_the_docstring_describes():
    curves = t09.reference_curves()
    val_best = max(t09.GAMMAS, key=lambda g: (curves["val"][g].harmonic, -g))
    test_best = max(t09.GAMMAS, key=lambda g: (curves["test"][g].harmonic, -g))
    assert (val_best, test_best) == (0.1, 0.14)      # what makes tuning on the test classes detectable
    assert curves["test"][test_best].harmonic > curves["test"][val_best].harmonic + 0.02
    assert curves["test"][0.0].unseen < 0.1          # the seen-class bias q3 asks about


def test_q2_rejects_gamma_chosen_on_the_test_unseen_classes(namespace, scores):
    sp = scores["split"]
    on_test, _ = choose_gamma(scores["test"], scores["y_test"], sp.seen, sp.test_unseen, t09.GAMMAS)
    assert on_test != namespace["gamma_val"]
    test = gzsl_accuracy(scores["y_test"], calibrated_stacking(scores["test"], scores["seen_mask"], on_test).argmax(1),
                         sp.seen, sp.test_unseen)
    fails(namespace, "q2", "chosen on the test unseen classes", gamma_val=on_test, test_gzsl=test)


def test_q2_rejects_the_wrong_split_or_no_calibration(namespace, scores):
    sp = scores["split"]
    g = namespace["gamma_val"]
    val = gzsl_accuracy(scores["y_val"], calibrated_stacking(scores["val"], scores["seen_mask"], g).argmax(1),
                        sp.seen, sp.val_unseen)
    fails(namespace, "q2", "VALIDATION result", test_gzsl=val)
    raw = gzsl_accuracy(scores["y_test"], scores["test"].argmax(1), sp.seen, sp.test_unseen)
    fails(namespace, "q2", "uncalibrated test result", test_gzsl=raw)
    fails(namespace, "q2", "the best on validation is", gamma_val=0.0, test_gzsl=raw)
    fails(namespace, "q2", "not in the grid", gamma_val=0.105)
    fails(namespace, "q2", "three numbers", test_gzsl=0.3)
    fails(namespace, "q2", "should be a number", gamma_val=...)
    shifted = GZSLAccuracy(*(v + 0.05 for v in namespace["test_gzsl"]))
    fails(namespace, "q2", "per-class accuracies", test_gzsl=shifted)


# ---------------------------------------------------------------- q3
@pytest.mark.parametrize("answer", ["b", "B", " b ", "(b)"])
def test_q3_accepts_the_right_choice_in_any_spelling(namespace, answer):
    passes(namespace, "q3", answer_q3=answer)


def test_q3_teaches_without_giving_the_answer_away(namespace):
    for wrong in ("a", "C", "d"):
        result = fails(namespace, "q3", "not '", answer_q3=wrong)
        assert t09.Q3_CHOICES["b"] not in result.message and "'b'" not in result.message
    fails(namespace, "q3", "choose one of", answer_q3="e")
    fails(namespace, "q3", "one letter as a string", answer_q3=...)

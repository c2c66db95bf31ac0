"""Tests of the T05 checks: each question accepts correct answers written in more than one way and
rejects the obvious wrong approach (a baseline with another budget, a single seed, selection on the
test split) with a message that names it."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tlcourse.checks import t05
from tlcourse.negative_transfer_demo import accuracy, target_splits, train_source
from tests.check_helpers import question_helpers

SEED = 1234


# ---------------------------------------------------------------- answers to q1, right and wrong
def gap_pandas(results):
    """The solution's way: the baseline with the transfer arm's epochs, paired by seed."""
    tr = results[results.arm == "transfer"]
    sc = results[(results.arm == "scratch") & (results.epochs == tr.epochs.iloc[0])]
    d = sc.set_index("seed").test_acc - tr.set_index("seed").test_acc
    return d.mean(), d.std(ddof=1) / math.sqrt(len(d))


def gap_numpy(results):
    """Another way: a pivot table and NumPy, returned as a dict of NumPy floats."""
    table = results.pivot_table(index="seed", columns=["arm", "epochs"], values="test_acc")
    d = (table[("scratch", 30)] - table[("transfer", 30)]).to_numpy()
    return {"ntg": np.float64(d.mean()), "se": np.float64(d.std(ddof=1) / np.sqrt(d.size))}


def gap_short_baseline(results):
    tr = results[results.arm == "transfer"].set_index("seed").test_acc
    sc = results[(results.arm == "scratch") & (results.epochs == 10)].set_index("seed").test_acc
    d = sc - tr
    return d.mean(), d.std(ddof=1) / math.sqrt(len(d))


def gap_mixed_baselines(results):
    tr = results[results.arm == "transfer"].set_index("seed").test_acc
    sc = results[results.arm == "scratch"].groupby("seed").test_acc.mean()
    d = sc - tr
    return d.mean(), d.std(ddof=1) / math.sqrt(len(d))


def gap_one_seed(results):
    r = results[results.seed == 0]
    tr = r[r.arm == "transfer"].test_acc.iloc[0]
    sc = r[(r.arm == "scratch") & (r.epochs == 30)].test_acc.iloc[0]
    return sc - tr, float("nan")


def gap_one_seed_with_a_made_up_se(results):
    ntg, se = gap_pandas(results)
    return gap_one_seed(results)[0], se


def gap_sign_reversed(results):
    ntg, se = gap_pandas(results)
    return -ntg, se


def gap_sd(results):
    ntg, se = gap_pandas(results)
    return ntg, se * math.sqrt(results.seed.nunique())


def gap_unpaired(results):
    tr = results[results.arm == "transfer"].set_index("seed").test_acc
    sc = results[(results.arm == "scratch") & (results.epochs == 30)].set_index("seed").test_acc
    n = len(tr)
    return (sc - tr).mean(), math.sqrt(sc.var() / n + tr.var() / n)


# ---------------------------------------------------------------- q2's reference, computed as the notebook does
@pytest.fixture(scope="module")
def arms():
    splits = target_splits(t05.SPLIT_SEED)
    source, _ = train_source("shuffled", seed=0, epochs=t05.SOURCE_EPOCHS)
    models = {arm: t05.train_arm(arm, source, splits) for arm in t05.ARMS}
    return {"val": {a: accuracy(m, *splits["val"]) for a, m in models.items()},
            "test": {a: accuracy(m, *splits["test"]) for a, m in models.items()}}


@pytest.fixture(scope="module")
def namespace(arms):
    val = arms["val"]
    chosen = max(t05.MITIGATIONS, key=val.get)
    return dict(negative_transfer_gap=gap_pandas, val_acc_by_arm=dict(val), chosen_arm=chosen,
                chosen_test_acc=arms["test"][chosen], chosen_ntg=arms["test"]["scratch"] - arms["test"][chosen],
                answer_q3="b")


grade, passes, fails = question_helpers(t05, SEED)


def test_points_come_from_the_questions():
    assert [(q.name, q.points) for q in t05.QUESTIONS] == [("q1", 2), ("q2", 2), ("q3", 1)]


# ---------------------------------------------------------------- q1
def test_q1_tables_have_the_trap():
    t = t05.q1_results(0).pivot_table(index="seed", columns=["arm", "epochs"], values="test_acc")
    assert (t[("scratch", 30)] > t[("transfer", 30)]).all()     # the transfer arm trails the right baseline
    assert (t[("scratch", 10)] < t[("transfer", 30)]).all()     # and beats the short one
    assert not t05.q1_results(0).equals(t05.q1_results(1))


@pytest.mark.parametrize("fn", [gap_pandas, gap_numpy])
def test_q1_accepts_the_gap_written_several_ways(namespace, fn):
    for seed in (0, 1, SEED):
        result = grade(namespace, "q1", seed=seed, negative_transfer_gap=fn)
        assert result.passed, result.message


@pytest.mark.parametrize("wrong, words", [
    (gap_short_baseline, "a different budget"),
    (gap_mixed_baselines, "both budgets"),
    (gap_one_seed, "single seed"),
    (gap_one_seed_with_a_made_up_se, "single seed"),
    (gap_sign_reversed, "sign is reversed"),
    (gap_sd, "not the standard error"),
    (gap_unpaired, "unpaired"),
])
def test_q1_names_each_classic_mistake(namespace, wrong, words):
    fails(namespace, "q1", words, negative_transfer_gap=wrong)


def test_q1_rejects_other_wrong_answers_with_a_useful_message(namespace):
    fails(namespace, "q1", "answer is", negative_transfer_gap=lambda r: (0.01, 0.001))
    fails(namespace, "q1", "NotImplementedError",
          negative_transfer_gap=lambda r: (_ for _ in ()).throw(NotImplementedError("replace this line")))
    fails(namespace, "q1", "a pair (ntg, se)", negative_transfer_gap=lambda r: 0.03)
    fails(namespace, "q1", "raised KeyError", negative_transfer_gap=lambda r: r["accuracy"])


# ---------------------------------------------------------------- q2
def test_q2_accepts_the_solution_and_other_spellings(namespace, arms):
    passes(namespace, "q2")
    passes(namespace, "q2", val_acc_by_arm={k: np.float32(v) for k, v in arms["val"].items()},
           chosen_test_acc=np.float64(namespace["chosen_test_acc"]))


def test_q2_the_validation_split_makes_a_choice(arms):
    # the mitigation chosen on validation is not a tie, and it still trails scratch: the honest answer is "drop this source"
    val = sorted((arms["val"][a] for a in t05.MITIGATIONS), reverse=True)
    assert val[0] > val[1]


def test_q2_rejects_test_accuracies_as_validation_ones(namespace, arms):
    fails(namespace, "q2", "TEST split", val_acc_by_arm=dict(arms["test"]))


def test_q2_rejects_a_choice_that_is_not_the_validation_best(namespace, arms):
    worst = min(t05.MITIGATIONS, key=arms["val"].get)
    fails(namespace, "q2", "choose on the validation split", chosen_arm=worst,
          chosen_test_acc=arms["test"][worst], chosen_ntg=arms["test"]["scratch"] - arms["test"][worst])


def test_q2_rejects_scratch_and_unknown_arms(namespace):
    fails(namespace, "q2", "not a mitigation", chosen_arm="scratch")
    fails(namespace, "q2", "one entry per arm", val_acc_by_arm={"fine-tuned": 0.7})


def test_q2_rejects_the_validation_accuracy_as_the_test_accuracy(namespace):
    fails(namespace, "q2", "validation accuracy of", chosen_test_acc=namespace["val_acc_by_arm"][namespace["chosen_arm"]])


def test_q2_rejects_a_reversed_or_wrong_gap(namespace):
    fails(namespace, "q2", "wrong sign", chosen_ntg=-namespace["chosen_ntg"])
    fails(namespace, "q2", "expected scratch", chosen_ntg=namespace["chosen_ntg"] + 0.05)
    fails(namespace, "q2", "placeholder", chosen_ntg=...)


# ---------------------------------------------------------------- q3
@pytest.mark.parametrize("answer", ["b", " B ", "(b)"])
def test_q3_accepts_the_letter(namespace, answer):
    passes(namespace, "q3", answer_q3=answer)


@pytest.mark.parametrize("answer", ["a", "c", "d"])
def test_q3_rejects_the_other_letters(namespace, answer):
    fails(namespace, "q3", f"not '{answer}'", answer_q3=answer)


def test_q3_is_what_the_arms_show(arms):
    # the measured fact behind the answer: a large alpha towards the harmful source is worse than plain fine-tuning
    assert arms["test"]["L2-SP 1"] < arms["test"]["fine-tuned"] - 0.05

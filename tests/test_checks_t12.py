"""Tests of the T12 checks: each question accepts correct answers written in more than one way and
rejects the obvious wrong approach (special tokens counted, series normalised as a whole, a window
chosen on the test split) with a message that names it."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tests.check_helpers import question_helpers
from tlcourse.checks import t12
from tlcourse.compare import Budget, score, tune_lr
from tlcourse.sequences import WindowedClassifier, fragmentation, pretrained_series_cnn, sliding_windows, zscore

SEED = 1234


# ---------------------------------------------------------------- answers, right and wrong
def pieces_per_word(words, tokenizer):
    return float(np.mean([len(tokenizer.tokenize(w)) for w in words]))


def pieces_without_specials(words, tokenizer):
    """Another way: ids without special tokens, a NumPy scalar."""
    ids = tokenizer(list(words), add_special_tokens=False)["input_ids"]
    return np.float32(sum(map(len, ids)) / len(words))


def pieces_package(words, tokenizer):
    return fragmentation([" ".join(words)], tokenizer).pieces_per_word


def with_special_tokens(words, tokenizer):
    return float(np.mean([len(tokenizer(w)["input_ids"]) for w in words]))


def counts_words(words, tokenizer):
    return len(tokenizer(list(words))["input_ids"]) / len(words)


def counts_characters(words, tokenizer):
    return float(np.mean([len(w) for w in words]))


def zscored_windows(x, length, stride):
    w = np.stack([x[:, s:s + length] for s in range(0, x.shape[1] - length + 1, stride)], axis=1)
    return (w - w.mean(-1, keepdims=True)) / w.std(-1, keepdims=True)


def zscored_windows_torch(x, length, stride):
    """Another way: the package's torch functions, sample standard deviation, a tensor."""
    w = sliding_windows(torch.from_numpy(x), length, stride)
    return (w - w.mean(-1, keepdim=True)) / w.std(-1, keepdim=True)


def zscored_windows_package(x, length, stride):
    return zscore(sliding_windows(x, length, stride))


def normalised_before_cutting(x, length, stride):
    return sliding_windows(zscore(x), length, stride)


def not_normalised(x, length, stride):
    return sliding_windows(x, length, stride)


def batch_statistics(x, length, stride):
    return (sliding_windows(x, length, stride) - x.mean()) / x.std()


def last_window_missing(x, length, stride):
    w = np.stack([x[:, s:s + length] for s in range(0, x.shape[1] - length, stride)], axis=1)
    return zscore(w)


@pytest.fixture(scope="module")
def sweep():
    """The solution's question 3, computed here the way the notebook does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        source = pretrained_series_cnn(seed=0)
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = t12.exercise_data()
        budget = Budget(lr_grid=(3e-3,), max_steps=100, eval_every=20, patience=3, batch_size=16)
        runs = {w: tune_lr(lambda: WindowedClassifier(copy.deepcopy(source), window=w), x_tr, y_tr, x_va, y_va,  # noqa: B023
                           budget, seed=0) for w in t12.WINDOWS}
        return {"val": {w: r["val_accuracy"] for w, r in runs.items()},
                "test": {w: score(r["model"], x_te, y_te)["accuracy"] for w, r in runs.items()}}
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def namespace(sweep):
    val = sweep["val"]
    best = max(val, key=val.get)
    return dict(pieces_per_word=pieces_per_word, zscored_windows=zscored_windows, val_acc_by_window=dict(val),
                best_window=best, best_window_test_acc=sweep["test"][best], answer_q4="b")


grade, passes, fails = question_helpers(t12, SEED)


def test_points_come_from_the_questions():
    assert [(q.name, q.points) for q in t12.QUESTIONS] == [("q1", 2), ("q2", 2), ("q3", 2), ("q4", 1)]


# ---------------------------------------------------------------- q1
@pytest.mark.parametrize("fn", [pieces_per_word, pieces_without_specials, pieces_package])
def test_q1_accepts_the_count_written_several_ways(namespace, fn):
    for seed in (0, 1, SEED):
        result = grade(namespace, "q1", seed=seed, pieces_per_word=fn)
        assert result.passed, result.message


@pytest.mark.parametrize("wrong, words", [
    (with_special_tokens, "[CLS] and [SEP]"),
    (counts_words, "counts words, not pieces"),
    (counts_characters, "characters per word"),
])
def test_q1_names_each_classic_mistake(namespace, wrong, words):
    fails(namespace, "q1", words, pieces_per_word=wrong)


def test_q1_rejects_other_wrong_answers_with_a_useful_message(namespace):
    fails(namespace, "q1", "expected", pieces_per_word=lambda w, t: pieces_per_word(w, t) + 0.1)
    fails(namespace, "q1", "NotImplementedError",
          pieces_per_word=lambda *a: (_ for _ in ()).throw(NotImplementedError("replace this line")))
    fails(namespace, "q1", "raised KeyError", pieces_per_word=lambda w, t: {}["x"])
    fails(namespace, "q1", "return one number", pieces_per_word=lambda w, t: [1.0, 2.0])


def test_q1_samples_depend_on_the_seed_and_hold_technical_words():
    assert t12.q1_words(0) != t12.q1_words(1) and t12.q1_words(0) == t12.q1_words(0)
    tok = t12._tokenizer()
    assert all(max(len(tok.tokenize(w)) for w in words) >= 3 for words in t12.q1_words(SEED))


# ---------------------------------------------------------------- q2
@pytest.mark.parametrize("fn", [zscored_windows, zscored_windows_torch, zscored_windows_package])
def test_q2_accepts_windows_written_several_ways(namespace, fn):
    for seed in (0, SEED):
        result = grade(namespace, "q2", seed=seed, zscored_windows=fn)
        assert result.passed, result.message


@pytest.mark.parametrize("wrong, words", [
    (normalised_before_cutting, "z-scored as a whole before being cut"),
    (not_normalised, "not normalised"),
    (batch_statistics, "whole batch"),
    (last_window_missing, "the last window"),
])
def test_q2_names_each_classic_mistake(namespace, wrong, words):
    fails(namespace, "q2", words, zscored_windows=wrong)


def test_q2_rejects_other_wrong_answers(namespace):
    fails(namespace, "q2", "expected", zscored_windows=lambda x, L, s: zscored_windows(x, L, s)[:, :, :-1])
    fails(namespace, "q2", "not the right values", zscored_windows=lambda x, L, s: zscored_windows(x, L, s) * 2)
    fails(namespace, "q2", "return an array", zscored_windows=lambda x, L, s: [[0.0]])
    fails(namespace, "q2", "raised ValueError", zscored_windows=lambda x, L, s: np.stack([]))


# ---------------------------------------------------------------- q3
def test_q3_accepts_the_solution_and_other_spellings(namespace, sweep):
    passes(namespace, "q3")
    val = {np.int64(w): np.float32(v) for w, v in sweep["val"].items()}
    best = max(sweep["val"], key=sweep["val"].get)
    passes(namespace, "q3", val_acc_by_window=val, best_window=float(best),
           best_window_test_acc=torch.tensor(sweep["test"][best]))


def test_q3_reference_is_the_setting_the_docstring_describes(sweep):
    ref = t12.reference_sweep()
    assert ref["val"] == sweep["val"] and ref["test"] == sweep["test"]   # the same seeded fine-tuning runs
    val_best, test_best = (max(ref[k], key=ref[k].get) for k in ("val", "test"))
    assert (val_best, test_best) == (128, 32)   # what makes choosing on the test split detectable


def test_q3_rejects_a_window_chosen_on_the_test_split(namespace, sweep):
    on_test = max(sweep["test"], key=sweep["test"].get)
    assert on_test != namespace["best_window"]
    fails(namespace, "q3", "choose the window on the validation split", best_window=on_test,
          best_window_test_acc=sweep["test"][on_test])
    fails(namespace, "q3", "accuracy on the TEST split", val_acc_by_window=dict(sweep["test"]), best_window=on_test,
          best_window_test_acc=sweep["test"][on_test])


def test_q3_rejects_the_validation_accuracy_reported_as_test_accuracy(namespace, sweep):
    best = namespace["best_window"]
    assert abs(sweep["val"][best] - sweep["test"][best]) > 1.01 / 200
    fails(namespace, "q3", "is the validation accuracy", best_window_test_acc=sweep["val"][best])
    fails(namespace, "q3", "test series", best_window_test_acc=sweep["test"][best] + 3 / 200)


def test_q3_rejects_malformed_or_wrong_sweeps(namespace, sweep):
    fails(namespace, "q3", "one entry per window", val_acc_by_window={32: 0.9, 128: 0.9})
    fails(namespace, "q3", "one entry per window", val_acc_by_window={str(w): v for w, v in sweep["val"].items()})
    fails(namespace, "q3", "should be a dict", val_acc_by_window=[0.9] * 3)
    fails(namespace, "q3", "scores", val_acc_by_window={w: v - 0.2 for w, v in sweep["val"].items()})
    fails(namespace, "q3", "should be one of", best_window=64)
    fails(namespace, "q3", "float accuracy", best_window_test_acc=...)


# ---------------------------------------------------------------- q4
@pytest.mark.parametrize("answer", ["b", "B", " b ", "(b)"])
def test_q4_accepts_the_right_choice_in_any_spelling(namespace, answer):
    passes(namespace, "q4", answer_q4=answer)


def test_q4_teaches_without_giving_the_answer_away(namespace):
    for wrong in ("a", "C", "d"):
        result = fails(namespace, "q4", "not '", answer_q4=wrong)
        assert t12.Q4_CHOICES["b"] not in result.message and "'b'" not in result.message
    fails(namespace, "q4", "choose one of", answer_q4="e")
    fails(namespace, "q4", "one letter as a string", answer_q4=2)
    fails(namespace, "q4", "one letter as a string", answer_q4=...)

"""Tests of tlcourse.checks.t01: right answers pass, also when written another way (another library
call, np.float32 or 0-d tensor accuracies, lists for arrays), and the typical wrong ones (leaks,
unequal budgets, the wrong starting weights, lying numbers) fail with a message that says why.

Each question runs as self-study feedback does, collect -> plain data -> grade, through
``evaluate_question``. The source model is a quick stand-in (60 optimiser steps) that the
student's code and the trusted grader both load through ``zoo.pretrained_digit_cnn``.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tlcourse import zoo
from tlcourse.checks import t01
from tlcourse.data import holdout_split, load
from tlcourse.grading import plain
from tlcourse.grading.feedback import evaluate_question
from tlcourse.models import DigitCNN
from tlcourse.train import History, evaluate, make_loader, predict
from tlcourse.transfer import balanced_subset, replace_head, train_on_subset

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = {q.name: q for q in t01.QUESTIONS}
STEPS, N_PER_CLASS = 100, 10  # the notebook's defaults
SEEDS = (0, 1, 2**31 - 2)
_real_source = zoo.pretrained_digit_cnn


def quick_source(*args, **kwargs):
    """What ``zoo.pretrained_digit_cnn(seed=0)`` returns in these tests: a digit CNN trained for 60
    steps (cached in the test session's cache), so that nothing waits for the full recipe."""
    return _real_source(seed=0, max_steps=60)


@pytest.fixture(autouse=True, scope="module")
def _quick_source():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(zoo, "pretrained_digit_cnn", quick_source)
        t01._reference.cache_clear()  # references made with another source must not be reused
        yield
    t01._reference.cache_clear()


def grade(name: str, ns: dict, seed: int = 12345):
    return evaluate_question(QUESTIONS[name], ns, seed, time_limit=None)


def assert_passes(name, ns, seed=12345):
    result = grade(name, ns, seed)
    assert result.passed, result.message
    assert result.points == QUESTIONS[name].points


def assert_fails(name, ns, *phrases, seed=12345):
    result = grade(name, ns, seed)
    assert not result.passed and result.points == 0, f"{name} passed a wrong answer"
    assert "Traceback" not in result.message
    for phrase in phrases:
        assert phrase in result.message, f"{phrase!r} not in {result.message!r}"
    return result.message


# ------------------------------------------------------------------- the notebook's answers
def balanced_indices(labels, n_per_class, seed):
    """The solution's answer to q1."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < n_per_class:
            raise ValueError(f"class {cls} has only {len(members)} examples")
        chosen.append(rng.permutation(members)[:n_per_class])
    return np.concatenate(chosen)


def relative_error_reduction(scratch_acc, transfer_acc):
    """The solution's answer to q3."""
    for name, value in (("scratch_acc", scratch_acc), ("transfer_acc", transfer_acc)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if scratch_acc == 1:
        raise ValueError("the scratch model makes no errors: there is nothing to reduce")
    return float(((1 - scratch_acc) - (1 - transfer_acc)) / (1 - scratch_acc))


def train(model, x, y, steps=STEPS):
    """train_on_subset as the notebook calls it; returns the model and its accuracy on (x, y)."""
    x_test, y_test = LETTERS()[2:]
    accuracy = train_on_subset(model, x, y, x_test, y_test, steps=steps, lr=1e-3)["accuracy"]
    return model, accuracy


def LETTERS():
    return t01._letters()  # the same tensors as holdout_split("emnist_letters", 1900, seed=0)


@pytest.fixture(scope="module")
def solution(_quick_source):
    """The namespace the solution notebook leaves behind, with the default parameters."""
    x_pool, y_pool, x_test, y_test = holdout_split("emnist_letters", n_test=1900, seed=0)
    train_idx = balanced_indices(y_pool, N_PER_CLASS, seed=0)
    x_train, y_train = x_pool[train_idx], y_pool[train_idx]
    torch.manual_seed(0)
    scratch_model = DigitCNN(num_classes=19)
    transfer_model = replace_head(zoo.pretrained_digit_cnn(seed=0), 19)
    _, scratch_acc = train(scratch_model, x_train, y_train)
    _, transfer_acc = train(transfer_model, x_train, y_train)
    return dict(n_per_class=N_PER_CLASS, steps=STEPS, x_pool=x_pool, y_pool=y_pool, x_test=x_test,
                y_test=y_test, balanced_indices=balanced_indices, train_idx=train_idx,
                x_train=x_train, y_train=y_train, scratch_model=scratch_model,
                transfer_model=transfer_model, scratch_acc=scratch_acc, transfer_acc=transfer_acc,
                relative_error_reduction=relative_error_reduction, answer_q4="b")


def test_the_grader_scores_the_split_the_notebook_uses():
    """One function holds the split's recipe: the notebook calls it as the grader does, and it is
    the recipe the exercise always used (seeded permutation, last 1,900 letters are the test set)."""
    source = json.loads((ROOT / "solutions" / "T01-what-is-transfer-learning.ipynb").read_text())
    code = "".join("".join(c["source"]) for c in source["cells"] if c["cell_type"] == "code")
    call = (f'holdout_split("{t01.SPLIT["name"]}", n_test={t01.SPLIT["n_test"]}, '
            f'seed={t01.SPLIT["seed"]})')
    assert call in code
    x_all, y_all = load("emnist_letters").to_tensors()
    order = np.random.default_rng(0).permutation(len(y_all))
    x_pool, y_pool, x_test, y_test = LETTERS()
    assert torch.equal(y_pool, y_all[order[:-1900]]) and torch.equal(y_test, y_all[order[-1900:]])
    assert torch.equal(x_test, x_all[order[-1900:]])


# ------------------------------------------------------------------------ q1: balanced set
@pytest.mark.parametrize("seed", SEEDS)
def test_q1_solution_passes(solution, seed):
    assert_passes("q1", solution, seed)


def balanced_with_torch(labels, n_per_class, seed):
    """Written another way: torch.unique, rng.choice, and a list for an array."""
    labels = torch.as_tensor(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten().numpy()
        if len(members) < n_per_class:
            raise ValueError("too few")
        chosen += rng.choice(members, n_per_class, replace=False).tolist()
    return chosen


@pytest.mark.parametrize("function", [balanced_subset, balanced_with_torch],
                         ids=["library-balanced_subset", "torch-list"])
def test_q1_written_another_way_passes(solution, function):
    ns = {**solution, "balanced_indices": function, "n_per_class": np.int64(N_PER_CLASS),
          "train_idx": torch.as_tensor(function(solution["y_pool"], N_PER_CLASS, 3)).tolist()}
    assert_passes("q1", ns)


def global_random_state(labels, n_per_class, seed):
    labels = np.asarray(labels)
    return np.concatenate([np.random.permutation(np.flatnonzero(labels == c))[:n_per_class]
                           for c in np.unique(labels)])


def ignores_seed(labels, n_per_class, seed):
    return balanced_indices(labels, n_per_class, seed=0)


def no_value_error(labels, n_per_class, seed):
    labels, rng = np.asarray(labels), np.random.default_rng(seed)
    return np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:n_per_class]
                           for c in np.unique(labels)])


def with_replacement(labels, n_per_class, seed):
    labels, rng = np.asarray(labels), np.random.default_rng(seed)
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), n_per_class, replace=True)
                           for c in np.unique(labels)])


def classes_from_range(labels, n_per_class, seed):
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in range(labels.max() + 1):  # assumes labels 0..C-1
        members = np.flatnonzero(labels == cls)
        if len(members) < n_per_class:
            raise ValueError(f"class {cls} has only {len(members)} examples")
        chosen.append(rng.permutation(members)[:n_per_class])
    return np.concatenate(chosen)


def boolean_mask(labels, n_per_class, seed):
    mask = np.zeros(len(labels), dtype=bool)
    mask[balanced_indices(labels, n_per_class, seed)] = True
    return mask


def not_implemented(labels, n_per_class, seed):
    raise NotImplementedError("replace this line with your code")


@pytest.mark.parametrize("function, phrase", [
    (global_random_state, "the same seed must give the same subset"),
    (ignores_seed, "different seeds"),
    (no_value_error, "must raise ValueError"),
    (with_replacement, "indices repeat"),
    (classes_from_range, "raised ValueError"),
    (boolean_mask, "boolean mask"),
    (not_implemented, "raised NotImplementedError"),
])
def test_q1_wrong_function_fails(solution, function, phrase):
    assert_fails("q1", {**solution, "balanced_indices": function}, phrase)


def test_q1_unbalanced_train_idx_fails(solution):
    assert_fails("q1", {**solution, "train_idx": np.arange(190)}, "10 indices of every one of the 19")
    assert_fails("q1", {**solution, "train_idx": ...}, "train_idx should be a 1-D integer array")


def test_q1_checks_train_idx_against_its_own_labels(solution):
    """A y_pool rebound so that an unbalanced train_idx looks balanced changes nothing: the
    grader recomputes y_pool from the split."""
    wrong = np.arange(190)
    fake = solution["y_pool"].clone()
    fake[wrong] = torch.arange(19).repeat_interleave(10)
    ns = {**solution, "y_pool": fake, "train_idx": wrong}
    assert (np.bincount(fake[wrong].numpy(), minlength=19) == 10).all()
    assert_fails("q1", ns, "10 indices of every one of the 19 letters")


# ------------------------------------------------------------ q2: scratch vs transferred
@pytest.mark.parametrize("seed", SEEDS[:2])
def test_q2_solution_passes(solution, seed):
    assert_passes("q2", solution, seed)


def test_q2_reported_as_float32_tensor_and_lists_passes(solution):
    """np.float32 and 0-d tensor accuracies, a list for train_idx, np.int64 steps, a GPU-style
    model moved back to the CPU in train mode: all the same answer."""
    ns = {**solution, "scratch_acc": torch.tensor(solution["scratch_acc"]),
          "transfer_acc": np.float32(solution["transfer_acc"]),
          "train_idx": [int(i) for i in solution["train_idx"]], "steps": np.int64(STEPS),
          "transfer_model": copy.deepcopy(solution["transfer_model"]).train()}
    assert_passes("q2", ns)


def test_q2_written_another_way_passes(solution):
    """Another subset (the library's balanced_subset, seed 1), another initialisation of the
    scratch model, and the accuracy computed with evaluate() instead of train_on_subset's."""
    x_pool, y_pool, x_test, y_test = LETTERS()
    train_idx = balanced_subset(y_pool, N_PER_CLASS, seed=1)
    torch.manual_seed(1)
    scratch, _ = train(DigitCNN(19), x_pool[train_idx], y_pool[train_idx])
    transfer, _ = train(replace_head(zoo.pretrained_digit_cnn(seed=0), 19),
                        x_pool[train_idx], y_pool[train_idx])
    loader = make_loader(x_test, y_test, batch_size=100)
    ns = {**solution, "train_idx": train_idx, "scratch_model": scratch, "transfer_model": transfer,
          "scratch_acc": evaluate(scratch, loader)["accuracy"],
          "transfer_acc": (predict(transfer, x_test).argmax(1) == y_test).float().mean()}
    assert_passes("q2", ns)


def test_q2_rebound_test_split_fails(solution):
    """`x_test, y_test = x_train, y_train` before training: the reported accuracies are then
    training accuracies, which the grader's own test split does not reproduce."""
    ns = dict(solution)
    ns["x_test"], ns["y_test"] = ns["x_train"], ns["y_train"]
    for name in ("scratch", "transfer"):
        loader = make_loader(ns["x_test"], ns["y_test"], batch_size=512)
        ns[f"{name}_acc"] = evaluate(ns[f"{name}_model"], loader)["accuracy"]
    assert ns["scratch_acc"] > solution["scratch_acc"] + 0.2
    assert_fails("q2", ns, "scratch_acc = ", "did x_test or y_test change?")


def test_q2_float_subclass_cannot_fool_the_comparison(solution):
    class Always(float):
        """A float whose differences are all 0, so that `abs(actual - reported) < tol` holds."""
        def __sub__(self, other):
            return 0.0
        __rsub__ = __sub__

        def __abs__(self):
            return 0.0

    lie = Always(0.99)
    assert abs(0.5 - lie) == 0 and type(plain.to_plain(lie)) is float
    assert_fails("q2", {**solution, "scratch_acc": lie}, "scratch_acc = 0.9900 but scratch_model scores")


def test_q2_trained_on_the_test_split_fails(solution):
    x_pool, y_pool, x_test, y_test = LETTERS()
    leaky, acc = train(replace_head(zoo.pretrained_digit_cnn(seed=0), 19), x_test, y_test)
    ns = {**solution, "transfer_model": leaky, "transfer_acc": acc}
    assert_fails("q2", ns, "transfer_model scores", "it has trained on test images")


def test_q2_trained_on_some_test_letters_fails(solution):
    """190 test letters instead of 190 pool letters: the accuracy barely moves, the confidence on
    the memorised test letters does (rank test)."""
    x_pool, y_pool, x_test, y_test = LETTERS()
    some = balanced_subset(y_test, N_PER_CLASS, seed=0)
    torch.manual_seed(0)
    leaky, acc = train(DigitCNN(19), x_test[some], y_test[some])
    ns = {**solution, "scratch_model": leaky, "scratch_acc": acc}
    assert_fails("q2", ns, "scratch_model scores", "it has trained on test images")


@pytest.mark.parametrize("scratch_steps", [10, STEPS // 2])
def test_q2_unequal_budgets_fail(solution, scratch_steps):
    """The transferred model gets `steps`, the scratch model fewer: its honest accuracy is far
    below what the grader's own run of the same recipe reaches with `steps`."""
    x_train, y_train = solution["x_train"], solution["y_train"]
    torch.manual_seed(0)
    short, acc = train(DigitCNN(19), x_train, y_train, steps=scratch_steps)
    ns = {**solution, "scratch_model": short, "scratch_acc": acc}
    assert_fails("q2", ns, "scratch_model scores", "the same data and the same budget")


def test_q2_scratch_model_from_pretrained_weights_fails(solution):
    model, acc = train(replace_head(zoo.pretrained_digit_cnn(seed=0), 19, seed=3),
                       solution["x_train"], solution["y_train"])
    ns = {**solution, "scratch_model": model, "scratch_acc": acc}
    assert_fails("q2", ns, "scratch_model's body with the source's digit head", "random weights")


def test_q2_transfer_model_from_random_weights_fails(solution):
    torch.manual_seed(1)
    model, acc = train(DigitCNN(19), solution["x_train"], solution["y_train"])
    ns = {**solution, "transfer_model": model, "transfer_acc": acc}
    assert_fails("q2", ns, "transfer_model's body with the source's digit head",
                 "zoo.pretrained_digit_cnn(seed=0)")


def test_q2_broken_model_fails_clearly(solution):
    """NaN weights: every prediction is class 0; honestly reported, it still fails, with a message."""
    broken = copy.deepcopy(solution["scratch_model"])
    with torch.no_grad():
        broken.head.weight.fill_(float("nan"))
    accuracy = evaluate(broken, make_loader(solution["x_test"], solution["y_test"], 512))["accuracy"]
    assert_fails("q2", {**solution, "scratch_model": broken, "scratch_acc": accuracy},
                 "scratch_model scores")


def test_q2_one_model_twice_fails(solution):
    ns = {**solution, "scratch_model": solution["transfer_model"], "scratch_acc": solution["transfer_acc"]}
    assert_fails("q2", ns, "two different models")


@pytest.mark.parametrize("change, phrase", [
    ({"transfer_model": "source"}, "must have 19 outputs"),
    ({"scratch_model": nn.Linear(784, 19)}, "weights do not fit"),
    ({"scratch_model": "a model"}, "should be a DigitCNN(num_classes=19) model, got a str"),
    ({"scratch_acc": "history"}, "keep its ['accuracy']"),
    ({"scratch_acc": 61.5}, "a percentage?"),
    ({"scratch_acc": True}, "scratch_acc should be a float"),
    ({"steps": 10**6}, "steps = 1000000"),
    ({"train_idx": np.arange(190)}, "fix it first"),
])
def test_q2_malformed_answers_fail_clearly(solution, change, phrase):
    ns = dict(solution)
    for key, value in change.items():
        if isinstance(value, str) and value == "source":
            value = zoo.pretrained_digit_cnn(seed=0)  # the digit head was never replaced
        elif isinstance(value, str) and value == "history":  # train_on_subset's whole result, not its ["accuracy"]
            value = {"accuracy": 0.6, "seconds": 1.0, "history": History()}
        ns[key] = value
    assert_fails("q2", ns, phrase)


# --------------------------------------------------------------- q3: relative error reduction
@pytest.mark.parametrize("seed", SEEDS)
def test_q3_solution_passes(solution, seed):
    assert_passes("q3", solution, seed)


def with_numpy(scratch_acc, transfer_acc):
    accuracies = np.array([scratch_acc, transfer_acc])
    if ((accuracies < 0) | (accuracies > 1)).any() or scratch_acc == 1:
        raise ValueError("accuracies must lie in [0, 1] and scratch must leave errors")
    errors = 1 - accuracies
    return np.float64((errors[0] - errors[1]) / errors[0])


def with_torch(scratch_acc, transfer_acc):
    acc = torch.tensor([scratch_acc, transfer_acc], dtype=torch.float64)
    if not bool(((acc >= 0) & (acc <= 1)).all()) or scratch_acc == 1:
        raise ValueError("invalid accuracies")
    return (acc[1] - acc[0]) / (1 - acc[0])  # a 0-d tensor


@pytest.mark.parametrize("function", [with_numpy, with_torch])
def test_q3_written_another_way_passes(solution, function):
    assert_passes("q3", {**solution, "relative_error_reduction": function})


def accuracy_gain_ratio(scratch_acc, transfer_acc):
    relative_error_reduction(scratch_acc, transfer_acc)  # the same validation
    return (transfer_acc - scratch_acc) / scratch_acc


def flipped_sign(scratch_acc, transfer_acc):
    return -relative_error_reduction(scratch_acc, transfer_acc)


def no_validation(scratch_acc, transfer_acc):
    return ((1 - scratch_acc) - (1 - transfer_acc)) / (1 - scratch_acc)


def zero_division(scratch_acc, transfer_acc):
    if not (0 <= scratch_acc <= 1 and 0 <= transfer_acc <= 1):
        raise ValueError("out of range")
    return ((1 - scratch_acc) - (1 - transfer_acc)) / (1 - scratch_acc)


def returns_text(scratch_acc, transfer_acc):
    return f"{relative_error_reduction(scratch_acc, transfer_acc):.0%}"


@pytest.mark.parametrize("function, phrase", [
    (accuracy_gain_ratio, "expected"),
    (flipped_sign, "expected"),
    (no_validation, "must raise ValueError"),
    (zero_division, "must raise ValueError, it raised ZeroDivisionError"),
    (returns_text, "returned str"),
])
def test_q3_wrong_function_fails(solution, function, phrase):
    assert_fails("q3", {**solution, "relative_error_reduction": function}, phrase)


# ---------------------------------------------------------------------- q4: a prediction
@pytest.mark.parametrize("answer", ["b", "B", " b ", "(b)", "b)"])
def test_q4_right_choice_passes(answer):
    assert_passes("q4", {"answer_q4": answer})


@pytest.mark.parametrize("answer, phrase", [
    ("a", "largest size"), ("c", "smallest size"), ("d", "38 labelled images"),
    (..., "still `...`"), (2, "one letter in quotes"), ("e", "one letter, 'a', 'b', 'c' or 'd'"),
    ("a or b", "one letter"),
])
def test_q4_wrong_or_malformed_answer_fails(answer, phrase):
    message = assert_fails("q4", {"answer_q4": answer}, phrase)
    assert "(b)" not in message, "the feedback must teach, not give the answer away"


# ------------------------------------------------------------------- the blank exercise
def test_blank_exercise_fails_every_question_cleanly():
    """The exercise as shipped: its cells raise NotImplementedError or leave `...`; every
    question fails with a message, none crashes the grader."""
    notebook = json.loads((ROOT / "exercises" / "T01-what-is-transfer-learning.ipynb").read_text())
    ns: dict = {}
    for cell in notebook["cells"]:
        code = "".join(cell["source"])
        if cell["cell_type"] != "code" or "grader." in code:
            continue
        try:
            exec(compile(code, "<exercise>", "exec"), ns)
        except (NotImplementedError, NameError):  # a blank, or a name a blank never defined
            pass
    for name in QUESTIONS:
        result = grade(name, ns)
        assert not result.passed and result.message and "Traceback" not in result.message, name

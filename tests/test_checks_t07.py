"""Tests of tlcourse.checks.t07: right answers written several ways pass, the usual wrong ones
(the one-shot ``.eval()`` that ``model.train()`` undoes, partial freezing, swapped or wrong counts,
rates in the wrong order, reports that do not match the model) fail with a useful message.

Every question goes through ``evaluate_question`` (collect, plain-data round trip, grade). A seeded
random DigitCNN stands in for ``zoo.pretrained_digit_cnn(seed=0)``, so nothing here trains for long.
"""
import copy
import types

import numpy as np
import pytest
import torch
from torch import nn

from tlcourse import zoo
from tlcourse.checks import t07
from tlcourse.data import load
from tlcourse.exercise_data import t07_letter_splits
from tlcourse.finetune import (count_parameters, discriminative_param_groups, freeze,
                               keep_frozen_batchnorm_in_eval, unfreeze)
from tlcourse.forgetting import retained_accuracy, with_head
from tlcourse.grading.feedback import evaluate_question
from tlcourse.models import DigitCNN
from tlcourse.train import evaluate, make_loader
from tlcourse.transfer import replace_head, train_on_subset

BLOCKS = ["block1", "block2", "block3", "head"]
SEED = 4321
_BN = nn.modules.batchnorm._BatchNorm


@pytest.fixture(scope="module", autouse=True)
def source():
    """A seeded random DigitCNN with non-trivial BatchNorm statistics stands in for the source."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = DigitCNN(num_classes=10)
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, _BN):
                    m.running_mean.normal_(0, 0.3)
                    m.running_var.uniform_(0.5, 1.5)
    net.eval()
    t07._source_state.cache_clear()
    t07._source_accuracy.cache_clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(zoo, "pretrained_digit_cnn", lambda seed=0, **kw: copy.deepcopy(net))
        yield net
    t07._source_state.cache_clear()
    t07._source_accuracy.cache_clear()


def grade(ns, question, seed=SEED):
    q = next(q for q in t07.QUESTIONS if q.name == question)
    return evaluate_question(q, ns, seed, time_limit=None)


def passes(ns, question, seed=SEED):
    result = grade(ns, question, seed)
    assert result.passed, f"{question}: {result.message}"


def fails(ns, question, words, seed=SEED):
    result = grade(ns, question, seed)
    assert not result.passed, f"{question} passed although it should not"
    assert words in result.message, result.message
    return result


def test_points_come_from_the_questions():
    assert [(q.name, q.points) for q in t07.QUESTIONS] == [("q1", 2), ("q2", 2), ("q3", 2), ("q4", 1)]


# ---------------------------------------------------------------- q1
def _requires_grad_head_only(model, head):
    inside = {id(p) for p in getattr(model, head).parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in inside)
    return {id(m) for m in getattr(model, head).modules()}


def _stay_in_inference_mode(bn, inputs):
    if not any(p.requires_grad for p in bn.parameters()):
        bn.eval()


def freeze_with_hooks(model, head="head"):
    """The solution's way: a forward pre-hook on every frozen BatchNorm layer."""
    head_parts = _requires_grad_head_only(model, head)
    for m in model.modules():
        if isinstance(m, _BN) and id(m) not in head_parts:
            m.eval()
            m.register_forward_pre_hook(_stay_in_inference_mode)
    return count_parameters(model)


def freeze_with_the_package(model, head="head"):
    """Another way: the package's helpers, the rule applied before every forward pass, a list of numpy ints."""
    unfreeze(freeze(model), [head])

    def before_every_forward(module, inputs):  # returns None: a returned value would replace the input
        keep_frozen_batchnorm_in_eval(module)

    model.register_forward_pre_hook(before_every_forward)
    return [np.int64(v) for v in count_parameters(model)]


def freeze_by_overriding_train(model, head="head"):
    """Another way: train() itself keeps the frozen BatchNorm layers in inference mode; 0-d tensors."""
    head_parts = _requires_grad_head_only(model, head)
    frozen = [m for m in model.modules() if isinstance(m, _BN) and id(m) not in head_parts]
    original = type(model).train

    def train(self, mode=True):
        original(self, mode)
        for m in frozen:
            m.eval()
        return self

    model.train = types.MethodType(train, model)
    model.train()
    return tuple(torch.tensor(v) for v in count_parameters(model))


def freeze_once(model, head="head"):
    """The one-shot .eval() that the next model.train() undoes (the old solution)."""
    head_parts = _requires_grad_head_only(model, head)
    for m in model.modules():
        if isinstance(m, _BN) and id(m) not in head_parts:
            m.eval()
    return count_parameters(model)


def freeze_with_zero_momentum(model, head="head"):
    """Keeps the running statistics, but in training mode BatchNorm still normalises with the batch's."""
    head_parts = _requires_grad_head_only(model, head)
    for m in model.modules():
        if isinstance(m, _BN) and id(m) not in head_parts:
            m.momentum = 0.0
    return count_parameters(model)


def freeze_without_bn(model, head="head"):
    _requires_grad_head_only(model, head)
    return count_parameters(model)


def freeze_swapped(model, head="head"):
    trainable, total = freeze_with_hooks(model, head)
    return total, trainable


def freeze_only_body(model, head="head"):  # forgets to unfreeze a head that was frozen before
    for name, p in model.named_parameters():
        if not name.startswith(head + "."):
            p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, _BN) and not any(p.requires_grad for p in m.parameters()):
            m.register_forward_pre_hook(_stay_in_inference_mode)
    return count_parameters(model)


def freeze_every_batchnorm(model, head="head"):  # also the head's own BatchNorm, which is trainable
    _requires_grad_head_only(model, head)
    for m in model.modules():
        if isinstance(m, _BN):
            m.register_forward_pre_hook(lambda bn, args: bn.train(False) and None)
    return count_parameters(model)


def freeze_with_a_hook_that_returns(model, head="head"):
    """A hook written as `lambda bn, args: bn.eval()` returns the module, which replaces its input."""
    head_parts = _requires_grad_head_only(model, head)
    for m in model.modules():
        if isinstance(m, _BN) and id(m) not in head_parts:
            m.register_forward_pre_hook(lambda bn, args: bn.eval())
    return count_parameters(model)


def freeze_with_float_counts(model, head="head"):
    return tuple(float(v) for v in freeze_with_hooks(model, head))


def _q1_namespace(fn, source, model_fn=None):
    model = replace_head(copy.deepcopy(source), 19)
    trainable, total = (model_fn or fn)(model)
    return {"freeze_all_but_head": fn, "model": model, "trainable": trainable, "total": total}


@pytest.mark.parametrize("fn", [freeze_with_hooks, freeze_with_the_package, freeze_by_overriding_train])
def test_q1_accepts_freezing_that_survives_train(fn, source):
    passes(_q1_namespace(fn, source), "q1")
    for seed in (0, 1):
        assert grade(_q1_namespace(fn, source), "q1", seed).passed


@pytest.mark.parametrize("fn, words", [
    (freeze_once, "one-shot .eval() is undone by the next model.train()"),
    (freeze_without_bn, "updated its running statistics"),
    (freeze_with_zero_momentum, "use its stored statistics"),
    (freeze_swapped, "expected (trainable, total)"),
    (freeze_only_body, "must end up trainable"),
    (freeze_every_batchnorm, "leave it in training mode"),
    (freeze_with_float_counts, "of ints"),
    (freeze_with_a_hook_that_returns, "return None"),
])
def test_q1_rejects_wrong_functions(fn, words, source):
    fails(_q1_namespace(fn, source, model_fn=freeze_with_hooks), "q1", words)


def test_q1_tests_the_notebooks_model_too_and_leaves_it_as_it_was(source):
    ns = _q1_namespace(freeze_with_hooks, source, model_fn=freeze_once)  # right function, model frozen once
    before = {k: v.clone() for k, v in ns["model"].state_dict().items()}
    modes = [m.training for m in ns["model"].modules()]
    fails(ns, "q1", "model: after model.train()")
    after = ns["model"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "collect changed the student's model"
    assert [m.training for m in ns["model"].modules()] == modes


def test_q1_rejects_wrong_counts_and_a_model_that_is_not_the_source(source):
    ns = _q1_namespace(freeze_with_hooks, source)
    fails({**ns, "trainable": 128 * 10 + 10}, "q1", "model has")
    fails({**ns, "total": ns["trainable"]}, "q1", "model has")
    random = replace_head(DigitCNN(10), 19)
    freeze_with_hooks(random)
    fails({**ns, "model": random}, "q1", "differs from the pretrained digit CNN")
    fails({**ns, "model": "model"}, "q1", "should be the pretrained DigitCNN")
    digit_head = copy.deepcopy(source)
    freeze_with_hooks(digit_head)
    fails({**ns, "model": digit_head}, "q1", "19-class head")


# ---------------------------------------------------------------- q2
def groups_right(model, blocks, lr, decay):
    groups = []
    for depth, name in enumerate(reversed(list(blocks))):
        params = [p for p in model.get_submodule(name).parameters() if p.requires_grad]
        if params:
            groups.append({"params": params, "lr": lr / decay**depth})
    return groups[::-1]


def groups_from_the_package(model, blocks, lr, decay):
    """Another way: the package's helper (groups with an extra weight_decay key), as a tuple."""
    return tuple(discriminative_param_groups(model, blocks, lr, decay))


def groups_reversed(model, blocks, lr, decay):
    groups = groups_right(model, blocks, lr, decay)
    lrs = [g["lr"] for g in groups][::-1]
    return [{**g, "lr": r} for g, r in zip(groups, lrs)]


def groups_with_frozen(model, blocks, lr, decay):
    n = len(blocks)
    return [{"params": list(model.get_submodule(b).parameters()), "lr": lr / decay ** (n - 1 - i)}
            for i, b in enumerate(blocks)]


def groups_keeping_frozen_params(model, blocks, lr, decay):
    groups = groups_with_frozen(model, blocks, lr, decay)
    return [g for g in groups if any(p.requires_grad for p in g["params"])]


def groups_renumbered(model, blocks, lr, decay):  # counts depth over non-empty blocks only
    kept = [[p for p in model.get_submodule(b).parameters() if p.requires_grad] for b in blocks]
    kept = [params for params in kept if params]
    return [{"params": params, "lr": lr / decay ** (len(kept) - 1 - i)} for i, params in enumerate(kept)]


def groups_mixed(model, blocks, lr, decay):  # block2's parameters put in block3's group
    groups = groups_right(model, blocks, lr, decay)
    if len(groups) == 4:
        groups[2] = {**groups[2], "params": groups[1]["params"] + groups[2]["params"]}
        groups[1] = {**groups[1], "params": []}
    return groups


def _q2_namespace(fn, source, lr=1e-3):
    ft_model = replace_head(copy.deepcopy(source), 19)
    optimizer = torch.optim.Adam(groups_right(ft_model, BLOCKS, lr=lr, decay=2.6))
    return {"layerwise_param_groups": fn, "ft_model": ft_model, "optimizer": optimizer}


@pytest.mark.parametrize("fn", [groups_right, groups_from_the_package])
def test_q2_accepts_right_answers(fn, source):
    for seed in (SEED, 0, 1, 2):
        result = grade(_q2_namespace(fn, source), "q2", seed)
        assert result.passed, result.message


@pytest.mark.parametrize("fn, words", [
    (groups_reversed, "input to output"), (groups_with_frozen, "frozen"),
    (groups_keeping_frozen_params, "leave out frozen ones"), (groups_mixed, "trainable parameters"),
    (lambda model, blocks, lr, decay: None, "list of dicts")])
def test_q2_rejects_wrong_functions(source, fn, words):
    fails(_q2_namespace(fn, source), "q2", words)


def test_q2_frozen_bottom_blocks_do_not_shift_the_rates_but_depth_counts(source):
    # Frozen bottom blocks do not shift the others' rates, so this answer passes too...
    passes(_q2_namespace(groups_renumbered, source), "q2")

    def groups_without_depth(model, blocks, lr, decay):
        return [{**g, "lr": lr} for g in groups_right(model, blocks, lr, decay)]
    fails(_q2_namespace(groups_without_depth, source), "q2", "(input to output)")


def test_q2_rejects_a_wrong_optimizer(source):
    fails(_q2_namespace(groups_right, source, lr=1e-2), "q2", "optimizer rates")
    ns = _q2_namespace(groups_right, source)
    fails({**ns, "optimizer": torch.optim.Adam(ns["ft_model"].parameters(), lr=1e-3)}, "q2", "optimizer rates")
    fails({**ns, "optimizer": torch.optim.SGD(groups_right(ns["ft_model"], BLOCKS, 1e-3, 2.6))}, "q2",
          "torch.optim.Adam")
    other = replace_head(copy.deepcopy(source), 19)  # an optimizer over another model's parameters
    fails({**ns, "optimizer": torch.optim.Adam(groups_right(other, BLOCKS, 1e-3, 2.6))}, "q2", "exactly once")
    random = replace_head(DigitCNN(10), 19)
    fails({**ns, "ft_model": random, "optimizer": torch.optim.Adam(groups_right(random, BLOCKS, 1e-3, 2.6))},
          "q2", "pretrained weights")


# ---------------------------------------------------------------- q3
@pytest.fixture(scope="module")
def letters():
    x, y = load("emnist_letters").to_tensors()
    splits = t07_letter_splits(5)
    return {name: (x[idx], y[idx]) for name, idx in splits.items()}


@pytest.fixture(scope="module")
def digits():
    x, y = load("emnist_digits").to_tensors()
    return x[8000:], y[8000:]


def _accuracy(model, x, y):
    return evaluate(model, make_loader(x, y, batch_size=1000))["accuracy"]


def _fine_tuned(source, letters, frozen=(), steps=6):
    model = replace_head(copy.deepcopy(source), 19)
    (x, y), (x_test, y_test) = letters["train"], letters["test"]
    acc = train_on_subset(model, x, y, x_test, y_test, steps=steps, lr=1e-2, frozen_blocks=frozen)["accuracy"]
    return model, acc


@pytest.fixture(scope="module")
def q3_namespace(source, letters, digits):
    model, letters_acc = _fine_tuned(source, letters)
    x, y = digits
    probe = copy.deepcopy(model)
    probe.head = copy.deepcopy(source.head)
    return {"forget_model": model, "letters_acc": letters_acc, "source_acc_before": _accuracy(source, x, y),
            "source_acc_after": _accuracy(probe, x, y)}


def test_q3_accepts_the_right_answer_written_several_ways(q3_namespace, source, digits):
    ns = q3_namespace
    passes(ns, "q3")
    x, y = digits
    after = retained_accuracy(ns["forget_model"], source.head, x, y)  # the package's way
    passes({**ns, "source_acc_after": np.float32(after), "letters_acc": np.float64(ns["letters_acc"]),
            "source_acc_before": torch.tensor(ns["source_acc_before"])}, "q3")


def test_q3_rejects_partial_freezing(q3_namespace, source, letters):
    for frozen, still in ((("block1", "block2"), "block1 and block2"), (("block1",), "block1 of")):
        model, acc = _fine_tuned(source, letters, frozen=frozen)
        probe = with_head(model, source.head)
        x, y = load("emnist_digits").to_tensors()
        ns = {**q3_namespace, "forget_model": model, "letters_acc": acc,
              "source_acc_after": _accuracy(probe, x[8000:], y[8000:])}
        fails(ns, "q3", f"{still}", )
        fails(ns, "q3", "did not move")
    fails({**q3_namespace, "forget_model": replace_head(copy.deepcopy(source), 19)}, "q3", "barely moved")


def test_q3_rejects_reports_that_do_not_match_the_model(q3_namespace, source, letters, digits):
    ns = q3_namespace
    before, after = ns["source_acc_before"], ns["source_acc_after"]
    fails({**ns, "source_acc_after": after + 4 / 2000}, "q3", "original digit head")  # 3 images tolerated
    fails({**ns, "source_acc_after": ns["letters_acc"]}, "q3", "original digit head")
    fails({**ns, "source_acc_before": before + 4 / 2000}, "q3", "pretrained model scores")
    passes({**ns, "source_acc_after": after + 2 / 2000}, "q3")  # GPU rounding flips a couple of digits
    fails({**ns, "source_acc_after": 1}, "q3", "original digit head")
    fails({**ns, "source_acc_after": [after]}, "q3", "float")
    fails({**ns, "source_acc_after": "0.9"}, "q3", "float")
    fails({**ns, "forget_model": with_head(ns["forget_model"], source.head)}, "q3", "19-class")
    fails({**ns, "forget_model": "forget_model"}, "q3", "should be a DigitCNN")
    x, y = letters["train"]  # x_test, y_test = x_train, y_train: the grader keeps its own test split
    fails({**ns, "letters_acc": _accuracy(ns["forget_model"], x, y)}, "q3", "letters_acc")
    fails({**ns, "letters_acc": ns["letters_acc"] + 2 / 380}, "q3", "letters_acc")


# ---------------------------------------------------------------- q4
@pytest.mark.parametrize("answer", ["b", "B", " b "])
def test_q4_accepts_the_right_choice_in_any_spelling(answer):
    passes({"answer_q4": answer}, "q4")


def test_q4_teaches_without_giving_the_answer_away():
    for wrong in ("a", "C", "d"):
        result = fails({"answer_q4": wrong}, "q4", "not '")
        assert t07.Q4_CHOICES["b"] not in result.message and "'b'" not in result.message
    fails({"answer_q4": "f"}, "q4", "choose one of")
    fails({"answer_q4": 0.5}, "q4", "one letter as a string")
    fails({"answer_q4": None}, "q4", "one letter as a string")
    fails({}, "q4", "define `answer_q4` first")

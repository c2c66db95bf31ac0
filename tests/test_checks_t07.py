"""The T07 checks accept right answers and reject the usual wrong ones (a stand-in source model
replaces the cached digit CNN, so nothing is trained here)."""
import copy

import pytest
import torch
from torch import nn

from tlcourse import zoo
from tlcourse.checks import t07
from tlcourse.finetune import count_parameters, discriminative_param_groups
from tlcourse.forgetting import with_head
from tlcourse.models import DigitCNN
from tlcourse.transfer import replace_head

BLOCKS = ["block1", "block2", "block3", "head"]


def _check(name, ns):
    question = next(q for q in t07.QUESTIONS if q.name == name)
    question.check(ns)


def _fails(name, ns, words):
    with pytest.raises(AssertionError, match=words):
        _check(name, ns)


@pytest.fixture
def source(monkeypatch):
    torch.manual_seed(0)
    net = DigitCNN(num_classes=10).eval()
    monkeypatch.setattr(zoo, "pretrained_digit_cnn", lambda seed=0: copy.deepcopy(net))
    return net


# ---------------------------------------------------------------- q1
def freeze_right(model, head="head"):
    head_module = getattr(model, head)
    inside = {id(p) for p in head_module.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in inside)
    parts = {id(m) for m in head_module.modules()}
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in parts:
            m.eval()
    return count_parameters(model)


def freeze_without_bn(model, head="head"):
    inside = {id(p) for p in getattr(model, head).parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in inside)
    return count_parameters(model)


def freeze_swapped(model, head="head"):
    trainable, total = freeze_right(model, head)
    return total, trainable


def freeze_only_body(model, head="head"):  # forgets to unfreeze a head that was frozen before
    for name, p in model.named_parameters():
        if not name.startswith(head + "."):
            p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    return count_parameters(model)


def _q1_namespace(fn):
    model = replace_head(DigitCNN(10), 19)
    trainable, total = freeze_right(model)
    return {"freeze_all_but_head": fn, "model": model, "trainable": trainable, "total": total}


def test_q1_accepts_the_right_answer():
    _check("q1", _q1_namespace(freeze_right))


@pytest.mark.parametrize("fn, words", [(freeze_without_bn, "BatchNorm"), (freeze_swapped, "expected"),
                                       (freeze_only_body, "trainable")])
def test_q1_rejects_wrong_functions(fn, words):
    _fails("q1", _q1_namespace(fn), words)


def test_q1_rejects_wrong_counts():
    ns = _q1_namespace(freeze_right)
    ns["trainable"] = 128 * 10 + 10
    _fails("q1", ns, "model has")


# ---------------------------------------------------------------- q2
def groups_right(model, blocks, lr, decay):
    return [{"params": g["params"], "lr": g["lr"]} for g in discriminative_param_groups(model, blocks, lr, decay)]


def groups_reversed(model, blocks, lr, decay):
    groups = groups_right(model, blocks, lr, decay)
    lrs = [g["lr"] for g in groups][::-1]
    return [{**g, "lr": r} for g, r in zip(groups, lrs)]


def groups_with_frozen(model, blocks, lr, decay):
    n = len(blocks)
    return [{"params": list(model.get_submodule(b).parameters()), "lr": lr / decay ** (n - 1 - i)}
            for i, b in enumerate(blocks)]


def _q2_namespace(fn, source, lr=1e-3):
    ft_model = replace_head(copy.deepcopy(source), 19)
    optimizer = torch.optim.Adam(groups_right(ft_model, BLOCKS, lr=lr, decay=2.6))
    return {"layerwise_param_groups": fn, "ft_model": ft_model, "optimizer": optimizer}


def test_q2_accepts_the_right_answer(source):
    _check("q2", _q2_namespace(groups_right, source))


@pytest.mark.parametrize("fn, words", [(groups_reversed, "input to output"), (groups_with_frozen, "frozen")])
def test_q2_rejects_wrong_functions(source, fn, words):
    _fails("q2", _q2_namespace(fn, source), words)


def test_q2_rejects_a_wrong_optimizer(source):
    _fails("q2", _q2_namespace(groups_right, source, lr=1e-2), "optimizer rates")
    ns = _q2_namespace(groups_right, source)
    ns["optimizer"] = torch.optim.Adam(ns["ft_model"].parameters(), lr=1e-3)
    _fails("q2", ns, "optimizer rates")
    ns = _q2_namespace(groups_right, source)
    ns["ft_model"] = replace_head(DigitCNN(10), 19)
    _fails("q2", ns, "pretrained weights")


# ---------------------------------------------------------------- q3
@pytest.fixture
def digits():
    from tlcourse.data import load

    x, y = load("emnist_digits").to_tensors()
    return x[8000:], y[8000:]


def _accuracy(model, x, y):
    with torch.no_grad():
        return float((model.eval()(x).argmax(1) == y).float().mean())


def _q3_namespace(source, digits):
    x, y = digits
    model = replace_head(copy.deepcopy(source), 19)
    with torch.no_grad():
        for p in model.block3.parameters():
            p.mul_(1.5)  # stands in for fine-tuning: the body has moved
    return {"forget_model": model, "source_acc_before": _accuracy(source, x, y),
            "source_acc_after": _accuracy(with_head(model, source.head), x, y)}


def test_q3_accepts_the_right_answer(source, digits):
    _check("q3", _q3_namespace(source, digits))


def test_q3_rejects_wrong_answers(source, digits):
    ns = _q3_namespace(source, digits)
    _fails("q3", {**ns, "source_acc_after": ns["source_acc_before"] + 0.1 if ns["source_acc_before"] < 0.9 else 0.0},
           "original digit head")
    _fails("q3", {**ns, "source_acc_before": 1.0}, "pretrained model scores")
    _fails("q3", {**ns, "forget_model": with_head(ns["forget_model"], source.head)}, "19-class")
    frozen = replace_head(copy.deepcopy(source), 19)
    _fails("q3", {**ns, "forget_model": frozen}, "barely moved")
    _fails("q3", {**ns, "source_acc_after": 1}, "float")

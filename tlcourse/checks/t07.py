"""Checks for exercise T07 (fine-tuning): freezing all but the head (BatchNorm included),
layer-wise learning rates, and forgetting of the source task measured with the old head."""
from __future__ import annotations

import math

import torch
from torch import nn

from tlcourse.grading import Question

_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_BLOCKS = ["block1", "block2", "block3", "head"]


class _Tagged(nn.Module):
    """A small model whose classifier is called ``classifier`` and holds a BatchNorm of its own."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU())
        self.classifier = nn.Sequential(nn.BatchNorm1d(6), nn.Linear(6, 3))

    def forward(self, x):
        return self.classifier(self.body(x))


def _fresh(make):
    """Build a test model from a fixed seed without touching the student's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return make()


def _counts(model):
    return (sum(p.numel() for p in model.parameters() if p.requires_grad),
            sum(p.numel() for p in model.parameters()))


def _check_frozen_state(model, head: str, label: str) -> None:
    head_module = getattr(model, head)
    head_ids = {id(p) for p in head_module.parameters()}
    head_parts = {id(m) for m in head_module.modules()}
    for name, p in model.named_parameters():
        if id(p) in head_ids:
            assert p.requires_grad, f"{label}: {name} belongs to the head and must stay trainable"
        else:
            assert not p.requires_grad, f"{label}: {name} is outside the head but still trainable"
    for name, module in model.named_modules():
        if isinstance(module, _BATCHNORM) and id(module) not in head_parts:
            assert not module.training, (
                f"{label}: BatchNorm layer {name} is frozen but still in training mode, so its running "
                "statistics would drift: call .eval() on it")


def _check_freeze(ns):
    from tlcourse.models import DigitCNN

    fn = ns["freeze_all_but_head"]
    net = _fresh(lambda: DigitCNN(num_classes=7)).train()
    got = fn(net)
    expected = _counts(net)
    assert isinstance(got, tuple) and len(got) == 2, f"return a tuple (trainable, total), got {got!r}"
    assert tuple(int(v) for v in got) == expected == (128 * 7 + 7, expected[1]), (
        f"on DigitCNN(num_classes=7) expected (trainable, total) = ({128 * 7 + 7}, {expected[1]}), got {got!r}")
    _check_frozen_state(net, "head", "DigitCNN(num_classes=7)")
    assert net.head.training, "leave the head's own train/eval mode alone"

    tagged = _fresh(_Tagged).train()
    for p in tagged.parameters():  # everything frozen beforehand: the head must come back
        p.requires_grad_(False)
    got = fn(tagged, head="classifier")
    want = (sum(p.numel() for p in tagged.classifier.parameters()), sum(p.numel() for p in tagged.parameters()))
    assert isinstance(got, tuple) and tuple(int(v) for v in got) == want, (
        f"with head='classifier' expected {want}, got {got!r}: the head named by `head` must end up "
        "trainable even if it was frozen before")
    _check_frozen_state(tagged, "classifier", "a model whose head is called 'classifier'")
    assert tagged.classifier[0].training, "a BatchNorm layer inside the head is trainable: leave it in training mode"

    model = ns["model"]
    assert isinstance(model, DigitCNN) and model.head.out_features == 19, (
        "model should be the pretrained DigitCNN with a new 19-class head")
    _check_frozen_state(model, "head", "model")
    trainable, total = ns["trainable"], ns["total"]
    assert (trainable, total) == _counts(model), (
        f"(trainable, total) = ({trainable!r}, {total!r}) but model has {_counts(model)}")


def _lrs(groups):
    return [g["lr"] for g in groups]


def _check_layerwise(ns):
    from tlcourse import zoo
    from tlcourse.models import DigitCNN

    fn = ns["layerwise_param_groups"]
    net = _fresh(lambda: DigitCNN(num_classes=3))
    groups = list(fn(net, _BLOCKS, lr=1.0, decay=10.0))
    assert len(groups) == 4, f"one group per block with trainable parameters: expected 4, got {len(groups)}"
    for got, want in zip(_lrs(groups), [1e-3, 1e-2, 1e-1, 1.0]):
        assert math.isclose(got, want, rel_tol=1e-9), (
            f"lr=1.0, decay=10 over {_BLOCKS} should give [0.001, 0.01, 0.1, 1.0] (input to output), "
            f"got {_lrs(groups)}")
    for group, name in zip(groups, _BLOCKS):
        want = {id(p) for p in net.get_submodule(name).parameters()}
        assert {id(p) for p in group["params"]} == want, f"the group with lr {group['lr']:g} should hold exactly {name}'s parameters"
    for p in net.block1.parameters():
        p.requires_grad_(False)
    groups = list(fn(net, _BLOCKS, lr=1.0, decay=10.0))
    assert len(groups) == 3 and all(math.isclose(a, b) for a, b in zip(_lrs(groups), [1e-2, 1e-1, 1.0])), (
        f"with block1 frozen, expected 3 groups with lrs [0.01, 0.1, 1.0], got {_lrs(groups)}: leave out "
        "frozen parameters and empty blocks")
    half = list(fn(net, ["block2", "head"], lr=0.5, decay=2.0))
    assert [round(v, 12) for v in _lrs(half)] == [0.25, 0.5], (
        f"blocks ['block2', 'head'], lr=0.5, decay=2 should give [0.25, 0.5], got {_lrs(half)}")
    assert all(math.isclose(v, 0.5) for v in _lrs(fn(_fresh(lambda: DigitCNN(3)), _BLOCKS, lr=0.5, decay=1.0))), (
        "decay=1 must give every block the same rate")

    optimizer, ft_model = ns["optimizer"], ns["ft_model"]
    assert isinstance(optimizer, torch.optim.Adam), f"optimizer should be torch.optim.Adam, got {type(optimizer).__name__}"
    assert isinstance(ft_model, DigitCNN) and ft_model.head.out_features == 19, (
        "ft_model should be the pretrained DigitCNN with a new 19-class head")
    source = zoo.pretrained_digit_cnn(seed=0)
    assert torch.allclose(ft_model.block1[0].weight.detach().cpu(), source.block1[0].weight), (
        "ft_model should start from the pretrained weights (a copy of the source with a new head)")
    want = [1e-3 / 2.6**k for k in (3, 2, 1, 0)]
    got = [g["lr"] for g in optimizer.param_groups]
    assert len(got) == 4 and all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(got, want)), (
        f"optimizer rates should be {[f'{v:.3g}' for v in want]} (block1 ... head), got {[f'{v:.3g}' for v in got]}")
    in_optimizer = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(in_optimizer) == sorted(id(p) for p in ft_model.parameters()), (
        "optimizer must hold every parameter of ft_model exactly once")


def _check_forgetting(ns):
    from tlcourse import zoo
    from tlcourse.data import load
    from tlcourse.forgetting import retained_accuracy, weight_drift
    from tlcourse.models import DigitCNN
    from tlcourse.train import evaluate, make_loader

    source = zoo.pretrained_digit_cnn(seed=0)
    x, y = load("emnist_digits").to_tensors()
    x_src, y_src = x[8000:], y[8000:]
    before, after = ns["source_acc_before"], ns["source_acc_after"]
    for name, value in (("source_acc_before", before), ("source_acc_after", after)):
        assert isinstance(value, float) and 0 <= value <= 1, f"{name} must be a float in [0, 1], got {value!r}"
    actual_before = evaluate(source, make_loader(x_src, y_src, batch_size=1000))["accuracy"]
    assert abs(before - actual_before) < 0.005, (
        f"source_acc_before = {before:.3f} but the pretrained model scores {actual_before:.3f} on the "
        "2,000 held-out digits")
    model = ns["forget_model"]
    assert isinstance(model, DigitCNN) and model.head.out_features == 19, (
        "forget_model must keep its 19-class letter head: put the digit head on a copy")
    drift = weight_drift(model, source, ["block1", "block2", "block3"])
    assert drift > 0.05, (
        f"forget_model's body barely moved (relative weight change {drift:.3f}): fine-tune all layers, "
        "nothing frozen, at lr_forget")
    actual_after = retained_accuracy(model, source.head, x_src, y_src)
    assert abs(after - actual_after) < 0.005, (
        f"source_acc_after = {after:.3f} but forget_model's body with the original digit head scores "
        f"{actual_after:.3f} on the held-out digits")


QUESTIONS = [
    Question("q1", points=2, names=("freeze_all_but_head", "model", "trainable", "total"),
             check=_check_freeze,
             hint="requires_grad = (parameter belongs to getattr(model, head)); then .eval() every BatchNorm "
                  "module that is not inside the head; count numel() of trainable and of all parameters."),
    Question("q2", points=2, names=("layerwise_param_groups", "optimizer", "ft_model"),
             check=_check_layerwise,
             hint="Walk the blocks from the output: block k from the top gets lr / decay**k; keep only "
                  "parameters with requires_grad; return the groups ordered input to output."),
    Question("q3", points=2, names=("forget_model", "source_acc_before", "source_acc_after"),
             check=_check_forgetting,
             hint="Keep copy.deepcopy(source.head) before training; after train_on_subset, evaluate a "
                  "deep copy of forget_model whose .head is that digit head on x_src, y_src."),
]

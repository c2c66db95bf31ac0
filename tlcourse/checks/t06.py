"""Checks for exercise T06 (feature extractors): a layer-wise linear probe, a layer chosen on
validation data, and a correctly frozen digit CNN (weights and BatchNorm) with a new head."""
from __future__ import annotations

import numbers

import numpy as np
import torch
from torch import nn

from tlcourse.grading import Question

LAYERS = ("block1", "block2", "block3", "head")
FROZEN_BLOCKS = ("block1", "block2", "block3")


class _TwoTaps(nn.Module):
    """A toy network: layer ``signal`` copies the two inputs that define the label, layer
    ``noise`` copies three inputs that carry no information about it."""

    def __init__(self):
        super().__init__()
        self.signal = nn.Linear(6, 2, bias=False)
        self.noise = nn.Linear(6, 3, bias=False)
        with torch.no_grad():
            self.signal.weight.copy_(torch.eye(6)[:2])
            self.noise.weight.copy_(torch.eye(6)[3:])

    def forward(self, x):
        return torch.cat([self.signal(x), self.noise(x)], dim=1)


def _reference_probes(model, layers, x_train, y_train, x_eval, y_eval) -> dict[str, float]:
    from tlcourse.features import extract_layer_features, linear_probe

    train = extract_layer_features(model, x_train, list(layers), pool="flatten")
    evaluation = extract_layer_features(model, x_eval, list(layers), pool="flatten")
    return {layer: linear_probe(train[layer], np.asarray(y_train), evaluation[layer],
                                np.asarray(y_eval)).accuracy for layer in layers}


def _as_accuracy(value, what: str) -> float:
    assert isinstance(value, numbers.Real) and not isinstance(value, bool), (
        f"{what} should be a float accuracy, got {type(value).__name__} {value!r}")
    value = float(value)
    assert 0 <= value <= 1, f"{what} = {value!r}; an accuracy is a fraction in [0, 1]"
    return value


def _check_probe_by_layer(ns):
    fn = ns["probe_by_layer"]
    rng = np.random.default_rng(6)
    x = torch.from_numpy(rng.normal(size=(200, 6)).astype(np.float32))
    y = torch.from_numpy(((x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()).numpy())  # 4 classes
    toy = _TwoTaps().eval()
    got = fn(toy, ["signal", "noise"], x[:120], y[:120], x[120:], y[120:])
    assert isinstance(got, dict), f"probe_by_layer should return a dict {{layer: accuracy}}, got {type(got).__name__}"
    assert sorted(got) == ["noise", "signal"], (
        f"on a toy model with layers ['signal', 'noise'] the keys should be those layers, got {sorted(got)}")
    accs = {k: _as_accuracy(v, f"the accuracy for layer {k!r}") for k, v in got.items()}
    assert accs["signal"] > 0.85 and accs["noise"] < 0.5, (
        f"toy check: the layer that carries the label should probe well and the noise layer near chance "
        f"(0.25); got signal {accs['signal']:.2f}, noise {accs['noise']:.2f}: are train and evaluation "
        "features taken from the right inputs?")

    val_acc = ns["val_acc"]
    assert isinstance(val_acc, dict) and sorted(val_acc) == sorted(LAYERS), (
        f"val_acc should be probe_by_layer's dict for the layers {list(LAYERS)}, got "
        f"{sorted(val_acc) if isinstance(val_acc, dict) else type(val_acc).__name__}")
    reference = _reference_probes(ns["digit_cnn"], LAYERS, ns["x_train"], ns["y_train"],
                                  ns["x_val"], ns["y_val"])
    for layer in LAYERS:
        got_acc = _as_accuracy(val_acc[layer], f"val_acc[{layer!r}]")
        assert abs(got_acc - reference[layer]) < 0.02, (
            f"val_acc[{layer!r}] = {got_acc:.3f}, but a linear probe on the flattened {layer} features "
            f"(train split -> validation split) scores {reference[layer]:.3f}: use "
            "extract_layer_features(..., pool='flatten') and linear_probe with its defaults")


def _check_best_layer(ns):
    from tlcourse.features import extract_layer_features, linear_probe

    val_acc, best = ns["val_acc"], ns["best_layer"]
    assert isinstance(val_acc, dict) and best in val_acc, (
        f"best_layer should be one of the layers in val_acc, got {best!r}")
    top = max(float(v) for v in val_acc.values())
    assert float(val_acc[best]) >= top - 1e-12, (
        f"best_layer = {best!r} has validation accuracy {float(val_acc[best]):.3f}, but the best in "
        f"val_acc is {top:.3f}: choose the layer on the validation split, not on the test split")
    model, train_x, train_y = ns["digit_cnn"], ns["x_train"], ns["y_train"]
    feats = {name: extract_layer_features(model, x, [best], pool="flatten")[best]
             for name, x in (("train", train_x), ("val", ns["x_val"]), ("test", ns["x_test"]))}
    val_ref = linear_probe(feats["train"], np.asarray(train_y), feats["val"], np.asarray(ns["y_val"])).accuracy
    assert abs(float(val_acc[best]) - val_ref) < 0.02, (
        f"val_acc[{best!r}] = {float(val_acc[best]):.3f} does not match a probe on the validation "
        f"split ({val_ref:.3f}); fix question 1 first")
    test_ref = linear_probe(feats["train"], np.asarray(train_y), feats["test"], np.asarray(ns["y_test"])).accuracy
    reported = _as_accuracy(ns["best_layer_test_acc"], "best_layer_test_acc")
    assert abs(reported - test_ref) < 0.02, (
        f"best_layer_test_acc = {reported:.3f}, but the probe on {best} (fitted on the train split) "
        f"scores {test_ref:.3f} on the test split")


def _check_frozen_extractor(ns):
    from tlcourse import zoo
    from tlcourse.finetune import count_parameters
    from tlcourse.models import DigitCNN
    from tlcourse.train import evaluate, make_loader

    model = ns["extractor"]
    assert isinstance(model, DigitCNN), f"extractor should be a DigitCNN, got {type(model).__name__}"
    assert model.head.out_features == 19, (
        f"extractor.head must have 19 outputs (letters A-S), has {model.head.out_features}")
    trainable_names = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trainable_names == ["head.bias", "head.weight"], (
        f"only the new head may be trainable; trainable now: {trainable_names}")
    source = zoo.pretrained_digit_cnn(seed=0)
    mine = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    theirs = source.state_dict()
    for block in FROZEN_BLOCKS:
        for key in (k for k in theirs if k.startswith(f"{block}.")):
            if key.endswith(("running_mean", "running_var")):
                assert torch.allclose(mine[key], theirs[key], atol=1e-6), (
                    f"{key} changed although {block} is frozen: BatchNorm ran in training mode. Keep the "
                    "frozen blocks in eval mode while training (tlcourse.train.fit does it)")
            elif not key.endswith("num_batches_tracked"):
                assert torch.allclose(mine[key], theirs[key], atol=1e-6), (
                    f"{key} differs from the pretrained digit CNN: start from zoo.pretrained_digit_cnn(seed=0) "
                    "and freeze block1-block3 before training")
    counted = count_parameters(model)
    reported = (ns["trainable"], ns["total"])
    assert all(isinstance(v, numbers.Integral) for v in reported) and tuple(map(int, reported)) == counted, (
        f"(trainable, total) = {reported!r}, but the extractor has {counted}: use count_parameters(extractor)")
    actual = evaluate(model, make_loader(ns["x_test"], ns["y_test"], batch_size=512))["accuracy"]
    head_acc = _as_accuracy(ns["head_acc"], "head_acc")
    assert abs(head_acc - actual) < 0.005, (
        f"head_acc = {head_acc:.3f} but the extractor scores {actual:.3f} on (x_test, y_test)")
    assert actual > 0.4, (
        f"the extractor scores only {actual:.3f} on the test letters (chance is 0.053): was the head trained?")


QUESTIONS = [
    Question("q1", points=2,
             names=("probe_by_layer", "val_acc", "digit_cnn", "x_train", "y_train", "x_val", "y_val"),
             check=_check_probe_by_layer,
             hint="feats = extract_layer_features(model, x, layers, pool='flatten') for the train and the "
                  "evaluation inputs, then linear_probe(train[layer], y_train, evaluation[layer], y_eval).accuracy "
                  "for every layer."),
    Question("q2", points=1,
             names=("val_acc", "best_layer", "best_layer_test_acc", "digit_cnn", "x_train", "y_train",
                    "x_val", "y_val", "x_test", "y_test"),
             check=_check_best_layer,
             hint="best_layer = max(val_acc, key=val_acc.get); then probe only that layer, fitted on the "
                  "train split and scored on the test split."),
    Question("q3", points=3, names=("extractor", "trainable", "total", "head_acc", "x_test", "y_test"),
             check=_check_frozen_extractor,
             hint="replace_head(zoo.pretrained_digit_cnn(seed=0), 19), freeze(model, ['block1', 'block2', "
                  "'block3']), an optimizer over the parameters that still require grad, and "
                  "tlcourse.train.fit (it keeps frozen BatchNorm layers in eval mode)."),
]

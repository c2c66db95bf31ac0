"""Tests of tlcourse.checks.t06: right answers pass, the typical wrong ones fail with a useful message."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tlcourse import zoo
from tlcourse.checks import t06
from tlcourse.data import load
from tlcourse.features import extract_layer_features, linear_probe
from tlcourse.finetune import count_parameters, freeze
from tlcourse.grading import Grader
from tlcourse.train import evaluate, fit, make_loader
from tlcourse.transfer import balanced_subset, replace_head

LAYERS = list(t06.LAYERS)


def probe_by_layer(model, layers, x_train, y_train, x_eval, y_eval, pool="flatten"):
    train = extract_layer_features(model, x_train, layers, pool=pool)
    evaluation = extract_layer_features(model, x_eval, layers, pool=pool)
    return {layer: linear_probe(train[layer], np.asarray(y_train), evaluation[layer], np.asarray(y_eval)).accuracy
            for layer in layers}


def trained_extractor(x, y, frozen_bn_eval=True, freeze_blocks=True, epochs=10):
    model = replace_head(zoo.pretrained_digit_cnn(seed=0, max_steps=60), 19)
    if freeze_blocks:
        freeze(model, ["block1", "block2", "block3"])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    fit(model, make_loader(x, y, batch_size=32, shuffle=True), epochs=epochs, optimizer=optimizer,
        progress=False, frozen_bn_eval=frozen_bn_eval)
    return model


@pytest.fixture(scope="module")
def namespace():
    """What the solution notebook defines, on a small split (8 letters per class per split)."""
    x_all, y_all = load("emnist_letters").to_tensors()
    idx = balanced_subset(y_all, 24, seed=0)
    labels = y_all[idx].numpy()
    parts = [np.concatenate([idx[labels == c][k * 8:(k + 1) * 8] for c in range(19)]) for k in range(3)]
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = ((x_all[p], y_all[p]) for p in parts)
    digit_cnn = zoo.pretrained_digit_cnn(seed=0, max_steps=60)  # a quick source, cached like the real one
    val_acc = probe_by_layer(digit_cnn, LAYERS, x_train, y_train, x_val, y_val)
    best = max(val_acc, key=val_acc.get)
    extractor = trained_extractor(x_train, y_train)
    trainable, total = count_parameters(extractor)
    return dict(
        probe_by_layer=probe_by_layer, val_acc=val_acc, digit_cnn=digit_cnn, x_train=x_train, y_train=y_train,
        x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test, best_layer=best,
        best_layer_test_acc=probe_by_layer(digit_cnn, [best], x_train, y_train, x_test, y_test)[best],
        extractor=extractor, trainable=trainable, total=total,
        head_acc=evaluate(extractor, make_loader(x_test, y_test, batch_size=512))["accuracy"])


@pytest.fixture(autouse=True)
def _quick_source(monkeypatch):
    """The checks load zoo.pretrained_digit_cnn(seed=0); point them at the quick source the namespace uses."""
    real = zoo.pretrained_digit_cnn
    monkeypatch.setattr(zoo, "pretrained_digit_cnn", lambda seed=0, **kw: real(seed=seed, max_steps=60))


def grade(namespace, question, **changes):
    return Grader("T06", quiet=True).check(question, namespace={**namespace, **changes})


def test_the_right_answers_pass(namespace):
    for question in ("q1", "q2", "q3"):
        result = grade(namespace, question)
        assert result.passed, f"{question}: {result.message}"


def test_q1_rejects_average_pooled_or_leaky_probes(namespace):
    ns = namespace
    avg = lambda *a: probe_by_layer(*a, pool="avg")  # noqa: E731
    result = grade(ns, "q1", probe_by_layer=avg,
                   val_acc=avg(ns["digit_cnn"], LAYERS, ns["x_train"], ns["y_train"], ns["x_val"], ns["y_val"]))
    assert not result.passed and "pool='flatten'" in result.message

    def fitted_on_eval(model, layers, x_train, y_train, x_eval, y_eval):
        return probe_by_layer(model, layers, x_eval, y_eval, x_eval, y_eval)

    result = grade(ns, "q1", val_acc=fitted_on_eval(ns["digit_cnn"], LAYERS, ns["x_train"], ns["y_train"],
                                                    ns["x_val"], ns["y_val"]))
    assert not result.passed and "val_acc[" in result.message
    result = grade(ns, "q1", probe_by_layer=lambda *a: {"x": 0.5})
    assert not result.passed and "keys" in result.message


def test_q2_wants_the_layer_chosen_on_validation_and_its_test_accuracy(namespace):
    ns = namespace
    worst = min(ns["val_acc"], key=ns["val_acc"].get)
    result = grade(ns, "q2", best_layer=worst)
    assert not result.passed and "validation" in result.message
    result = grade(ns, "q2", best_layer_test_acc=ns["val_acc"][ns["best_layer"]] + 0.1)
    assert not result.passed and "test split" in result.message


def test_q3_catches_drifting_batchnorm_unfrozen_blocks_and_wrong_reports(namespace):
    ns = namespace
    drifted = trained_extractor(ns["x_train"], ns["y_train"], frozen_bn_eval=False)
    result = grade(ns, "q3", extractor=drifted, head_acc=evaluate(
        drifted, make_loader(ns["x_test"], ns["y_test"], batch_size=512))["accuracy"])
    assert not result.passed and "BatchNorm" in result.message
    unfrozen = trained_extractor(ns["x_train"], ns["y_train"], freeze_blocks=False, epochs=1)
    result = grade(ns, "q3", extractor=unfrozen)
    assert not result.passed and "only the new head" in result.message
    result = grade(ns, "q3", trainable=ns["total"])
    assert not result.passed and "count_parameters" in result.message
    result = grade(ns, "q3", head_acc=1.0)
    assert not result.passed and "head_acc" in result.message

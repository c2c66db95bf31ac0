"""Tests of tlcourse.checks.t06: right answers written several ways pass, the obvious wrong ones
(test-set leakage, selection on the test split, validation accuracy reported as test accuracy,
rebinding the test split, drifting BatchNorm) fail with a useful message.

Every question goes through ``evaluate_question``: collect in this process, the plain-data round
trip, then grade, as in self-study feedback. A quick source (60 training steps, cached like the
real one) stands in for ``zoo.pretrained_digit_cnn(seed=0)`` on both sides.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tlcourse import zoo
from tlcourse.checks import t06
from tlcourse.data import load
from tlcourse.exercise_data import _t06_all_splits, t06_letter_splits
from tlcourse.features import extract_layer_features, linear_probe
from tlcourse.finetune import count_parameters, freeze
from tlcourse.train import evaluate, fit, make_loader
from tlcourse.transfer import replace_head
from tests.check_helpers import question_helpers

LAYERS = list(t06.LAYERS)
SEED = 1234
N_PER_CLASS = 15


@pytest.fixture(scope="module", autouse=True)
def quick_source():
    """The checks load zoo.pretrained_digit_cnn(seed=0); point them (and the namespace) at a quick source."""
    real = zoo.pretrained_digit_cnn
    quick = lambda seed=0, **kw: real(seed=seed, max_steps=60)  # noqa: E731
    t06._reference_probes.cache_clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(zoo, "pretrained_digit_cnn", quick)
        yield quick
    t06._reference_probes.cache_clear()


def probe_by_layer(model, layers, x_train, y_train, x_eval, y_eval, pool="flatten"):
    train = extract_layer_features(model, x_train, layers, pool=pool)
    evaluation = extract_layer_features(model, x_eval, layers, pool=pool)
    return {layer: linear_probe(train[layer], np.asarray(y_train), evaluation[layer], np.asarray(y_eval)).accuracy
            for layer in layers}


def probe_with_hooks(model, layers, x_train, y_train, x_eval, y_eval):
    """The same probe written another way: own forward hooks, scikit-learn directly, np.float32 results."""
    def features(x):
        seen = {}
        hooks = [model.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: seen.__setitem__(name, out.flatten(1).numpy())) for name in layers]
        model.eval()
        with torch.no_grad():
            model(x)
        for hook in hooks:
            hook.remove()
        return seen

    train, evaluation = features(x_train), features(x_eval)
    out = {}
    for layer in layers:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
        clf.fit(train[layer], y_train.numpy())
        out[layer] = np.float32((clf.predict(evaluation[layer]) == y_eval.numpy()).mean())
    return out


def trained_extractor(x, y, frozen_bn_eval=True, freeze_blocks=True, epochs=10):
    model = replace_head(zoo.pretrained_digit_cnn(seed=0), 19)
    if freeze_blocks:
        freeze(model, ["block1", "block2", "block3"])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    fit(model, make_loader(x, y, batch_size=32, shuffle=True, seed=0), epochs=epochs, optimizer=optimizer,
        progress=False, frozen_bn_eval=frozen_bn_eval)
    return model


def accuracy(model, x, y):
    return evaluate(model, make_loader(x, y, batch_size=512))["accuracy"]


@pytest.fixture(scope="module")
def data(quick_source):
    """The notebook's splits and source."""
    x_all, y_all = load("emnist_letters").to_tensors()
    splits = t06_letter_splits(N_PER_CLASS)
    out = {f"{v}_{name}": t for name, idx in splits.items()
           for v, t in zip("xy", (x_all[idx], y_all[idx]))}
    out["digit_cnn"] = zoo.pretrained_digit_cnn(seed=0)
    return out


@pytest.fixture(scope="module")
def namespace(data):
    """What the solution notebook defines."""
    d = data
    val_acc = probe_by_layer(d["digit_cnn"], LAYERS, d["x_train"], d["y_train"], d["x_val"], d["y_val"])
    best = max(val_acc, key=val_acc.get)
    extractor = trained_extractor(d["x_train"], d["y_train"])
    trainable, total = count_parameters(extractor)
    return dict(
        n_per_class=N_PER_CLASS, probe_by_layer=probe_by_layer, val_acc=val_acc, digit_cnn=d["digit_cnn"],
        x_train=d["x_train"], y_train=d["y_train"], x_val=d["x_val"], y_val=d["y_val"],
        x_test=d["x_test"], y_test=d["y_test"], best_layer=best,
        best_layer_test_acc=probe_by_layer(d["digit_cnn"], [best], d["x_train"], d["y_train"],
                                           d["x_test"], d["y_test"])[best],
        extractor=extractor, trainable=trainable, total=total,
        head_acc=accuracy(extractor, d["x_test"], d["y_test"]), answer_q4="b")


grade, passes, fails = question_helpers(t06, SEED)


# ---------------------------------------------------------------- the splits
def test_the_splits_are_disjoint_balanced_and_the_test_split_is_fixed():
    splits = _t06_all_splits(N_PER_CLASS)
    labels = load("emnist_letters").labels
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not np.intersect1d(splits[a], splits[b]).size, (a, b)
    assert {n: set(np.bincount(labels[idx]).tolist()) for n, idx in splits.items()} == {
        "test": {30}, "grader": {40}, "train": {N_PER_CLASS}, "val": {N_PER_CLASS}}
    assert np.array_equal(t06_letter_splits(50)["test"], splits["test"])
    assert "grader" not in t06_letter_splits(N_PER_CLASS)  # the notebook never receives it


def test_points_come_from_the_questions():
    assert [(q.name, q.points) for q in t06.QUESTIONS] == [("q1", 2), ("q2", 1), ("q3", 3), ("q4", 1)]


# ---------------------------------------------------------------- q1
def test_q1_accepts_the_solution_and_a_probe_written_another_way(namespace, data):
    passes(namespace, "q1")
    d = data
    other = probe_with_hooks(d["digit_cnn"], LAYERS, d["x_train"], d["y_train"], d["x_val"], d["y_val"])
    passes(namespace, "q1", probe_by_layer=probe_with_hooks, val_acc=other, n_per_class=np.int64(N_PER_CLASS))
    tensors = {k: torch.tensor(v) for k, v in namespace["val_acc"].items()}  # 0-d tensors
    passes(namespace, "q1", val_acc=tensors)
    for seed in (0, 1, 2):
        assert grade(namespace, "q1", seed=seed).passed


def test_q1_rejects_average_pooling_in_the_function_and_in_val_acc(namespace, data):
    avg = lambda *a: probe_by_layer(*a, pool="avg")  # noqa: E731
    fails(namespace, "q1", "pool='flatten'", probe_by_layer=avg)
    d = data
    fails(namespace, "q1", "pool='flatten'",
          val_acc=avg(d["digit_cnn"], LAYERS, d["x_train"], d["y_train"], d["x_val"], d["y_val"]))


def test_q1_rejects_probes_fitted_on_the_evaluation_data(namespace, data):
    def fitted_on_eval(model, layers, x_train, y_train, x_eval, y_eval):
        return probe_by_layer(model, layers, x_eval, y_eval, x_eval, y_eval)

    fails(namespace, "q1", "fit it on (x_train, y_train)", probe_by_layer=fitted_on_eval)
    d = data
    leaky = fitted_on_eval(d["digit_cnn"], LAYERS, d["x_train"], d["y_train"], d["x_val"], d["y_val"])
    fails(namespace, "q1", "val_acc[", val_acc=leaky)


def test_q1_rejects_val_acc_measured_on_the_test_split_or_on_another_split(namespace, data):
    d = data
    on_test = probe_by_layer(d["digit_cnn"], LAYERS, d["x_train"], d["y_train"], d["x_test"], d["y_test"])
    fails(namespace, "q1", "val_acc[", val_acc=on_test)
    fails(namespace, "q1", "val_acc[", n_per_class=20)  # not the splits val_acc was measured on


def test_q1_says_when_the_probes_ran_on_another_device(namespace, data):
    d = data
    off = probe_by_layer(d["digit_cnn"], LAYERS, d["x_train"], d["y_train"], d["x_test"], d["y_test"])
    elsewhere = torch.nn.Linear(1, 1, device="meta")  # stands for a digit_cnn moved to a GPU
    fails(namespace, "q1", "your digit_cnn is on meta", val_acc=off, digit_cnn=elsewhere)
    assert "your digit_cnn" not in grade(namespace, "q1", val_acc=off).message


def test_q1_rejects_malformed_answers(namespace):
    fails(namespace, "q1", "keys", probe_by_layer=lambda *a: {"x": 0.5})
    fails(namespace, "q1", "dict", probe_by_layer=lambda *a: [0.5, 0.5])
    fails(namespace, "q1", "float accuracy, got a ProbeResult", probe_by_layer=lambda model, layers, *a: {
        layer: linear_probe(np.eye(4), [0, 1, 0, 1], np.eye(4), [0, 1, 0, 1]) for layer in layers})
    fails(namespace, "q1", "float accuracy", val_acc={layer: "0.7" for layer in LAYERS})
    fails(namespace, "q1", "n_per_class", n_per_class="15")
    fails(namespace, "q1", "NotImplementedError", probe_by_layer=lambda *a: (_ for _ in ()).throw(NotImplementedError()))


# ---------------------------------------------------------------- q2
def test_q2_accepts_the_solution_and_other_spellings(namespace):
    passes(namespace, "q2")
    ns = namespace
    best = sorted(ns["val_acc"].items(), key=lambda kv: kv[1])[-1][0]
    passes(namespace, "q2", best_layer=best, best_layer_test_acc=np.float32(ns["best_layer_test_acc"]))
    passes(namespace, "q2", best_layer_test_acc=torch.tensor(ns["best_layer_test_acc"]))


def test_q2_rejects_a_layer_chosen_on_the_test_split(namespace, data):
    d, ns = data, namespace
    test_acc = probe_by_layer(d["digit_cnn"], LAYERS, d["x_train"], d["y_train"], d["x_test"], d["y_test"])
    on_test = max(test_acc, key=test_acc.get)
    worst = min(ns["val_acc"], key=ns["val_acc"].get)
    assert on_test != ns["best_layer"]  # on these splits the test split would pick another layer
    for layer in (on_test, worst):
        fails(ns, "q2", "choose the layer on the validation split", best_layer=layer,
              best_layer_test_acc=test_acc[layer])
    # Selection on the test split dressed up as validation: val_acc measured on the test split.
    fails(ns, "q2", "fix question 1 first", val_acc=test_acc, best_layer=on_test,
          best_layer_test_acc=test_acc[on_test])


def test_q2_rejects_the_validation_accuracy_reported_as_test_accuracy(namespace):
    ns = namespace
    reported = ns["val_acc"][ns["best_layer"]]
    assert abs(reported - ns["best_layer_test_acc"]) > 1.01 / 570  # what makes this case detectable
    fails(ns, "q2", "is the validation accuracy", best_layer_test_acc=reported)
    fails(ns, "q2", "test split", best_layer_test_acc=ns["best_layer_test_acc"] + 2 / 570)


def test_q2_rejects_a_rebound_or_leaked_test_split(namespace, data):
    d, ns = data, namespace
    best = ns["best_layer"]
    # x_test, y_test = x_train, y_train before scoring: the grader never reads x_test.
    rebound = probe_by_layer(d["digit_cnn"], [best], d["x_train"], d["y_train"], d["x_train"], d["y_train"])[best]
    fails(ns, "q2", "test split", x_test=d["x_train"], y_test=d["y_train"], best_layer_test_acc=rebound)
    fitted_on_test = probe_by_layer(d["digit_cnn"], [best], d["x_test"], d["y_test"], d["x_test"], d["y_test"])[best]
    fails(ns, "q2", "test split", best_layer_test_acc=fitted_on_test)
    fails(ns, "q2", "one of the layers", best_layer=3)


# ---------------------------------------------------------------- q3
def test_q3_accepts_the_solution_and_other_spellings(namespace):
    passes(namespace, "q3")
    ns = namespace
    passes(ns, "q3", trainable=np.int64(ns["trainable"]), total=torch.tensor(ns["total"]),
           head_acc=torch.tensor(ns["head_acc"]))
    passes(ns, "q3", head_acc=np.float32(ns["head_acc"]))


def test_q3_catches_a_head_trained_on_the_test_split(namespace, data):
    d = data
    cheat = trained_extractor(d["x_test"], d["y_test"])
    acc = accuracy(cheat, d["x_test"], d["y_test"])
    result = fails(namespace, "q3", "has seen the test images", extractor=cheat, head_acc=acc)
    both = trained_extractor(torch.cat([d["x_train"], d["x_test"]]), torch.cat([d["y_train"], d["y_test"]]))
    fails(namespace, "q3", "has seen the test images", extractor=both,
          head_acc=accuracy(both, d["x_test"], d["y_test"]))
    assert "z = " in result.message


def test_q3_catches_a_rebound_test_split(namespace, data):
    d, ns = data, namespace
    on_train = accuracy(ns["extractor"], d["x_train"], d["y_train"])  # x_test, y_test = x_train, y_train
    fails(ns, "q3", "head_acc", x_test=d["x_train"], y_test=d["y_train"], head_acc=on_train)


def test_q3_catches_drifting_batchnorm_unfrozen_blocks_and_wrong_reports(namespace, data):
    d, ns = data, namespace
    drifted = trained_extractor(d["x_train"], d["y_train"], frozen_bn_eval=False, epochs=2)
    fails(ns, "q3", "BatchNorm", extractor=drifted, head_acc=accuracy(drifted, d["x_test"], d["y_test"]))
    unfrozen = trained_extractor(d["x_train"], d["y_train"], freeze_blocks=False, epochs=1)
    fails(ns, "q3", "only the new head", extractor=unfrozen)
    moved = trained_extractor(d["x_train"], d["y_train"], freeze_blocks=False, epochs=1)
    freeze(moved, ["block1", "block2", "block3"])  # frozen after training: the weights moved
    fails(ns, "q3", "differs from the pretrained", extractor=moved)
    fails(ns, "q3", "count_parameters", trainable=ns["total"])
    fails(ns, "q3", "count_parameters", trainable=float(ns["trainable"]))
    fails(ns, "q3", "head_acc", head_acc=1.0)
    fails(ns, "q3", "head_acc", head_acc=ns["val_acc"]["block3"])


def test_q3_rejects_malformed_models(namespace):
    fails(namespace, "q3", "should be a DigitCNN", extractor="a model")
    ten = freeze(zoo.pretrained_digit_cnn(seed=0), ["block1", "block2", "block3"])
    fails(namespace, "q3", "19 outputs", extractor=ten)
    fails(namespace, "q3", "should be a DigitCNN", extractor=torch.nn.Linear(2, 19))


# ---------------------------------------------------------------- q4
@pytest.mark.parametrize("answer", ["b", "B", " b ", "b\n"])
def test_q4_accepts_the_right_choice_in_any_spelling(namespace, answer):
    passes(namespace, "q4", answer_q4=answer)


def test_q4_teaches_without_giving_the_answer_away(namespace):
    for wrong in ("a", "c", "D"):
        result = fails(namespace, "q4", "not '", answer_q4=wrong)
        assert t06.Q4_CHOICES["b"] not in result.message and "'b'" not in result.message
    fails(namespace, "q4", "choose one of", answer_q4="e")
    fails(namespace, "q4", "one letter as a string", answer_q4=2)
    fails(namespace, "q4", "one letter as a string", answer_q4=...)
    fails(namespace, "q4", "one letter as a string", answer_q4=["b"])


def test_the_solution_keeps_q4_consistent_with_its_own_probes(namespace):
    """q4 says the probe on the digit logits scores below block3: true on these splits."""
    assert namespace["val_acc"]["head"] < namespace["val_acc"]["block3"]

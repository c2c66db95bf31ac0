"""Checks for exercise T06 (feature extractors): a layer-wise linear probe, a layer chosen on
validation data and its honest test accuracy, a correctly frozen digit CNN (weights and BatchNorm)
with a new head, and one question on what the probes show.

Every ``collect`` runs in the student's kernel and returns plain data; every ``grade`` runs in the
trusted process and rebuilds what it compares with itself: the letters splits from
:func:`tlcourse.exercise_data.t06_letter_splits` (the function the notebook calls), the source from
``zoo.pretrained_digit_cnn(seed=0)``. Nothing in the student's namespace (``x_test``, ``y_test``,
``digit_cnn``) is trusted, so rebinding ``x_test, y_test = x_train, y_train`` changes nothing the
grader measures. Tolerances are one image of the evaluation split (``1.01 / n``): 0.0035 on the
285 validation letters of the default ``n_per_class = 15``, 0.0018 on the 570 test letters.
The probes must run on the CPU, as the notebook runs them: a probe on block1's 3,136 features is
fragile (``linear_probe``'s L-BFGS stops after 26 iterations there), and perturbing those features
by 1e-5 of their size moved its validation accuracy by up to 11 of the 285 images. On the CPU the
features, and so the probes, were bit-identical whatever the thread counts.

- **q1** (2 points) ``probe_by_layer`` and ``val_acc``. *collect*: the student's
  ``probe_by_layer`` on a toy network drawn from the seed (layer ``signal``, a (N, 1, 2, 1) map of
  the two inputs that define a 4-class label; layer ``noise``, 24 inputs that carry nothing),
  plus ``val_acc`` and ``n_per_class``. *grade*: the toy accuracies must match probes the grader
  fits on the same seeded data (averaging ``signal`` over space loses the label; fitting on the
  evaluation inputs makes ``noise`` score far above chance); ``val_acc`` must match probes fitted
  on the trusted train split and scored on the trusted validation split.
- **q2** (1 point) ``best_layer`` and ``best_layer_test_acc``. The layer must be the best one in
  ``val_acc`` (itself checked as in q1), so a layer picked on the test split fails whenever the
  two disagree (with the default splits, validation picks ``block2`` and the test split would
  pick ``block3``); its test accuracy must be the grader's probe of that layer on the trusted test
  split, so the validation accuracy reported as test accuracy (off by 0.028 by default) fails.
- **q3** (3 points) ``extractor``. *collect*: its ``state_dict`` as arrays, the names of the
  parameters that require grad, ``trainable``, ``total`` and ``head_acc``. *grade*: only the head
  may be trainable; every block1-block3 weight and BatchNorm statistic must equal the source's;
  the counts must be the model's; ``head_acc`` must be its accuracy on the trusted test split.
  And a memorisation test: the accuracy on the test split must not be significantly above the
  accuracy on 760 letters that no notebook ever receives (one-sided two-proportion z-test,
  z > 4 and a gap above 0.05 fail). Measured with the defaults: the correct answer scores 0.690
  on the test split and 0.697 on the grader's letters (z = -0.3); a head trained on the test split
  0.951 against 0.751 (z = 9.7); on train and test together 0.944 against 0.761 (z = 9.0).
- **q4** (1 point) ``answer_q4``: why the probe on the digit logits scores below ``block3``,
  checked by choice (``"b"``, any case or spacing).
"""
from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import torch
from torch import nn

from tlcourse.grading import Question
from tlcourse.grading.answers import NOT_PLAIN as _NOT_PLAIN, shown as _shown
from tlcourse.grading.choice import choice_question

LAYERS = ("block1", "block2", "block3", "head")
FROZEN_BLOCKS = ("block1", "block2", "block3")
N_CLASSES = 19
_TOY_NOISE, _TOY_TRAIN, _TOY_EVAL = 24, 120, 80
_MEMORISATION_Z, _MEMORISATION_GAP = 4.0, 0.05


# ---------------------------------------------------------------- helpers (both sides)
def _scalar(value):
    """A number or a string as it is; anything else as a description the grade step can print."""
    if isinstance(value, (str, numbers.Number, np.generic)) or value is None:
        return value
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0 and value.dtype != object:
        return value
    return f"{_NOT_PLAIN}{type(value).__name__}>"




def _as_accuracy(value, what: str) -> float:
    assert isinstance(value, numbers.Real) and not isinstance(value, bool), (
        f"{what} should be a float accuracy, got {_shown(value)}")
    value = float(value)
    assert 0 <= value <= 1, f"{what} = {value!r}; an accuracy is a fraction in [0, 1]"
    return value


def _as_int(value, what: str) -> int:
    assert isinstance(value, numbers.Integral) and not isinstance(value, bool), (
        f"{what} should be an int, got {_shown(value)}")
    return int(value)


def _accuracy_dict(value) -> dict:
    return ({str(k): _scalar(v) for k, v in value.items()} if isinstance(value, dict)
            else _scalar(value))


def _one_image(n: int) -> float:
    return 1.01 / n


# ---------------------------------------------------------------- trusted data
@functools.lru_cache(maxsize=1)
def _letters():
    from tlcourse.data import load

    return load("emnist_letters").to_tensors()


def _splits(n_per_class: int) -> dict[str, np.ndarray]:
    from tlcourse.exercise_data import _t06_all_splits

    return _t06_all_splits(n_per_class)


@functools.lru_cache(maxsize=4)
def _reference_probes(n_per_class: int) -> dict:
    """Probes of the source's flattened layers, fitted on the trusted train split.

    ``{"val": {layer: accuracy}, "test": {layer: accuracy}, "n_val": .., "n_test": ..}``.
    """
    from tlcourse import zoo
    from tlcourse.features import extract_layer_features, linear_probe

    x, y = _letters()
    splits = _splits(n_per_class)
    source = zoo.pretrained_digit_cnn(seed=0)
    feats = {name: extract_layer_features(source, x[splits[name]], list(LAYERS), pool="flatten")
             for name in ("train", "val", "test")}
    labels = {name: y[splits[name]].numpy() for name in ("train", "val", "test")}
    out = {"val": {}, "test": {}, "n_val": len(labels["val"]), "n_test": len(labels["test"])}
    for layer in LAYERS:
        probe = linear_probe(feats["train"][layer], labels["train"], feats["val"][layer], labels["val"])
        out["val"][layer] = probe.accuracy
        out["test"][layer] = float((probe.classifier.predict(feats["test"][layer]) == labels["test"]).mean())
    return out


def _n_per_class(value) -> int:
    from tlcourse.exercise_data import _MAX_PER_CLASS

    n = _as_int(value, "n_per_class")
    assert 1 <= n <= _MAX_PER_CLASS, (
        f"n_per_class = {n}: the exercise's parameter must be from 1 to {_MAX_PER_CLASS}")
    return n


def _device_note(device) -> str:
    if isinstance(device, str) and device not in ("cpu", ""):
        return (f" (your digit_cnn is on {device}: probes of wide layers are sensitive to the last bits of "
                "their features, and the grader probes on the CPU; keep digit_cnn on the CPU as the "
                "notebook does)")
    return ""


def _check_val_acc(val_acc, n_per_class, after: str = "", device=None) -> dict[str, float]:
    """``val_acc`` against the grader's probes on the trusted train and validation splits."""
    assert isinstance(val_acc, dict) and sorted(val_acc) == sorted(LAYERS), (
        f"val_acc should be probe_by_layer's dict for the layers {list(LAYERS)}, got "
        f"{sorted(val_acc) if isinstance(val_acc, dict) else _shown(val_acc)}{after}")
    reference = _reference_probes(_n_per_class(n_per_class))
    tolerance = _one_image(reference["n_val"])
    accs = {}
    for layer in LAYERS:
        got = accs[layer] = _as_accuracy(val_acc[layer], f"val_acc[{layer!r}]")
        want = reference["val"][layer]
        assert abs(got - want) <= tolerance, (
            f"val_acc[{layer!r}] = {got:.3f}, but a linear probe on the flattened {layer} features "
            f"(train split -> validation split, {reference['n_val']} letters) scores {want:.3f}: use "
            f"extract_layer_features(..., pool='flatten') and linear_probe with its defaults, on the "
            f"splits of t06_letter_splits(n_per_class){_device_note(device)}{after}")
    return accs


# ---------------------------------------------------------------- q1
class _TwoTaps(nn.Module):
    """A toy network: layer ``signal`` outputs the two inputs that define the label as a
    (N, 1, 2, 1) map, layer ``noise`` copies inputs that carry no information about it."""

    def __init__(self):
        super().__init__()
        width = 2 + _TOY_NOISE
        self.signal = nn.Sequential(nn.Linear(width, 2, bias=False), nn.Unflatten(1, (1, 2, 1)))
        self.noise = nn.Linear(width, _TOY_NOISE, bias=False)
        with torch.no_grad():
            self.signal[0].weight.copy_(torch.eye(width)[:2])
            self.noise.weight.copy_(torch.eye(width)[2:])

    def forward(self, x):
        return torch.cat([self.signal(x).flatten(1), self.noise(x)], dim=1)


def _toy(seed: int):
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.normal(size=(_TOY_TRAIN + _TOY_EVAL, 2 + _TOY_NOISE)).astype(np.float32))
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()  # 4 classes, from the two signal inputs
    layers = ["signal", "noise"] if rng.random() < 0.5 else ["noise", "signal"]
    n = _TOY_TRAIN
    return layers, (x[:n], y[:n], x[n:], y[n:])


def _collect_probe(ns, seed):
    layers, data = _toy(seed)
    got = ns["probe_by_layer"](_TwoTaps().eval(), list(layers), *data)
    return {"toy": _accuracy_dict(got), "val_acc": _accuracy_dict(ns["val_acc"]),
            "n_per_class": _scalar(ns["n_per_class"]), "device": _device(ns)}


def _device(ns) -> str:
    """Where the notebook's digit_cnn lives, for a note in the feedback (not graded)."""
    model = ns.get("digit_cnn")
    try:
        return str(next(model.parameters()).device.type)
    except (AttributeError, StopIteration, TypeError):
        return ""


def _grade_probe(answer, seed):
    from tlcourse.features import extract_layer_features, linear_probe

    assert isinstance(answer, dict) and {"toy", "val_acc", "n_per_class"} <= set(answer), (
        "the collected answer is malformed: run the notebook's cells in order and check again")
    layers, (x_train, y_train, x_eval, y_eval) = _toy(seed)
    got = answer["toy"]
    assert isinstance(got, dict), f"probe_by_layer should return a dict {{layer: accuracy}}, got {_shown(got)}"
    assert sorted(got) == sorted(layers), (
        f"on a toy model with layers {layers} the keys should be those layers, got {sorted(got)}")
    toy = _TwoTaps().eval()
    train = extract_layer_features(toy, x_train, layers, pool="flatten")
    evaluation = extract_layer_features(toy, x_eval, layers, pool="flatten")
    tolerance = _one_image(_TOY_EVAL)
    accs = {layer: _as_accuracy(got[layer], f"the accuracy for layer {layer!r}") for layer in layers}
    wants = {layer: linear_probe(train[layer], y_train.numpy(), evaluation[layer], y_eval.numpy()).accuracy
             for layer in layers}
    assert accs["noise"] <= wants["noise"] + tolerance, (
        f"toy check: layer 'noise' carries no information about the label, yet its probe scored "
        f"{accs['noise']:.2f} (an honest probe: {wants['noise']:.2f}, chance 0.25). A probe that scores "
        "well on noise has seen its evaluation inputs: fit it on (x_train, y_train) and score it on "
        "(x_eval, y_eval)")
    assert accs["signal"] >= wants["signal"] - tolerance, (
        f"toy check: layer 'signal' outputs a (N, 1, 2, 1) map of the two inputs that define the "
        f"label; its probe should score {wants['signal']:.2f} but scored {accs['signal']:.2f}. Keep "
        "every position (pool='flatten'): averaging over space mixes the two inputs")
    for layer in layers:
        assert abs(accs[layer] - wants[layer]) <= tolerance, (
            f"toy check: probe_by_layer(...)[{layer!r}] = {accs[layer]:.3f}, but a linear probe on the "
            f"flattened {layer} features (train inputs -> evaluation inputs) scores {wants[layer]:.3f}")
    _check_val_acc(answer["val_acc"], answer["n_per_class"], device=answer.get("device"))


# ---------------------------------------------------------------- q2
def _collect_best_layer(ns, seed):
    return {"val_acc": _accuracy_dict(ns["val_acc"]), "best_layer": _scalar(ns["best_layer"]),
            "best_layer_test_acc": _scalar(ns["best_layer_test_acc"]),
            "n_per_class": _scalar(ns["n_per_class"]), "device": _device(ns)}


def _grade_best_layer(answer, seed):
    assert isinstance(answer, dict) and {"val_acc", "best_layer", "best_layer_test_acc",
                                         "n_per_class"} <= set(answer), (
        "the collected answer is malformed: run the notebook's cells in order and check again")
    val_acc = _check_val_acc(answer["val_acc"], answer["n_per_class"], after="; fix question 1 first",
                             device=answer.get("device"))
    best = answer["best_layer"]
    assert isinstance(best, str) and best in val_acc, (
        f"best_layer should be one of the layers in val_acc, got {_shown(best)}")
    top = max(val_acc.values())
    assert val_acc[best] >= top - 1e-12, (
        f"best_layer = {best!r} has validation accuracy {val_acc[best]:.3f}, but the best in "
        f"val_acc is {top:.3f}: choose the layer on the validation split, not on the test split")
    reference = _reference_probes(_n_per_class(answer["n_per_class"]))
    want = reference["test"][best]
    reported = _as_accuracy(answer["best_layer_test_acc"], "best_layer_test_acc")
    if abs(reported - want) <= _one_image(reference["n_test"]):
        return
    if abs(reported - val_acc[best]) < 1e-9:
        raise AssertionError(
            f"best_layer_test_acc = {reported:.3f} is the validation accuracy of {best}, but its probe "
            f"scores {want:.3f} on the {reference['n_test']} test letters: the validation split chose "
            "the layer, now score that probe on the test split")
    raise AssertionError(
        f"best_layer_test_acc = {reported:.3f}, but the probe on {best} (fitted on the train split) "
        f"scores {want:.3f} on the test split of t06_letter_splits ({reference['n_test']} letters)"
        f"{_device_note(answer.get('device'))}")


# ---------------------------------------------------------------- q3
def _collect_extractor(ns, seed):
    model = ns["extractor"]
    answer = {"class": type(model).__name__, "trainable": _scalar(ns["trainable"]),
              "total": _scalar(ns["total"]), "head_acc": _scalar(ns["head_acc"])}
    if isinstance(model, nn.Module):
        answer["requires_grad"] = [name for name, p in model.named_parameters() if p.requires_grad]
        answer["state_dict"] = {name: t.detach().cpu() for name, t in model.state_dict().items()}
    return answer


def _rebuild(state, what: str):
    """A DigitCNN with ``N_CLASSES`` outputs holding the collected ``state``."""
    from tlcourse.models import DigitCNN

    assert isinstance(state, dict) and all(isinstance(v, (np.ndarray, int, float)) for v in state.values()), (
        f"{what} should be a DigitCNN (a torch module), got something else")
    head = state.get("head.weight")
    assert isinstance(head, np.ndarray) and head.ndim == 2, (
        f"{what} should be a DigitCNN with a linear head, got parameters {sorted(state)[:6]}...")
    assert head.shape[0] == N_CLASSES, (
        f"{what}.head must have {N_CLASSES} outputs (letters A-S), has {head.shape[0]}")
    model = DigitCNN(num_classes=N_CLASSES)
    try:
        model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state.items()}, strict=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise AssertionError(f"{what} should be the digit CNN with a new {N_CLASSES}-class head; its "
                             f"weights do not fit a DigitCNN ({str(exc).splitlines()[0][:160]})") from None
    return model.eval()


def _two_proportion_z(p1: float, n1: int, p2: float, n2: int) -> float:
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    spread = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n1 + 1 / n2))
    return (p1 - p2) / spread


def _grade_extractor(answer, seed):
    from tlcourse import zoo
    from tlcourse.train import evaluate, make_loader

    assert isinstance(answer, dict) and "class" in answer, (
        "the collected answer is malformed: run the notebook's cells in order and check again")
    assert "state_dict" in answer, f"extractor should be a DigitCNN, got {_shown(answer['class'])}"
    model = _rebuild(answer["state_dict"], "extractor")
    trainable_names = answer.get("requires_grad")
    assert isinstance(trainable_names, list) and sorted(map(str, trainable_names)) == [
        "head.bias", "head.weight"], (
        f"only the new head may be trainable; trainable now: {trainable_names}")
    source = zoo.pretrained_digit_cnn(seed=0).state_dict()
    mine = model.state_dict()
    for block in FROZEN_BLOCKS:
        for key in (k for k in source if k.startswith(f"{block}.") and not k.endswith("num_batches_tracked")):
            if torch.allclose(mine[key].float(), source[key].float(), atol=1e-6):
                continue
            if key.endswith(("running_mean", "running_var")):
                raise AssertionError(
                    f"{key} changed although {block} is frozen: BatchNorm ran in training mode. Keep the "
                    "frozen blocks in eval mode while training (tlcourse.train.fit does it)")
            raise AssertionError(
                f"{key} differs from the pretrained digit CNN: start from zoo.pretrained_digit_cnn(seed=0) "
                "and freeze block1-block3 before training")
    counted = (sum(p.numel() for n, p in model.named_parameters() if n in trainable_names),
               sum(p.numel() for p in model.parameters()))
    reported = (answer["trainable"], answer["total"])
    assert all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in reported) and tuple(
        map(int, reported)) == counted, (
        f"(trainable, total) = ({_shown(reported[0])}, {_shown(reported[1])}), but the extractor has "
        f"{counted}: use count_parameters(extractor)")

    x, y = _letters()
    splits = _splits(15)  # the test and the grader's splits do not depend on n_per_class
    scores = {name: evaluate(model, make_loader(x[splits[name]], y[splits[name]], batch_size=1000))["accuracy"]
              for name in ("test", "grader")}
    n_test, n_grader = len(splits["test"]), len(splits["grader"])
    head_acc = _as_accuracy(answer["head_acc"], "head_acc")
    assert abs(head_acc - scores["test"]) <= _one_image(n_test), (
        f"head_acc = {head_acc:.3f} but the extractor scores {scores['test']:.3f} on the test split of "
        f"t06_letter_splits ({n_test} letters): report its accuracy on (x_test, y_test)")
    z = _two_proportion_z(scores["test"], n_test, scores["grader"], n_grader)
    assert not (z > _MEMORISATION_Z and scores["test"] - scores["grader"] > _MEMORISATION_GAP), (
        f"the extractor scores {scores['test']:.3f} on the test split but only {scores['grader']:.3f} on "
        f"{n_grader} other letters it has never seen (z = {z:.1f}): it has seen the test images. Train "
        "the head on (x_train, y_train) only; the test split is for the final measurement")
    assert scores["test"] > 0.4, (
        f"the extractor scores only {scores['test']:.3f} on the test letters (chance is 0.053): was the "
        "head trained?")


# ---------------------------------------------------------------- q4
Q4_CHOICES = {
    "a": "The head's weights were never pretrained, unlike those of the blocks.",
    "b": "Its 10 outputs were trained to tell digits apart: the most source-specific features, a "
         "10-number summary that drops what separates 19 letters.",
    "c": "The probe overfits: 10 features are too many for the training letters.",
    "d": "linear_probe does not standardise the logits, so the probe cannot fit them.",
}
_Q4_ANSWER = "b"
_Q4_FEEDBACK = {
    "a": "the head was trained with the rest of the digit CNN, on the same digits "
         "(zoo.pretrained_digit_cnn). Think about what its 10 numbers were trained to say.",
    "c": "a probe on 10 features has the fewest weights of the four, and it does not even fit its "
         "own training letters well (its train_accuracy is far below the other layers'): it "
         "underfits. What is missing from those 10 numbers?",
    "d": "linear_probe standardises every layer's features (StandardScaler) before the logistic "
         "regression. Think about what the 10 numbers were trained to say.",
}


QUESTIONS = [
    Question("q1", points=2, names=("probe_by_layer", "val_acc", "n_per_class"),
             collect=_collect_probe, grade=_grade_probe,
             hint="feats = extract_layer_features(model, x, layers, pool='flatten') for the train and the "
                  "evaluation inputs, then linear_probe(train[layer], y_train, evaluation[layer], y_eval).accuracy "
                  "for every layer."),
    Question("q2", points=1, names=("val_acc", "best_layer", "best_layer_test_acc", "n_per_class"),
             collect=_collect_best_layer, grade=_grade_best_layer,
             hint="best_layer = max(val_acc, key=val_acc.get); then probe only that layer, fitted on the "
                  "train split and scored on the test split."),
    Question("q3", points=3, names=("extractor", "trainable", "total", "head_acc"),
             collect=_collect_extractor, grade=_grade_extractor,
             hint="replace_head(zoo.pretrained_digit_cnn(seed=0), 19), freeze(model, ['block1', 'block2', "
                  "'block3']), an optimizer over the parameters that still require grad, and "
                  "tlcourse.train.fit on (x_train, y_train) (it keeps frozen BatchNorm layers in eval mode)."),
    choice_question("q4", "answer_q4", choices=Q4_CHOICES, answer=_Q4_ANSWER,
                    feedback=_Q4_FEEDBACK, points=1,
                    hint="Compare the layers in val_acc, and read 'What the layer curves show' in chapter T06."),
]


def prepare() -> None:
    """Before a batch: train or load the source model once, so each sandbox copies a warm cache."""
    from tlcourse import zoo

    zoo.pretrained_digit_cnn(seed=0)

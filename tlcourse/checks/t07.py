"""Checks for exercise T07 (fine-tuning): freezing all but the head in a way that survives
``model.train()`` (BatchNorm included), layer-wise learning rates, forgetting of the source task
measured with the old head, and one prediction about the learning rate.

Every ``collect`` runs in the student's kernel and returns plain data; every ``grade`` runs in the
trusted process, rebuilds the seeded test models itself and loads the source
(``zoo.pretrained_digit_cnn(seed=0)``), its 2,000 held-out digits and the letters test split
(:func:`tlcourse.exercise_data.t07_letter_splits`, the function the notebook calls) itself.
Accuracy tolerances come from the size of the evaluation set: one image (``1.01 / n``, 0.0027 on
the 380 test letters), but at least 0.0015, three of the 2,000 held-out digits: a notebook run on a
GPU rounds differently (TF32 convolutions), and weights perturbed by that much flipped up to two of
the fine-tuned body's predictions on the digits (none on the letters).

- **q1** (2 points) ``freeze_all_but_head``. *collect*: the student's function on a DigitCNN and on
  a model whose head is called ``classifier`` and holds a BatchNorm of its own, both with weights
  and BatchNorm statistics drawn from the seed; then, as a training loop would, ``model.train()``
  and a seeded batch through each, recording the returned counts, which parameters require grad,
  every buffer afterwards and the features the head received. The same is done (and undone) on the
  notebook's ``model``. *grade*: the trusted side rebuilds the seeded models and requires the
  counts, only the head trainable, the running statistics outside the head unchanged, the head's
  own BatchNorm updated (it is trainable), and the features equal to the frozen body's in
  inference mode. A one-shot ``.eval()`` is undone by ``model.train()`` and fails; so does
  ``momentum = 0`` (statistics kept, but the batch's own statistics still normalise).
- **q2** (2 points) ``layerwise_param_groups``, ``optimizer``, ``ft_model``. *collect*: the groups
  the function returns for a fresh DigitCNN with a learning rate and decay drawn from the seed,
  with the bottom blocks frozen, for two blocks only and with ``decay = 1``, each group as its
  rate and its parameters' names; the optimizer's groups the same way and ``ft_model``'s
  weights. *grade*: the rates and memberships the trusted side computes from the same seed, and
  ``ft_model``'s body equal to the source's.
- **q3** (2 points) ``forget_model``, ``source_acc_before``, ``source_acc_after``, ``letters_acc``.
  *collect*: the reported numbers and ``forget_model``'s weights. *grade*: every block of the body
  must have moved (relative weight drift above 1e-4: fine-tuning all of it at 1e-2 for 60 steps
  moves block1 by 0.20, block2 by 1.06, block3 by 1.78, and even 1e-5 moves block1 by 0.001, while
  a frozen block stays at exactly 0, so freezing two blocks, whose total drift is still 1.62,
  fails); the three accuracies are recomputed from those weights on the trusted data.
- **q4** (1 point) ``answer_q4``: what fine-tuning at 1e-4 instead of 1e-2 does to the digits,
  checked by choice (``"b"``, any case or spacing). Measured with the defaults: 0.984 before,
  0.759 after at 1e-2, 0.976 after at 1e-4.
"""
from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import torch
from torch import nn

from tlcourse.grading import Question
from tlcourse.grading.answers import NOT_PLAIN as _NOT_PLAIN, shown
from tlcourse.grading.choice import choice_question

_BATCHNORM = nn.modules.batchnorm._BatchNorm
_BLOCKS = ["block1", "block2", "block3", "head"]
_BODY = ("block1", "block2", "block3")
N_CLASSES = 19
_MIN_DRIFT = 1e-4
_MIN_TOLERANCE = 0.0015  # 3 of the 2,000 held-out digits: rounding on a GPU, not a different answer


# ---------------------------------------------------------------- helpers (both sides)
def _scalar(value):
    """A number or a string as it is; anything else as a description the grade step can print."""
    if isinstance(value, (str, numbers.Number, np.generic)) or value is None:
        return value
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0 and value.dtype != object:
        return value
    return f"{_NOT_PLAIN}{type(value).__name__}>"


def _pair(value):
    """A returned ``(trainable, total)`` as a list of scalars, or a description."""
    if isinstance(value, (tuple, list)):
        return [_scalar(v) for v in value]
    return _scalar(value)


def _shown(value) -> str:
    return shown(value, limit=80)


def _ints(value) -> tuple[int, ...] | None:
    if isinstance(value, list) and all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                       for v in value):
        return tuple(int(v) for v in value)
    return None


def _as_accuracy(value, what: str) -> float:
    assert isinstance(value, numbers.Real) and not isinstance(value, bool), (
        f"{what} must be a float in [0, 1], got {_shown(value)}")
    value = float(value)
    assert 0 <= value <= 1, f"{what} must be a float in [0, 1], got {value!r}"
    return value


def _tolerance(n: int) -> float:
    """One image of an evaluation set of ``n``, and never less than :data:`_MIN_TOLERANCE`."""
    return max(1.01 / n, _MIN_TOLERANCE)


def _malformed(answer, keys) -> None:
    assert isinstance(answer, dict) and set(keys) <= set(answer), (
        "the collected answer is malformed: run the notebook's cells in order and check again")


def _state(model: nn.Module) -> dict:
    return {name: t.detach().cpu() for name, t in model.state_dict().items()}


def _rebuild(state, what: str, num_classes: int = N_CLASSES):
    """A DigitCNN holding the collected ``state`` (AssertionError when it does not fit)."""
    from tlcourse.models import DigitCNN

    assert isinstance(state, dict), f"{what} should be a DigitCNN (a torch module), got {_shown(state)}"
    head = state.get("head.weight")
    assert isinstance(head, np.ndarray) and head.ndim == 2, (
        f"{what} should be a DigitCNN with a linear head, got parameters {sorted(state)[:6]}")
    assert head.shape[0] == num_classes, (
        f"{what} must keep a {num_classes}-class head (letters A-S), has {head.shape[0]} outputs")
    model = DigitCNN(num_classes=num_classes)
    try:
        model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state.items()}, strict=True)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise AssertionError(f"{what} should be the digit CNN with a new {num_classes}-class head; its "
                             f"weights do not fit a DigitCNN ({str(exc).splitlines()[0][:160]})") from None
    return model.eval()


@functools.lru_cache(maxsize=1)
def _source_state() -> dict[str, torch.Tensor]:
    from tlcourse import zoo

    return {k: v.detach().clone() for k, v in zoo.pretrained_digit_cnn(seed=0).state_dict().items()}


def _source():
    from tlcourse.models import DigitCNN

    model = DigitCNN(num_classes=10)
    model.load_state_dict(_source_state())
    return model.eval()


def _same_body(state: dict, what: str, fix: str) -> None:
    source = _source_state()
    for key, theirs in source.items():
        if key.startswith(_BODY) and not key.endswith("num_batches_tracked"):
            mine = torch.as_tensor(np.asarray(state[key]))
            assert mine.shape == theirs.shape and torch.allclose(mine.float(), theirs.float(), atol=1e-6), (
                f"{what}'s {key} differs from the pretrained digit CNN: {fix}")


# ---------------------------------------------------------------- q1
class _Tagged(nn.Module):
    """A small model whose classifier is called ``classifier`` and holds a BatchNorm of its own."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU())
        self.classifier = nn.Sequential(nn.BatchNorm1d(6), nn.Linear(6, 3))

    def forward(self, x):
        return self.classifier(self.body(x))


def _seeded(make, seed: int) -> nn.Module:
    """A test model with weights and BatchNorm statistics drawn from ``seed``, in training mode,
    built without touching the student's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make()
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, _BATCHNORM):
                    module.weight.normal_(1.0, 0.2)
                    module.bias.normal_(0.0, 0.2)
                    module.running_mean.normal_(0.0, 0.5)
                    module.running_var.uniform_(0.5, 2.0)
                    module.num_batches_tracked.fill_(100)
    return model.train()


def _models(seed: int):
    from tlcourse.models import DigitCNN

    tagged = _seeded(_Tagged, seed + 1).requires_grad_(False)  # the head must come back to life
    return {"digit": (_seeded(lambda: DigitCNN(num_classes=7), seed), "head"),
            "tagged": (tagged, "classifier")}


def _batch(seed: int, shape) -> torch.Tensor:
    return torch.rand((16, *shape), generator=torch.Generator().manual_seed(seed + 2))


_INPUT_SHAPES = {"digit": (1, 28, 28), "tagged": (4,)}


def _after_train(model: nn.Module, head: str, x: torch.Tensor) -> dict:
    """What a training loop would meet: ``model.train()``, then one batch through the model."""
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    seen = []
    model.train()
    hook = model.get_submodule(head).register_forward_pre_hook(
        lambda _module, args: seen.append(args[0].detach().cpu()))
    try:
        with torch.no_grad():
            model(x.to(next(model.parameters()).device))
    except Exception as exc:  # noqa: BLE001 - say where it failed; a student's hook is the usual cause
        raise RuntimeError(f"a batch through the frozen model after model.train() failed "
                           f"({type(exc).__name__}: {exc}). Note that a forward pre-hook that returns a value replaces the "
                           "module's input: return None") from None
    finally:
        hook.remove()
    return {"requires_grad": trainable, "features": seen[0] if seen else None,
            "buffers": {name: b.detach().cpu() for name, b in model.named_buffers()}}


def _collect_freeze(ns, seed):
    fn = ns["freeze_all_but_head"]
    answer = {}
    for key, (model, head) in _models(seed).items():
        returned = fn(model) if head == "head" else fn(model, head=head)
        x = _batch(seed, _INPUT_SHAPES[key])
        answer[key] = {"returned": _pair(returned), **_after_train(model, head, x)}
    model = ns["model"]
    answer["model"] = {"class": type(model).__name__, "trainable": _scalar(ns["trainable"]),
                       "total": _scalar(ns["total"])}
    if isinstance(model, nn.Module):
        # The notebook's model is tested the same way, then put back as it was.
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        modes = {name: m.training for name, m in model.named_modules()}
        answer["model"]["state_dict"] = _state(model)
        try:
            answer["model"].update(_after_train(model, "head", _batch(seed, (1, 28, 28))))
        finally:
            model.load_state_dict(saved)
            for name, m in model.named_modules():
                m.training = modes.get(name, m.training)
    return answer


def _expected_after_train(model: nn.Module, head: str, x: torch.Tensor) -> dict:
    """The trusted reference: the body in inference mode, the head in training mode."""
    head_module = model.get_submodule(head)
    model.eval()
    head_module.train()
    seen = []
    hook = head_module.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    with torch.no_grad():
        model(x)
    hook.remove()
    head_names = {f"{head}.{n}" for n, _ in head_module.named_parameters()}
    return {"features": seen[0], "buffers": dict(model.named_buffers()), "head_names": sorted(head_names)}


def _check_frozen(got, expected, initial, label: str, head: str) -> None:
    names = got.get("requires_grad")
    assert isinstance(names, list), f"{label}: the collected answer is malformed"
    extra = sorted(set(names) - set(expected["head_names"]))
    missing = sorted(set(expected["head_names"]) - set(names))
    assert not extra, f"{label}: {extra[0]} is outside the head but still trainable"
    assert not missing, f"{label}: {missing[0]} belongs to the head and must stay trainable"
    buffers = got.get("buffers")
    assert isinstance(buffers, dict), f"{label}: the collected answer is malformed"
    for name, want in expected["buffers"].items():
        if not name.endswith(("running_mean", "running_var")):
            continue
        mine = buffers.get(name)
        assert isinstance(mine, np.ndarray) and mine.shape == tuple(want.shape), (
            f"{label}: BatchNorm buffer {name} is missing or changed shape")
        mine = torch.from_numpy(np.asarray(mine, dtype=np.float32))
        if torch.allclose(mine, want.float(), rtol=1e-4, atol=1e-5):
            continue
        if name.startswith(f"{head}."):
            unchanged = torch.allclose(mine, initial[name].float(), rtol=1e-4, atol=1e-5)
            raise AssertionError(
                f"{label}: BatchNorm layer {name.rsplit('.', 1)[0]} is inside the head, which is "
                "trainable: leave it in training mode" if unchanged else
                f"{label}: the head's BatchNorm statistics {name} are not what one training batch gives")
        raise AssertionError(
            f"{label}: after model.train(), which every training loop calls (tlcourse.train.fit once per "
            f"epoch), the frozen BatchNorm layer {name.rsplit('.', 1)[0]} updated its running statistics "
            "from the batch. A one-shot .eval() is undone by the next model.train(): the frozen "
            "BatchNorm layers must stay in inference mode whatever train() says")
    features = got.get("features")
    assert isinstance(features, np.ndarray) and features.shape == tuple(expected["features"].shape), (
        f"{label}: the head did not receive the body's features (a forward pass should call it once)")
    gap = float((torch.from_numpy(np.asarray(features, dtype=np.float32)) - expected["features"]).abs().max())
    assert gap <= 1e-4 * (1 + float(expected["features"].abs().max())), (
        f"{label}: after model.train() the frozen BatchNorm layers kept their running statistics, but the "
        f"features the head receives differ from the frozen body's in inference mode (by up to {gap:.2g}): "
        "BatchNorm still normalised each batch with its own statistics. A frozen BatchNorm layer must "
        "use its stored statistics, that is stay in eval mode, even after model.train()")


def _grade_freeze(answer, seed):
    _malformed(answer, ("digit", "tagged", "model"))
    models = _models(seed)
    for key, label in (("digit", "DigitCNN(num_classes=7)"),
                       ("tagged", "a model whose head is called 'classifier'")):
        model, head = models[key]
        got = answer[key]
        _malformed(got, ("returned", "requires_grad", "buffers", "features"))
        head_module = model.get_submodule(head)
        want = (sum(p.numel() for p in head_module.parameters()), sum(p.numel() for p in model.parameters()))
        returned = _ints(got["returned"])
        if key == "digit":
            assert returned is not None and len(returned) == 2 and returned == want, (
                f"on {label} expected (trainable, total) = {want}, got {_shown(got['returned'])}: return "
                "a tuple (trainable, total) of ints")
        else:
            assert returned == want, (
                f"with head='classifier' expected {want}, got {_shown(got['returned'])}: the head named by "
                "`head` must end up trainable even if it was frozen before")
        initial = {k: v.clone() for k, v in model.named_buffers()}
        x = _batch(seed, _INPUT_SHAPES[key])
        _check_frozen(got, _expected_after_train(model, head, x), initial, label, head)

    got = answer["model"]
    assert "state_dict" in got, (
        f"model should be the pretrained DigitCNN with a new 19-class head, got {_shown(got['class'])}")
    model = _rebuild(got["state_dict"], "model")
    _same_body(got["state_dict"], "model", "start from a copy of the pretrained source and replace only its head")
    _malformed(got, ("requires_grad", "buffers", "features"))
    source = _source()
    expected = _expected_after_train(model, "head", _batch(seed, (1, 28, 28)))
    expected["features"] = source.eval().features(_batch(seed, (1, 28, 28))).detach()
    _check_frozen(got, expected, {}, "model", "head")
    counted = (sum(p.numel() for n, p in model.named_parameters() if n in got["requires_grad"]),
               sum(p.numel() for p in model.parameters()))
    reported = _ints([got["trainable"], got["total"]])
    assert reported == counted, (
        f"(trainable, total) = ({_shown(got['trainable'])}, {_shown(got['total'])}) but model has {counted}")


# ---------------------------------------------------------------- q2
def _layerwise_cases(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    lr = float(rng.choice([1.0, 0.5, 0.1, 3e-3]))
    decay = float(rng.choice([2.0, 2.6, 10.0]))
    frozen = _BLOCKS[:int(rng.integers(1, 3))]  # the bottom one or two blocks
    return [{"blocks": _BLOCKS, "lr": lr, "decay": decay, "frozen": []},
            {"blocks": _BLOCKS, "lr": lr, "decay": decay, "frozen": frozen},
            {"blocks": _BLOCKS, "lr": lr, "decay": decay, "frozen": ["block3.2"]},  # block3's BatchNorm
            {"blocks": ["block2", "head"], "lr": 0.5, "decay": 2.0, "frozen": []},
            {"blocks": _BLOCKS, "lr": lr, "decay": 1.0, "frozen": []}]


def _described_groups(groups, model: nn.Module) -> list | str:
    """Each group as ``{"lr": ..., "params": [parameter names]}``."""
    try:
        groups = list(groups)
    except TypeError:
        return _scalar(groups)
    names = {id(p): name for name, p in model.named_parameters()}
    out = []
    for group in groups:
        if not isinstance(group, dict):
            out.append(_scalar(group))
            continue
        params = group.get("params", [])
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        out.append({"lr": _scalar(group.get("lr")),
                    "params": [names.get(id(p), "<not a parameter of the model>") for p in params]})
    return out


def _collect_layerwise(ns, seed):
    from tlcourse.models import DigitCNN

    fn = ns["layerwise_param_groups"]
    calls = []
    for case in _layerwise_cases(seed):
        net = _seeded(lambda: DigitCNN(num_classes=3), seed)
        for name in case["frozen"]:
            net.get_submodule(name).requires_grad_(False)
        calls.append(_described_groups(fn(net, list(case["blocks"]), lr=case["lr"], decay=case["decay"]), net))
    optimizer, ft_model = ns["optimizer"], ns["ft_model"]
    answer = {"calls": calls, "optimizer": type(optimizer).__name__,
              "is_adam": isinstance(optimizer, torch.optim.Adam), "ft_model": type(ft_model).__name__}
    if isinstance(ft_model, nn.Module):
        answer["ft_state"] = _state(ft_model)
        if isinstance(optimizer, torch.optim.Optimizer):
            answer["optimizer_groups"] = _described_groups(optimizer.param_groups, ft_model)
    return answer


def _expected_groups(case) -> list[tuple[list[str], float]]:
    from tlcourse.models import DigitCNN

    net = DigitCNN(num_classes=3)
    frozen = tuple(f"{name}." for name in case["frozen"])
    out = []
    for depth, block in enumerate(reversed(case["blocks"])):
        names = sorted(name for name, _ in net.named_parameters()
                       if name.startswith(f"{block}.") and not name.startswith(frozen))
        if names:
            out.append((names, case["lr"] / case["decay"] ** depth))
    return out[::-1]


def _lrs(groups) -> list:
    return [g.get("lr") if isinstance(g, dict) else g for g in groups]


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:.3g}" if isinstance(v, (int, float)) else _shown(v) for v in values) + "]"


def _grade_layerwise(answer, seed):
    _malformed(answer, ("calls", "optimizer", "is_adam", "ft_model"))
    cases, calls = _layerwise_cases(seed), answer["calls"]
    assert isinstance(calls, list) and len(calls) == len(cases), "the collected answer is malformed"
    for case, groups in zip(cases, calls):
        expected = _expected_groups(case)
        setting = f"blocks {case['blocks']}, lr={case['lr']:g}, decay={case['decay']:g}"
        if case["frozen"]:
            what = {"block3.2": "block3's BatchNorm"}
            setting += f", {' and '.join(what.get(n, n) for n in case['frozen'])} frozen"
        assert isinstance(groups, list), (
            f"layerwise_param_groups should return a list of dicts, got {_shown(groups)}")
        want_lrs = [lr for _, lr in expected]
        if len(groups) != len(expected):
            if case["frozen"]:
                raise AssertionError(
                    f"with {setting}, expected {len(expected)} groups with lrs {_fmt(want_lrs)}, got "
                    f"{len(groups)}: leave out frozen parameters and empty blocks")
            raise AssertionError(f"one group per block with trainable parameters: with {setting} "
                                 f"expected {len(expected)}, got {len(groups)}")
        got_lrs = _lrs(groups)
        ok = all(isinstance(g, (int, float)) and not isinstance(g, bool) and math.isclose(g, w, rel_tol=1e-9)
                 for g, w in zip(got_lrs, want_lrs))
        if not ok and case["decay"] == 1.0:
            raise AssertionError(f"decay=1 must give every block the same rate; got {_fmt(got_lrs)}")
        assert ok, (f"{setting} should give {_fmt(want_lrs)} (input to output), got {_fmt(got_lrs)}"
                    + (": leave out frozen parameters and empty blocks" if case["frozen"] else ""))
        for group, (names, lr) in zip(groups, expected):
            params = group.get("params") if isinstance(group, dict) else None
            block = names[0].split(".")[0]
            assert isinstance(params, list) and sorted(map(str, params)) == names, (
                f"with {setting}, the group with lr {lr:g} should hold exactly {block}'s trainable parameters"
                + (" (leave out frozen ones)" if case["frozen"] else "")
                + f"; it holds {sorted(map(str, params)) if isinstance(params, list) else _shown(params)}")

    assert answer["is_adam"] is True, f"optimizer should be torch.optim.Adam, got {_shown(answer['optimizer'])}"
    assert "ft_state" in answer, (
        f"ft_model should be the pretrained DigitCNN with a new 19-class head, got {_shown(answer['ft_model'])}")
    model = _rebuild(answer["ft_state"], "ft_model")
    _same_body(answer["ft_state"], "ft_model",
               "ft_model should start from the pretrained weights (a copy of the source with a new head)")
    groups = answer.get("optimizer_groups")
    assert isinstance(groups, list), "the optimizer's param_groups could not be read"
    want = [1e-3 / 2.6**k for k in (3, 2, 1, 0)]
    got = _lrs(groups)
    assert len(got) == 4 and all(isinstance(a, (int, float)) and math.isclose(a, b, rel_tol=1e-6)
                                 for a, b in zip(got, want)), (
        f"optimizer rates should be {_fmt(want)} (block1 ... head), got {_fmt(got)}")
    held = [name for g in groups if isinstance(g, dict) for name in g.get("params", [])]
    everything = sorted(n for n, _ in model.named_parameters())
    assert sorted(map(str, held)) == everything, "optimizer must hold every parameter of ft_model exactly once"
    for number, (group, block) in enumerate(zip(groups, _BLOCKS), start=1):
        assert isinstance(group, dict) and all(str(n).startswith(block + ".") for n in group["params"]), (
            f"the optimizer's group {number} (lr {_fmt(_lrs([group]))[1:-1]}) should hold {block}'s parameters")


# ---------------------------------------------------------------- q3
@functools.lru_cache(maxsize=1)
def _digits():
    from tlcourse.data import load
    from tlcourse.exercise_data import SOURCE_HELDOUT_START

    x, y = load("emnist_digits").to_tensors()
    return x[SOURCE_HELDOUT_START:], y[SOURCE_HELDOUT_START:]


@functools.lru_cache(maxsize=1)
def _letters_test():
    from tlcourse.data import load
    from tlcourse.exercise_data import t07_letter_splits

    x, y = load("emnist_letters").to_tensors()
    idx = t07_letter_splits()["test"]  # fixed: the same for every n_per_class
    return x[idx], y[idx]


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    from tlcourse.train import predict

    return float((predict(model, x, batch_size=1000).argmax(1) == y).float().mean())


@functools.lru_cache(maxsize=1)
def _source_accuracy() -> float:
    return _accuracy(_source(), *_digits())


def _collect_forgetting(ns, seed):
    model = ns["forget_model"]
    answer = {name: _scalar(ns[name]) for name in ("source_acc_before", "source_acc_after", "letters_acc")}
    answer["class"] = type(model).__name__
    if isinstance(model, nn.Module):
        answer["state_dict"] = _state(model)
    return answer


def _grade_forgetting(answer, seed):
    from tlcourse.forgetting import retained_accuracy, weight_drift

    _malformed(answer, ("source_acc_before", "source_acc_after", "letters_acc", "class"))
    values = {name: _as_accuracy(answer[name], name)
              for name in ("source_acc_before", "source_acc_after", "letters_acc")}
    source = _source()
    x_src, y_src = _digits()
    tolerance = _tolerance(len(y_src))
    actual_before = _source_accuracy()
    assert abs(values["source_acc_before"] - actual_before) <= tolerance, (
        f"source_acc_before = {values['source_acc_before']:.4f} but the pretrained model scores "
        f"{actual_before:.4f} on the {len(y_src):,} held-out digits")
    assert "state_dict" in answer, f"forget_model should be a DigitCNN, got {_shown(answer['class'])}"
    head = answer["state_dict"].get("head.weight") if isinstance(answer["state_dict"], dict) else None
    assert not (isinstance(head, np.ndarray) and head.ndim == 2 and head.shape[0] == 10), (
        "forget_model must keep its 19-class letter head: put the digit head on a copy")
    model = _rebuild(answer["state_dict"], "forget_model")
    drifts = {block: weight_drift(model, source, [block]) for block in _BODY}
    still = [block for block, drift in drifts.items() if drift <= _MIN_DRIFT]
    if len(still) == len(_BODY):
        raise AssertionError(
            f"forget_model's body barely moved (relative weight change "
            f"{weight_drift(model, source, list(_BODY)):.3g}): "
            "fine-tune all layers, nothing frozen, at lr_forget")
    assert not still, (
        f"{' and '.join(still)} of forget_model did not move (relative weight change "
        f"{', '.join(f'{b} {drifts[b]:.3g}' for b in _BODY)}): fine-tune all of it, nothing frozen, so "
        "that the forgetting you measure is that of full fine-tuning")
    actual_after = retained_accuracy(model, source.head, x_src, y_src)
    assert abs(values["source_acc_after"] - actual_after) <= tolerance, (
        f"source_acc_after = {values['source_acc_after']:.4f} but forget_model's body with the original "
        f"digit head scores {actual_after:.4f} on the held-out digits")
    x_test, y_test = _letters_test()
    letters = _accuracy(model, x_test, y_test)
    assert abs(values["letters_acc"] - letters) <= _tolerance(len(y_test)), (
        f"letters_acc = {values['letters_acc']:.3f} but forget_model scores {letters:.3f} on the "
        f"{len(y_test)} test letters of t07_letter_splits: keep the accuracy train_on_subset returns "
        "for (x_test, y_test)")


# ---------------------------------------------------------------- q4
Q4_CHOICES = {
    "a": "Lower than at 1e-2: a smaller rate needs more steps, so the body drifts further.",
    "b": "Higher, close to source_acc_before: each Adam step moves a weight by about the learning "
         "rate, so the body stays near its pretrained weights.",
    "c": "The same as at 1e-2: forgetting depends on the number of steps, not on the rate.",
    "d": "Exactly source_acc_before: at 1e-4 the weights do not change.",
}
_Q4_ANSWER = "b"
_Q4_FEEDBACK = {
    "a": "both runs take the same number of steps. How far can a weight travel in `steps` Adam "
         "steps at 1e-4, compared with 1e-2?",
    "c": "the number of steps is the same in both runs; what changes is how far each step moves a "
         "weight. Look at the chapter's learning-rate sweep.",
    "d": "at 1e-4 the weights do change (measure weight_drift after such a run); the question is how "
         "much of the digit task survives that change.",
}


QUESTIONS = [
    Question("q1", points=2, names=("freeze_all_but_head", "model", "trainable", "total"),
             collect=_collect_freeze, grade=_grade_freeze,
             hint="requires_grad = (parameter belongs to getattr(model, head)); every BatchNorm module outside "
                  "the head in eval mode, and kept there after model.train() (a forward pre-hook runs before "
                  "every forward pass); count numel() of trainable and of all parameters."),
    Question("q2", points=2, names=("layerwise_param_groups", "optimizer", "ft_model"),
             collect=_collect_layerwise, grade=_grade_layerwise,
             hint="Walk the blocks from the output: block k from the top gets lr / decay**k; keep only "
                  "parameters with requires_grad; return the groups ordered input to output."),
    Question("q3", points=2, names=("forget_model", "source_acc_before", "source_acc_after", "letters_acc"),
             collect=_collect_forgetting, grade=_grade_forgetting,
             hint="Keep copy.deepcopy(source.head) before training; after train_on_subset, evaluate a "
                  "deep copy of forget_model whose .head is that digit head on x_src, y_src."),
    choice_question("q4", "answer_q4", choices=Q4_CHOICES, answer=_Q4_ANSWER,
                    feedback=_Q4_FEEDBACK, points=1,
                    hint="Think of how far each Adam step moves a weight, then compare with the chapter's "
                  "learning-rate sweep."),
]


def prepare() -> None:
    """Before a batch: train or load the source model once, so each sandbox copies a warm cache."""
    from tlcourse import zoo

    zoo.pretrained_digit_cnn(seed=0)

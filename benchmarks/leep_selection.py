"""Choosing a source model without fine-tuning it: do LEEP, NCE, H-score and LogME rank a small zoo
the way fine-tuning does?

For every (source model, target task) pair we (a) run the source model once over a small labelled
target set to get its softmax over the *source* classes (LEEP), its arg-max source label (NCE) and
its penultimate features (H-score, LogME), and (b) fine-tune a copy of it on the same labelled set,
always with the same recipe and budget, and measure its accuracy on held-out target images. A
score is useful for model selection when it orders the models as their fine-tuned accuracy does, so
we report, per target task, the Pearson correlation and the weighted Kendall tau between each
score and the fine-tuned accuracy over the zoo. Scores are not comparable across targets (LEEP and
NCE depend on the number of target classes, LogME on the feature scale), which is why every
correlation is taken within one target and only the correlations are averaged.

Each model is also scored against a second ground truth that costs nothing extra: the accuracy of
a linear probe (logistic regression on its frozen penultimate features, trained on the same
labelled images). H-score and LogME are built to predict exactly that; LEEP and NCE look only at
the source head. Comparing the two sets of correlations shows how far a score's ranking survives
once fine-tuning changes the features.

The fine-tuning recipe decides what "fine-tuned accuracy" measures. The cpu setting fine-tunes
in two stages (LP-FT, Kumar et al., 2022): the new head starts as the fitted linear probe
(:func:`tlcourse.features.probe_as_linear`), then every layer trains, the body at a tenth of the
head's learning rate, with every BatchNorm layer frozen (source statistics and scales, inference
mode). Single-seed ablations (2026-12-01, seed 0, everything else as in the cpu setting; mean
Pearson r over the two targets):

- BatchNorm in training mode, random head (this benchmark's first recipe, 3 seeds; its results
  are in git history at commit 1268a03): LEEP 0.52,
  NCE 0.57, LogME 0.44, H-score -0.17. EfficientNet-Lite0 fine-tuned to 26 % on letters although
  a linear probe on its frozen features reaches 61 %: its BatchNorm layers use a momentum of 0.01
  (ported from TensorFlow's 0.99), so after 80 steps their running statistics are still far from
  the batch statistics the weights were trained with, and the model collapses in evaluation mode.
- BatchNorm in training mode, probe head: LEEP 0.42 (EfficientNet down to 11 % on letters).
- BatchNorm frozen, random head: LEEP 0.72, NCE 0.68, LogME 0.81, H-score 0.66.
- BatchNorm frozen, probe head (the cpu setting): LEEP 0.84, NCE 0.83, LogME 0.80, H-score 0.38.
- BatchNorm in training mode, random head, body at the head's rate (seeds 0 and 1): every model
  gains, the CIFAR ResNets catch up with the digit CNNs, and every score's r falls to -0.2-0.2.

So a score can only be judged against a fine-tuning recipe that works for every model in the zoo;
and when fine-tuning is free to rebuild the features, what the source brings matters less.

The zoo mixes real pretrained models (CIFAR-10 ResNets, ImageNet EfficientNet-Lite0) with the
course's own digit CNNs trained on different sources. No source model was trained on a target's
images: EMNIST letters and USPS are never used as sources, and MNIST-M targets use items 8000+ only
(the MNIST and MNIST-M sources train on items 0-7999 of the same MNIST test digits).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import nn

from benchmarks.core import Benchmark, Metric, Target
from tlcourse import data, zoo
from tlcourse.features import extract_features, linear_probe, probe_as_linear
from tlcourse.finetune import freeze
from tlcourse.models import CifarResNet
from tlcourse.train import evaluate, fit, make_loader
from tlcourse.transfer import balanced_subset, replace_head
from tlcourse.transferability import h_score, leep, logme, nce

SCORES = ("leep", "nce", "h_score", "logme")
SCORE_LABELS = {"leep": "LEEP", "nce": "NCE", "h_score": "H-score", "logme": "LogME"}
TARGETS = ("emnist_letters", "usps", "mnist_m")
TARGET_LABELS = {"emnist_letters": "EMNIST letters A-S", "usps": "USPS", "mnist_m": "MNIST-M"}
# MNIST-M item i is MNIST test digit i; the MNIST(-M) digit CNNs train on items 0-7999.
MNIST_M_FIRST_TARGET_ITEM = 8000


# --------------------------------------------------------------------------- the zoo
@dataclass
class Candidate:
    """A source model plus how to feed it: ``prepare`` maps target images (N, C, H, W) in [0, 1]
    to the model's input; ``head`` names its last linear layer."""

    name: str
    model: nn.Module
    features: nn.Module
    head: str
    prepare: object


def _normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def _as_digit_input(in_channels: int):
    def prepare(x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 3 and in_channels == 1:
            x = x.mean(dim=1, keepdim=True)  # MNIST-M to grey for the grey-trained digit CNNs
        x = data.to_rgb(x) if in_channels == 3 else x
        return data.resize(x, 28) if tuple(x.shape[-2:]) != (28, 28) else x
    return prepare


def _as_rgb(size: int, mean, std):
    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = data.to_rgb(x)
        if tuple(x.shape[-2:]) != (size, size):
            x = data.resize(x, size)
        return _normalise(x.clamp(0, 1), mean, std)
    return prepare


class _Features(nn.Module):
    """``model.features`` as a module, so :func:`extract_features` can call it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


def build_candidate(name: str, efficientnet_px: int) -> Candidate:
    """One zoo entry by name: ``cifar_resnet<depth>``, ``efficientnet_lite0`` or
    ``digit_cnn:<source>[:<seed>]`` (a :func:`tlcourse.zoo.pretrained_digit_cnn`, cached)."""
    if name.startswith("cifar_resnet"):
        model = zoo.cifar_resnet(int(name.removeprefix("cifar_resnet")))
        return Candidate(name, model, _Features(model), "linear",
                         _as_rgb(32, CifarResNet.MEAN, CifarResNet.STD))
    if name == "efficientnet_lite0":
        model = zoo.efficientnet_lite0()
        return Candidate(name, model, zoo.efficientnet_lite0_features(model), "_fc",
                         _as_rgb(efficientnet_px, zoo.EFFICIENTNET_LITE0_MEAN,
                                 zoo.EFFICIENTNET_LITE0_STD))
    if name.startswith("digit_cnn:"):
        _, source, *rest = name.split(":")
        seed = int(rest[0]) if rest else 0
        # sklearn_digits has 1,797 images: keep 297 held out to score the source model.
        n_train = 1500 if source == "sklearn_digits" else 8000
        model = zoo.pretrained_digit_cnn(source, seed=seed, n_train=n_train)
        return Candidate(name, model, _Features(model), "head", _as_digit_input(model.in_channels))
    raise ValueError(f"unknown candidate {name!r}")


# --------------------------------------------------------------------------- the targets
def target_split(name: str, n_train_per_class: int, n_test_per_class: int, seed: int):
    """(x_train, y_train, x_test, y_test): a class-balanced labelled set and a disjoint held-out
    set, both drawn with ``seed``. USPS draws them from its own train and test splits."""
    if name == "usps":
        train, test = data.load("usps", "train"), data.load("usps", "test")
        x, y = train.to_tensors()
        xt, yt = test.to_tensors()
        i = torch.as_tensor(balanced_subset(y.numpy(), n_train_per_class, seed=seed))
        j = torch.as_tensor(balanced_subset(yt.numpy(), n_test_per_class, seed=seed + 1000))
        return x[i], y[i], xt[j], yt[j]
    x, y = data.load(name, "test").to_tensors()
    if name == "mnist_m":
        x, y = x[MNIST_M_FIRST_TARGET_ITEM:], y[MNIST_M_FIRST_TARGET_ITEM:]
    both = balanced_subset(y.numpy(), n_train_per_class + n_test_per_class, seed=seed)
    # balanced_subset shuffles across classes; split each class's draw into train and test.
    train_idx, test_idx = [], []
    for cls in np.unique(y.numpy()):
        members = both[y.numpy()[both] == cls]
        train_idx.append(members[:n_train_per_class])
        test_idx.append(members[n_train_per_class:])
    i, j = torch.as_tensor(np.concatenate(train_idx)), torch.as_tensor(np.concatenate(test_idx))
    return x[i], y[i], x[j], y[j]


# --------------------------------------------------------------------------- score and fine-tune
@torch.no_grad()
def penultimate_features(cand: Candidate, x: torch.Tensor) -> np.ndarray:
    """(N, D) features of ``cand`` before its last linear layer, for target images ``x``."""
    return extract_features(cand.features, cand.prepare(x), batch_size=128)


@torch.no_grad()
def transferability_scores(cand: Candidate, x: torch.Tensor, y: torch.Tensor,
                           feats: np.ndarray | None = None) -> dict[str, float]:
    """LEEP, NCE, H-score (Ledoit-Wolf shrinkage) and LogME of ``cand`` on labelled target data.

    ``feats`` are :func:`penultimate_features` of ``x`` when already computed."""
    feats = penultimate_features(cand, x) if feats is None else feats
    head = getattr(cand.model, cand.head)
    probs = torch.softmax(head(torch.from_numpy(feats)).double(), dim=1).numpy()
    labels = y.numpy()
    return {
        "leep": leep(probs, labels),
        "nce": nce(probs.argmax(1), labels),
        # The plain H-score saturates at K - 1 once the feature width reaches the sample size
        # (EfficientNet: 1,280 features for a few hundred images); shrinkage keeps it informative.
        "h_score": h_score(feats, labels, shrinkage="ledoit-wolf"),
        "logme": logme(feats, labels),
    }


def finetuned_accuracy(cand: Candidate, x, y, x_test, y_test, *, num_classes: int, steps: int,
                       batch_size: int, lr: float, body_lr_factor: float, seed: int,
                       head: nn.Linear | None = None, frozen_batchnorm: bool = False) -> float:
    """Replace the head, fine-tune every layer with Adam for ``steps`` steps, return test accuracy.

    The new head is ``head`` (e.g. the fitted linear probe, :func:`tlcourse.features.probe_as_linear`:
    LP-FT) or, when ``None``, a random one. It learns at ``lr``, the pretrained body at
    ``lr * body_lr_factor``; the same recipe for every model, so the accuracies differ only by
    what the source model brings.
    """
    model = cand.model
    if head is None:
        replace_head(model, num_classes, seed=seed, attr=cand.head)
    else:
        setattr(model, cand.head, head.to(next(model.parameters()).device))
    head_params = list(getattr(model, cand.head).parameters())
    head_ids = {id(p) for p in head_params}
    body_params = [p for p in model.parameters() if id(p) not in head_ids]
    for p in model.parameters():
        p.requires_grad_(True)
    if frozen_batchnorm:
        # BatchNorm keeps its source statistics and scales; fit() then keeps it in inference mode.
        freeze(model, [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)])
    body_params = [p for p in body_params if p.requires_grad]
    optimizer = torch.optim.Adam([{"params": body_params, "lr": lr * body_lr_factor},
                                  {"params": head_params, "lr": lr}])
    xp, xtp = cand.prepare(x), cand.prepare(x_test)
    epochs = -(-steps * batch_size // len(xp))
    torch.manual_seed(seed)  # dropout masks (EfficientNet) follow the seed too
    fit(model, make_loader(xp, y, batch_size, shuffle=True, seed=seed), epochs=epochs,
        optimizer=optimizer, max_steps=steps, progress=False)
    return evaluate(model, make_loader(xtp, y_test, 256))["accuracy"]


def _correlations(score: np.ndarray, accuracy: np.ndarray) -> tuple[float, float]:
    """Pearson r and weighted Kendall tau (the two TLlib reports). When either side is constant
    the correlation is undefined; it is reported as 0, i.e. no evidence that the score ranks."""
    if np.ptp(score) == 0 or np.ptp(accuracy) == 0:
        return 0.0, 0.0
    return float(stats.pearsonr(score, accuracy)[0]), float(stats.weightedtau(score, accuracy)[0])


def run(params, seed: int) -> dict[str, float]:
    if params["head_init"] not in ("probe", "random"):
        raise ValueError(f"head_init must be 'probe' (LP-FT) or 'random', got {params['head_init']!r}")
    torch.manual_seed(seed)
    out: dict[str, float] = {}
    for target in params["targets"]:
        x, y, xt, yt = target_split(target, params["n_train_per_class"],
                                    params["n_test_per_class"], seed)
        num_classes = int(y.max()) + 1
        rows = []
        for name in params["models"]:
            cand = build_candidate(name, params["efficientnet_px"])  # fresh weights per target
            start = time.perf_counter()
            feats = penultimate_features(cand, x)
            scores = transferability_scores(cand, x, y, feats)
            # The frozen-feature ground truth, before fine-tuning changes the weights.
            fitted = linear_probe(feats, y.numpy(), penultimate_features(cand, xt), yt.numpy())
            head = probe_as_linear(fitted) if params["head_init"] == "probe" else None
            accuracy = finetuned_accuracy(cand, x, y, xt, yt, num_classes=num_classes,
                                          steps=params["steps"], batch_size=params["batch_size"],
                                          lr=params["lr"], body_lr_factor=params["body_lr_factor"],
                                          seed=seed, head=head,
                                          frozen_batchnorm=params["frozen_batchnorm"])
            rows.append({**scores, "accuracy": accuracy, "probe_accuracy": fitted.accuracy})
            for key, value in rows[-1].items():
                out[f"{target}/{name}/{key}"] = value  # kept in the JSON for the per-model table
            out[f"{target}/{name}/seconds"] = time.perf_counter() - start
        accuracy = np.array([r["accuracy"] for r in rows])
        probe_accuracy = np.array([r["probe_accuracy"] for r in rows])
        for score in SCORES:
            values = np.array([row[score] for row in rows])
            r, tau = _correlations(values, accuracy)
            out[f"pearson/{target}/{score}"], out[f"tau/{target}/{score}"] = r, tau
            out[f"probe_pearson/{target}/{score}"] = _correlations(values, probe_accuracy)[0]
    for score in SCORES:
        for kind in ("pearson", "tau", "probe_pearson"):
            out[f"{kind}/mean/{score}"] = float(np.mean([out[f"{kind}/{t}/{score}"]
                                                         for t in params["targets"]]))
    return out


# --------------------------------------------------------------------------- declaration
ZOO_CPU = ("cifar_resnet20", "cifar_resnet32", "cifar_resnet44", "cifar_resnet56",
           "efficientnet_lite0", "digit_cnn:emnist_digits", "digit_cnn:mnist",
           "digit_cnn:sklearn_digits")
SETTINGS = {
    # One model per input path; the sklearn-digits CNN trains in ~2 s in the tests' empty cache.
    "smoke": {"targets": ("emnist_letters", "usps"),
              "models": ("cifar_resnet20", "efficientnet_lite0", "digit_cnn:sklearn_digits"),
              "n_train_per_class": 3, "n_test_per_class": 3, "steps": 3, "batch_size": 16,
              "lr": 1e-3, "body_lr_factor": 0.1, "efficientnet_px": 32,
              "head_init": "probe", "frozen_batchnorm": True},
    "cpu": {"targets": ("emnist_letters", "usps"), "models": ZOO_CPU,
            "n_train_per_class": 20, "n_test_per_class": 30, "steps": 80, "batch_size": 32,
            "lr": 1e-3, "body_lr_factor": 0.1, "efficientnet_px": 64,
            "head_init": "probe", "frozen_batchnorm": True},
    "full": {"targets": TARGETS,
             "models": (*ZOO_CPU, "digit_cnn:emnist_digits:1", "digit_cnn:mnist_m"),
             "n_train_per_class": 50, "n_test_per_class": 50, "steps": 300, "batch_size": 32,
             "lr": 1e-3, "body_lr_factor": 0.1, "efficientnet_px": 96,
             "head_init": "probe", "frozen_batchnorm": True},
}


def describe(p) -> str:
    targets = ", ".join(TARGET_LABELS[t] for t in p["targets"])
    head = ("initialised as the fitted linear probe, LP-FT" if p.get("head_init") == "probe"
            else "initialised at random")
    bn = ", BatchNorm frozen in inference mode" if p.get("frozen_batchnorm") else ""
    return (f"{len(p['models'])} source models ({', '.join(p['models'])}) scored and fine-tuned on "
            f"{len(p['targets'])} target(s) ({targets}), each with {p['n_train_per_class']} labelled "
            f"images per class (a fresh class-balanced draw per seed) and {p['n_test_per_class']} "
            f"held-out images per class; inputs match each model: 1x28x28 in [0, 1] for the digit "
            f"CNNs (MNIST-M averaged to grey), 3x32x32 with the ImageNet mean/std that the CIFAR "
            f"ResNet checkpoints were trained with, 3x{p['efficientnet_px']}x{p['efficientnet_px']} "
            f"scaled to [-1, 1] for EfficientNet-Lite0 (below its 224 px, to fit a CPU); scores from "
            f"one forward pass (LEEP on the source softmax, NCE on its arg-max, H-score with "
            f"Ledoit-Wolf shrinkage and LogME on penultimate features; the linear probe is "
            f"scikit-learn's logistic regression on the standardised frozen features); fine-tuning "
            f"replaces the head ({head}) and trains all layers for {p['steps']} Adam steps of "
            f"{p['batch_size']} (head lr {p['lr']:g}, body lr {p['lr'] * p['body_lr_factor']:g}"
            f"{bn}); correlations are over the models within each target, then averaged over "
            f"targets.")


# TLlib examples/model_selection README, CIFAR-10 table: 10 ImageNet models.
_ANCHOR = {"pearson": {"leep": 0.604, "nce": 0.786, "h_score": 0.839, "logme": 0.733},
           "tau": {"leep": 0.638, "nce": 0.714, "h_score": 0.800, "logme": 0.785}}


def _metrics(targets, models) -> tuple[Metric, ...]:
    out = []
    for kind, label in (("pearson", "Pearson r"), ("tau", "weighted Kendall tau")):
        for score in SCORES:
            out.append(Metric(f"{kind}/mean/{score}", f"{label}, {SCORE_LABELS[score]} vs fine-tuned "
                              "accuracy, mean over targets", anchor=_ANCHOR[kind][score], digits=2))
        for target in targets:
            for score in SCORES:
                out.append(Metric(f"{kind}/{target}/{score}", f"{label}, {SCORE_LABELS[score]}, "
                                  f"{TARGET_LABELS[target]}", digits=2))
    for score in SCORES:
        out.append(Metric(f"probe_pearson/mean/{score}", f"Pearson r, {SCORE_LABELS[score]} vs "
                          "linear-probe accuracy (frozen features), mean over targets", digits=2))
    # Per model: what the correlations are computed from (optional: the smoke zoo is smaller).
    for target in targets:
        for model in models:
            out.append(Metric(f"{target}/{model}/accuracy", f"{TARGET_LABELS[target]}, {model}: "
                              "fine-tuned accuracy (%)", scale=100, optional=True))
            out.append(Metric(f"{target}/{model}/probe_accuracy", f"{TARGET_LABELS[target]}, {model}: "
                              "linear-probe accuracy (%)", scale=100, optional=True))
            out.append(Metric(f"{target}/{model}/leep", f"{TARGET_LABELS[target]}, {model}: LEEP",
                              digits=2, optional=True))
    return tuple(out)


def _best_pearson(means) -> float:
    return max(means[f"pearson/mean/{s}"] for s in SCORES)


BENCHMARKS = (
    Benchmark(
        name="leep_selection",
        title="Model selection with LEEP, NCE, H-score and LogME (Nguyen et al., 2020)",
        settings=SETTINGS,
        run=run,
        metrics=_metrics(("emnist_letters", "usps"), ZOO_CPU),
        anchor=("TLlib (thuml/Transfer-Learning-Library, examples/model_selection) ranks 10 "
                "ImageNet-pretrained models (GoogLeNet, Inception v3, ResNet-50/101/152, "
                "DenseNet-121/169/201, MobileNet v2, MNasNet) on CIFAR-10 fully fine-tuned at 224 px, "
                "and reports Pearson r / weighted Kendall tau with fine-tuned accuracy of 0.604 / "
                "0.638 for LEEP, 0.786 / 0.714 for NCE, 0.839 / 0.800 for H-score and 0.733 / 0.785 "
                "for LogME. Ours ranks a smaller and far more varied zoo (CIFAR-10 ResNets, an "
                "ImageNet EfficientNet at low resolution, digit CNNs) on grey digit and letter "
                "targets with a few hundred labelled images and a short fine-tuning budget, so the "
                "spread of accuracies, and of correlations between seeds, is much larger. Our "
                "correlations depend strongly on the fine-tuning recipe: the module docstring of "
                "benchmarks/leep_selection.py lists the ablations."),
        describe=describe,
        targets=(Target("best score's Pearson r with fine-tuned accuracy, mean over targets, "
                        ">= 0.6", lambda m, s: _best_pearson(m) >= 0.6),
                 Target("LEEP's Pearson r, mean over targets, >= 0.6 (TLlib: 0.60)",
                        lambda m, s: m["pearson/mean/leep"] >= 0.6)),
    ),
)

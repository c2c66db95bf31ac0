"""Proxy A-distance between digit domains on pixels, on source-only features and on DANN features.

For MNIST->USPS and MNIST->MNIST-M (the splits of :mod:`benchmarks.dann_digits`), a source-only
network and a DANN network are trained exactly as in that benchmark; then
:func:`tlcourse.divergence.proxy_a_distance` (a standardised logistic regression told to separate
the domains, scored on a held-out half) compares ``n`` source training images with ``n`` held-out
target evaluation images, which no network saw, not even unlabelled:

- on the raw pixels (784 values, or 3 × 784 for MNIST-M);
- on the 128 features of the source-only network;
- on the 128 features of the DANN network.

PAD = 2 (1 - 2 err) is 0 when a linear classifier cannot tell the domains apart and 2 when it
separates them perfectly. DANN's reversed gradient trains the features to fool a domain classifier,
so the PAD on its features should be lower than on the source-only features.
"""
from __future__ import annotations

import torch

from tlcourse.divergence import proxy_a_distance
from tlcourse.train import predict

from .core import Benchmark, Metric, Target
from .dann_digits import BASE, PAIR_TITLES, domain_pair, train_method

PAIRS = ("mnist_usps", "mnist_mnistm")
REPRESENTATIONS = {"raw": "raw pixels", "source_only": "source-only features", "dann": "DANN features"}


def run(p, seed: int) -> dict[str, float]:
    out = {}
    for name in PAIRS:
        pair = domain_pair(name)
        n = min(p["n"], len(pair.eval_x))
        pick = torch.randperm(len(pair.source_x), generator=torch.Generator().manual_seed(seed))[:n]
        xs, xt = pair.source_x[pick], pair.eval_x[:n]
        out[f"{name}_raw"] = proxy_a_distance(xs.flatten(1), xt.flatten(1), seed=seed).distance
        for method in ("source_only", "dann"):
            g, _ = train_method(pair, method, p, seed)
            out[f"{name}_{method}"] = proxy_a_distance(predict(g, xs), predict(g, xt), seed=seed).distance
    return out


def _metrics() -> tuple[Metric, ...]:
    return tuple(Metric(f"{name}_{rep}", f"{PAIR_TITLES[name]}: PAD on {label}", digits=2)
                 for name in PAIRS for rep, label in REPRESENTATIONS.items())


def _target(name: str) -> Target:
    # A lower mean alone could be seed noise: PAD sits near its ceiling of 2 here, where the seed
    # spread is about as large as the differences, so the drop must also exceed that spread.
    def check(means, stds):
        drop = means[f"{name}_source_only"] - means[f"{name}_dann"]
        return drop > 0 and drop > max(stds[f"{name}_source_only"], stds[f"{name}_dann"])

    return Target(f"{PAIR_TITLES[name]}: PAD on DANN features lower than on source-only features, "
                  "by more than the larger seed std", check)


def describe(p) -> str:
    model = {"small_lenet": "a small LeNet", "digitcnn": "tlcourse.models.DigitCNN"}[p["model"]]
    return (f"Networks as in dann_digits ({model}, {p['steps']} SGD steps of {p['batch_size']}"
            f"{', at most ' + str(p['max_source']) + ' source images' if p.get('max_source') else ''}); "
            f"PAD from a standardised logistic regression on {p['n']} source training images versus "
            f"{p['n']} held-out target images (half to fit it, half to score it).")


BENCHMARKS = (
    Benchmark(
        name="proxy_a_distance",
        title="Proxy A-distance before and after DANN",
        settings={
            "smoke": {**BASE, "model": "small_lenet", "steps": 8, "max_source": 256, "max_target": 256,
                      "n": 200},
            "cpu": {**BASE, "model": "small_lenet", "steps": 600, "n": 2000},
            "full": {**BASE, "model": "digitcnn", "steps": 10000, "disc_hidden": 1024, "n": 2000},
        },
        run=run,
        metrics=_metrics(),
        anchor=("Ganin et al. (2016, JMLR) and Ben-David et al. (2010) use the proxy A-distance to show "
                "that DANN's features make the domains harder to tell apart; we did not verify a "
                "published PAD for these digit pairs, so no number is set beside ours. Our domain "
                "classifier is a logistic regression (the papers used a linear SVM)."),
        describe=describe,
        targets=tuple(_target(n) for n in PAIRS),
    ),
)

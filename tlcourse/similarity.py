"""How similar is a target to the source? Every measure of chapter G07 for one source/target pair.

A *view* of a dataset through a source model is what every similarity measure needs: the frozen
penultimate features (for the domain classifier, MMD, histograms and LogME), the source-class
probabilities (for LEEP) and their argmax (for NCE), and the target labels. :func:`target_view`
builds it for the course's digit CNN and any of the course's image datasets;
:func:`similarity_measures` computes, on one seeded draw, every measure beside the outcome they
are meant to predict: the held-out accuracy of a linear probe on the frozen features (feature
extraction, the transfer actually performed).

Measures and their references:

- domain classifier and proxy A-distance ``2 (1 - 2 err)`` on held-out examples (Ben-David et al.,
  2007; :func:`tlcourse.divergence.proxy_a_distance`);
- unbiased MMD² with Gaussian kernels at 1/4..4 times the median distance (Gretton et al., 2012;
  :func:`tlcourse.divergence.mmd2_unbiased`);
- KL and JS divergences of histograms of the first principal component of the pooled features
  (:func:`tlcourse.divergence.histogram_divergence`);
- LEEP (Nguyen et al., 2020), NCE (Tran et al., 2019) and LogME (You et al., 2021) on the labelled
  target examples (:mod:`tlcourse.transferability`).

>>> import torch
>>> from tlcourse.models import DigitCNN
>>> view = target_view(DigitCNN().eval(), "sklearn_digits")
>>> view.features.shape, view.probs.shape, view.labels.shape
((1797, 128), (1797, 10), (1797,))
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["TargetView", "target_view", "similarity_measures", "MEASURES"]

MEASURES = ("dom_acc", "pad", "mmd2", "kl", "js", "leep", "nce", "logme")


@dataclass(frozen=True)
class TargetView:
    """A dataset seen through a source model.

    ``features`` (N, D) float64 frozen penultimate features, ``probs`` (N, Z) float64 source-class
    probabilities (softmax of the source head), ``labels`` (N,) int64 target labels, ``name``.
    """

    name: str
    features: np.ndarray
    probs: np.ndarray
    labels: np.ndarray


@torch.no_grad()
def target_view(model, name: str, *, split: str | None = None, rows=None,
                batch_size: int = 1000) -> TargetView:
    """Features, source-class probabilities and labels of dataset ``name`` under ``model``.

    ``model`` is a :class:`tlcourse.models.DigitCNN` (any module with ``features`` and ``head``
    taking (N, 1, 28, 28) images); it runs in eval mode on its own device, in batches, and its
    mode is restored afterwards. ``split`` defaults to the dataset's ``test`` split when it has
    one, else its only split; ``rows`` (a slice or index array) keeps part of it, for example the
    images a source model never trained on. Colour images become grey (mean of the channels)
    and other sizes are resized to 28x28 (:func:`tlcourse.data.resize`).
    """
    from . import data

    splits = data.datasets()
    if name not in splits:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(splits)}")
    split = split or ("test" if "test" in splits[name] else splits[name][0])
    if split not in splits[name]:
        raise ValueError(f"{name} has splits {splits[name]}, not {split!r}")
    x, y = data.load(name, split).to_tensors()
    if rows is not None:
        x, y = x[rows], y[rows]
        if len(y) == 0:
            raise ValueError(f"rows={rows!r} selects no images of {name} {split} ({len(data.load(name, split))} images)")
    if x.shape[1] == 3:
        x = x.mean(1, keepdim=True)
    if tuple(x.shape[-2:]) != (28, 28):
        x = data.resize(x, 28)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    feats, probs = [], []
    for start in range(0, len(x), batch_size):
        f = model.features(x[start:start + batch_size].to(device))
        feats.append(f.double().cpu())
        probs.append(torch.softmax(model.head(f).double(), 1).cpu())
    model.train(was_training)
    return TargetView(name, torch.cat(feats).numpy(), torch.cat(probs).numpy(), y.numpy().astype(np.int64))


def similarity_measures(source_features, target: TargetView, *, seed: int, n_dom: int = 300,
                        n_lab: int = 200, n_test: int = 300, bins: int = 20) -> dict:
    """Every similarity measure and the transfer outcome for one pair, on one seeded draw.

    Draws (``np.random.default_rng(seed)``) ``n_dom`` source features from ``source_features``
    (S, D) and ``n_dom`` target examples for the label-free measures, and two disjoint target sets:
    ``n_lab`` labelled examples for LEEP, NCE, LogME and for fitting the probe, and ``n_test``
    held-out examples that score the probe. The domain classifier is fitted on half of the pooled
    domain sample and scored on the other half.

    Returns a dict with ``dom_acc`` (held-out accuracy of the domain classifier), ``pad``,
    ``mmd2``, ``kl`` (source histogram relative to the target's), ``js``, ``leep``, ``nce``,
    ``logme`` and ``probe_acc`` (the outcome), all floats.
    """
    from sklearn.decomposition import PCA

    from .divergence import histogram_divergence, mmd2_unbiased, proxy_a_distance
    from .features import linear_probe
    from .transferability import leep, logme, nce

    source_features = np.asarray(source_features, dtype=np.float64)
    n = len(target.labels)
    if n_lab + n_test > n or n_dom > n or n_dom > len(source_features):
        raise ValueError(f"{target.name}: n_lab + n_test = {n_lab + n_test} and n_dom = {n_dom} must "
                         f"fit in its {n} examples (and n_dom in the {len(source_features)} source "
                         "examples); lower them")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    lab, test, dom = order[:n_lab], order[n_lab:n_lab + n_test], rng.permutation(n)[:n_dom]
    src = source_features[rng.permutation(len(source_features))[:n_dom]]
    tgt = target.features[dom]
    pad = proxy_a_distance(src, tgt, seed=seed)
    pc = PCA(1, random_state=seed).fit(np.r_[src, tgt])
    hist = histogram_divergence(pc.transform(src)[:, 0], pc.transform(tgt)[:, 0], bins=bins)
    f, p, y = target.features, target.probs, target.labels
    return dict(
        dom_acc=1.0 - pad.error, pad=pad.distance,
        mmd2=float(mmd2_unbiased(torch.from_numpy(src), torch.from_numpy(tgt))),
        kl=hist.kl, js=hist.js,
        leep=leep(p[lab], y[lab]), nce=nce(p[lab].argmax(1), y[lab]), logme=logme(f[lab], y[lab]),
        probe_acc=linear_probe(f[lab], y[lab], f[test], y[test]).accuracy)

"""tlcourse.similarity: dataset views through a source model, and every G07 measure for one pair."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tlcourse.models import DigitCNN
from tlcourse.similarity import MEASURES, TargetView, similarity_measures, target_view
from tlcourse.transferability import leep


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DigitCNN().eval()


def test_target_view_shapes_rows_and_probabilities(model):
    view = target_view(model, "usps", split="train", rows=slice(0, 50))
    assert view.features.shape == (50, 128) and view.probs.shape == (50, 10) and view.labels.shape == (50,)
    assert view.features.dtype == np.float64 and view.labels.dtype == np.int64
    np.testing.assert_allclose(view.probs.sum(1), 1.0, atol=1e-12)
    # the probabilities are the model's own softmax on the resized images
    from tlcourse import data
    x, _ = data.load("usps", "train").to_tensors()
    with torch.no_grad():
        expected = torch.softmax(model(data.resize(x[:50], 28)).double(), 1).numpy()
    np.testing.assert_allclose(view.probs, expected, atol=1e-6)


def test_target_view_colour_images_become_grey_and_mode_is_restored(model):
    model.train()
    view = target_view(model, "mnist_m", rows=np.arange(5))
    assert model.training, "target_view must restore the model's mode"
    model.eval()
    assert view.features.shape == (5, 128)
    # in eval mode a view of the same rows is deterministic and independent of batching
    again = target_view(model, "mnist_m", rows=np.arange(5), batch_size=2)
    np.testing.assert_allclose(view.features, again.features, atol=1e-5)


def test_target_view_rejects_bad_names(model):
    with pytest.raises(ValueError, match="unknown dataset"):
        target_view(model, "cifar10")
    with pytest.raises(ValueError, match="splits"):
        target_view(model, "mnist", split="train")
    with pytest.raises(ValueError, match="selects no images"):
        target_view(model, "usps", rows=slice(5000, None))


def _view(features, labels, probs=None):
    probs = np.full((len(labels), 3), 1 / 3) if probs is None else probs
    return TargetView("toy", features, probs, labels)


def test_similarity_measures_same_and_shifted_domains():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 200)
    centres = rng.normal(scale=3, size=(3, 8))
    feats = centres[labels] + rng.normal(size=(600, 8))
    source = centres[rng.integers(0, 3, 400)] + rng.normal(size=(400, 8))
    probs = np.eye(3)[labels] * 0.8 + 0.2 / 3
    same = similarity_measures(source, _view(feats, labels, probs), seed=0, n_dom=300, n_lab=200, n_test=300)
    shifted = similarity_measures(source, _view(feats + 4.0, labels, probs), seed=0, n_dom=300, n_lab=200,
                                  n_test=300)
    assert set(same) == {*MEASURES, "probe_acc"}
    assert abs(same["dom_acc"] - 0.5) < 0.1 and shifted["dom_acc"] > 0.95
    assert same["pad"] < shifted["pad"] and same["mmd2"] < 0.01 < shifted["mmd2"]
    assert same["js"] < shifted["js"] <= np.log(2)
    # LEEP, NCE and the standardised probe only see the target: shifting its inputs changes nothing
    # (LogME does change: its linear model has no intercept, as in You et al., 2021)
    for key in ("leep", "nce", "probe_acc"):
        assert same[key] == pytest.approx(shifted[key])
    assert same["probe_acc"] > 0.9
    assert same["leep"] <= 0


def test_similarity_measures_leep_on_the_labelled_draw_only():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 100)
    probs = rng.dirichlet(np.ones(3), 100)
    feats = rng.normal(size=(100, 4))
    got = similarity_measures(feats, _view(feats, labels, probs), seed=3, n_dom=50, n_lab=40, n_test=30)
    lab = np.random.default_rng(3).permutation(100)[:40]
    assert got["leep"] == pytest.approx(leep(probs[lab], labels[lab]))


def test_similarity_measures_rejects_oversized_draws():
    feats, labels = np.zeros((20, 2)), np.arange(20) % 2
    with pytest.raises(ValueError, match="must fit"):
        similarity_measures(feats, _view(feats, labels), seed=0, n_dom=10, n_lab=15, n_test=10)

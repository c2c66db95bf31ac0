"""Tests for tlcourse.zeroshot: the maths of each method on tiny cases, and its input checks."""
import math

import numpy as np
import pytest
import torch

from tlcourse.zeroshot import (LETTER_STROKES, STROKE_ATTRIBUTES, GZSLAccuracy, attribute_scores,
                               calibrated_stacking, choose_gamma, cosine_scores, fit_attribute_map,
                               gzsl_accuracy, harmonic_mean, label_embeddings, letter_attributes,
                               per_class_accuracy, predict_attributes, restrict_to, zsl_split)


# ---------------------------------------------------------------- attribute map
def test_ridge_map_recovers_a_linear_attribute_function():
    rng = np.random.default_rng(0)
    w = torch.tensor(rng.normal(size=(4, 3)), dtype=torch.float64)
    centres = torch.tensor(rng.normal(size=(6, 4)), dtype=torch.float64)
    attrs = centres @ w + 0.5                                      # each class's attribute vector
    y = torch.arange(6).repeat(20)
    x = centres[y]
    m = fit_attribute_map(x, y, attrs, l2=1e-10)
    assert torch.allclose(predict_attributes(m, centres), attrs, atol=1e-6)
    assert m.weight.shape == (4, 3) and m.bias.shape == (3,) and m.weight.dtype == torch.float64


def test_ridge_penalty_shrinks_towards_the_mean_attribute():
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    y = torch.tensor([0, 0, 1, 1])
    s = torch.tensor([[0.0], [1.0]])
    big = fit_attribute_map(x, y, s, l2=1e9)
    assert torch.allclose(predict_attributes(big, torch.tensor([[10.0]])), torch.tensor([[0.5]]), atol=1e-6)
    assert big.weight.dtype == torch.float32


def test_attribute_scores_are_cosines_and_pick_the_closest_vector():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    a = torch.tensor([[2.0, 0.0], [0.1, 3.0], [1.0, 0.9]])
    scores = attribute_scores(a, s)
    assert torch.allclose(scores[0], torch.tensor([1.0, 0.0, 1 / math.sqrt(2)]))
    assert scores.argmax(1).tolist() == [0, 1, 2]


def test_attribute_functions_refuse_bad_shapes():
    with pytest.raises(ValueError, match="labels must index the 2 rows"):
        fit_attribute_map(torch.zeros(3, 2), torch.tensor([0, 1, 2]), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="l2 must be a positive"):
        fit_attribute_map(torch.zeros(2, 2), torch.tensor([0, 1]), torch.zeros(2, 4), l2=0)
    with pytest.raises(ValueError, match="float matrix"):
        fit_attribute_map(torch.zeros(3), torch.tensor([0, 1, 2]), torch.zeros(3, 4))
    m = fit_attribute_map(torch.rand(4, 2), torch.tensor([0, 1, 0, 1]), torch.rand(2, 3))
    with pytest.raises(ValueError, match="fitted on 2"):
        predict_attributes(m, torch.zeros(1, 5))
    with pytest.raises(ValueError, match="3 attributes"):
        attribute_scores(torch.zeros(1, 3), torch.zeros(2, 4))


# ---------------------------------------------------------------- generalised ZSL
def test_per_class_accuracy_weights_classes_not_images():
    y = [0] * 9 + [1]
    assert per_class_accuracy(y, [0] * 10, [0, 1]) == 0.5
    assert per_class_accuracy(y, [0] * 10, [0, 1, 7]) == 0.5          # absent classes are skipped
    with pytest.raises(ValueError, match="none of the classes"):
        per_class_accuracy(y, [0] * 10, [5])


def test_harmonic_mean():
    assert harmonic_mean(0.0, 0.0) == 0.0 and harmonic_mean(1.0, 0.0) == 0.0
    assert math.isclose(harmonic_mean(0.8, 0.2), 0.32)


def test_gzsl_accuracy_separates_seen_and_unseen():
    r = gzsl_accuracy([0, 0, 1, 2, 2], [0, 1, 1, 0, 2], seen=[0, 1], unseen=[2])
    assert isinstance(r, GZSLAccuracy)
    assert (r.seen, r.unseen) == (0.75, 0.5) and math.isclose(r.harmonic, 0.6)
    with pytest.raises(ValueError, match="overlap"):
        gzsl_accuracy([0], [0], seen=[0], unseen=[0])


def test_calibrated_stacking_subtracts_gamma_from_seen_columns_only():
    s = torch.tensor([[0.9, 0.8, 0.1]])
    out = calibrated_stacking(s, torch.tensor([True, False, True]), 0.25)
    assert torch.allclose(out, torch.tensor([[0.65, 0.8, -0.15]]))
    assert torch.equal(calibrated_stacking(s, torch.tensor([True, False, True]), 0.0), s)
    with pytest.raises(ValueError, match="bool tensor of shape \\(3,\\)"):
        calibrated_stacking(s, torch.tensor([1, 0, 1]), 0.1)


def test_large_gamma_turns_gzsl_into_plain_zsl():
    rng = np.random.default_rng(1)
    s = torch.tensor(rng.random((40, 5)), dtype=torch.float32)
    y = torch.tensor(rng.integers(3, 5, 40))                            # unseen images only
    seen = torch.tensor([True, True, True, False, False])
    gz = calibrated_stacking(s, seen, 10.0).argmax(1)
    assert torch.equal(gz, 3 + s[:, 3:].argmax(1))


def test_choose_gamma_maximises_the_validation_harmonic_mean_and_breaks_ties_low():
    s = torch.tensor([[0.9, 0.8], [0.7, 0.1], [0.5, 0.45]])
    y = [1, 0, 1]
    gamma, results = choose_gamma(s, y, seen=[0], unseen=[1], gammas=[0.0, 0.06, 0.15, 0.2, 0.7])
    assert gamma == 0.15 and len(results) == 5
    assert results[1] == (1.0, 0.5, pytest.approx(2 / 3))               # image 0 still goes to the seen class
    assert results[2].harmonic == results[3].harmonic == 1.0            # 0.2 ties, 0.15 wins
    assert results[0].unseen == 0.0 and results[-1].seen == 0.0


def test_restrict_to_limits_the_argmax_to_a_label_space():
    s = torch.tensor([[5.0, 1.0, 2.0], [0.0, 3.0, 1.0]])
    assert restrict_to(s, [2]).argmax(1).tolist() == [2, 2]
    assert torch.isinf(restrict_to(s, [1, 2])[:, 0]).all() and s[0, 0] == 5.0   # input untouched


def test_zsl_split_is_disjoint_complete_and_seeded():
    y = np.repeat(np.arange(8), 10)
    sp = zsl_split(y, n_seen=4, n_val_unseen=2, seed=5)
    assert set(sp.seen) | set(sp.val_unseen) | set(sp.test_unseen) == set(range(8))
    assert not set(sp.seen) & set(sp.val_unseen) and not set(sp.val_unseen) & set(sp.test_unseen)
    assert set(np.unique(y[sp.train])) == set(sp.seen)
    assert set(np.unique(y[sp.val])) == set(sp.seen) | set(sp.val_unseen)
    assert set(np.unique(y[sp.test])) == set(sp.seen) | set(sp.test_unseen)
    parts = np.concatenate([sp.train, sp.val, sp.test])
    assert len(parts) == len(set(parts.tolist())) == 80                 # every row once
    again = zsl_split(y, 4, 2, seed=5)
    assert again.seen == sp.seen and all((a == b).all() for a, b in zip(again[3:], sp[3:]))
    assert any(zsl_split(y, 4, 2, seed=s).seen != sp.seen for s in (6, 7, 8))
    with pytest.raises(ValueError, match="at least one test-unseen class"):
        zsl_split(y, n_seen=6, n_val_unseen=2)


# ---------------------------------------------------------------- text
def test_cosine_scores_and_label_embeddings():
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    labels = label_embeddings(torch.tensor([[3.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), [0, 0, 1], 2)
    assert torch.allclose(labels, torch.eye(2))
    scores = cosine_scores(e, labels)
    assert torch.allclose(scores[2], torch.tensor([1 / math.sqrt(2)] * 2))
    assert scores[:2].argmax(1).tolist() == [0, 1]
    with pytest.raises(ValueError, match="every class 0..2 needs at least one description"):
        label_embeddings(torch.rand(2, 4), [0, 1], 3)
    with pytest.raises(ValueError, match="3 dimensions"):
        cosine_scores(torch.rand(2, 3), torch.rand(2, 4))


# ---------------------------------------------------------------- the chapter's attributes
def test_letter_attributes_score_both_cases_and_tell_every_letter_apart():
    a = letter_attributes()
    assert a.shape == (19, len(STROKE_ATTRIBUTES)) and list(LETTER_STROKES) == list("ABCDEFGHIJKLMNOPQRS")
    assert set(torch.unique(a).tolist()) <= {0.0, 0.5, 1.0}
    o = letter_attributes("O")[0]
    assert o[STROKE_ATTRIBUTES.index("closed loop")] == 1 and o[STROKE_ATTRIBUTES.index("open curve")] == 1
    assert letter_attributes("I")[0, STROKE_ATTRIBUTES.index("dot")] == 0.5   # the lower case only
    d = (a[:, None] - a[None]).abs().sum(-1) + 9 * torch.eye(19)
    assert d.min() > 0
    with pytest.raises(ValueError, match="no stroke attributes for \\['Z'\\]"):
        letter_attributes("AZ")

"""Tests of tlcourse.bias: the seeded biased construction, Zhao et al.'s bias amplification and the
fairlearn-based subgroup metrics, on tiny hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tlcourse import bias
from tlcourse.bias import (arm_model, bias_amplification, biased_digit_splits, binarise, cooccurrence_bias,
                           fairness_report, subgroup_frame)

SMALL = dict(n_source_per_class=20, n_source_test_per_class=10, n_target_per_cell=2, n_val_per_cell=2,
             n_test_per_cell=3)


# ---------------------------------------------------------------- co-occurrence and amplification
def test_cooccurrence_rows_sum_to_one_and_count_by_output():
    b = cooccurrence_bias([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 1, 0])
    assert np.allclose(b, [[2 / 3, 1 / 3], [0, 1], [1, 0]])
    assert np.allclose(b.sum(1), 1)
    assert np.isnan(cooccurrence_bias([0, 2], [0, 1], n_classes=3)[1]).all()  # a class never seen


def test_amplification_is_zero_when_predictions_have_the_training_cooccurrence():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    g = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    assert bias_amplification(y, g, y, g) == 0.0
    # another test set with exactly the same b(o, g): still zero
    y2, g2 = np.repeat(y, 3), np.repeat(g, 3)
    assert bias_amplification(y, g, y2, g2) == pytest.approx(0.0, abs=1e-12)


def test_amplification_by_hand():
    # training: output 0 is 3/4 group 0, output 1 is 3/4 group 1
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    g = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    # predictions follow the group entirely: b~(0, 0) = 1 and b~(1, 1) = 1
    assert bias_amplification(y, g, g, g) == pytest.approx(((1 - 0.75) + (1 - 0.75)) / 2)
    # predictions that ignore the lean: every output half and half, BA = (0.5 - 0.75) on average
    pred = np.array([0, 0, 1, 0, 0, 1, 1, 1])
    assert cooccurrence_bias(pred, g).tolist() == [[0.5, 0.5], [0.5, 0.5]]
    assert bias_amplification(y, g, pred, g) == pytest.approx(-0.25)
    per_class = bias_amplification(y, g, g, g, per_class=True)
    assert per_class.shape == (2,) and np.allclose(per_class, 0.25)


def test_amplification_counts_only_the_leaning_groups_and_divides_by_outputs():
    # three groups: output 0 leans to groups 0 and 1 (0.4 each > 1/3), output 1 to group 2 only
    y = np.array([0] * 5 + [1] * 4)
    g = np.array([0, 0, 1, 1, 2, 2, 2, 2, 0])
    pred_y = np.array([0] * 5 + [1] * 4)
    pred_g = np.array([0, 0, 0, 1, 2, 2, 2, 2, 2])      # b~(0) = (0.6, 0.2, 0.2), b~(1) = (0, 0, 1)
    expected = ((0.6 - 0.4) + (0.2 - 0.4) + (1 - 0.75)) / 2
    assert bias_amplification(y, g, pred_y, pred_g) == pytest.approx(expected)


def test_amplification_fails_loudly():
    y, g = np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="class 1 is never predicted"):
        bias_amplification(y, g, np.array([0, 0, 0]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="same length"):
        cooccurrence_bias([0, 1], [0])
    with pytest.raises(ValueError, match="outside the training ids"):
        bias_amplification(y, g, np.array([0, 2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="integer"):
        cooccurrence_bias([0.5, 1.0], [0, 1])


# ---------------------------------------------------------------- fairlearn metrics on a hand-made case
def _hand_case():
    #            group plain (0)            group coloured (1)
    y_true = np.array([1, 1, 0, 0, 2, 2,    1, 1, 0, 0, 2, 2])
    y_pred = np.array([1, 1, 0, 0, 2, 0,    1, 0, 1, 1, 2, 2])
    groups = np.array([0] * 6 + [1] * 6)
    return y_true, y_pred, groups


def test_binarise_one_vs_rest():
    assert binarise([3, 7, 5, 0], positive=range(5, 10)).tolist() == [0, 1, 1, 0]
    assert binarise(torch.tensor([1, 2, 1]), positive=1).tolist() == [1, 0, 1]


def test_subgroup_frame_and_fairness_report_on_a_hand_made_case():
    y_true, y_pred, groups = _hand_case()
    frame = subgroup_frame(y_true, y_pred, groups)
    assert frame.by_group.loc["plain", "accuracy"] == pytest.approx(5 / 6)
    assert frame.by_group.loc["coloured", "accuracy"] == pytest.approx(3 / 6)
    assert frame.difference()["accuracy"] == pytest.approx(1 / 3)
    report = fairness_report(y_true, y_pred, groups, positive=1)
    # outcome "label is 1": plain TPR 2/2, FPR 0/4; coloured TPR 1/2, FPR 2/4
    assert report["TPR plain"] == 1 and report["FPR plain"] == 0
    assert report["TPR coloured"] == 0.5 and report["FPR coloured"] == 0.5
    assert report["equalized odds difference"] == pytest.approx(0.5)          # max(0.5, 0.5)
    # selection rates: plain 2/6, coloured 3/6
    assert report["demographic parity difference"] == pytest.approx(1 / 6)
    assert report["accuracy gap"] == pytest.approx(1 / 3)
    assert report["worst-group accuracy"] == pytest.approx(0.5)


def test_fairlearn_on_multiclass_labels_is_the_trap_the_chapter_describes():
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    y_true, y_pred, groups = _hand_case()
    y_pred = y_pred.copy()
    y_pred[4] = 1                                     # plain now predicts "1" three times
    raw = demographic_parity_difference(y_true, y_pred, sensitive_features=groups)
    share_of_ones = abs(np.mean(y_pred[groups == 0] == 1) - np.mean(y_pred[groups == 1] == 1))
    assert raw == pytest.approx(share_of_ones)        # silently: the gap in predictions equal to 1
    with pytest.raises(ValueError, match="pos_label"):
        equalized_odds_difference(y_true, y_pred, sensitive_features=groups)


# ---------------------------------------------------------------- the construction
def test_biased_splits_have_the_requested_skew_and_balance(tmp_path):
    s = biased_digit_splits(0, coloured_share=[0.1] * 5 + [0.8] * 5, **SMALL)
    src = s["source"]
    for c in range(10):
        coloured = int(src.group[src.y == c].sum())
        assert coloured == (2 if c < 5 else 16)      # round(20 * 0.1), round(20 * 0.8)
    for name, per_cell in (("target", 2), ("val", 2), ("test", 3)):
        counts = np.zeros((10, 2), int)
        np.add.at(counts, (s[name].y.numpy(), s[name].group.numpy()), 1)
        assert (counts == per_cell).all(), name
    assert s["target_skewed"].group.sum() == sum(round(4 * p) for p in [0.1] * 5 + [0.8] * 5)
    x = src.x
    assert x.shape[1:] == (3, 14, 14) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_biased_splits_use_each_digit_once_and_the_right_rendering():
    plain, coloured, labels = bias.digit_renderings(14)
    s = biased_digit_splits(1, **SMALL)
    flat = lambda t: t.reshape(len(t), -1)  # noqa: E731
    seen = []
    for split in s.values():
        for x, y, g in zip(split.x[:25], split.y[:25], split.group[:25]):
            pool = coloured if g else plain
            match = torch.nonzero((flat(pool) == x.reshape(1, -1)).all(1)).flatten()
            assert len(match) >= 1 and labels[match[0]] == y
            seen.append(int(match[0]))
    assert len(seen) == len(set(seen)), "a handwritten digit appears in two places"


def test_biased_splits_are_seeded_and_paired_with_the_balanced_control():
    a, b = biased_digit_splits(3, **SMALL), biased_digit_splits(3, **SMALL)
    assert torch.equal(a["source"].x, b["source"].x) and torch.equal(a["test"].y, b["test"].y)
    c = biased_digit_splits(4, **SMALL)
    assert not torch.equal(a["test"].y, c["test"].y)
    balanced = biased_digit_splits(3, coloured_share=0.5, **SMALL)
    assert torch.equal(balanced["test"].x, a["test"].x) and torch.equal(balanced["source"].y, a["source"].y)


def test_biased_splits_reject_bad_input():
    with pytest.raises(ValueError, match="fractions"):
        biased_digit_splits(0, coloured_share=1.5, **SMALL)
    with pytest.raises(ValueError, match="the splits need"):
        biased_digit_splits(0, n_source_per_class=900)


# ---------------------------------------------------------------- models
def test_arm_models_copy_and_freeze_as_named():
    s = biased_digit_splits(0, **SMALL)
    source = bias.train_source(s["source"], seed=0, steps=3)
    probe, tuned, scratch = (arm_model(k, source, seed=5) for k in ("linear probe", "fine-tune", "target only"))
    assert torch.equal(probe.layer4[0].weight, source.layer4[0].weight)
    assert torch.equal(tuned.layer1[0].weight, source.layer1[0].weight)
    assert not torch.equal(scratch.layer1[0].weight, source.layer1[0].weight)
    assert torch.equal(probe.head.weight, tuned.head.weight) and torch.equal(probe.head.weight, scratch.head.weight)
    assert [n for n, p in probe.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    assert all(p.requires_grad for p in tuned.parameters())
    with pytest.raises(ValueError, match="unknown arm"):
        arm_model("lora", source)
    with pytest.raises(ValueError, match="needs a source"):
        arm_model("fine-tune")


def test_train_source_is_reproducible_whatever_the_thread_count():
    s = biased_digit_splits(0, **SMALL)
    threads = torch.get_num_threads()
    a = bias.train_source(s["source"], seed=2, steps=5)
    torch.set_num_threads(2)
    try:
        b = bias.train_source(s["source"], seed=2, steps=5)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert bias.predict_labels(a, s["test"].x).dtype == np.int64

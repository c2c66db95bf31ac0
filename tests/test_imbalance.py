"""tlcourse.imbalance on tiny cases: imbalance profiles, class weights keyed by label, resampling,
logit adjustment, thresholds, metrics, the training loop; and the Keras behaviours the chapter states."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, balanced_accuracy_score, f1_score, recall_score
from torch import nn
from torch.nn import functional as F

from tlcourse.imbalance import (_average_precision, _macro_f1, binary_margin, choose_threshold, class_weights,
                                imbalance_metrics, imbalance_sizes, imbalanced_splits, logit_adjust, make_imbalanced,
                                random_oversample, smote, train_classifier, weight_tensor)


# ---------------------------------------------------------------- making an imbalance
def test_sizes_follow_the_exponential_profile_and_the_stated_ratio():
    sizes = imbalance_sizes(1000, 100, 5)
    assert sizes[0] == 1000 and sizes[-1] == 10 and sizes == sorted(sizes, reverse=True)
    assert imbalance_sizes(500, 50, 2) == [500, 10]
    with pytest.raises(ValueError, match=">= 1"):
        imbalance_sizes(10, 0.5, 2)


def test_make_imbalanced_keeps_members_of_each_class_only_and_raises_when_too_few():
    y = np.repeat([3, 5, 9], 50)
    idx = make_imbalanced(y, ratio=5, seed=1)
    assert np.bincount(y[idx])[[3, 5, 9]].tolist() == [50, 22, 10]
    assert len(set(idx.tolist())) == len(idx)
    assert not np.array_equal(idx, make_imbalanced(y, ratio=5, seed=2))
    with pytest.raises(ValueError, match="fewer than"):
        make_imbalanced(y, ratio=2, n_max=60)
    with pytest.raises(ValueError, match="every class"):
        make_imbalanced(y, ratio=2, order=[3, 5])


def test_imbalanced_splits_are_disjoint_and_each_has_the_ratio():
    y = np.array([0] * 500 + [1] * 40)
    parts = imbalanced_splits(y, 25, {"train": 200, "val": 100, "test": 150}, seed=0)
    assert {k: np.bincount(y[v]).tolist() for k, v in parts.items()} == {
        "train": [200, 8], "val": [100, 4], "test": [150, 6]}
    all_idx = np.concatenate(list(parts.values()))
    assert len(np.unique(all_idx)) == len(all_idx)


# ---------------------------------------------------------------- class weights
def test_class_weights_are_n_over_k_nc_keyed_by_label():
    y = np.array([1] * 8 + [3] * 2)
    w = class_weights(y)
    assert w == {1: 0.625, 3: 2.5}
    assert all(type(k) is int and type(v) is float for k, v in w.items())
    assert sum(w[c] for c in y) == pytest.approx(len(y))   # every class carries N / K, the mean weight is 1
    assert class_weights(np.array(["cat"] * 3 + ["dog"])) == {"cat": 4 / 6, "dog": 2.0}


def test_enumerate_keys_are_wrong_for_labels_other_than_0_to_k_minus_1():
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([1] * 8 + [3] * 2)
    by_position = dict(enumerate(compute_class_weight("balanced", classes=np.unique(y), y=y)))
    assert sorted(by_position) == [0, 1] and by_position[1] == 2.5   # label 1 would get label 3's weight


def test_class_weights_reject_a_class_without_examples_and_weight_tensor_checks_keys():
    with pytest.raises(ValueError, match="no example"):
        class_weights(np.array([0, 0, 1]), classes=[0, 1, 2])
    assert weight_tensor({0: 0.5, 1: 2.0}, 2).tolist() == [0.5, 2.0]
    with pytest.raises(ValueError, match="class indices 0..1"):
        weight_tensor({1: 0.625, 3: 2.5}, 2)


def test_torch_weighted_cross_entropy_divides_by_the_sum_of_weights():
    g = torch.Generator().manual_seed(0)
    logits, y, w = torch.randn(6, 2, generator=g), torch.tensor([0, 0, 0, 0, 1, 1]), torch.tensor([0.5, 3.0])
    per = F.cross_entropy(logits, y, reduction="none")
    assert F.cross_entropy(logits, y, weight=w).item() == pytest.approx((w[y] * per).sum().item() / w[y].sum().item())
    assert F.cross_entropy(logits, y, weight=w).item() != pytest.approx((w[y] * per).mean().item())


# ---------------------------------------------------------------- resampling
def test_random_oversample_keeps_all_and_evens_the_classes():
    y = np.array([0] * 7 + [1] * 2 + [2] * 3)
    idx = random_oversample(y, seed=0)
    assert np.bincount(y[idx]).tolist() == [7, 7, 7]
    assert set(range(len(y))) <= set(idx.tolist())


def test_smote_points_lie_on_segments_between_same_class_neighbours():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [5.0, 5.0], [6.0, 5.0]])
    y = np.array([0, 0, 0, 0, 1, 1])
    xs, ys = smote(x, y, k=1, seed=0)
    new = xs[len(x):]
    assert np.bincount(ys).tolist() == [4, 4] and ys[len(x):].tolist() == [1, 1]
    assert np.allclose(new[:, 1], 5.0) and ((new[:, 0] >= 5) & (new[:, 0] <= 6)).all()
    xt, yt = smote(torch.tensor(x, dtype=torch.float32).reshape(6, 1, 2), torch.tensor(y), k=1, seed=0)
    assert isinstance(xt, torch.Tensor) and tuple(xt.shape) == (8, 1, 2) and torch.equal(yt[-2:], torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="at least two"):
        smote(x[:5], y[:5])


# ---------------------------------------------------------------- logit adjustment and thresholds
def test_logit_adjustment_subtracts_tau_log_prior():
    z = np.array([[2.0, 0.0], [0.0, 0.0]])
    out = logit_adjust(z, prior=[0.8, 0.2], tau=1.0)
    assert np.allclose(out, z - np.log([0.8, 0.2]))
    assert out.argmax(1).tolist() == [0, 1]   # a tie under the prior goes to the rare class
    zt = torch.tensor(z)
    assert torch.allclose(logit_adjust(zt, [0.8, 0.2], tau=0.5), zt - 0.5 * torch.log(torch.tensor([0.8, 0.2])))
    with pytest.raises(ValueError, match="summing to 1"):
        logit_adjust(z, prior=[0.8, 0.3])
    # for two classes, logit adjustment is the threshold log(pi_1 / pi_0) on the margin
    margin = binary_margin(z)
    assert ((margin >= math.log(0.2 / 0.8)) == (out.argmax(1) == 1)).all()


def test_choose_threshold_matches_a_brute_force_search():
    rng = np.random.default_rng(0)
    for _ in range(10):
        y = (rng.random(150) < 0.1).astype(int)
        s = np.round(rng.normal(size=150) + 1.5 * y, 1)
        for metric, fn in (("macro_f1", lambda p: f1_score(y, p, average="macro", zero_division=0)),
                           ("balanced_accuracy", lambda p: balanced_accuracy_score(y, p))):
            t, v = choose_threshold(y, s, metric)
            u = np.unique(s)
            brute = max(fn((s >= c).astype(int)) for c in np.r_[u[0] - 1, (u[1:] + u[:-1]) / 2])
            assert v == pytest.approx(brute) and fn((s >= t).astype(int)) == pytest.approx(v)
    with pytest.raises(ValueError, match="binary labels"):
        choose_threshold([0, 2], [0.1, 0.2])


# ---------------------------------------------------------------- metrics
def test_majority_only_metrics_at_1_to_50():
    y = np.array([0] * 50 + [1])
    m = imbalance_metrics(y, np.zeros_like(y), np.zeros(len(y)))
    pi = 1 / 51
    assert m["accuracy"] == pytest.approx(1 - pi) and m["balanced_accuracy"] == 0.5
    assert m["macro_f1"] == pytest.approx((1 - pi) / (2 - pi))
    assert m["pr_auc"] == pytest.approx(pi) and m["roc_auc"] == 0.5
    assert m["recall_0"] == 1.0 and m["recall_1"] == 0.0


def test_metrics_agree_with_sklearn_and_handle_several_classes():
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    scores = rng.random((200, 3))
    m = imbalance_metrics(y, p, scores)
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p))
    assert [m[f"recall_{c}"] for c in range(3)] == pytest.approx(recall_score(y, p, average=None).tolist())
    assert 0 <= m["pr_auc"] <= 1 and 0 <= m["roc_auc"] <= 1
    assert _macro_f1(y, p, 3) == pytest.approx(m["macro_f1"])


def test_fast_average_precision_equals_sklearn_with_ties():
    rng = np.random.default_rng(2)
    for _ in range(10):
        y = (rng.random(300) < 0.05).astype(int)
        y[0] = 1
        s = np.round(rng.normal(size=300) + y, 1)
        assert _average_precision(y, s) == pytest.approx(average_precision_score(y, s))


def test_roc_auc_ignores_the_class_ratio_while_pr_auc_falls():
    rng = np.random.default_rng(3)
    pos, neg = rng.normal(2, 1, 200), rng.normal(0, 1, 20000)
    out = {}
    for r in (1, 100):
        s = np.r_[pos, neg[:200 * r]]
        y = np.r_[np.ones(200), np.zeros(200 * r)].astype(int)
        out[r] = imbalance_metrics(y, (s > 1).astype(int), s)
    assert abs(out[1]["roc_auc"] - out[100]["roc_auc"]) < 0.02
    assert out[1]["pr_auc"] - out[100]["pr_auc"] > 0.4


# ---------------------------------------------------------------- training
def _blobs(n0, n1, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([torch.randn(n0, 2, generator=g), torch.randn(n1, 2, generator=g) + 1.5])
    return x, torch.cat([torch.zeros(n0, dtype=torch.long), torch.ones(n1, dtype=torch.long)])


def test_train_classifier_runs_the_full_budget_and_weights_raise_minority_predictions():
    x, y = _blobs(400, 8, 0)
    xv, yv = _blobs(400, 8, 1)
    rates = {}
    for name, kw in (("plain", {}), ("weighted", {"weight": weight_tensor(class_weights(y.numpy()), 2)}),
                     ("both", {"weight": weight_tensor(class_weights(y.numpy()), 2),
                               "indices": random_oversample(y.numpy())})):
        torch.manual_seed(0)
        run = train_classifier(nn.Linear(2, 2), x, y, xv, yv, lr=0.05, steps=200, seed=0, **kw)
        assert run["steps"] == 200 and 0 <= run["best_step"] <= 200
        rates[name] = float((run["model"](xv).argmax(1) == 1).float().mean())
    assert rates["plain"] < rates["weighted"] < rates["both"]


def test_train_classifier_selects_by_pr_auc_and_validates_its_arguments():
    x, y = _blobs(100, 10, 0)
    run = train_classifier(nn.Linear(2, 2), x, y, x, y, lr=0.05, steps=30, select="pr_auc", eval_every=10)
    assert run["val_score"] == pytest.approx(_average_precision(y.numpy(), binary_margin(run["model"](x).detach())))
    with pytest.raises(ValueError, match="select"):
        train_classifier(nn.Linear(2, 2), x, y, x, y, lr=0.05, steps=3, select="accuracy")
    with pytest.raises(ValueError, match="no trainable"):
        train_classifier(nn.Linear(2, 2).requires_grad_(False), x, y, x, y, lr=0.05, steps=3)


# ---------------------------------------------------------------- the demo module
def test_demo_pool_splits_head_and_top_block_on_a_random_cnn():
    from tlcourse.imbalance_demo import fit_head, letter_detection_pool, splits_of, top_block_model
    from tlcourse.models import DigitCNN

    torch.manual_seed(0)
    cnn = DigitCNN().eval()
    pool = letter_detection_pool("E", ratio=10, n_max={"train": 60, "val": 40, "test": 50}, cnn=cnn)
    assert pool["block2"].shape[1] == 1568 and pool["features"].shape[1] == 128
    split = splits_of(pool, seed=0)
    y = pool["labels"].numpy()
    assert {k: np.bincount(y[v]).tolist() for k, v in split.items()} == {"train": [60, 6], "val": [40, 4], "test": [50, 5]}
    f = pool["features"].numpy()
    head, c, ap = fit_head(f[split["train"]], y[split["train"]], f[split["val"]], y[split["val"]], c_grid=(1.0,))
    assert c == 1.0 and 0 <= ap <= 1
    model = top_block_model(cnn, seed=3)
    assert tuple(model(pool["block2"][:4]).shape) == (4, 2)
    assert torch.allclose(model[0][1].weight, cnn.block3[1].weight) and model[0][1].weight.requires_grad
    assert torch.equal(top_block_model(cnn, seed=3)[1].weight, model[1].weight)


# ---------------------------------------------------------------- Keras, as the chapter states it
@pytest.fixture(scope="module")
def keras():
    from tlcourse.keras_zoo import import_keras

    return import_keras()


def test_keras_class_weight_looks_labels_up_with_default_one_and_divides_by_batch_size(keras):
    x, y = np.zeros((100, 3), "float32"), np.array([1] * 90 + [3] * 10)
    for cw in ({0: 0.5556, 1: 5.0}, {1: 0.5556, 3: 5.0}):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, kernel_initializer="zeros")])
        model.compile(optimizer=keras.optimizers.SGD(0.0),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        loss = model.fit(x, y, class_weight=cw, batch_size=100, epochs=1, verbose=0).history["loss"][0]
        w = np.array([cw.get(int(c), 1.0) for c in y])           # zero logits: every example costs log 4
        assert loss == pytest.approx(np.log(4) * w.mean(), rel=1e-4)


def test_keras_f1score_and_auc_names(keras):
    y_true = np.eye(2)[[0, 0, 1, 1]].astype("float32")
    y_pred = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]], "float32")
    per_class = keras.metrics.F1Score()
    per_class.update_state(y_true, y_pred)
    assert np.asarray(per_class.result()).shape == (2,)          # default average=None: one F1 per class
    macro = keras.metrics.F1Score(average="macro", threshold=0.5)
    macro.update_state(y_true, y_pred)
    assert float(macro.result()) == pytest.approx(f1_score([0, 0, 1, 1], [0, 0, 1, 0], average="macro"), abs=1e-5)
    sparse = keras.metrics.F1Score(average="macro")
    sparse.update_state(np.array([[0.0], [0.0], [1.0], [1.0]], "float32"), y_pred)  # integer labels: no error ...
    assert abs(float(sparse.result()) - float(macro.result())) > 0.05                  # ... and a wrong number
    first, second = keras.metrics.AUC(), keras.metrics.AUC(curve="PR")
    assert first.name.startswith("auc") and second.name.startswith("auc") and first.name != second.name
    assert keras.metrics.AUC(curve="PR", name="pr_auc").name == "pr_auc"


def test_keras_history_key_of_a_named_pr_auc(keras):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    y = (x[:, 0] > 1).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=[keras.metrics.AUC(curve="PR", name="pr_auc")])
    history = model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0).history
    assert "val_pr_auc" in history

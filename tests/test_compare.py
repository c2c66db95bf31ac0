import numpy as np
import pytest
import torch
from torch import nn

from tlcourse.compare import (Budget, hog_features, linear_svm, mean_sd, paired_gap,
                              train_early_stopped, tune_lr)


def _blobs(n, seed, noise=1.0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    return torch.tensor([[3.0, 0], [-3, 0], [0, 3]])[y] + noise * torch.randn(n, 2, generator=g), y


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.body(x))


def test_budget_is_hashable_and_validated():
    a, b = Budget((1e-3, 3e-3), max_steps=50), Budget((1e-3, 3e-3), max_steps=50)
    assert a == b and len({a, b}) == 1 and a.runs == 2
    assert Budget((1e-3,), max_steps=60) != a
    with pytest.raises(ValueError, match="lr_grid"):
        Budget((), max_steps=10)
    with pytest.raises(ValueError, match="max_steps"):
        Budget((1e-3,), max_steps=0)


def test_train_early_stopped_respects_the_cap_and_keeps_the_best_weights():
    x, y = _blobs(60, 0)
    xv, yv = _blobs(60, 1)
    torch.manual_seed(0)
    run = train_early_stopped(Tiny(), x, y, xv, yv, lr=1e-2, max_steps=45, eval_every=10, patience=50)
    assert run["steps_run"] == 45 and 0 <= run["best_step"] <= 45
    model = run["model"]
    assert not model.training
    from tlcourse.train import evaluate, make_loader
    assert evaluate(model, make_loader(xv, yv, 512))["accuracy"] == pytest.approx(run["val_accuracy"])
    assert run["val_accuracy"] > 0.8


def test_train_early_stopped_stops_on_patience_and_is_seeded():
    x, y = _blobs(30, 0)
    xv, yv = _blobs(30, 1)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(train_early_stopped(Tiny(), x, y, xv, yv, lr=1e-2, max_steps=10_000,
                                        eval_every=5, patience=2, seed=3))
    assert runs[0]["steps_run"] < 10_000, "patience should stop a run long before the cap"
    assert runs[0]["steps_run"] == runs[1]["steps_run"] and runs[0]["best_step"] == runs[1]["best_step"]
    for a, b in zip(runs[0]["model"].parameters(), runs[1]["model"].parameters()):
        assert torch.equal(a, b)


def test_train_early_stopped_freezes_blocks_and_their_batchnorm():
    x, y = _blobs(31, 0)  # 31 = 16 + 15: no batch of one; 33 would leave one and is merged
    xv, yv = _blobs(30, 1)
    net = Tiny()
    body = {k: v.clone() for k, v in net.body.state_dict().items()}
    train_early_stopped(net, x, y, xv, yv, lr=1e-2, max_steps=20, eval_every=5, batch_size=16,
                        frozen_blocks=["body"])
    for k, v in net.body.state_dict().items():
        assert torch.equal(v, body[k]), f"{k} moved in a frozen block"
    x, y = _blobs(33, 0)  # a last batch of one would crash BatchNorm in training mode
    train_early_stopped(Tiny(), x, y, xv, yv, lr=1e-2, max_steps=10, eval_every=5, batch_size=16)


def test_tune_lr_tries_the_grid_and_keeps_the_best_validation_run():
    x, y = _blobs(60, 0)
    xv, yv = _blobs(60, 1)
    budget = Budget((1e-5, 3e-2), max_steps=40, eval_every=10, patience=10)
    best = tune_lr(Tiny, x, y, xv, yv, budget, seed=0)
    assert set(best["tried"]) == {1e-5, 3e-2}
    assert best["lr"] == 3e-2 and best["val_accuracy"] == max(a for a, _ in best["tried"].values())
    again = tune_lr(Tiny, x, y, xv, yv, budget, seed=0, lr_grid=[best["lr"]])
    assert set(again["tried"]) == {3e-2} and again["val_accuracy"] == best["val_accuracy"]


def test_paired_gap_uses_the_paired_standard_error():
    a, b = np.array([0.50, 0.60, 0.70]), np.array([0.45, 0.56, 0.64])
    gap = paired_gap(a, b)
    d = a - b
    assert gap["mean"] == pytest.approx(d.mean())
    assert gap["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(3))
    assert gap["real"], "a consistent 5-point gap is real even though the arms' own sd is 10 points"
    noisy = paired_gap([0.5, 0.7, 0.6], [0.6, 0.5, 0.62])
    assert not noisy["real"]
    assert not paired_gap([0.7], [0.5])["real"], "one seed can never show a real gap"
    assert paired_gap([0.7, 0.7], [0.5, 0.5])["real"]
    with pytest.raises(ValueError):
        paired_gap([0.1, 0.2], [0.1])


def test_mean_sd_formats_percent():
    assert mean_sd([0.5, 0.6, 0.7]) == "60.0 ± 10.0"
    assert mean_sd([1.0, 2.0], scale=1, digits=2) == "1.50 ± 0.71"


def test_hog_features_shape_and_orientation():
    img = np.zeros((2, 1, 28, 28), dtype=np.float32)
    img[0, 0, :, 13:15] = 1.0  # a vertical bar
    img[1, 0, 13:15, :] = 1.0  # a horizontal bar
    f = hog_features(torch.from_numpy(img))
    assert f.shape == (2, 6 * 6 * 2 * 2 * 9) and f.dtype == np.float32
    assert not np.allclose(f[0], f[1]), "HOG must tell a vertical from a horizontal stroke"
    assert hog_features(img[:, 0], pixels_per_cell=7).shape == (2, 3 * 3 * 2 * 2 * 9)
    with pytest.raises(ValueError, match="grey"):
        hog_features(np.zeros((1, 3, 28, 28)))


def test_linear_svm_picks_c_on_validation():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(120, 5))
    y = (f[:, 0] > 0).astype(int)
    out = linear_svm(f[:60], y[:60], f[60:], y[60:], c_grid=(10.0, 0.01, 1.0))
    assert list(out["tried"]) == [0.01, 1.0, 10.0]
    assert out["val_accuracy"] == max(out["tried"].values()) and out["C"] in out["tried"]
    assert out["model"].score(f[60:], y[60:]) == pytest.approx(out["val_accuracy"])

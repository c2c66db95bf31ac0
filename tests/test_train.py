import pytest
import torch
from torch import nn

from tlcourse.train import History, evaluate, fit, make_loader, predict


def _blobs(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centres = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])
    return centres[y] + torch.randn(n, 2, generator=g), y


def test_fit_learns_separable_blobs():
    x, y = _blobs()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))
    h = fit(net, make_loader(x, y, 32, shuffle=True), epochs=5, val_loader=make_loader(x, y, 200),
            optimizer=torch.optim.Adam(net.parameters(), 1e-2), progress=False)
    assert h["val_acc"][-1] > 0.95
    assert h["train_loss"][-1] < h["train_loss"][0]
    assert evaluate(net, make_loader(x, y, 100))["accuracy"] == pytest.approx(h["val_acc"][-1])


def test_fit_is_reproducible_with_a_seed():
    x, y = _blobs()

    def run():
        torch.manual_seed(1)
        net = nn.Linear(2, 3)
        fit(net, make_loader(x, y, 16, shuffle=True, seed=5), epochs=2, progress=False,
            optimizer=torch.optim.SGD(net.parameters(), 0.1))
        return net.weight.detach().clone()

    assert torch.equal(run(), run())


def test_early_stopping_restores_best_weights():
    x, y = _blobs(200)
    xv, yv = _blobs(200, seed=1)
    yv = (yv + 1) % 3  # validation labels disagree with training: val loss rises as training fits
    torch.manual_seed(0)
    net = nn.Linear(2, 3)
    h = fit(net, make_loader(x, y, 16), epochs=30, val_loader=make_loader(xv, yv, 200), early_stopping=2,
            optimizer=torch.optim.SGD(net.parameters(), 0.5), progress=False)
    assert h.stopped_early and len(h) < 30
    best = min(h["val_loss"])
    assert evaluate(net, make_loader(xv, yv, 200))["loss"] == pytest.approx(best, rel=1e-5)
    assert h.best_epoch == 1 + h["val_loss"].index(best)


def test_mixed_precision_runs_on_cpu_with_bfloat16_and_stays_close():
    x, y = _blobs()
    weights = {}
    for amp in (False, True):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 3))
        fit(net, make_loader(x, y, 64), epochs=2, amp=amp, progress=False,
            optimizer=torch.optim.SGD(net.parameters(), 0.05))
        weights[amp] = torch.cat([p.detach().flatten() for p in net.parameters()])
    diff = (weights[True] - weights[False]).abs().max().item()
    assert 0 < diff < 0.05  # bfloat16 really ran (not bit-identical) and is close


def test_max_steps_and_bad_inputs():
    x, y = _blobs(64)
    net = nn.Linear(2, 3)
    opt = torch.optim.SGD(net.parameters(), 0.1)
    h = fit(net, make_loader(x, y, 8), epochs=5, optimizer=opt, max_steps=3, progress=False)
    assert len(h) == 1
    with pytest.raises(ValueError, match="val_loader"):
        fit(net, make_loader(x, y, 8), epochs=1, optimizer=opt, early_stopping=2)
    with pytest.raises(ValueError, match="empty"):
        fit(net, [], epochs=1, optimizer=opt)
    with pytest.raises(ValueError, match="same length"):
        make_loader(x, y[:10])


def test_diverging_loss_raises():
    x, y = _blobs(64)
    net = nn.Linear(2, 3)
    with pytest.raises(FloatingPointError, match="learning rate"):
        fit(net, make_loader(x * 1e30, y, 8), epochs=3, progress=False,
            optimizer=torch.optim.SGD(net.parameters(), 1e10))


def test_predict_matches_forward_and_history_extend():
    net = nn.Linear(2, 3).eval()
    x = torch.randn(10, 2)
    assert torch.allclose(predict(net, x, batch_size=3), net(x))
    a, b = History([{"epoch": 1}]), History([{"epoch": 1}, {"epoch": 2}])
    assert a.extend(b)["epoch"] == [1, 2, 3]


def test_importing_the_training_loop_in_a_kernel_prints_nothing():
    """tqdm.auto warns "IProgress not found" in a kernel without ipywidgets; that warning printed into
    every executed chapter of the book until tlcourse._progress silenced it (and only it)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import tlcourse.train, tlcourse.dann, tlcourse.distill, tlcourse.meta.maml, tlcourse.meta.protonets\n"
        "import transformers, tqdm.auto")])  # another library's tqdm.auto after tlcourse: silent too
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    assert nb.cells[0].outputs == []

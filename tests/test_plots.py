import matplotlib

matplotlib.use("Agg")  # in this process only; notebook kernels keep the inline backend

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tlcourse.plots import plot_confusion_matrix, plot_learning_curves  # noqa: E402
from tlcourse.train import History  # noqa: E402


def test_learning_curves_draw_one_line_per_run_and_stage_marks():
    a = History([{"epoch": 1, "val_acc": 0.5, "stage": 1}, {"epoch": 2, "val_acc": 0.7, "stage": 2}])
    b = History([{"epoch": 1, "val_acc": 0.4}, {"epoch": 2, "val_acc": 0.6}])
    fig = plot_learning_curves({"two-stage": a, "plain": b}, title="t")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")] == ["two-stage", "plain"]
    assert list(ax.get_lines()[0].get_ydata()) == [0.5, 0.7]
    assert any(line.get_linestyle() == ":" for line in ax.get_lines())  # the stage boundary
    assert ax.get_xlabel() == "epoch" and ax.get_title() == "t"
    with pytest.raises(ValueError, match="val_loader"):
        plot_learning_curves({"x": History([{"epoch": 1, "train_loss": 1.0}])})


def test_confusion_matrix_rows_are_recall():
    fig = plot_confusion_matrix([0, 0, 1, 1], [0, 1, 1, 1], classes=["a", "b"])
    values = np.array(fig.axes[0].images[0].get_array())
    np.testing.assert_allclose(values, [[0.5, 0.5], [0.0, 1.0]])
    with pytest.raises(ValueError, match="shape"):
        plot_confusion_matrix([0, 1], [0])


def test_filter_images_scale_each_filter_to_unit_range():
    import torch
    from tlcourse.plots import filter_images, plot_filters
    w = torch.randn(5, 3, 3, 3) * torch.arange(1, 6).view(5, 1, 1, 1)
    img = filter_images(w)
    assert img.shape == (5, 3, 3, 3)
    assert np.allclose(img.reshape(5, -1).min(1), 0) and np.allclose(img.reshape(5, -1).max(1), 1)
    assert np.allclose(img[2].transpose(2, 0, 1), (w[2] - w[2].min()).numpy() / (w[2].max() - w[2].min()).item())
    fig = plot_filters({"grey": torch.randn(16, 1, 5, 5), "rgb": torch.randn(20, 3, 3, 3)}, ncols=8)
    assert len(fig.axes) == 8 * (2 + 3)                    # 2 rows of grey filters, 3 of RGB
    with pytest.raises(ValueError, match="conv weights"):
        filter_images(np.zeros((3, 3)))
    import matplotlib.pyplot as plt
    plt.close(fig)

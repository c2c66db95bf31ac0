"""Tests of tlcourse.export on tiny models: ONNX round trips, sizes, the three quantisation modes
(with the per-channel maths on a depthwise convolution), calibration, latency and agreement, and
the LiteRT path for a small Keras model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tlcourse import export


def tiny_convnet(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(8),
                         nn.Flatten(), nn.Linear(8, 4)).eval()


def depthwise(scales) -> nn.Module:
    """A depthwise 3x3 convolution whose output channels have weights of very different sizes."""
    conv = nn.Conv2d(len(scales), len(scales), 3, padding=1, groups=len(scales), bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn_like(conv.weight) * torch.tensor(scales).view(-1, 1, 1, 1))
    return nn.Sequential(conv, nn.Flatten()).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    net = tiny_convnet()
    return net, export.export_onnx(net, torch.zeros(1, 3, 8, 8), folder / "net.onnx")


def test_export_round_trip_with_any_batch_size(exported):
    net, path = exported
    session = export.onnx_session(path)
    for n in (1, 7):
        x = torch.rand(n, 3, 8, 8)
        with torch.no_grad():
            want = net(x).numpy()
        assert np.allclose(export.onnx_logits(session, x), want, atol=1e-5)
    assert net.training is False


def test_export_restores_training_mode_and_checks_its_input(tmp_path):
    net = tiny_convnet().train()
    export.export_onnx(net, torch.zeros(2, 3, 8, 8), tmp_path / "a.onnx")
    assert net.training
    with pytest.raises(ValueError, match="batch dimension"):
        export.export_onnx(net, torch.zeros(()), tmp_path / "b.onnx")
    with pytest.raises(TypeError, match="nn.Module"):
        export.export_onnx(lambda x: x, torch.zeros(1, 3), tmp_path / "c.onnx")


def test_size_counts_external_weights(exported, tmp_path):
    net, path = exported
    weights = sum(p.numel() for p in net.parameters()) * 4
    size = export.model_size_bytes(path)
    assert size >= weights
    if path.with_name(path.name + ".data").exists():          # the exporter's default layout
        assert size > path.stat().st_size
    single = export.export_onnx(net, torch.zeros(1, 3, 8, 8), tmp_path / "one.onnx", external_data=False)
    assert not single.with_name(single.name + ".data").exists()
    assert export.model_size_bytes(single) == single.stat().st_size >= weights


def test_size_fails_loudly_without_its_weights(tmp_path):
    net = nn.Sequential(nn.Linear(256, 256)).eval()               # big enough for external data
    path = export.export_onnx(net, torch.zeros(1, 256), tmp_path / "m.onnx")
    data = path.with_name(path.name + ".data")
    if not data.exists():
        pytest.fail("the exporter kept a 256 KB weight in the graph file: external_data=True should move it out")
    data.unlink()
    with pytest.raises(FileNotFoundError, match="keeps weights in"):
        export.model_size_bytes(path)
    with pytest.raises(FileNotFoundError, match="no ONNX model"):
        export.model_size_bytes(tmp_path / "missing.onnx")


def test_dynamic_quantisation_int8_weights(tmp_path):
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3)).eval()
    src = export.export_onnx(net, torch.zeros(1, 64), tmp_path / "f.onnx", external_data=False)
    dst = export.quantise_dynamic(src, tmp_path / "d.onnx")
    ops = export.op_counts(dst)
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops
    assert export.model_size_bytes(dst) < 0.5 * export.model_size_bytes(src)   # 1 byte instead of 4 per weight
    x = torch.randn(32, 64)
    q, f = export.onnx_logits(export.onnx_session(dst), x), net(x).detach().numpy()
    assert np.abs(q - f).max() < 0.05 * np.abs(f).max()


def test_float16_halves_the_weights_and_keeps_float32_io(exported, tmp_path):
    net, path = exported
    big = nn.Sequential(nn.Linear(128, 128)).eval()
    src = export.export_onnx(big, torch.zeros(1, 128), tmp_path / "b.onnx")
    half = export.to_float16(src, tmp_path / "h.onnx")
    assert abs(export.model_size_bytes(src) / export.model_size_bytes(half) - 2) < 0.1
    x = torch.randn(4, 128)
    out = export.onnx_session(half).run(None, {"input": x.numpy()})[0]
    assert out.dtype == np.float32
    assert np.allclose(out, big(x).detach().numpy(), atol=2e-2)


def test_static_quantisation_is_full_integer_and_close(exported, tmp_path):
    net, path = exported
    calib = np.random.default_rng(0).random((16, 3, 8, 8), dtype=np.float32)
    dst = export.quantise_static(path, tmp_path / "s.onnx", calib)
    ops = export.op_counts(dst)
    assert ops.get("QuantizeLinear", 0) >= 2 and ops.get("DequantizeLinear", 0) >= 2
    assert not (tmp_path / "s.pre.onnx").exists()                       # the temporary file is gone
    x = np.random.default_rng(1).random((64, 3, 8, 8), dtype=np.float32)
    f = export.onnx_logits(export.onnx_session(path), x)
    q = export.onnx_logits(export.onnx_session(dst), x)
    assert np.abs(q - f).max() < 0.1 * np.abs(f).max() + 1e-3


def test_calibration_in_the_wrong_scale_widens_every_range(exported, tmp_path):
    # ranges measured on inputs 255x too large: each int8 step is ~255x too coarse for real inputs
    net, path = exported
    rng = np.random.default_rng(0)
    calib, x = rng.random((16, 3, 8, 8), dtype=np.float32), rng.random((64, 3, 8, 8), dtype=np.float32)
    prepared = export.prepare_for_quantisation(path, tmp_path / "p.onnx")
    right = export.quantise_static(prepared, tmp_path / "r.onnx", calib, preprocess=False)
    wrong = export.quantise_static(prepared, tmp_path / "w.onnx", 255 * calib, preprocess=False)
    f = export.onnx_logits(export.onnx_session(path), x)
    err = {name: np.abs(export.onnx_logits(export.onnx_session(p), x) - f).mean() for name, p in
           (("right", right), ("wrong", wrong))}
    assert err["wrong"] > 10 * err["right"]


def dequantised_weights(path) -> dict[str, np.ndarray]:
    """Every int8 weight of a QDQ model, dequantised: (q - zero_point) * scale, per axis if any."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    out = {}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in init and init[node.input[0]].dtype == np.int8:
            q, scale, zero = (init[n] for n in node.input[:3])
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            if scale.ndim:
                shape[axis] = -1
            out[node.input[0]] = (q.astype(np.float32) - zero.reshape(shape)) * scale.reshape(shape)
    return out


def test_per_channel_scales_save_the_small_channels(tmp_path):
    # Krishnamoorthi (2018): one scale per tensor rounds a channel 1000x smaller than the largest to zero
    net = depthwise([1.0, 1e-3])
    w = net[0].weight.detach().numpy()
    src = export.export_onnx(net, torch.zeros(1, 2, 4, 4), tmp_path / "dw.onnx", external_data=False)
    x = np.random.default_rng(0).random((8, 2, 4, 4), dtype=np.float32)
    rel = {}
    for per_channel in (True, False):
        dst = export.quantise_static(src, tmp_path / f"dw{per_channel}.onnx", x, per_channel=per_channel)
        (deq,) = dequantised_weights(dst).values()
        rel[per_channel] = [float(np.abs(deq[c] - w[c]).mean() / np.abs(w[c]).mean()) for c in range(2)]
    assert max(rel[True]) < 0.02                     # each channel keeps its own 256 levels
    assert rel[False][0] < 0.02 and rel[False][1] > 0.9   # the small channel is rounded (almost) to zero


def test_calibration_reader_batches_then_stops():
    reader = export.ArrayCalibrationReader(np.zeros((5, 3)), "x", batch_size=2)
    sizes = []
    while (batch := reader.get_next()) is not None:
        sizes.append(len(batch["x"]))
    assert sizes == [2, 2, 1] and len(reader) == 3
    reader.rewind()
    assert reader.get_next()["x"].dtype == np.float32
    with pytest.raises(ValueError, match="non-empty"):
        export.ArrayCalibrationReader(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="batch_size"):
        export.ArrayCalibrationReader(np.zeros((2, 3)), batch_size=0)


def test_median_latency_warms_up_then_times_each_call():
    calls = []
    ms = export.median_latency_ms(lambda: calls.append(1), warmup=3, repeats=5)
    assert len(calls) == 8 and ms >= 0
    with pytest.raises(ValueError, match="repeats"):
        export.median_latency_ms(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        export.median_latency_ms(lambda: None, warmup=1.5)


def test_top1_agreement():
    a = np.array([[3.0, 1.0], [0.0, 2.0], [1.0, 0.0]])
    assert export.top1_agreement(a, a) == 1.0
    assert export.top1_agreement(a, -a) == 0.0
    assert export.top1_agreement(torch.tensor(a), a[[0, 2, 1]]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="same shape"):
        export.top1_agreement(a, a[:2])


def test_session_rejects_bad_arguments(exported, tmp_path):
    with pytest.raises(ValueError, match="threads"):
        export.onnx_session(exported[1], threads=0)
    with pytest.raises(FileNotFoundError, match="export one first"):
        export.onnx_session(tmp_path / "nothing.onnx")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_litert_converts_a_keras_model_in_every_mode():
    from tlcourse.keras_zoo import import_keras

    keras = import_keras()
    assert keras.backend.backend() == "tensorflow", "to_tflite needs Keras on its TensorFlow backend"
    keras.utils.set_random_seed(0)
    # LiteRT leaves weight tensors under 1,024 values in float: the Dense kernel here has 36,864
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(16, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(3)])
    x = np.random.default_rng(0).random((6, 8, 8, 3), dtype=np.float32)
    want = model.predict(x, verbose=0)
    sizes = {}
    for mode in export.TFLITE_MODES:
        blob = export.to_tflite(model, mode, representative_images=x if mode == "int8" else None)
        out = export.litert_outputs(export.litert_interpreter(blob), x)
        assert np.abs(out - want).max() < 0.1 * np.abs(want).max() + 1e-3, mode
        sizes[mode] = len(blob)
    assert sizes["dynamic"] < 0.4 * sizes["float32"] and sizes["int8"] < 0.4 * sizes["float32"]
    assert 0.4 < sizes["float16"] / sizes["float32"] < 0.6
    import tensorflow as tf

    with pytest.warns(Warning, match="deprecated"):          # the chapter says so: use ai_edge_litert
        tf.lite.Interpreter(model_content=blob)
    with pytest.raises(ValueError, match="representative_images"):
        export.to_tflite(model, "int8")
    with pytest.raises(ValueError, match="mode must be"):
        export.to_tflite(model, "int4")

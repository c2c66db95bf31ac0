"""Checks for exercise T17 (the mobile photo app): the true download size of an exported model, a
full-integer quantisation calibrated on representative training photos and re-checked on the test
photos, and a prediction about a calibration set in the wrong pixel scale.

Every ``collect`` runs in the student's kernel and returns plain data; every ``grade`` runs in the
trusted process and rebuilds what it compares with: the photos from
:func:`tlcourse.mobile_demo.exercise_photos`, the float model from
:func:`tlcourse.mobile_demo.fit_on_device_classifier` (deterministic, on the CPU), its parameter
count from the architecture. The student's quantised model crosses as the bytes of its ONNX file
(data, not code) and is run here by ONNX Runtime on the grader's own test photos.

- **q1** (2 points) ``float_size_mb``: megabytes (10**6 bytes) of everything the exported float
  model needs. *collect* also measures the files of ``float_file`` (graph plus the external data it
  names, :func:`tlcourse.export.model_size_bytes`); *grade* checks that they hold the exercise's
  model (4 bytes per parameter of the cut network, whose count is rebuilt here from the
  architecture, plus at most 5 % and a graph under 150 kB) and that ``float_size_mb`` equals
  their size to 0.2 %. The graph file alone (the
  weights sit in ``float32.onnx.data``), mebibytes, bits, bytes or kilobytes, and the whole
  EfficientNet's parameters are recognised and named.
- **q2** (2 points) ``calibration_images``, ``static_file``, ``static_agreement``,
  ``static_test_acc``. *grade*: the calibration photos are in [0, 1], include no test photo, and
  are training photos; the model is full integer (``QuantizeLinear``, no ``DynamicQuantizeLinear``,
  no float16) with per-channel convolution weights; run here on the 300 test photos, it agrees
  with the float model on at least 80 % of them; the two reported numbers match what the grader
  measures to one photo (the usual swaps, accuracy for agreement and the float model's accuracy
  for the quantised one's, are named).
- **q3** (1 point) ``answer_q3``: a choice, checked by letter.
"""
from __future__ import annotations

import functools
import hashlib
import numbers
from pathlib import Path

import numpy as np
import torch

from tlcourse.grading import Question
from tlcourse.grading.answers import NOT_PLAIN as _NOT_PLAIN, shown as _shown, scalar as _scalar
from tlcourse.grading.choice import choice_question

BLOCK = 4               # the exercise cuts EfficientNet-Lite0 after _blocks.4
N_CLASSES = 10
MIN_AGREEMENT = 0.80
_MB = 1e6


# ---------------------------------------------------------------- references (trusted side)
@functools.lru_cache(maxsize=1)
def parameter_counts() -> dict[str, int]:
    """Parameters of the exercise's cut network and of the whole EfficientNet-Lite0 (architecture only)."""
    from torch import nn

    from tlcourse import zoo
    from tlcourse.mobile_demo import OnDeviceClassifier, block_channels

    whole = zoo.efficientnet_lite0(pretrained=False)
    cut = OnDeviceClassifier(whole, BLOCK, nn.Linear(block_channels(whole, BLOCK) * 4, N_CLASSES))
    return {"cut": sum(p.numel() for p in cut.parameters()), "whole": sum(p.numel() for p in whole.parameters())}


@functools.lru_cache(maxsize=1)
def reference() -> dict:
    """The exercise's photos and the float model's test logits, rebuilt here."""
    from tlcourse import zoo
    from tlcourse.mobile_demo import exercise_photos, fit_on_device_classifier

    photos = exercise_photos()
    (x_train, y_train), (x_test, y_test) = photos["train"], photos["test"]
    model = fit_on_device_classifier(zoo.efficientnet_lite0(), x_train, y_train, block=BLOCK)
    with torch.inference_mode():
        logits = model(x_test).numpy()
    return {"x_train": x_train.numpy(), "x_test": x_test.numpy(), "y_test": y_test, "float_logits": logits,
            "train_rows": {_row_key(r) for r in x_train.numpy()}, "test_rows": {_row_key(r) for r in x_test.numpy()}}


def _row_key(image: np.ndarray) -> str:
    # photos are compared as float32 bytes, so a copy or a slice of x_train matches exactly
    return hashlib.sha1(np.ascontiguousarray(image, dtype=np.float32).tobytes()).hexdigest()


# ---------------------------------------------------------------- q1
def _collect_size(ns, seed):
    from tlcourse.export import model_size_bytes

    out = {"float_size_mb": _scalar(ns["float_size_mb"])}
    path = ns.get("float_file")
    try:
        out["measured_bytes"] = int(model_size_bytes(path))
        out["graph_bytes"] = int(Path(path).stat().st_size)
    except Exception as exc:  # noqa: BLE001 - reported to the student
        out["error"] = (f"the exported model float_file could not be measured ({type(exc).__name__}: "
                        f"{str(exc)[:150]}); "
                        "run the setup cell again and leave its files in place")
    return out


def _grade_size(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    assert "error" not in answer, answer.get("error")
    got = answer["float_size_mb"]
    assert not isinstance(got, str), f"float_size_mb should be a number of megabytes, got {_shown(got)}"
    counts = parameter_counts()
    measured, graph = answer["measured_bytes"] / _MB, answer["graph_bytes"] / _MB
    # the files must hold the exercise's model: float32 weights of the cut network and a small graph
    assert 4.0 * counts["cut"] / _MB <= measured <= 4.2 * counts["cut"] / _MB + 0.15, (
        f"float_file holds {measured:.3f} MB, not the exercise's float32 model ({counts['cut']:,} parameters): run the "
        "setup cell again without changing it")
    close = lambda value: abs(value - measured) <= 0.002 * measured  # noqa: E731
    if close(got):
        return
    if abs(got - graph) <= 0.002 * max(graph, 1e-3):
        raise AssertionError(
            f"float_size_mb = {got:.3f} MB is the graph file alone: the exporter wrote the weights to a second file "
            "next to it (float32.onnx.data), which the app must ship too; add the sizes of both files")
    if close(got * 1.048576):
        raise AssertionError(f"float_size_mb = {got:.3f} is in mebibytes (2**20 bytes); give megabytes, bytes / 1e6")
    if close(got / 8):
        raise AssertionError(f"float_size_mb = {got:.3f} is in megabits; give megabytes (bytes / 1e6)")
    if close(got / 1e3) or close(got / 1e6):
        raise AssertionError(f"float_size_mb = {got:g} is not in megabytes: divide the number of bytes by 1e6")
    if 3.9 * counts["whole"] / _MB <= got <= 4.6 * counts["whole"] / _MB:
        raise AssertionError(
            f"float_size_mb = {got:.3f} MB is about the whole EfficientNet-Lite0's float32 weights; the exported model "
            f"stops after block {BLOCK}, so measure the files you exported")
    raise AssertionError(
        f"float_size_mb = {got:.3f} MB, but the files of the exported model take {measured:.3f} MB: add the bytes of "
        "every file ONNX Runtime reads for float_file (the graph and its external weights) and divide by 1e6")


# ---------------------------------------------------------------- q2
def _collect_static(ns, seed):
    out = {}
    calib = ns["calibration_images"]
    if isinstance(calib, torch.Tensor):
        calib = calib.detach().cpu().numpy()
    if isinstance(calib, np.ndarray) and calib.dtype.kind in "iuf" and calib.size <= 500 * 3 * 64 * 64:
        out["calibration_images"] = np.ascontiguousarray(calib, dtype=np.float32)
    else:
        out["calibration_images"] = f"{_NOT_PLAIN}{type(calib).__name__}>"
    path = ns["static_file"]
    try:
        data = Path(path).read_bytes() if isinstance(path, (str, Path)) and Path(path).is_file() else None
    except OSError:
        data = None
    out["static_file"] = np.frombuffer(data, dtype=np.uint8).copy() if data else f"missing: {str(path)[:200]}"
    out["static_agreement"] = _scalar(ns["static_agreement"])
    out["static_test_acc"] = _scalar(ns["static_test_acc"])
    return out


def _check_calibration(calib, ref) -> None:
    assert not isinstance(calib, str), (
        f"calibration_images should be the array of photos you calibrated with (N, 3, 64, 64), got {_shown(calib)}")
    assert calib.ndim == 4 and calib.shape[1:] == (3, 64, 64) and len(calib) >= 1, (
        f"calibration_images should have shape (N, 3, 64, 64), got {calib.shape}")
    if calib.max() > 1.5:
        raise AssertionError(
            f"calibration_images go up to {calib.max():.0f}: they are in the camera's 0-255 scale, but the model "
            "expects photos in [0, 1]; calibrate on photos preprocessed exactly as at inference")
    keys = [_row_key(r) for r in calib]
    leaked = sum(k in ref["test_rows"] for k in keys)
    if leaked:
        raise AssertionError(
            f"calibration_images include {leaked} test photo(s): the test photos take part in no decision, and the "
            "calibration fixes every activation range of the model; calibrate on training photos")
    strangers = sum(k not in ref["train_rows"] for k in keys)
    if strangers:
        raise AssertionError(
            f"{strangers} of the {len(keys)} calibration images are not training photos: calibrate on representative "
            "photos (a subset of x_train, no labels needed), not on noise or altered images")


def _session(model_bytes: np.ndarray):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = 1, 1, 3
    return ort.InferenceSession(model_bytes.tobytes(), options, providers=["CPUExecutionProvider"])


def _check_model(model_bytes) -> None:
    import onnx
    from onnx import numpy_helper

    assert not isinstance(model_bytes, str), (
        f"static_file should be the path of your quantised .onnx file; {model_bytes} (the file was not found)")
    try:
        model = onnx.load_from_string(model_bytes.tobytes())
    except Exception as exc:  # noqa: BLE001 - reported to the student
        raise AssertionError(
            f"static_file is not an ONNX model ({type(exc).__name__}); give the quantised .onnx file") from None
    ops = {n.op_type for n in model.graph.node}
    if "DynamicQuantizeLinear" in ops or "ConvInteger" in ops:
        raise AssertionError(
            "static_file is dynamic-range quantised (DynamicQuantizeLinear / ConvInteger): the question asks for full "
            "integer quantisation, whose activation ranges are calibrated on the photos (quantize_static)")
    floats16 = any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    if floats16 and "QuantizeLinear" not in ops:
        raise AssertionError("static_file is a float16 model: the question asks for full integer (int8) quantisation")
    if "QuantizeLinear" not in ops:
        raise AssertionError("static_file has no QuantizeLinear node: it is not quantised; give the quantised file")
    init = {t.name: t for t in model.graph.initializer}
    weight_scales = [numpy_helper.to_array(init[n.input[1]]).size for n in model.graph.node
                     if n.op_type == "DequantizeLinear" and n.input[0] in init
                     and init[n.input[0]].data_type == onnx.TensorProto.INT8 and len(init[n.input[0]].dims) == 4]
    assert weight_scales, "static_file has no int8 convolution weights: quantise the weights too"
    if max(weight_scales) == 1:
        raise AssertionError(
            "the convolution weights have one scale per tensor: depthwise convolutions have channels whose weights "
            "differ by orders of magnitude, and a shared scale rounds the small ones to zero; use per_channel=True")


def _grade_static(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    ref = reference()
    _check_calibration(answer["calibration_images"], ref)
    _check_model(answer["static_file"])
    session = _session(answer["static_file"])
    logits = session.run(None, {session.get_inputs()[0].name: ref["x_test"]})[0]
    n = len(ref["y_test"])
    agreement = float((logits.argmax(1) == ref["float_logits"].argmax(1)).mean())
    accuracy = float((logits.argmax(1) == ref["y_test"]).mean())
    float_accuracy = float((ref["float_logits"].argmax(1) == ref["y_test"]).mean())
    assert agreement >= MIN_AGREEMENT, (
        f"your quantised model agrees with the float model on only {100 * agreement:.0f} % of the test photos "
        f"(a good full-integer model reaches {100 * MIN_AGREEMENT:.0f} % or more here): check that the calibration "
        "photos are preprocessed as at inference and that the weights are per channel")
    for key in ("static_agreement", "static_test_acc"):
        assert not isinstance(answer[key], str), f"{key} should be a float between 0 and 1, got {_shown(answer[key])}"
    got_agree, got_acc = answer["static_agreement"], answer["static_test_acc"]
    tol = 1.01 / n
    if abs(got_agree - agreement) > tol:
        if abs(got_agree - accuracy) <= tol:
            raise AssertionError(
                "static_agreement equals the quantised model's accuracy: agreement compares its predicted classes with "
                "the float model's predictions (float_logits), not with the labels")
        if abs(got_agree - 100 * agreement) <= 100 * tol:
            raise AssertionError("static_agreement looks like a percentage; give a fraction between 0 and 1")
        raise AssertionError(
            f"static_agreement = {got_agree:.4f}, but on the {n} test photos the grader measures {agreement:.4f}: "
            "the share "
            "of photos on which the quantised and the float model pick the same class")
    if abs(got_acc - accuracy) > tol:
        if abs(got_acc - float_accuracy) <= tol and abs(float_accuracy - accuracy) > tol:
            raise AssertionError(
                "static_test_acc is the float model's accuracy: score the quantised model's predictions")
        if abs(got_acc - 100 * accuracy) <= 100 * tol:
            raise AssertionError("static_test_acc looks like a percentage; give a fraction between 0 and 1")
        raise AssertionError(
            f"static_test_acc = {got_acc:.4f}, but the grader measures {accuracy:.4f} for your quantised model "
            f"on the {n} "
            "test photos (y_test)")


# ---------------------------------------------------------------- q3
Q3_CHOICES = {
    "a": "About the same accuracy: calibration only sets ranges, and the weights are unchanged.",
    "b": "Close to chance: every activation range is far too wide, so the real activations fall into a "
         "handful of the 256 integer levels.",
    "c": "Slightly better: wider ranges never clip an activation.",
    "d": "quantize_static raises an error, because the calibration inputs are outside [0, 1].",
}
_Q3_ANSWER = "b"
_Q3_FEEDBACK = {
    "a": "the ranges decide what the integers mean: with a step 255 times too coarse, most activations round to "
         "the same few values. Look at the chapter's step 3.",
    "c": "never clipping is not the point: a step size 255 times too coarse destroys far more than occasional "
         "clipping, as the chapter's step 3 measures.",
    "d": "the quantiser does not know what range your inputs should have; the mistake is silent.",
}

QUESTIONS = [
    Question("q1", points=2, names=("float_size_mb",), collect=_collect_size, grade=_grade_size,
             hint="The exporter wrote two files, float32.onnx and float32.onnx.data: add their sizes "
                  "(or tlcourse.export.model_size_bytes(float_file)) and divide by 1e6."),
    Question("q2", points=2, names=("calibration_images", "static_file", "static_agreement", "static_test_acc"),
             collect=_collect_static, grade=_grade_static,
             hint="calibration_images = x_train[:n_calibration].numpy(); "
                  "export.quantise_static(float_file, folder / 'static.onnx', calibration_images); then compare "
                  "the argmax of its logits with float_logits (agreement) and with y_test (accuracy)."),
    choice_question("q3", "answer_q3", choices=Q3_CHOICES, answer=_Q3_ANSWER, feedback=_Q3_FEEDBACK, points=1,
                    hint="What does a scale s = (r_max - r_min) / 255 become when r_max is 255 times too large?"),
]

"""Export a PyTorch model for a phone: ONNX, three kinds of quantisation, size, latency, agreement.

A model trained in PyTorch reaches a device as a file that a small runtime executes. This module
takes the path the installed libraries support offline, end to end:

- :func:`export_onnx`: ``torch.onnx.export`` (the ``torch.export``-based exporter, the default
  since PyTorch 2.9; it needs ``onnxscript``). By default the exporter writes the weights to a
  second file, ``<name>.onnx.data``: :func:`model_size_bytes` counts both files.
- Quantisation with ``onnxruntime.quantization``, which stores a real number ``r`` as an 8-bit
  integer ``q`` through a scale ``s`` and a zero point ``z`` (Jacob et al., 2018):

      r ≈ s (q - z),   s = (r_max - r_min) / (q_max - q_min),   z = q_min - round(r_min / s)

  * :func:`quantise_dynamic`: weights stored as int8; each activation's range is measured at run
    time on the input at hand. No data needed. ONNX Runtime turns convolutions into
    ``ConvInteger``, which has no fast CPU kernel: it suits Linear/MatMul-heavy models (BERT,
    LSTMs), not convnets, which is why ``op_types`` can restrict it.
  * :func:`quantise_static` ("full integer"): weights and activations int8, every activation
    range fixed beforehand by running a **representative dataset** (calibration images) through
    the float model. Written in the QDQ format (QuantizeLinear/DequantizeLinear pairs that the
    runtime fuses into int8 kernels), weights per output channel.
  * :func:`to_float16`: every float32 initialiser and op in float16; inputs and outputs stay
    float32 (``keep_io_types``). Half the size; faster only where the hardware computes in float16
    (phone GPUs and NPUs), not on most desktop CPUs.
- :func:`onnx_session`, :func:`onnx_logits`: ONNX Runtime on the CPU with a fixed thread count.
- :func:`median_latency_ms`: warm-up, then the median of timed calls of one function (batch 1 is
  what a camera app waits for).
- :func:`top1_agreement`: how often two models give the same class, the first check after any
  conversion (then the accuracy on labelled test images).
- :func:`to_tflite`, :func:`litert_interpreter`: the LiteRT path for Keras models
  (``tf.lite.TFLiteConverter`` and ``ai_edge_litert``), the same three quantisation modes.

>>> import tempfile, os
>>> net = torch.nn.Sequential(torch.nn.Linear(4, 3)).eval()
>>> folder = tempfile.mkdtemp()
>>> path = export_onnx(net, torch.zeros(1, 4), os.path.join(folder, "net.onnx"))
>>> logits = onnx_logits(onnx_session(path), np.ones((5, 4), np.float32))
>>> bool(np.allclose(logits, net(torch.ones(5, 4)).detach().numpy(), atol=1e-5))
True
"""
from __future__ import annotations

import contextlib
import logging
import os
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["export_onnx", "model_size_bytes", "quantise_dynamic", "prepare_for_quantisation",
           "quantise_static", "to_float16", "ArrayCalibrationReader", "onnx_session", "onnx_logits",
           "median_latency_ms",
           "top1_agreement", "op_counts", "to_tflite", "litert_interpreter", "litert_outputs", "TFLITE_MODES"]


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | os.PathLike, *,
                dynamic_batch: bool = True, external_data: bool = True) -> Path:
    """Export ``model`` (in eval mode) to ONNX with the ``torch.export``-based exporter.

    ``example``: one input batch (N, ...) that fixes every dimension except, with
    ``dynamic_batch``, the first one, so the same file runs batch 1 on the phone and large batches
    for evaluation. Input and output are named ``"input"`` and ``"logits"``. With
    ``external_data=True`` (the exporter's default) the weights go to ``<path>.data`` next to the
    graph; pass ``False`` for one self-contained file. The model's train/eval mode is restored.
    Returns ``Path(path)``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example, torch.Tensor) or example.ndim < 1 or len(example) < 1:
        raise ValueError("example must be a tensor with a batch dimension, e.g. torch.zeros(1, 3, 64, 64)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            # a batch of one example specialises the symbolic batch size; that is harmless here
            warnings.filterwarnings("ignore", message=".*specializ.*")
            program = torch.onnx.export(model, (example,), dynamo=True, input_names=["input"],
                                        output_names=["logits"], dynamic_shapes=shapes,
                                        external_data=external_data, verbose=False)
            program.save(str(path), external_data=external_data)
    finally:
        model.train(was_training)
    return path


def model_size_bytes(path: str | os.PathLike) -> int:
    """Bytes on disk of an ONNX model: the graph file plus every external-data file it names.

    ``os.path.getsize`` of the ``.onnx`` file alone under-counts a model whose weights were saved
    as external data (the default of ``torch.onnx.export``): the graph is a few kilobytes.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX model at {path}")
    graph = onnx.load(str(path), load_external_data=False).graph
    extra = {entry.value for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
             for entry in t.external_data if entry.key == "location"}
    missing = [loc for loc in extra if not (path.parent / loc).is_file()]
    if missing:
        raise FileNotFoundError(f"{path.name} keeps weights in {missing}, which are not next to it")
    return path.stat().st_size + sum((path.parent / loc).stat().st_size for loc in extra)


def op_counts(path: str | os.PathLike) -> dict[str, int]:
    """How many nodes of each ONNX operator type the graph holds (e.g. ``{"Conv": 34, ...}``)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def quantise_dynamic(src: str | os.PathLike, dst: str | os.PathLike,
                     op_types: Sequence[str] | None = None) -> Path:
    """Dynamic-range quantisation (``onnxruntime.quantization.quantize_dynamic``, int8 weights).

    Weights are stored as signed 8-bit integers (one scale per tensor); activations are
    quantised on the fly with the range of the current input. ``op_types`` restricts it, e.g.
    ``["MatMul", "Gemm"]``; ``None`` quantises every supported op, convolutions included.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _check_src(src)
    with _quiet_advice():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                         op_types_to_quantize=list(op_types) if op_types else None)
    return Path(dst)


class ArrayCalibrationReader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over an array of inputs (N, ...).

    ``get_next()`` returns ``{input_name: images[i:i + batch_size]}`` until the array is used up,
    then ``None``; ``rewind()`` starts again. The images must be preprocessed exactly as at
    inference time: they set every activation range of the quantised model.
    """

    def __init__(self, images: np.ndarray, input_name: str = "input", batch_size: int = 1):
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.ndim < 2 or len(images) == 0:
            raise ValueError(f"calibration images must be a non-empty batch (N, ...), got shape {images.shape}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.images, self.input_name, self.batch_size = images, input_name, batch_size
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.images):
            return None
        batch = self.images[self._next:self._next + self.batch_size]
        self._next += self.batch_size
        return {self.input_name: batch}

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)


def prepare_for_quantisation(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """ONNX Runtime's recommended step before static quantisation (``quant_pre_process``).

    Symbolic shape inference and graph optimisations, among them folding each BatchNorm into the
    convolution before it, so that one scale covers the fused weights. Writes one self-contained
    file (external data folded in).
    """
    from onnxruntime.quantization import quant_pre_process

    _check_src(src)
    quant_pre_process(str(src), str(dst))
    return Path(dst)


def quantise_static(src: str | os.PathLike, dst: str | os.PathLike, calibration_images: np.ndarray, *,
                    per_channel: bool = True, preprocess: bool = True) -> Path:
    """Full-integer (static) quantisation with a representative dataset, QDQ format.

    ``calibration_images`` (N, ...) float32, preprocessed as at inference: the MinMax calibrator
    records each activation's range on them, so unrepresentative images (noise, another camera,
    another pixel scale) give wrong ranges and a worse model, silently. Weights are int8 (one scale
    per output channel when ``per_channel``, else one per tensor), activations uint8.
    ``preprocess`` first runs :func:`prepare_for_quantisation` into a temporary file next to
    ``dst``; pass ``False`` for a model that has been through it already.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    _check_src(src)
    dst = Path(dst)
    source = Path(src)
    tmp = dst.with_name(dst.stem + ".pre.onnx")
    try:
        if preprocess:
            source = prepare_for_quantisation(source, tmp)
        name = _input_name(source)
        quantize_static(str(source), str(dst), ArrayCalibrationReader(calibration_images, name),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def to_float16(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """The model with float16 weights and arithmetic, float32 inputs and outputs.

    Uses ``onnxruntime.transformers.float16.convert_float_to_float16`` (shipped with
    onnxruntime; ``onnxconverter_common``, the other usual home of this function, is not needed)
    with ``keep_io_types=True``, so callers still feed float32 images. Saved as one file.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    _check_src(src)
    half = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(half, str(dst))
    return Path(dst)


TFLITE_MODES = ("float32", "dynamic", "float16", "int8")


def to_tflite(keras_model, mode: str = "float32", representative_images: np.ndarray | None = None) -> bytes:
    """Convert a Keras model with LiteRT's converter (``tf.lite.TFLiteConverter``, TensorFlow 2.21).

    ``mode``: ``"float32"`` (no optimisation), ``"dynamic"`` (``optimizations = [tf.lite.Optimize.DEFAULT]``:
    int8 weights, float activations), ``"float16"`` (the same plus
    ``target_spec.supported_types = [tf.float16]``) or ``"int8"`` (the same plus a
    ``representative_dataset`` that yields ``representative_images`` one at a time: int8
    activations too, float32 input and output). Returns the flatbuffer's bytes; run it with
    :func:`litert_interpreter`. Needs TensorFlow and a Keras model on the TensorFlow backend; a
    PyTorch model would need ``ai-edge-torch``, which the course does not install.
    """
    import tensorflow as tf

    if mode not in TFLITE_MODES:
        raise ValueError(f"mode must be one of {TFLITE_MODES}, got {mode!r}")
    if mode == "int8" and (representative_images is None or len(representative_images) == 0):
        raise ValueError("mode='int8' needs representative_images: a few hundred inputs preprocessed as at inference")
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        images = np.ascontiguousarray(representative_images, dtype=np.float32)
        converter.representative_dataset = lambda: ([images[i:i + 1]] for i in range(len(images)))
    return converter.convert()


def litert_interpreter(model_bytes: bytes, threads: int = 1):
    """A LiteRT interpreter (``ai_edge_litert.interpreter.Interpreter``, the successor of the
    deprecated ``tf.lite.Interpreter``) for a ``.tflite`` model, tensors allocated."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=bytes(model_bytes), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def litert_outputs(interpreter, x: np.ndarray) -> np.ndarray:
    """The first output of a LiteRT interpreter for each input of ``x`` (N, ...), one at a time."""
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for item in np.ascontiguousarray(x, dtype=np.float32):
        interpreter.set_tensor(inp["index"], item[None].astype(inp["dtype"]))
        interpreter.invoke()
        rows.append(interpreter.get_tensor(out["index"])[0].astype(np.float32))
    return np.stack(rows)


def onnx_session(path: str | os.PathLike, threads: int = 1):
    """An ``onnxruntime.InferenceSession`` on the CPU with ``threads`` intra-op threads, one
    inter-op thread and sequential execution: the setting in which latencies are comparable."""
    import onnxruntime as ort

    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    _check_src(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(session, x, batch_size: int = 256) -> np.ndarray:
    """Outputs (N, C) of an ONNX Runtime session on inputs ``x`` (N, ...), in batches, float32."""
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if len(x) == 0:
        raise ValueError("x is empty")
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + batch_size]})[0]
                           for i in range(0, len(x), batch_size)]).astype(np.float32)


def median_latency_ms(call: Callable[[], object], warmup: int = 10, repeats: int = 50) -> float:
    """Median wall-clock milliseconds of ``call()`` after ``warmup`` untimed calls.

    The first calls allocate memory and pick kernels, so they are not timed; the median ignores
    the occasional call that another process slowed down. Time one input (batch 1) for an app
    that classifies one photo at a time.

    >>> median_latency_ms(lambda: sum(range(100)), warmup=1, repeats=5) > 0
    True
    """
    for label, value, low in (("warmup", warmup, 0), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def top1_agreement(logits_a, logits_b) -> float:
    """Share of rows on which two models' logits (N, C) have the same argmax.

    >>> top1_agreement(np.array([[1, 0], [0, 1]]), np.array([[2, 1], [1, 0]]))
    0.5
    """
    a, b = (np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v) for v in (logits_a, logits_b))
    if a.shape != b.shape or a.ndim != 2 or len(a) == 0:
        raise ValueError(f"expected two non-empty (N, C) arrays of the same shape, got {a.shape} and {b.shape}")
    return float((a.argmax(1) == b.argmax(1)).mean())


@contextlib.contextmanager
def _quiet_advice():
    """Silence onnxruntime.quantization's root-logger advice to run quant_pre_process (a warning
    that is printed even where the step is not needed, e.g. before dynamic quantisation)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _check_src(path) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(f"no ONNX model at {path}; export one first with export_onnx()")


def _input_name(path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input[0].name

"""A model-zoo table built from the libraries' own APIs, and a CPU latency measurement.

Interviewers ask which pretrained backbone to pick; the honest answer is a table of facts that the
installed libraries record (parameters, input size, multiply-adds, the accuracy their authors
measured) next to the latency *you* measure on *your* hardware. Everything here reads those facts
from the installed versions, so the table cannot drift from what ``pip`` installed:

- :func:`torchvision_weights_table`: every classification weight of ``torchvision.models``
  (``list_models``, ``get_model_weights``, ``weights.meta`` and ``weights.transforms()``), read
  without downloading a single weight file.
- :func:`keras_applications_table`: ``keras.applications`` constructors with ``weights=None``
  (random initialisation, nothing downloaded) and ``count_params``.
- :func:`transformers_config_table`: Hugging Face config classes, models built on the ``meta``
  device (shapes without memory), so parameters and FLOPs cost no initialisation.
- :func:`count_flops`: FLOPs of one forward pass with ``torch.utils.flop_counter.FlopCounterMode``.
  It counts a multiply-add as **two** FLOPs; torchvision's ``meta["_ops"]`` ("GFLOPS" in its
  docs) counts one per multiply-add, so the two differ by a factor of about 2.
- :func:`measure_latency`: median wall-clock time per forward pass after a warm-up, in eval mode
  under ``torch.inference_mode``, on one thread, for several batch sizes.

Latency depends on the weights' *shape*, not their values, so randomly initialised architectures
cost what the pretrained ones cost (barring denormal floats); accuracy, on the other hand, exists
only where a library records it (torchvision's ``meta["_metrics"]``).

>>> row = torchvision_weights_table(["resnet50"]).loc["resnet50"]
>>> int(row["parameters"]), row["weights"]
(25557032, 'IMAGENET1K_V2')
"""
from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

__all__ = ["parameter_count", "torchvision_weights_table", "keras_applications_table",
           "transformers_config_table", "config_reference_checkpoint", "count_flops",
           "measure_latency"]


def parameter_count(model: nn.Module) -> int:
    """Number of scalars in ``model.parameters()`` (buffers such as BatchNorm statistics excluded).

    Works on the ``meta`` device too, where no memory is allocated.

    >>> parameter_count(nn.Linear(3, 2))
    8
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- torchvision
def torchvision_weights_table(names: Iterable[str] | None = None, *, all_weights: bool = False):
    """Facts recorded by torchvision for its ImageNet classification weights, as a DataFrame.

    ``names``: model names as ``torchvision.models.list_models(module=torchvision.models)`` spells
    them (default: all of them, about 80). One row per model with its ``DEFAULT`` weights, or one
    per weights member with ``all_weights=True`` (the index then repeats a name). Columns:

    ``weights`` (member name), ``default`` (is it the DEFAULT), ``parameters`` (``meta["num_params"]``),
    ``top1``/``top5`` (``meta["_metrics"]["ImageNet-1K"]``, in %), ``gmacs`` (``meta["_ops"]``,
    giga multiply-adds per image at the evaluation size), ``file_mb`` (``meta["_file_size"]``),
    ``min_size`` (smallest input the architecture accepts), ``resize``/``crop`` (the evaluation
    transform of ``weights.transforms()``: resize the short side, then centre-crop).

    Reads metadata only: no weight file is downloaded.
    """
    import pandas as pd
    from torchvision import models
    from torchvision.models import get_model_weights

    available = models.list_models(module=models)
    names = available if names is None else list(names)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"not torchvision classification models: {unknown}; see "
                         "torchvision.models.list_models(module=torchvision.models)")
    rows = []
    for name in names:
        enum = get_model_weights(name)
        members = list(enum) if all_weights else [enum.DEFAULT]
        for w in members:
            meta = w.meta
            metrics = meta.get("_metrics", {}).get("ImageNet-1K", {})
            transform = w.transforms()
            rows.append({
                "model": name, "weights": w.name, "default": w == enum.DEFAULT,
                "parameters": int(meta["num_params"]),
                "top1": metrics.get("acc@1"), "top5": metrics.get("acc@5"),
                "gmacs": meta.get("_ops"), "file_mb": meta.get("_file_size"),
                "min_size": tuple(meta.get("min_size", ())),
                "resize": _first(getattr(transform, "resize_size", None)),
                "crop": _first(getattr(transform, "crop_size", None)),
            })
    return pd.DataFrame(rows).set_index("model")


def _first(value):
    if isinstance(value, (list, tuple)):
        return value[0] if value else None
    return value


# --------------------------------------------------------------------------- Keras
def keras_applications_table(keras, names: Sequence[str]):
    """``keras.applications`` constructors called with ``weights=None``: sizes, nothing downloaded.

    ``keras``: the module (import it through :func:`tlcourse.keras_zoo.import_keras`). Columns:
    ``parameters`` (``model.count_params()``, which includes BatchNorm moving statistics),
    ``trainable`` and ``non_trainable`` (their split, as ``model.summary()`` prints it) and
    ``input_shape`` (the default, channels last; ``None`` where the model accepts any size).
    Each model is built randomly initialised, about a second each on a CPU.
    """
    import pandas as pd

    from .keras_zoo import keras_parameter_counts

    rows = []
    for name in names:
        builder = getattr(keras.applications, name, None)
        if builder is None:
            raise ValueError(f"keras.applications {keras.__version__} has no {name!r}")
        model = builder(weights=None)
        trainable, frozen = keras_parameter_counts(model)
        rows.append({"model": name, "parameters": int(model.count_params()), "trainable": trainable,
                     "non_trainable": frozen, "input_shape": tuple(model.input_shape[1:])})
        del model
    keras.backend.clear_session()
    return pd.DataFrame(rows).set_index("model")


# --------------------------------------------------------------------------- transformers
def config_reference_checkpoint(config_class) -> str | None:
    """The Hub checkpoint whose architecture the config's defaults reproduce, read from its docstring.

    Hugging Face documents every config class with "... a similar configuration to that of the
    [org/name](https://huggingface.co/org/name) architecture"; this returns ``"org/name"``, or
    ``None`` when the docstring names none.

    >>> import transformers
    >>> config_reference_checkpoint(transformers.BertConfig)
    'google-bert/bert-base-uncased'
    """
    match = re.search(r"\[([\w\-./]+)\]\(https://huggingface\.co/", config_class.__doc__ or "")
    return match.group(1) if match else None


def transformers_config_table(configs: Mapping[str, object], inputs: Mapping[str, Mapping[str, tuple]]):
    """Parameters and FLOPs of Hugging Face architectures, built on the ``meta`` device.

    ``configs``: ``{row name: a transformers config instance}``; ``inputs``: for each row,
    ``{argument: shape}`` of one forward pass (``input_ids`` is filled with zeros as integers,
    anything else as floats), e.g. ``{"input_ids": (1, 128)}`` or ``{"input_values": (1, 16000)}``.
    ``transformers.AutoModel.from_config`` builds the bare model (no task head) on ``meta``: shapes
    only, no memory, no initialisation time. Columns: ``architecture`` (the model class),
    ``parameters``, ``gflops`` (:func:`count_flops`, two per multiply-add), ``input`` (the shapes),
    ``defaults_of`` (:func:`config_reference_checkpoint` when the config keeps every default of
    its class, else ``"custom"``).
    """
    import pandas as pd
    from transformers import AutoModel

    rows = []
    for name, config in configs.items():
        if name not in inputs:
            raise ValueError(f"no input shapes given for {name!r}: add inputs[{name!r}] = {{argument: shape}}")
        with torch.device("meta"):
            model = AutoModel.from_config(config).eval()
        example = {k: torch.zeros(shape, dtype=torch.long if k.endswith("_ids") else torch.float32,
                                  device="meta") for k, shape in inputs[name].items()}
        rows.append({"model": name, "architecture": type(model).__name__,
                     "parameters": parameter_count(model),
                     "gflops": count_flops(model, **example) / 1e9,
                     "input": ", ".join(f"{k} {tuple(s)}" for k, s in inputs[name].items()),
                     "defaults_of": (config_reference_checkpoint(type(config))
                                     if config.to_dict() == type(config)().to_dict() else "custom")})
    return pd.DataFrame(rows).set_index("model")


# --------------------------------------------------------------------------- FLOPs and latency
def count_flops(model: nn.Module, *args, **kwargs) -> int:
    """FLOPs of ``model(*args, **kwargs)`` counted by ``torch.utils.flop_counter.FlopCounterMode``.

    Counts matrix multiplications and convolutions, a multiply-add as 2 FLOPs (element-wise ops,
    activations and normalisation are not counted). Run it on the ``meta`` device to count a
    large model for free. ResNet-50 at 224x224 gives about 8.2 GFLOPs, twice the 4.09 that
    torchvision records as ``meta["_ops"]`` (multiply-adds).

    >>> count_flops(nn.Linear(3, 2, bias=False), torch.zeros(4, 3))
    48
    """
    from torch.utils.flop_counter import FlopCounterMode

    # no_grad rather than inference_mode: some parametrised layers (weight_norm) fail on meta
    # tensors under inference_mode
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(*args, **kwargs)
    return int(counter.get_total_flops())


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def measure_latency(model: nn.Module, make_input: Callable[[int, torch.device], object], *,
                    batch_sizes: Sequence[int] = (1, 32), warmup: int = 2, repeats: int = 5,
                    threads: int | None = 1):
    """Median wall-clock latency of one forward pass, per batch size, as a DataFrame.

    For each batch size ``b``: ``x = make_input(b, device)`` (a tensor, a tuple of arguments or a
    dict of keyword arguments), ``warmup`` untimed calls (memory allocation, oneDNN kernel
    selection and caches happen on the first calls with a new shape), then ``repeats`` timed
    calls with ``time.perf_counter``; CUDA is synchronised around each call. The model runs in
    eval mode (dropout off, BatchNorm on its stored statistics) under ``torch.inference_mode``
    (no autograd graph), on ``threads`` intra-op threads (``None``: leave the setting alone); the
    model's mode and the thread count are restored afterwards. The device is the model's.

    Returns one row per batch size: ``batch_size``, ``median_ms`` (per call), ``q1_ms``/``q3_ms``
    (quartiles of the timed calls), ``ms_per_item`` (``median_ms / batch_size``, the cost of one
    image or sentence when requests are batched) and ``items_per_s``. The median resists the
    occasional call slowed by another process; the quartiles show how noisy the machine was.

    >>> net = nn.Linear(8, 2)
    >>> table = measure_latency(net, lambda b, d: torch.zeros(b, 8, device=d), batch_sizes=(1, 4), repeats=3)
    >>> list(table.batch_size), bool((table.median_ms > 0).all())
    ([1, 4], True)
    """
    import pandas as pd

    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    sizes = list(batch_sizes)
    if not sizes:
        raise ValueError("batch_sizes is empty: give at least one batch size, e.g. (1, 32)")
    for b in sizes:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ValueError(f"batch sizes must be integers >= 1, got {b!r}")
    for label, value, low in (("warmup", warmup, 0), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{label} must be an integer >= {low}, got {value!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be an integer >= 1 or None, got {threads!r}")

    device = _model_device(model)
    if device.type == "meta":
        raise ValueError("the model is on the meta device (shapes only): it cannot be timed")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    was_training, old_threads = model.training, torch.get_num_threads()
    rows = []
    try:
        model.eval()
        if threads is not None:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            for b in sizes:
                x = make_input(b, device)
                call = _caller(model, x)
                for _ in range(warmup):
                    call()
                sync()
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    call()
                    sync()
                    times.append(1000 * (time.perf_counter() - start))
                q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else times * 3
                median = statistics.median(times)
                rows.append({"batch_size": b, "median_ms": median, "q1_ms": q1, "q3_ms": q3,
                             "ms_per_item": median / b, "items_per_s": 1000 * b / median})
    finally:
        model.train(was_training)
        if threads is not None:
            torch.set_num_threads(old_threads)
    return pd.DataFrame(rows)


def _caller(model, x):
    if isinstance(x, Mapping):
        return lambda: model(**x)
    if isinstance(x, tuple):
        return lambda: model(*x)
    return lambda: model(x)

"""Which weights to tune: a frozen encoder with a linear probe, LoRA on the attention projections,
or full fine-tuning, trained by one loop on the same batches so the budgets are equal.

LoRA (Hu et al., 2022, "LoRA: low-rank adaptation of large language models", ICLR) freezes a
pretrained weight ``W0`` (d_out, d_in) and learns a low-rank update,

    h = W0 x + (alpha / r) * B A x,    A (r, d_in), B (d_out, r), r << min(d_in, d_out),

with ``B = 0`` at the start, so the adapted model begins exactly as the pretrained one. Hu et al.
adapt the query and value projections of attention; :func:`with_lora` does that with the ``peft``
package (``LoraConfig(target_modules=["query", "value"])``, the names of BERT's projections, which
it checks first). A rank-r update of a 384 x 384 projection trains ``2 * 384 * r`` weights instead
of 147,456. After training, ``B A`` can be merged into ``W0`` (``merge_and_unload``): no extra
latency at inference.

What LoRA saves is memory (gradients and Adam's two moments exist for the adapter only) and the
checkpoint (the adapter alone); it does not save the forward and backward *through* the network,
since the gradient of a first-layer adapter still flows back through every layer above it.

- :class:`MeanPoolClassifier`: encoder, masked mean pooling (the sentence embedding of
  :func:`tlcourse.zoo.sentence_embeddings`, before normalisation) and a linear head.
- :func:`tokenize`, :func:`batch_schedule` (length-bucketed, seeded batches: padding to the
  longest of similar lengths keeps a CPU step cheap), :func:`train_classifier`, :func:`accuracy`,
  :func:`pooled_features` and :func:`train_probe` (the frozen arm on cached features, with the
  same batch schedule).

>>> cfg = lora_config(r=4)
>>> sorted(cfg.target_modules), cfg.r, cfg.lora_alpha
(['query', 'value'], 4, 8)
"""
from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["MeanPoolClassifier", "masked_mean", "lora_config", "with_lora", "tokenize", "batch_schedule",
           "train_classifier", "accuracy", "pooled_features", "train_probe", "lora_parameter_count"]


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


class MeanPoolClassifier(nn.Module):
    """``logits = W mean_t(h_t) + b``: a transformers encoder, masked mean pooling, a linear head.

    ``forward(input_ids, attention_mask)`` or ``forward(None, attention_mask, inputs_embeds=x)``
    (B, T) -> (B, n_classes). The head starts from ``torch.manual_seed(seed)``.
    """

    def __init__(self, encoder: nn.Module, n_classes: int, seed: int = 0):
        super().__init__()
        self.encoder = encoder
        torch.manual_seed(seed)
        self.head = nn.Linear(encoder.config.hidden_size, n_classes)

    def pooled(self, input_ids, attention_mask, inputs_embeds=None) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds)
        return masked_mean(out.last_hidden_state, attention_mask)

    def forward(self, input_ids, attention_mask, inputs_embeds=None) -> torch.Tensor:
        return self.head(self.pooled(input_ids, attention_mask, inputs_embeds))


def lora_config(r: int = 8, alpha: int | None = None, target_modules: Sequence[str] = ("query", "value"),
                dropout: float = 0.0):
    """``peft.LoraConfig`` for BERT-style attention (alpha defaults to 2 r, so alpha / r = 2)."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=2 * r if alpha is None else alpha, target_modules=list(target_modules),
                      lora_dropout=dropout, bias="none")


def with_lora(encoder: nn.Module, r: int = 8, alpha: int | None = None,
              target_modules: Sequence[str] = ("query", "value"), dropout: float = 0.0,
              seed: int = 0) -> nn.Module:
    """A copy of ``encoder`` with LoRA adapters on ``target_modules`` (``peft.get_peft_model``).

    ``A`` is drawn after ``torch.manual_seed(seed)`` (``B`` starts at 0). The copy is taken first
    because peft injects its layers into the model it is given. Only the
    adapters are trainable; ``print_trainable_parameters()`` on the result reports the counts.
    Raises ``ValueError`` naming the model's linear layers when a target name matches none of them.
    """
    from peft import get_peft_model

    linear = sorted({name.rsplit(".", 1)[-1] for name, m in encoder.named_modules() if isinstance(m, nn.Linear)})
    missing = [t for t in target_modules if t not in linear]
    if missing:
        raise ValueError(f"no linear layer is called {missing}; this model's linear layers are named {linear}")
    base = copy.deepcopy(encoder)
    torch.manual_seed(seed)
    with warnings.catch_warnings():   # peft 0.21 calls a transformers method that 5.23 deprecates
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(base, lora_config(r, alpha, target_modules, dropout))


def lora_parameter_count(d_in: int, d_out: int, r: int) -> int:
    """Weights of one rank-r adapter of a (d_out, d_in) matrix: ``r * (d_in + d_out)``.

    >>> lora_parameter_count(384, 384, 8)
    6144
    """
    return r * (d_in + d_out)


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` (N, T), padded to the longest text (at most ``max_length``)."""
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def _trimmed(tokens: dict, rows) -> dict:
    """The rows ``rows`` of a padded batch, cut to their own longest length."""
    mask = tokens["attention_mask"][rows]
    length = int(mask.sum(1).max())
    return {"input_ids": tokens["input_ids"][rows, :length], "attention_mask": mask[:, :length]}


def batch_schedule(lengths: Sequence[int], batch_size: int, steps: int, seed: int) -> list[np.ndarray]:
    """``steps`` batches of indices: each epoch a seeded shuffle, cut into chunks of similar length.

    Within an epoch every index appears once (the last incomplete batch is dropped). Sorting a
    shuffled epoch in windows of 8 batches by length, then shuffling the batches, keeps padding
    small while the order stays random. The same ``(lengths, batch_size, steps, seed)`` gives the
    same schedule, so every arm sees exactly the same examples in the same order.
    """
    lengths = np.asarray(lengths)
    if not 1 <= batch_size <= len(lengths):
        raise ValueError(f"batch_size must lie in [1, {len(lengths)}], got {batch_size}")
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    window = 8 * batch_size
    while len(out) < steps:
        perm = rng.permutation(len(lengths))
        perm = np.concatenate([w[np.argsort(lengths[w], kind="stable")]
                               for w in np.array_split(perm, max(1, len(perm) // window))])
        batches = [perm[i:i + batch_size] for i in range(0, len(perm) - batch_size + 1, batch_size)]
        out += [batches[i] for i in rng.permutation(len(batches))]
    return out[:steps]


def train_classifier(model: nn.Module, tokens: dict, labels: torch.Tensor, *, steps: int, batch_size: int,
                     lr: float, seed: int, head_lr: float | None = None, weight_decay: float = 0.0) -> dict:
    """AdamW on the parameters of ``model`` that require gradients, for exactly ``steps`` batches.

    ``lr`` is the encoder's learning rate (its adapters' with LoRA); ``head_lr`` that of
    ``model.head`` (default: ``lr``). A new head usually needs a far larger rate than pretrained
    weights: with one rate for both, a few steps train the body and leave the head nearly random.

    The batches come from :func:`batch_schedule` with ``seed``. Dropout is off (eval mode)
    throughout, so the arms differ only in which weights move. Returns ``{"steps", "seconds",
    "seconds_per_step", "cpu_seconds_per_step", "trainable", "losses"}``: wall-clock seconds and
    this process's CPU seconds (on a shared machine the second is the steadier measure).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameter")
    device = params[0].device
    head = {id(p) for p in model.head.parameters()} if hasattr(model, "head") else set()
    groups = [{"params": [p for p in params if id(p) not in head], "lr": lr},
              {"params": [p for p in params if id(p) in head], "lr": lr if head_lr is None else head_lr}]
    opt = _adamw([g for g in groups if g["params"]], weight_decay)
    schedule = batch_schedule(tokens["attention_mask"].sum(1).numpy(), batch_size, steps, seed)
    model.eval()
    losses, start, cpu = [], time.perf_counter(), time.process_time()
    for rows in schedule:
        batch = {k: v.to(device) for k, v in _trimmed(tokens, rows).items()}
        loss = F.cross_entropy(model(**batch), labels[rows].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return _record(schedule, start, cpu, params, losses=losses)


def _adamw(groups: list[dict], weight_decay: float) -> torch.optim.Optimizer:
    # The fused kernel updates all 22.7M weights of a full fine-tuning in one pass: on one CPU
    # thread it takes a fifth of the time of the default per-tensor loop (same arithmetic).
    try:
        return torch.optim.AdamW(groups, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):   # a device or dtype without the fused kernel
        return torch.optim.AdamW(groups, weight_decay=weight_decay)


def _record(schedule, start: float, cpu: float, params, **extra) -> dict:
    seconds, cpu_seconds, n = time.perf_counter() - start, time.process_time() - cpu, max(1, len(schedule))
    return {"steps": len(schedule), "seconds": seconds, "seconds_per_step": seconds / n,
            "cpu_seconds_per_step": cpu_seconds / n, "trainable": sum(p.numel() for p in params), **extra}


@torch.no_grad()
def _batched(fn, tokens: dict, batch_size: int, device) -> torch.Tensor:
    order = np.argsort(tokens["attention_mask"].sum(1).numpy(), kind="stable")   # similar lengths together
    out = [None] * len(order)
    for i in range(0, len(order), batch_size):
        rows = order[i:i + batch_size]
        values = fn(**{k: v.to(device) for k, v in _trimmed(tokens, rows).items()}).float().cpu()
        for r, v in zip(rows, values):
            out[r] = v
    return torch.stack(out)


def accuracy(model: nn.Module, tokens: dict, labels, batch_size: int = 64) -> float:
    """Share of ``labels`` that ``model`` (eval mode, no gradients) predicts; model's mode restored."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        logits = _batched(model, tokens, batch_size, device)
    finally:
        model.train(was)
    return float((logits.argmax(1) == torch.as_tensor(labels)).float().mean())


def pooled_features(encoder: nn.Module, tokens: dict, batch_size: int = 64) -> torch.Tensor:
    """The masked mean of the last hidden states, (N, hidden), computed once for the frozen arm."""
    was = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    try:
        return _batched(lambda **b: masked_mean(encoder(**b).last_hidden_state, b["attention_mask"]),
                        tokens, batch_size, device)
    finally:
        encoder.train(was)


def train_probe(features: torch.Tensor, lengths: Sequence[int], labels: torch.Tensor, n_classes: int, *,
                steps: int, batch_size: int, lr: float, seed: int, weight_decay: float = 0.0) -> tuple[nn.Linear, dict]:
    """The frozen-encoder arm: a linear head on cached pooled features, the same AdamW loop and
    the same :func:`batch_schedule` (``lengths`` are the token counts) as :func:`train_classifier`.
    The head starts from ``torch.manual_seed(seed)``, like :class:`MeanPoolClassifier`'s."""
    torch.manual_seed(seed)
    head = nn.Linear(features.shape[1], n_classes)
    opt = _adamw([{"params": list(head.parameters()), "lr": lr}], weight_decay)
    schedule = batch_schedule(lengths, batch_size, steps, seed)
    start, cpu = time.perf_counter(), time.process_time()
    for rows in schedule:
        loss = F.cross_entropy(head(features[rows]), labels[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return head.eval(), _record(schedule, start, cpu, list(head.parameters()))

"""Reading the attention of a pretrained Transformer encoder, and testing what the reading is worth.

Self-attention (Vaswani et al., 2017) gives each head ``h`` of layer ``l`` a row-stochastic matrix
``A[l, h] = softmax(Q K^T / sqrt(d_head) + mask)``, shape (T, T): row ``i`` says how token ``i``
mixes the values of every token ``j`` (rows sum to 1, padded columns get 0).

- :func:`attention_maps` runs a Hugging Face encoder and returns every layer's attention as one
  tensor (L, B, H, T, T). The default ``sdpa`` kernel of transformers 5 computes no weights:
  asked for them, it returns an **empty tuple** (with a logged warning), so this function switches
  the model to ``attn_implementation="eager"`` for the call and raises if nothing comes back.
- :func:`attention_rollout`: Abnar & Zuidema (2020), "Quantifying attention flow in
  transformers", ACL. Average the heads, add the residual connection and renormalise the rows,
  ``Ã_l = (1 - r) * mean_h A[l, h] + r * I`` with ``r = 0.5``, then multiply through the layers,
  ``R = Ã_L Ã_{L-1} ... Ã_1`` (B, T, T): ``R[i, j]`` is how much of token ``j`` flows into position
  ``i`` at the top, if attention were all that mixed tokens.
- :func:`attention_received`: a token's score as the mean over the real query rows of a (B, T, T)
  map, the share of the sentence's attention that goes to it.
- :func:`gradient_x_input`: the gradient-times-input saliency of each token for one logit,
  ``s_t = |sum_d x_td * d logit / d x_td|`` over the token's input embedding ``x_t`` (Shrikumar et
  al., 2017; Denil et al., 2014, for gradient saliency in NLP).
- :func:`top_k_tokens`, :func:`random_tokens` and :func:`removal_effect`: the intervention of
  Jain & Wallace (2019), "Attention is not explanation", NAACL (answered by Wiegreffe & Pinter,
  2019, "Attention is not not explanation", EMNLP): remove the tokens a score ranks highest and
  measure how much the prediction changes, against random tokens and against another score.
  A token is *removed* by zeroing its entry of the attention mask: no other token attends to it
  and a masked mean pooling leaves it out, which is deletion except that the position ids of the
  tokens after it do not shift.

>>> a = torch.eye(3).expand(2, 1, 4, 3, 3)          # 2 layers, 1 sentence, 4 heads, 3 tokens
>>> torch.equal(attention_rollout(a), torch.eye(3).expand(1, 3, 3))
True
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["attention_maps", "eager_attention", "attention_rollout", "attention_received",
           "token_group_share", "gradient_x_input", "top_k_tokens", "random_tokens", "remove_tokens",
           "removal_effect"]


def _check_rows(a: torch.Tensor, name: str) -> None:
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{name} must end with a square (T, T) map, got shape {tuple(a.shape)}")
    if (a < -1e-6).any():
        raise ValueError(f"{name} has negative entries: attention weights are probabilities")


@contextlib.contextmanager
def eager_attention(model: nn.Module):
    """Run ``model`` with ``attn_implementation="eager"`` inside the block, then restore its kernel.

    Only the eager kernel materialises the weights; ``sdpa`` and flash attention fuse them away.
    The two give the same hidden states (to float rounding), so nothing else changes.
    """
    if not hasattr(model, "set_attn_implementation"):
        raise TypeError(f"{type(model).__name__} is not a transformers PreTrainedModel "
                        "(it has no set_attn_implementation)")
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        model.set_attn_implementation(before)


@torch.no_grad()
def attention_maps(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Every layer's attention weights, (L, B, H, T, T), float32 on the inputs' device.

    ``model`` is a transformers encoder (``BertModel``; MiniLM from :func:`tlcourse.zoo.minilm`);
    ``input_ids`` and ``attention_mask`` are (B, T). The rows of real query tokens sum to 1 and
    give padded columns 0. Runs in the model's current mode under :func:`eager_attention`.
    """
    with eager_attention(model):
        out = model(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
    if not out.attentions:
        raise RuntimeError("the model returned no attention weights; its attention kernel does not "
                           "compute them: load it with attn_implementation='eager'")
    return torch.stack(out.attentions).float()


def attention_rollout(attentions: torch.Tensor, residual: float = 0.5) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): (L, B, H, T, T) or (L, H, T, T) -> (B, T, T) or (T, T).

    ``Ã_l = (1 - residual) * mean_h A_l + residual * I``, rows renormalised, and
    ``R = Ã_L @ ... @ Ã_1``; rows of ``R`` sum to 1. ``residual = 0`` multiplies the raw head
    means. A padded column has weight 0 in every real row, so real rows never route through it.

    >>> a = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])    # one layer, one head: swap the tokens
    >>> attention_rollout(a).tolist()
    [[0.5, 0.5], [0.5, 0.5]]
    """
    a = torch.as_tensor(attentions)
    _check_rows(a, "attentions")
    if a.ndim not in (4, 5):
        raise ValueError(f"attentions must be (L, B, H, T, T) or (L, H, T, T), got {tuple(a.shape)}")
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual must lie in [0, 1], got {residual}")
    mixed = (1 - residual) * a.mean(dim=-3) + residual * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    mixed = mixed / mixed.sum(-1, keepdim=True).clamp_min(1e-12)
    rollout = mixed[0]
    for layer in mixed[1:]:
        rollout = layer @ rollout
    return rollout


def attention_received(maps: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the real query rows of a (B, T, T) map: the attention each token receives, (B, T).

    For a head-averaged layer pass ``A.mean(1)``; for the rollout, its output. Padded tokens get 0;
    each real row of the result sums to 1 when the map's real rows do.

    >>> attention_received(torch.full((1, 2, 2), 0.5), torch.ones(1, 2)).tolist()
    [[0.5, 0.5]]
    """
    _check_rows(maps, "maps")
    m = attention_mask.to(maps.dtype)
    if maps.ndim != 3 or m.shape != maps.shape[:2]:
        raise ValueError(f"maps (B, T, T) and attention_mask (B, T) disagree: {tuple(maps.shape)} vs {tuple(m.shape)}")
    return (maps * m[:, :, None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1) * m


def token_group_share(attentions: torch.Tensor, attention_mask: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Share of the attention of real query tokens that lands on the tokens in ``group``: (L, H).

    ``attentions`` (L, B, H, T, T), ``attention_mask`` and ``group`` (B, T) booleans (for example
    the ``[CLS]``/``[SEP]`` positions, or punctuation). Averaged over all real query rows of all
    sentences. Clark et al. (2019, "What does BERT look at?") found heads of BERT putting most of
    their attention on ``[SEP]`` and punctuation this way.
    """
    _check_rows(attentions, "attentions")
    m = attention_mask.to(attentions.dtype)
    on_group = (attentions * group.to(attentions.dtype)[None, :, None, None, :]).sum(-1)   # (L, B, H, T)
    return (on_group * m[None, :, None, :]).sum((1, 3)) / m.sum()


def gradient_x_input(classifier: Callable, embeddings: torch.Tensor, attention_mask: torch.Tensor,
                     target: torch.Tensor) -> torch.Tensor:
    """Gradient-times-input saliency |sum_d x_td g_td| of each token for the logit ``target``, (B, T).

    ``classifier(inputs_embeds, attention_mask)`` returns logits (B, C); ``embeddings`` (B, T, D)
    are its input word embeddings; ``target`` (B,) the class whose logit is explained (usually the
    predicted one). Padded tokens get 0. The parameters' own gradients are left untouched.
    """
    x = embeddings.detach().clone().requires_grad_(True)
    logits = classifier(x, attention_mask)
    chosen = logits.gather(1, target.view(-1, 1).to(logits.device)).sum()
    (grad,) = torch.autograd.grad(chosen, x)
    return (grad * x).sum(-1).abs().detach() * attention_mask.to(x.dtype)


def top_k_tokens(scores: torch.Tensor, candidates: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean (B, T): the ``k`` candidate tokens with the highest score in each row (ties: first).

    ``candidates`` (B, T) boolean; every row needs at least ``k`` of them.

    >>> top_k_tokens(torch.tensor([[0.1, 0.9, 0.5]]), torch.tensor([[True, False, True]]), 1).tolist()
    [[False, False, True]]
    """
    _check_k(candidates, k)
    masked = torch.where(candidates, scores.float(), torch.tensor(float("-inf"), device=scores.device))
    idx = masked.topk(k, dim=1).indices
    return torch.zeros_like(candidates).scatter(1, idx, True)


def random_tokens(candidates: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Boolean (B, T): ``k`` candidate tokens per row drawn uniformly at random from ``seed``."""
    _check_k(candidates, k)
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(candidates.shape, generator=g).to(candidates.device)
    return top_k_tokens(noise, candidates, k)


def _check_k(candidates: torch.Tensor, k: int) -> None:
    if candidates.dtype != torch.bool or candidates.ndim != 2:
        raise ValueError(f"candidates must be a (B, T) boolean mask, got {candidates.dtype} {tuple(candidates.shape)}")
    fewest = int(candidates.sum(1).min()) if len(candidates) else 0
    if not 1 <= k <= fewest:
        raise ValueError(f"k must lie in [1, {fewest}] (the fewest candidates in a row), got {k}")


def remove_tokens(attention_mask: torch.Tensor, remove: torch.Tensor) -> torch.Tensor:
    """The attention mask with the ``remove`` (B, T) tokens set to 0 (see the module docstring)."""
    if remove.shape != attention_mask.shape:
        raise ValueError(f"remove {tuple(remove.shape)} must have the mask's shape {tuple(attention_mask.shape)}")
    return attention_mask * (~remove.bool()).to(attention_mask.dtype)


@torch.no_grad()
def removal_effect(classifier: Callable, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   remove: torch.Tensor, before: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """How the prediction changes when the ``remove`` tokens are taken out.

    ``classifier(input_ids, attention_mask)`` returns logits (B, C); ``before`` (B, C) are its
    probabilities on the intact inputs (computed when not given; pass them to compare several
    removals at the cost of one forward each). Returns per sentence ``drop``: p(original
    prediction) before minus after, and ``flipped``: whether the argmax changed, both (B,).
    """
    if before is None:
        before = classifier(input_ids, attention_mask).softmax(-1)
    after = classifier(input_ids, remove_tokens(attention_mask, remove)).softmax(-1)
    pred = before.argmax(-1, keepdim=True)
    return {"drop": (before.gather(1, pred) - after.gather(1, pred)).squeeze(1),
            "flipped": after.argmax(-1) != pred.squeeze(1)}

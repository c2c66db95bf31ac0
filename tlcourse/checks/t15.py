"""Checks for exercise T15 (attention in transfer): attention rollout written by hand, LoRA adapters
attached to MiniLM's attention with what they train counted, and one question interpreting a
token-removal experiment.

Every ``collect`` runs in the student's kernel and returns plain data; every ``grade`` runs in the
trusted process and recomputes what it compares with: the rollout from its own definition on
random attention drawn from the seed, and the LoRA counts from MiniLM's shape (6 layers, hidden
size 384), so grading needs no model.

- **q1** (2 points) ``rollout(attentions, residual)``: ``attentions`` a float tensor (L, H, T, T)
  of one sentence, rows summing to 1. *collect*: the student's function on five seeded cases
  (various L, H, T, residual). *grade*: each result must equal
  ``R = Ã_L ... Ã_1`` with ``Ã_l = rownorm((1 - residual) * mean_h A_l + residual * I)`` (float64,
  tolerance 1e-4). The usual mistakes (layers multiplied in the wrong order, the residual left out,
  ``A + I`` without renormalising, heads summed instead of averaged, layers averaged instead of
  multiplied, the last layer only) are recognised and named.
- **q2** (2 points) ``lora_model`` (MiniLM with LoRA of rank 4 on ``query`` and ``value``) and
  ``n_trainable``. *collect*: the names and shapes of ``lora_model``'s trainable parameters and
  ``n_trainable``. *grade*: only LoRA matrices of the 12 query/value projections train, with rank
  4, and ``n_trainable`` is their count, 36,864. Counting the frozen weights too, adapting ``key``
  as well, another rank, or a model without adapters fail with a message that names it.
- **q3** (1 point) ``answer_q3``: a choice, checked by letter.
"""
from __future__ import annotations

import numbers
import re

import numpy as np
import torch

from tlcourse.grading import Question
from tlcourse.grading.answers import NOT_PLAIN as _NOT_PLAIN, call, describe
from tlcourse.grading.choice import choice_question

# ---------------------------------------------------------------- the exercise's fixed setting
Q1_CASES = ((3, 4, 5, 0.5), (1, 2, 4, 0.5), (4, 3, 6, 0.0), (2, 1, 3, 0.25), (6, 12, 7, 0.5))   # (L, H, T, residual)
LAYERS, HIDDEN, RANK = 6, 384, 4
TARGETS = ("query", "value")
N_LORA = LAYERS * len(TARGETS) * RANK * (HIDDEN + HIDDEN)      # 36,864
N_MINILM = 22_713_216


def q1_inputs(seed: int) -> list[torch.Tensor]:
    """The attention tensors (L, H, T, T) of every q1 case, rows summing to 1, drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return [(3 * torch.randn(L, H, T, T, generator=g)).softmax(-1) for L, H, T, _ in Q1_CASES]


def _collect_rollout(ns, seed):
    fn = ns["rollout"]
    out = []
    for a, (*_, residual) in zip(q1_inputs(seed), Q1_CASES):
        entry = call(fn, a.clone(), residual)
        if entry.get("raised") == "NotImplementedError":
            return {"error": "rollout raises NotImplementedError: replace the placeholder with your code"}
        out.append(entry)
    return {"results": out}


def _rownorm(m):
    return m / m.sum(-1, keepdim=True)


def _variants(a: torch.Tensor, residual: float) -> dict:
    """The right rollout and the usual wrong ones, in float64."""
    a = a.double()
    eye = torch.eye(a.shape[-1], dtype=a.dtype)
    mean = a.mean(1)

    def product(layers, reverse=False):
        out = layers[0]
        for layer in layers[1:]:
            out = out @ layer if reverse else layer @ out
        return out

    right_layers = _rownorm((1 - residual) * mean + residual * eye)
    return {
        "right": product(right_layers),
        "the layers are multiplied in the wrong order: the top layer goes on the left, "
        "R = Ã_L @ ... @ Ã_1 (token j at the input flows up through layer 1 first)":
            product(right_layers, reverse=True),
        "the residual term is missing: add residual * I to the head mean of every layer (Abnar & "
        "Zuidema's identity for the skip connection), then renormalise the rows": product(mean),
        "the rows are not renormalised: A + I has rows summing to 2, so the product grows with depth; "
        "divide each row by its sum": product(mean + eye),
        "the heads are summed instead of averaged: take the mean over the head axis": product(_rownorm(
            (1 - residual) * a.sum(1) + residual * eye)),
        "the layers are averaged instead of multiplied: rollout composes the layers, R = Ã_L @ ... @ Ã_1":
            right_layers.mean(0),
        "only the last layer is used: rollout multiplies every layer's matrix": right_layers[-1],
    }


def _matrix(entry, case: int, shape) -> np.ndarray:
    what = f"rollout(case {case + 1}, attentions of shape {shape})"
    if not isinstance(entry, dict) or not ("value" in entry or "raised" in entry):
        raise AssertionError("the collected answer is malformed: run the notebook's cells in order")
    if "raised" in entry:
        raise AssertionError(f"{what} raised {entry['raised']}: {entry.get('message', '')}")
    value = entry["value"]
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf":
        raise AssertionError(f"{what} returned {describe(value)}; return a (T, T) tensor or array")
    t = shape[-1]
    if value.shape != (t, t):
        raise AssertionError(f"{what} returned shape {value.shape}; expected ({t}, {t}): one sentence, "
                             "heads averaged, layers multiplied")
    return value.astype(np.float64)


def _grade_rollout(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    assert "error" not in answer, answer.get("error")
    inputs = q1_inputs(seed)
    got = [_matrix(e, i, tuple(a.shape)) for i, (e, a) in enumerate(zip(answer["results"], inputs))]
    cases = [_variants(a, res) for a, (*_, res) in zip(inputs, Q1_CASES)]
    close = lambda g, ref: np.allclose(g, ref.numpy(), atol=1e-4)  # noqa: E731
    wrong = [i for i, (g, c) in enumerate(zip(got, cases)) if not close(g, c["right"])]
    if not wrong:
        return
    for mistake in cases[0]:
        if mistake != "right" and all(close(g, c[mistake]) or close(g, c["right"]) for g, c in zip(got, cases)):
            raise AssertionError(f"rollout is off on random attention: {mistake}")
    i = wrong[0]
    L, H, T, res = Q1_CASES[i]
    raise AssertionError(
        f"rollout(case {i + 1}: L={L}, H={H}, T={T}, residual={res}) differs from the definition (largest "
        f"difference {np.abs(got[i] - cases[i]['right'].numpy()).max():.3g}; wrong in {len(wrong)} of "
        f"{len(Q1_CASES)} cases). Average the heads, mix (1 - residual) * mean + residual * I, renormalise "
        "the rows, and multiply with the last layer on the left")


# ---------------------------------------------------------------- q2
def _count(value):
    if isinstance(value, bool):
        return f"{_NOT_PLAIN}bool>"
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0:
        value = value.item()
    if isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    return f"{_NOT_PLAIN}{type(value).__name__}>"


def _collect_lora(ns, seed):
    model = ns["lora_model"]
    named = getattr(model, "named_parameters", None)
    trainable = ([[n, list(p.shape)] for n, p in named() if p.requires_grad] if callable(named)
                 else f"{_NOT_PLAIN}{type(model).__name__}>")
    total = sum(p.numel() for p in model.parameters()) if callable(named) else None
    return {"trainable": trainable, "total": total, "n_trainable": _count(ns["n_trainable"])}


_PROJECTION = re.compile(r"layer\.(\d+)\.attention\.self\.(\w+)\.lora_([AB])\.")


def _grade_lora(answer, seed):
    assert isinstance(answer, dict) and "trainable" in answer, (
        "the collected answer is malformed: run the notebook's cells in order")
    trainable, n = answer["trainable"], answer["n_trainable"]
    assert not isinstance(trainable, str), (
        f"lora_model should be the model get_peft_model returns, got {trainable[len(_NOT_PLAIN):-1]}")
    assert trainable, "lora_model has no trainable parameter: get_peft_model marks the adapters trainable"
    lora = [(name, shape) for name, shape in trainable if "lora_" in name]
    assert lora, ("lora_model has no LoRA adapter among its trainable weights: wrap a copy of the encoder "
                  "with get_peft_model(encoder, LoraConfig(r=4, lora_alpha=8, target_modules=['query', 'value']))")
    others = [name for name, _ in trainable if "lora_" not in name]
    assert not others, (f"{len(others)} trainable tensors are not LoRA adapters (e.g. {others[0]}): the "
                        "pretrained weights must stay frozen; get_peft_model does that when given the plain encoder")
    matched = [(_PROJECTION.search(name), shape) for name, shape in lora]
    targets = sorted({m.group(2) for m, _ in matched if m})
    assert targets == sorted(TARGETS), (
        f"the adapters sit on {targets}; the question asks for the query and value projections only "
        "(target_modules=['query', 'value'])")
    modules = {(m.group(1), m.group(2)) for m, _ in matched if m}
    assert len(modules) == LAYERS * len(TARGETS), (
        f"{len(modules)} projections are adapted; MiniLM has {LAYERS} layers x 2 (query, value) = 12")
    ranks = {min(shape) for _, shape in lora}
    assert ranks == {RANK}, f"the adapters have rank {sorted(ranks)}; the question asks for r = {RANK}"
    counted = sum(int(np.prod(shape)) for _, shape in lora)
    assert isinstance(n, int), f"n_trainable should be an integer, got {describe(n) if not isinstance(n, str) else n}"
    if n == answer.get("total") or n >= N_MINILM:
        raise AssertionError(f"n_trainable = {n:,} counts the frozen weights too: count only the parameters "
                             "with requires_grad (the adapters)")
    assert n == counted == N_LORA, (
        f"n_trainable = {n:,}, but the adapters hold {counted:,} weights: 6 layers x 2 projections x r x "
        "(384 + 384)")


# ---------------------------------------------------------------- q3
Q3_CHOICES = {
    "a": "Attention tells us nothing about what the model uses: discard attention maps altogether.",
    "b": "A token can receive much accumulated attention without the prediction depending on it; each "
         "reading of attention is a hypothesis that has to be tested, on this model, by an intervention "
         "such as this one.",
    "c": "Punctuation carries the sentiment of these sentences, so the rollout is right and the other two "
         "scores are wrong.",
    "d": "Gradient x input is the true explanation, so any ranking that disagrees with it is wrong by "
         "construction and no experiment was needed.",
}
_Q3_ANSWER = "b"
_Q3_FEEDBACK = {
    "a": "one attention reading in the table does rank tokens whose removal matters. What does that say "
         "about discarding all of them?",
    "c": "if punctuation carried the sentiment, what would removing it do to the prediction? Compare the "
         "rollout's drop with the random floor.",
    "d": "gradient x input is a first-order local estimate, itself a hypothesis; the table measured how much "
         "each ranking's removals change the prediction. Which conclusion needs that measurement?",
}


QUESTIONS = [
    Question("q1", points=2, names=("rollout",), collect=_collect_rollout, grade=_grade_rollout,
             hint="m = attentions.mean(1); eye = torch.eye(T); layers = (1 - residual) * m + residual * eye; "
                  "layers = layers / layers.sum(-1, keepdim=True); R = layers[0]; for A in layers[1:]: R = A @ R"),
    Question("q2", points=2, names=("lora_model", "n_trainable"), collect=_collect_lora, grade=_grade_lora,
             hint="lora_model = get_peft_model(copy.deepcopy(encoder), LoraConfig(r=4, lora_alpha=8, "
                  "target_modules=['query', 'value'])); n_trainable = sum(p.numel() for p in "
                  "lora_model.parameters() if p.requires_grad)"),
    choice_question("q3", "answer_q3", choices=Q3_CHOICES, answer=_Q3_ANSWER, feedback=_Q3_FEEDBACK, points=1,
                    hint="Compare each ranking's drop with the random floor, and ask what each conclusion would need."),
]

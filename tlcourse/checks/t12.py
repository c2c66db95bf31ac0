"""Checks for exercise T12 (sequential data): a tokenizer's fragmentation measured by hand, series
cut into z-scored windows, a window length chosen on the validation split with its honest test
accuracy, and one prediction about truncating a document whose evidence sits at its end.

Every ``collect`` runs in the student's kernel and returns plain data; every ``grade`` runs in the
trusted process and rebuilds what it compares with: the MiniLM WordPiece tokenizer from
:func:`tlcourse.sequences.minilm_tokenizer`, series from :func:`tlcourse.sequences.simulate_waveforms`,
the source CNN from :func:`tlcourse.sequences.pretrained_series_cnn` and fine-tuning runs from
:func:`tlcourse.compare.tune_lr` (CPU, one thread, seeded). Nothing in the student's namespace is trusted.

- **q1** (2 points) ``pieces_per_word(words, tokenizer)``. *collect*: the student's function on
  three seeded samples of words from :data:`WORD_POOL` (everyday and technical words), with the
  tokenizer loaded by the check itself. *grade*: each value must equal the mean of
  ``len(tokenizer.tokenize(w))`` over the words; counting ``[CLS]``/``[SEP]`` (two too many per
  word), counting words or characters instead of pieces are recognised and named.
- **q2** (2 points) ``zscored_windows(x, length, stride)``. *collect*: the student's function on
  a seeded batch of drifting series for three (length, stride) cases. *grade*: the shape must be
  (N, floor((T - length) / stride) + 1, length) and every window z-scored with its own mean and
  standard deviation (ddof 0 or 1 both accepted); z-scoring the whole series before cutting,
  statistics of the whole batch, no normalisation, or a missing last window are named.
- **q3** (2 points) ``val_acc_by_window``, ``best_window``, ``best_window_test_acc``. The grader
  fine-tunes the same three seeded models (about 3 s, cached for the session). The validation
  accuracies must match its own to one series; ``best_window`` must be the best in the student's
  own dict; the test accuracy that of the chosen model to one series. With the exercise's split
  the validation split picks 128 while the test split would pick 32, so choosing on the test
  split fails.
- **q4** (1 point) ``answer_q4``: a choice, checked by letter.
"""
from __future__ import annotations

import functools
import numbers

import numpy as np
import torch

from tlcourse.grading import Question
from tlcourse.grading.answers import NOT_PLAIN as _NOT_PLAIN, shown as _shown, scalar as _scalar
from tlcourse.grading.choice import choice_question

# ---------------------------------------------------------------- the exercise's fixed setting
WORD_POOL = (
    "the", "film", "market", "players", "season", "government", "software", "announced", "quarterly",
    "unforgettable", "screenplay", "championship", "semiconductor", "immunohistochemistry",
    "thrombocytopenia", "pharmacokinetics", "cholecystectomy", "erythropoietin", "estoppel", "subrogation",
    "indemnification", "tortfeasor", "certiorari", "heteroskedasticity", "backpropagation",
    "eigendecomposition", "hyperparameter", "autoencoder", "photolithography", "nanoparticles",
    "electroencephalography", "bioinformatics", "cryptocurrency", "telecommunications", "rain", "goal",
)
Q1_SAMPLES, Q1_SIZE = 3, 12
Q2_CASES = ((16, 8), (20, 7), (64, 64))   # (length, stride); the last one leaves no remainder
Q2_N, Q2_T = 3, 96
SPLIT_SEED = 26           # simulate_waveforms(k_shot, "target", seed=SPLIT_SEED) etc.
K_SHOT, N_VAL, N_TEST = 4, 15, 50
WINDOWS = (32, 128, 256)
LR, MAX_STEPS = 3e-3, 100
TUNE_SEED = 0             # tune_lr(..., seed=TUNE_SEED)


@functools.lru_cache(maxsize=1)
def _tokenizer():
    from tlcourse.sequences import minilm_tokenizer

    return minilm_tokenizer()


# ---------------------------------------------------------------- q1
def q1_words(seed: int) -> list[list[str]]:
    """The word samples of q1, drawn from :data:`WORD_POOL` with ``seed``."""
    rng = np.random.default_rng(seed)
    return [[WORD_POOL[i] for i in rng.choice(len(WORD_POOL), Q1_SIZE, replace=False)] for _ in range(Q1_SAMPLES)]


def _collect_pieces(ns, seed):
    fn, tok = ns["pieces_per_word"], _tokenizer()
    values = []
    for words in q1_words(seed):
        try:
            values.append(_scalar(fn(list(words), tok)))
        except NotImplementedError:
            return {"error": "pieces_per_word raises NotImplementedError: replace the placeholder with your code"}
        except Exception as exc:  # noqa: BLE001 - reported to the student
            return {"error": f"pieces_per_word(words, tokenizer) raised {type(exc).__name__}: {str(exc)[:200]}"}
    return {"values": values}


def _grade_pieces(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    assert "error" not in answer, answer.get("error")
    tok = _tokenizer()
    for got, words in zip(answer["values"], q1_words(seed)):
        assert not isinstance(got, str), f"pieces_per_word returned {_shown(got)}; return one number (a float)"
        pieces = [len(tok.tokenize(w)) for w in words]
        want = float(np.mean(pieces))
        if abs(got - want) < 1e-6:
            continue
        if abs(got - (want + 2)) < 1e-6:
            raise AssertionError(
                "pieces_per_word counts two pieces too many per word: tokenizer(word)['input_ids'] adds the special "
                "tokens [CLS] and [SEP]; count tokenizer.tokenize(word), or pass add_special_tokens=False")
        if abs(got - 1.0) < 1e-6:
            raise AssertionError(
                "pieces_per_word returned 1.0: that counts words, not pieces (len(tokenizer(words)['input_ids']) is "
                "the number of words); count the pieces of each word")
        if abs(got - np.mean([len(w) for w in words])) < 1e-6:
            raise AssertionError("pieces_per_word returned the mean number of characters per word; count WordPiece pieces")
        raise AssertionError(
            f"pieces_per_word = {got:.4f} on {words[:3]}..., expected {want:.4f}: the mean over the words of "
            "len(tokenizer.tokenize(word))")


# ---------------------------------------------------------------- q2
def q2_series(seed: int) -> np.ndarray:
    """A batch (Q2_N, Q2_T) of drifting, offset series drawn from ``seed`` (float64)."""
    rng = np.random.default_rng(seed)
    t = np.arange(Q2_T)
    return (rng.uniform(50, 500, (Q2_N, 1)) + rng.uniform(5, 30, (Q2_N, 1)) * np.sin(t / rng.uniform(2, 6, (Q2_N, 1)))
            + np.cumsum(rng.normal(0, 3, (Q2_N, Q2_T)), axis=1))


def _collect_windows(ns, seed):
    fn, x = ns["zscored_windows"], q2_series(seed)
    out = []
    for length, stride in Q2_CASES:
        try:
            w = fn(x.copy(), length, stride)
        except NotImplementedError:
            return {"error": "zscored_windows raises NotImplementedError: replace the placeholder with your code"}
        except Exception as exc:  # noqa: BLE001 - reported to the student
            return {"error": f"zscored_windows(x, length={length}, stride={stride}) raised {type(exc).__name__}: "
                             f"{str(exc)[:200]}"}
        if isinstance(w, torch.Tensor):
            w = w.detach().cpu().numpy()
        if not isinstance(w, np.ndarray) or w.dtype == object:
            return {"error": f"zscored_windows returned {type(w).__name__}; return an array (N, W, length)"}
        out.append(np.asarray(w, dtype=np.float64))
    return {"windows": out}


def _cut(x, length, stride):
    return np.stack([x[:, s:s + length] for s in range(0, x.shape[1] - length + 1, stride)], axis=1)


def _z(a, axis, ddof=0):
    return (a - a.mean(axis=axis, keepdims=True)) / a.std(axis=axis, keepdims=True, ddof=ddof)


def _grade_windows(answer, seed):
    assert isinstance(answer, dict), "the collected answer is malformed: run the notebook's cells in order"
    assert "error" not in answer, answer.get("error")
    x = q2_series(seed)
    for got, (length, stride) in zip(answer["windows"], Q2_CASES):
        raw = _cut(x, length, stride)
        if got.shape != raw.shape:
            if got.ndim == 3 and got.shape[0] == raw.shape[0] and got.shape[2] == length and got.shape[1] == raw.shape[1] - 1:
                raise AssertionError(
                    f"length={length}, stride={stride}: {got.shape[1]} windows, expected {raw.shape[1]}; the last "
                    f"window starting at {(raw.shape[1] - 1) * stride} is missing: starts run up to T - length "
                    "included (range(0, T - length + 1, stride))")
            raise AssertionError(
                f"length={length}, stride={stride}: shape {got.shape}, expected {raw.shape} = (N, W, length) with "
                "W = (T - length) // stride + 1")
        if any(np.allclose(got, _z(raw, 2, d), atol=1e-5) for d in (0, 1)):
            continue
        mistakes = {
            "every window must be z-scored with ITS OWN mean and standard deviation: the series were z-scored as a "
            "whole before being cut, so each window keeps the drift of its part of the series": _cut(_z(x, 1), length, stride),
            "the windows are not normalised: subtract each window's mean and divide by its standard deviation": raw,
            "the mean and standard deviation come from the whole batch: use each window's own statistics, "
            "axis=-1 with keepdims=True": (raw - x.mean()) / x.std(),
        }
        for message, wrong in mistakes.items():
            if np.allclose(got, wrong, atol=1e-5):
                raise AssertionError(message)
        raise AssertionError(
            f"length={length}, stride={stride}: the windows have the right shape but not the right values; window k "
            "is x[:, k*stride : k*stride + length], minus its mean, divided by its standard deviation")


# ---------------------------------------------------------------- q3
def exercise_data():
    """The exercise's (train, validation, test) target splits as tensors."""
    from tlcourse.sequences import simulate_waveforms

    return [tuple(map(torch.from_numpy, simulate_waveforms(n, "target", seed=offset + SPLIT_SEED)))
            for n, offset in ((K_SHOT, 0), (N_VAL, 1000), (N_TEST, 2000))]


@functools.lru_cache(maxsize=1)
def reference_sweep() -> dict:
    """The exercise's window sweep, fine-tuned here: ``{"val": {w: acc}, "test": {w: acc}, "n_val", "n_test"}``."""
    import copy

    from tlcourse.compare import Budget, score, tune_lr
    from tlcourse.sequences import WindowedClassifier, pretrained_series_cnn

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        source = pretrained_series_cnn(seed=0)
        (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = exercise_data()
        budget = Budget(lr_grid=(LR,), max_steps=MAX_STEPS, eval_every=20, patience=3, batch_size=16)
        out = {"val": {}, "test": {}, "n_val": len(y_va), "n_test": len(y_te)}
        for w in WINDOWS:
            run = tune_lr(lambda: WindowedClassifier(copy.deepcopy(source), window=w), x_tr, y_tr, x_va, y_va,  # noqa: B023
                          budget, seed=TUNE_SEED)
            out["val"][w] = run["val_accuracy"]
            out["test"][w] = score(run["model"], x_te, y_te)["accuracy"]
    finally:
        torch.set_num_threads(threads)
    return out


def _collect_sweep(ns, seed):
    raw = ns["val_acc_by_window"]
    by_w = [[_scalar(k), _scalar(v)] for k, v in raw.items()] if isinstance(raw, dict) else _scalar(raw)
    return {"val_acc_by_window": by_w, "best_window": _scalar(ns["best_window"]),
            "best_window_test_acc": _scalar(ns["best_window_test_acc"])}


def _accuracy(value, what: str) -> float:
    assert not isinstance(value, str), f"{what} should be a float accuracy, got {_shown(value)}"
    assert 0 <= value <= 1, f"{what} = {value!r}; an accuracy is a fraction in [0, 1]"
    return float(value)


def _grade_sweep(answer, seed):
    by_w = answer["val_acc_by_window"]
    if isinstance(by_w, list):
        by_w = {k: v for k, v in by_w}
    assert isinstance(by_w, dict), (
        f"val_acc_by_window should be a dict {{window length: validation accuracy}}, got {_shown(by_w)}")
    assert all(not isinstance(k, str) for k in by_w) and sorted(by_w) == sorted(WINDOWS), (
        f"val_acc_by_window should have one entry per window length {list(WINDOWS)}, has keys "
        f"{[_shown(k) for k in by_w]}")
    ref = reference_sweep()
    one_val, one_test = 1.01 / ref["n_val"], 1.01 / ref["n_test"]
    for w in WINDOWS:
        got = _accuracy(by_w[w], f"val_acc_by_window[{w}]")
        if abs(got - ref["val"][w]) <= one_val:
            continue
        if abs(got - ref["test"][w]) <= one_test:
            raise AssertionError(
                f"val_acc_by_window[{w}] = {got:.4f} is the accuracy on the TEST split; use the validation accuracy "
                "(tune_lr's 'val_accuracy', or score on (x_va, y_va)): the test split must not take part in the choice")
        raise AssertionError(
            f"val_acc_by_window[{w}] = {got:.4f}, but the pretrained CNN fine-tuned with window={w} (tune_lr with "
            f"the exercise's budget, seed={TUNE_SEED}) scores {ref['val'][w]:.4f} on the validation split")
    best = answer["best_window"]
    assert not isinstance(best, str) and best in by_w, f"best_window = {_shown(best)} should be one of {list(WINDOWS)}"
    top = max(by_w.values())
    assert by_w[best] >= top - 1e-12, (
        f"best_window = {best:g} has validation accuracy {by_w[best]:.4f}, but the best in val_acc_by_window is "
        f"{top:.4f}: choose the window on the validation split, not on the test split")
    reported = _accuracy(answer["best_window_test_acc"], "best_window_test_acc")
    want = ref["test"][int(best)]
    if abs(reported - want) <= one_test:
        return
    if abs(reported - by_w[best]) < 1e-9:
        raise AssertionError(
            f"best_window_test_acc = {reported:.4f} is the validation accuracy of window {best:g}; report that "
            f"model's accuracy on the test split ({want:.4f} expected)")
    raise AssertionError(
        f"best_window_test_acc = {reported:.4f}, but the model fine-tuned with window {best:g} scores {want:.4f} on "
        f"the {ref['n_test']} test series")


# ---------------------------------------------------------------- q4
Q4_CHOICES = {
    "a": "About the same as reading the whole document: the first 512 tokens set the topic and style.",
    "b": "Close to chance: the model never sees the clause that decides the label, whatever the classifier on top.",
    "c": "Better than reading it whole, because truncation removes noise.",
    "d": "The model raises an error, because the document is longer than its position embeddings.",
}
_Q4_ANSWER = "b"
_Q4_FEEDBACK = {
    "a": "what is in the first 512 tokens that tells the two labels apart, if the deciding clause comes last? "
         "Compare the head in the chapter's step 3.",
    "c": "removing noise helps only if the evidence survives the cut; where is the evidence here?",
    "d": "with truncation switched on (the usual default in a pipeline), the tokenizer cuts the input to the limit "
         "before the model sees it; nothing fails, which is what makes the mistake silent.",
}

QUESTIONS = [
    Question("q1", points=2, names=("pieces_per_word",), collect=_collect_pieces, grade=_grade_pieces,
             hint="np.mean([len(tokenizer.tokenize(w)) for w in words])"),
    Question("q2", points=2, names=("zscored_windows",), collect=_collect_windows, grade=_grade_windows,
             hint="w = np.stack([x[:, s:s + length] for s in range(0, x.shape[1] - length + 1, stride)], axis=1); "
                  "then (w - w.mean(-1, keepdims=True)) / w.std(-1, keepdims=True)"),
    Question("q3", points=2, names=("val_acc_by_window", "best_window", "best_window_test_acc"),
             collect=_collect_sweep, grade=_grade_sweep,
             hint="val_acc_by_window[w] = run['val_accuracy']; best_window = max(val_acc_by_window, "
                  "key=val_acc_by_window.get); then score that model on the test split only."),
    choice_question("q4", "answer_q4", choices=Q4_CHOICES, answer=_Q4_ANSWER, feedback=_Q4_FEEDBACK, points=1,
                    hint="Look at the head-truncation bar in the chapter's step 3."),
]

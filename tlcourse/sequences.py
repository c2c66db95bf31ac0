"""Transfer to sequences: what a sub-word tokenizer does to domain words, long texts under a length
limit, and time series that must be windowed and normalised before a pretrained network fits them.

Text
----
- :func:`wordpiece` is the greedy longest-match-first WordPiece of BERT (Wu et al., 2016; Devlin
  et al., 2019): a word becomes the longest vocabulary prefix, then the longest ``##`` suffix piece,
  and so on. A word is replaced by ``[UNK]`` only when one of its characters is in no piece, so
  with a vocabulary that holds the single characters there are no out-of-vocabulary words, only
  more pieces. :func:`fragmentation` measures that on real text: pieces per word (the tokenizer's
  "fertility"), the share of words split into two or more pieces, and the share of ``[UNK]``.
- :func:`token_windows` cuts a tokenised text to what a model with a length limit sees: its
  ``head``, its ``tail``, or every ``chunk`` of a sliding window; :func:`long_text_embeddings`
  embeds those windows with a mean-pooling sentence encoder and, for chunks, pools the chunk
  embeddings of a text into one vector (chunk-and-pool).

Time series
-----------
- :func:`zscore` normalises every series (or window) by its own mean and standard deviation;
  :func:`sliding_windows` cuts series into fixed-length windows.
- :func:`simulate_waveforms` draws two seeded families of labelled series (a clean source and a
  noisy target in other units, with baseline wander); :class:`SeriesCNN` is a tiny 1-D CNN and
  :class:`WindowedClassifier` applies it to windows of a longer series and averages the logits,
  normalising every window inside the model so training and prediction can never disagree.
- :func:`pretrained_series_cnn` trains the CNN on the source family once and caches it like the
  other in-house source models (:func:`tlcourse.zoo.recipe_hash`).

>>> zscore(np.array([[1.0, 2.0, 3.0]])).round(3)
array([[-1.225,  0.   ,  1.225]])
>>> sliding_windows(np.arange(10.0)[None], length=4, stride=3).shape
(1, 3, 4)
>>> wordpiece("unaffable", {"un", "##aff", "##able", "a"})
['un', '##aff', '##able']
"""
from __future__ import annotations

import json
import os
import re
import time
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["wordpiece", "minilm_tokenizer", "FragmentationStats", "fragmentation", "words_of", "token_windows",
           "long_text_embeddings", "late_label_documents", "zscore", "sliding_windows", "SHAPES", "FAMILIES",
           "simulate_waveforms", "SeriesCNN", "WindowedClassifier", "pretrained_series_cnn"]


# ====================================================================== text: tokenisation
def wordpiece(word: str, vocab: Collection[str], unk_token: str = "[UNK]",
              max_input_chars: int = 100) -> list[str]:
    """Greedy longest-match-first WordPiece of one (already lower-cased) word, as BERT's tokenizer.

    Start at character 0 and take the longest prefix that is in ``vocab``; continue from where it
    ended with the longest piece that is in ``vocab`` with a ``##`` prefix, until the word is used
    up. If at some point no piece matches, or the word is longer than ``max_input_chars``, the
    whole word becomes ``[unk_token]``. So ``[UNK]`` needs a character that no piece covers;
    BERT's 30,522-piece vocabulary holds every common character, and rare words are split instead.

    >>> vocab = {"electro", "##ence", "##pha", "##log", "##raphy", "e", "##l"}
    >>> wordpiece("electroencephalography", vocab)
    ['electro', '##ence', '##pha', '##log', '##raphy']
    >>> wordpiece("ell", vocab), wordpiece("x", vocab)
    (['e', '##l', '##l'], ['[UNK]'])
    """
    if not word:
        return []
    if len(word) > max_input_chars:
        return [unk_token]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:
            return [unk_token]
        pieces.append(piece)
        start = end
    return pieces


def minilm_tokenizer():
    """The WordPiece tokenizer of :func:`tlcourse.zoo.minilm` alone (BERT's uncased 30,522 pieces).

    Loads in a fraction of the time of the whole encoder, offline (``local_files_only=True``), for
    code that only counts pieces. ``tokenizer.tokenize(word)`` gives the pieces without ``[CLS]``
    and ``[SEP]``; ``tokenizer(texts)["input_ids"]`` adds them.
    """
    from transformers import AutoTokenizer

    from .zoo import _minilm_dir

    return AutoTokenizer.from_pretrained(str(_minilm_dir()), local_files_only=True)


_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def words_of(text: str) -> list[str]:
    """The words of ``text``: maximal runs of letters and digits (punctuation and ``_`` split them).

    This is where BERT's pre-tokenizer cuts too, so every word is tokenised on its own.

    >>> words_of("Anti-TNF therapy (adalimumab), 40 mg.")
    ['Anti', 'TNF', 'therapy', 'adalimumab', '40', 'mg']
    """
    return _WORD.findall(text)


@dataclass(frozen=True)
class FragmentationStats:
    """What a tokenizer does to the words of a corpus (see :func:`fragmentation`)."""

    words: int               # words counted
    pieces: int              # sub-word pieces they became, special tokens excluded
    pieces_per_word: float   # pieces / words, the tokenizer's fertility
    split_share: float       # share of words cut into two or more pieces
    unk_share: float         # share of words that became (or contain) the unknown token


def fragmentation(texts: Sequence[str], tokenizer) -> FragmentationStats:
    """Pieces per word, share of split words and share of ``[UNK]`` words of ``texts``.

    ``tokenizer`` is a Hugging Face tokenizer (``tokenizer.tokenize(word)`` gives the pieces
    without ``[CLS]``/``[SEP]``, and ``tokenizer.unk_token`` the unknown token) or any callable
    ``word -> list of pieces``, with ``[UNK]`` as the unknown token. Words come from
    :func:`words_of`; each distinct word is tokenised once.

    pieces_per_word = sum_w pieces(w) / #words; split_share = #{w : pieces(w) >= 2} / #words.

    >>> toy = lambda w: wordpiece(w.lower(), {"token", "##izer", "##s", "a"})
    >>> fragmentation(["A tokenizer", "tokens"], toy)
    FragmentationStats(words=3, pieces=5, pieces_per_word=1.6666666666666667, split_share=0.6666666666666666, unk_share=0.0)
    """
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, got a single string; wrap it: [text]")
    tokenize = tokenizer.tokenize if hasattr(tokenizer, "tokenize") else tokenizer
    unk = getattr(tokenizer, "unk_token", None) or "[UNK]"
    counts: dict[str, tuple[int, bool]] = {}
    n_words = n_pieces = n_split = n_unk = 0
    for text in texts:
        for w in words_of(text):
            if w not in counts:
                pieces = tokenize(w)
                counts[w] = (len(pieces), unk in pieces)
            k, has_unk = counts[w]
            n_words, n_pieces = n_words + 1, n_pieces + k
            n_split += k >= 2
            n_unk += has_unk
    if n_words == 0:
        raise ValueError("texts contain no words (runs of letters or digits)")
    return FragmentationStats(n_words, n_pieces, n_pieces / n_words, n_split / n_words, n_unk / n_words)


# ====================================================================== text: length limits
def token_windows(ids: Sequence[int], max_length: int, strategy: str = "head",
                  stride: int | None = None) -> list[list[int]]:
    """The windows of content token ids (no special tokens) a model limited to ``max_length`` sees.

    Each window holds at most ``max_length - 2`` ids, leaving room for ``[CLS]`` and ``[SEP]``.
    ``strategy``: ``"head"`` keeps the first ids (what ``truncation=True`` does), ``"tail"`` the
    last ones, ``"chunks"`` every window starting at 0, ``stride``, 2 ``stride``, ... (default
    stride: the window size, no overlap) until the end is covered.

    >>> token_windows(list(range(10)), 6, "head"), token_windows(list(range(10)), 6, "tail")
    ([[0, 1, 2, 3]], [[6, 7, 8, 9]])
    >>> token_windows(list(range(10)), 6, "chunks")
    [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    >>> token_windows(list(range(6)), 6, "chunks", stride=2)
    [[0, 1, 2, 3], [2, 3, 4, 5]]
    """
    size = max_length - 2
    if size < 1:
        raise ValueError(f"max_length must be >= 3 (two places go to [CLS] and [SEP]), got {max_length}")
    ids = list(ids)
    if strategy == "head":
        return [ids[:size]]
    if strategy == "tail":
        return [ids[-size:] if ids else []]
    if strategy != "chunks":
        raise ValueError(f"strategy must be 'head', 'tail' or 'chunks', got {strategy!r}")
    stride = size if stride is None else stride
    if not 1 <= stride <= size:
        raise ValueError(f"stride must be in [1, {size}] (max_length - 2), got {stride}")
    windows, start = [], 0
    while True:
        windows.append(ids[start:start + size])
        if start + size >= len(ids):
            return windows
        start += stride


def long_text_embeddings(texts: Sequence[str], tokenizer, model, max_length: int,
                         strategy: str = "head", stride: int | None = None, pool: str = "mean",
                         batch_size: int = 64) -> tuple[torch.Tensor, int]:
    """Sentence embeddings (N, D) of texts longer than a model's limit, and the tokens it ran on.

    Every text is tokenised once without special tokens and cut by :func:`token_windows`; each
    window becomes ``[CLS] window [SEP]`` and is embedded like
    :func:`tlcourse.zoo.sentence_embeddings` (mean of the last hidden states over the attention
    mask, L2-normalised). With ``strategy="chunks"`` the chunk embeddings of a text are pooled
    (``pool="mean"``: their mean, ``"max"``: element-wise maximum) and normalised again:
    e(x) = normalise(mean_j e(chunk_j)). ``strategy="head"`` gives exactly what
    ``sentence_embeddings(texts, ..., max_length=max_length)`` gives. Windows are batched in
    order of length, so little compute goes to padding. Runs in eval mode on the model's device.

    Returns ``(embeddings, tokens)``: float32 CPU tensor (N, D) and the number of tokens fed to
    the model (special tokens included, padding excluded), the compute the strategy costs.
    """
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, got a single string; wrap it: [text]")
    if pool not in ("mean", "max"):
        raise ValueError(f"pool must be 'mean' or 'max', got {pool!r}")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty: there is nothing to embed")
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    owner, windows = [], []
    for i, ids in enumerate(encoded):
        for w in token_windows(ids, max_length, strategy, stride):
            owner.append(i)
            windows.append([tokenizer.cls_token_id, *w, tokenizer.sep_token_id])
    device = next(model.parameters()).device
    order = np.argsort([len(w) for w in windows], kind="stable")
    out = torch.empty(len(windows), model.config.hidden_size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                longest = max(len(windows[r]) for r in rows)
                ids = torch.full((len(rows), longest), tokenizer.pad_token_id, dtype=torch.long)
                mask = torch.zeros(len(rows), longest, dtype=torch.long)
                for j, r in enumerate(rows):
                    ids[j, :len(windows[r])] = torch.tensor(windows[r])
                    mask[j, :len(windows[r])] = 1
                ids, mask = ids.to(device), mask.to(device)
                hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
                m = mask.unsqueeze(-1).to(hidden.dtype)
                out[torch.as_tensor(rows)] = F.normalize(((hidden * m).sum(1) / m.sum(1)).float(), dim=1).cpu()
    finally:
        model.train(was_training)
    owner_t = torch.tensor(owner)
    if pool == "mean":
        pooled = torch.zeros(len(texts), out.shape[1]).index_add_(0, owner_t, out)
    else:
        pooled = torch.full((len(texts), out.shape[1]), -torch.inf).scatter_reduce_(
            0, owner_t[:, None].expand_as(out), out, "amax")
    return F.normalize(pooled, dim=1), int(sum(len(w) for w in windows))


def late_label_documents(label_texts: Sequence[str], filler_texts: Sequence[str], tokenizer,
                         min_filler_tokens: int) -> list[str]:
    """Long documents whose label-bearing text comes last, after unrelated filler sentences.

    Document i is filler sentences taken in order from ``filler_texts`` (cycling, never reusing
    one inside a document) until they hold at least ``min_filler_tokens`` content tokens, then
    ``label_texts[i]``. A model that keeps only the first ``min_filler_tokens`` tokens never sees
    the label-bearing part: the construction tests whether a long-text strategy can find text
    placed late. It is not a natural corpus.

    >>> class Toy:  # one token per word
    ...     def __call__(self, texts, add_special_tokens=False):
    ...         return {"input_ids": [t.split() for t in texts]}
    >>> late_label_documents(["label one", "label two"], ["a b", "c d e", "f"], Toy(), 3)
    ['a b c d e label one', 'f a b label two']
    """
    filler = list(filler_texts)
    if not filler:
        raise ValueError("filler_texts is empty")
    lengths = [len(ids) for ids in tokenizer(filler, add_special_tokens=False)["input_ids"]]
    docs, k = [], 0
    for text in label_texts:
        parts, n = [], 0
        while n < min_filler_tokens:
            if len(parts) == len(filler):
                raise ValueError(f"all filler texts together hold fewer than {min_filler_tokens} tokens")
            parts.append(filler[k % len(filler)])
            n += lengths[k % len(filler)]
            k += 1
        docs.append(" ".join([*parts, text]))
    return docs


# ====================================================================== time series: preparation
def zscore(x, axis: int = -1, eps: float = 1e-8):
    """Every series (or window) minus its own mean, divided by its own standard deviation.

    z = (x - mean(x)) / (std(x) + eps) along ``axis`` (population std, ddof = 0). Works on NumPy
    arrays and torch tensors of any shape; a constant series becomes zeros. Per-series statistics
    use nothing from other series, so there is nothing to leak from a test split.

    >>> zscore(torch.tensor([[0.0, 10.0], [5.0, 5.0]]))
    tensor([[-1.,  1.],
            [ 0.,  0.]])
    """
    if isinstance(x, torch.Tensor):
        mean = x.mean(dim=axis, keepdim=True)
        std = x.std(dim=axis, keepdim=True, unbiased=False)
    else:
        x = np.asarray(x, dtype=float)
        mean, std = x.mean(axis=axis, keepdims=True), x.std(axis=axis, keepdims=True)
    return (x - mean) / (std + eps)


def sliding_windows(x, length: int, stride: int):
    """Windows of ``length`` samples every ``stride`` samples: (..., T) -> (..., W, length).

    W = floor((T - length) / stride) + 1; window k covers samples [k stride, k stride + length).
    Samples after the last full window are dropped. NumPy in, NumPy out (a copy); torch in, torch
    out (a view, as ``Tensor.unfold``).

    >>> sliding_windows(np.arange(7)[None], 3, 2)
    array([[[0, 1, 2],
            [2, 3, 4],
            [4, 5, 6]]])
    """
    t = x.shape[-1]
    if not 1 <= length <= t:
        raise ValueError(f"length must be in [1, {t}] (the series length), got {length}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if isinstance(x, torch.Tensor):
        return x.unfold(-1, length, stride)
    x = np.asarray(x)
    starts = range(0, t - length + 1, stride)
    return np.stack([x[..., s:s + length] for s in starts], axis=-2)


# ====================================================================== time series: two families
SHAPES = ("sine", "square", "triangle", "sawtooth")

#: The two simulated families. Each draw: period P ~ U[period], phase ~ U[0, 1) periods, amplitude
#: a ~ U[amplitude], offset ~ U[offset], white noise sd ``noise`` * a, and a baseline wander, a
#: random walk of steps N(0, (``wander`` * a)^2) smoothed by a 32-sample moving average.
FAMILIES = {
    "source": dict(length=128, period=(12.0, 32.0), amplitude=(0.5, 2.0), offset=(-1.0, 1.0),
                   noise=0.15, wander=0.0),
    "target": dict(length=256, period=(12.0, 32.0), amplitude=(20.0, 60.0), offset=(200.0, 800.0),
                   noise=0.35, wander=0.2),
}


def _shape(name: str, u: np.ndarray) -> np.ndarray:
    """The unit waveform ``name`` at phase ``u`` (in periods), values in [-1, 1]."""
    f = u % 1.0
    if name == "sine":
        return np.sin(2 * np.pi * f)
    if name == "square":
        return np.where(f < 0.5, 1.0, -1.0)
    if name == "triangle":
        return 4 * np.abs(f - 0.5) - 1
    return 2 * f - 1  # sawtooth


def simulate_waveforms(n_per_class: int, family: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n_per_class`` series of each of the four :data:`SHAPES`, drawn from ``family``, seeded.

    The task is to name the waveform's shape. ``"source"``: 128 samples, in units near 1, no
    wander (a clean lab recording). ``"target"``: 256 samples, in units of tens to hundreds with a
    large offset, more than twice the relative noise and a strong baseline wander (a field
    sensor: the same shapes in another instrument's units). The parameters are in
    :data:`FAMILIES`. Returns ``x`` float32 (4 n_per_class, length) and ``y`` int64 labels, in
    class order.

    >>> x, y = simulate_waveforms(2, "target", seed=0)
    >>> x.shape, y.tolist()
    ((8, 256), [0, 0, 1, 1, 2, 2, 3, 3])
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {tuple(FAMILIES)}, got {family!r}")
    if not isinstance(n_per_class, (int, np.integer)) or n_per_class < 1:
        raise ValueError(f"n_per_class must be an integer >= 1, got {n_per_class!r}")
    p = FAMILIES[family]
    rng = np.random.default_rng([seed, list(FAMILIES).index(family)])
    n, t = n_per_class * len(SHAPES), np.arange(p["length"])
    y = np.repeat(np.arange(len(SHAPES)), n_per_class)
    period = rng.uniform(*p["period"], size=(n, 1))
    phase = rng.uniform(0, 1, size=(n, 1))
    amp = rng.uniform(*p["amplitude"], size=(n, 1))
    offset = rng.uniform(*p["offset"], size=(n, 1))
    x = np.stack([_shape(SHAPES[c], t / period[i, 0] + phase[i, 0]) for i, c in enumerate(y)])
    x = amp * x + offset + p["noise"] * amp * rng.standard_normal((n, len(t)))
    if p["wander"]:
        walk = np.cumsum(p["wander"] * amp * rng.standard_normal((n, len(t) + 31)), axis=1)
        x = x + np.stack([np.convolve(w, np.ones(32) / 32, mode="valid") for w in walk])
    return x.astype(np.float32), y.astype(np.int64)


# ====================================================================== time series: models
class SeriesCNN(nn.Module):
    """A tiny 1-D CNN: three convolution blocks, global average pooling, a linear head.

    (N, 1, T) -> logits (N, classes), for any T >= 8. Conv(1->8, k7) ReLU MaxPool2, Conv(8->16,
    k5) ReLU MaxPool2, Conv(16->16, k5) ReLU, mean over time, Linear(16 -> classes): 2,084
    weights for 4 classes. No BatchNorm, so fine-tuning on a handful of series has no running
    statistics to get wrong. ``features`` is everything before ``head``.

    >>> net = SeriesCNN(4)
    >>> tuple(net(torch.zeros(2, 1, 128)).shape), sum(p.numel() for p in net.parameters())
    ((2, 4), 2084)
    """

    def __init__(self, classes: int = len(SHAPES)):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, 8, 7, padding=3), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(8, 16, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(16, 16, 5, padding=2), nn.ReLU())
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(-1))


class WindowedClassifier(nn.Module):
    """Apply ``base`` to windows of a series and average the logits over windows.

    Input (N, T) or (N, 1, T). ``window=None`` uses the whole series as one window. Every window
    is z-scored on its own when ``normalise`` is true (:func:`zscore`), inside the model, so the
    same preparation runs in training and at prediction time. ``stride`` defaults to the
    window (no overlap). Output: logits (N, classes), the mean of the window logits.

    >>> clf = WindowedClassifier(SeriesCNN(4), window=128)
    >>> tuple(clf(torch.zeros(3, 512)).shape)
    (3, 4)
    """

    def __init__(self, base: nn.Module, window: int | None = None, stride: int | None = None,
                 normalise: bool = True):
        super().__init__()
        if window is not None and window < 8:
            raise ValueError(f"window must be >= 8 samples or None, got {window}")
        self.base, self.window, self.normalise = base, window, normalise
        self.stride = stride if stride is not None else window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(len(x), -1)
        w = sliding_windows(x, self.window, self.stride) if self.window else x[:, None]  # (N, W, L)
        if self.normalise:
            w = zscore(w)
        n, k, length = w.shape
        return self.base(w.reshape(n * k, 1, length)).reshape(n, k, -1).mean(1)


def pretrained_series_cnn(seed: int = 0, n_per_class: int = 400, epochs: int = 4, lr: float = 3e-3,
                          batch_size: int = 64, cache_dir: str | os.PathLike | None = None) -> SeriesCNN:
    """A :class:`SeriesCNN` trained on the simulated ``"source"`` family, trained once and cached.

    Recipe: ``n_per_class`` source series per shape (:func:`simulate_waveforms`, seed ``seed``),
    each z-scored on its own, ``epochs`` epochs of Adam (``lr``) on cross-entropy in batches of
    ``batch_size``, one torch thread; 200 fresh source series per shape (seed ``seed + 1000``)
    are held out and scored. Cached as ``<cache_dir or tlcourse.zoo.models_cache_dir()>/
    series_cnn-source-<hash12>.pt`` with the key :func:`tlcourse.zoo.recipe_hash` of the recipe,
    the generator's parameters and the seed, written atomically; a second call loads it.
    ``model.source_info`` holds the recipe, ``heldout_accuracy`` and ``train_seconds``. Returned
    in eval mode, on the CPU.
    """
    from .runtime import seed_everything
    from .train import fit, make_loader, predict
    from .zoo import RECIPE_VERSION, _atomic_write, models_cache_dir, recipe_hash

    recipe = {"architecture": "SeriesCNN", "family": "source", "n_per_class": int(n_per_class),
              "epochs": int(epochs), "lr": float(lr), "batch_size": int(batch_size),
              "optimizer": "Adam", "normalise": "zscore per series", "heldout_seed": "seed + 1000"}
    generator = {"FAMILIES.source": json.dumps(FAMILIES["source"], sort_keys=True), "SHAPES": ",".join(SHAPES)}
    key = recipe_hash(recipe, generator, seed)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else models_cache_dir()
    path = folder / f"series_cnn-source-{key}.pt"
    if path.is_file():
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            model = SeriesCNN(len(SHAPES))
            model.load_state_dict(checkpoint["state_dict"], strict=True)
            model.source_info = {**checkpoint["info"], "cache_path": str(path), "loaded_from_cache": True}
            return model.eval()
        except Exception as err:  # noqa: BLE001 - an unreadable cache file is rebuilt, loudly
            warnings.warn(f"cached model {path} could not be read ({type(err).__name__}: {err}); "
                          "training it again", stacklevel=2)
    x, y = simulate_waveforms(n_per_class, "source", seed)
    x_held, y_held = simulate_waveforms(200, "source", seed + 1000)
    seed_everything(seed)
    model = SeriesCNN(len(SHAPES))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same seed then gives the same weights on every machine
    start = time.perf_counter()
    try:
        fit(model, make_loader(zscore(torch.from_numpy(x))[:, None], torch.from_numpy(y), batch_size,
                               shuffle=True, seed=seed),
            epochs=epochs, optimizer=torch.optim.Adam(model.parameters(), lr=lr), progress=False,
            desc="series_cnn")
    finally:
        torch.set_num_threads(threads)
    held = predict(model, zscore(torch.from_numpy(x_held))[:, None]).argmax(1).numpy()
    info = json.loads(json.dumps({
        "name": "series_cnn-source", "hash": key, "recipe_version": RECIPE_VERSION, "recipe": recipe,
        "seed": int(seed), "classes": list(SHAPES), "heldout_accuracy": float((held == y_held).mean()),
        "train_seconds": round(time.perf_counter() - start, 2), "torch_version": str(torch.__version__)}))
    model.eval()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        _atomic_write(path, lambda f: torch.save({"state_dict": state, "info": info}, f))
    except OSError as err:
        warnings.warn(f"could not cache the series CNN in {folder} ({err}); it will be retrained next time",
                      stacklevel=2)
    model.source_info = {**info, "cache_path": str(path), "loaded_from_cache": False}
    return model

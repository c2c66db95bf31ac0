"""N-way K-shot episodes: the unit of data in few-shot learning.

Few-shot classification (Vinyals et al., 2016, "Matching Networks for One Shot Learning",
NeurIPS) is trained and tested on *episodes*. An N-way K-shot episode draws N classes at random,
then K labelled *support* examples and Q unlabelled *query* examples of each; the classes are
renamed 0..N-1 in a random order, so a label means nothing outside its episode and a model has to
learn from the support set alone. A *task* is the tuple ``(x_support, y_support, x_query, y_query)``;
:func:`sample_episodes` stacks T of them::

    x_support (T, N*K, *item)   y_support (T, N*K)   in 0..N-1, class-major: [0]*K + [1]*K + ...
    x_query   (T, N*Q, *item)   y_query   (T, N*Q)   same order, Q per class

so MAML (:mod:`tlcourse.meta.maml`) and prototypical networks (:mod:`tlcourse.meta.protonets`)
read the same batches. ``item`` is whatever the examples are: images (C, H, W) or embeddings (D,).

The classes of the test episodes must never have been seen in training. Omniglot (Lake et al.,
2015) is split **by alphabet** (:func:`split_by_alphabet`), so test characters come from scripts
the learner never saw, as in the original protocol (Lake et al.: 30 background and 20 evaluation
alphabets). Vinyals et al. and Snell et al. also treated rotations by 90, 180 and 270 degrees of
each character as new classes (:func:`rotate_classes`), quadrupling the training classes.

Results are reported as the mean accuracy over many test episodes with a 95 % confidence
interval, ``1.96 * std / sqrt(n)`` (:func:`mean_confidence_interval`, :func:`evaluate_episodes`).

>>> x, y = torch.arange(12.0).reshape(12, 1), torch.arange(4).repeat_interleave(3)
>>> xs, ys, xq, yq = sample_episodes(x, y, ways=2, shots=1, queries=2, tasks=5, seed=0)
>>> tuple(xs.shape), tuple(xq.shape), ys[0].tolist(), yq[0].tolist()
((5, 2, 1), (5, 4, 1), [0, 1], [0, 0, 1, 1])
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch

__all__ = ["Episode", "EpisodeIndices", "AlphabetSplit", "OmniglotByAlphabet", "EpisodeAccuracy",
           "EVALUATION_ALPHABETS", "sample_episode_indices", "sample_episodes", "split_by_alphabet",
           "rotate_classes", "omniglot_by_alphabet", "mean_confidence_interval", "evaluate_episodes"]


class Episode(NamedTuple):
    """T stacked tasks: support (T, N*K, *item) with labels (T, N*K), query (T, N*Q, *item) with
    labels (T, N*Q); labels in 0..N-1, class-major (K, then Q, consecutive examples per class)."""

    x_support: torch.Tensor
    y_support: torch.Tensor
    x_query: torch.Tensor
    y_query: torch.Tensor


class EpisodeIndices(NamedTuple):
    """Where an episode's examples sit in the data: ``support`` (T, N*K) and ``query`` (T, N*Q)
    index the rows of ``items``; ``classes`` (T, N) holds the original label of episode class n."""

    support: torch.Tensor
    query: torch.Tensor
    classes: torch.Tensor


def _check_count(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _generator(seed) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an int or a torch.Generator, got {seed!r}")
    return torch.Generator().manual_seed(int(seed))


def _check_labels(labels) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.dtype in (torch.bool,) or labels.is_floating_point() \
            or labels.is_complex():
        raise ValueError(f"labels must be a 1-d integer tensor (one class id per example), got "
                         f"{labels.dtype} of shape {tuple(labels.shape)}")
    if len(labels) and labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got {int(labels.min())}")
    return labels.cpu()


def sample_episode_indices(labels, *, ways: int, shots: int, queries: int, tasks: int = 1,
                           classes: Sequence[int] | torch.Tensor | None = None,
                           seed: int | torch.Generator = 0) -> EpisodeIndices:
    """Draw ``tasks`` N-way K-shot episodes and return the row indices of their examples.

    Each task draws ``ways`` distinct classes from ``classes`` (default: every label present),
    then ``shots + queries`` distinct examples of each without replacement, so no example is both
    support and query. Tasks are drawn independently (a class may recur across tasks).

    Args:
        labels: (M,) integer class id of each row of the data.
        ways, shots, queries: N, K and Q, each ``>= 1``.
        tasks: T, the number of episodes stacked.
        classes: the class ids allowed (e.g. the background split); each needs ``shots + queries``
            examples.
        seed: an int for a fresh generator, or a ``torch.Generator`` that a training loop carries
            along so successive calls differ. Draws happen on the CPU.

    Returns:
        :class:`EpisodeIndices` of int64 CPU tensors, support (T, N*K), query (T, N*Q), classes (T, N).

    >>> idx = sample_episode_indices(torch.tensor([0, 0, 1, 1, 2, 2]), ways=2, shots=1, queries=1)
    >>> tuple(idx.support.shape), tuple(idx.classes.shape)
    ((1, 2), (1, 2))
    >>> sample_episode_indices(torch.tensor([0, 0, 1, 1]), ways=3, shots=1, queries=1)
    Traceback (most recent call last):
    ValueError: ways=3 but only 2 classes are available to sample from; lower ways or allow more classes
    """
    ways, shots = _check_count("ways", ways), _check_count("shots", shots)
    queries, tasks = _check_count("queries", queries), _check_count("tasks", tasks)
    labels = _check_labels(labels)
    generator = _generator(seed)
    present, counts = torch.unique(labels, return_counts=True)
    if classes is None:
        pool = present
    else:
        pool = torch.as_tensor(classes).cpu()
        if pool.ndim != 1 or pool.is_floating_point() or pool.dtype == torch.bool:
            raise ValueError(f"classes must be a 1-d sequence of integer class ids, got "
                             f"{pool.dtype} of shape {tuple(pool.shape)}")
        pool = torch.unique(pool.long())
        missing = pool[~torch.isin(pool, present)]
        if len(missing):
            raise ValueError(f"classes {missing[:5].tolist()} have no examples in labels; pass "
                             "only class ids that occur in labels")
    if ways > len(pool):
        raise ValueError(f"ways={ways} but only {len(pool)} classes are available to sample from; "
                         "lower ways or allow more classes")
    pool_counts = counts[torch.searchsorted(present, pool)]
    needed = shots + queries
    if pool_counts.min() < needed:
        smallest = int(pool[pool_counts.argmin()])
        raise ValueError(f"shots + queries = {shots} + {queries} = {needed} exceeds the "
                         f"{int(pool_counts.min())} examples of class {smallest}; lower shots or "
                         "queries, or leave that class out of classes")

    # Row indices of every class in the pool, padded to the largest class: table (P, width).
    order = torch.argsort(labels, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    width = int(pool_counts.max())
    offsets = torch.arange(width)
    valid = offsets < pool_counts[:, None]
    table = order[(starts[torch.searchsorted(present, pool)][:, None] + offsets).clamp(max=len(order) - 1)]

    chosen = torch.stack([torch.randperm(len(pool), generator=generator)[:ways] for _ in range(tasks)])
    # Distinct examples per class: sort random keys, with padding keyed +inf so it comes last.
    keys = torch.rand(tasks, ways, width, generator=generator).masked_fill(~valid[chosen], math.inf)
    picked = torch.gather(table[chosen], 2, keys.argsort(dim=2)[..., :needed])  # (T, N, K + Q)
    return EpisodeIndices(support=picked[..., :shots].reshape(tasks, ways * shots),
                          query=picked[..., shots:].reshape(tasks, ways * queries),
                          classes=pool[chosen])


def sample_episodes(items: torch.Tensor, labels, *, ways: int, shots: int, queries: int,
                    tasks: int = 1, classes: Sequence[int] | torch.Tensor | None = None,
                    seed: int | torch.Generator = 0) -> Episode:
    """Draw ``tasks`` N-way K-shot episodes from ``items`` (M, *item) with ``labels`` (M,).

    Labels are renamed 0..N-1 per task, in a random order; see :func:`sample_episode_indices`
    for the arguments and the checks. The result lives on ``items.device`` with ``items.dtype``::

        x_support (T, N*K, *item), y_support (T, N*K), x_query (T, N*Q, *item), y_query (T, N*Q)

    >>> items = torch.arange(20.0).reshape(10, 2)
    >>> labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    >>> ep = sample_episodes(items, labels, ways=3, shots=2, queries=1, classes=[0, 1, 2], seed=1)
    >>> [tuple(t.shape) for t in ep]
    [(1, 6, 2), (1, 6), (1, 3, 2), (1, 3)]
    >>> ep.y_support.tolist(), ep.y_query.tolist()
    ([[0, 0, 1, 1, 2, 2]], [[0, 1, 2]])
    """
    if not isinstance(items, torch.Tensor) or items.ndim < 2:
        shape = tuple(getattr(items, "shape", ())) or type(items).__name__
        raise ValueError(f"items must be a tensor of shape (M, ...) with at least 2 dimensions, e.g. "
                         f"images (M, C, H, W) or embeddings (M, D), got {shape}")
    labels = _check_labels(labels)
    if len(labels) != len(items):
        raise ValueError(f"items and labels must have the same length, got {len(items)} items and "
                         f"{len(labels)} labels")
    idx = sample_episode_indices(labels, ways=ways, shots=shots, queries=queries, tasks=tasks,
                                 classes=classes, seed=seed)
    device = items.device
    episode_labels = torch.arange(ways, device=device)
    return Episode(items[idx.support.to(device)],
                   episode_labels.repeat_interleave(shots).expand(tasks, -1).contiguous(),
                   items[idx.query.to(device)],
                   episode_labels.repeat_interleave(queries).expand(tasks, -1).contiguous())


#: The alphabets held out for testing by :func:`split_by_alphabet` (63 of the 242 characters).
EVALUATION_ALPHABETS = ("Balinese", "Early_Aramaic", "Tagalog")


class AlphabetSplit(NamedTuple):
    """Character ids of the training (``background``) and test (``evaluation``) alphabets, sorted,
    with the alphabet names of each side."""

    background: tuple[int, ...]
    evaluation: tuple[int, ...]
    background_alphabets: tuple[str, ...]
    evaluation_alphabets: tuple[str, ...]


def split_by_alphabet(class_names: Sequence[str],
                      evaluation: Sequence[str] = EVALUATION_ALPHABETS) -> AlphabetSplit:
    """Split Omniglot's characters into disjoint background and evaluation sets by alphabet.

    ``class_names[k]`` is ``"<alphabet>/<character>"``, as in ``load("omniglot").classes``.
    Every character of an alphabet named in ``evaluation`` goes to the test side, every other one
    to the training side, so no test character shares a script with a training one. The split is
    a pure function of the names: no randomness.

    Lake et al. (2015) kept 30 background and 20 evaluation alphabets (964 and 659 characters).
    The course's offline copy has 8 alphabets (242 characters), and the default holds out three:
    Balinese (24 characters), Early Aramaic (22) and Tagalog (17). That is 3 of 8 alphabets (the
    paper: 20 of 50) but only 63 of 242 characters, which leaves 179 characters of 5 alphabets
    (Japanese katakana, Sanskrit, Korean, Latin, Greek) for training, where more classes matter
    most, while the test pool still allows 20-way episodes.

    >>> names = ["Greek/c1", "Greek/c2", "Latin/c1", "Tagalog/c1", "Tagalog/c2"]
    >>> split_by_alphabet(names, evaluation=["Tagalog"])[:2]
    ((0, 1, 2), (3, 4))
    """
    names = list(class_names)
    if not names or not all(isinstance(n, str) and "/" in n for n in names):
        raise ValueError("class_names must be a non-empty sequence of '<alphabet>/<character>' "
                         "strings, e.g. load('omniglot').classes")
    if isinstance(evaluation, str):
        raise ValueError(f"evaluation must be a sequence of alphabet names, got the string "
                         f"{evaluation!r}; write ({evaluation!r},)")
    alphabets = [n.split("/", 1)[0] for n in names]
    known = sorted(set(alphabets))
    unknown = sorted(set(evaluation) - set(known))
    if unknown:
        raise ValueError(f"unknown alphabets {unknown}; known alphabets: {', '.join(known)}")
    held_out = set(evaluation)
    if not held_out or held_out == set(known):
        raise ValueError(f"evaluation must name at least one alphabet and leave at least one for "
                         f"training; got {sorted(held_out)} out of {known}")
    return AlphabetSplit(
        background=tuple(k for k, a in enumerate(alphabets) if a not in held_out),
        evaluation=tuple(k for k, a in enumerate(alphabets) if a in held_out),
        background_alphabets=tuple(a for a in known if a not in held_out),
        evaluation_alphabets=tuple(a for a in known if a in held_out))


def rotate_classes(images: torch.Tensor, labels, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Add the rotations by 90, 180 and 270 degrees of every image as new classes.

    Image ``i`` of class ``c`` yields four images; the one rotated by ``r * 90`` degrees
    (counter-clockwise, ``torch.rot90`` on the last two axes) gets label ``c + r * num_classes``.
    Shapes: images (M, C, H, W) with H = W -> (4M, C, H, W), labels (M,) -> (4M,), rotation-major.
    The rotated copies of class set ``S`` are ``[c + r * num_classes for r in range(4) for c in S]``;
    pass those as ``classes=`` to the sampler so test characters stay out of training.

    >>> x, y = rotate_classes(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]), torch.tensor([1]), 3)
    >>> y.tolist(), x[1, 0].tolist()
    ([1, 4, 7, 10], [[2.0, 4.0], [1.0, 3.0]])
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        shape = tuple(getattr(images, "shape", ())) or type(images).__name__
        raise ValueError(f"rotate_classes needs square images of shape (M, C, H, H), got {shape}")
    labels = _check_labels(labels).to(images.device)
    if len(labels) != len(images):
        raise ValueError(f"images and labels must have the same length, got {len(images)} and "
                         f"{len(labels)}")
    num_classes = _check_count("num_classes", num_classes)
    if len(labels) and labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, num_classes={num_classes}), got {int(labels.max())}")
    rotated = torch.cat([torch.rot90(images, r, dims=(2, 3)) for r in range(4)])
    return rotated, torch.cat([labels + r * num_classes for r in range(4)])


class OmniglotByAlphabet(NamedTuple):
    """Omniglot ready for episodes: ``images`` (M, 1, 28, 28) in [0, 1] and ``labels`` (M,), the
    class ids to train on (``train_classes``) and to test on (``test_classes``), and the
    :class:`AlphabetSplit` of the 242 characters they come from."""

    images: torch.Tensor
    labels: torch.Tensor
    train_classes: tuple[int, ...]
    test_classes: tuple[int, ...]
    split: AlphabetSplit


def omniglot_by_alphabet(rotations: bool = True,
                         evaluation: Sequence[str] = EVALUATION_ALPHABETS) -> OmniglotByAlphabet:
    """Load Omniglot (``tlcourse.data.load("omniglot", "all")``) split by alphabet for episodes.

    The characters of the ``evaluation`` alphabets are the test classes, those of every other
    alphabet the training classes (:func:`split_by_alphabet`). With ``rotations`` (Vinyals et al.,
    2016; Snell et al., 2017) every image is also rotated by 90, 180 and 270 degrees
    (:func:`rotate_classes`), and the rotated copies of the *training* characters become extra
    training classes (179 -> 716 by default); the test classes stay the 63 unrotated characters.
    Rotated test characters exist in ``images`` but are in neither list, so an episode sampler
    given ``classes=train_classes`` or ``classes=test_classes`` never touches them.

    >>> omni = omniglot_by_alphabet()
    >>> len(omni.train_classes), len(omni.test_classes), tuple(omni.images.shape)
    (716, 63, (19360, 1, 28, 28))
    """
    from ..data import load

    data = load("omniglot", "all")
    images, labels = data.to_tensors()
    split = split_by_alphabet(data.classes, evaluation)
    train_classes = split.background
    if rotations:
        n = len(data.classes)
        images, labels = rotate_classes(images, labels, n)
        train_classes = tuple(c + r * n for r in range(4) for c in split.background)
    return OmniglotByAlphabet(images, labels, train_classes, split.evaluation, split)


def mean_confidence_interval(values) -> tuple[float, float]:
    """Mean and half-width of its 95 % confidence interval: ``1.96 * s / sqrt(n)``.

    ``s`` is the sample standard deviation (``n - 1`` in the denominator) of the ``n >= 2``
    values, e.g. the accuracies of n test episodes; the normal approximation is what few-shot papers
    report as "mean +- 95 % CI" over 600 to 1,000 episodes.

    >>> mean, half_width = mean_confidence_interval([0.5, 1.0, 0.5, 1.0])
    >>> mean, round(half_width, 4)
    (0.75, 0.2829)
    """
    v = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=float)
    if v.ndim != 1 or len(v) < 2 or not np.isfinite(v).all():
        raise ValueError(f"need a 1-d sequence of at least 2 finite values (one per episode), got "
                         f"shape {v.shape}" + ("" if np.isfinite(v).all() else " with NaN or inf"))
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(len(v)))


class EpisodeAccuracy(NamedTuple):
    """Mean accuracy over test episodes, the half-width of its 95 % CI, and each episode's
    accuracy (n,)."""

    mean: float
    ci95: float
    accuracies: torch.Tensor


def evaluate_episodes(predict: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                      items: torch.Tensor, labels, *, ways: int, shots: int, queries: int,
                      episodes: int = 1000, classes: Sequence[int] | torch.Tensor | None = None,
                      tasks_per_call: int = 50, seed: int | torch.Generator = 0) -> EpisodeAccuracy:
    """The standard few-shot evaluation: mean query accuracy over ``episodes`` episodes, +- 95 % CI.

    ``predict(x_support (T, N*K, *item), y_support (T, N*K), x_query (T, N*Q, *item))`` returns
    scores (T, N*Q, N) (logits, or anything whose argmax over the last axis is the predicted class).
    It is called on batches of up to ``tasks_per_call`` episodes and is responsible for its own
    ``torch.no_grad()`` and ``model.eval()`` (MAML needs gradients to adapt). With the same
    ``seed`` two models see the same episodes, so their accuracies can be compared pairwise.

    >>> x = torch.eye(4).repeat_interleave(5, 0)       # 4 classes, 5 identical examples each
    >>> y = torch.arange(4).repeat_interleave(5)
    >>> def nearest(xs, ys, xq):  # 1-shot nearest neighbour by dot product
    ...     return xq @ xs.transpose(1, 2)
    >>> evaluate_episodes(nearest, x, y, ways=4, shots=1, queries=2, episodes=10)[:2]
    (1.0, 0.0)
    """
    episodes = _check_count("episodes", episodes, minimum=2)
    tasks_per_call = _check_count("tasks_per_call", tasks_per_call)
    generator = _generator(seed)
    accuracies = []
    for start in range(0, episodes, tasks_per_call):
        tasks = min(tasks_per_call, episodes - start)
        xs, ys, xq, yq = sample_episodes(items, labels, ways=ways, shots=shots, queries=queries,
                                         tasks=tasks, classes=classes, seed=generator)
        scores = predict(xs, ys, xq)
        if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (tasks, ways * queries, ways):
            shape = tuple(getattr(scores, "shape", ())) or type(scores).__name__
            raise ValueError(f"predict must return scores of shape (T, N*Q, N) = "
                             f"({tasks}, {ways * queries}, {ways}), got {shape}")
        correct = (scores.argmax(-1) == yq.to(scores.device)).float().mean(1)
        accuracies.append(correct.detach().cpu())
    accuracies = torch.cat(accuracies)
    mean, ci95 = mean_confidence_interval(accuracies)
    return EpisodeAccuracy(mean, ci95, accuracies)

"""Prototypical networks (Snell, Swersky & Zemel, 2017, "Prototypical Networks for Few-shot
Learning", NeurIPS).

An embedding ``f`` maps each example to a vector. In an episode (:mod:`tlcourse.meta.episodes`)
the *prototype* of class n is the mean embedding of its K support examples, and a query is
classified by a softmax over its negative squared Euclidean distances to the N prototypes::

    c_n = (1 / K) * sum over support examples (x_i, y_i = n) of f(x_i)           (prototypes)
    p(y = n | x) = softmax_n( -||f(x) - c_n||^2 )                               (prototype_logits)
    loss = mean over queries of  -log p(y_true | x)                             (protonet_loss)

Nothing is adapted at test time: a new class is learned by averaging K embeddings, which makes
the method fast, and training on episodes teaches ``f`` to cluster unseen classes. Because
``-||f(x) - c_n||^2 = 2 c_n . f(x) - ||c_n||^2 - ||f(x)||^2`` and the last term is the same for
every class, the classifier is linear in ``f(x)`` (weights ``2 c_n``, bias ``-||c_n||^2``).
Squared Euclidean distance is a Bregman divergence, for which the mean is the best single
representative of a cluster; Snell et al. also found it clearly better than cosine distance.

The embedding is the 4-block convolutional network of Vinyals et al. (2016) (:func:`conv4_embedding`):
each block is a 3x3 convolution with 64 filters, batch normalisation, ReLU and 2x2 max-pooling, so a
28x28 Omniglot image becomes a 64-dimensional vector. Snell et al. train it with Adam (learning
rate 1e-3, halved every 2,000 episodes), with more classes per training episode than at test time
(60-way for Omniglot) and the same number of shots.

>>> support = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 6.0]])
>>> centres = prototypes(support, torch.tensor([0, 0, 1, 1]))
>>> centres
tensor([[1., 0.],
        [0., 5.]])
>>> prototype_logits(torch.tensor([[1.0, 1.0]]), centres)
tensor([[ -1., -17.]])
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from .._progress import tqdm

from ..dann import StepHistory
from ..train import model_device
from .episodes import Episode, EpisodeAccuracy, _check_count, _generator, evaluate_episodes, sample_episodes

__all__ = ["conv4_embedding", "prototypes", "prototype_logits", "protonet_logits", "protonet_loss",
           "train_protonet", "evaluate_protonet"]


def conv4_embedding(in_channels: int = 1, hidden: int = 64, out_channels: int = 64, *,
                    affine: bool = True, track_running_stats: bool = True) -> nn.Sequential:
    """The 4-block embedding of Vinyals et al. (2016) and Snell et al. (2017): (B, C, H, W) -> (B, D).

    Each block is ``Conv2d(3x3, padding 1) -> BatchNorm2d -> ReLU -> MaxPool2d(2)``; four blocks
    shrink 28x28 to 1x1 (28 -> 14 -> 7 -> 3 -> 1), so ``D = out_channels`` for Omniglot (64;
    111,936 parameters); for 84x84 miniImageNet the output is 64 x 5 x 5 = 1,600. Initialise it
    under ``torch.manual_seed`` for a reproducible start.

    ``affine`` and ``track_running_stats`` are passed to every ``BatchNorm2d``. The defaults suit
    prototypical networks. For MAML (:mod:`tlcourse.meta.maml`) build it with
    ``track_running_stats=False`` (each episode normalised by its own statistics, as in Finn et
    al.'s code; running averages would be hidden state shared across tasks) and ``affine=False``
    (so the exact second-order gradient can be batched over tasks with ``torch.vmap``).

    >>> net = conv4_embedding()
    >>> tuple(net(torch.zeros(2, 1, 28, 28)).shape), sum(p.numel() for p in net.parameters())
    ((2, 64), 111936)
    >>> sum(p.numel() for p in conv4_embedding(affine=False, track_running_stats=False).parameters())
    111424
    """
    for name, value in (("in_channels", in_channels), ("hidden", hidden), ("out_channels", out_channels)):
        _check_count(name, value)

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.BatchNorm2d(c_out, affine=affine, track_running_stats=track_running_stats),
                nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(in_channels, hidden), *block(hidden, hidden), *block(hidden, hidden),
                         *block(hidden, out_channels), nn.Flatten())


def _batched(t: torch.Tensor, name: str, ndim: int) -> tuple[torch.Tensor, bool]:
    """Add a leading task axis to an unbatched input; say whether it was added."""
    if not isinstance(t, torch.Tensor) or t.ndim not in (ndim, ndim + 1):
        shape = tuple(getattr(t, "shape", ())) or type(t).__name__
        raise ValueError(f"{name} must be a tensor with {ndim} dimensions, or {ndim + 1} with a "
                         f"leading task axis T, got {shape}")
    return (t.unsqueeze(0), True) if t.ndim == ndim else (t, False)


def prototypes(support: torch.Tensor, support_labels: torch.Tensor, ways: int | None = None) -> torch.Tensor:
    """Class prototypes: the mean support embedding of each class, ``c_n = mean{f(x_i) : y_i = n}``.

    Shapes: support (S, D) with labels (S,) -> (N, D); or batched, (T, S, D) with (T, S) -> (T, N, D).
    ``ways`` (N) defaults to ``max label + 1``; every class 0..N-1 needs at least one support
    example (classes may have different counts). Dtype and device follow ``support``.

    >>> prototypes(torch.tensor([[1.0], [3.0], [10.0]]), torch.tensor([0, 0, 1]))
    tensor([[ 2.],
            [10.]])
    """
    x, unbatched = _batched(support, "support", 2)
    y, _ = _batched(support_labels, "support_labels", 1)
    if y.dtype in (torch.bool,) or y.is_floating_point() or tuple(y.shape) != tuple(x.shape[:2]):
        raise ValueError(f"support_labels must be integers of shape {tuple(support.shape[:-1])} "
                         f"(one per support row), got {y.dtype} {tuple(support_labels.shape)}")
    if y.numel() and y.min() < 0:
        raise ValueError(f"support_labels must be in 0..N-1, got {int(y.min())}")
    ways = int(y.max()) + 1 if ways is None else _check_count("ways", ways)
    if y.numel() and y.max() >= ways:
        raise ValueError(f"support_labels must be in 0..{ways - 1} for ways={ways}, got {int(y.max())}")
    one_hot = F.one_hot(y.long(), ways).to(x.dtype)                # (T, S, N)
    counts = one_hot.sum(1)                                         # (T, N)
    if (counts == 0).any():
        task, cls = (counts == 0).nonzero()[0].tolist()
        raise ValueError(f"class {cls} has no support example (task {task}); every class 0..{ways - 1} "
                         "needs at least one")
    centres = one_hot.transpose(1, 2) @ x / counts.unsqueeze(-1)   # (T, N, D)
    return centres[0] if unbatched else centres


def prototype_logits(query: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Logits ``-||q - c_n||^2``: negative squared Euclidean distance of each query to each prototype.

    Shapes: query (Q, D) and prototypes (N, D) -> (Q, N); or batched, (T, Q, D) and (T, N, D) ->
    (T, Q, N). Computed from the differences (not ``|q|^2 - 2 q.c + |c|^2``), so a query equal to a
    prototype gets exactly 0, the largest possible logit.

    >>> prototype_logits(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[3.0, 4.0]]))
    tensor([[-25.],
            [ -0.]])
    """
    q, unbatched = _batched(query, "query", 2)
    c, proto_unbatched = _batched(prototypes, "prototypes", 2)
    if unbatched != proto_unbatched or q.shape[0] != c.shape[0] or q.shape[-1] != c.shape[-1]:
        raise ValueError(f"query and prototypes must both be (Q, D) and (N, D), or (T, Q, D) and "
                         f"(T, N, D) with the same T and D, got {tuple(query.shape)} and "
                         f"{tuple(prototypes.shape)}")
    logits = -(q.unsqueeze(2) - c.unsqueeze(1)).pow(2).sum(-1)
    return logits[0] if unbatched else logits


def protonet_logits(embed: nn.Module, x_support: torch.Tensor, y_support: torch.Tensor,
                    x_query: torch.Tensor, ways: int | None = None) -> torch.Tensor:
    """Query logits (T, N*Q, N) of a prototypical network on T tasks.

    ``x_support`` (T, N*K, C, H, W), ``y_support`` (T, N*K), ``x_query`` (T, N*Q, C, H, W), as made
    by :func:`~tlcourse.meta.episodes.sample_episodes`. Support and query pass through ``embed``
    in one batch, as in the authors' code (in training mode BatchNorm then normalises with the
    statistics of the whole episode). Inputs are moved to ``embed``'s device.

    >>> _ = torch.manual_seed(0)
    >>> xs, xq = torch.rand(2, 6, 1, 28, 28), torch.rand(2, 3, 1, 28, 28)
    >>> ys = torch.tensor([0, 0, 1, 1, 2, 2]).repeat(2, 1)
    >>> tuple(protonet_logits(conv4_embedding().eval(), xs, ys, xq).shape)
    (2, 3, 3)
    """
    for name, t in (("x_support", x_support), ("x_query", x_query)):
        if not isinstance(t, torch.Tensor) or t.ndim < 3:
            shape = tuple(getattr(t, "shape", ())) or type(t).__name__
            raise ValueError(f"{name} must be a batch of tasks (T, examples, *item), got {shape}")
    if x_support.shape[0] != x_query.shape[0] or x_support.shape[2:] != x_query.shape[2:]:
        raise ValueError(f"x_support and x_query must have the same number of tasks and the same "
                         f"item shape, got {tuple(x_support.shape)} and {tuple(x_query.shape)}")
    device = model_device(embed)
    tasks, n_support = x_support.shape[:2]
    both = torch.cat([x_support.flatten(0, 1), x_query.flatten(0, 1)]).to(device, non_blocking=True)
    z = embed(both)
    z_support = z[: tasks * n_support].reshape(tasks, n_support, -1)
    z_query = z[tasks * n_support:].reshape(tasks, x_query.shape[1], -1)
    return prototype_logits(z_query, prototypes(z_support, y_support.to(device), ways))


def protonet_loss(embed: nn.Module, episode: Episode, ways: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Episode loss of Snell et al.: cross-entropy of :func:`protonet_logits`, averaged over all
    queries of all tasks; also returns the query accuracy (a detached scalar tensor).

    >>> _ = torch.manual_seed(0)
    >>> ep = sample_episodes(torch.rand(20, 1, 28, 28), torch.arange(4).repeat(5), ways=4, shots=2, queries=3)
    >>> loss, acc = protonet_loss(conv4_embedding(), ep)
    >>> loss.shape, bool(0 <= acc <= 1)
    (torch.Size([]), True)
    """
    x_support, y_support, x_query, y_query = episode
    logits = protonet_logits(embed, x_support, y_support, x_query, ways)
    y = y_query.to(logits.device).reshape(-1)
    if y.numel() != logits.shape[0] * logits.shape[1]:
        raise ValueError(f"y_query must hold one label per query, shape {tuple(logits.shape[:2])}, "
                         f"got {tuple(y_query.shape)}")
    flat = logits.reshape(-1, logits.shape[-1])
    return F.cross_entropy(flat, y), (flat.argmax(1) == y).float().mean().detach()


def train_protonet(embed: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, ways: int,
                   shots: int, queries: int, episodes: int,
                   classes: Sequence[int] | torch.Tensor | None = None,
                   tasks: int = 1, lr: float = 1e-3, halve_lr_every: int | None = 2000,
                   log_every: int = 100, progress: bool = True, seed: int = 0) -> StepHistory:
    """Train ``embed`` as a prototypical network on ``episodes`` random episodes with Adam.

    Each step draws ``tasks`` N-way K-shot episodes with Q queries per class from ``classes``
    (the training split; default every label), and takes one Adam step on :func:`protonet_loss`.
    The learning rate starts at ``lr`` and halves every ``halve_lr_every`` steps (Snell et al.:
    1e-3 and 2,000; ``None`` keeps it constant). Snell et al. trained Omniglot with ``ways=60``,
    ``queries=5`` and ``shots`` equal to the test shots.

    ``images`` (M, C, H, W) may live on the CPU or on ``embed``'s device (faster on a GPU); each
    episode is moved to ``embed``'s device. ``seed`` fixes the sequence of episodes and any other
    randomness of the run; the global random state is restored afterwards. Initialise ``embed``
    under your own seed. The model is left in training mode.

    Returns:
        a :class:`~tlcourse.dann.StepHistory` with one row per ``log_every`` steps: ``step``,
        ``loss`` and ``accuracy`` (training queries, averaged since the previous row), ``lr``
        and ``seconds``.

    >>> _ = torch.manual_seed(0)
    >>> x, y = torch.rand(40, 1, 28, 28), torch.arange(8).repeat(5)
    >>> h = train_protonet(conv4_embedding(), x, y, ways=3, shots=1, queries=2, episodes=4,
    ...                    log_every=2, progress=False)
    >>> h["step"], sorted(h.rows[0])
    ([2, 4], ['accuracy', 'loss', 'lr', 'seconds', 'step'])
    """
    episodes = _check_count("episodes", episodes)
    log_every = _check_count("log_every", log_every)
    if halve_lr_every is not None:
        halve_lr_every = _check_count("halve_lr_every", halve_lr_every)
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    # Fail on impossible episodes before any training (the sampler checks ways, shots, shapes).
    sample_episodes(images, labels, ways=ways, shots=shots, queries=queries, tasks=1,
                    classes=classes, seed=0)
    device = model_device(embed)
    params = [p for p in embed.parameters() if p.requires_grad]
    if not params:
        raise ValueError("embed has no trainable parameters")
    optimizer = torch.optim.Adam(params, lr=lr)
    history = StepHistory()
    generator = _generator(seed)
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        embed.train()
        total_loss, total_acc, counted, start = 0.0, 0.0, 0, time.perf_counter()
        for step in tqdm(range(episodes), desc="protonet", disable=not progress, leave=False):
            current_lr = lr * 0.5 ** (step // halve_lr_every) if halve_lr_every else lr
            for group in optimizer.param_groups:
                group["lr"] = current_lr
            episode = sample_episodes(images, labels, ways=ways, shots=shots, queries=queries,
                                      tasks=tasks, classes=classes, seed=generator)
            loss, acc = protonet_loss(embed, episode, ways)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"prototypical loss became {loss.item()} at step {step}: "
                                         "lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
            total_acc += acc.item()
            counted += 1
            if (step + 1) % log_every == 0 or step + 1 == episodes:
                history.rows.append({"step": step + 1, "loss": total_loss / counted,
                                     "accuracy": total_acc / counted, "lr": current_lr,
                                     "seconds": time.perf_counter() - start})
                total_loss, total_acc, counted, start = 0.0, 0.0, 0, time.perf_counter()
    return history


@torch.no_grad()
def evaluate_protonet(embed: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, ways: int,
                      shots: int, queries: int = 15, episodes: int = 1000,
                      classes: Sequence[int] | torch.Tensor | None = None, batch_size: int = 500,
                      seed: int | torch.Generator = 0) -> EpisodeAccuracy:
    """Mean accuracy +- 95 % CI of a trained prototypical network over ``episodes`` test episodes.

    ``classes`` should be the held-out split (e.g. ``split_by_alphabet(...).evaluation``). The
    network runs in evaluation mode (BatchNorm with its running statistics), so each image's
    embedding does not depend on the episode around it: every image of ``classes`` is embedded
    once, in batches of ``batch_size``, and the episodes are drawn among the embeddings by
    :func:`~tlcourse.meta.episodes.evaluate_episodes`. Thousands of episodes then cost little more
    than one pass over the test images. The model's training mode is restored afterwards.

    >>> _ = torch.manual_seed(0)
    >>> x, y = torch.rand(40, 1, 28, 28), torch.arange(8).repeat(5)
    >>> result = evaluate_protonet(conv4_embedding(), x, y, ways=5, shots=1, queries=4, episodes=20)
    >>> 0 <= result.mean <= 1, result.accuracies.shape
    (True, torch.Size([20]))
    """
    labels = torch.as_tensor(labels)
    if not isinstance(images, torch.Tensor) or images.ndim < 2 or len(images) != len(labels):
        shape = tuple(getattr(images, "shape", ())) or type(images).__name__
        raise ValueError(f"images must be a tensor (M, C, H, W) with one row per label ({len(labels)}), "
                         f"got {shape}")
    batch_size = _check_count("batch_size", batch_size)
    keep = torch.ones(len(labels), dtype=torch.bool) if classes is None else \
        torch.isin(labels.cpu(), torch.as_tensor(classes).cpu())
    rows = keep.nonzero().squeeze(1)
    device = model_device(embed)
    was_training = embed.training
    embed.eval()
    try:
        pieces = [embed(images[rows[i:i + batch_size].to(images.device)].to(device))
                  for i in range(0, len(rows), batch_size)]
    finally:
        embed.train(was_training)
    if not pieces:
        raise ValueError(f"no image has a label in classes {list(classes)[:5]}...; pass class ids that "
                         "occur in labels")
    z = torch.cat(pieces)

    def predict(zs: torch.Tensor, ys: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        return prototype_logits(zq, prototypes(zs, ys, ways))

    return evaluate_episodes(predict, z, labels.cpu()[rows], ways=ways, shots=shots, queries=queries,
                             episodes=episodes, classes=classes, seed=seed)

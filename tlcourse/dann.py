"""Domain-adversarial training: DANN and its conditional variant CDAN.

DANN (Ganin & Lempitsky, 2015, "Unsupervised Domain Adaptation by Backpropagation", ICML;
Ganin et al., 2016, "Domain-Adversarial Training of Neural Networks", JMLR 17(59)) learns features
``f = G_f(x)`` that are good for the source labels and useless for telling the domains apart:

    min over G_f, G_y of  max over G_d of   CE(G_y(f_s), y_s)  -  lambda * BCE(G_d(f), d)

One backward pass does the min-max thanks to the **gradient-reversal layer** :func:`grad_reverse`:
the identity going forward, ``-lambda`` times the gradient going back. The discriminator ``G_d``
receives the ordinary gradient of the domain loss (it learns to separate the domains), while the
feature extractor receives the reversed one (it learns to confuse the discriminator). So the
total loss that is minimised is simply ``CE(source) + BCE(domain)`` with
``G_d(grad_reverse(f, lambda))``.

The schedules of Ganin et al. (2016, section 5.2.2) are plain functions of the training progress
``p = step / steps`` in ``[0, 1]``, passed to the trainer, never hidden in a layer that counts its calls:

- :func:`dann_lambda`: ``lambda_p = 2 / (1 + exp(-gamma p)) - 1`` (0 at the start, so the noisy
  early discriminator does not wreck the features; about 1 at the end);
- :func:`dann_lr`: ``mu_p = mu_0 / (1 + alpha p) ** beta``.

CDAN (Long, Cao, Wang & Jordan, 2018, "Conditional Adversarial Domain Adaptation", NeurIPS)
conditions the discriminator on the classifier's prediction ``g = softmax(G_y(f))`` through the
multilinear map ``f (x) g`` (:func:`cdan_features`), so it aligns the joint distribution of
features and predictions instead of the feature marginals only; that is what stops DANN from
matching class 3 of the source with class 8 of the target. Use ``train_dann(...,
conditioning="cdan")`` with a discriminator over ``D * C`` inputs.

The source-only baseline is ordinary supervised training: :func:`tlcourse.train.fit` on
``nn.Sequential(feature_extractor, classifier)``.

>>> x = torch.ones(3, requires_grad=True)
>>> grad_reverse(x, 0.5).sum().backward()
>>> x.grad
tensor([-0.5000, -0.5000, -0.5000])
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from ._progress import tqdm

from .batchnorm import keep_frozen_batchnorm_in_eval
from .train import History, _autocast, _check_loader, evaluate, model_device

__all__ = ["grad_reverse", "dann_lambda", "dann_lr", "DomainDiscriminator", "cdan_features",
           "StepHistory", "train_dann"]


class _GradReverse(torch.autograd.Function):
    """Identity forward; ``-lambda_ * grad`` backward. ``lambda_`` is a float, not a tensor input."""

    @staticmethod
    def forward(x: torch.Tensor, lambda_: float) -> torch.Tensor:
        # A copy, not a view: an in-place layer right after it (a discriminator that starts with
        # ReLU(inplace=True)) would otherwise modify a view created by a custom Function, which
        # autograd refuses.
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.lambda_ = inputs[1]

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output * -ctx.lambda_, None


def grad_reverse(x: torch.Tensor, lambda_: float) -> torch.Tensor:
    """The gradient-reversal layer of Ganin & Lempitsky (2015) as a pure function.

    Forward: ``R(x) = x`` (same values, shape, dtype and device). Backward:
    ``dL/dx = -lambda_ * dL/dR``. Put it between the features and the domain discriminator so one
    backward pass trains the discriminator to separate the domains and the features to confuse it.
    ``lambda_`` is an ordinary number recomputed by the caller at every step, e.g.
    ``grad_reverse(f, dann_lambda(step / steps))``; there is no hidden state.

    Args:
        x: any tensor (typically features (N, D)).
        lambda_: finite, ``>= 0``; 0 blocks the gradient, 1 flips it.

    >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> y = grad_reverse(x, 2.0)
    >>> y
    tensor([1., 2.], grad_fn=<_GradReverseBackward>)
    >>> (y * torch.tensor([3.0, -1.0])).sum().backward()
    >>> x.grad
    tensor([-6.,  2.])
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"grad_reverse needs a tensor, got {type(x).__name__}")
    try:
        value = float(lambda_)
    except (TypeError, ValueError):
        raise ValueError(f"lambda_ must be a number, got {lambda_!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"lambda_ must be finite and >= 0 (it scales the reversed gradient), "
                         f"got {lambda_!r}")
    return _GradReverse.apply(x, value)


def _check_progress(progress) -> float:
    try:
        p = float(progress)
    except (TypeError, ValueError):
        raise ValueError(f"progress must be a number in [0, 1], got {progress!r}") from None
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"progress must lie in [0, 1] (step / total_steps), got {progress!r}")
    return p


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """Adaptation weight of Ganin et al. (2016): ``2 / (1 + exp(-gamma * p)) - 1`` for ``p`` in [0, 1].

    Rises from 0 at ``p = 0`` to ``2 / (1 + e**-gamma) - 1`` (0.99991 for ``gamma = 10``) at
    ``p = 1``; ``p`` is the fraction of training done, ``step / total_steps``.

    >>> [round(dann_lambda(p), 3) for p in (0.0, 0.1, 0.5, 1.0)]
    [0.0, 0.462, 0.987, 1.0]
    >>> dann_lambda(1.5)
    Traceback (most recent call last):
    ValueError: progress must lie in [0, 1] (step / total_steps), got 1.5
    """
    p = _check_progress(progress)
    if not (gamma > 0 and math.isfinite(gamma)):
        raise ValueError(f"gamma must be a positive finite number, got {gamma!r}")
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


def dann_lr(progress: float, lr0: float = 0.01, alpha: float = 10.0, beta: float = 0.75) -> float:
    """Learning-rate annealing of Ganin et al. (2016): ``lr0 / (1 + alpha * p) ** beta``, ``p`` in [0, 1].

    With the defaults the rate falls from 0.01 to 0.01 / 11**0.75 = 0.00166 over training.
    :func:`train_dann` takes it as ``lr_schedule`` and scales every parameter group by
    ``lr_schedule(p) / lr_schedule(0)``.

    >>> dann_lr(0.0), round(dann_lr(1.0), 5)
    (0.01, 0.00166)
    """
    p = _check_progress(progress)
    if not (lr0 > 0 and alpha >= 0 and beta >= 0):
        raise ValueError(f"need lr0 > 0, alpha >= 0 and beta >= 0, got {lr0!r}, {alpha!r}, {beta!r}")
    return lr0 / (1.0 + alpha * p) ** beta


class DomainDiscriminator(nn.Module):
    """An MLP ``G_d`` that scores how "source-like" each input is: (N, in_features) -> (N,) logits.

    ``depth`` hidden layers of ``hidden`` units, each Linear -> ReLU -> Dropout, then a Linear to
    one logit (Ganin et al. 2016 used two hidden layers of 1024 units with dropout 0.5 for image
    benchmarks; a toy problem is happier with a few dozen units and no dropout). Positive logits
    mean "source". Pair it with :func:`grad_reverse` (done for you in :func:`train_dann`).

    >>> d = DomainDiscriminator(128, hidden=64)
    >>> tuple(d(torch.zeros(5, 128)).shape)
    (5,)
    """

    def __init__(self, in_features: int, hidden: int = 1024, depth: int = 2, dropout: float = 0.5):
        super().__init__()
        if in_features < 1 or hidden < 1 or depth < 0:
            raise ValueError(f"need in_features >= 1, hidden >= 1 and depth >= 0, got {in_features}, "
                             f"{hidden} and {depth}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.in_features = in_features
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Domain logits (N,) of ``features`` (N, in_features)."""
        if features.ndim != 2 or features.shape[1] != self.in_features:
            raise ValueError(f"DomainDiscriminator expects features of shape (N, {self.in_features}), "
                             f"got {tuple(features.shape)}")
        return self.net(features).squeeze(1)


def cdan_features(features: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """The multilinear conditioning ``f (x) g`` of CDAN (Long et al., 2018): (N, D) x (N, C) -> (N, D * C).

    Row ``n`` is the flattened outer product ``f_n g_n^T``: ``out[n, d * C + c] = f[n, d] * g[n, c]``.
    ``predictions`` are normally the classifier's softmax probabilities; :func:`train_dann`
    detaches them, as the authors' code does, so the domain gradient reaches the classifier only
    through the features. Dtype and device follow the inputs.

    >>> f = torch.tensor([[1.0, 2.0]])
    >>> g = torch.tensor([[0.25, 0.75, 0.0]])
    >>> cdan_features(f, g)
    tensor([[0.2500, 0.7500, 0.0000, 0.5000, 1.5000, 0.0000]])
    """
    for name, t in (("features", features), ("predictions", predictions)):
        if not isinstance(t, torch.Tensor) or t.ndim != 2:
            shape = tuple(getattr(t, "shape", ())) or type(t).__name__
            raise ValueError(f"{name} must be a tensor of shape (N, K), got {shape}")
    if features.shape[0] != predictions.shape[0]:
        raise ValueError(f"features and predictions must have the same number of rows, got "
                         f"{features.shape[0]} and {predictions.shape[0]}")
    return (features.unsqueeze(2) * predictions.unsqueeze(1)).flatten(1)


@dataclass
class StepHistory(History):
    """A :class:`~tlcourse.train.History` whose rows are logged every few optimiser steps.

    Every row has a ``step`` (steps done when it was logged); :meth:`to_frame` is indexed by it.
    """

    def to_frame(self):
        """The history as a ``pandas.DataFrame`` indexed by step."""
        import pandas as pd

        return pd.DataFrame(self.rows).set_index("step")

    def extend(self, other: "History") -> "StepHistory":
        """Append another run, renumbering its steps to follow this one's."""
        offset = self.rows[-1]["step"] if self.rows else 0
        for row in other.rows:
            self.rows.append({**row, "step": row["step"] + offset})
        return self


def _cycle(loader: Iterable, name: str) -> Iterator:
    """Batches of ``loader`` forever, starting a new pass (a new shuffle) whenever one ends."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError(f"{name} yielded no batches (it is empty, or an iterator that is already "
                             "exhausted: pass a DataLoader or a list, which can be iterated again)")


def _inputs(batch) -> torch.Tensor:
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def _check_optimizer_covers(optimizer: torch.optim.Optimizer, modules: dict[str, nn.Module]) -> None:
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for name, module in modules.items():
        trainable = [p for p in module.parameters() if p.requires_grad]
        if trainable and not any(id(p) in in_optimizer for p in trainable):
            raise ValueError(f"the optimizer holds none of the {name}'s parameters, so it would never "
                             "learn: build it over the feature extractor, classifier and discriminator")


def _check_returns_logits(discriminator: nn.Module) -> None:
    """Refuse a discriminator whose last layer is a Sigmoid or Softmax: train_dann applies
    ``binary_cross_entropy_with_logits``, which would squash its output a second time."""
    leaves = [m for m in discriminator.modules() if next(m.children(), None) is None]
    if leaves and isinstance(leaves[-1], (nn.Sigmoid, nn.Softmax)):
        raise ValueError(
            f"the discriminator ends in {type(leaves[-1]).__name__}, but train_dann needs logits: "
            f"it applies the sigmoid itself (binary_cross_entropy_with_logits), so a second one "
            f"would silently flatten the domain loss. Remove the final {type(leaves[-1]).__name__}.")


def train_dann(feature_extractor: nn.Module, classifier: nn.Module, discriminator: nn.Module,
               source_loader: Iterable, target_loader: Iterable, *, steps: int,
               optimizer: torch.optim.Optimizer,
               lambda_schedule: Callable[[float], float] = dann_lambda,
               lr_schedule: Callable[[float], float] | None = None,
               conditioning: str = "none", val_loader: Iterable | None = None,
               log_every: int | None = None, progress: bool = True, amp: bool = False,
               seed: int = 0) -> StepHistory:
    """Domain-adversarial training (DANN, or CDAN with ``conditioning="cdan"``) for ``steps`` steps.

    At step ``k`` (``p = k / steps``, ``lambda = lambda_schedule(p)``) one source batch ``(x_s, y_s)``
    and one target batch ``x_t`` (labels, if any, are ignored) are concatenated and passed through
    ``feature_extractor`` together, and the optimiser takes one step on::

        CE(classifier(f_s), y_s) + (BCE(d_s, 1) + BCE(d_t, 0)) / 2,    d = discriminator(h)
        h = grad_reverse(f, lambda)                              (DANN)
        h = cdan_features(grad_reverse(f, lambda), softmax(classifier(f)).detach())   (CDAN)

    Training is counted in steps, not epochs: each loader is cycled as needed (a new pass, reshuffled
    if the loader shuffles, starts whenever one ends), so their lengths need not match. Source and
    target batches must have the same shape apart from their size. The source-only baseline is
    :func:`tlcourse.train.fit` on ``nn.Sequential(feature_extractor, classifier)``.

    Args:
        feature_extractor: ``x`` (N, ...) -> features (N, D).
        classifier: features (N, D) -> logits (N, C).
        discriminator: (N, D) -> (N,) or (N, 1) domain logits (no final sigmoid: one ending in
            ``nn.Sigmoid`` or ``nn.Softmax`` is refused), taking (N, D * C) for CDAN; e.g.
            :class:`DomainDiscriminator`.
        source_loader: labelled ``(x, y)`` source batches.
        target_loader: unlabelled target batches, ``x`` or ``(x, ...)``.
        steps: number of optimiser steps (``>= 1``).
        optimizer: over the parameters of all three modules.
        lambda_schedule: ``p -> lambda``; :func:`dann_lambda` by default, ``lambda p: 0.0``
            switches adaptation off (the discriminator still trains, the features ignore it).
        lr_schedule: ``p -> lr``, e.g. :func:`dann_lr`; each parameter group's learning rate is set
            to its initial value times ``lr_schedule(p) / lr_schedule(0)`` (and stays at the last
            value afterwards). ``None`` keeps the optimiser's rates.
        conditioning: ``"none"`` (DANN) or ``"cdan"`` (Long et al., 2018).
        val_loader: labelled target batches; the target accuracy is logged with every row.
        log_every: steps per history row; default one row per pass over ``source_loader``.
        amp: mixed precision as in :func:`tlcourse.train.fit`.
        seed: seeds the randomness of the run itself (dropout); the global random state is
            restored afterwards. Loaders shuffle with their own generators.

    Returns:
        a :class:`StepHistory`; each row averages the steps since the previous one: ``step``,
        ``lambda`` and ``lr`` (at the row's last step), ``class_loss``, ``class_acc`` (source),
        ``domain_loss``, ``domain_acc`` (balanced accuracy of the discriminator; 0.5 means the
        domains are indistinguishable to it), ``val_loss``/``val_acc`` when ``val_loader`` is
        given, and ``seconds``.

    Raises:
        ValueError: on an empty loader, ``steps < 1``, an unknown ``conditioning``, modules on
            different devices, an optimiser that misses one of the modules, or source and target
            batches of different shapes.

    >>> _ = torch.manual_seed(0)
    >>> from tlcourse.train import make_loader
    >>> xs, ys = torch.randn(64, 2), torch.randint(0, 2, (64,))
    >>> xt = torch.randn(64, 2) + 3.0
    >>> g, c, d = nn.Linear(2, 8), nn.Linear(8, 2), DomainDiscriminator(8, hidden=16, dropout=0.0)
    >>> opt = torch.optim.SGD([*g.parameters(), *c.parameters(), *d.parameters()], lr=0.1)
    >>> h = train_dann(g, c, d, make_loader(xs, ys, 16), make_loader(xt, ys, 16), steps=8,
    ...                optimizer=opt, progress=False)
    >>> h["step"], sorted(h.rows[0])
    ([4, 8], ['class_acc', 'class_loss', 'domain_acc', 'domain_loss', 'lambda', 'lr', 'seconds', 'step'])
    """
    if conditioning not in ("none", "cdan"):
        raise ValueError(f"conditioning must be 'none' (DANN) or 'cdan', got {conditioning!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if log_every is not None and log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    _check_loader(source_loader, "source_loader")
    _check_loader(target_loader, "target_loader")
    modules = {"feature extractor": feature_extractor, "classifier": classifier,
               "discriminator": discriminator}
    devices = {name: model_device(m) for name, m in modules.items()}
    device = devices["feature extractor"]
    if len(set(devices.values())) > 1:
        raise ValueError(f"the three modules must be on one device, got {devices}")
    _check_optimizer_covers(optimizer, modules)
    _check_returns_logits(discriminator)
    if log_every is None:
        try:
            log_every = len(source_loader)  # type: ignore[arg-type]
        except TypeError:
            log_every = 100
    initial_lrs = [group["lr"] for group in optimizer.param_groups]
    lr_at_start = lr_schedule(0.0) if lr_schedule is not None else None
    if lr_at_start is not None and not lr_at_start > 0:
        raise ValueError(f"lr_schedule(0) must be positive, got {lr_at_start!r}")

    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")
    history = StepHistory()
    source_batches = _cycle(source_loader, "source_loader")
    target_batches = _cycle(target_loader, "target_loader")
    trained = nn.Sequential(feature_extractor, classifier)  # shares the modules, copies nothing

    def train_mode():
        for module in modules.values():
            module.train()
            keep_frozen_batchnorm_in_eval(module)

    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        train_mode()
        totals = dict.fromkeys(("class_loss", "class_acc", "domain_loss", "domain_acc"), 0.0)
        counted, start = 0, time.perf_counter()
        for step in tqdm(range(steps), desc="dann", disable=not progress, leave=False):
            p = step / steps
            lambda_ = float(lambda_schedule(p))
            if lr_schedule is not None:
                factor = lr_schedule(p) / lr_at_start
                for group, lr in zip(optimizer.param_groups, initial_lrs):
                    group["lr"] = lr * factor
            xs, ys = next(source_batches)
            xt = _inputs(next(target_batches))
            if xs.shape[1:] != xt.shape[1:]:
                raise ValueError(f"source and target batches must have the same shape apart from "
                                 f"their size, got {tuple(xs.shape)} and {tuple(xt.shape)}")
            xs, ys = xs.to(device, non_blocking=True), ys.to(device, non_blocking=True)
            xt = xt.to(device, non_blocking=True)
            n_s = len(xs)

            optimizer.zero_grad(set_to_none=True)
            with _autocast(device, amp):
                # One forward over both domains, as in Ganin et al.: BatchNorm sees mixed batches.
                features = feature_extractor(torch.cat([xs, xt]))
                logits = classifier(features)
                reversed_features = grad_reverse(features, lambda_)
                if conditioning == "cdan":
                    probs = F.softmax(logits.float(), dim=1).detach().to(features.dtype)
                    reversed_features = cdan_features(reversed_features, probs)
                domain_logits = discriminator(reversed_features)
            if domain_logits.numel() != len(features):
                raise ValueError(f"the discriminator must return one logit per example, shape (N,) or "
                                 f"(N, 1) with N = {len(features)}, got {tuple(domain_logits.shape)}")
            domain_logits = domain_logits.float().reshape(len(features))
            class_loss = F.cross_entropy(logits[:n_s].float(), ys)
            d_s, d_t = domain_logits[:n_s], domain_logits[n_s:]
            domain_loss = 0.5 * (F.binary_cross_entropy_with_logits(d_s, torch.ones_like(d_s))
                                 + F.binary_cross_entropy_with_logits(d_t, torch.zeros_like(d_t)))
            loss = class_loss + domain_loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"DANN loss became {loss.item()} at step {step}: lower the "
                                         "learning rate")
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

            with torch.no_grad():
                totals["class_loss"] += class_loss.item()
                totals["class_acc"] += (logits[:n_s].argmax(1) == ys).float().mean().item()
                totals["domain_loss"] += domain_loss.item()
                totals["domain_acc"] += 0.5 * ((d_s > 0).float().mean() + (d_t <= 0).float().mean()).item()
            counted += 1
            if (step + 1) % log_every == 0 or step + 1 == steps:
                row = {"step": step + 1, "lambda": lambda_, "lr": optimizer.param_groups[0]["lr"]}
                row.update({key: total / counted for key, total in totals.items()})
                if val_loader is not None:
                    metrics = evaluate(trained, val_loader, amp=amp)
                    row.update(val_loss=metrics["loss"], val_acc=metrics["accuracy"])
                    train_mode()
                row["seconds"] = time.perf_counter() - start
                history.rows.append(row)
                totals = dict.fromkeys(totals, 0.0)
                counted, start = 0, time.perf_counter()
    return history

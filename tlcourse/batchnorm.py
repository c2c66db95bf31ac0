"""BatchNorm in a frozen network: one rule, below both training loops and the fine-tuning recipes.

A BatchNorm layer has two kinds of state. Its affine weight and bias are parameters, which
``requires_grad = False`` freezes; its running mean and variance are buffers, which every forward
pass in training mode moves towards the statistics of the current batch, whatever
``requires_grad`` says. A frozen layer therefore drifts with the target batches unless it also
runs in inference mode, and ``module.eval()`` alone is undone by the next ``model.train()``.

The rule applied here, after every ``model.train()`` (by :func:`tlcourse.train.fit`,
:func:`tlcourse.dann.train_dann` and :func:`tlcourse.distill.distill`): *a BatchNorm layer whose
affine parameters are all frozen runs in inference mode*. Keras does the same for a BatchNorm
layer with ``trainable = False`` (Keras documentation, "Transfer learning & fine-tuning").
Layers without affine parameters (``affine=False``) are left as they are.

>>> net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
>>> _ = net.requires_grad_(False)
>>> keep_frozen_batchnorm_in_eval(net.train()), net[1].training, net[0].training
(1, False, True)
"""
from __future__ import annotations

from torch import nn

__all__ = ["BATCHNORM", "keep_frozen_batchnorm_in_eval"]

BATCHNORM = nn.modules.batchnorm._BatchNorm  # BatchNorm1d/2d/3d, SyncBatchNorm, the lazy ones


def keep_frozen_batchnorm_in_eval(model: nn.Module) -> int:
    """Put every BatchNorm layer whose affine parameters are all frozen into inference mode.

    Call it after ``model.train()``. Returns how many layers it set.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, BATCHNORM):
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.eval()
                count += 1
    return count

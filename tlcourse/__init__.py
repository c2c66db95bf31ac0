"""tlcourse: the companion package of the transfer-learning course.

The public API is chosen here; each concept lives in its own module:

- ``runtime``: :func:`device`, :func:`seed_everything`
- ``data``: one door to every dataset (checksummed, offline-first)
- ``zoo`` / ``models``: pretrained sources that work offline, and in-house source models
- ``features``: frozen feature extraction and linear probes
- ``finetune``: freezing, BatchNorm, discriminative learning rates, two-stage fine-tuning
- ``train``: the training loop (progress, history, early stopping, mixed precision)
- ``plots``: learning curves and confusion matrices
- ``grading``: instant feedback in exercise notebooks and a notebook grader
"""
from .runtime import device, seed_everything

__version__ = "0.1.0"
__all__ = ["device", "seed_everything", "__version__"]

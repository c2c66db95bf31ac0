"""Meta-learning and few-shot learning.

- :mod:`tlcourse.meta.maml`: MAML (Finn, Abbeel & Levine, 2017), second order with ``torch.func``,
  and its first-order variant;
- :mod:`tlcourse.meta.sinusoid`: the sinusoid-regression task family of the MAML paper;
- :mod:`tlcourse.meta.episodes`: N-way K-shot episodes (Omniglot split by alphabet);
- :mod:`tlcourse.meta.protonets`: prototypical networks (Snell, Swersky & Zemel, 2017);
- :mod:`tlcourse.meta.siamese`: siamese networks with contrastive and triplet losses, verification
  (ROC, equal error rate) and nearest-support one-shot evaluation (chapter T08).
"""

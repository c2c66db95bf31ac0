"""tlcourse: the companion package of the transfer-learning course.

The public API is chosen here; each concept lives in its own module:

- ``runtime``: :func:`device`, :func:`seed_everything`
- ``data``: one door to every dataset: images (``load``) and text (``load_text``), checksummed,
  offline-first
- ``zoo`` / ``models``: pretrained sources that work offline, and in-house source models
- ``features``: frozen feature extraction and linear probes
- ``finetune``: freezing, BatchNorm, discriminative learning rates, two-stage fine-tuning;
  ``finetune_study``: the measurements of chapter T07 (gradient cosines with references, BatchNorm
  frozen or updating, fixed-step training)
- ``train``: the training loop (progress, history, early stopping, mixed precision)
- ``compare``: fair comparisons of recipes (equal budgets, early stopping and learning rates chosen
  on validation, paired gaps over seeds, the HOG + linear SVM baseline)
- ``transfer``: scratch versus transfer on small labelled subsets; ``forgetting``: what a
  fine-tuned network keeps of its source task
- ``distill``: knowledge distillation (Hinton et al., 2015); ``distill_demo``: the small, seeded
  teacher/student experiments of chapter T13 on scikit-learn's digits
- ``dann``: domain-adversarial training (gradient reversal, DANN, CDAN); ``dann_demo``: the small
  USPS-to-MNIST study of chapter S02 (equal-budget arms, the target-BatchNorm control)
- ``meta``: MAML, prototypical networks, siamese networks, sinusoid and N-way K-shot task samplers;
  ``meta.demo``: the classification-pretrained baseline and the graph-size measurement of chapter T14
- ``adapt``: adaptation with unlabelled target data only (AdaBN: target BatchNorm statistics)
- ``l2sp``: L2-SP regularisation towards the pretrained weights (Li et al., 2018);
  ``negative_transfer_demo``: the sources and target of chapter T05
- ``curves``: the benefits of transfer read off learning curves (jumpstart, area, time to
  threshold, asymptotic gap) and the seeded curve recorder of chapter T03
- ``transferability``: LEEP, NCE, H-score, LogME
- ``zeroshot``: attribute-based zero-shot, generalised zero-shot (seen/unseen/harmonic mean),
  calibrated stacking, label-similarity text classification (chapter T09)
- ``zoo_table``: model facts read from the libraries' own APIs, FLOPs and CPU latency (chapter T10)
- ``divergence``: proxy A-distance, MMD, KL/JS between domains
- ``shifts``: Pan & Yang's source/target cases (covariate, label, concept, heterogeneous) as seeded
  2-D generators with their true conditionals, and the MMD permutation test of chapter T02
- ``similarity``: a dataset seen through a source model, and every similarity measure for one
  source/target pair beside the accuracy transfer reaches
- ``bounds``: the Ben-David et al. (2010) domain-adaptation bound, term by term;
  ``layer_transfer``: Yosinski-style layer-transfer curves (frozen or fine-tuned copied blocks)
- ``imbalance``: imbalanced targets: stated-ratio subsets, class weights, resampling (imbalanced-learn),
  logit adjustment, thresholds chosen on validation, the imbalance metrics; ``imbalance_demo``: the
  letter-detection data and arms of chapter T11
- ``sequences``: WordPiece fragmentation, truncation and chunk-and-pool for long texts, windowed and
  normalised time series with a small pretrained 1-D CNN (chapter T12)
- ``attention``: attention maps, rollout and token-removal interventions on a Transformer encoder;
  ``peft_tuning``: frozen probe, LoRA (peft) and full fine-tuning on equal batches (chapter T15)
- ``rl``: PPO on Gymnasium's vectorised CartPole with its physics as parameters, policy and value
  transfer, kickstarting, policy distillation, domain randomisation (chapter T16)
- ``bias``: a seeded biased-source construction, Zhao et al.'s bias amplification, subgroup and
  fairlearn metrics (chapter T18)
- ``bridge``: bridge (intermediate) domains and staged fine-tuning, the MNIST to MNIST-M splits of
  chapter G06; ``embedded_validation``: model selection without target labels (IWCV, DEV)
- ``plots``: learning curves and confusion matrices
- ``keras_zoo``: the Keras twins of the course's source models
- ``grading``: instant feedback in exercise notebooks and a notebook grader
- ``exercise_data``: the data splits of the graded exercises, shared by the notebooks and their checks
"""
from . import _progress  # noqa: F401  (silences tqdm's IProgress warning in kernels; see its docstring)
from .runtime import device, seed_everything

__version__ = "0.1.0"
__all__ = ["device", "seed_everything", "__version__"]

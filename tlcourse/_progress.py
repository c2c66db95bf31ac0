"""The progress bar every training loop uses: tqdm's notebook bar where ipywidgets is installed,
its text bar otherwise.

``tqdm.auto`` falls back to the text bar by itself when ipywidgets is missing, but it says so with
a ``TqdmWarning`` at import time, which would print into every executed chapter of the book. The
fallback is the intended behaviour here, so that one warning is silenced, nothing else.
"""
from __future__ import annotations

import warnings

from tqdm import TqdmWarning

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)
    from tqdm.auto import tqdm

__all__ = ["tqdm"]

"""The progress bar every training loop uses: tqdm's notebook bar where ipywidgets is installed,
its text bar otherwise.

``tqdm.auto`` falls back to the text bar by itself when ipywidgets is missing, but says so with a
``TqdmWarning`` ("IProgress not found") the first time anything imports it in a kernel, which
would print into every executed chapter of the book. The fallback is intended here, so importing
``tlcourse`` adds a filter for that one warning (any other warning still shows); it is added at
package import because transformers and others import ``tqdm.auto`` too.
"""
from __future__ import annotations

import warnings

from tqdm import TqdmWarning

warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)

from tqdm.auto import tqdm  # noqa: E402  (after the filter)

__all__ = ["tqdm"]

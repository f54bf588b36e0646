"""Small helpers around Hugging Face libraries."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide transformers' load report and per-tensor progress bar while loading local files.

    A cached model loads in well under a second, and its bar and notes (such as unused pooler
    weights, which are expected) only interrupt the user's transcript. The one long first-time step,
    the GGUF conversion, runs outside this and keeps its bar.
    """
    from transformers.utils import logging

    verbosity, bar = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logging.set_verbosity(verbosity)
        if bar:
            logging.enable_progress_bar()

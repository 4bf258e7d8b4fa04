"""Small helpers around transformers' global switches, always restored afterwards."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' per-file progress bars ("Loading weights", "Writing model shards").

    They would interleave with our own progress bars and with JSON on the CLI. The previous
    setting is restored on exit, so users who enabled the bars keep them elsewhere.
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()

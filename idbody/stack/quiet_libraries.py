"""Silence what diffusers, transformers and huggingface_hub print while ``idbody up`` builds the tiny
profile (progress bars, "weights not used" warnings), so its console stays one line per event.

Example::

    with quiet_libraries():
        build_tiny_model_dir(settings.tiny_model_dir)
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import warnings
from collections.abc import Iterator

NOISY_LOGGERS = ("diffusers", "transformers", "huggingface_hub", "accelerate", "peft")
# (module, function that turns its progress bars off, function that turns them back on)
PROGRESS_BARS = (
    ("diffusers.utils.logging", "disable_progress_bar", "enable_progress_bar"),
    ("transformers.utils.logging", "disable_progress_bar", "enable_progress_bar"),
    ("huggingface_hub.utils", "disable_progress_bars", "enable_progress_bars"),
)


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Errors still show; warnings, info and progress bars do not, until the block ends."""
    saved_levels = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    switched = []
    for module_name, off, on in PROGRESS_BARS:
        with contextlib.suppress(ImportError, AttributeError):
            module = importlib.import_module(module_name)
            getattr(module, off)()
            switched.append(getattr(module, on))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in NOISY_LOGGERS:
                logging.getLogger(name).setLevel(logging.ERROR)
            yield
    finally:
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
        for turn_on in switched:
            turn_on()

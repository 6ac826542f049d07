"""Which model profile a worker runs: one decision shared by the worker start hook and ``idbody up``.

``auto`` means ``instantid`` when the model folder verifies and CUDA exists, else ``tiny`` (random
weights built offline into ``settings.tiny_model_dir``), with the reason said in plain words.

Example::

    choice = choose_profile(settings)
    choice.profile, choice.reason     # ("tiny", "no GPU: running the tiny profile — ...")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.settings import Settings

TINY_WARNING = "images are random-weight output, for trying the API"


@dataclass(frozen=True)
class ProfileChoice:
    profile: str  # "instantid" | "tiny"
    model_dir: Path
    reason: str


def decide(requested: str, models_ok: bool, gpu: bool, model_dir: Path, tiny_dir: Path) -> ProfileChoice:
    """Pure decision from what was asked and what this host has.

    Example::

        decide("auto", models_ok=False, gpu=False, model_dir=Path("models"), tiny_dir=Path("t")).profile
        # "tiny"
    """
    if requested == "tiny":
        return ProfileChoice("tiny", tiny_dir, f"tiny profile requested: {TINY_WARNING}")
    if requested == "instantid":
        return ProfileChoice("instantid", model_dir, "instantid profile requested")
    if models_ok and gpu:
        return ProfileChoice("instantid", model_dir, f"model folder {model_dir} verifies and a GPU exists")
    missing = [what for what, ok in (("no GPU", gpu), ("models missing", models_ok)) if not ok]
    return ProfileChoice("tiny", tiny_dir, f"{' / '.join(missing)}: running the tiny profile — {TINY_WARNING}")


def model_folder_verifies(model_dir: Path) -> bool:
    """True when every file of the released model folder is in place (``worker.models.store.verify``,
    one stat per file); False when the folder is absent, partial or damaged."""
    if not Path(model_dir).is_dir():
        return False
    from worker.models.store import verify

    return verify(Path(model_dir)).complete


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def choose_profile(settings: Settings) -> ProfileChoice:
    """Probe this host (model folder, CUDA) only when ``settings.model_profile`` is ``auto``."""
    requested = settings.model_profile
    if requested != "auto":
        return decide(requested, False, False, settings.model_dir, settings.tiny_model_dir)
    models_ok = model_folder_verifies(settings.model_dir)
    gpu = cuda_available()
    return decide("auto", models_ok, gpu, settings.model_dir, settings.tiny_model_dir)

"""What the safety check does to a job's images: every image gets ``nsfw`` (true or false; null
when the operator turned the check off), and a flagged image is withheld: the image stored in its
place is a heavily blurred copy (pixelated to a 1/32 grid, then blurred), so the job keeps its
count, order, seeds and scores and the caller sees which image was withheld, but not its content.

Example::

    check = load_safety_check(settings)              # None when IDBODY_SAFETY_CHECK=false
    images, details = screen_images(check, images, details)
    details[0]["nsfw"]                               # False
    safety_label(check)                              # "nudenet-320n", or "off"
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageFilter

log = logging.getLogger(__name__)

OFF = "off"
PIXELATE = 32


@dataclass
class SafetyCheck:
    detector: Any        # .name and .score(image) -> 0-1 (worker.safety.nudity_detector.NudityDetector)
    threshold: float     # an image scoring at or above it is flagged

    def flags(self, image: Image.Image) -> bool:
        return self.detector.score(image) >= self.threshold


def load_safety_check(settings: Any) -> SafetyCheck | None:
    """The check the settings ask for: NudeNet's detector at ``safety_threshold``, or None when
    ``safety_check`` is off."""
    if not settings.safety_check:
        log.warning("safety check is off (IDBODY_SAFETY_CHECK=false): results say safety_check: off")
        return None
    from worker.safety.nudity_detector import NudityDetector

    return SafetyCheck(NudityDetector.load(settings.onnx_providers), settings.safety_threshold)


def withheld_copy(image: Image.Image) -> Image.Image:
    """What is stored instead of a flagged image: the same size, its content unreadable."""
    w, h = image.size
    coarse = image.convert("RGB").resize((max(1, w // PIXELATE), max(1, h // PIXELATE)), Image.BILINEAR)
    return coarse.resize((w, h), Image.BILINEAR).filter(ImageFilter.GaussianBlur(max(2, min(w, h) // 64)))


def screen_images(check: SafetyCheck | None, images: list[Image.Image], details: list[dict[str, Any]],
                  timings: dict[str, Any] | None = None) -> tuple[list[Image.Image], list[dict[str, Any]]]:
    """Run ``check`` on every image; flagged ones are replaced by ``withheld_copy``. Each detail
    dict gains ``nsfw`` (None when the check is off); ``timings`` gains ``safety_check_s``."""
    if check is None:
        return list(images), [{**d, "nsfw": None} for d in details]
    started, screened, marked = time.perf_counter(), [], []
    for image, detail in zip(images, details):
        flagged = check.flags(image)
        if flagged:
            log.info("safety check flagged an image (seed %s); a blurred copy is stored instead", detail.get("seed"))
        screened.append(withheld_copy(image) if flagged else image)
        marked.append({**detail, "nsfw": flagged})
    if timings is not None:
        timings["safety_check_s"] = time.perf_counter() - started
    return screened, marked


def safety_label(check: SafetyCheck | None) -> str:
    """What the result's ``safety_check`` says: the detector's name, or "off"."""
    return OFF if check is None else str(check.detector.name)

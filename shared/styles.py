"""Style presets: the curated looks a job can ask for with ``style``. Each is a short positive
fragment that goes early in the prompt (SDXL's text encoders read only the first 77 tokens) and
a negative fragment naming what the look must not turn into. Pure data, shared by the parameter
model (its choices), ``GET /api/v1/info`` (names and descriptions) and prompt building
(``worker.engine.prompts``).

Example::

    STYLES["cinematic"].positive   # "cinematic film still, dramatic lighting, shallow depth of field"
    style_list()[0]                # {"name": "photographic", "description": "..."}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

StyleName = Literal["photographic", "cinematic", "studio", "fashion", "film-noir", "watercolor", "oil-painting",
                    "anime", "3d-render"]
DEFAULT_STYLE: StyleName = "photographic"


@dataclass(frozen=True)
class Style:
    name: str
    description: str
    positive: str
    negative: str


STYLES: dict[str, Style] = {style.name: style for style in (
    # the product's look before styles existed (its quality words; the painted looks it avoids)
    Style("photographic", "A natural photograph in daylight (the default).",
          "photorealistic, natural light, sharp focus", "cartoon"),
    Style("cinematic", "A film still: dramatic light, shallow depth of field, graded colour.",
          "cinematic film still, dramatic lighting, shallow depth of field, color graded",
          "cartoon, illustration, flat lighting"),
    Style("studio", "A studio photograph on a plain backdrop with soft, even light.",
          "studio photograph, seamless plain backdrop, softbox lighting, photorealistic",
          "cartoon, illustration, cluttered background"),
    Style("fashion", "A fashion editorial: styled pose, crisp light, magazine finish.",
          "fashion editorial photograph, high fashion, crisp lighting, photorealistic",
          "cartoon, illustration, amateur snapshot"),
    Style("film-noir", "Black and white, hard shadows, 1940s crime-film mood.",
          "film noir, black and white photograph, hard shadows, high contrast",
          "color, colorful, cartoon, illustration"),
    Style("watercolor", "A watercolor painting: soft washes of colour on paper.",
          "watercolor painting, soft washes, visible paper texture",
          "photograph, photorealistic, 3d render"),
    Style("oil-painting", "A classical oil painting with visible brush strokes.",
          "oil painting on canvas, visible brush strokes, classical portraiture",
          "photograph, photorealistic, 3d render"),
    Style("anime", "A cel-shaded anime illustration.",
          "anime illustration, cel shading, clean line art, vibrant colors",
          "photograph, photorealistic, 3d render"),
    Style("3d-render", "A stylised 3D character render.",
          "3d render, stylized 3d character, octane render, soft global illumination",
          "photograph, painting, sketch"),
)}


def style_list() -> list[dict[str, str]]:
    """Name and one-line description of every preset, in the order the parameter lists them."""
    return [{"name": name, "description": STYLES[name].description} for name in get_args(StyleName)]

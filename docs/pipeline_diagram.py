"""Draws docs/pipeline.png, the README's picture of what the pipeline does to a photo.

The boxes are the stages of ``IdentityPipeline.generate``; the three insets are real outputs
of those stages, computed here from the sample photo in the insightface wheel with the tiny
profile's face analyzer (the photo itself is not drawn): the five keypoints found, the IdentityNet
condition drawn from them, and identity scores.

    python -m docs.pipeline_diagram          # rewrites docs/pipeline.png
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

OUT = Path(__file__).with_name("pipeline.png")
WIDTH, HEIGHT = 1480, 630
BOX_W, BOX_H = 310, 118
INK, MUTED, FILL, ACCENT = (30, 34, 40), (95, 102, 112), (244, 246, 250), (52, 101, 164)

STAGES = [  # (title, lines) in order; the first row runs left to right, the second too
    ("1  upload checks (api)", ["type from bytes, pixel cap, EXIF turned", "upright, animated refused, RGB"]),
    ("2  face analysis", ["largest face: embedding, 5 keypoints,", "det_score, box (antelopev2 | tiny: dlib)"]),
    ("3  prompt", ["body params + BMI band -> prompt and", "anti-close-up negative prompt"]),
    ("4  IdentityNet condition", ["keypoints moved to a full-body head", "position and drawn as InstantID does"]),
    ("5  base generation", ["SDXL + IdentityNet (face tokens) +", "IP-Adapter: `candidates` in ONE batch"]),
    ("6  identity score", ["largest face in each image, cosine", "to the upload's embedding"]),
    ("7  re-rank", ["keep the num_images best, best first;", "mark below min_identity_score"]),
    ("8  result", ["PNGs to S3; each image: identity_score,", "face_found, below_threshold, seed"]),
]


def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def box_origin(index: int) -> tuple[int, int]:
    row, col = divmod(index, 4)
    return 40 + col * (BOX_W + 60), 60 + row * 330


def draw_stage(draw: ImageDraw.ImageDraw, index: int) -> None:
    x, y = box_origin(index)
    title, lines = STAGES[index]
    draw.rounded_rectangle([x, y, x + BOX_W, y + BOX_H], radius=12, fill=FILL, outline=ACCENT, width=2)
    draw.text((x + 14, y + 12), title, fill=INK, font=font(19))
    for n, line in enumerate(lines):
        draw.text((x + 14, y + 50 + n * 24), line, fill=MUTED, font=font(15))


def arrow(draw: ImageDraw.ImageDraw, start: tuple[int, int], end: tuple[int, int]) -> None:
    draw.line([start, end], fill=ACCENT, width=3)
    (_, y0), (x1, y1) = start, end
    if y0 == y1:  # rightwards
        draw.polygon([(x1, y1), (x1 - 12, y1 - 7), (x1 - 12, y1 + 7)], fill=ACCENT)
    else:  # downwards
        draw.polygon([(x1, y1), (x1 - 7, y1 - 12), (x1 + 7, y1 - 12)], fill=ACCENT)


def connect(draw: ImageDraw.ImageDraw) -> None:
    for index in range(len(STAGES) - 1):
        x, y = box_origin(index)
        if index == 3:  # end of the first row: down and back to the start of the second
            nx, ny = box_origin(4)
            mid = y + BOX_H + 176
            down = x + BOX_W - 24
            draw.line([(down, y + BOX_H), (down, mid)], fill=ACCENT, width=3)
            draw.line([(down, mid), (nx + BOX_W // 2, mid)], fill=ACCENT, width=3)
            arrow(draw, (nx + BOX_W // 2, mid), (nx + BOX_W // 2, ny))
        else:
            arrow(draw, (x + BOX_W, y + BOX_H // 2), (x + BOX_W + 58, y + BOX_H // 2))


def stage_outputs() -> dict[str, object]:
    """Real outputs of stages 2, 4 and 6 on the wheel's sample photos (tiny profile analyzer)."""
    from tests.face_photos import t1, tom
    from worker.face.dlib_analyzer import DlibFaceAnalyzer
    from worker.face.identity_score import score_images
    from worker.face.keypoints import draw_kps, retarget_kps

    analyzer = DlibFaceAnalyzer()
    face = analyzer.analyze(tom(448))
    moved = retarget_kps(face.kps, 768, 1024, "standing")
    condition = draw_kps(768, 1024, moved)
    blank = Image.new("RGB", (256, 256), (128, 128, 128))
    scores = score_images(analyzer, face.embedding, [tom(256), t1(), blank])
    return {"kps": face.kps / 448.0, "condition": condition, "head": tuple(int(v) for v in moved.mean(axis=0)),
            "scores": [s.identity_score for s in scores]}


def draw_insets(canvas: Image.Image, outputs: dict) -> None:
    from worker.face.keypoints import KPS_COLORS

    draw = ImageDraw.Draw(canvas)
    x, y = box_origin(1)
    panel = (x + 40, y + BOX_H + 14, x + 150, y + BOX_H + 124)   # stage 2: the keypoints found
    draw.rectangle(panel, outline=MUTED)
    for (px, py), colour in zip(outputs["kps"], KPS_COLORS):
        cx, cy = panel[0] + px * 110, panel[1] + py * 110
        draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=colour)
    draw.text((panel[2] + 10, panel[1] + 30), "5 keypoints\nof a real photo", fill=MUTED, font=font(14))
    x, y = box_origin(3)                                          # stage 4: the condition image
    condition = outputs["condition"]
    canvas.paste(condition.resize((96, 128)), (x + 6, y + BOX_H + 10))
    cx, cy = outputs["head"]
    head = condition.crop((cx - 48, cy - 48, cx + 48, cy + 48)).resize((128, 128), Image.NEAREST)
    canvas.paste(head, (x + 112, y + BOX_H + 10))
    draw.rectangle([x + 112, y + BOX_H + 10, x + 240, y + BOX_H + 138], outline=MUTED)
    draw.text((x + 6, y + BOX_H + 142), "768 x 1024, and its head enlarged", fill=MUTED, font=font(13))
    x, y = box_origin(5)                                          # stage 6: measured scores
    draw.text((x + 10, y + BOX_H + 14), "measured (tiny profile's dlib recognizer):", fill=MUTED, font=font(14))
    y += 22
    labels = ["same face, resized", "another person", "no face"]
    for n, (label, score) in enumerate(zip(labels, outputs["scores"])):
        text = f"{label}: " + ("null (face_found false)" if score is None else f"{score:.3f}")
        draw.text((x + 10, y + BOX_H + 14 + n * 22), text, fill=MUTED, font=font(14))


def main() -> None:
    canvas = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((40, 16), "What identity-body does to a photo", fill=INK, font=font(24))
    for index in range(len(STAGES)):
        draw_stage(draw, index)
    connect(draw)
    draw_insets(canvas, stage_outputs())
    canvas.save(OUT, optimize=True)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

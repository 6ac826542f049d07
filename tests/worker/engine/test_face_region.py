"""Face-region emphasis on the tiny profile: IdentityNet's residuals reach the UNet only on the
face region, the face attention's direct contribution is zero elsewhere, and pixels far from the
face no longer follow the face embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.pipeline_inputs import PORTRAIT_KPS, face_embedding, pixels
from worker.engine.face_geometry import layout_face_box, region_mask
from worker.engine.generation import GenerationInputs, generate_images
from worker.face.keypoints import draw_kps, retarget_kps

W, H = 128, 192
PORTRAIT_BOX = [25, 25, 95, 110]


@pytest.fixture(scope="module")
def layout():
    kps = retarget_kps(PORTRAIT_KPS, W, H, "standing")
    box = layout_face_box(PORTRAIT_KPS, PORTRAIT_BOX, kps, (W, H))
    return kps, box, region_mask((W, H), box)


def run(engine, layout, embedding: int, region: bool, steps: int = 2) -> np.ndarray:
    kps, _, mask = layout
    inputs = GenerationInputs(prompt="full body photo of a person", negative_prompt="blurry", seed=7,
                              face_embedding=face_embedding(embedding), kps_image=draw_kps(W, H, kps),
                              face_region=mask if region else None, num_images=1, width=W, height=H, steps=steps)
    return pixels(generate_images(engine, inputs).images[0])


def distance_from(box) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    x1, y1, x2, y2 = box
    return np.maximum(np.maximum(x1 - xx, xx - x2), np.maximum(y1 - yy, yy - y2))


def test_identitynet_residuals_reach_the_unet_only_on_the_face(tiny_engine, layout):
    seen = []

    def grab(_module, _args, kwargs):
        seen.append([r.detach().clone() for r in kwargs["down_block_additional_residuals"]])

    hook = tiny_engine.pipe.unet.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        run(tiny_engine, layout, 0, region=True, steps=1)
    finally:
        hook.remove()
    mask = torch.from_numpy(layout[2])[None, None]
    for residual in seen[0]:
        outside = torch.nn.functional.interpolate(mask, size=residual.shape[-2:], mode="area")[0, 0] == 0
        assert outside.any() and residual[..., outside].abs().max() == 0
        assert residual[..., ~outside].abs().max() > 0, "the face keeps its IdentityNet residual"


def test_face_attention_adds_nothing_outside_the_face(tiny_engine, layout):
    """The first cross-attention of the UNet sees the same hidden states for any face embedding
    (IdentityNet residuals join later), so what differs between two embeddings there is the
    IP-Adapter's face attention alone, which the mask zeroes away from the face."""
    name = next(n for n in tiny_engine.pipe.unet.attn_processors if n.endswith("attn2.processor"))
    attn = tiny_engine.pipe.unet.get_submodule(name.rsplit(".", 1)[0])
    outputs = []
    hook = attn.register_forward_hook(lambda _m, _a, out: outputs.append(out.detach().clone()))
    try:
        for embedding in (0, 1):
            run(tiny_engine, layout, embedding, region=True, steps=1)
    finally:
        hook.remove()
    first, second = outputs[0], outputs[len(outputs) // 2]
    tokens = first.shape[1]
    h = int(round((tokens * H / W) ** 0.5))
    diff = (first - second).abs().amax(dim=(0, 2)).reshape(h, tokens // h)
    far = torch.from_numpy(distance_from(layout[1])[:: H // h, :: W // (tokens // h)] > 24)
    assert far.any() and diff[far].max() == 0
    assert diff.max() > 0


def test_pixels_far_from_the_face_stop_following_the_face_embedding(tiny_engine, layout):
    far = distance_from(layout[1]) > 32
    spread = {}
    for region in (False, True):
        diff = np.abs(run(tiny_engine, layout, 0, region) - run(tiny_engine, layout, 1, region))
        spread[region] = (diff[far].mean(), diff[far].max())
    assert spread[False][0] > 0.2, "without the region the embedding moves the whole picture"
    # Self-attention still carries a trace of the face's features across the frame: rounding-level.
    assert spread[True][0] < spread[False][0] / 10 and spread[True][1] <= 2

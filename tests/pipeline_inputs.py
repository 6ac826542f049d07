"""Small deterministic inputs for the engine tests: a face embedding and a keypoint image."""

from __future__ import annotations

import numpy as np

from worker.engine.generation import GenerationInputs
from worker.face.keypoints import draw_kps, retarget_kps

SIZE = 128
PORTRAIT_KPS = np.array([[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]], dtype=np.float32)


def face_embedding(seed: int = 0) -> np.ndarray:
    # Raw antelopev2 embeddings are unnormalised with a norm around 20-30.
    return np.random.default_rng(seed).normal(size=512).astype(np.float32)


def inputs(**overrides) -> GenerationInputs:
    kps = retarget_kps(PORTRAIT_KPS, SIZE, SIZE, "standing")
    base = dict(prompt="full body photo of a woman, standing", negative_prompt="blurry", seed=7,
                face_embedding=face_embedding(), kps_image=draw_kps(SIZE, SIZE, kps), num_images=2,
                width=SIZE, height=SIZE, mode="fast", steps=2, guidance=0.0)
    return GenerationInputs(**{**base, **overrides})


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)

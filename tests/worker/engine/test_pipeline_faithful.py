"""Our InstantIDPipeline.__call__ against the stock diffusers SDXL ControlNet pipeline driven the
way InstantID's authors drive it: the stock call, with IdentityNet's encoder states replaced by
the face tokens. Same weights, same seeds: the images must agree, in both modes, and every image
of a batch may carry its own face."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLControlNetPipeline

from tests.pipeline_inputs import SIZE, face_embedding, inputs, pixels
from worker.engine.generation import generate_images


def _stock_reference(engine, run, tokens: torch.Tensor, embeds: list[torch.Tensor]):
    """The stock __call__ with a pre-hook giving IdentityNet the face tokens."""
    pipe = engine.pipe

    def swap(_module, args, kwargs):
        kwargs["encoder_hidden_states"] = tokens.to(kwargs["encoder_hidden_states"].dtype)
        return args, kwargs

    handle = pipe.controlnet.register_forward_pre_hook(swap, with_kwargs=True)
    try:
        gens = [torch.Generator().manual_seed(run.seed + i) for i in range(run.num_images)]
        return StableDiffusionXLControlNetPipeline.__call__(
            pipe, prompt=run.prompt, negative_prompt=run.negative_prompt, image=run.kps_image,
            num_images_per_prompt=run.num_images, num_inference_steps=run.steps,
            guidance_scale=run.guidance, controlnet_conditioning_scale=run.controlnet_conditioning_scale,
            generator=gens, width=run.width, height=run.height, ip_adapter_image_embeds=embeds).images
    finally:
        handle.remove()


@pytest.mark.parametrize("mode,guidance,steps", [("fast", 0.0, 2), ("quality", 5.0, 2)])
def test_matches_the_stock_pipeline_with_face_tokens_swapped_in(tiny_engine, mode, guidance, steps):
    run = inputs(mode=mode, guidance=guidance, steps=steps, num_images=2)
    ours = generate_images(tiny_engine, run).images
    tiny_engine.modes.use(mode)
    pipe = tiny_engine.pipe
    pipe.set_ip_adapter_scale(run.ip_adapter_scale)
    tokens, embeds = pipe.identity_conditioning(torch.from_numpy(run.face_embedding), run.num_images, guidance > 1)
    theirs = _stock_reference(tiny_engine, run, tokens, embeds)
    for a, b in zip(ours, theirs):
        assert np.abs(pixels(a) - pixels(b)).max() <= 1


def test_each_image_of_a_batch_can_carry_its_own_face(tiny_engine):
    """Images 0 and 1 with faces A and B in one call == each face alone with its seed."""
    faces = np.stack([face_embedding(1), face_embedding(2)])
    pipe = tiny_engine.pipe
    tiny_engine.modes.use("fast")
    pipe.set_ip_adapter_scale(0.8)
    run = inputs(num_images=1)

    def call(face, seeds):
        return pipe(prompt=run.prompt, negative_prompt=run.negative_prompt, image=run.kps_image,
                    face_embedding=torch.from_numpy(face), num_images_per_prompt=len(seeds),
                    num_inference_steps=2, guidance_scale=0.0, width=SIZE, height=SIZE,
                    generator=[torch.Generator().manual_seed(s) for s in seeds]).images

    together = call(faces, [7, 8])
    alone = [call(faces[0], [7])[0], call(faces[1], [8])[0]]
    for a, b in zip(together, alone):
        assert np.abs(pixels(a) - pixels(b)).max() <= 1
    assert np.abs(pixels(together[0]) - pixels(together[1])).max() > 1

"""InstantID on diffusers' SDXL ControlNet pipeline: the one thing stock diffusers does not do.

InstantID's IdentityNet is a plain ``ControlNetModel`` whose cross-attention must see the 16
projected face tokens instead of the text embeddings, while the UNet sees text + face tokens
through diffusers' IP-Adapter machinery. ``StableDiffusionXLControlNetPipeline`` always hands
its ControlNet the text embeddings, so this subclass swaps them for the face tokens with a
forward pre-hook on the ControlNet that lives only for the duration of one call. Everything else
(prompt encoding, latents, denoise loop, IP-Adapter embeds, callbacks, decode) is the stock
pipeline's own ``__call__``.

The rule lives in ``InstantIDMethods``, shared by the text-to-image pipeline and its img2img twin
(``InstantIDImg2ImgPipeline``, the face-detail pass's). ``face_region`` restricts IdentityNet and
the face attention to the face (worker.engine.face_region).

The face tokens are the UNet's loaded IP-Adapter projection
(``unet.encoder_hid_proj.image_projection_layers[0]``, a Resampler) applied to the face
embedding; under classifier-free guidance the negative half is the projection of a zero
embedding, in the same [negative, positive] order the pipeline concatenates prompts in.

Example::

    pipe = InstantIDPipeline(**sdxl.components, controlnet=identitynet)
    pipe.load_ip_adapter(model_dir, subfolder="instantid", weight_name="ip-adapter.bin",
                         image_encoder_folder=None)
    images = pipe(prompt, image=kps_image, face_embedding=emb, num_images_per_prompt=4).images
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager

import numpy as np
import torch
from diffusers import StableDiffusionXLControlNetImg2ImgPipeline, StableDiffusionXLControlNetPipeline

from worker.engine.face_region import face_region_masks
from worker.engine.vae_memory import VaeMemoryMethods


class InstantIDMethods:
    """What InstantID adds to a diffusers SDXL ControlNet pipeline (text-to-image or img2img)."""

    def face_projection(self) -> torch.nn.Module:
        proj = getattr(self.unet, "encoder_hid_proj", None)
        if proj is None:
            raise RuntimeError("InstantIDPipeline needs the IP-Adapter loaded (load_ip_adapter) first")
        return proj.image_projection_layers[0]

    @torch.no_grad()
    def face_tokens(self, face_embedding: torch.Tensor) -> torch.Tensor:
        """[N, 512] face embeddings -> [N, 16, cross_attention_dim] tokens."""
        proj = self.face_projection()
        param = next(proj.parameters())
        return proj(face_embedding.to(device=param.device, dtype=param.dtype)[:, None, :])

    @staticmethod
    def ip_adapter_embeds(face_embedding: torch.Tensor, guidance: bool) -> list[torch.Tensor]:
        """The 4-D [batch, images, seq, 512] embeds diffusers expects for a Resampler projection;
        with guidance, zeros first (the pipeline splits them with .chunk(2))."""
        emb = face_embedding.reshape(1, 1, 1, -1)
        return [torch.cat([torch.zeros_like(emb), emb]) if guidance else emb]

    @contextmanager
    def identitynet_sees(self, tokens: torch.Tensor):
        """Within the block, the ControlNet's encoder_hidden_states are ``tokens``."""

        def swap(_module, args, kwargs):
            text = kwargs["encoder_hidden_states"]
            if text.shape[0] != tokens.shape[0]:
                raise RuntimeError(f"IdentityNet batch {text.shape[0]} != face token batch {tokens.shape[0]}")
            kwargs["encoder_hidden_states"] = tokens.to(device=text.device, dtype=text.dtype)
            return args, kwargs

        handle = self.controlnet.register_forward_pre_hook(swap, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()

    def _guidance_on(self, guidance_scale: float) -> bool:
        return guidance_scale > 1 and self.unet.config.time_cond_proj_dim is None

    def __call__(self, *args, face_embedding: torch.Tensor, num_images_per_prompt: int = 1,
                 guidance_scale: float = 5.0, face_region: np.ndarray | None = None, **kwargs):
        """The stock call, plus ``face_embedding`` ([512] raw antelopev2 embedding). Pass the
        prompt as a single string: one prompt, ``num_images_per_prompt`` images.

        ``face_region`` ((height, width) array, 1 on the face): IdentityNet's residuals and the
        IP-Adapter's face attention act only there (worker.engine.face_region)."""
        guidance = self._guidance_on(guidance_scale)
        face_embedding = face_embedding.reshape(1, -1).float()
        positive = self.face_tokens(face_embedding).repeat(num_images_per_prompt, 1, 1)
        tokens = positive
        if guidance:
            negative = self.face_tokens(torch.zeros_like(face_embedding)).repeat(num_images_per_prompt, 1, 1)
            tokens = torch.cat([negative, positive])
        embeds = [e.to(self.unet.dtype) for e in self.ip_adapter_embeds(face_embedding, guidance)]
        with ExitStack() as stack:
            stack.enter_context(self.identitynet_sees(tokens))
            if face_region is not None:
                masks = face_region_masks(face_region, self._execution_device, self.unet.dtype)
                stack.enter_context(masks.on_identitynet(self.controlnet))
                kwargs["cross_attention_kwargs"] = {**(kwargs.get("cross_attention_kwargs") or {}),
                                                    **masks.ip_adapter_kwargs()}
            return super().__call__(*args, ip_adapter_image_embeds=embeds, num_images_per_prompt=num_images_per_prompt,
                                    guidance_scale=guidance_scale, **kwargs)


class InstantIDPipeline(InstantIDMethods, VaeMemoryMethods, StableDiffusionXLControlNetPipeline):
    """SDXL + IdentityNet + IP-Adapter, as InstantID wires them."""


class InstantIDImg2ImgPipeline(InstantIDMethods, StableDiffusionXLControlNetImg2ImgPipeline):
    """The same rule on diffusers' SDXL ControlNet img2img pipeline: the face-detail pass
    (worker.engine.face_detail) builds it with ``from_pipe`` over the loaded components, so it
    holds no weights of its own. ``image`` is the picture to refine, ``control_image`` the
    keypoint condition."""

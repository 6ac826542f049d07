"""InstantID on diffusers' SDXL ControlNet pipeline: the one thing stock diffusers does not do.

InstantID's IdentityNet is a plain ``ControlNetModel`` whose cross-attention must see the 16
projected face tokens instead of the text embeddings, while the UNet sees text + face tokens
through diffusers' IP-Adapter machinery. ``StableDiffusionXLControlNetPipeline`` always hands
its ControlNet the text embeddings, so this subclass swaps them for the face tokens with a
forward pre-hook on the ControlNet that lives only for the duration of one call. Everything else
(prompt encoding, latents, denoise loop, IP-Adapter embeds, callbacks, decode) is the stock
pipeline's own ``__call__``.

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

from contextlib import contextmanager

import torch
from diffusers import StableDiffusionXLControlNetPipeline

from worker.engine.vae_memory import VaeMemoryMethods


class InstantIDPipeline(VaeMemoryMethods, StableDiffusionXLControlNetPipeline):
    """SDXL + IdentityNet + IP-Adapter, as InstantID wires them."""

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
        """The 4-D [rows, images, seq, 512] embeds diffusers expects for a Resampler projection
        (one row per face); with guidance, zeros first (the pipeline splits them with .chunk(2))."""
        emb = face_embedding.reshape(-1, 1, 1, face_embedding.shape[-1])
        return [torch.cat([torch.zeros_like(emb), emb]) if guidance else emb]

    def prepare_ip_adapter_image_embeds(self, ip_adapter_image, ip_adapter_image_embeds, device,
                                        num_images_per_prompt, do_classifier_free_guidance):
        """diffusers repeats one image embed for every image of the call; embeds that already hold
        one face per image row (micro-batching) pass through as they are."""
        if ip_adapter_image_embeds is not None:
            rows = ip_adapter_image_embeds[0].shape[0] // (2 if do_classifier_free_guidance else 1)
            if rows > 1:
                if rows != num_images_per_prompt:
                    raise ValueError(f"{rows} face rows for {num_images_per_prompt} images")
                return [e.to(device) for e in ip_adapter_image_embeds]
        return super().prepare_ip_adapter_image_embeds(ip_adapter_image, ip_adapter_image_embeds, device,
                                                       num_images_per_prompt, do_classifier_free_guidance)

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
                 guidance_scale: float = 5.0, **kwargs):
        """The stock call, plus ``face_embedding`` ([512] raw antelopev2 embedding). Pass the
        prompt as a single string: one prompt, ``num_images_per_prompt`` images. Or, for a batch
        of different people (micro-batching), one [rows, 512] embedding per image row with
        ``prompt_embeds`` of as many rows and ``num_images_per_prompt=1``."""
        guidance = self._guidance_on(guidance_scale)
        face_embedding = face_embedding.reshape(-1, face_embedding.shape[-1]).float()
        if face_embedding.shape[0] > 1 and num_images_per_prompt != 1:
            raise ValueError("one face embedding per image row needs num_images_per_prompt=1")
        positive = self.face_tokens(face_embedding).repeat_interleave(num_images_per_prompt, dim=0)
        tokens = positive
        if guidance:
            negative = self.face_tokens(torch.zeros_like(face_embedding)).repeat_interleave(num_images_per_prompt, dim=0)
            tokens = torch.cat([negative, positive])
        embeds = [e.to(self.unet.dtype) for e in self.ip_adapter_embeds(face_embedding, guidance)]
        with self.identitynet_sees(tokens):
            return super().__call__(*args, ip_adapter_image_embeds=embeds, num_images_per_prompt=num_images_per_prompt,
                                    guidance_scale=guidance_scale, **kwargs)

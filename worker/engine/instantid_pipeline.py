"""InstantID on SDXL: the one thing stock diffusers does not do, written where it happens.

InstantID's IdentityNet is a plain ``ControlNetModel`` whose cross-attention sees the 16
projected face tokens and never the text, while the UNet sees text + face tokens through
diffusers' IP-Adapter machinery. ``StableDiffusionXLControlNetPipeline`` always hands its
ControlNet the text embeddings, so this pipeline has its own ``__call__``, in the stock
pipeline's reading order, built from the stock helpers (``encode_prompt``, ``prepare_image``,
``prepare_latents``, ``_get_add_time_ids``, the scheduler, the image processor). Step 4 is the
InstantID-specific one, and step 8 is where IdentityNet is given the face tokens.

The face tokens are the UNet's loaded IP-Adapter projection
(``unet.encoder_hid_proj.image_projection_layers[0]``, a Resampler) applied to the face
embedding; under classifier-free guidance the negative half is the projection of a zero
embedding, in the same [negative, positive] order the prompts are concatenated in.

The same call refines an existing picture (img2img, the face-detail pass's use): given
``image_to_refine`` and ``strength``, step 5 keeps the last ``strength`` share of the schedule and
step 6 starts from the picture's latents noised to that point, diffusers' img2img rule. One
pipeline for both keeps the IdentityNet rule written once and holds no second copy of anything.
``face_region`` (1 on the face) keeps IdentityNet's residuals and the IP-Adapter's face
attention to the face (worker.engine.face_region), applied in step 8.

An optional second ControlNet for the body pose (``pose_controlnet``, an SDXL OpenPose net, set
by the loader when its weights are present) joins IdentityNet as diffusers' multi-ControlNet
does — each net's residuals summed before the UNet — but is called on its own in step 8: diffusers'
``MultiControlNetModel`` hands every net the same encoder states, while IdentityNet must see the
face tokens and an OpenPose net the text it was trained with (what InstantID's own multi-ControlNet
pipeline does too). The face region restricts IdentityNet only.

Every image of a call may have its own face: ``face_embedding`` is [512] (one face for all
images) or [N, 512] (one per image), and ``image`` (the keypoint condition) one PIL image or a
list of N. That is what lets the engine batch several jobs into one denoise pass.

Example::

    pipe = InstantIDPipeline(**sdxl.components, controlnet=identitynet)
    pipe.load_ip_adapter(model_dir, subfolder="instantid", weight_name="ip-adapter.bin",
                         image_encoder_folder=None)
    images = pipe(prompt, image=kps_image, face_embedding=emb, num_images_per_prompt=4).images
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from diffusers import StableDiffusionXLControlNetPipeline
from diffusers.pipelines.stable_diffusion_xl.pipeline_output import StableDiffusionXLPipelineOutput
from diffusers.utils.torch_utils import is_compiled_module
from PIL import Image

from worker.engine.face_region import face_region_masks
from worker.engine.vae_memory import VaeMemoryMethods

StepCallback = Callable[[Any, int, torch.Tensor, dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def guidance_applies(pipe: Any, guidance_scale: float) -> bool:
    """The one guidance on/off rule (diffusers' own, for every SDXL pipeline): classifier-free
    guidance runs above a scale of 1, and never for a UNet that takes the scale as an embedding.
    Prompt encoding asks it too, so negative embeddings exist exactly when the loop uses them."""
    return guidance_scale > 1 and pipe.unet.config.time_cond_proj_dim is None


# The official InstantID demo's default pose strength: the skeleton guides the body without
# overruling IdentityNet at the face.
POSE_CONDITIONING_SCALE = 0.4


class InstantIDPipeline(VaeMemoryMethods, StableDiffusionXLControlNetPipeline):
    """SDXL + IdentityNet + IP-Adapter, as InstantID wires them (+ an optional pose ControlNet)."""

    pose_controlnet: torch.nn.Module | None = None   # a ControlNetModel, set by worker.engine.loading

    # --- the InstantID-specific pieces ---------------------------------------------------
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

    def identity_conditioning(self, face_embedding: torch.Tensor, count: int,
                              guidance: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(IdentityNet's encoder states, the UNet's IP-Adapter embeds) for ``count`` images.

        IdentityNet: the face tokens, [negative (zero face), positive] under guidance.
        UNet: the raw embeddings as diffusers' IP-Adapter expects them for a Resampler,
        [batch, images=1, seq=1, 512], zeros first under guidance (it splits them with chunk(2)).
        """
        faces = face_embedding.float().reshape(-1, face_embedding.shape[-1])
        if faces.shape[0] not in (1, count):
            raise ValueError(f"face_embedding holds {faces.shape[0]} faces for {count} images")
        faces = faces.expand(count, -1)
        tokens, embeds = self.face_tokens(faces), faces[:, None, None, :]
        if guidance:
            tokens = torch.cat([self.face_tokens(torch.zeros_like(faces)), tokens])
            embeds = torch.cat([torch.zeros_like(embeds), embeds])
        return tokens, [embeds.to(device=self._execution_device, dtype=self.unet.dtype)]

    # --- the call, in the stock pipeline's order -------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image: Image.Image | list[Image.Image] | None = None,
        *,
        face_embedding: torch.Tensor,
        negative_prompt: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 30,
        guidance_scale: float = 5.0,
        controlnet_conditioning_scale: float = 0.8,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        callback_on_step_end: StepCallback | None = None,
        return_dict: bool = True,
        image_to_refine: Image.Image | list[Image.Image] | None = None,
        strength: float = 1.0,
        face_region: np.ndarray | None = None,
        pose_image: Image.Image | list[Image.Image] | None = None,
        pose_conditioning_scale: float = POSE_CONDITIONING_SCALE,
    ):
        """One prompt (or N prompt embeddings), N = prompts x ``num_images_per_prompt`` images.

        ``callback_on_step_end(pipe, step, timestep, {"latents": ...})`` is called after every
        step and may return new latents; setting ``pipe._interrupt`` stops the loop.
        """
        # 1. check inputs; guidance is on only above 1 and only for a UNet without guidance embedding
        height = height or self.default_sample_size * self.vae_scale_factor
        width = width or self.default_sample_size * self.vae_scale_factor
        self._guidance_scale, self._interrupt = guidance_scale, False
        self._cross_attention_kwargs, self._clip_skip, self._denoising_end = None, None, None
        guidance = guidance_applies(self, guidance_scale)
        device = self._execution_device

        # 2. encode the prompt (or take the given embeddings) for every image
        prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds = (
            self.encode_prompt(
                prompt, None, device, num_images_per_prompt, guidance, negative_prompt, None,
                prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
                pooled_prompt_embeds=pooled_prompt_embeds,
                negative_pooled_prompt_embeds=negative_pooled_prompt_embeds))
        count = prompt_embeds.shape[0]

        # 3. the IdentityNet condition: the face keypoints drawn at the output size, one per image
        control = self._keypoint_condition(image, count, width, height, device, guidance)
        height, width = control.shape[-2:]
        #    and the pose ControlNet's: the skeleton at the output size, one per image
        pose = None
        if pose_image is not None:
            if self.pose_controlnet is None:
                raise ValueError("pose_image needs a pose ControlNet; none is loaded")
            pose = self._keypoint_condition(pose_image, count, width, height, device, guidance)

        # 4. InstantID: face tokens for IdentityNet, IP-Adapter embeds for the UNet
        face_tokens, ip_embeds = self.identity_conditioning(torch.as_tensor(face_embedding), count, guidance)
        face_tokens = face_tokens.to(device=device, dtype=prompt_embeds.dtype)

        # 5. timesteps (img2img: the last ``strength`` share of them)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        if image_to_refine is not None:
            timesteps = self._refine_timesteps(timesteps, num_inference_steps, strength)
        self._num_timesteps = len(timesteps)

        # 6. initial latents, one seeded generator per image (img2img: the picture's, noised)
        if image_to_refine is None:
            latents = self.prepare_latents(count, self.unet.config.in_channels, height, width,
                                           prompt_embeds.dtype, device, generator, latents)
        else:
            latents = self._noised_latents(image_to_refine, timesteps[:1], count, (height, width),
                                           prompt_embeds.dtype, device, generator)
        region = None if face_region is None else face_region_masks(face_region, device, prompt_embeds.dtype,
                                                                    repeat=2 if guidance else 1)
        step_kwargs = self.prepare_extra_step_kwargs(generator, 0.0)

        # 7. SDXL's added conditioning (pooled text + size ids), [negative, positive] under guidance
        text_embeds, time_ids = self._added_conditioning(pooled_prompt_embeds, (height, width), count)
        if guidance:
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds])
            text_embeds = torch.cat([negative_pooled_prompt_embeds, text_embeds])
            time_ids = torch.cat([time_ids, time_ids])
        added = {"text_embeds": text_embeds.to(device), "time_ids": time_ids.to(device)}
        timestep_cond = self._guidance_embedding(count, device, latents.dtype)

        # 8. denoise: IdentityNet sees the face tokens, never the text; the UNet sees text + face
        graphs = torch.cuda.is_available() and is_compiled_module(self.unet)
        with self.progress_bar(total=len(timesteps)) as bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    break
                if graphs:
                    torch.compiler.cudagraph_mark_step_begin()
                model_input = self.scheduler.scale_model_input(
                    torch.cat([latents] * 2) if guidance else latents, t)
                down, mid = self.controlnet(
                    model_input, t, encoder_hidden_states=face_tokens, controlnet_cond=control,
                    conditioning_scale=controlnet_conditioning_scale, added_cond_kwargs=added,
                    return_dict=False)
                if region is not None:   # face-region emphasis: IdentityNet acts on the face only
                    down, mid = region.restrict(down, mid)
                if pose is not None:     # the pose net reads the text; its residuals add to IdentityNet's
                    pose_down, pose_mid = self.pose_controlnet(
                        model_input, t, encoder_hidden_states=prompt_embeds, controlnet_cond=pose,
                        conditioning_scale=pose_conditioning_scale, added_cond_kwargs=added, return_dict=False)
                    down, mid = [a + b for a, b in zip(down, pose_down)], mid + pose_mid
                noise = self.unet(
                    model_input, t, encoder_hidden_states=prompt_embeds, timestep_cond=timestep_cond,
                    cross_attention_kwargs=None if region is None else region.ip_adapter_kwargs(),
                    down_block_additional_residuals=down, mid_block_additional_residual=mid,
                    added_cond_kwargs={**added, "image_embeds": ip_embeds}, return_dict=False)[0]
                if guidance:
                    uncond, cond = noise.chunk(2)
                    noise = uncond + guidance_scale * (cond - uncond)
                latents = self.scheduler.step(noise, t, latents, **step_kwargs, return_dict=False)[0]
                if callback_on_step_end is not None:
                    latents = callback_on_step_end(self, i, t, {"latents": latents}).pop("latents", latents)
                bar.update()

        # 9. decode
        images = latents if output_type == "latent" else self._decode(latents, output_type)
        self.maybe_free_model_hooks()
        return StableDiffusionXLPipelineOutput(images=images) if return_dict else (images,)

    # --- steps 3, 7, 8, 9 in detail ---------------------------------------------------------
    def _keypoint_condition(self, image, count: int, width: int, height: int, device, guidance: bool):
        images = image if isinstance(image, list) else [image]
        if len(images) not in (1, count):
            raise ValueError(f"{len(images)} keypoint images for {count} images")
        per_image = count if len(images) == 1 else 1
        conditions = [self.prepare_image(image=img, width=width, height=height, batch_size=per_image,
                                         num_images_per_prompt=1, device=device, dtype=self.controlnet.dtype,
                                         do_classifier_free_guidance=False) for img in images]
        control = torch.cat(conditions)
        return torch.cat([control] * 2) if guidance else control

    def _refine_timesteps(self, timesteps: torch.Tensor, steps: int, strength: float) -> torch.Tensor:
        keep = min(int(steps * strength), steps)   # diffusers' img2img rule
        if keep < 1:
            raise ValueError(f"strength {strength} of {steps} steps leaves no step to run")
        start = (steps - keep) * self.scheduler.order
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(start)
        return timesteps[start:]

    def _noised_latents(self, image, first_t: torch.Tensor, count: int, size: tuple[int, int], dtype,
                        device, generator) -> torch.Tensor:
        from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img import (
            retrieve_latents,
        )
        from diffusers.utils.torch_utils import randn_tensor

        pixels = self.image_processor.preprocess(image, height=size[0], width=size[1])
        pixels = pixels.to(device=device, dtype=self.vae.dtype).expand(count, -1, -1, -1)
        generators = generator if isinstance(generator, list) else [generator] * count
        encoded = torch.cat([retrieve_latents(self.vae.encode(pixels[i:i + 1]), generator=generators[i])
                             for i in range(count)]) * self.vae.config.scaling_factor
        noise = randn_tensor(encoded.shape, generator=generators, device=device, dtype=encoded.dtype)
        return self.scheduler.add_noise(encoded, noise, first_t.repeat(count)).to(dtype)

    def _added_conditioning(self, pooled: torch.Tensor, size: tuple[int, int], count: int):
        projection_dim = (int(pooled.shape[-1]) if self.text_encoder_2 is None
                          else self.text_encoder_2.config.projection_dim)
        time_ids = self._get_add_time_ids(size, (0, 0), size, dtype=pooled.dtype,
                                          text_encoder_projection_dim=projection_dim)
        return pooled, time_ids.repeat(count, 1)

    def _guidance_embedding(self, count: int, device, dtype) -> torch.Tensor | None:
        """LCM-distilled UNets take the guidance scale as an embedding (SDXL + LCM-LoRA does not)."""
        if self.unet.config.time_cond_proj_dim is None:
            return None
        scale = torch.tensor(self.guidance_scale - 1).repeat(count)
        return self.get_guidance_scale_embedding(
            scale, embedding_dim=self.unet.config.time_cond_proj_dim).to(device=device, dtype=dtype)

    def _decode(self, latents: torch.Tensor, output_type: str):
        upcast = self.vae.dtype == torch.float16 and self.vae.config.force_upcast
        if upcast:
            self.upcast_vae()
            latents = latents.to(next(iter(self.vae.post_quant_conv.parameters())).dtype)
        image = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
        if upcast:
            self.vae.to(dtype=torch.float16)
        if self.watermark is not None:
            image = self.watermark.apply_watermark(image)
        return self.image_processor.postprocess(image, output_type=output_type)

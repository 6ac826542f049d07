"""The seed's ``pipeline.pipe.enable_vae_tiling()``: diffusers 0.42 dropped the pipeline-level
VAE memory switches in favour of ``pipe.vae.enable_tiling()``; this mixin keeps the seed's names
working on both of our pipelines by delegating to the VAE.

Example::

    pipe.enable_vae_tiling()     # == pipe.vae.enable_tiling()
"""

from __future__ import annotations


class VaeMemoryMethods:
    def enable_vae_tiling(self) -> None:
        self.vae.enable_tiling()

    def disable_vae_tiling(self) -> None:
        self.vae.disable_tiling()

    def enable_vae_slicing(self) -> None:
        self.vae.enable_slicing()

    def disable_vae_slicing(self) -> None:
        self.vae.disable_slicing()


def fallback_pipeline_class():
    """Plain SDXL with the seed's VAE switches (the SDXL fallback's pipeline)."""
    from diffusers import StableDiffusionXLPipeline

    class SDXLFallbackPipeline(VaeMemoryMethods, StableDiffusionXLPipeline):
        pass

    return SDXLFallbackPipeline

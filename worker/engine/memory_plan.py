"""The memory plan: where each network lives and how many images one denoise pass runs, decided
once from the card's free memory (ComfyUI's model_management habit: every VRAM decision in one
place, logged). Pure arithmetic, no torch: ``idbody plan --vram-gb 4`` answers before anything is
loaded or bought; ``worker.engine.devices`` applies the plan it returns.

The ladder, fastest first; the first placement that fits one image wins, then as many rows as fit
(VAE tiling is added where it lets more rows fit):

* ``resident``: every network on the GPU in fp16 (the only plan that compiles, when untiled).
* ``resident-fp8``: the same, the networks whose weights never change (IdentityNet, the pose
  ControlNet, both text encoders) stored in fp8 and computed in fp16 (diffusers' layerwise
  casting; attention projections stay fp16). Never the UNet: the LCM-LoRA mode switch rewrites
  its weights in place.
* ``model-offload``: diffusers' ``enable_model_cpu_offload``: one network at a time on the GPU
  (the UNet with the IdentityNet during the denoise, the VAE for the decode), fp8 as above.
* ``group-offload``: diffusers' group offloading at leaf level with CUDA streams (each layer
  copied in while the previous one runs), fp8 as above: the smallest floor. accelerate's
  sequential offload reaches the same floor but keeps the weights on the meta device, where the
  mode switch's in-place LoRA writes would be lost, so it is not offered.

The model (GiB): ``peak = resident weights + overhead + max(denoise, decode)``, where ``denoise =
UNET_ROW x rows x MP`` (rows doubled under guidance) and ``decode = DECODE x images x MP`` (one
image at a time over a 512 px tile with tiling and slicing). ``DECODE`` and the overhead are fitted
to the H100 peaks in bench/README.md (``CALIBRATION``, eager engine, random fp16 weights,
``torch.cuda.max_memory_allocated``); those peaks are the decode's (quality x4, 8 UNet rows,
peaked no higher than fast x4, 4 rows). ``UNET_ROW`` is an estimate, not a measurement: the
bench's memory-plan phase (``python -m bench.pipeline --full-size``) measures each plan's peak.

Example::

    weights = manifest_weights()                         # the released models' sizes
    plan = choose_plan(weights, card_free_gib(4.0), Shape(832, 1216))
    plan.name, plan.rows_per_pass, plan.predicted_peak_gib   # ('group-offload', 2, 2.0)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

GIB = 2**30
FP8_MODULES = ("controlnet", "pose_controlnet", "text_encoder", "text_encoder_2")
# Attention projections stay fp16 in fp8 networks (the fast engine fuses q/k/v into views of one
# weight, which a per-layer cast would split): about 30% of these networks' weights.
FP8_SKIPPED_LAYERS = ("to_q", "to_k", "to_v", "to_qkv", "to_kv", "q_proj", "k_proj", "v_proj")
FP8_KEPT_SHARE = 0.3
PLACEMENTS = ("resident", "resident-fp8", "model-offload", "group-offload")
CPU_PLAN = "cpu"

# H100 peaks (bench/README.md, 2026-11-26): (images, width, height, GiB). The first three: fast
# 4 steps, no guidance, x1/x4/x8 at 768x1024; the last: the full-body default, 4 x 832x1216
# (guidance 1.5, face region; printed as "20.3 GB", MiB / 1024).
CALIBRATION = ((1, 768, 1024, 12.0), (4, 768, 1024, 17.5), (8, 768, 1024, 24.7), (4, 832, 1216, 20.3))
UNET_ROW_GIB_PER_MP = 0.35      # estimate: skips, GEGLU and IdentityNet residuals of one row at 1 MP
TILE_PX = 512                   # VAE tile side when tiling (diffusers' default is the VAE's 1024)
TILE_MP = (TILE_PX * 1.25) ** 2 / 1e6   # a tile with its blending overlap
STREAMED_GIB = 0.25             # group offload: the layers in flight (one running, one arriving)
CUDA_CONTEXT_GIB = 0.5          # what the CUDA context takes on a card before any tensor
HEADROOM_GIB, HEADROOM_SHARE = 0.5, 0.05   # kept free: allocator fragmentation, cuDNN workspaces


@dataclass(frozen=True)
class ModelWeights:
    """Bytes of each network in fp16, as the GPU would hold them (the UNet with its IP-Adapter
    layers and LoRA)."""

    unet: int
    controlnet: int = 0
    pose_controlnet: int = 0
    text_encoder: int = 0
    text_encoder_2: int = 0
    vae: int = 0

    def gib(self, name: str, fp8: bool = False) -> float:
        size = getattr(self, name) / GIB
        return size * (FP8_KEPT_SHARE + (1 - FP8_KEPT_SHARE) / 2) if fp8 and name in FP8_MODULES else size

    def total_gib(self, fp8: bool = False) -> float:
        return sum(self.gib(name, fp8) for name in asdict(self))


@dataclass(frozen=True)
class Shape:
    """The job shape a plan is sized for: output size, and whether guidance doubles the rows."""

    width: int
    height: int
    guidance: bool = True

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


@dataclass(frozen=True)
class Calibration:
    decode_gib_per_mp: float    # per image in one decode
    overhead_gib: float         # above the weights: latents, embeddings, workspaces

    @classmethod
    def fit(cls, weights: ModelWeights) -> Calibration:
        """Least squares of ``peak = intercept + slope x images x MP`` over ``CALIBRATION``; the
        overhead is the intercept less the weights the benched engine held (``weights``)."""
        xs = [n * w * h / 1e6 for n, w, h, _ in CALIBRATION]
        ys = [peak for *_, peak in CALIBRATION]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        return cls(slope, my - slope * mx - weights.total_gib())


@dataclass(frozen=True)
class MemoryPlan:
    name: str                         # "resident" ... "group-offload", or "cpu"
    device: str
    fp8: tuple[str, ...] = ()         # networks stored in fp8 (layerwise casting)
    vae_tiling: bool = False          # with slicing: one image, one 512 px tile at a time
    rows_per_pass: int = 1            # images one denoise pass runs; bigger jobs take several passes
    compile: bool = True              # whether torch.compile may run under this plan
    predicted_peak_gib: float | None = None
    budget_gib: float | None = None   # free memory less headroom; None on the CPU
    shape: Shape | None = None
    reason: str = ""
    notes: tuple[str, ...] = ()
    weights: ModelWeights | None = field(default=None, repr=False)
    calibration: Calibration | None = field(default=None, repr=False)

    @property
    def offloads(self) -> bool:
        return self.name in ("model-offload", "group-offload")

    def rows_for(self, width: int, height: int, guidance: bool = True, max_rows: int | None = None) -> int:
        """How many images of this size one pass may run under this plan (at least 1).

        Example::

            plan.rows_for(1024, 1024)      # fewer rows than at the planned 832x1216, or as many
        """
        cap = max_rows or self.rows_per_pass
        if self.budget_gib is None or self.weights is None:
            return cap
        shape = Shape(width, height, guidance)
        fits = [r for r in range(1, cap + 1) if self._peak(shape, r) <= self.budget_gib]
        return max(fits, default=1)

    def passes(self, images: int, width: int, height: int, guidance: bool = True) -> list[int]:
        """How a job (or a micro-batch) of ``images`` images splits into denoise passes: as even
        as the row limit at this size allows, never more rows than the limit.

        Example::

            plan.passes(4, 832, 1216)      # [2, 2] on the 4 GB plan, [4] on an 80 GB card
        """
        rows = self.rows_for(width, height, guidance)
        count = -(-images // rows)
        return [images // count + (1 if i < images % count else 0) for i in range(count)]

    def _peak(self, shape: Shape, rows: int) -> float:
        return predicted_peak(self.name, self.weights, self.calibration, shape, rows, self.vae_tiling)

    def report(self) -> dict:
        """What the heartbeat and ``/api/v1/info`` publish."""
        return {"name": self.name, "device": self.device, "fp8": list(self.fp8), "vae_tiling": self.vae_tiling,
                "rows_per_pass": self.rows_per_pass, "compile": self.compile,
                "predicted_peak_gib": _round(self.predicted_peak_gib), "budget_gib": _round(self.budget_gib),
                "size": [self.shape.width, self.shape.height] if self.shape else None,
                "reason": self.reason, "notes": list(self.notes)}

    def describe(self) -> str:
        """One log line."""
        peak = f", predicted peak {self.predicted_peak_gib:.1f} of {self.budget_gib:.1f} GiB" \
            if self.predicted_peak_gib is not None else ""
        size = f" at {self.shape.width}x{self.shape.height}" if self.shape else ""
        return (f"memory plan {self.name}: fp8={','.join(self.fp8) or 'none'}, vae_tiling={self.vae_tiling}, "
                f"{self.rows_per_pass} rows per pass{size}{peak}, {'compile allowed' if self.compile else 'no compile'} "
                f"({self.reason}){''.join('; ' + n for n in self.notes)}")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def resident_gib(placement: str, weights: ModelWeights) -> tuple[float, float]:
    """Weights on the GPU during the denoise and during the decode, for a placement."""
    fp8 = placement != "resident"
    if placement in ("resident", "resident-fp8"):
        total = weights.total_gib(fp8)
        return total, total
    if placement == "model-offload":
        # the UNet and both ControlNets are called in the loop and stay until the VAE's hook moves
        # the UNet out; the ControlNets (outside the offload chain) stay through the decode
        nets = weights.gib("controlnet", fp8) + weights.gib("pose_controlnet", fp8)
        return weights.gib("unet") + nets, weights.gib("vae") + nets
    if placement == "group-offload":
        return STREAMED_GIB, STREAMED_GIB
    raise ValueError(f"unknown placement {placement!r}; choose from {', '.join(PLACEMENTS)}")


def predicted_peak(placement: str, weights: ModelWeights, calibration: Calibration, shape: Shape,
                   rows: int, vae_tiling: bool) -> float:
    """Peak GiB of one pass of ``rows`` images of ``shape`` under a placement."""
    denoise_w, decode_w = resident_gib(placement, weights)
    unet_rows = rows * (2 if shape.guidance else 1)
    denoise = denoise_w + UNET_ROW_GIB_PER_MP * unet_rows * shape.megapixels
    decoded_mp = min(shape.megapixels, TILE_MP) if vae_tiling else rows * shape.megapixels
    decode = decode_w + calibration.decode_gib_per_mp * decoded_mp
    return calibration.overhead_gib + max(denoise, decode)


def budget_gib(free_gib: float) -> float:
    """What a plan may use of the free memory."""
    return free_gib - HEADROOM_GIB - HEADROOM_SHARE * free_gib


def card_free_gib(card_gib: float, face_models_gib: float = 0.0) -> float:
    """Free memory a worker would see on an empty card of ``card_gib``: less the CUDA context and
    the face analyzer's models (loaded before the engine)."""
    return card_gib - CUDA_CONTEXT_GIB - face_models_gib


def row_counts(max_rows: int) -> list[int]:
    """Row counts a plan picks from, most first: powers of two and ``max_rows`` itself."""
    return sorted({r for r in (1, 2, 4, 8, 16, 32, 64) if r <= max_rows} | {max_rows}, reverse=True)


def _fit(placement: str, weights: ModelWeights, calibration: Calibration, shape: Shape, budget: float,
         max_rows: int) -> tuple[int, bool, float]:
    """(rows, vae_tiling, peak) for the most rows that fit, untiled preferred at equal rows;
    (0, True, peak of one row) when not even one fits."""
    best = (0, True, predicted_peak(placement, weights, calibration, shape, 1, True))
    for tiling in (False, True):
        for rows in row_counts(max_rows):
            peak = predicted_peak(placement, weights, calibration, shape, rows, tiling)
            if peak <= budget:
                if rows > best[0]:
                    best = (rows, tiling, peak)
                break
    return best


def cpu_plan(max_rows: int, reason: str = "no CUDA device: the engine runs on the CPU") -> MemoryPlan:
    return MemoryPlan(CPU_PLAN, "cpu", rows_per_pass=max_rows, reason=reason)


def choose_plan(weights: ModelWeights, free_gib: float, shape: Shape, max_rows: int = 8,
                wanted: str = "auto", compile_wanted: bool = False,
                calibration: Calibration | None = None) -> MemoryPlan:
    """The plan for a CUDA card with ``free_gib`` free: the first placement of the ladder that fits
    one image (or the one ``wanted`` names), as many rows as fit, and whether compiling makes sense.

    Example::

        choose_plan(manifest_weights(), 79.0, Shape(832, 1216)).name     # "resident"
    """
    calibration = calibration or Calibration.fit(manifest_weights(pose=False))
    budget = budget_gib(free_gib)
    ladder = PLACEMENTS if wanted == "auto" else (wanted,)
    if wanted != "auto" and wanted not in PLACEMENTS:
        raise ValueError(f"unknown memory plan {wanted!r}; choose from auto, {', '.join(PLACEMENTS)}")
    notes: list[str] = []
    for placement in ladder:
        rows, tiling, peak = _fit(placement, weights, calibration, shape, budget, max_rows)
        if rows:
            break
    else:
        rows = 1
        notes.append(f"even one image is predicted to need {peak:.1f} GiB, over the {budget:.1f} GiB budget")
    reason = ("set by IDBODY_MEMORY_PLAN" if wanted != "auto"
              else f"{free_gib:.1f} GiB free: the fastest placement that fits")
    compiles = placement == "resident" and not tiling
    if compile_wanted and not compiles:
        notes.append("compile skipped: " + ("VAE tiling decodes tiles of changing shapes" if placement == "resident"
                     else "weights that move between the CPU and the GPU, or are cast per layer, leave "
                     "compiled code and CUDA graphs nothing fixed to capture"))
    fp8 = tuple(m for m in FP8_MODULES if getattr(weights, m)) if placement != "resident" else ()
    return MemoryPlan(placement, "cuda", fp8=fp8, vae_tiling=tiling, rows_per_pass=rows, compile=compiles,
                      predicted_peak_gib=peak, budget_gib=budget, shape=shape, reason=reason,
                      notes=tuple(notes), weights=weights, calibration=calibration)


def with_rows(plan: MemoryPlan, rows: int) -> MemoryPlan:
    """The same plan capped at ``rows`` per pass (the bench's emulated cards)."""
    return replace(plan, rows_per_pass=min(plan.rows_per_pass, rows))


# --- the released models' sizes, from the download manifest ----------------------------------

# (manifest source, file) -> (network, bytes per weight on disk: 4 for fp32 files, loaded as fp16)
MANIFEST_FILES = {
    ("sdxl", "unet/diffusion_pytorch_model.fp16.safetensors"): ("unet", 2),
    ("instantid", "ip-adapter.bin"): ("unet", 4),
    ("lcm", "pytorch_lora_weights.safetensors"): ("unet", 2),
    ("instantid", "ControlNetModel/diffusion_pytorch_model.safetensors"): ("controlnet", 2),
    ("sdxl", "text_encoder/model.fp16.safetensors"): ("text_encoder", 2),
    ("sdxl", "text_encoder_2/model.fp16.safetensors"): ("text_encoder_2", 2),
    ("vae", "diffusion_pytorch_model.safetensors"): ("vae", 4),
    ("pose", "diffusion_pytorch_model.safetensors"): ("pose_controlnet", 2),
}
FACE_MODEL_FILES = ("scrfd_10g_bnkps.onnx", "glintr100.onnx")   # what the analyzer loads


def manifest_weights(pose: bool = False) -> ModelWeights:
    """The released networks' fp16 sizes from the manifest's file sizes (no file is read)."""
    from worker.models.manifest import INSTANTID_MANIFEST, POSE_CONTROLNET

    sources = INSTANTID_MANIFEST.sources + ((POSE_CONTROLNET,) if pose else ())
    sizes: dict[str, int] = {}
    for source in sources:
        for f in source.files:
            network, disk_bytes = MANIFEST_FILES.get((source.key, f.name), (None, 0))
            if network and f.size:
                sizes[network] = sizes.get(network, 0) + f.size * 2 // disk_bytes
    return ModelWeights(**sizes)


def face_models_gib(on_gpu: bool = True) -> float:
    """The face analyzer's ONNX models, when onnxruntime runs them on the GPU."""
    from worker.models.manifest import ANTELOPEV2

    return sum(f.size or 0 for f in ANTELOPEV2.files if f.name in FACE_MODEL_FILES) / GIB if on_gpu else 0.0

"""``idbody models add-base PATH --name NAME``: put an operator's SDXL fine-tune into the model folder.

PATH is a diffusers folder (unet/, vae/, text_encoder/, text_encoder_2/ with config.json and
safetensors weights) or a single-file ``.safetensors`` checkpoint in the original SDXL layout
(``model.diffusion_model.*``, ``first_stage_model.*``, ``conditioner.embedders.{0,1}.*``), which
is converted once, here, with diffusers' ``from_single_file`` against the profile's own configs.

What makes it acceptable is cheap to check: every component's tensor names and shapes, read from
the safetensors headers (no weight is loaded for that), equal the profile's base's. That is the
very condition under which the worker can switch to it by copying tensors into the resident
networks (worker.engine.base_switch); an SDXL refiner, an SD 1.5 file or an inpainting UNet fail it.

Example::

    added = add_base(Path("models"), Path("~/juggernautXL.safetensors"), "juggernaut")
    added.name, added.digest[:12]
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from shared.errors import ErrorCode, IdentityBodyError
from worker.models import layout
from worker.models.bases import (
    BASE_COMPONENTS,
    BASES_DIR,
    BaseCheckpoint,
    check_name,
    files_digest,
    is_weight,
    list_bases,
    registry_entries,
    stored_files,
    tensor_name,
    weight_files,
    write_registry,
)
from worker.models.fetch import sha256_of

log = logging.getLogger(__name__)

CLASSES = {"unet": "UNet2DConditionModel", "vae": "AutoencoderKL",
           "text_encoder": "CLIPTextModel", "text_encoder_2": "CLIPTextModelWithProjection"}
# the key families of an original-layout SDXL base file: UNet, VAE, CLIP ViT-L, OpenCLIP ViT-bigG
SINGLE_FILE_PREFIXES = {"model.diffusion_model.": "unet", "first_stage_model.": "vae",
                        "conditioner.embedders.0.transformer.": "text_encoder",
                        "conditioner.embedders.1.model.": "text_encoder_2"}


def not_sdxl(path: Path, why: str) -> IdentityBodyError:
    return IdentityBodyError(ErrorCode.NOT_SDXL_CHECKPOINT,
                             f"{path} is not an SDXL base checkpoint this server can use: {why}.", field="path")


def add_base(model_dir: Path, path: Path, name: str) -> BaseCheckpoint:
    """Check ``path``, store it as ``bases/<name>/`` in diffusers layout, record its digest."""
    model_dir, path = Path(model_dir), Path(path).expanduser()
    check_name(name)
    known = [b.name for b in list_bases(model_dir)]
    if name in known:
        raise IdentityBodyError(ErrorCode.BASE_MODEL_EXISTS,
                                f"A base checkpoint named {name!r} is already in {model_dir} (there are: "
                                f"{', '.join(known)}); pick another --name.", field="name")
    if not path.exists():
        raise IdentityBodyError(ErrorCode.CHECKPOINT_NOT_FOUND,
                                f"{path} does not exist: give a single-file .safetensors checkpoint or a "
                                "diffusers folder (with unet/, vae/, text_encoder/, text_encoder_2/).", field="path")
    reference = layout.part(model_dir, layout.SDXL_DIR)
    staging = model_dir / BASES_DIR / f".adding-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        if path.is_dir():
            _copy_folder(path, staging)
            digest = None
        else:
            _convert_single_file(path, reference, staging)
            digest = sha256_of(path)
        check_like(staging, reference, shown=path)
        final = model_dir / BASES_DIR / name
        shutil.rmtree(final, ignore_errors=True)   # a folder no record names (an interrupted add)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files = stored_files(model_dir, final)
    entry = {"name": name, "layout": "diffusers" if path.is_dir() else "single_file", "source": str(path.resolve()),
             "sha256": digest or files_digest(files), "files": [f.__dict__ for f in files]}
    write_registry(model_dir, [*registry_entries(model_dir), entry])
    log.info("base checkpoint %s added from %s (sha256 %s)", name, path, entry["sha256"][:12])
    return next(b for b in list_bases(model_dir) if b.name == name)


def _copy_folder(source: Path, staging: Path) -> None:
    """Each component's config and one set of safetensors weights (fp16 when there, else plain),
    hard-linked when the model folder is on the same disk, else copied."""
    for component in BASE_COMPONENTS:
        folder = source / component
        config = folder / "config.json"
        if not config.is_file():
            raise not_sdxl(source, f"no {component}/config.json (a diffusers SDXL folder has unet/, vae/, "
                                   "text_encoder/ and text_encoder_2/)")
        found = _class_of(json.loads(config.read_text()))
        if found != CLASSES[component]:
            raise not_sdxl(source, f"{component} is a {found or 'model of unknown class'}, not a {CLASSES[component]}")
        weights = weight_files(folder, "fp16")
        if not weights:
            raise not_sdxl(source, f"no safetensors weights in {component}/ (.bin files are not accepted: "
                                   "they are pickles that can run code)")
        target = staging / component
        target.mkdir(parents=True)
        for file in [config, *weights, *folder.glob("*.safetensors.index*.json")]:
            _link_or_copy(file, target / file.name)


def _class_of(config: dict) -> str | None:
    return config.get("_class_name") or next(iter(config.get("architectures") or []), None)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _convert_single_file(path: Path, reference: Path, staging: Path) -> None:
    """The original-layout file as a diffusers folder, converted by diffusers against the profile's
    own configs (never a download), one component at a time: each reads only its own tensors from
    the file, so one network at most is in memory. Each text encoder sees only its own key family,
    so diffusers never has to guess which is which from embedding widths."""
    if path.suffix != ".safetensors":
        raise not_sdxl(path, "only .safetensors single files are accepted (a .ckpt is a pickle that can run code)")
    keys = _file_keys(path)
    missing = [component for prefix, component in SINGLE_FILE_PREFIXES.items()
               if not any(k.startswith(prefix) for k in keys)]
    if missing:
        raise not_sdxl(path, f"no {', '.join(missing)} weights in the SDXL single-file layout "
                             f"(expected keys starting {', '.join(SINGLE_FILE_PREFIXES)})")
    for prefix, component in SINGLE_FILE_PREFIXES.items():
        part = _tensors(path, prefix)
        try:
            model = _from_original(component, part, reference)
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise not_sdxl(path, f"diffusers could not convert its {component} "
                                 f"({type(exc).__name__}: {str(exc)[:300]})") from exc
        model.save_pretrained(staging / component, safe_serialization=True)
        del model, part


def _tensors(path: Path, prefix: str) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys() if k.startswith(prefix)}


def _from_original(component: str, checkpoint: dict, reference: Path):
    """One component from its original-layout tensors, with diffusers' converters and our configs."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if component in ("unet", "vae"):
        cls = UNet2DConditionModel if component == "unet" else AutoencoderKL
        return cls.from_single_file(checkpoint, config=str(reference), subfolder=component, local_files_only=True)
    cls = CLIPTextModel if component == "text_encoder" else CLIPTextModelWithProjection
    return create_diffusers_clip_model_from_ldm(cls, checkpoint, subfolder=component, config=str(reference),
                                                local_files_only=True)


def _file_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except Exception as exc:
        raise not_sdxl(path, f"it is not a readable safetensors file ({type(exc).__name__}: {exc})") from exc


def tensor_shapes(component: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's name and shape in a component folder's weights, from the headers alone."""
    from safetensors import safe_open

    files = weight_files(component, "fp16")
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            shapes.update({tensor_name(k): tuple(handle.get_slice(k).get_shape())
                           for k in handle.keys() if is_weight(k)})
    return shapes


def check_like(candidate: Path, reference: Path, shown: Path) -> None:
    """Refuse ``candidate`` unless each component has exactly the reference base's tensors (names
    and shapes): what the worker's in-place switch copies into."""
    for component in BASE_COMPONENTS:
        want, got = tensor_shapes(reference / component), tensor_shapes(candidate / component)
        absent = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        reshaped = sorted(k for k in set(want) & set(got) if want[k] != got[k])
        if absent or extra or reshaped:
            sample = (absent or extra or reshaped)[0]
            detail = (f"shape {got[sample]} where the profile's base has {want[sample]}" if reshaped and not (absent or extra)
                      else "missing" if absent else "not in an SDXL base")
            raise not_sdxl(shown, f"its {component} does not match the SDXL architecture this server runs "
                                  f"({len(absent)} tensors missing, {len(extra)} unexpected, {len(reshaped)} of "
                                  f"another shape; e.g. {sample}: {detail})")

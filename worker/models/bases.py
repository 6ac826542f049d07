"""The base checkpoints of a model folder: the profile's own SDXL base (``sdxl/``) and the SDXL
fine-tunes an operator added with ``idbody models add-base`` (``bases/<name>/``, recorded in
``bases/bases.json`` with each stored file's size and sha256, so ``idbody models verify`` checks
them like the downloaded parts).

Every base is kept in the diffusers folder layout (a single-file checkpoint is converted when it
is added), so the worker reads every base the same way: tensor by tensor from its safetensors
files (worker.engine.base_switch).

Example::

    bases = list_bases(Path("models"))
    [(b.name, b.default, b.digest[:12]) for b in bases]   # [("sdxl-base-1.0", True, "83e012a805b8"), ...]
    find_base(bases, "juggernaut").folder                  # models/bases/juggernaut
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.base_models import unknown_base_error
from shared.errors import ErrorCode, IdentityBodyError
from worker.models import layout
from worker.models.fetch import sha256_of
from worker.models.manifest import SDXL, ExpectedFile

BASES_DIR = "bases"
REGISTRY_FILE = "bases/bases.json"
# the networks a base brings; tokenizers and schedulers are SDXL's own and stay the profile's
BASE_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")
DEFAULT_NAMES = {"instantid": "sdxl-base-1.0", "tiny": "tiny"}
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
HASHED_AT_START_BYTES = 64 * 2**20
NAME_RULE = "1-64 characters: lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"


@dataclass(frozen=True)
class StoredFile:
    path: str        # relative to the model folder
    size: int
    sha256: str


@dataclass(frozen=True)
class BaseCheckpoint:
    """One base checkpoint a job can name in ``base_model``."""

    name: str
    folder: Path                 # a diffusers folder holding unet/, vae/, text_encoder/, text_encoder_2/
    default: bool
    digest: str                  # sha256: of the added file (single file), or of its stored files' list
    source: str | None = None    # what the operator added (path), None for the profile's base
    layout: str = "diffusers"    # "diffusers" | "single_file": what was added
    files: tuple[StoredFile, ...] = ()

    def describe(self) -> dict[str, Any]:
        """The entry ``/api/v1/info`` lists under ``base_models``."""
        return {"name": self.name, "default": self.default, "digest": self.digest[:12]}


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name or ""):
        raise IdentityBodyError(ErrorCode.INVALID_PARAMETER, f"Base model name {name!r} is not valid: {NAME_RULE}.",
                                field="name")
    return name


def default_name(model_dir: Path) -> str:
    """The profile's base is named after the profile: ``tiny`` in a tiny build, else SDXL base 1.0."""
    from worker.tiny.model_dir import MARKER

    return DEFAULT_NAMES["tiny" if (Path(model_dir) / MARKER).is_file() else "instantid"]


def registry_entries(model_dir: Path) -> list[dict[str, Any]]:
    path = Path(model_dir) / REGISTRY_FILE
    if not path.is_file():
        return []
    return list(json.loads(path.read_text()).get("bases", []))


def write_registry(model_dir: Path, entries: list[dict[str, Any]]) -> None:
    path = Path(model_dir) / REGISTRY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"bases": entries}, indent=2))
    tmp.replace(path)   # a reader never sees half a file


def added_bases(model_dir: Path) -> list[BaseCheckpoint]:
    """The bases recorded by ``add-base``, in the order they were added."""
    return [BaseCheckpoint(name=e["name"], folder=Path(model_dir) / BASES_DIR / e["name"], default=False,
                      digest=e["sha256"], source=e.get("source"), layout=e.get("layout", "diffusers"),
                      files=tuple(StoredFile(**f) for f in e.get("files", [])))
            for e in registry_entries(model_dir)]


def default_base(model_dir: Path) -> BaseCheckpoint:
    """The profile's own base, ``sdxl/``; its digest is its UNet weights' sha256, taken from the
    download manifest when on record there, else hashed when small (the tiny profile's), else
    empty: a worker does not read gigabytes at every start to name its base."""
    folder = layout.part(model_dir, layout.SDXL_DIR)
    on_record = {f.name: f.sha256 for f in SDXL.files}
    name = default_name(model_dir)
    for weights in sorted((folder / "unet").glob("*.safetensors")):
        digest = on_record.get(f"unet/{weights.name}")
        if digest is None and weights.stat().st_size <= HASHED_AT_START_BYTES:
            digest = sha256_of(weights)
        return BaseCheckpoint(name, folder, True, digest or "")
    return BaseCheckpoint(name, folder, True, "")


def list_bases(model_dir: Path) -> list[BaseCheckpoint]:
    """The profile's base first, then the added ones."""
    return [default_base(model_dir), *added_bases(model_dir)]


def find_base(bases: list[BaseCheckpoint], name: str | None) -> BaseCheckpoint:
    """The base named ``name`` (the default when None), or IdentityBodyError(unknown_base_model)
    listing the names there are."""
    if name is None:
        return next(b for b in bases if b.default)
    for base in bases:
        if base.name == name:
            return base
    raise unknown_base_error(name, [b.name for b in bases])


def expected_base_files(model_dir: Path) -> list[ExpectedFile]:
    """The added bases' files as ``verify`` checks them (size by stat, sha256 with --checksums)."""
    return [ExpectedFile(f"base:{b.name}", f.path, f.size, f.sha256) for b in added_bases(model_dir) for f in b.files]


def stored_files(model_dir: Path, folder: Path) -> list[StoredFile]:
    """Every file under ``folder`` with its size and sha256, paths relative to the model folder."""
    return [StoredFile(str(p.relative_to(model_dir)), p.stat().st_size, sha256_of(p))
            for p in sorted(folder.rglob("*")) if p.is_file()]


def files_digest(files: list[StoredFile]) -> str:
    """One digest for a base's files: sha256 of their sorted ``sha256  component/file`` lines (the
    path inside the base's folder, so the digest does not depend on the name it was given)."""
    inside = sorted((f.sha256, "/".join(Path(f.path).parts[2:])) for f in files)
    return hashlib.sha256("".join(f"{sha}  {name}\n" for sha, name in inside).encode()).hexdigest()


def tensor_name(key: str) -> str:
    """A tensor's name as bases are compared and switched by: transformers 5 saves CLIPTextModel's
    tensors without the ``text_model.`` prefix that released SDXL files (and CLIPTextModelWithProjection)
    have, and renames them on load; so the prefix is no part of a name."""
    return key.removeprefix("text_model.")


def is_weight(key: str) -> bool:
    """False for the CLIP ``position_ids`` index buffer that older transformers saved with the weights
    (released SDXL text encoders carry it); it is 0..76 in every CLIP and no longer a saved tensor."""
    return not key.endswith("position_ids")


WEIGHT_NAMES = ("diffusion_pytorch_model{v}.safetensors", "model{v}.safetensors")


def weight_variant(folder: Path, policy) -> str | None:
    """The fp16 files when the folder has them and either the policy runs in fp16 or they are the
    only weights there: ``models download`` fetches SDXL's fp16 files alone, and a CPU (fp32) run
    must load those and upcast rather than look for fp32 files that were never fetched. None for
    a folder of plain files (the tiny profile, the fp16-fix VAE, IdentityNet). ``policy``: a
    worker.engine.devices.DevicePolicy (its ``variant``)."""
    has = {s: any((folder / n.format(v=s)).is_file() for n in WEIGHT_NAMES) for s in (".fp16", "")}
    return "fp16" if has[".fp16"] and (policy.variant == "fp16" or not has[""]) else None


def weight_files(component: Path, variant: str | None) -> list[Path]:
    """A component folder's safetensors weights (every shard) of ``variant`` ("fp16" or None),
    else of the other one: never an empty list for a folder that has weights."""
    files = sorted(component.glob("*.safetensors"))
    fp16 = [p for p in files if p.name.endswith(".fp16.safetensors")]
    plain = [p for p in files if len(p.name.split(".")) == 2]
    return (fp16 or plain) if variant == "fp16" else (plain or fp16)

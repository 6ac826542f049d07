"""What the ``instantid`` profile's model folder must hold and where each file comes from: the
pinned sources (hub repositories at a revision, or a release archive) and every expected file
with its size and sha256.

Sizes and sha256 digests below come from the hub's LFS records and published release checksums
for the pinned revisions. Where no public record gave a number it is ``None``: such a file
counts as present when it exists and is not empty.

Example::

    from worker.models.manifest import INSTANTID_MANIFEST
    [source.key for source in INSTANTID_MANIFEST.sources]   # ['sdxl', 'vae', 'instantid', ...]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlparse

from shared.errors import ErrorCode, IdentityBodyError
from worker.models import layout

FETCH_COMMAND = "idbody models download"
DOWNLOADS_DIR = ".downloads"  # partial archives live here, inside the model folder, until unpacked


@dataclass(frozen=True)
class RemoteFile:
    """One file as its source names it: a path inside a hub repo or a file name in an archive."""

    name: str
    size: int | None
    sha256: str | None = None


@dataclass(frozen=True)
class Licence:
    """A model's licence as its publisher states it, and what that means for using it."""

    name: str
    terms: str


@dataclass(frozen=True)
class HubSource:
    """Files of one hub repository, fetched into ``folder`` with the repo's own relative paths."""

    key: str
    repo_id: str
    revision: str
    folder: str
    files: tuple[RemoteFile, ...]
    licence: Licence

    @property
    def origin(self) -> str:
        return f"{self.repo_id} @ {self.revision[:12]}"


@dataclass(frozen=True)
class ArchiveSource:
    """A zip whose files sit in ``member_folder/`` and are unpacked flat into ``folder``."""

    key: str
    url: str
    sha256: str | None
    size: int | None
    member_folder: str
    folder: str
    files: tuple[RemoteFile, ...]
    licence: Licence

    @property
    def origin(self) -> str:
        return PurePosixPath(urlparse(self.url).path).name + (f" (sha256 {self.sha256[:12]})" if self.sha256 else "")


Source = HubSource | ArchiveSource


@dataclass(frozen=True)
class ExpectedFile:
    """One file the model folder must hold, relative to it."""

    source: str
    path: str
    size: int | None
    sha256: str | None


@dataclass(frozen=True)
class Manifest:
    sources: tuple[Source, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(source.key for source in self.sources)

    def expected_files(self) -> tuple[ExpectedFile, ...]:
        return tuple(
            ExpectedFile(source.key, str(PurePosixPath(source.folder) / f.name), f.size, f.sha256)
            for source in self.sources
            for f in source.files
        )

    def licence_lines(self) -> list[str]:
        """One line per part: what it is, where it comes from, its licence and what that allows.

        Example::

            INSTANTID_MANIFEST.select(["vae"]).licence_lines()
            # ['vae         madebyollin/sdxl-vae-fp16-fix @ 207b116dae70  MIT: ...']
        """
        return [f"{s.key:<11} {s.origin}  {s.licence.name}: {s.licence.terms}" for s in self.sources]

    def plus(self, optional: Iterable[str] | None) -> Manifest:
        """This manifest with the optional parts named (``OPTIONAL_SOURCES``) added.

        Example::

            INSTANTID_MANIFEST.plus(["pose"]).keys   # (..., 'antelopev2', 'pose')
        """
        wanted = [key.strip() for key in (optional or []) if key.strip()]
        unknown = sorted(set(wanted) - set(OPTIONAL_SOURCES))
        if unknown:
            raise IdentityBodyError(
                ErrorCode.INVALID_PARAMETER,
                f"Unknown optional model part(s) {', '.join(unknown)}; choose from {', '.join(OPTIONAL_SOURCES)}.",
                field="with",
            )
        extra = tuple(OPTIONAL_SOURCES[key] for key in dict.fromkeys(wanted) if key not in self.keys)
        return Manifest(self.sources + extra)

    def select(self, keys: Iterable[str] | None) -> Manifest:
        """The sub-manifest for ``keys`` (all when None), refusing names it does not know."""
        if keys is None:
            return self
        wanted = [key.strip() for key in keys if key.strip()]
        unknown = sorted(set(wanted) - set(self.keys))
        if unknown or not wanted:
            raise IdentityBodyError(
                ErrorCode.INVALID_PARAMETER,
                f"Unknown model part(s) {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join(self.keys)}.",
                field="only",
            )
        return Manifest(tuple(s for s in self.sources if s.key in wanted))


def _files(*rows: tuple[str, int | None, str | None]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(name, size, sha) for name, size, sha in rows)


INSTANTID_DIR = str(PurePosixPath(layout.IP_ADAPTER_FILE).parent)

# Licences as each publisher states them on its model card or release page (checked 2026-11).
OPENRAIL_PP = Licence("CreativeML Open RAIL++-M",
                      "commercial use allowed; its use-based restrictions pass on to you and your users")
INSIGHTFACE_MODELS = Licence("InsightFace pretrained models",
                             "non-commercial research purposes only")
# The checkpoints' own card says Apache-2.0, but they were trained on, and only work with,
# antelopev2's embedding and keypoints: using them means using antelopev2.
INSTANTID_LICENCE = Licence("Apache-2.0 (model card)",
                            "but usable only with antelopev2 (non-commercial research only), "
                            "so in practice non-commercial research only")

# stabilityai/stable-diffusion-xl-base-1.0: only what StableDiffusionXLPipeline loads with
# variant="fp16" (no fp32 weights, no .bin duplicates, no refiner/onnx/openvino folders).
SDXL = HubSource(
    key="sdxl",
    repo_id="stabilityai/stable-diffusion-xl-base-1.0",
    revision="462165984030d82259a11f4367a4eed129e94a7b",
    folder=layout.SDXL_DIR,
    files=_files(
        ("model_index.json", 609, "6d7b93508390ab91ac5bfbe4aeb4dc2d83f7bb1b05fb069d714b5b0c75f70d44"),
        ("scheduler/scheduler_config.json", 479, "af3e45a949aff8b8341ab8b811429ec03fee857a700a1d9477363e4fff9666e2"),
        ("text_encoder/config.json", 565, "39b8b2e4b1949e36969caa425b6c81c68bace99198dd9078ce05d16ad401fe7f"),
        ("text_encoder/model.fp16.safetensors", 246_144_152, "660c6f5b1abae9dc498ac2d21e1347d2abdb0cf6c0c0c8576cd796491d9a6cdd"),
        ("text_encoder_2/config.json", 575, "a892d1c3a69a7e9247a24de2bc1d5891e3109a54696e53be20093af671072c34"),
        ("text_encoder_2/model.fp16.safetensors", 1_389_382_176, "ec310df2af79c318e24d20511b601a591ca8cd4f1fce1d8dff822a356bcdb1f4"),
        ("tokenizer/merges.txt", 524_619, "9fd691f7c8039210e0fced15865466c65820d09b63988b0174bfe25de299051a"),
        ("tokenizer/special_tokens_map.json", 472, "c4864a9376a8401918425bed71fc14fc0e81f9b59ec45c1cf96cccb2df508eac"),
        ("tokenizer/tokenizer_config.json", 737, "19d7b034cb0cc3ce9766c2231373ab8aa8991fc72e2c8f76558bfaae3de0d563"),
        ("tokenizer/vocab.json", 1_059_962, "e089ad92ba36837a0d31433e555c8f45fe601ab5c221d4f607ded32d9f7a4349"),
        ("tokenizer_2/merges.txt", 524_619, "9fd691f7c8039210e0fced15865466c65820d09b63988b0174bfe25de299051a"),
        ("tokenizer_2/special_tokens_map.json", 460, "f118ab3a983206e4f32583448de6bd6aae4ee21869135cef1f5848a753cdaab6"),
        ("tokenizer_2/tokenizer_config.json", 725, "c9d23941f76a41cbd50eda9290f57be7828f0a7a677939e9ef181f7e12bd1bdf"),
        ("tokenizer_2/vocab.json", 1_059_962, "e089ad92ba36837a0d31433e555c8f45fe601ab5c221d4f607ded32d9f7a4349"),
        ("unet/config.json", 1680, "30ebc70750223e59006f7f2b4e1e6c102570aa19a9c4ae3e1fbe7591332dbae6"),
        ("unet/diffusion_pytorch_model.fp16.safetensors", 5_135_149_760, "83e012a805b84c7ca28e5646747c90a243c65c8ba4f070e2d7ddc9d74661e139"),
        ("vae/config.json", 642, "0b331c8ac22ded5f9997a144a575c1d113d6169aff262c353f39015bd24a6264"),
        ("vae/diffusion_pytorch_model.fp16.safetensors", 167_335_342, "bcb60880a46b63dea58e9bc591abe15f8350bde47b405f9c38f4be70c6161e68"),
    ),
    licence=OPENRAIL_PP,
)

# madebyollin/sdxl-vae-fp16-fix: its weights are only published in fp32 layout; the loader casts.
VAE = HubSource(
    key="vae",
    repo_id="madebyollin/sdxl-vae-fp16-fix",
    revision="207b116dae70ace3637169f1ddd2434b91b3a8cd",
    folder=layout.VAE_DIR,
    files=_files(
        ("config.json", 631, "f18b16fa4381c90ab44a3d7abd2e90afd05a2c31b8ca69998bc93c6453aeb7b7"),
        ("diffusion_pytorch_model.safetensors", 334_643_238, "1b909373b28f2137098b0fd9dbc6f97f8410854f31f84ddc9fa04b077b0ace2c"),
    ),
    licence=Licence("MIT", "commercial use allowed"),
)

INSTANTID = HubSource(
    key="instantid",
    repo_id="InstantX/InstantID",
    revision="57b32dfee076092ad2930c71fd6d439c2c3b1820",
    folder=INSTANTID_DIR,
    files=_files(
        # no public record of this config's byte size was found: presence is what verify checks
        ("ControlNetModel/config.json", None, "2480c42f363d712faae8d0e17cb850a5d1e4cafc232fbd022b1d43eee45234eb"),
        ("ControlNetModel/diffusion_pytorch_model.safetensors", 2_502_139_136, "c8127be9f174101ebdafee9964d856b49b634435cf6daa396d3f593cf0bbbb05"),
        ("ip-adapter.bin", 1_691_134_141, "02b3618e36d803784166660520098089a81388e61a93ef8002aa79a5b1c546e1"),
    ),
    licence=INSTANTID_LICENCE,
)

LCM_LORA = HubSource(
    key="lcm",
    repo_id="latent-consistency/lcm-lora-sdxl",
    revision="a18548dd4956b174ec5b0d78d340c8dae0a129cd",
    folder=layout.LCM_LORA_DIR,
    files=_files(
        (PurePosixPath(layout.LCM_LORA_FILE).name, 393_855_224, "a764e6859b6e04047cd761c08ff0cee96413a8e004c9f07707530cd776b19141"),
    ),
    licence=OPENRAIL_PP,
)

# The antelopev2 pack, not buffalo_l: InstantID's face embedding comes from glintr100 and its
# keypoints from scrfd_10g_bnkps, which only this pack holds.
ANTELOPEV2 = ArchiveSource(
    key="antelopev2",
    url="https://github.com/deepinsight/insightface/releases/download/v0.7/antelopev2.zip",
    sha256="8e182f14fc6e80b3bfa375b33eb6cff7ee05d8ef7633e738d1c89021dcf0c5c5",
    size=360_662_982,
    member_folder="antelopev2",
    folder=layout.ANTELOPEV2_DIR,
    files=_files(
        ("1k3d68.onnx", 143_607_619, "df5c06b8a0c12e422b2ed8947b8869faa4105387f199c477af038aa01f9a45cc"),
        ("2d106det.onnx", 5_030_888, "f001b856447c413801ef5c42091ed0cd516fcd21f2d6b79635b1e733a7109dbf"),
        ("genderage.onnx", 1_322_532, "4fde69b1c810857b88c64a335084f1c3fe8f01246c9a191b48c7bb756d6652fb"),
        (layout.RECOGNIZER_FILE, 260_665_334, "4ab1d6435d639628a6f3e5008dd4f929edf4c4124b1a7169e1048f9fef534cdf"),
        (layout.DETECTOR_FILE, 16_923_827, "5838f7fe053675b1c7a08b633df49e7af5495cee0493c7dcf6697200b85b5b91"),
    ),
    licence=INSIGHTFACE_MODELS,
)

# Optional: an SDXL OpenPose ControlNet for the `pose` parameter (standing / walking / sitting),
# fetched only with `idbody models download --with pose`; without it the pose is prompt-only.
# xinsir's checkpoint rather than thibaud's (the one the InstantID demo app names): xinsir's model
# card says Apache-2.0, thibaud's says "other" and defers to OpenPose's (non-commercial) licence.
# The revision is the commit of the model card's last change on main; the weights' digest is the
# hub's LFS record for them (last changed in 86d911d, before that commit), their size the one an
# identical upload (same sha256) records. No public record of config.json's size or digest was found.
POSE_CONTROLNET = HubSource(
    key="pose",
    repo_id="xinsir/controlnet-openpose-sdxl-1.0",
    revision="23f966cd5cfdd3f7729c903e243d87152162d2b7",
    folder=layout.POSE_CONTROLNET_DIR,
    files=_files(
        ("config.json", None, None),
        ("diffusion_pytorch_model.safetensors", 2_502_139_104, "b8524e557a7df60d081f5d4a0eb109967d107df217943bf88c2d99b9ebcc06c5"),
    ),
    licence=Licence("Apache-2.0 (model card)", "commercial use allowed"),
)

INSTANTID_MANIFEST = Manifest((SDXL, VAE, INSTANTID, LCM_LORA, ANTELOPEV2))
OPTIONAL_SOURCES: dict[str, HubSource] = {"pose": POSE_CONTROLNET}
MANIFESTS: dict[str, Manifest] = {"instantid": INSTANTID_MANIFEST}


def manifest_for(profile: str = "instantid") -> Manifest:
    """The manifest of a model profile (only ``instantid`` downloads anything)."""
    try:
        return MANIFESTS[profile]
    except KeyError:
        raise IdentityBodyError(
            ErrorCode.INVALID_PARAMETER,
            f"No download manifest for profile {profile!r}; choose from {', '.join(MANIFESTS)}.",
            field="profile",
        ) from None



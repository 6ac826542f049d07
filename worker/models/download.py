"""Fill a model folder from the manifest's sources: hub files through ``huggingface_hub`` (resumed
through its ``.incomplete`` files), the release archive through an HTTP ``Range`` request, then
unpacked flat. Parts that already verify are skipped.

Example::

    from worker.models.download import download
    download(Path("models"), only=["instantid", "antelopev2"])
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from shared.errors import ErrorCode, IdentityBodyError
from worker.models.fetch import fetch, sha256_of
from worker.models.manifest import (
    DOWNLOADS_DIR,
    FETCH_COMMAND,
    INSTANTID_MANIFEST,
    ArchiveSource,
    HubSource,
    Manifest,
)
from worker.models.store import verify


def hub_download_kwargs(
    source: HubSource, model_dir: Path, token: str | None = None, endpoint: str | None = None
) -> dict[str, Any]:
    """The ``snapshot_download`` arguments for one source: exact file names as allow-patterns so
    nothing beyond the manifest is fetched, and the source's folder as ``local_dir``."""
    kwargs: dict[str, Any] = {
        "repo_id": source.repo_id,
        "revision": source.revision,
        "allow_patterns": [f.name for f in source.files],
        "local_dir": str(Path(model_dir) / source.folder),
        # the hub client still keeps refs and tree listings in a cache: keep it in the one folder
        "cache_dir": str(Path(model_dir) / DOWNLOADS_DIR / "hub-cache"),
        "token": token,
    }
    if endpoint is not None:
        kwargs["endpoint"] = endpoint
    return kwargs


@contextlib.contextmanager
def _hub_progress_bars(enabled: bool) -> Iterator[None]:
    """Silence huggingface_hub's bars for this call only; when enabled, leave the user's
    HF_HUB_DISABLE_PROGRESS_BARS choice alone."""
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    if enabled or are_progress_bars_disabled():
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()


def _download_hub(source: HubSource, model_dir: Path, token: str | None, endpoint: str | None, progress: bool) -> None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        with _hub_progress_bars(progress):
            snapshot_download(**hub_download_kwargs(source, model_dir, token, endpoint))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise IdentityBodyError(
            ErrorCode.MODEL_DOWNLOAD_FAILED,
            f"Downloading {source.repo_id}@{source.revision[:12]} failed ({exc}). Files already "
            f"fetched are kept; run '{FETCH_COMMAND} --only {source.key}' again to resume "
            "(set IDBODY_HF_TOKEN if your mirror needs a token).",
        ) from exc


def _archive_member(names: dict[PurePosixPath, zipfile.ZipInfo], source: ArchiveSource, name: str) -> zipfile.ZipInfo:
    for candidate in (PurePosixPath(source.member_folder) / name, PurePosixPath(name)):
        if candidate in names:
            return names[candidate]
    raise IdentityBodyError(
        ErrorCode.MODEL_DOWNLOAD_FAILED,
        f"The {source.key} archive has no {source.member_folder}/{name}; it is not the expected "
        f"release asset ({source.url}).",
    )


def unpack_flat(archive: Path, source: ArchiveSource, model_dir: Path) -> None:
    """Extract the manifest's files from ``archive`` straight into ``source.folder`` (no nested
    ``antelopev2/antelopev2``). Files are staged beside the target and moved in only when every
    one of them was extracted at its expected size, so a failure leaves no half-unpacked pack."""
    target = Path(model_dir) / source.folder
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{source.key}-unpack-", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as bundle:
            names = {PurePosixPath(i.filename): i for i in bundle.infolist() if not i.is_dir()}
            for wanted in source.files:
                member = _archive_member(names, source, wanted.name)
                out_path = staging / wanted.name
                with bundle.open(member) as src, open(out_path, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                if wanted.size is not None and out_path.stat().st_size != wanted.size:
                    raise IdentityBodyError(
                        ErrorCode.MODEL_DOWNLOAD_FAILED,
                        f"{wanted.name} in the {source.key} archive is {out_path.stat().st_size} "
                        f"bytes, expected {wanted.size}; the archive is not the expected release.",
                    )
        target.mkdir(parents=True, exist_ok=True)
        for wanted in source.files:
            os.replace(staging / wanted.name, target / wanted.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def archive_part_path(source: ArchiveSource, model_dir: Path) -> Path:
    """Where the archive is streamed to (and resumed from) before it is unpacked."""
    return Path(model_dir) / DOWNLOADS_DIR / (PurePosixPath(urlparse(source.url).path).name + ".part")


def _download_archive(source: ArchiveSource, model_dir: Path, progress: bool) -> None:
    part = archive_part_path(source, model_dir)
    fetch(source.url, part, expected_size=source.size, progress=progress, desc=f"{source.key} archive")
    if source.sha256 is not None:
        digest = sha256_of(part)
        if digest != source.sha256:
            part.unlink()
            raise IdentityBodyError(
                ErrorCode.MODEL_DOWNLOAD_FAILED,
                f"The {source.key} archive from {source.url} has sha256 {digest}, expected "
                f"{source.sha256}. It was deleted and nothing was unpacked; run "
                f"'{FETCH_COMMAND} --only {source.key}' again, and if it fails again the release "
                "asset changed or something on the way altered it.",
            )
    unpack_flat(part, source, model_dir)
    part.unlink()
    with contextlib.suppress(OSError):
        part.parent.rmdir()  # only when no other partial download is waiting there


def download(
    model_dir: Path,
    token: str | None = None,
    progress: bool = True,
    *,
    only: Iterable[str] | None = None,
    manifest: Manifest | None = None,
    endpoint: str | None = None,
) -> None:
    """Fill ``model_dir`` with every file of the manifest. Parts that already verify are skipped;
    interrupted downloads resume (hub files through huggingface_hub's ``.incomplete`` files,
    the archive through an HTTP ``Range`` request).

    Example::

        download(Path("models"), only=["instantid", "antelopev2"])
    """
    chosen = (manifest or INSTANTID_MANIFEST).select(only)
    model_dir = Path(model_dir)
    for source in chosen.sources:
        if verify(model_dir, manifest=chosen, only=[source.key]).complete:
            continue
        if isinstance(source, HubSource):
            _download_hub(source, model_dir, token, endpoint, progress)
        else:
            _download_archive(source, model_dir, progress)

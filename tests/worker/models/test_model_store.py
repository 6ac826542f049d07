"""Model folder management: the manifest, ``verify`` (stat only), the archive path (checksum,
flat unpack, resume with Range) and the hub path against a loopback server speaking the few hub
endpoints huggingface_hub calls, plus the ``idbody models`` commands through ``idbody.cli.main``."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import types
import zipfile
from pathlib import Path

import pytest

from idbody.cli import main
from shared.errors import ErrorCode, IdentityBodyError
from tests.loopback_files import LoopbackFiles, Route
from worker.models import layout
from worker.models.download import archive_part_path, download, hub_download_kwargs
from worker.models.manifest import (
    ANTELOPEV2,
    INSTANTID_MANIFEST,
    SDXL,
    ArchiveSource,
    HubSource,
    Licence,
    Manifest,
    RemoteFile,
)
from worker.models.store import verify

TEST_LICENCE = Licence("test", "made up for this test")


def write_sized(path: Path, size: int) -> None:
    """A sparse file of ``size`` bytes: a 5 GB unet costs no disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size)


def fill(model_dir: Path, manifest: Manifest = INSTANTID_MANIFEST) -> None:
    for expected in manifest.expected_files():
        write_sized(model_dir / expected.path, expected.size if expected.size is not None else 1)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the manifest ----------------------------------------------------------------------


def test_manifest_names_every_file_the_loaders_read():
    paths = {e.path for e in INSTANTID_MANIFEST.expected_files()}
    assert f"{layout.CONTROLNET_DIR}/config.json" in paths
    assert f"{layout.CONTROLNET_DIR}/diffusion_pytorch_model.safetensors" in paths
    assert layout.IP_ADAPTER_FILE in paths
    assert layout.LCM_LORA_FILE in paths
    assert f"{layout.VAE_DIR}/diffusion_pytorch_model.safetensors" in paths
    antelope = {p for p in paths if p.startswith(layout.ANTELOPEV2_DIR + "/")}
    assert antelope == {
        f"{layout.ANTELOPEV2_DIR}/{name}"
        for name in ("1k3d68.onnx", "2d106det.onnx", "genderage.onnx", "glintr100.onnx", "scrfd_10g_bnkps.onnx")
    }
    # buffalo_l's files must never be expected: the seed's Option B is wrong
    assert not any(name in p for p in paths for name in ("w600k_r50", "det_10g", "buffalo"))
    assert ANTELOPEV2.url.endswith("/v0.7/antelopev2.zip") and len(ANTELOPEV2.sha256) == 64


def test_sdxl_allow_patterns_are_the_fp16_files_only(tmp_path: Path):
    kwargs = hub_download_kwargs(SDXL, tmp_path, token="t0k")
    patterns = kwargs["allow_patterns"]
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in patterns
    assert "text_encoder_2/model.fp16.safetensors" in patterns
    assert "tokenizer_2/vocab.json" in patterns and "model_index.json" in patterns
    weights = [p for p in patterns if p.endswith((".safetensors", ".bin"))]
    assert weights and all(".fp16." in p for p in weights)
    assert kwargs["local_dir"] == str(tmp_path / layout.SDXL_DIR)
    assert kwargs["revision"] == SDXL.revision and kwargs["token"] == "t0k"
    assert "endpoint" not in kwargs


def test_unknown_part_is_refused():
    with pytest.raises(IdentityBodyError) as caught:
        INSTANTID_MANIFEST.select(["sdxl", "buffalo_l"])
    assert caught.value.code is ErrorCode.INVALID_PARAMETER and "buffalo_l" in caught.value.message


# --- verify ----------------------------------------------------------------------------


def test_verify_empty_folder_reports_everything_missing(tmp_path: Path, capsys):
    report = verify(tmp_path)
    assert not report.complete
    assert {c.status for c in report.checks} == {"missing"}
    assert len(report.missing_paths) == len(INSTANTID_MANIFEST.expected_files())
    assert "idbody models download" in report.summary()

    assert main(["models", "verify", "--model-dir", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    unet = tmp_path / layout.SDXL_DIR / "unet/diffusion_pytorch_model.fp16.safetensors"
    assert f"missing        {unet}  (expected 5135149760 bytes)" in lines
    assert lines[-1].startswith("incomplete: 29 of 29 model files")


def test_verify_partial_folder(tmp_path: Path, capsys):
    fill(tmp_path, INSTANTID_MANIFEST.select(["instantid", "antelopev2"]))
    lora = tmp_path / layout.LCM_LORA_FILE
    write_sized(lora, 12)

    report = verify(tmp_path)
    by_path = {c.expected.path: c for c in report.checks}
    assert by_path[layout.IP_ADAPTER_FILE].status == "ok"
    assert by_path[f"{layout.ANTELOPEV2_DIR}/glintr100.onnx"].status == "ok"
    assert by_path[layout.LCM_LORA_FILE].status == "wrong_size"
    assert by_path[layout.LCM_LORA_FILE].found_size == 12
    assert by_path[f"{layout.SDXL_DIR}/model_index.json"].status == "missing"
    assert verify(tmp_path, only=["instantid", "antelopev2"]).complete and not verify(tmp_path, only=["lcm"]).complete
    assert lora in report.missing_paths and not report.complete

    assert main(["models", "verify", "--model-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"wrong size     {lora}  (expected 393855224 bytes, found 12 bytes)" in out
    assert f"ok             {tmp_path / layout.IP_ADAPTER_FILE}  (1691134141 bytes)" in out


def test_size_unknown_file_is_ok_when_present_and_not_empty(tmp_path: Path):
    config = tmp_path / layout.CONTROLNET_DIR / "config.json"
    write_sized(config, 0)
    check = next(c for c in verify(tmp_path).checks if c.path == config)
    assert check.expected.size is None and check.status == "wrong_size"
    config.write_text("{}")
    check = next(c for c in verify(tmp_path).checks if c.path == config)
    assert check.status == "ok"


def test_verify_complete_folder_of_sparse_files(tmp_path: Path, capsys):
    fill(tmp_path)
    report = verify(tmp_path)
    assert report.complete and report.missing_paths == []

    assert main(["models", "verify", "--model-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert all(line.startswith("ok ") for line in out[:-1])
    assert out[-1] == f"complete: All 29 model files are in place in {tmp_path}."

    assert main(["models", "verify", "--model-dir", str(tmp_path), "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["complete"] is True and len(body["files"]) == 29
    assert {f["status"] for f in body["files"]} == {"ok"}


def test_checksums_option_hashes_and_catches_a_changed_file(tmp_path: Path):
    good = b"weights"
    manifest = Manifest((HubSource("x", "org/x", "a" * 40, "x", (RemoteFile("w.bin", len(good), sha(good)),), TEST_LICENCE),))
    (tmp_path / "x").mkdir()
    (tmp_path / "x/w.bin").write_bytes(good)
    assert verify(tmp_path, manifest=manifest, checksums=True).complete
    (tmp_path / "x/w.bin").write_bytes(b"WEIGHTS")  # same size, other bytes
    assert verify(tmp_path, manifest=manifest).complete  # stat alone cannot see it
    report = verify(tmp_path, manifest=manifest, checksums=True)
    assert report.checks[0].status == "wrong_checksum" and report.checks[0].found_sha256 == sha(b"WEIGHTS")


# --- the archive path --------------------------------------------------------------------


def antelope_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("antelopev2/", b"")
        for name, data in members.items():
            bundle.writestr(f"antelopev2/{name}", data)
    return buffer.getvalue()


MEMBERS = {f.name: (f.name.encode() + b":") * (200 + i * 37) for i, f in enumerate(ANTELOPEV2.files)}


def tiny_antelope(url: str, archive: bytes, checksum: str | None = None, sizes: dict[str, int] | None = None) -> Manifest:
    sizes = sizes or {}
    files = tuple(RemoteFile(n, sizes.get(n, len(d)), sha(d)) for n, d in MEMBERS.items())
    source = ArchiveSource(
        key="antelopev2", url=url, sha256=checksum or sha(archive), size=len(archive),
        member_folder="antelopev2", folder=layout.ANTELOPEV2_DIR, files=files, licence=ANTELOPEV2.licence,
    )
    return Manifest((source,))


def leftovers(model_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file())


def test_archive_is_checked_and_unpacked_flat(tmp_path: Path):
    archive = antelope_zip(MEMBERS)
    with LoopbackFiles({"/v0.7/antelopev2.zip": archive}) as server:
        manifest = tiny_antelope(server.url("/v0.7/antelopev2.zip"), archive)
        download(tmp_path, progress=False, manifest=manifest)
        assert [r.method for r in server.requests] == ["GET"]
        assert "Range" not in server.requests[0].headers

    target = tmp_path / layout.ANTELOPEV2_DIR
    for name, data in MEMBERS.items():
        assert (target / name).read_bytes() == data
    assert not (target / "antelopev2").exists()
    assert leftovers(tmp_path) == sorted(f"{layout.ANTELOPEV2_DIR}/{n}" for n in MEMBERS)
    assert verify(tmp_path, manifest=manifest, checksums=True).complete


def test_wrong_checksum_is_refused_and_nothing_is_unpacked(tmp_path: Path):
    archive = antelope_zip(MEMBERS)
    with LoopbackFiles({"/antelopev2.zip": archive}) as server:
        manifest = tiny_antelope(server.url("/antelopev2.zip"), archive, checksum="0" * 64)
        with pytest.raises(IdentityBodyError) as caught:
            download(tmp_path, progress=False, manifest=manifest)
    assert caught.value.code is ErrorCode.MODEL_DOWNLOAD_FAILED
    assert f"has sha256 {sha(archive)}, expected {'0' * 64}" in caught.value.message
    assert leftovers(tmp_path) == []  # no partial archive kept, no half-unpacked pack


def test_member_of_unexpected_size_leaves_no_half_unpacked_pack(tmp_path: Path):
    archive = antelope_zip(MEMBERS)
    with LoopbackFiles({"/antelopev2.zip": archive}) as server:
        manifest = tiny_antelope(server.url("/antelopev2.zip"), archive, sizes={layout.DETECTOR_FILE: 1})
        with pytest.raises(IdentityBodyError, match=layout.DETECTOR_FILE):
            download(tmp_path, progress=False, manifest=manifest)
    # the files extracted before the bad one were staged, never moved into place
    assert not any((tmp_path / layout.ANTELOPEV2_DIR).glob("*.onnx"))
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".antelopev2-unpack")]


def test_partial_archive_is_resumed_with_a_range_request(tmp_path: Path):
    archive = antelope_zip(MEMBERS)
    cut = len(archive) // 3
    with LoopbackFiles({"/antelopev2.zip": archive}) as server:
        manifest = tiny_antelope(server.url("/antelopev2.zip"), archive)
        part = archive_part_path(manifest.sources[0], tmp_path)
        part.parent.mkdir(parents=True)
        part.write_bytes(archive[:cut])
        download(tmp_path, progress=False, manifest=manifest)
        assert [r.headers.get("Range") for r in server.requests] == [f"bytes={cut}-"]
    assert (tmp_path / layout.ANTELOPEV2_DIR / layout.RECOGNIZER_FILE).read_bytes() == MEMBERS[layout.RECOGNIZER_FILE]
    assert not part.exists()


def test_server_ignoring_range_restarts_from_zero(tmp_path: Path):
    archive = antelope_zip(MEMBERS)
    with LoopbackFiles({"/antelopev2.zip": archive}, honour_range=False) as server:
        manifest = tiny_antelope(server.url("/antelopev2.zip"), archive)
        part = archive_part_path(manifest.sources[0], tmp_path)
        part.parent.mkdir(parents=True)
        part.write_bytes(b"garbage that is not a prefix")
        download(tmp_path, progress=False, manifest=manifest)
    assert verify(tmp_path, manifest=manifest, checksums=True).complete


def test_complete_part_is_not_downloaded_again(tmp_path: Path):
    archive = antelope_zip(MEMBERS)
    with LoopbackFiles({"/antelopev2.zip": archive}) as server:
        manifest = tiny_antelope(server.url("/antelopev2.zip"), archive)
        download(tmp_path, progress=False, manifest=manifest)
        download(tmp_path, progress=False, manifest=manifest)  # already verifies: no request
        assert len(server.requests) == 1


# --- the hub path, against a loopback hub ------------------------------------------------


def fake_hub(repo_id: str, revision: str, files: dict[str, bytes]) -> dict[str, Route]:
    """The two endpoints snapshot_download calls for a pinned commit: the recursive tree listing
    and ``resolve`` (HEAD for metadata, GET for bytes)."""
    tree = [
        {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest(),
         "lfs": {"oid": sha(data), "size": len(data), "pointerSize": 130}}
        for name, data in files.items()
    ]
    routes = {f"/api/models/{repo_id}/tree/{revision}": Route(json.dumps(tree).encode(), content_type="application/json")}
    for name, data in files.items():
        routes[f"/{repo_id}/resolve/{revision}/{name}"] = Route(
            data, headers={"X-Repo-Commit": revision, "ETag": f'"{sha(data)}"'}
        )
    return routes


def test_hub_download_fetches_only_the_manifest_files_into_the_folder(tmp_path: Path):
    revision = "1234567890abcdef1234567890abcdef12345678"
    repo = {
        "model_index.json": b'{"_class_name": "StableDiffusionXLPipeline"}',
        "unet/diffusion_pytorch_model.fp16.safetensors": b"\x01" * 4096,
        "unet/diffusion_pytorch_model.safetensors": b"\x02" * 8192,  # fp32: must stay on the hub
    }
    wanted = ("model_index.json", "unet/diffusion_pytorch_model.fp16.safetensors")
    source = HubSource("sdxl", "org/tiny-sdxl", revision, layout.SDXL_DIR,
                       tuple(RemoteFile(n, len(repo[n]), sha(repo[n])) for n in wanted), TEST_LICENCE)
    manifest = Manifest((source,))
    with LoopbackFiles(fake_hub("org/tiny-sdxl", revision, repo)) as hub:
        download(tmp_path, progress=False, manifest=manifest, endpoint=hub.url())
        fetched = {r.path for r in hub.requests if r.method == "GET" and "/resolve/" in r.path}
    assert fetched == {f"/org/tiny-sdxl/resolve/{revision}/{n}" for n in wanted}
    assert verify(tmp_path, manifest=manifest, checksums=True).complete
    assert not (tmp_path / layout.SDXL_DIR / "unet/diffusion_pytorch_model.safetensors").exists()


def test_hub_failure_becomes_an_actionable_error(tmp_path: Path):
    source = HubSource("lcm", "org/gone", "f" * 40, layout.LCM_LORA_DIR, (RemoteFile("w.safetensors", 3),), TEST_LICENCE)
    with LoopbackFiles({}) as hub, pytest.raises(IdentityBodyError) as caught:
        download(tmp_path, progress=False, manifest=Manifest((source,)), endpoint=hub.url())
    assert caught.value.code is ErrorCode.MODEL_DOWNLOAD_FAILED
    assert "idbody models download --only lcm" in caught.value.message


# --- the other commands ------------------------------------------------------------------


def test_download_command_refuses_unknown_parts(tmp_path: Path, capsys):
    assert main(["models", "download", "--model-dir", str(tmp_path), "--only", "buffalo_l"]) == 1
    err = capsys.readouterr().err
    assert "buffalo_l" in err and "sdxl, vae, instantid, lcm, antelopev2" in err
    assert not any(tmp_path.iterdir())


def test_download_command_with_everything_present_fetches_nothing(tmp_path: Path, capsys):
    fill(tmp_path)
    assert main(["models", "download", "--model-dir", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("complete: All 29")
    # the licences come first, one line per part, naming the repo, revision and licence
    assert out[0].startswith("Model licences")
    licences = out[1:6]
    assert [line.split()[0] for line in licences] == ["sdxl", "vae", "instantid", "lcm", "antelopev2"]
    assert "stabilityai/stable-diffusion-xl-base-1.0 @ 462165984030" in licences[0]
    assert "Open RAIL++-M" in licences[0] and "Open RAIL++-M" in licences[3]
    assert "MIT" in licences[1]
    assert "non-commercial research" in licences[2] and "non-commercial research" in licences[4]


def test_download_only_some_parts_names_only_their_licences(tmp_path: Path, capsys):
    fill(tmp_path, INSTANTID_MANIFEST.select(["antelopev2"]))
    assert main(["models", "download", "--model-dir", str(tmp_path), "--only", "antelopev2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[0] == "antelopev2" and not out[2].startswith("  ")


def test_every_part_of_the_manifest_has_a_licence():
    for source in INSTANTID_MANIFEST.sources:
        assert source.licence.name and source.licence.terms, source.key


def test_build_tiny_calls_the_tiny_builder_with_the_folder(tmp_path: Path, monkeypatch, capsys):
    calls: list[Path] = []
    builder = types.ModuleType("worker.tiny.model_dir")
    builder.build_tiny_model_dir = calls.append
    monkeypatch.setitem(sys.modules, "worker.tiny.model_dir", builder)
    assert main(["models", "build-tiny", "--dir", str(tmp_path / "tiny")]) == 0
    assert calls == [tmp_path / "tiny"]
    assert str(tmp_path / "tiny") in capsys.readouterr().out


# --- the optional pose ControlNet ----------------------------------------------------------------


def test_pose_is_optional_and_named_with_its_repo_and_licence(tmp_path: Path, capsys):
    fill(tmp_path)
    assert "pose" not in INSTANTID_MANIFEST.keys  # the engine runs without it (prompt-only pose)
    assert main(["models", "verify", "--model-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    # asked for, it is checked like the others: missing until fetched
    assert main(["models", "verify", "--model-dir", str(tmp_path), "--with", "pose"]) == 1
    out = capsys.readouterr().out
    assert f"missing        {tmp_path / 'pose-controlnet/diffusion_pytorch_model.safetensors'}" in out
    assert out.rstrip().endswith("--with pose")  # the fetch hint fetches the optional part too
    fill(tmp_path, INSTANTID_MANIFEST.plus(["pose"]).select(["pose"]))
    assert main(["models", "download", "--model-dir", str(tmp_path), "--with", "pose", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    pose = next(line for line in lines if line.strip().startswith("pose "))
    assert "xinsir/controlnet-openpose-sdxl-1.0 @ 23f966cd5cfd" in pose and "Apache-2.0" in pose
    assert lines[-1].startswith("complete: All 31")


def test_an_unknown_optional_part_is_refused_before_anything_is_fetched(tmp_path: Path, capsys):
    assert main(["models", "download", "--model-dir", str(tmp_path), "--with", "depth"]) == 1
    err = capsys.readouterr().err
    assert "depth" in err and "choose from pose" in err
    assert not any(tmp_path.iterdir())

"""``idbody models add-base``: a diffusers folder and a single-file checkpoint are accepted and
recorded with their digest (the single file through diffusers' converter, back to the very
tensors it was written from), and what is not an SDXL base of this architecture, a path that does
not exist or a name already taken is refused with its code — all on copies of the tiny profile."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from idbody.cli import main
from shared.errors import ErrorCode, IdentityBodyError
from tests.sdxl_single_file import write_single_file
from worker.models.add_base import add_base
from worker.models.bases import (
    BASE_COMPONENTS,
    REGISTRY_FILE,
    expected_base_files,
    files_digest,
    list_bases,
)
from worker.models.fetch import sha256_of
from worker.models.store import verify
from worker.tiny.model_dir import MARKER, SECOND_BASE


@pytest.fixture
def model_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """The tiny profile's base (the reference every added base is checked against), no added base."""
    folder = tmp_path / "models"
    shutil.copytree(tiny_model_dir / "sdxl", folder / "sdxl")
    shutil.copy(tiny_model_dir / MARKER, folder / MARKER)
    return folder


@pytest.fixture
def second_base(tiny_model_dir: Path) -> Path:
    """A diffusers folder of another tiny SDXL base (the tiny profile's second one)."""
    return tiny_model_dir / "bases" / SECOND_BASE


def _weights(folder: Path, component: str) -> dict[str, torch.Tensor]:
    (file,) = (folder / component).glob("*.safetensors")
    return load_file(str(file))


def test_a_diffusers_folder_is_stored_and_recorded_with_its_digest(model_dir, second_base, capsys):
    assert main(["models", "add-base", str(second_base), "--name", "mine", "--model-dir", str(model_dir)]) == 0
    assert "added base mine (diffusers" in capsys.readouterr().out
    default, added = list_bases(model_dir)
    assert (default.name, default.default, added.name, added.default) == ("tiny", True, "mine", False)
    for component in BASE_COMPONENTS:
        assert _weights(added.folder, component).keys() == _weights(second_base, component).keys()
    record = json.loads((model_dir / REGISTRY_FILE).read_text())["bases"][0]
    assert record["sha256"] == added.digest == files_digest(list(added.files))
    assert {f["path"] for f in record["files"]} >= {"bases/mine/unet/config.json", "bases/mine/unet/diffusion_pytorch_model.safetensors"}
    # verify checks the recorded files: with their digests, and a damaged one is reported
    assert all(c.ok for c in verify(model_dir, checksums=True, extra=expected_base_files(model_dir)).checks[-len(record["files"]):])
    unet_file = next((added.folder / "unet").glob("*.safetensors"))
    unet_file.unlink()
    damaged = [c for c in verify(model_dir, extra=expected_base_files(model_dir)).checks if c.path == unet_file]
    assert [c.status for c in damaged] == ["missing"]


def test_a_single_file_checkpoint_converts_back_to_the_tensors_it_was_written_from(model_dir, second_base, tmp_path):
    single = write_single_file(second_base, tmp_path / "tiny-alt.safetensors")
    added = add_base(model_dir, single, "single")
    assert (added.layout, added.digest) == ("single_file", sha256_of(single))
    for component in BASE_COMPONENTS:
        theirs, ours = _weights(second_base, component), _weights(added.folder, component)
        assert theirs.keys() == ours.keys(), component
        assert all(torch.equal(theirs[k], ours[k]) for k in theirs), component


def test_a_file_of_another_architecture_is_refused(model_dir, tmp_path, capsys):
    sd15 = tmp_path / "sd15.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
               "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(768),
               "first_stage_model.decoder.conv_in.weight": torch.zeros(512, 4, 3, 3)}, str(sd15))
    assert main(["models", "add-base", str(sd15), "--name", "sd15", "--model-dir", str(model_dir)]) == 2
    err = capsys.readouterr().err
    assert "error (not_sdxl_checkpoint)" in err and "text_encoder" in err
    assert [b.name for b in list_bases(model_dir)] == ["tiny"]
    assert not (model_dir / "bases" / "sd15").exists()


def test_a_folder_with_a_reshaped_tensor_is_refused_and_nothing_is_kept(model_dir, second_base, tmp_path):
    folder = tmp_path / "wider"
    shutil.copytree(second_base, folder)
    (unet_file,) = (folder / "unet").glob("*.safetensors")
    tensors = load_file(str(unet_file))
    tensors["conv_in.weight"] = torch.zeros(16, 4, 3, 3)
    save_file(tensors, str(unet_file))
    with pytest.raises(IdentityBodyError) as caught:
        add_base(model_dir, folder, "wider")
    assert caught.value.code is ErrorCode.NOT_SDXL_CHECKPOINT
    assert "conv_in.weight" in caught.value.message and "shape" in caught.value.message
    assert not (model_dir / "bases" / "wider").exists() and not (model_dir / REGISTRY_FILE).exists()


def test_a_folder_of_other_classes_is_refused(model_dir, second_base, tmp_path):
    folder = tmp_path / "controlnet"
    shutil.copytree(second_base, folder)
    config = json.loads((folder / "unet" / "config.json").read_text())
    (folder / "unet" / "config.json").write_text(json.dumps({**config, "_class_name": "ControlNetModel"}))
    with pytest.raises(IdentityBodyError) as caught:
        add_base(model_dir, folder, "cn")
    assert caught.value.code is ErrorCode.NOT_SDXL_CHECKPOINT
    assert "ControlNetModel" in caught.value.message


def test_a_missing_path_a_taken_name_and_a_bad_name_are_refused(model_dir, second_base, tmp_path):
    with pytest.raises(IdentityBodyError) as missing:
        add_base(model_dir, tmp_path / "nowhere.safetensors", "x")
    assert missing.value.code is ErrorCode.CHECKPOINT_NOT_FOUND
    add_base(model_dir, second_base, "mine")
    for taken in ("mine", "tiny"):
        with pytest.raises(IdentityBodyError) as duplicate:
            add_base(model_dir, second_base, taken)
        assert duplicate.value.code is ErrorCode.BASE_MODEL_EXISTS
        assert "mine" in duplicate.value.message and "--name" in duplicate.value.message
    with pytest.raises(IdentityBodyError) as bad:
        add_base(model_dir, second_base, "My Model")
    assert (bad.value.code, bad.value.field) == (ErrorCode.INVALID_PARAMETER, "name")
    assert [b.name for b in list_bases(model_dir)] == ["tiny", "mine"]

"""The antelopev2 analyzer's model-folder handling (the released pack is not reachable offline;
the tiny profile's real analyzer is tested in test_dlib_analyzer.py), and which analyzer each
profile gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import ErrorCode, IdentityBodyError
from shared.settings import Settings
from worker.face.analysis import FaceAnalyzer, resolve_antelopev2_root
from worker.face.dlib_analyzer import DlibFaceAnalyzer
from worker.pipeline_setup import face_analyzer_for
from worker.models.layout import ANTELOPEV2_DIR, DETECTOR_FILE, RECOGNIZER_FILE

CPU = ["CPUExecutionProvider"]


def place_pack(folder: Path, names=(DETECTOR_FILE, RECOGNIZER_FILE)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"placeholder: only the layout is checked here")


def test_nested_zip_layout_is_accepted(tmp_path):
    nested = tmp_path / ANTELOPEV2_DIR / "antelopev2"
    place_pack(nested)
    assert resolve_antelopev2_root(tmp_path) == nested.resolve()


def test_flat_layout_resolves_to_pack_folder(tmp_path):
    place_pack(tmp_path / ANTELOPEV2_DIR)
    assert resolve_antelopev2_root(tmp_path) == (tmp_path / ANTELOPEV2_DIR).resolve()


def test_missing_folder_lists_files_and_command(tmp_path):
    with pytest.raises(IdentityBodyError) as err:
        FaceAnalyzer(tmp_path, CPU).load()
    assert err.value.code == ErrorCode.MODELS_MISSING
    assert DETECTOR_FILE in err.value.message and RECOGNIZER_FILE in err.value.message
    assert "idbody models download" in err.value.message
    assert not (tmp_path / ANTELOPEV2_DIR).exists()  # nothing was downloaded or created


def test_partial_folder_lists_only_missing_file(tmp_path):
    place_pack(tmp_path / ANTELOPEV2_DIR, names=(DETECTOR_FILE,))
    with pytest.raises(IdentityBodyError) as err:
        resolve_antelopev2_root(tmp_path)
    assert RECOGNIZER_FILE in err.value.message
    assert DETECTOR_FILE not in err.value.message


def test_each_profile_gets_its_analyzer(tmp_path):
    settings = Settings(_env_file=None, onnx_providers=CPU, min_face_px=96)
    tiny = face_analyzer_for("tiny", tmp_path, settings)
    released = face_analyzer_for("instantid", tmp_path, settings)
    assert isinstance(tiny, DlibFaceAnalyzer) and tiny.min_face_px == 96
    assert isinstance(released, FaceAnalyzer) and released.min_face_px == 96

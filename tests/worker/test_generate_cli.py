"""``idbody generate`` as a user runs it: a subprocess on the shipped photo with the tiny profile,
checked by its files, its result.json and its exit status; and ``idbody --version``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from shared.errors import ErrorCode
from shared.params import GenerationParams
from shared.params_cli import option_name
from tests.image_samples import uniform_jpeg

REPO = Path(__file__).resolve().parents[2]
PHOTO = REPO / "docs" / "examples" / "face.jpg"
SMALL = ["--num-images", "2", "--width", "64", "--height", "96", "--num-inference-steps", "2"]
# loading the tiny profile and two steps: seconds on an idle machine, a few minutes on a busy one
RUN_LIMIT_S = 600


def _idbody(*argv: str, cwd: Path, tiny_dir: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDBODY_")}
    env.update(PYTHONPATH=str(REPO), IDBODY_DEVICE="cpu", IDBODY_ONNX_PROVIDERS='["CPUExecutionProvider"]')
    if tiny_dir is not None:
        env["IDBODY_TINY_MODEL_DIR"] = str(tiny_dir)
    # cwd without a .env, so only the variables above configure the run
    return subprocess.run([sys.executable, "-m", "idbody.cli", *argv], cwd=cwd, env=env, capture_output=True, check=False,
                          text=True, timeout=RUN_LIMIT_S)


@pytest.mark.integration  # a process that loads the engine: seconds idle, minutes on a busy machine
def test_generate_writes_images_and_the_seed_result_shape(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    run = _idbody("generate", str(PHOTO), "-o", str(out), "--profile", "tiny", "--body-type", "athletic",
                  "--seed", "11", "--style", "anime", "--scene", "in a park", "--output-format", "jpeg",
                  "--base-model", "tiny-alt", *SMALL, cwd=tmp_path, tiny_dir=tiny_model_dir)
    assert run.returncode == 0, run.stderr
    sidecar = json.loads((out / "result.json").read_text())
    # the API's result shape (the status API's result view), with file URLs
    assert {"success", "request_id", "count", "images", "analysis", "method", "profile", "note", "parts",
            "input_face"} <= set(sidecar)
    assert sidecar["success"] is True and sidecar["count"] == 2 and sidecar["seed"] == 11
    assert [im["id"] for im in sidecar["images"]] == ["identity_body_0", "identity_body_1"]
    for index, image in enumerate(sidecar["images"]):
        assert {"identity_score", "face_found", "below_threshold", "seed", "face_detail", "face_detail_reason"} <= set(image)
        assert image["face_found"] is (image["identity_score"] is not None)
        path = out / image["file"]
        assert image["file"] == f"identity_body_{index}.jpg" and image["content_type"] == "image/jpeg"
        assert image["url"] == path.resolve().as_uri()
        assert Image.open(path).size == (64, 96) == (image["width"], image["height"])
        assert Image.open(path).format == "JPEG" and image["nsfw"] is False
    assert (sidecar["safety_check"], sidecar["identity_judge"]) == ("nudenet-320n", "dlib-resnet")
    assert sorted(image["seed"] for image in sidecar["images"]) == [11, 12]  # image i: seed + i
    assert sidecar["input_face"]["det_score"] > 0
    assert sidecar["params"]["body_type"] == "athletic" and sidecar["profile"] == "tiny"
    assert (sidecar["params"]["style"], sidecar["params"]["scene"]) == ("anime", "in a park")
    assert sidecar["base_model"] == "tiny-alt"   # the tiny profile's second base checkpoint
    assert sidecar["analysis"]["face"]["face_count"] >= 1
    for stage in ("loading models", "analysing the face", "denoising", "writing images"):
        assert stage in run.stderr
    assert "2/2" in run.stderr  # the step bar reached the end
    assert "Loading pipeline components" not in run.stderr  # library noise stays off


@pytest.mark.integration
def test_a_photo_without_a_face_exits_2_with_its_code(tiny_model_dir, tmp_path):
    photo = tmp_path / "wall.jpg"
    photo.write_bytes(uniform_jpeg())
    run = _idbody("generate", str(photo), "-o", str(tmp_path / "out"), "--profile", "tiny", *SMALL,
                  cwd=tmp_path, tiny_dir=tiny_model_dir)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith(f"error: {ErrorCode.NO_FACE_DETECTED.value}: ")
    sidecar = json.loads((tmp_path / "out" / "result.json").read_text())
    assert sidecar["success"] is False and sidecar["error"]["code"] == "no_face_detected"
    assert not list((tmp_path / "out").glob("*.png"))


@pytest.mark.parametrize("argv, code, field", [
    (["--height-cm", "20"], "invalid_parameter", "height_cm"),
    (["--mode", "fast", "--guidance-scale", "7"], "invalid_parameter", "guidance_scale"),
    (["--width", "wide"], "invalid_parameter", "width"),
    (["--body-type", "tall"], "invalid_parameter", "body_type"),
])
def test_parameters_are_checked_by_the_api_model_before_anything_loads(tmp_path, argv, code, field):
    run = _idbody("generate", str(PHOTO), "-o", str(tmp_path), "--quiet", *argv, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.startswith(f"error: {code}: {field}:"), run.stderr
    assert json.loads((tmp_path / "result.json").read_text())["error"]["field"] == field


def test_unreadable_or_non_image_photos_exit_2(tmp_path):
    missing = _idbody("generate", str(tmp_path / "nope.jpg"), "-o", str(tmp_path), cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.startswith("error: invalid_parameter: ")
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    wrong = _idbody("generate", str(text), "-o", str(tmp_path), cwd=tmp_path)
    assert wrong.returncode == 2 and wrong.stderr.startswith("error: unsupported_media_type: ")


def test_every_parameter_is_an_option_and_version_prints(tmp_path):
    help_text = _idbody("generate", "--help", cwd=tmp_path).stdout
    assert all(option_name(name) in help_text for name in GenerationParams.model_fields)
    version = _idbody("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("idbody ")


@pytest.mark.integration
def test_two_photos_of_one_person_make_one_identity(tiny_model_dir, tmp_path):
    mirrored = tmp_path / "mirrored.jpg"
    ImageOps.mirror(Image.open(PHOTO)).save(mirrored, quality=92)
    out = tmp_path / "out"
    run = _idbody("generate", str(PHOTO), str(mirrored), "-o", str(out), "--profile", "tiny", "--quiet", *SMALL,
                  cwd=tmp_path, tiny_dir=tiny_model_dir)
    assert run.returncode == 0, run.stderr
    sidecar = json.loads((out / "result.json").read_text())
    assert sidecar["success"] is True and sidecar["face_image_count"] == 2
    assert sidecar["keypoints_face_image"] in (1, 2) and len(sidecar["analysis"]["face_images"]) == 2


def test_too_many_or_a_bad_second_photo_exit_2_naming_it(tmp_path):
    six = _idbody("generate", *[str(PHOTO)] * 6, "-o", str(tmp_path), "--quiet", cwd=tmp_path)
    assert six.returncode == 2 and six.stderr.startswith("error: too_many_face_images: 6 face photos"), six.stderr
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    second = _idbody("generate", str(PHOTO), str(text), "-o", str(tmp_path), "--quiet", cwd=tmp_path)
    assert second.returncode == 2
    assert second.stderr.startswith("error: unsupported_media_type: Photo 2 of 2: "), second.stderr
    assert json.loads((tmp_path / "result.json").read_text())["error"]["field"] == "face_image[2]"


@pytest.mark.integration
def test_a_pose_photo_sets_the_pose_and_one_of_nobody_exits_2_with_its_code(tiny_model_dir, tmp_path):
    from tests.pose_photos import astronaut, grass

    dancer, lawn = tmp_path / "dancer.jpg", tmp_path / "lawn.jpg"
    astronaut().save(dancer)
    grass().save(lawn)
    run = _idbody("generate", str(PHOTO), "-o", str(tmp_path / "posed"), "--profile", "tiny", "--quiet",
                  "--pose-image", str(dancer), *SMALL, cwd=tmp_path, tiny_dir=tiny_model_dir)
    assert run.returncode == 0, run.stderr
    sidecar = json.loads((tmp_path / "posed" / "result.json").read_text())
    assert sidecar["pose_source"] == "photo" and "pose-photo-head-only" in sidecar["parts"]
    run = _idbody("generate", str(PHOTO), "-o", str(tmp_path / "nobody"), "--profile", "tiny", "--quiet",
                  "--pose-image", str(lawn), *SMALL, cwd=tmp_path, tiny_dir=tiny_model_dir)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith(f"error: {ErrorCode.NO_PERSON_IN_POSE_IMAGE.value}: ")
    sidecar = json.loads((tmp_path / "nobody" / "result.json").read_text())
    assert sidecar["error"]["field"] == "pose_image"

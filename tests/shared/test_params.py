"""The one place generation ranges live: every caller (HTTP form, task payload, Python API) sees
the same errors, naming the field and its range."""

import pytest

from shared.errors import ErrorCode, IdentityBodyError
from shared.params import LCM_MAX_GUIDANCE, LCM_MAX_STEPS, GenerationParams, parse_params


@pytest.mark.parametrize(
    ("field", "value", "range_words"),
    [
        ("height_cm", 49, "50-300"),
        ("height_cm", 301, "50-300"),
        ("weight_kg", 19.5, "20-500"),
        ("weight_kg", 501, "20-500"),
        ("num_images", 0, "1-4"),
        ("num_images", 5, "1-4"),
        ("ip_adapter_scale", 2.5, "strength"),
        ("width", 100, "multiple of 8"),
    ],
)
def test_out_of_range_names_field_and_range(field, value, range_words):
    with pytest.raises(IdentityBodyError) as err:
        parse_params({field: value})
    assert err.value.code is ErrorCode.INVALID_PARAMETER
    assert err.value.field == field
    assert range_words in err.value.message
    assert repr(value) in err.value.message


@pytest.mark.parametrize(("field", "value"), [("body_type", "tall"), ("gender", "x"), ("pose", "running")])
def test_unknown_choice_is_refused(field, value):
    with pytest.raises(IdentityBodyError) as err:
        parse_params({field: value})
    assert err.value.field == field


def test_unknown_field_is_refused_by_name():
    with pytest.raises(IdentityBodyError) as err:
        parse_params({"heigth_cm": 170})
    assert err.value.field == "heigth_cm"


def test_mode_defaults():
    fast, quality = GenerationParams(), GenerationParams(mode="quality")
    assert (fast.steps(), fast.guidance()) == (5, 1.5)
    assert (quality.steps(), quality.guidance()) == (30, 5.0)
    assert GenerationParams(num_inference_steps=4, guidance_scale=1).steps() == 4


def test_fast_mode_refuses_what_lcm_cannot_do():
    with pytest.raises(IdentityBodyError, match="at most 2 in fast") as err:
        parse_params({"mode": "fast", "guidance_scale": LCM_MAX_GUIDANCE + 0.5})
    assert err.value.field == "guidance_scale"
    with pytest.raises(IdentityBodyError, match=f"at most {LCM_MAX_STEPS}") as err:
        parse_params({"mode": "fast", "num_inference_steps": LCM_MAX_STEPS + 1})
    assert err.value.field == "num_inference_steps"
    assert parse_params({"mode": "quality", "num_inference_steps": 80, "guidance_scale": 7}).steps() == 80


def test_seed_body_params_round_trip():
    body = {"body_type": "athletic", "height_cm": 170, "weight_kg": 65, "gender": "female",
            "ethnicity": "East Asian", "skin_tone": "fair", "pose": "standing", "clothing": "casual minimal"}
    assert parse_params(body).body_params() == body


def test_face_stage_defaults_and_ranges():
    params = GenerationParams()
    assert params.face_detail is True and params.face_detail_strength == 0.4 and params.face_region_emphasis is True
    assert params.width is None and params.height is None, "the engine picks the profile's default size"
    for bad in (-0.1, 1.5):
        with pytest.raises(IdentityBodyError) as err:
            parse_params({"face_detail_strength": bad})
        assert err.value.field == "face_detail_strength"
    assert parse_params({"face_detail": "false"}).face_detail is False


def test_the_schema_titles_are_labels_a_person_reads():
    from shared.params import TITLES

    props = GenerationParams.model_json_schema()["properties"]
    assert set(TITLES) <= set(props)  # no title left for a field that is gone
    assert props["num_images"]["title"] == "Number of images"
    assert props["height_cm"]["title"] == "Height (cm)"
    assert props["ip_adapter_scale"]["title"] == "Identity strength (IP-Adapter)"
    # never the name title-cased ("Num Images", "Ip Adapter Scale"): the page shows the title
    assert not [name for name, prop in props.items() if "_" in name and prop["title"] == name.replace("_", " ").title()]

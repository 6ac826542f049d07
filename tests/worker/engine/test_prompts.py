"""The prompt table: every body type, pose and gender, the BMI band edges, and who wins between the
user's values and the appearance analysis."""

from __future__ import annotations

import dataclasses

import pytest

from shared.styles import STYLES
from worker.engine.prompts import PromptPair, bmi_band, build_prompt, face_detail_prompt


def body(**overrides):
    base = {
        "body_type": "average",
        "height_cm": 170,
        "weight_kg": 65,
        "gender": "other",
        "ethnicity": None,
        "skin_tone": None,
        "pose": "standing",
        "clothing": "casual minimal",
    }
    return {**base, **overrides}


@pytest.mark.parametrize(
    ("height_cm", "weight_kg", "band"),
    [
        (100, 18.49, "underweight"),  # BMI 18.49
        (100, 18.5, "normal"),  # lower edge belongs to the upper band
        (100, 24.99, "normal"),
        (100, 25.0, "overweight"),
        (100, 29.99, "overweight"),
        (100, 30.0, "obese"),
        (170, 65, "normal"),  # 22.5
        (180, 55, "underweight"),  # 16.98
        (160, 70, "overweight"),  # 27.3
        (165, 95, "obese"),  # 34.9
        (300, 20, "underweight"),  # seed ranges' extremes
        (50, 500, "obese"),
    ],
)
def test_bmi_band_table(height_cm, weight_kg, band):
    assert bmi_band(height_cm, weight_kg) == band


def test_bmi_band_rejects_non_positive():
    with pytest.raises(ValueError):
        bmi_band(0, 60)


@pytest.mark.parametrize(
    ("body_type", "words"),
    [
        ("slim", "slim build"),
        ("athletic", "athletic build"),
        ("muscular", "muscular build"),
        ("average", "average build"),
        ("curvy", "curvy figure"),
    ],
)
def test_each_body_type_names_its_build(body_type, words):
    positive = build_prompt(body(body_type=body_type)).positive
    assert words in positive
    others = {"slim build", "athletic build", "muscular build", "average build", "curvy figure"} - {words}
    assert not any(o in positive for o in others)


@pytest.mark.parametrize(
    ("height_cm", "weight_kg", "words", "absent"),
    [
        (175, 50, "very lean", "plus-size"),
        (175, 70, "healthy weight", "heavyset"),
        (175, 85, "heavyset", "very lean"),
        (175, 110, "plus-size", "healthy weight"),
    ],
)
def test_bmi_band_changes_the_body_words(height_cm, weight_kg, words, absent):
    positive = build_prompt(body(height_cm=height_cm, weight_kg=weight_kg)).positive
    assert words in positive
    assert absent not in positive


@pytest.mark.parametrize(
    ("height_cm", "words"),
    [(150, "short stature"), (170, None), (190, "tall stature")],
)
def test_height_words(height_cm, words):
    # weight scaled to keep the BMI band fixed so only height differs
    weight = 22 * (height_cm / 100) ** 2
    positive = build_prompt(body(height_cm=height_cm, weight_kg=weight)).positive
    if words is None:
        assert "stature" not in positive
    else:
        assert words in positive


@pytest.mark.parametrize(
    ("pose", "words", "negative_words"),
    [
        ("standing", "standing upright", "sitting"),
        ("walking", "mid-stride", "sitting"),
        ("sitting", "sitting on a chair", "standing"),
    ],
)
def test_each_pose(pose, words, negative_words):
    pair = build_prompt(body(pose=pose))
    assert words in pair.positive
    assert negative_words in pair.negative
    # full-body framing whatever the pose
    assert "full body shot" in pair.positive
    assert "shoes visible" in pair.positive


@pytest.mark.parametrize(
    ("gender", "noun"),
    [("male", "man"), ("female", "woman"), ("other", "person")],
)
def test_each_gender(gender, noun):
    positive = build_prompt(body(gender=gender)).positive
    assert positive.startswith(f"full body shot of a {noun},")


def test_framing_words_and_negative_guards():
    pair = build_prompt(body())
    for words in ("full body shot", "head to toe", "entire body in frame", "shoes visible"):
        assert words in pair.positive
    for words in ("cropped", "portrait", "close-up", "headshot", "extra limbs", "missing feet"):
        assert words in pair.negative
    # nothing that asks for a portrait sneaks into the positive prompt
    assert "portrait" not in pair.positive and "close-up" not in pair.positive


def test_seed_example_reads_as_expected():
    pair = build_prompt(
        body(body_type="athletic", gender="female", ethnicity="East Asian", skin_tone="fair")
    )
    assert pair.positive.startswith("full body shot of an East Asian woman, head to toe")
    assert "fair skin" in pair.positive
    assert "wearing casual minimal" in pair.positive


def test_user_values_win_over_analysis():
    analysis = {
        "skin_tone": "deep brown",
        "ethnicity": "West African",
        "gender_presentation": "male",
        "age_range": "30-40",
        "hair": "short curly hair",
    }
    positive = build_prompt(
        body(gender="female", ethnicity="Nordic", skin_tone="pale"), analysis
    ).positive
    assert "Nordic woman" in positive and "pale skin" in positive
    assert "West African" not in positive and "deep brown" not in positive
    assert " man," not in positive
    # fields the user cannot set come from the analysis
    assert "30-40 year old" in positive and "short curly hair" in positive


@pytest.mark.parametrize("empty", [None, "", "   "])
def test_analysis_fills_blank_fields(empty):
    analysis = {"skin_tone": "warm ivory", "ethnicity": "East Asian", "gender_presentation": "female"}
    positive = build_prompt(body(ethnicity=empty, skin_tone=empty, gender=empty), analysis).positive
    assert "East Asian woman" in positive
    assert "warm ivory skin" in positive


def test_without_analysis_blank_fields_leave_no_trace():
    positive = build_prompt(body(ethnicity=None, skin_tone=""), None).positive
    assert "skin" not in positive
    assert ", ," not in positive and "  " not in positive
    assert positive.startswith("full body shot of a person,")


def test_skin_tone_not_doubled_and_free_text_collapsed():
    positive = build_prompt(body(skin_tone="olive skin", clothing="  red \n dress ")).positive
    assert "olive skin" in positive and "skin skin" not in positive
    assert "wearing red dress" in positive


def test_missing_keys_fall_back_to_seed_defaults():
    pair = build_prompt({"gender": "male"})
    assert "average build" in pair.positive
    assert "standing upright" in pair.positive
    assert "healthy weight" in pair.positive


def test_prompt_pair_is_frozen():
    pair = build_prompt(body())
    assert isinstance(pair, PromptPair)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pair.positive = "x"  # type: ignore[misc]


def test_subject_and_framing_lead_the_prompt():
    # CLIP reads 77 tokens: framing must sit in the first few words, before the details
    positive = build_prompt(body(clothing="a very long description " * 5)).positive
    head = positive.split(", ")[:4]
    assert head[0].startswith("full body shot of")
    assert "head to toe" in head


@pytest.mark.parametrize("name", sorted(STYLES))
def test_each_style_reaches_both_prompts(name):
    style = STYLES[name]
    pair = build_prompt(body(style=name))
    assert style.positive in pair.positive
    assert style.negative in pair.negative
    # the look comes right after the framing, inside the 77 tokens the text encoders read
    assert pair.positive.index(style.positive) < pair.positive.index("wearing")
    detail = face_detail_prompt(body(style=name))
    assert style.positive in detail.positive and style.negative in detail.negative


def test_styles_differ_and_the_default_is_photographic():
    prompts = {build_prompt(body(style=name)).positive for name in STYLES}
    assert len(prompts) == len(STYLES)
    assert build_prompt(body()).positive == build_prompt(body(style="photographic")).positive
    assert "photorealistic" in build_prompt(body()).positive


def test_painted_styles_do_not_ask_for_a_photograph():
    pair = build_prompt(body(style="watercolor"))
    assert "photorealistic" not in pair.positive
    assert "photorealistic" in pair.negative


@pytest.mark.parametrize("scene", ["on a beach at sunset", "in a busy Tokyo street at night"])
def test_scene_reaches_the_prompt_after_the_clothing(scene):
    positive = build_prompt(body(scene=scene)).positive
    assert scene in positive
    assert positive.index("wearing") < positive.index(scene)


def test_scene_is_collapsed_to_one_phrase_and_absent_when_empty():
    assert build_prompt(body(scene="in a park\n  at dawn, ")).positive.endswith(", in a park at dawn")
    assert build_prompt(body(scene=None)).positive == build_prompt(body()).positive
    assert build_prompt(body(scene="  ")).positive == build_prompt(body()).positive


def test_every_style_is_a_parameter_choice_and_listed():
    from typing import get_args

    from shared.styles import StyleName, style_list

    assert set(get_args(StyleName)) == set(STYLES)
    assert len(STYLES) >= 6
    listed = style_list()
    assert [s["name"] for s in listed] == list(get_args(StyleName))
    assert all(s["description"].endswith(".") and "\n" not in s["description"] for s in listed)

"""Tumour-type classification through a real server: 3D case, 2D image, and inputs unlike the training data."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import requests
from PIL import Image

from brain_tumor_mri.labels import TUMOR_CLASSES
from brain_tumor_mri.layout import list_cases

pytestmark = pytest.mark.server


def _classify(server, image_id: str) -> dict:
    _, raw = server.client.infer("classification", image_id, {})
    return json.loads(raw)


def _check(result: dict, kind: str) -> None:
    """The answer contract: probabilities, best guess, confidence; the type only when confident."""
    assert result["input_kind"] == kind
    assert set(result["probabilities"]) == set(TUMOR_CLASSES)
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert result["best_guess"] == max(result["probabilities"], key=result["probabilities"].get)
    conf = result["confidence"]
    assert conf["level"] in ("high", "low") and conf["max_probability"] == pytest.approx(
        result["probabilities"][result["best_guess"]], abs=1e-5
    )
    if conf["level"] == "high":
        assert result["tumor_type"] == result["best_guess"] and conf["reasons"] == []
    else:
        assert result["tumor_type"] in ("uncertain", "other") and conf["reasons"]
    assert result["model_version"]


@pytest.mark.parametrize("kind", ["3d", "2d"])
def test_classify_and_record(server, kind):
    image_id = list_cases(server.studies, kind=kind)[0]
    result = _classify(server, image_id)
    _check(result, kind)
    again = _classify(server, image_id)
    assert again["probabilities"] == result["probabilities"], "outputs must be deterministic"
    info = server.client.datastore()["objects"][image_id]["image"]["info"]
    assert info["classification"]["tumor_type"] == result["tumor_type"]
    assert info["classification"]["probabilities"] == pytest.approx(result["probabilities"])


def test_classify_uploaded_rgb_jpeg(server):
    png = next(server.studies.glob("*.png"))
    rgb = Image.open(png).convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG")
    r = requests.post(
        f"{server.url}/infer/classification",
        files={"file": ("slice.jpg", buf.getvalue())},
        data={"params": "{}"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    _check(r.json(), "2d")


@pytest.mark.parametrize(
    "name, body, words",
    [
        ("notes.png", b"this is not an image", "not an image"),
        ("blank.png", None, "empty"),
        ("tiny.png", "tiny", "too small"),
    ],
)
def test_bad_2d_inputs(server, name, body, words):
    if body is None or body == "tiny":
        size = (8, 8) if body == "tiny" else (128, 128)
        img = Image.fromarray(
            np.full(size, 7 if body is None else 0, np.uint8)
            if body is None
            else np.random.default_rng(0).integers(0, 255, size, dtype=np.uint8)
        )
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        body = buf.getvalue()
    r = requests.post(
        f"{server.url}/infer/classification", files={"file": (name, body)}, data={"params": "{}"}, timeout=60
    )
    assert 400 <= r.status_code < 500, r.text
    assert words in r.json()["detail"]
    assert server.alive()


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _colour_photo() -> np.ndarray:
    """A smooth, structured colour picture (sky, sun, grass): valid input, but no MR slice."""
    yy, xx = np.mgrid[:200, :300]
    img = np.zeros((200, 300, 3), np.float32)
    img[..., 0], img[..., 1], img[..., 2] = 80 + 100 * yy / 200, 140 + 60 * yy / 200, 230 - 30 * yy / 200
    img[yy > 140] = [60, 150, 50]
    img[(yy - 70) ** 2 + (xx - 220) ** 2 < 25**2] = [250, 220, 40]
    return img.astype(np.uint8)


@pytest.mark.parametrize(
    ("name", "make", "code"),
    [
        ("holiday.png", _colour_photo, "input.colour"),
        ("noise.png", lambda: np.random.default_rng(1).integers(0, 256, (160, 160), dtype=np.uint8), "input.texture"),
    ],
)
def test_input_unlike_the_training_data_is_answered_as_uncertain(server, name, make, code):
    r = requests.post(
        f"{server.url}/infer/classification", files={"file": (name, _png(make()))}, data={"params": "{}"}, timeout=60
    )
    assert r.status_code == 200, r.text
    result = r.json()
    _check(result, "2d")
    assert result["tumor_type"] == "uncertain"
    assert result["best_guess"] in TUMOR_CLASSES  # the probabilities are still given
    reasons = result["confidence"]["reasons"]
    assert code in [x["code"] for x in reasons] and all(x["message"] for x in reasons)
    assert result["confidence"]["level"] == "low"


def test_in_distribution_slice_passes_the_input_checks(server):
    png = next(server.studies.glob("*.png"))
    result = _classify(server, png.stem)
    _check(result, "2d")
    assert not [x for x in result["confidence"]["reasons"] if x["code"].startswith("input.")]


def test_3d_answer_comes_from_the_segmentations_lesion_features(server):
    """With the shipped lesion-type model, a 3D case's type is read from its segmentation (lesion_type.py).

    The sample cases' true types are known (case meta), so the answer's content is checked, not
    just its shape: the shipped model must name most of them right.
    """
    from brain_tumor_mri.inference.lesion_features import FEATURE_NAMES
    from brain_tumor_mri.layout import read_case_meta

    truth = {c: read_case_meta(server.studies, c).get("tumor_type") for c in list_cases(server.studies, kind="3d")}
    truth = {c: t for c, t in truth.items() if t in TUMOR_CLASSES}
    assert len(truth) >= 4
    right = 0
    for case_id, true_type in sorted(truth.items()):
        result = _classify(server, case_id)
        _check(result, "3d")
        assert result["method"] == "lesion_features" and result["model_version"].startswith("lesion-type ")
        assert list(result["lesion_features"]) == list(FEATURE_NAMES)
        assert set(result["image_model"]["probabilities"]) == set(TUMOR_CLASSES)
        assert result["consistency"]["applied"]
        right += result["best_guess"] == true_type
    assert right >= len(truth) - 1, f"{right} of {len(truth)} sample cases typed right"

"""Tumour-type classification through a real server, for a 3D case and a 2D image."""

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
    assert result["input_kind"] == kind
    assert set(result["probabilities"]) == set(TUMOR_CLASSES)
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert result["tumor_type"] == max(result["probabilities"], key=result["probabilities"].get)
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

"""Served weights as a ZIP, and validated, atomic replacement from one (no server)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import torch

from brain_tumor_mri.imageio import InputError
from brain_tumor_mri.inference.segmenter import store_expectations
from brain_tumor_mri.networks.checkpoint import save_model, sidecar_path
from brain_tumor_mri.networks.factory import build_segmentation_network
from brain_tumor_mri.networks.store import ModelStore
from brain_tumor_mri.server import model_files
from tests.helpers.activelearning import TINY_NETWORK, segmentation_meta


@pytest.fixture
def store(tmp_path: Path, tiny_weights: Path) -> ModelStore:
    """A store serving the shipped tiny weights; nothing published yet."""
    return ModelStore(
        "segmentation", tmp_path / "studies" / "model" / "segmentation.pt", tiny_weights, torch.device("cpu"),
        expect=store_expectations(),
    )  # fmt: skip


def _zip(files: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    buffer.seek(0)
    return buffer


def _other_weights(tmp_path: Path, seed: int = 1) -> Path:
    torch.manual_seed(seed)
    path = tmp_path / f"other{seed}" / "segmentation.pt"
    save_model(build_segmentation_network(**TINY_NETWORK), path, segmentation_meta(TINY_NETWORK, 3.0))
    return path


def test_archive_holds_exactly_the_serving_pair(store, tiny_weights):
    archive = zipfile.ZipFile(io.BytesIO(model_files.weights_archive([store])))
    assert sorted(archive.namelist()) == ["segmentation.json", "segmentation.pt"]
    assert archive.read("segmentation.pt") == tiny_weights.read_bytes()
    assert json.loads(archive.read("segmentation.json")) == json.loads(sidecar_path(tiny_weights).read_bytes())
    info = model_files.weights_info([store])[0]
    assert info["source"] == "shipped" and info["sha256"] == json.loads(archive.read("segmentation.json"))["sha256"]
    assert "/" not in json.dumps(info).replace("application/", "")  # names only, no server paths


def test_archive_sidecars_carry_folder_names_not_server_paths(store, tmp_path):
    """A published sidecar's provenance (studies folder, command line) leaves without the datastore's path."""
    published = _other_weights(tmp_path, seed=3)
    meta = json.loads(sidecar_path(published).read_text())
    meta["training"] = {
        "command": "brain-tumor train segmentation /srv/site-a/dr-who/studies --out=/srv/x/out",
        "options": {"studies": "/srv/site-a/dr-who/studies", "epochs": 3},
    }
    sidecar_path(published).write_text(json.dumps(meta))
    model_files.replace_weights([store], _zip({"segmentation.pt": published.read_bytes(),
                                                "segmentation.json": json.dumps(meta).encode()}))  # fmt: skip
    archive = zipfile.ZipFile(io.BytesIO(model_files.weights_archive([store])))
    sent = json.loads(archive.read("segmentation.json"))
    assert "/srv" not in json.dumps(sent) and "dr-who" not in json.dumps(sent)
    assert sent["training"] == {"command": "brain-tumor train segmentation studies --out=out",
                                "options": {"studies": "studies", "epochs": 3}}  # fmt: skip
    assert sent["sha256"] == meta["sha256"] and sent["version"] == meta["version"]
    # the archive still replaces: a site can send back what it downloaded
    again = model_files.replace_weights([store], io.BytesIO(model_files.weights_archive([store]) or b""))
    assert again["published"][0]["sha256"] == meta["sha256"]


def test_replace_publishes_atomically_and_keeps_the_previous(store, tmp_path):
    other = _other_weights(tmp_path)
    upload = _zip({"segmentation.pt": other.read_bytes(), "segmentation.json": sidecar_path(other).read_bytes()})
    first = model_files.replace_weights([store], upload)
    assert store.source() == store.published and first["previous"] == []  # the shipped pair stays where it is
    assert store.get().version == json.loads(sidecar_path(other).read_text())["version"]
    newer = _other_weights(tmp_path, seed=2)
    upload = _zip({"segmentation.pt": newer.read_bytes(), "segmentation.json": sidecar_path(newer).read_bytes()})
    second = model_files.replace_weights([store], upload)
    kept = store.published.parent / second["previous"][0]["kept_as"]
    assert (kept / "segmentation.pt").read_bytes() == other.read_bytes()
    assert store.published.read_bytes() == newer.read_bytes()
    leftovers = [p.name for p in store.published.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers


def _meta_with(path: Path, **changes) -> bytes:
    meta = json.loads(sidecar_path(path).read_text())
    meta.update(changes)
    return json.dumps(meta).encode()


@pytest.mark.parametrize(
    "case, words",
    [
        ("not a zip", ["not a ZIP archive"]),
        ("extra member", ["unexpected file(s) ['evil.sh']"]),
        ("weights alone", ["segmentation.pt and segmentation.json must come together"]),
        ("empty zip", ["no weights in the archive"]),
        ("wrong sequences", ["sidecar sequences=['t1n']", "does not match"]),
        ("sha mismatch", ["does not match the sha256"]),
        ("pickle", ["weights_only=True refused it"]),
        ("wrong shapes", ["does not load as a segmentation model"]),
    ],
)
def test_unfit_archives_are_refused_and_nothing_is_published(store, tmp_path, case, words):
    import hashlib
    import pickle

    other = _other_weights(tmp_path)
    pt, meta = other.read_bytes(), sidecar_path(other).read_bytes()
    evil = pickle.dumps({"x": 1}) + b"\x00"  # a pickle weights_only must refuse
    evil_meta = _meta_with(other, sha256=hashlib.sha256(evil).hexdigest())
    wider = _meta_with(other, network={**TINY_NETWORK, "channels": [8, 16, 32, 64, 128]})
    files = {
        "not a zip": None,
        "extra member": {"segmentation.pt": pt, "segmentation.json": meta, "evil.sh": b"rm -rf /"},
        "weights alone": {"segmentation.pt": pt},
        "empty zip": {},
        "wrong sequences": {"segmentation.pt": pt, "segmentation.json": _meta_with(other, sequences=["t1n"])},
        "sha mismatch": {"segmentation.pt": pt[:-8] + b"\x00" * 8, "segmentation.json": meta},
        "pickle": {"segmentation.pt": evil, "segmentation.json": evil_meta},
        "wrong shapes": {"segmentation.pt": pt, "segmentation.json": wider},
    }[case]  # fmt: skip
    upload = io.BytesIO(b"plain text, no zip") if files is None else _zip(files)
    with pytest.raises(InputError) as err:
        model_files.replace_weights([store], upload)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert not store.published.exists() and store.source() == store.shipped
    folder = store.published.parent
    assert not folder.exists() or not any(p.name.startswith(".upload-") for p in folder.iterdir())

"""Partial label files are cleaned by the serving process only, never by a task subprocess."""

from __future__ import annotations

from pathlib import Path

from brain_tumor_mri.config import AppConfig
from brain_tumor_mri.server.wiring import build_datastore, clean_interrupted_saves


def test_a_save_in_flight_survives_a_subprocess_building_the_datastore(tmp_path: Path) -> None:
    studies = tmp_path / "studies"
    (studies / "labels" / "final").mkdir(parents=True)
    in_flight = studies / "labels" / "final" / ".c1.abcd1234.partial.nii.gz"
    in_flight.write_bytes(b"being written by the server")
    cfg = AppConfig.from_conf({}, None, studies)
    build_datastore(cfg)  # what MONAI Label's training / scoring subprocess does at start
    assert in_flight.is_file(), "a subprocess must not delete the server's save in flight"
    assert clean_interrupted_saves(cfg) == 1  # the server at start (server_mode)
    assert not in_flight.exists()

"""The MONAI Label compatibility check: passes on the pinned release, names what is missing otherwise."""

from __future__ import annotations

import pytest

from brain_tumor_mri.server import compat


def test_installed_monailabel_has_everything_the_app_uses():
    checked = compat.check_monailabel()
    assert any("LocalDatastore" in c for c in checked)
    assert any("run_inference" in c for c in checked)
    assert compat.installed_version() == compat.TESTED_MONAILABEL


def test_a_missing_internal_fails_naming_it_and_the_tested_version(monkeypatch):
    reqs = list(compat._REQUIREMENTS)
    monkeypatch.setattr(compat, "_REQUIREMENTS", reqs)
    compat.requires(
        "LocalDatastore._gone", "a test", compat.has_attrs("monailabel.datastore.local", "LocalDatastore", "_gone")
    )
    with pytest.raises(compat.IncompatibleMonaiLabel, match=r"LocalDatastore\._gone \(used by a test\).*0\.8\.5"):
        compat.check_monailabel()


def test_a_changed_signature_fails():
    check = compat.has_params("monailabel.endpoints.infer", "run_inference", "no_such_parameter")
    assert check() is False
    assert compat.has_params("monailabel.endpoints.infer", "run_inference", "params", "file")() is True

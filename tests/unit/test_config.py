"""AppConfig parses --conf once and names what is wrong."""

from __future__ import annotations

import pytest

from brain_tumor_mri.config import MODELS, AppConfig, conf_table_markdown


def test_defaults_and_paths(tmp_path):
    cfg = AppConfig.from_conf({}, tmp_path / "apps" / "brain_tumor", tmp_path / "studies", tmp_path / "w")
    assert cfg.models == MODELS
    assert cfg.studies == (tmp_path / "studies").resolve()
    assert cfg.weights_dir == (tmp_path / "w").resolve()


def test_values_are_typed(tmp_path):
    cfg = AppConfig.from_conf(
        {"models": "segmentation", "seg_spacing": "1.5", "allow_missing_sequences": "true", "server_mode": "x"},
        tmp_path,
        tmp_path,
    )
    assert cfg.models == ("segmentation",)
    assert cfg.seg_spacing == 1.5
    assert cfg.allow_missing_sequences is True
    assert cfg.passthrough == {"server_mode": "x"}


@pytest.mark.parametrize(
    "conf, match",
    [
        ({"modles": "all"}, r"unknown --conf key\(s\) \['modles'\]"),
        ({"models": "segmentation,detector"}, r"unknown model\(s\) \['detector'\]"),
        ({"seg_spacing": "fast"}, r"seg_spacing 'fast': expected a float"),
        ({"seg_spacing": "9"}, r"expected a value in \[0.5, 4.0\]"),
        ({"device": "tpu"}, r"expected one of auto, cpu, cuda"),
        ({"train_amp": "maybe"}, r"expected true or false"),
    ],
)
def test_bad_conf_is_rejected_with_the_key(tmp_path, conf, match):
    with pytest.raises(ValueError, match=match):
        AppConfig.from_conf(conf, tmp_path, tmp_path)


def test_readme_table_lists_every_key():
    table = conf_table_markdown()
    for key in AppConfig.keys():
        assert f"`{key}`" in table


def test_readme_table_is_current(repo_root):
    readme = (repo_root / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- conf-table:start -->\n")[1].split("\n<!-- conf-table:end -->")[0]
    assert block == conf_table_markdown(), "README --conf table is stale: regenerate it from config.py"

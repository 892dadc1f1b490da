"""A short soak on a real server (auth on): mixed load with a training run; flat resources, no label lost.

The same code as ``brain-tumor-dev soak`` (README, "Security"), at suite size: 10 s of warm-up,
30 s of load that goes on until a one-epoch classification training run has ended.
"""

from __future__ import annotations

import pytest

from brain_tumor_dev.soak import check, run_soak, to_markdown

pytestmark = pytest.mark.server


def test_mixed_load_keeps_resources_flat_and_every_label(imported_studies, tmp_path):
    report = run_soak(imported_studies, tmp_path / "soak", seconds=30, auth=True, epochs=1,
                      train_model="classification", warmup=10)  # fmt: skip
    summary = to_markdown(report)
    assert check(report) == [], summary
    answers = report["answers"]
    assert answers.get("train_done 200") == 1, summary
    for kind in ("infer 200", "save_label 200", "next_sample 200", "bad_infer_upload 422", "path_in_id 422"):
        assert answers.get(kind, 0) >= 3, (kind, summary)
    labels = report["labels"]
    assert labels["accepted_saves"] == answers["save_label 200"] and labels["versions"] >= labels["accepted_saves"]
    assert report["end"]["temp_files"] == report["baseline"]["temp_files"]

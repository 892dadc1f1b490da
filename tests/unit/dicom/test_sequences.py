"""Recognising T1, T1c, T2 and FLAIR series: names, contrast tags, parameters, the site mapping."""

from __future__ import annotations

import pytest

from brain_tumor_mri.dicom.sequences import (
    SeriesInfo,
    assign_sequences,
    guess_sequence,
    parse_sequence_map,
)
from brain_tumor_mri.imageio import InputError


def info(description: str = "", **kw) -> SeriesInfo:
    return SeriesInfo(uid=kw.pop("uid", "1.2.3"), description=description, modality=kw.pop("modality", "MR"), **kw)


@pytest.mark.parametrize(
    "description, protocol, key",
    [
        ("AX T1 SE", "t1_se_tra", "t1n"),
        ("Sag T1 MPRAGE", "t1_mprage_sag_p2_iso", "t1n"),
        ("AX T1 FLAIR", "", "t1n"),  # a T1-weighted inversion recovery, not a FLAIR
        ("AX T1 PRE", "", "t1n"),
        ("AX T1 POST GD", "", "t1c"),
        ("Ax T1 +C", "", "t1c"),
        ("T1W_SE+C", "", "t1c"),
        ("t1_mprage_tra_p2_iso_post", "", "t1c"),
        ("3D T1 BRAVO WITH CONTRAST", "", "t1c"),
        ("T1CE", "", "t1c"),
        ("AX T2 FLAIR", "t2_tirm_tra_dark-fluid", "t2f"),
        ("Sag T2 FLAIR CUBE", "", "t2f"),
        ("", "t2_tirm_tra_dark-fluid", "t2f"),
        ("AX T2 FSE", "", "t2w"),
        ("T2W_TSE", "", "t2w"),
        ("AX DWI 1000", "", None),
        ("ADC", "", None),
        ("3-Plane Loc", "", None),
        ("AX SWI", "", None),
        ("AX T2* GRE", "", None),
        ("Perfusion DSC", "", None),
    ],
)
def test_names(description, protocol, key):
    assert guess_sequence(info(description, protocol=protocol)).key == key


def test_contrast_agent_tag_splits_t1_when_the_name_does_not():
    assert guess_sequence(info("AX T1 SE", contrast_agent="Gadobutrol")).key == "t1c"
    assert guess_sequence(info("AX T1 SE", contrast_agent="NONE")).key == "t1n"
    assert guess_sequence(info("AX T1 PRE", contrast_agent="Gadobutrol")).key == "t1n", "'pre' in the name wins"


@pytest.mark.parametrize(
    "tr, te, ti, agent, key",
    [
        (9000, 85, 2500, "", "t2f"),
        (4500, 100, None, "", "t2w"),
        (500, 10, None, "", "t1n"),
        (2300, 3, 900, "Gd", "t1c"),  # MPRAGE timing with contrast
        (3000, 40, None, "", None),  # proton density: none of the four
    ],
)
def test_parameters_when_the_name_says_nothing(tr, te, ti, agent, key):
    guess = guess_sequence(info("Series 7", tr_ms=tr, te_ms=te, ti_ms=ti, contrast_agent=agent))
    assert guess.key == key, guess.reason


def test_non_mr_and_derived_series_are_never_candidates():
    assert "modality CT" in guess_sequence(info("AX T2 FLAIR", modality="CT")).reason
    assert guess_sequence(info("AX T2 FLAIR", modality="CT")).key is None
    assert guess_sequence(info("AX T2 FLAIR", image_type=("DERIVED", "SECONDARY", "MPR"))).key is None


def test_site_mapping_wins_over_the_rules():
    overrides = parse_sequence_map("^COR=ignore,Series 7=t2w")
    assert guess_sequence(info("COR T1 POST"), overrides).key is None
    assert guess_sequence(info("Series 7", tr_ms=500, te_ms=10), overrides).key == "t2w"
    assert guess_sequence(info("AX T1 POST"), overrides).key == "t1c"
    assert guess_sequence(info("x", protocol="Series 7"), overrides).key == "t2w", "protocol names match too"


def test_mapping_formats_and_errors():
    assert parse_sequence_map("") == ()
    assert parse_sequence_map('{"FLAIR 3D": "t2f", "^COR": "ignore"}') == (("FLAIR 3D", "t2f"), ("^COR", "ignore"))
    assert parse_sequence_map("a=b=t1c") == (("a=b", "t1c"),), "the key is after the last '='"
    with pytest.raises(ValueError, match="'t3' for 'x' is not one of"):
        parse_sequence_map("x=t3")
    with pytest.raises(ValueError, match="not REGEX=KEY"):
        parse_sequence_map("flair")
    with pytest.raises(ValueError, match="bad regular expression"):
        parse_sequence_map("(=t2f")


def _protocol(**replace):
    series = {
        "t1n": info("AX T1 SE", uid="1.1", number=1),
        "t1c": info("AX T1 POST", uid="1.2", number=2),
        "t2w": info("AX T2 TSE", uid="1.3", number=3),
        "t2f": info("AX FLAIR", uid="1.4", number=4),
    }
    series.update(replace)
    return [s for s in series.values() if s is not None]


def test_a_full_study_is_assigned():
    chosen = assign_sequences("9.9", _protocol(loc=info("Localizer", uid="1.9")))
    assert {k: s.uid for k, s in chosen.series.items()} == {"t1n": "1.1", "t1c": "1.2", "t2w": "1.3", "t2f": "1.4"}
    assert len(chosen.describe()["decisions"]) == 5


def test_missing_sequence_names_the_study_and_what_was_seen():
    with pytest.raises(InputError) as err:
        assign_sequences("9.9", _protocol(t2w=None, ct=info("AX T2", uid="2.1", modality="CT")))
    msg = str(err.value)
    assert msg.startswith("study 9.9: no series recognised as T2 (t2w)")
    assert "'AX T2' (2.1): not used (modality CT, not MR)" in msg


def test_two_candidates_name_both_series_and_the_mapping_resolves_them():
    series = _protocol(extra=info("AX FLAIR REPEAT", uid="1.5", number=5))
    with pytest.raises(InputError) as err:
        assign_sequences("9.9", series)
    assert "2 candidate series for FLAIR (t2f)" in str(err.value)
    assert "(1.4)" in str(err.value) and "(1.5)" in str(err.value)
    chosen = assign_sequences("9.9", series, parse_sequence_map("REPEAT=ignore"))
    assert chosen.series["t2f"].uid == "1.4"


def test_series_info_reads_a_dataset():
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = "1.2", "7", "AX T1"
    ds.Modality, ds.ImageType, ds.RepetitionTime, ds.ContrastBolusAgent = "MR", ["ORIGINAL", "PRIMARY"], "500", "Gd"
    got = SeriesInfo.from_dataset(ds, instances=30)
    assert (got.uid, got.number, got.modality, got.tr_ms) == ("1.2", 7, "MR", 500.0)
    assert got.image_type == ("ORIGINAL", "PRIMARY")
    assert got.has_contrast_agent and got.instances == 30 and got.te_ms is None

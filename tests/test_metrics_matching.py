"""Generated images are matched to ground truth by the naming conventions of released results."""

import pytest

from atelier.errors import UserError
from atelier.metrics.matching import candidate_names, match_files, read_pairs

SOURCE = "fashionWOMENBlouses_Shirtsid0000069302_1front"
TARGET = "fashionWOMENBlouses_Shirtsid0000069302_3back"
OTHER = "fashionMENTees_Tanksid0000256301_2side"


def _touch(folder, names):
    folder.mkdir(exist_ok=True)
    paths = []
    for name in names:
        (folder / name).write_bytes(b"")
        paths.append(folder / name)
    return paths


@pytest.mark.parametrize("name", [
    f"{TARGET}.png",                       # same stem
    f"{SOURCE}_2_{TARGET}.png",            # MCLD / CFLD release
    f"{SOURCE}_2_{TARGET}_vis.png",        # PIDM
    f"{SOURCE}.jpg___{TARGET}.jpg_vis.png",  # GFLA / DPTN
    f"{SOURCE}_to_{TARGET}.png",           # ad-hoc
])
def test_conventions_find_the_target(tmp_path, name):
    truth = _touch(tmp_path / "gt", [f"{TARGET}.jpg", f"{OTHER}.jpg"])
    generated = _touch(tmp_path / "gen", [name])
    result = match_files(generated, truth)
    assert [m.ground_truth.name for m in result.matches] == [f"{TARGET}.jpg"]
    if name != f"{TARGET}.png":
        assert result.matches[0].source == SOURCE


def test_ground_truth_named_like_the_outputs(tmp_path):
    name = f"{SOURCE}_2_{TARGET}.png"  # MCLD saves gt/256/<from>_2_<to>.png beside its outputs
    result = match_files(_touch(tmp_path / "gen", [name]), _touch(tmp_path / "gt", [name]))
    assert result.matches[0].ground_truth.name == name and result.matches[0].source is None


def test_pairs_filter_and_report_missing_outputs(tmp_path):
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"from,to\n{SOURCE}.jpg,{TARGET}.jpg\n{TARGET}.jpg,{OTHER}.jpg\n")
    assert read_pairs(csv) == [(SOURCE, TARGET), (TARGET, OTHER)]
    truth = _touch(tmp_path / "gt", [f"{TARGET}.jpg", f"{OTHER}.jpg"])
    result = match_files(_touch(tmp_path / "gen", [f"{SOURCE}_2_{TARGET}_vis.png"]), truth, read_pairs(csv))
    assert len(result.matches) == 1 and result.pairs_without_output == [(TARGET, OTHER)]
    with pytest.raises(UserError, match="1 of 1 generated images"):
        match_files(_touch(tmp_path / "gen2", [f"{OTHER}_2_{TARGET}.png"]), truth, read_pairs(csv))
    (tmp_path / "bad.csv").write_text("source,target\na,b\n")
    with pytest.raises(UserError, match="bad.csv, line 1: expected the header 'from,to'"):
        read_pairs(tmp_path / "bad.csv")


def test_unmatched_files_are_listed_in_one_error(tmp_path):
    truth = _touch(tmp_path / "gt", [f"{TARGET}.jpg"])
    generated = _touch(tmp_path / "gen", [f"stray{i:02d}.png" for i in range(13)] + [f"{TARGET}.png"])
    with pytest.raises(UserError) as error:
        match_files(generated, truth)
    message = str(error.value)
    assert "13 of 14 generated images" in message and "stray00.png" in message and "stray09.png" in message
    assert "stray10.png" not in message and "(and 3 more)" in message and "--pairs" in message
    assert "\n" not in message


def test_candidate_names_try_every_split():
    readings = candidate_names("a_2_b_2_c_vis")
    assert (None, "a_2_b_2_c_vis") in readings and ("a", "b_2_c") in readings and ("a_2_b", "c") in readings

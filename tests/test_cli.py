import subprocess
import sys

import pytest

from atelier.cli import build_parser, main


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return list(action.choices)


def test_every_subcommand_has_help(capsys):
    names = _subcommands()
    assert {"synth", "train", "demo", "evaluate"} <= set(names)
    for name in names:
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0
        assert "usage: atelier " + name in capsys.readouterr().out


def test_version_and_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "atelier", "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("atelier ")


def test_user_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("task: text2img\ntrain:\n  learning_rate: 1\n")
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "config.train.learning_rate" in err and "Traceback" not in err
    assert main(["train", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml not found" in capsys.readouterr().err
    config.write_text("task: paint\n")
    assert main(["train", str(config)]) == 2
    assert "expected one of" in capsys.readouterr().err


def test_override_of_unknown_key_fails(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("task: text2img\n")
    assert main(["train", str(config), "data.nonsense=3"]) == 2
    assert "config.data.nonsense" in capsys.readouterr().err


def test_synth_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    assert main(["synth", "--out", str(tmp_path), "--identities", "2"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "new"), "--size", "big"]) == 2
    assert "--size" in capsys.readouterr().err

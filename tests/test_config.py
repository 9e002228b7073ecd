from dataclasses import dataclass, field
from typing import Literal

import pytest

from atelier.config import TrainConfig, apply_overrides, from_dict, read_yaml, save_yaml, to_dict
from atelier.errors import UserError


@dataclass
class Inner:
    lr: float = 1e-4
    mode: Literal["a", "b"] = "a"
    size: tuple[int, int] = (64, 48)


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    steps: int | None = None


def test_from_dict_builds_nested_typed_dataclasses():
    cfg = from_dict(Outer, {"name": "run", "inner": {"lr": 1, "mode": "b", "size": [32, 24]}, "steps": 5})
    assert cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float)
    assert cfg.inner.size == (32, 24) and cfg.steps == 5


def test_unknown_key_names_the_key_and_the_valid_ones():
    with pytest.raises(UserError) as error:
        from_dict(Outer, {"inner": {"learning_rate": 1.0}})
    message = str(error.value)
    assert "config.inner.learning_rate" in message and "lr" in message and "mode" in message


@pytest.mark.parametrize("data, fragment", [
    ({"inner": {"mode": "c"}}, "config.inner.mode"),
    ({"steps": "many"}, "config.steps"),
    ({"inner": {"size": [1, 2, 3]}}, "config.inner.size"),
])
def test_wrong_types_name_the_field(data, fragment):
    with pytest.raises(UserError, match=fragment.replace(".", r"\.")):
        from_dict(Outer, data)


def test_dotted_overrides_parse_yaml_values_and_scientific_floats():
    data = apply_overrides({"inner": {"lr": 0.1}}, ["inner.lr=1e-4", "inner.mode=b", "steps=10", "name=hello world"])
    cfg = from_dict(Outer, data)
    assert cfg.inner.lr == pytest.approx(1e-4) and cfg.inner.mode == "b" and cfg.steps == 10 and cfg.name == "hello world"
    with pytest.raises(UserError, match="KEY=VALUE"):
        apply_overrides({}, ["inner.lr"])


def test_yaml_round_trip(tmp_path):
    cfg = from_dict(Outer, {"inner": {"size": [8, 8]}})
    save_yaml(cfg, tmp_path / "c.yaml")
    again = from_dict(Outer, read_yaml(tmp_path / "c.yaml"))
    assert again == cfg and to_dict(again)["inner"]["size"] == [8, 8]
    assert from_dict(TrainConfig, to_dict(TrainConfig())) == TrainConfig()


def test_bad_yaml_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_yaml(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="bad.yaml is not valid YAML"):
        read_yaml(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        read_yaml(tmp_path / "list.yaml")

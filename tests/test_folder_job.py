"""The folder job shared by translate, illustrate and pose-transfer (atelier.commands._folder_job), without a model:
output mapping, seeds, kept outputs, refused collisions, grid and settings; and the commands' shared options."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from atelier.cli import build_parser
from atelier.commands import translate as translate_command
from atelier.commands._folder_job import image_pairs, plan, require_positive
from atelier.errors import UserError
from atelier.utils.outputs import write_marker
from tests.helpers import run_command, write_random_photos

SRC = Path(__file__).resolve().parents[1] / "src"


def test_image_pairs_map_files_and_folders_into_out(tmp_path: Path) -> None:
    write_random_photos(tmp_path / "photos" / "sub", 1, (8, 8), ".jpg")
    write_random_photos(tmp_path / "photos", 2, (8, 8))
    single = write_random_photos(tmp_path / "one", 1, (8, 8), ".webp")[0]
    pairs = image_pairs([str(tmp_path / "photos"), str(single)], tmp_path / "out")
    assert [target.relative_to(tmp_path / "out").as_posix() for _, target in pairs] == [
        "photos/p0.png", "photos/p1.png", "photos/sub/p0.png", "p0.png"]
    with pytest.raises(UserError, match="INPUT .*missing.png not found"):
        image_pairs([str(tmp_path / "missing.png")], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images found"):
        image_pairs([str(tmp_path / "empty")], tmp_path / "out")


def test_seeds_count_over_every_input_before_existing_outputs_are_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    pairs = [(tmp_path / f"p{i}.png", out / f"p{i}.png") for i in range(4)]
    write_marker(out, "output")  # an earlier run's output folder
    (out / "p1.png").write_bytes(b"an earlier run's")
    job = plan(pairs, out, seed=10, overwrite=False)
    assert [(task.target.name, task.seed, task.index) for task in job.todo] == [("p0.png", 10, 0), ("p2.png", 12, 2),
                                                                               ("p3.png", 13, 3)]
    assert job.kept == 1 and [len(batch) for batch in job.batches(2, desc="test")] == [2, 1]
    assert len(plan(pairs, out, seed=10, overwrite=True).todo) == 4


def test_two_inputs_for_one_output_are_refused_naming_both(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for name in ("a.png", "a.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    with pytest.raises(UserError, match=r"inputs .*a\.png and .*a\.jpg would both be written to .*a\.png"):
        plan(image_pairs([str(tmp_path / "a.png"), str(tmp_path / "a.jpg")], out), out, 0, False)
    for parent in ("x", "y"):  # two folders named photos/ holding the same file name
        write_random_photos(tmp_path / parent / "photos", 1, (8, 8))
    with pytest.raises(UserError, match=r"x/photos/p0\.png and .*y/photos/p0\.png"):
        plan(image_pairs([str(tmp_path / "x" / "photos"), str(tmp_path / "y" / "photos")], out), out, 0, False)
    same = [str(tmp_path / "a.png"), os.path.relpath(tmp_path / "a.png")]  # one file named twice: not a collision
    assert len(plan(image_pairs(same, out), out, 0, False).todo) == 2


def test_the_translate_command_refuses_colliding_inputs_before_loading_a_model(tmp_path: Path) -> None:
    for name in ("a.png", "a.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    with pytest.raises(UserError, match="both be written to"):
        run_command(translate_command, [str(tmp_path / "a.png"), str(tmp_path / "a.jpg"), "--model", "missing-model",
                                        "--out", str(tmp_path / "out")])


def test_convert_images_writes_outputs_grid_and_settings_and_skips_unreadable_inputs(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    write_random_photos(photos, 3, (8, 8))
    (photos / "broken.png").write_bytes(b"not an image")
    out, seen = tmp_path / "out", []

    def convert(images, seeds):
        seen.append(seeds)
        return [Image.new("RGB", (images.shape[-1], images.shape[-2]), "red") for _ in seeds]

    job = plan(image_pairs([str(photos)], out), out, seed=5, overwrite=False)
    job.convert_images((16, 12), 3, convert)
    assert seen == [[6, 7], [8]]  # broken.png (input 0, seed 5) is skipped, the others keep their numbers
    args = argparse.Namespace(command="translate", out=out, func=print)
    job.finish(args, {"speed": {}})
    settings = json.loads((out / "settings.json").read_text())
    assert settings["written"] == ["photos/p0.png", "photos/p1.png", "photos/p2.png"] and settings["kept"] == 0
    assert [Path(entry["file"]).name for entry in settings["skipped"]] == ["broken.png"]
    assert {"options", "speed", "seconds", "versions"} <= settings.keys() and settings["options"]["out"] == str(out)
    assert Image.open(out / "photos" / "p0.png").size == (12, 16) and (out / "grid.png").is_file()


def test_require_positive_names_the_flag() -> None:
    require_positive({"--steps": 1, "--limit": None})
    with pytest.raises(UserError, match="--batch-size 0: expected a positive integer"):
        require_positive({"--steps": 4, "--batch-size": 0})


def test_scheduler_choices_are_the_sampling_modules() -> None:
    from atelier.diffusion.sampling import SCHEDULERS

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    found = {name: tuple(action.choices) for name, command in commands.items() for action in command._actions
             if "--scheduler" in action.option_strings}
    assert found.keys() >= {"generate", "translate", "illustrate", "pose-transfer"}
    assert set(found.values()) == {SCHEDULERS}


def test_building_the_parser_does_not_import_torch() -> None:
    code = "import sys; from atelier.cli import build_parser; build_parser(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(SRC)})


def test_default_prompt_reads_a_style_lora_runs_config(tmp_path: Path) -> None:
    from atelier.config import save_yaml
    from atelier.methods.style.train import StyleLoraConfig
    from atelier.training.tasks.text2img import CaptionedDataConfig

    save_yaml(StyleLoraConfig(data=CaptionedDataConfig(caption_prefix="A Monet painting, ")), tmp_path / "config.yaml")
    assert translate_command.default_prompt(str(tmp_path)) == "A Monet painting, "
    assert translate_command.default_prompt(str(tmp_path / "no-run")) == ""
    (tmp_path / "config.yaml").write_text("task: text2img\n")
    assert translate_command.default_prompt(str(tmp_path)) == ""
    (tmp_path / "config.yaml").write_text("task: style-lora\ndata:\n  caption_prefx: x\n")
    with pytest.raises(UserError, match="--lora .*caption_prefx.*pass --prompt"):
        translate_command.default_prompt(str(tmp_path))

"""Atomic writes keep the umask's permissions (as a plain open() would), leave nothing behind on failure, and the
hidden temp file an interrupted write leaves is never taken for an output."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.metrics.images import list_images
from atelier.utils.io import _create_temp_beside, atomic_path, save_image, save_safetensors, write_json, write_text


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after)."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [pytest.param(0o022, 0o644, id="umask-022"),
                                            pytest.param(0o077, 0o600, id="umask-077"),
                                            pytest.param(0o002, 0o664, id="umask-002")])
def test_atomic_files_get_the_mode_open_would_give(mask, expected, umask, tmp_path):
    umask(mask)
    with open(tmp_path / "plain.txt", "w") as handle:
        handle.write("x")
    assert _mode(tmp_path / "plain.txt") == expected
    write_text(tmp_path / "a.txt", "hello")
    write_json(tmp_path / "deep" / "r.json", {"a": 1})
    save_image(Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)), tmp_path / "i.png")
    save_safetensors({"w": torch.zeros(2)}, tmp_path / "w.safetensors")
    for name in ("a.txt", "deep/r.json", "i.png", "w.safetensors"):
        assert _mode(tmp_path / name) == expected, name
    assert (tmp_path / "a.txt").read_text() == "hello"


def test_a_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old"


def test_temp_files_are_hidden_and_not_listed_as_images(tmp_path):
    """What a kill -9 mid-write leaves behind (`.NAME.RANDOM.tmp.png`) is not a generated image for evaluate."""
    save_image(Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)), tmp_path / "a.png")
    left = _create_temp_beside(tmp_path / "b.png")
    left.write_bytes((tmp_path / "a.png").read_bytes())  # even a whole image, if its rename never happened
    assert left.name.startswith(".b.png.") and ".tmp" in left.name and left.suffix == ".png"
    assert list_images(tmp_path, "--generated") == [tmp_path / "a.png"]
    assert _create_temp_beside(tmp_path / "b.png") != left  # a fresh name each time, never a collision

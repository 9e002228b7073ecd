"""Sketch extraction: XDoG lines, PiDiNet's pixel-difference convolutions, its published layout and loader (CPU)."""

from __future__ import annotations

import pytest
import torch

from atelier.errors import UserError
from atelier.methods.unidllora.sketch import (
    PiDiNet,
    SketchSettings,
    load_pidinet,
    make_sketcher,
    pidinet_sketcher,
    pixel_difference_kernel,
    xdog_sketch,
)

# (key, shape) of the published table5_pidinet.pth (PiDiNet --config carv4 --sa --dil), without its "module." prefix
PUBLISHED = {
    "init_block.weight": (60, 3, 3, 3),
    "block1_1.conv1.weight": (60, 1, 3, 3),
    "block1_1.conv2.weight": (60, 60, 1, 1),
    "block2_1.shortcut.weight": (120, 60, 1, 1),
    "block2_1.shortcut.bias": (120,),
    "block2_1.conv1.weight": (60, 1, 3, 3),
    "block3_4.conv2.weight": (240, 240, 1, 1),
    "block4_1.shortcut.weight": (240, 240, 1, 1),
    "conv_reduces.3.conv.weight": (1, 24, 1, 1),
    "attentions.0.conv1.weight": (4, 24, 1, 1),
    "attentions.0.conv2.weight": (1, 4, 3, 3),
    "dilations.2.conv1.weight": (24, 240, 1, 1),
    "dilations.0.conv2_4.weight": (24, 24, 3, 3),
    "classifier.weight": (1, 4, 1, 1),
    "classifier.bias": (1,),
}
PUBLISHED_COUNT = 83  # tensors in the published file


def square_image(size: int = 32) -> torch.Tensor:
    """(1, 3, size, size) in [-1, 1]: a dark square on a white page."""
    image = torch.ones(1, 3, size, size)
    image[..., 10:22, 10:22] = -1.0
    return image


def test_xdog_draws_lines_on_edges_only_and_is_deterministic() -> None:
    sketch = xdog_sketch(square_image())
    assert sketch.shape == (1, 1, 32, 32) and 0 <= float(sketch.min()) and float(sketch.max()) <= 1
    assert torch.equal(sketch, xdog_sketch(square_image()))
    assert float(sketch[0, 0, 10:22, 10].mean()) > 0.5  # the square's left edge (dark side) is inked
    assert float(sketch[0, 0, 14:18, 14:18].max()) == 0.0  # its flat inside is paper
    assert float(sketch[0, 0, :4, :4].max()) == 0.0  # so is the flat page
    assert float(xdog_sketch(torch.zeros(2, 3, 16, 16)).max()) == 0.0


@pytest.mark.parametrize("kind", ["cd", "ad", "rd"])
def test_pixel_difference_convolutions_ignore_flat_regions(kind: str) -> None:
    weight = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    kernel, padding = pixel_difference_kernel(kind, weight)
    flat = torch.full((1, 1, 12, 12), 0.7)
    response = torch.nn.functional.conv2d(flat, kernel, padding=padding)
    assert response[..., 2:-2, 2:-2].abs().max() < 1e-6  # differences of equal pixels vanish
    ramp = torch.arange(12.0).view(1, 1, 1, 12).expand(1, 1, 12, 12)
    assert torch.nn.functional.conv2d(ramp, kernel, padding=padding)[..., 2:-2, 2:-2].abs().max() > 1e-3


def test_pidinet_has_the_published_table5_layout() -> None:
    state = PiDiNet().state_dict()
    assert len(state) == PUBLISHED_COUNT
    for key, shape in PUBLISHED.items():
        assert tuple(state[key].shape) == shape, key


def test_pidinet_loads_the_published_file_format_and_sketches(tmp_path) -> None:
    torch.manual_seed(0)
    reference = PiDiNet().eval()
    torch.save({"epoch": 19, "state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}},
               tmp_path / "table5_pidinet.pth")
    loaded = load_pidinet(tmp_path)  # a folder holding the file, like the released pidnet/
    images = torch.rand(2, 3, 32, 24) * 2 - 1
    with torch.no_grad():
        expected = reference(((images + 1) / 2).flip(1))  # BGR in [0, 1], as controlnet_aux feeds it
    torch.testing.assert_close(pidinet_sketcher(loaded)(images), expected)
    settings = SketchSettings(extractor="pidinet", pidinet_weights=str(tmp_path / "table5_pidinet.pth"))
    sketch = make_sketcher(settings)(images)
    assert sketch.shape == (2, 1, 32, 24) and 0 <= float(sketch.min()) and float(sketch.max()) <= 1


def test_pidinet_bad_input_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(UserError, match="table5_pidinet.pth"):
        load_pidinet(tmp_path / "missing")
    torch.save({"state_dict": {"module.init_block.weight": torch.zeros(60, 3, 3, 3)}}, tmp_path / "partial.pth")
    with pytest.raises(UserError, match="do not match"):
        load_pidinet(tmp_path / "partial.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(UserError, match="could not be read"):
        load_pidinet(tmp_path / "text.pth")
    with pytest.raises(UserError, match="pidinet_weights"):
        make_sketcher(SketchSettings(extractor="pidinet"))
    with pytest.raises(UserError, match="sigma"):
        xdog_sketch(square_image(), sigma=0.0)

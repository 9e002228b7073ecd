"""Per-image scores against synthetic ground truth, on hand-made images whose scores are known in closed form."""

import math

import numpy as np
import pytest
from PIL import Image

from atelier.data.synth import PALETTE
from atelier.metrics.per_image import (
    GARMENT_PARTS,
    closeness,
    colour_hits,
    dominant_colour,
    garment_colour_error,
    garment_mask_iou,
    pixel_stack,
    psnr_per_image,
)

BACKGROUND, FACE, TOP = 0, 2, 4  # FashionSynth parse labels used below


def _flat(value, size=(12, 16)):
    """A (W, H) = size image of one RGB colour."""
    return Image.new("RGB", size, tuple(value))


def _paint(parse: np.ndarray, colours: dict[int, tuple[int, int, int]]) -> Image.Image:
    """An RGB image colouring each parse label with its colour."""
    pixels = np.zeros((*parse.shape, 3), dtype=np.uint8)
    for label, colour in colours.items():
        pixels[parse == label] = colour
    return Image.fromarray(pixels)


def _figure_parse(height=16, width=12) -> np.ndarray:
    """Background with a face block on top and a top (garment) block below it."""
    parse = np.zeros((height, width), dtype=np.uint8)
    parse[2:5, 4:8] = FACE
    parse[6:14, 3:9] = TOP
    return parse


def test_pixel_stack_is_uint8_nchw_rgb():
    stack = pixel_stack([_flat((1, 2, 3)), Image.new("L", (12, 16), 7)])
    assert stack.shape == (2, 3, 16, 12) and stack.dtype == np.uint8
    assert stack[0, :, 0, 0].tolist() == [1, 2, 3] and stack[1, :, 5, 5].tolist() == [7, 7, 7]


def test_closeness_of_a_flat_offset_matches_closed_forms():
    images, truths = [_flat((110,) * 3), _flat((100,) * 3)], [_flat((100,) * 3), _flat((100,) * 3)]
    scores = closeness(images, truths)
    assert scores["mae"].tolist() == [10.0, 0.0]
    assert scores["psnr"][0] == pytest.approx(20 * math.log10(255 / 10), abs=1e-6)
    assert math.isinf(scores["psnr"][1]) and scores["ssim"][1] == pytest.approx(1.0)
    assert scores["ssim"][0] < 1.0
    np.testing.assert_array_equal(psnr_per_image(images, truths), scores["psnr"])


def test_garment_colour_error_reads_only_inside_the_mask():
    parse = _figure_parse()
    mask = np.where(parse == TOP, 255, 0).astype(np.uint8)
    truth = _paint(parse, {BACKGROUND: (0, 0, 0), FACE: (200, 150, 120), TOP: (200, 0, 0)})
    wrong_garment = _paint(parse, {BACKGROUND: (0, 0, 0), FACE: (200, 150, 120), TOP: (0, 0, 200)})
    wrong_background = _paint(parse, {BACKGROUND: (255, 255, 255), FACE: (0, 255, 0), TOP: (200, 0, 0)})
    errors = garment_colour_error([wrong_garment, wrong_background], [truth, truth], [mask, mask])
    assert errors[0] == pytest.approx(math.hypot(200, 200)) and errors[1] == 0.0


def test_garment_colour_error_resizes_mask_and_truth_to_the_output():
    parse = _figure_parse()
    big_parse = parse.repeat(2, 0).repeat(2, 1)
    mask = np.where(big_parse == TOP, 255, 0).astype(np.uint8)
    truth = _flat((90, 90, 90), size=(24, 32))  # flat, so resizing it changes no pixel
    output = _paint(parse, {BACKGROUND: (0, 0, 0), TOP: (100, 90, 90)})  # outside the mask: far off, not counted
    assert garment_colour_error([output], [truth], [mask])[0] == pytest.approx(10.0)


def test_garment_mask_iou_of_truth_half_and_none():
    parse = _figure_parse()
    colours = {BACKGROUND: (0, 0, 0), FACE: (200, 150, 120), TOP: (40, 80, 200)}
    truth = _paint(parse, colours)
    half = np.asarray(truth).copy()
    half[10:14, 3:9] = colours[BACKGROUND]  # the lower half of the garment looks like background
    none = _paint(parse, {**colours, TOP: colours[FACE]})  # the garment painted in the face's colour
    scores = garment_mask_iou([truth, Image.fromarray(half), none], [truth] * 3, [parse] * 3)
    assert scores.tolist() == pytest.approx([1.0, 0.5, 0.0])


def test_garment_mask_iou_counts_only_garment_parts():
    parse = _figure_parse()
    truth = _paint(parse, {BACKGROUND: (0, 0, 0), FACE: (200, 150, 120), TOP: (40, 80, 200)})
    assert TOP in GARMENT_PARTS and FACE not in GARMENT_PARTS
    # with the face named a garment part, the face block joins both masks and the IoU stays 1
    assert garment_mask_iou([truth], [truth], [parse], garment_parts=(FACE, TOP))[0] == 1.0
    # with no garment part present anywhere, nothing is predicted or true: 0 / max(1, 0)
    assert garment_mask_iou([truth], [truth], [parse], garment_parts=(6,))[0] == 0.0


def test_dominant_colour_is_the_figures_main_palette_colour():
    pixels = np.full((16, 12, 3), 250, dtype=np.uint8)  # a near-white background all round the border
    pixels[3:13, 3:9] = PALETTE["red"]
    pixels[3:5, 3:9] = PALETTE["blue"]  # a smaller blue part
    assert dominant_colour(Image.fromarray(pixels)) == "red"
    pixels[3:13, 3:9] = (0, 255, 255)  # cyan: far from every palette colour
    assert dominant_colour(Image.fromarray(pixels)) is None
    assert dominant_colour(_flat((250, 250, 250))) is None  # nothing but background
    assert dominant_colour(Image.fromarray(pixels), palette={"cyan": (0, 250, 250)}) == "cyan"


def test_colour_hits_say_per_image_whether_the_caption_names_its_colour():
    def figure(colour):
        pixels = np.full((16, 12, 3), 250, dtype=np.uint8)
        pixels[3:13, 3:9] = PALETTE[colour]
        return Image.fromarray(pixels)

    images = [figure("red"), figure("blue"), figure("green")]
    assert colour_hits(images, [{"red"}, {"red", "black"}, {"green"}]).tolist() == [True, False, True]


def _banded(chest: tuple[int, int, int], thigh: tuple[int, int, int], size_hw=(96, 64)) -> Image.Image:
    """A grey background with a figure column whose chest band and thigh band have the given colours."""
    pixels = np.full((*size_hw, 3), 200, np.uint8)
    height = size_hw[0]
    pixels[int(height * 0.3): int(height * 0.5), 20:44] = chest
    pixels[int(height * 0.6): int(height * 0.8), 20:44] = thigh
    return Image.fromarray(pixels)


def test_garment_type_reads_dress_when_chest_and_thighs_share_a_colour():
    from atelier.data.synth.identity import PALETTE
    from atelier.metrics.per_image import garment_type

    assert garment_type(_banded(PALETTE["red"], PALETTE["red"])) == "dress"
    assert garment_type(_banded(PALETTE["red"], PALETTE["blue"])) == "separates"
    assert garment_type(Image.new("RGB", (64, 96), (200, 200, 200))) is None  # no figure at all


def test_garment_type_is_right_on_most_true_fashionsynth_photos(synth_root):
    import json

    from atelier.metrics.per_image import balanced_hits, garment_type

    rows = [json.loads(line) for line in (synth_root / "labels" / "attributes.jsonl").read_text().splitlines()]
    kinds = ["dress" if any(g["type"] == "dress" for g in row["garments"]) else "separates" for row in rows]
    read = [garment_type(Image.open(synth_root / "style" / "photo" / row["name"]).convert("RGB").resize((64, 96)))
            for row in rows]
    assert balanced_hits(read, kinds).sum() >= 0.75


def test_balanced_hits_give_one_class_answers_half():
    from atelier.metrics.per_image import balanced_hits

    truths = ["dress"] * 2 + ["separates"] * 8
    assert balanced_hits(["separates"] * 10, truths).sum() == pytest.approx(0.5)
    assert balanced_hits(truths, truths).sum() == pytest.approx(1.0)
    assert balanced_hits(["dress", None] + ["separates"] * 8, truths).tolist()[:2] == [0.25, 0.0]

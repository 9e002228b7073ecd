"""The VITON-HD agnostic rule (Choi et al. 2021) on a human-parsing label set, and the other person-side inputs of a
try-on model that can be made from a parse map and 18 keypoints: a DensePose-STYLE image and BODY_25 OpenPose JSON.

The rule (upper-body try-on): mask the upper garments (upper clothes, and the coat, dress or jumpsuit where the label
set has them) and the arms, dilated a few pixels, plus the torso polygon between the shoulders and the hips; never mask
hair, face, hat, lower-body garments, legs or shoes. Three label sets are known:

    lip           20 labels (Gong et al. 2017), what VITON-HD's image-parse-v3 and SCHP's LIP model use
    atr           18 labels (Liang et al. 2015), SCHP's ATR model
    fashionsynth  FashionSynth's 0-7 (atelier.data.synth), where arms and legs share one skin label: a skin pixel
                  belongs to the arm when an arm bone is its nearest bone

Keypoints are the 18 joints in the OpenPose COCO order (atelier.data.pose.KEYPOINT_NAMES) as (y, x) image pixels,
float, NaN for a missing joint. A bone with a missing end is left out; the torso polygon uses the shoulders and hips
present (it is skipped with fewer than 3 of them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from atelier.data.pose import FRAME_HW, NUM_KEYPOINTS, missing_mask
from atelier.errors import UserError

GREY = 128
# bones of the arm test and of the DensePose-style image: (joint a, joint b), in COCO-18 order
ARM_BONES = ((2, 3), (3, 4), (5, 6), (6, 7))
OTHER_BONES = ((1, 0), (1, 8), (1, 11), (8, 9), (9, 10), (11, 12), (12, 13))  # head, torso sides, then the legs
LEG_BONES = OTHER_BONES[3:]
PART_BONES = ((0, 1), (1, 8), (1, 11), *ARM_BONES, (8, 9), (9, 10), (11, 12), (12, 13))  # head, torso x2, arms, legs
PART_INDEX = (1, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10)  # the part of each PART_BONES entry (torso halves share 2)
TORSO = (2, 5, 11, 8)  # the polygon's corners: right shoulder, left shoulder, left hip, right hip
# BODY_25 index -> COCO-18 index (BODY_25 adds 8 mid-hip and 19-24 the feet)
BODY25_FROM_COCO = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 7, 9: 8, 10: 9, 11: 10, 12: 11, 13: 12, 14: 13,
                    15: 14, 16: 15, 17: 16, 18: 17}  # fmt: skip
COCO_FROM_BODY25 = [body25 for coco in range(NUM_KEYPOINTS) for body25, source in BODY25_FROM_COCO.items()
                    if source == coco]  # fmt: skip
OPENPOSE = '{"people": [{"pose_keypoints_2d": [75 (BODY_25) or 54 (COCO-18) numbers: x, y, confidence per joint]}]}'


def voc_palette(count: int) -> tuple[tuple[int, int, int], ...]:
    """The PASCAL VOC colour map's first `count` colours (label bits spread over the high bits of R, G and B), the
    palette human-parsing tools write their label PNGs with."""
    colours = []
    for label in range(count):
        rgb, value = [0, 0, 0], label
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        colours.append((rgb[0], rgb[1], rgb[2]))
    return tuple(colours)


@dataclass(frozen=True)
class LabelSet:
    """A human-parsing label set and its roles in the agnostic rule: `garments` and `arms` are masked (dilated),
    `kept` never; `skin`, when set, is a label arms and legs share (split by the nearest bone)."""

    name: str
    names: tuple[str, ...]
    garments: tuple[int, ...]
    arms: tuple[int, ...]
    kept: tuple[int, ...]
    palette: tuple[tuple[int, int, int], ...]
    skin: int | None = None

    @property
    def count(self) -> int:
        return len(self.names)


LIP_NAMES = ("background", "hat", "hair", "glove", "sunglasses", "upper-clothes", "dress", "coat", "socks", "pants",
             "jumpsuits", "scarf", "skirt", "face", "left-arm", "right-arm", "left-leg", "right-leg", "left-shoe",
             "right-shoe")  # fmt: skip
ATR_NAMES = ("background", "hat", "hair", "sunglasses", "upper-clothes", "skirt", "pants", "dress", "belt", "left-shoe",
             "right-shoe", "face", "left-leg", "right-leg", "left-arm", "right-arm", "bag", "scarf")  # fmt: skip
# LIP's 10 (jumpsuits) is masked like the dress; VITON-HD's parser writes the neck there, which the rule masks too.
LIP = LabelSet("lip", LIP_NAMES, garments=(5, 6, 7, 10), arms=(14, 15), kept=(1, 2, 4, 13, 8, 9, 12, 16, 17, 18, 19),
               palette=voc_palette(len(LIP_NAMES)))
ATR = LabelSet("atr", ATR_NAMES, garments=(4, 7), arms=(14, 15), kept=(1, 2, 3, 11, 5, 6, 12, 13, 9, 10),
               palette=voc_palette(len(ATR_NAMES)))
FASHIONSYNTH = LabelSet(
    "fashionsynth", ("background", "hair", "face", "skin", "top", "bottom", "dress", "shoes"), garments=(4, 6), arms=(),
    kept=(1, 2, 5, 7), skin=3,
    palette=((0, 0, 0), (128, 0, 0), (255, 160, 120), (220, 130, 90), (255, 85, 0), (0, 85, 85), (0, 128, 255),
             (85, 51, 0)),
)  # fmt: skip
LABEL_SETS = {labels.name: labels for labels in (LIP, ATR, FASHIONSYNTH)}


def label_set(name: str, flag: str = "--labels") -> LabelSet:
    """The label set called `name`; UserError naming `flag` otherwise."""
    if name not in LABEL_SETS:
        raise UserError(f"{flag} {name!r}: expected one of {', '.join(LABEL_SETS)}")
    return LABEL_SETS[name]


def present(points: np.ndarray) -> np.ndarray:
    """Boolean (18,): the joints that are there (both coordinates finite)."""
    return np.isfinite(np.asarray(points, dtype=np.float64)).all(axis=1)


def _bone_geometry(points: np.ndarray, bones, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every pixel and bone: distance to the bone segment, position along it (0-1) and signed offset across it
    (pixels), each (len(bones), H, W). `points` are (y, x) image pixels."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    distances, along, across = [], [], []
    for a, b in bones:
        start, end = points[a].astype(np.float32), points[b].astype(np.float32)
        direction = end - start
        length2 = max(float(direction @ direction), 1e-6)
        t = np.clip(((ys - start[0]) * direction[0] + (xs - start[1]) * direction[1]) / length2, 0.0, 1.0)
        dy, dx = ys - (start[0] + t * direction[0]), xs - (start[1] + t * direction[1])
        distances.append(np.hypot(dy, dx))
        along.append(t)
        across.append((dx * direction[0] - dy * direction[1]) / np.sqrt(length2))
    if not bones:
        empty = np.zeros((0, height, width), dtype=np.float32)
        return empty, empty, empty
    return np.stack(distances), np.stack(along), np.stack(across)


def _nearest(points: np.ndarray, bones, height: int, width: int) -> np.ndarray:
    """Distance of every pixel to the nearest of `bones` whose two joints are present; inf where none is."""
    there = present(points)
    usable = [bone for bone in bones if there[bone[0]] and there[bone[1]]]
    if not usable:
        return np.full((height, width), np.inf, dtype=np.float32)
    return _bone_geometry(points, usable, height, width)[0].min(0)


def torso_polygon(points: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Bool (H, W): the polygon through the shoulders and hips present (right shoulder, left shoulder, left hip, right
    hip); all False with fewer than 3 of them."""
    height, width = size_hw
    there = present(points)
    corners = [(float(points[j, 1]), float(points[j, 0])) for j in TORSO if there[j]]
    polygon = Image.new("L", (width, height), 0)
    if len(corners) >= 3:
        ImageDraw.Draw(polygon).polygon(corners, fill=255)
    return np.asarray(polygon) > 0


def agnostic_mask(parse: np.ndarray, points: np.ndarray, labels: LabelSet) -> np.ndarray:
    """The VITON-HD agnostic region, bool (H, W), of a parse map in `labels`' set: its garments and arms, dilated
    3 px per 256 px of height, plus the torso polygon; its kept labels (and, for a shared skin label, the skin nearest
    a leg bone) are never in it. `points`: the 18 joints as (y, x) image pixels, NaN where missing."""
    height, width = parse.shape
    arms = np.isin(parse, labels.arms)
    kept = np.isin(parse, labels.kept)
    if labels.skin is not None:
        skin = parse == labels.skin
        to_arm = _nearest(points, ARM_BONES, height, width)
        # ties go to the arm, as an arg-min over the arm bones listed first would give them
        skin_arms = skin & np.isfinite(to_arm) & (to_arm <= _nearest(points, OTHER_BONES, height, width))
        to_leg = _nearest(points, LEG_BONES, height, width)
        kept |= skin & ~skin_arms & np.isfinite(to_leg) & (to_leg <= to_arm)
        arms |= skin_arms
    region = ndimage.binary_dilation(np.isin(parse, labels.garments) | arms, iterations=max(1, round(3 * height / 256)))
    region |= torso_polygon(points, (height, width))
    return region & ~kept


def garment_mask_agnostic(mask: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The agnostic region without a parse map: a garment mask the user drew (bool (H, W)), dilated like the rule's
    garments, plus the torso polygon of `points` ((y, x) pixels, NaN where missing)."""
    height = mask.shape[0]
    region = ndimage.binary_dilation(mask, iterations=max(1, round(3 * height / 256)))
    return region | torso_polygon(points, mask.shape)


def agnostic_image(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The person with grey 128 exactly where `mask` is set (uint8 (H, W, 3))."""
    out = image.copy()
    out[mask] = GREY
    return out


def _half_width(height: int) -> float:
    """Half the width of a body part in the DensePose-style image: 24 px at 256 px of height, at least 4."""
    return max(4.0, 24.0 * height / 256)


def densepose_style(parse: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A DensePose-STYLE image (not DensePose): on the figure (parse > 0) channel 0 = index of the nearest body part
    x 16, channel 1 = position along its bone, channel 2 = position across it (0-255); 0 off the figure. Bones with a
    missing joint are left out; with none left, all 0. `parse` may be a bool figure mask."""
    height, width = parse.shape
    there = present(points)
    usable = [index for index, (a, b) in enumerate(PART_BONES) if there[a] and there[b]]
    out = np.zeros((height, width, 3), dtype=np.uint8)
    if not usable:
        return out
    distances, along, across = _bone_geometry(points, [PART_BONES[i] for i in usable], height, width)
    nearest = distances.argmin(0)
    pick = np.take_along_axis
    t = pick(along, nearest[None], 0)[0]
    offset = pick(across, nearest[None], 0)[0]
    half = _half_width(height)
    figure = parse > 0
    parts = np.asarray([PART_INDEX[i] for i in usable], dtype=np.uint8)
    out[..., 0] = np.where(figure, parts[nearest] * 16, 0)
    out[..., 1] = np.where(figure, np.round(t * 255), 0).astype(np.uint8)
    out[..., 2] = np.where(figure, np.round(np.clip(0.5 + offset / (2 * half), 0, 1) * 255), 0).astype(np.uint8)
    return out


def skeleton_figure(points: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """A stand-in figure when there is no parse map, bool (H, W): the pixels within the DensePose-style half width of
    a body bone whose joints are present."""
    height, width = size_hw
    return _nearest(points, PART_BONES, height, width) <= _half_width(height)


def body25_from_points(points: np.ndarray) -> list[float]:
    """75 numbers (x, y, confidence per BODY_25 joint, OpenPose's pose_keypoints_2d) from the 18 COCO joints as (y, x)
    pixels (NaN missing), rounded to 3 decimals: present joints confidence 1, missing ones and the feet (0, 0, 0),
    mid-hip the mean of both hips."""
    there = present(points)
    coco = [np.round(np.array([point[1], point[0]]), 3) if known else None for point, known in zip(points, there)]
    joints = np.zeros((25, 3))
    for index, source in BODY25_FROM_COCO.items():
        if coco[source] is not None:
            joints[index] = (*coco[source], 1.0)
    if coco[8] is not None and coco[11] is not None:
        joints[8] = (*((coco[8] + coco[11]) / 2), 1.0)
    return [float(value) for value in joints.reshape(-1)]


def frame_points(keypoints: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """(18, 2) (y, x) keypoints in the 256x176 annotation frame (-1 missing) -> image pixels of size (H, W), NaN
    missing."""
    points = np.asarray(keypoints, dtype=np.float64) * np.array([size_hw[0] / FRAME_HW[0], size_hw[1] / FRAME_HW[1]])
    points[missing_mask(keypoints)] = np.nan
    return points


def body25(keypoints: np.ndarray, size: tuple[int, int]) -> list[float]:
    """75 numbers (x, y, confidence per BODY_25 joint) from 18 frame keypoints (y, x; -1 missing) in the pixels of
    an image of size (W, H): known joints confidence 1, missing ones and the feet (0, 0, 0), mid-hip the hips' mean."""
    width, height = size
    return body25_from_points(frame_points(keypoints, (height, width)))


def coco_points(table: np.ndarray) -> np.ndarray:
    """OpenPose joints (25 BODY_25 or 18 COCO rows of x, y, confidence) -> the 18 COCO joints as (y, x) pixels, NaN
    where the confidence is 0 (OpenPose's mark of a joint it did not find)."""
    table = np.asarray(table, dtype=np.float64)
    rows = table[COCO_FROM_BODY25] if len(table) == 25 else table
    points = rows[:, [1, 0]].copy()
    points[rows[:, 2] <= 0] = np.nan
    return points


def read_pose_points(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """The first person of an OpenPose JSON file, BODY_25 or COCO-18 (told apart by the length of
    pose_keypoints_2d: 75 or 54), as (the 18 COCO joints as (y, x) pixels, NaN missing; 25 or 18). UserError naming
    the file for anything else (see atelier.data.formats.vitonhd.read_openpose_json)."""
    from atelier.data.formats.text import parse_json, read_text
    from atelier.data.formats.vitonhd import read_openpose_json

    path = Path(path)
    data = parse_json(read_text(path, "OpenPose keypoint JSON"), f"{path}: not valid JSON; expected {OPENPOSE}")
    people = data.get("people") if isinstance(data, dict) else None
    person = people[0] if isinstance(people, list) and people else None
    values = person.get("pose_keypoints_2d") if isinstance(person, dict) else None
    if isinstance(values, list) and len(values) not in (75, 54):
        raise UserError(f"{path}: people[0].pose_keypoints_2d has {len(values)} numbers; expected 75 (BODY_25) or 54 "
                        "(COCO-18): x, y, confidence per joint")
    joints = 18 if isinstance(values, list) and len(values) == 54 else 25
    return coco_points(read_openpose_json(path, joints)), joints


def check_points_in_frame(points: np.ndarray, size_hw: tuple[int, int], where: str) -> None:
    """UserError naming `where` when a present joint lies outside the image by more than half its size: keypoints of
    another image size (OpenPose's are in the pixels of the image it ran on)."""
    height, width = size_hw
    there = present(points)
    outside = there & ((np.abs(points[:, 0] - height / 2) > height) | (np.abs(points[:, 1] - width / 2) > width))
    if outside.any():
        joint = int(np.flatnonzero(outside)[0])
        raise UserError(f"{where}: joint {joint} at x {points[joint, 1]:.0f}, y {points[joint, 0]:.0f} lies far outside "
                        f"the {width}x{height} image; expected keypoints in the pixels of that image")


def cloth_mask(cloth: np.ndarray, white: int = 240) -> np.ndarray:
    """The garment of a product photo on a near-white background, bool (H, W): the pixels with a channel below
    `white`, their largest connected part, holes filled. All False for an all-white image."""
    foreground = (np.asarray(cloth)[..., :3] < white).any(axis=-1)
    parts, count = ndimage.label(foreground)
    if count == 0:
        return foreground
    sizes = np.bincount(parts.ravel())[1:]
    return ndimage.binary_fill_holes(parts == 1 + int(sizes.argmax()))


def garment_sketch(cloth: np.ndarray) -> np.ndarray:
    """The XDoG sketch (atelier.utils.xdog) of a garment photo (uint8 (H, W, 3)): black lines on white, uint8 (H, W),
    the form of MGD's im_sketch."""
    import torch

    from atelier.utils.xdog import xdog_sketch

    tensor = torch.from_numpy(cloth.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    lines = xdog_sketch(tensor)[0, 0].numpy()
    return np.round(255.0 * (1.0 - lines)).astype(np.uint8)

"""FashionSynth's ground truth for MCLD's conditions: a DensePose IUV image of every photo, the identity's true texture
atlas, and an identity embedding that stands in for ArcFace.

IUV. Every figure pixel gets the DensePose part (1-24) of the body segment under it and its position on that segment.
The renderer knows which painted piece a pixel shows (canvas part names); each piece may lie over these segments:

    hair, face, eye, brow, mouth, neck   head
    arm (skin)                           upper arm, lower arm, hand (both sides)
    sleeve                               upper arm, lower arm
    leg (skin)                           upper leg, lower leg
    shoe                                 foot
    top                                  torso, upper arm (the shoulder caps)
    dress                                torso, upper arm, upper leg, lower leg
    bottom                               torso, upper leg, lower leg

and of those, the pixel takes the segment nearest it relative to the segment's width (distance to the bone / radius).
DensePose's part indices, as its documentation lists them: 1, 2 torso; 3 right hand; 4 left hand; 5 left foot; 6 right
foot; 7, 9 right upper leg; 8, 10 left upper leg; 11, 13 right lower leg; 12, 14 left lower leg; 15, 17 left upper
arm; 16, 18 right upper arm; 19, 21 left lower arm; 20, 22 right lower arm; 23, 24 head. Which index of a pair is the
front is not documented there: here the first is the back and the second the front (1 torso back, 2 front, ...), so
a back view uses the first of each pair and a front view the second; the head is 23 on the person's right side of its
axis and 24 on the left. U is the position along the segment (0 at its start: the neck for the torso and the head,
the proximal joint for a limb; 1 at its end), V the position across it (0.5 on the bone, towards 1 on the side that a
quarter turn of the bone's direction points to, mirrored for a back view, clipped at the segment's reach). Hands run
from the wrist 9 units on along the forearm, feet from the ankle 8 units down the body, the head from the neck to the
top of the head (units: canonical frame pixels times the pose's scale). Each head half wraps round the head, as
DensePose's do: its V is 1 on the middle of the face, 0.5 at the side and 0 on the middle of the back of the head.
These charts are FashionSynth's own (it has no SMPL mesh): consistent from pose to pose, but not DensePose's, so its
SMPL textures (`atelier.data.uv_texture.atlas_to_smpl`) are consistent but do not look like a real person's.

Texture truth. The identity drawn with flat colours (no shading, blur or noise: `render.base_colours`) in a canonical
front and back pose at 4x the frame's size, unwrapped into the atlas by the same IUV (`atelier.data.uv_texture`).
Garment patterns are laid out along the body axes of each pose, so limbs in another pose carry their pattern shifted:
the truth is exact for solid colours and approximate for patterns.

Identity embedding: float32, length 14, from what makes the person (garments excluded):
    0-2 skin RGB, 3-5 hair RGB (each x / 127.5 - 1), 6-8 hair style one-hot (short, long, bun), 9-10 gender one-hot
    (women, men: the face's shape follows it), 11 build ((b - 1) / 0.15), 12 shoulder half-width ((s - 22) / 3),
    13 hip half-width ((h - 14.5) / 2).
A back view shows no face: its embedding is zeros, as MCLD's loader gives a photo in which no face was found.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atelier.data.pose import FRAME_HW
from atelier.data.synth.body import Skeleton, head_axis
from atelier.data.synth.identity import Identity
from atelier.data.synth.poses import NECK_Y, NOSE_ABOVE_NECK, SHOULDER_DROP, to_frame_keypoints
from atelier.data.synth.render import base_colours, layout
from atelier.data.synth.shapes import Canvas

EMBEDDING_SIZE = 14
HAIR_STYLES = ("short", "long", "bun")
TRUTH_SCALE = 4  # the canonical renders are 4x the 256x176 frame
# segment kinds -> (back index, front index) per side (right, left)
DENSEPOSE = {
    "torso": {"right": (1, 2), "left": (1, 2)},
    "hand": {"right": (3, 3), "left": (4, 4)},
    "foot": {"right": (6, 6), "left": (5, 5)},
    "upper leg": {"right": (7, 9), "left": (8, 10)},
    "lower leg": {"right": (11, 13), "left": (12, 14)},
    "upper arm": {"right": (16, 18), "left": (15, 17)},
    "lower arm": {"right": (20, 22), "left": (19, 21)},
    "head": {"right": (23, 23), "left": (24, 24)},
}
PIECES = {
    "hair": ("head",), "face": ("head",), "eye": ("head",), "brow": ("head",), "mouth": ("head",), "neck": ("head",),
    "arm": ("upper arm", "lower arm", "hand"), "sleeve": ("upper arm", "lower arm"),
    "leg": ("upper leg", "lower leg"), "shoe": ("foot",), "top": ("torso", "upper arm"),
    "dress": ("torso", "upper arm", "upper leg", "lower leg"), "bottom": ("torso", "upper leg", "lower leg"),
}  # fmt: skip
LIMBS = {"right": (2, 3, 4, 8, 9, 10), "left": (5, 6, 7, 11, 12, 13)}  # shoulder, elbow, wrist, hip, knee, ankle


@dataclass(frozen=True)
class Segment:
    """One body segment: its kind and side, its bone (start, end) in (y, x) pixels, a radius that weighs distances
    when pixels are shared out, and the reach across it that maps to V = 0 and 1."""

    kind: str
    side: str
    start: np.ndarray
    end: np.ndarray
    radius: float
    reach: float


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-6)


def segments(skeleton: Skeleton) -> list[Segment]:
    """The body segments of a completed skeleton (see the module docstring for their extents)."""
    p, u = skeleton.points, skeleton.unit
    up, centre = head_axis(skeleton)
    mid_hip = (p[8] + p[11]) / 2
    found = [Segment("torso", "right", p[1], mid_hip, 18 * u, 30 * u),
             Segment("head", "right", p[1], centre + 19 * u * up, 15 * u, 22 * u)]
    for side, (shoulder, elbow, wrist, hip, knee, ankle) in LIMBS.items():
        forearm = _unit(p[wrist] - p[elbow])
        found += [Segment("upper arm", side, p[shoulder], p[elbow], 7 * u, 11 * u),
                  Segment("lower arm", side, p[elbow], p[wrist], 5 * u, 9 * u),
                  Segment("hand", side, p[wrist], p[wrist] + 9 * u * forearm, 4 * u, 7 * u),
                  Segment("upper leg", side, p[hip], p[knee], 10 * u, 16 * u),
                  Segment("lower leg", side, p[knee], p[ankle], 7 * u, 12 * u),
                  Segment("foot", side, p[ankle], p[ankle] + 8 * u * skeleton.down, 5 * u, 8 * u)]  # fmt: skip
    return found


def _geometry(segment: Segment, ys: np.ndarray, xs: np.ndarray, front: bool) -> tuple[np.ndarray, ...]:
    """(distance to the bone, U along it, signed offset across it) of the pixels (ys, xs)."""
    start = segment.start.astype(np.float64)
    direction = segment.end - start
    length2 = max(float(direction @ direction), 1e-6)
    dy, dx = ys - start[0], xs - start[1]
    t = np.clip((dy * direction[0] + dx * direction[1]) / length2, 0.0, 1.0)
    normal = np.array([-direction[1], direction[0]]) if front else np.array([direction[1], -direction[0]])
    normal = _unit(normal)
    distance = np.hypot(dy - t * direction[0], dx - t * direction[1])
    return distance, t, dy * normal[0] + dx * normal[1]


def body_iuv(canvas: Canvas, skeleton: Skeleton | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DensePose (parts uint8, U, V float32), each (H, W), of a painted canvas (see the module docstring); all zeros
    without a skeleton."""
    shape = canvas.ids.shape
    parts, u, v = np.zeros(shape, np.uint8), np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    if skeleton is None:
        return parts, u, v
    found = segments(skeleton)
    piece = np.array([part.name for part in canvas.parts])[canvas.ids]
    ys, xs = np.nonzero(canvas.ids > 0)
    names = piece[ys, xs]
    best = np.full(len(ys), np.inf)
    choice = np.zeros((3, len(ys)), dtype=np.float64)  # part index, U, V
    left = skeleton.side if skeleton.front else -skeleton.side  # the person's left, in the image
    for segment in found:
        allowed = np.isin(names, [name for name, kinds in PIECES.items() if segment.kind in kinds])
        if not allowed.any():
            continue
        distance, along, across = _geometry(segment, ys[allowed].astype(np.float64), xs[allowed].astype(np.float64),
                                            skeleton.front)
        score = distance / segment.radius
        better = score < best[allowed]
        rows = np.flatnonzero(allowed)[better]
        best[rows] = score[better]
        side = segment.side
        if segment.kind == "head":  # split by the side of the head's axis each pixel lies on
            offset = (ys[rows] - segment.start[0]) * left[0] + (xs[rows] - segment.start[1]) * left[1]
            index = np.where(offset >= 0, DENSEPOSE["head"]["left"][0], DENSEPOSE["head"]["right"][0])
        else:
            index = np.full(len(rows), DENSEPOSE[segment.kind][side][1 if skeleton.front else 0])
        choice[0, rows] = index
        choice[1, rows] = along[better]
        if segment.kind == "head":  # each half wraps round the head: V 1 mid-face, 0.5 at the side, 0 mid-back
            sideways = np.clip(np.abs(across[better]) / segment.reach, 0.0, 1.0)
            choice[2, rows] = 1.0 - 0.5 * sideways if skeleton.front else 0.5 * sideways
        else:
            choice[2, rows] = np.clip(0.5 + across[better] / (2 * segment.reach), 0.0, 1.0)
    parts[ys, xs] = choice[0].astype(np.uint8)
    u[ys, xs], v[ys, xs] = choice[1], choice[2]
    return parts, u, v


def render_iuv(identity: Identity, keypoints, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The DensePose truth (parts, U, V) of `render(identity, keypoints, size)`'s picture."""
    return body_iuv(*layout(identity, keypoints, size))


def canonical_keypoints(identity: Identity, view: str) -> np.ndarray:
    """A fixed pose for the texture truth: standing straight, arms 35 degrees out, legs 7 degrees apart, centred in the
    256x176 frame; seen from the back the image is mirrored and the face joints are missing (as poses.sample_pose)."""
    points = np.zeros((18, 2))
    points[1] = (NECK_Y, 0.0)
    points[0] = points[1] + (-NOSE_ABOVE_NECK, 0.0)
    for outward, (shoulder, elbow, wrist, hip, knee, ankle), eye, ear in ((-1, LIMBS["right"], 14, 16),
                                                                         (1, LIMBS["left"], 15, 17)):
        arm = np.array([np.cos(np.deg2rad(35)), outward * np.sin(np.deg2rad(35))])
        leg = np.array([np.cos(np.deg2rad(7)), outward * np.sin(np.deg2rad(7))])
        points[shoulder] = (NECK_Y + SHOULDER_DROP, outward * identity.shoulder_half)
        points[elbow] = points[shoulder] + 43.0 * arm
        points[wrist] = points[elbow] + 40.0 * arm
        points[hip] = (0.0, outward * identity.hip_half)
        points[knee] = points[hip] + 54.0 * leg
        points[ankle] = points[knee] + 50.0 * leg
        points[eye] = points[0] + (-4.0, outward * 5.5)
        points[ear] = points[0] + (-1.0, outward * 10.5)
    if view == "back":
        points[:, 1] *= -1
        points[[0, 14, 15]] = np.nan
    return to_frame_keypoints(points * 0.98 + np.array([136.0, FRAME_HW[1] / 2]))


def identity_atlas(identity: Identity) -> tuple[np.ndarray, np.ndarray]:
    """The identity's true texture atlas uint8 (1200, 800, 3) and its covered texels, bool (see the module docstring)."""
    from atelier.data.uv_texture import ATLAS_HW, unwrap

    sums, counts = np.zeros((*ATLAS_HW, 3)), np.zeros(ATLAS_HW)
    size = (FRAME_HW[1] * TRUTH_SCALE, FRAME_HW[0] * TRUTH_SCALE)
    for view in ("front", "back"):
        canvas, skeleton = layout(identity, canonical_keypoints(identity, view), size)
        colours = np.clip(np.round(base_colours(canvas, identity, skeleton)), 0, 255).astype(np.uint8)
        atlas, known = unwrap(colours, *body_iuv(canvas, skeleton))
        sums += np.where(known[..., None], atlas, 0)
        counts += known
    known = counts > 0
    atlas = np.zeros((*ATLAS_HW, 3), np.uint8)
    atlas[known] = np.round(sums[known] / counts[known, None]).astype(np.uint8)
    return atlas, known


def fill_nearest(atlas: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The atlas with every empty texel of a tile that has covered ones given its nearest covered texel's colour, tile
    by tile (the truth's gaps are single texels between the pixels of its renders: no inpainting needed)."""
    from scipy import ndimage

    from atelier.data.uv_texture import NUM_PARTS, TILE, tile_origin

    filled = np.where(known[..., None], atlas, 0).astype(np.uint8)
    for part in range(1, NUM_PARTS + 1):
        top, left = tile_origin(part)
        window = (slice(top, top + TILE), slice(left, left + TILE))
        if known[window].any():
            rows, cols = ndimage.distance_transform_edt(~known[window], return_distances=False, return_indices=True)
            filled[window] = filled[window][rows, cols]
    return filled


def identity_embedding(identity: Identity) -> np.ndarray:
    """The identity's embedding, float32 (14,) (layout in the module docstring)."""
    skin = np.array(identity.skin_rgb) / 127.5 - 1.0
    hair = np.array(identity.hair_rgb) / 127.5 - 1.0
    style = np.array([identity.hair_style == name for name in HAIR_STYLES], dtype=np.float64)
    gender = np.array([identity.gender == "WOMEN", identity.gender == "MEN"], dtype=np.float64)
    body = [(identity.build - 1.0) / 0.15, (identity.shoulder_half - 22.0) / 3.0, (identity.hip_half - 14.5) / 2.0]
    return np.concatenate([skin, hair, style, gender, body]).astype(np.float32)

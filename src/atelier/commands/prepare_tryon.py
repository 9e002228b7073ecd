"""`atelier prepare-tryon`: a user's person photos (and garment photos) -> the VITON-HD test layout a try-on model reads.

Every input is looked up by the person's (or garment's) file stem; every missing one is named in one error before any
work. Outputs are written atomically and a person whose outputs all exist is kept (resumable); --overwrite redoes
them. Nothing heavy is imported at the top: `atelier --help` must not wait for torch or onnxruntime.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from atelier.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from atelier.data.agnostic import LabelSet
    from atelier.data.human_parsing import OnnxParser

logger = logging.getLogger(__name__)

EPILOG = """examples:
  atelier prepare-tryon --images photos/ --keypoints openpose/ --parse parses/ --out prepared/
  atelier prepare-tryon --images photos/ --keypoints openpose/ --parser-model schp-lip.onnx --out prepared/ \\
      --garments tops/ --pairs my_pairs.txt
  atelier prepare-tryon --images photos/ --keypoints openpose/ --masks drawn/ --densepose iuv/ --out prepared/

Writes OUT/test/ in the VITON-HD layout, each person named by the photo's stem:
  image/<name>.jpg, agnostic-v3.2/<name>.jpg, agnostic-mask/<name>_mask.png, image-parse-v3/<name>.png,
  openpose_json/<name>_keypoints.json (BODY_25; COCO-18 input is converted), image-densepose/<name>.jpg
and with --garments: cloth/<garment>.jpg, cloth-mask/<garment>.jpg, im_sketch/<name>.png (the person's own garment)
or im_sketch_unpaired/<name>_<garment>.png, and OUT/test_pairs.txt. OUT/prepare.json records the options and where
each person's parse map came from.

Per person, the parse map comes from the first of: --parse DIR/<name>.png (label indices in --labels' set), the
--parser-model run on the photo, --masks DIR/<name>.png (or <name>_mask.png). The agnostic mask is the VITON-HD rule
(upper clothes, coat and dress, and the arms, dilated a few px, plus the torso polygon between shoulders and hips;
hair, face, hat, lower-body garments, legs and shoes never masked), or with a drawn mask that mask dilated plus the
torso polygon (no image-parse-v3 then). image-densepose is a DensePose-STYLE image drawn from the parse map (or, for a
drawn mask, the skeleton) and the keypoints, NOT DensePose: pass --densepose DIR with real DensePose renderings
(<name>.jpg or .png) for a model trained on them. Keypoints: --keypoints DIR/<name>_keypoints.json, OpenPose
BODY_25 or COCO-18 (told apart by length), in the photo's pixels; joints of confidence 0 are missing.

--parser-model: a human-parsing ONNX model such as SCHP's LIP or ATR exports (needs onnxruntime: pip install
'atelier[parse]'). The photo is fitted into the model's input with black borders, in BGR order normalised with
ImageNet's mean and std (SCHP's convention; --parser-channels rgb for other models); the last output of shape
(1, labels, h, w) is taken as logits. The input size is read from the model, else --parser-size, else SCHP's
documented sizes: 473x473 for lip, 512x512 for atr and fashionsynth.

Garments: images on a near-white background; the mask is the non-white pixels' largest part with holes filled, unless
--cloth-masks DIR/<garment>.png gives it. Pairs: each person with the garment of the same stem, or --pairs FILE of
`person.jpg garment.jpg` lines (VITON-HD's test_pairs.txt form).
"""

MAX_NAMED = 3  # names shown per kind of missing input; the rest are counted


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare-tryon", help="person photos (+ garments) -> the VITON-HD test layout a try-on model reads",
        description="Turn your own person photos into the VITON-HD test layout: the photo, the agnostic image and mask "
                    "(the VITON-HD rule on a parse map), the parse map, OpenPose JSON, a DensePose-style image, and "
                    "with --garments the cloth, its mask, its sketch and test_pairs.txt.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, type=Path, metavar="DIR", help="the person photos (.jpg, .png, .webp, .bmp)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (OUT/test/...)")
    parser.add_argument("--keypoints", type=Path, metavar="DIR", help="OpenPose JSON per person: <name>_keypoints.json (BODY_25 or COCO-18)")
    parser.add_argument("--parse", type=Path, metavar="DIR", help="parse maps: <name>.png of label indices (see --labels)")
    parser.add_argument("--labels", default="lip", choices=("lip", "atr", "fashionsynth"), help="label set of --parse and --parser-model: lip (20 labels, VITON-HD's), atr (18) or fashionsynth (8) (default lip)")
    parser.add_argument("--parser-model", type=Path, metavar="FILE", help="a human-parsing ONNX model (e.g. an SCHP export) for people without --parse")
    parser.add_argument("--parser-size", metavar="HxW", help="the model's input size when the model leaves it open (default: 473x473 for lip, 512x512 otherwise)")
    parser.add_argument("--parser-channels", default="bgr", choices=("bgr", "rgb"), help="channel order the model expects (default bgr, SCHP's)")
    parser.add_argument("--masks", type=Path, metavar="DIR", help="garment masks you drew: <name>.png, for people without a parse map")
    parser.add_argument("--densepose", type=Path, metavar="DIR", help="real DensePose images (<name>.jpg or .png) to copy instead of drawing DensePose-style ones")
    parser.add_argument("--garments", type=Path, metavar="DIR", help="garment photos on a near-white background")
    parser.add_argument("--cloth-masks", type=Path, metavar="DIR", help="garment masks: <garment>.png (default: cut from the white background)")
    parser.add_argument("--pairs", type=Path, metavar="FILE", help="`person.jpg garment.jpg` lines (default: each person with the garment of the same stem)")
    parser.add_argument("--overwrite", action="store_true", help="redo every output (default: keep the ones an earlier run wrote)")
    parser.set_defaults(func=run)


@dataclass
class Person:
    """One person photo and the inputs found for it (None: not given)."""

    name: str
    image: Path
    parse: Path | None = None
    mask: Path | None = None
    keypoints: Path | None = None
    densepose: Path | None = None
    source: str | None = None  # where the parse map comes from: "parse", "model" or "mask"


@dataclass
class Plan:
    """What the run will read and pair: the people, the garments (stem -> photo) and their masks, the pairs."""

    people: list[Person]
    garments: dict[str, Path] = field(default_factory=dict)
    cloth_masks: dict[str, Path] = field(default_factory=dict)
    pairs: list[tuple[str, str]] = field(default_factory=list)


def _images(folder: Path, flag: str) -> dict[str, Path]:
    """{stem: image} of the images directly in `folder`; UserError for no folder, no image, a name a pairs file cannot
    hold, or two images of one stem."""
    from atelier.data.formats.captioned import list_images
    from atelier.data.formats.vitonhd import check_name

    if not folder.is_dir():
        raise UserError(f"{flag} {folder}: not a folder; expected a folder of images")
    found: dict[str, Path] = {}
    for path in list_images(folder, recursive=False):
        check_name(path.name, f"{flag} {folder}", "a name of letters, digits, '_', '-' and '.' (rename the file)")
        if path.stem in found:
            raise UserError(f"{flag} {folder}: {found[path.stem].name} and {path.name} share the name {path.stem}; "
                            "rename one")
        found[path.stem] = path
    if not found:
        raise UserError(f"{flag} {folder}: no images found (expected .jpg, .png, .webp or .bmp files)")
    return found


def _find(folder: Path | None, *names: str) -> Path | None:
    """The first of `names` that is a file in `folder`; None when there is none (or no folder)."""
    if folder is not None:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def _named(names: list[str], noun: str) -> str:
    """'person 0001' or 'people 0001, 0002, 0003 and 4 more'."""
    shown = ", ".join(names[:MAX_NAMED]) + (f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else "")
    return f"{noun[0] if len(names) == 1 else noun[1]} {shown}"


def _check_folders(args: argparse.Namespace) -> None:
    """UserError for a given input folder (or --pairs file) that is not there: a typo, not a missing input each."""
    for flag in ("keypoints", "parse", "masks", "densepose", "garments", "cloth_masks"):
        folder = getattr(args, flag)
        if folder is not None and not folder.is_dir():
            raise UserError(f"--{flag.replace('_', '-')} {folder}: not a folder; check the path")
    if args.parser_model is not None and not args.parser_model.is_file():
        raise UserError(f"--parser-model {args.parser_model}: not found; pass a human-parsing .onnx file")
    if args.pairs is not None and args.garments is None:
        raise UserError("--pairs pairs people with garments: pass --garments DIR too")
    if args.cloth_masks is not None and args.garments is None:
        raise UserError("--cloth-masks gives the masks of --garments: pass --garments DIR too")


def plan(args: argparse.Namespace) -> Plan:
    """The people, garments and pairs of the run, each person's inputs found; one UserError naming every missing
    input and how to provide it."""
    _check_folders(args)
    people = [Person(name, image) for name, image in _images(args.images, "--images").items()]
    missing = {"parse": [], "keypoints": [], "densepose": []}
    for person in people:
        person.parse = _find(args.parse, f"{person.name}.png")
        person.mask = _find(args.masks, f"{person.name}.png", f"{person.name}_mask.png")
        person.source = "parse" if person.parse else "model" if args.parser_model else "mask" if person.mask else None
        person.keypoints = _find(args.keypoints, f"{person.name}_keypoints.json")
        person.densepose = _find(args.densepose, f"{person.name}.jpg", f"{person.name}.png")
        for kind, found in (("parse", person.source), ("keypoints", person.keypoints), ("densepose", person.densepose)):
            if found is None and (kind != "densepose" or args.densepose is not None):
                missing[kind].append(person.name)
    result = Plan(people)
    problems = []
    if missing["parse"]:
        first = missing["parse"][0]
        problems.append(f"no parse map for {_named(missing['parse'], ('person', 'people'))}: pass --parse DIR with "
                        f"{first}.png, --parser-model FILE.onnx, or --masks DIR with {first}.png")
    if missing["keypoints"]:
        first = missing["keypoints"][0]
        where = f"add {first}_keypoints.json to --keypoints {args.keypoints}" if args.keypoints else \
            f"pass --keypoints DIR with {first}_keypoints.json"
        problems.append(f"no keypoints for {_named(missing['keypoints'], ('person', 'people'))}: {where} (OpenPose "
                        "BODY_25 or COCO-18 JSON)")
    if missing["densepose"]:
        first = missing["densepose"][0]
        problems.append(f"no DensePose image for {_named(missing['densepose'], ('person', 'people'))}: add {first}.jpg "
                        f"to --densepose {args.densepose}, or leave --densepose out to draw DensePose-style images")
    if args.garments is not None:
        problems += _plan_garments(args, result)
    if problems:
        raise UserError("missing inputs: " + "; ".join(problems))
    return result


def _plan_garments(args: argparse.Namespace, result: Plan) -> list[str]:
    """Fill the garments, their masks and the pairs of `result`; the missing-input messages."""
    from atelier.data.formats.vitonhd import read_pairs, stem

    result.garments = _images(args.garments, "--garments")
    names = {person.name for person in result.people}
    problems = []
    if args.pairs is None:
        result.pairs = [(person.name, person.name) for person in result.people]
        unmatched = [person.name for person in result.people if person.name not in result.garments]
        if unmatched:
            problems.append(f"no garment for {_named(unmatched, ('person', 'people'))}: add {unmatched[0]}.jpg to "
                            f"--garments {args.garments} (a garment pairs with the person of its name), or pass "
                            "--pairs FILE")
    else:
        for pair in read_pairs(args.pairs):
            where = f"{args.pairs}, line {pair.line}"
            if stem(pair.person) not in names:
                raise UserError(f"{where}: person {pair.person} is not among the --images in {args.images}; fix the "
                                "line or add the photo")
            if stem(pair.garment) not in result.garments:
                raise UserError(f"{where}: garment {pair.garment} is not among the --garments in {args.garments}; "
                                "fix the line or add the garment")
            result.pairs.append((stem(pair.person), stem(pair.garment)))
    used = sorted({garment for _, garment in result.pairs if garment in result.garments})
    if args.cloth_masks is not None:
        result.cloth_masks = {name: path for name in used
                              if (path := _find(args.cloth_masks, f"{name}.png", f"{name}.jpg")) is not None}
        unmasked = [name for name in used if name not in result.cloth_masks]
        if unmasked:
            problems.append(f"no garment mask for {_named(unmasked, ('garment', 'garments'))}: add {unmasked[0]}.png "
                            f"to --cloth-masks {args.cloth_masks}, or leave --cloth-masks out to cut masks from the "
                            "white background")
    result.garments = {name: result.garments[name] for name in used}
    return problems


def _options(args: argparse.Namespace) -> dict:
    """The options that decide what an output holds: a resumed run must use the same ones."""
    return {"labels": args.labels, "parser_model": str(args.parser_model) if args.parser_model else None,
            "parser_size": args.parser_size, "parser_channels": args.parser_channels,
            "densepose": str(args.densepose) if args.densepose else None,
            "cloth_masks": str(args.cloth_masks) if args.cloth_masks else None}


def _claim_out(args: argparse.Namespace) -> None:
    """Refuse an OUT that holds inputs or someone else's files, or an earlier run with other options (unless
    --overwrite); then mark it as prepare-tryon's."""
    import json

    from atelier.utils.outputs import check_folder_path, check_outside, check_overwritable, write_marker

    check_folder_path(args.out, "--out")
    inputs = [(f"--{flag.replace('_', '-')}", getattr(args, flag)) for flag in
              ("images", "keypoints", "parse", "masks", "densepose", "garments", "cloth_masks") if getattr(args, flag)]
    check_outside(args.out, inputs)
    check_overwritable(args.out, "prepare-tryon")
    try:
        earlier = json.loads((args.out / "prepare.json").read_text(encoding="utf-8")).get("options")
    except (OSError, ValueError, AttributeError):
        earlier = None
    if earlier is not None and earlier != _options(args) and not args.overwrite:
        changed = ", ".join(f"{key} {earlier.get(key)!r} -> {value!r}" for key, value in _options(args).items()
                            if earlier.get(key) != value)
        raise UserError(f"--out {args.out} was prepared with other options ({changed}); pass --overwrite to redo "
                        "every output with the new ones, or choose another --out")
    write_marker(args.out, "prepare-tryon")


def _load(path: Path, what: str) -> Image.Image:
    """The image at `path`, decoded (PIL); UserError naming the file when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
        raise UserError(f"{path}: the {what} is not a readable image ({type(error).__name__}); check the file") from None


def _write_jpeg(image: Image.Image, source: Path, target: Path) -> None:
    """`image` (read from `source`) as a JPEG at `target`: the file's bytes when it is an RGB JPEG already (no second
    compression), else re-encoded (quality 95)."""
    from atelier.utils.io import save_image, write_bytes

    if image.format == "JPEG" and image.mode == "RGB":
        write_bytes(target, source.read_bytes())
    else:
        save_image(image.convert("RGB"), target)


def _person_targets(root: Path, person: Person) -> dict[str, Path]:
    names = {"image": f"{person.name}.jpg", "agnostic-v3.2": f"{person.name}.jpg",
             "agnostic-mask": f"{person.name}_mask.png", "image-parse-v3": f"{person.name}.png",
             "image-densepose": f"{person.name}.jpg", "openpose_json": f"{person.name}_keypoints.json"}
    if person.source == "mask":
        del names["image-parse-v3"]  # a drawn mask is no parse map
    return {folder: root / folder / name for folder, name in names.items()}


def prepare_person(person: Person, pose: tuple[np.ndarray, int], labels: LabelSet, parser: OnnxParser | None,
                   root: Path) -> None:
    """Write one person's outputs under `root` (OUT/test); `pose` is (points, joints) from their keypoint file."""
    import numpy as np
    from PIL import Image

    from atelier.data import agnostic
    from atelier.data.agnostic import agnostic_image, body25_from_points, densepose_style
    from atelier.data.human_parsing import read_label_map
    from atelier.utils.io import save_image, write_bytes, write_json

    points, joints = pose
    targets = _person_targets(root, person)
    loaded = _load(person.image, "person photo")
    photo = np.asarray(loaded.convert("RGB"))
    if person.source == "mask":
        drawn = np.asarray(_load(person.mask, "garment mask").convert("L")) > 127
        mask = agnostic.garment_mask_agnostic(drawn, points)
        figure = agnostic.skeleton_figure(points, drawn.shape)
    else:
        parse = read_label_map(person.parse, labels) if person.source == "parse" else parser(photo)
        mask = agnostic.agnostic_mask(parse, points, labels)
        figure = parse
        image = Image.fromarray(parse, "P")
        image.putpalette([value for rgb in labels.palette for value in rgb])
        save_image(image, targets["image-parse-v3"])
    _write_jpeg(loaded, person.image, targets["image"])
    save_image(Image.fromarray(agnostic_image(photo, mask)), targets["agnostic-v3.2"])
    save_image(Image.fromarray(mask.astype(np.uint8) * 255), targets["agnostic-mask"])
    if person.densepose is not None:
        _write_jpeg(_load(person.densepose, "DensePose image"), person.densepose, targets["image-densepose"])
    else:
        save_image(Image.fromarray(densepose_style(figure, points)), targets["image-densepose"])
    if joints == 25:  # already what VITON-HD reads
        write_bytes(targets["openpose_json"], person.keypoints.read_bytes())
    else:
        write_json(targets["openpose_json"], {"version": 1.3, "people": [
            {"person_id": [-1], "pose_keypoints_2d": body25_from_points(points)}]})


def _check_sizes(person: Person) -> None:
    """UserError naming both files when a parse map, drawn mask or DensePose image is not the photo's size."""
    from atelier.data.formats.vitonhd import check_same_size

    used = {"parse": person.parse, "mask": person.mask}.get(person.source or "")  # the model makes its own
    for path, what in ((used, "parse map" if person.source == "parse" else "garment mask"),
                       (person.densepose, "DensePose image")):
        if path is not None:
            check_same_size(path, person.image, what)


def _read_poses(people: list[Person]) -> dict[str, tuple]:
    """Every person's (points, joints), read and checked against the photo's size before any work."""
    from atelier.data.agnostic import check_points_in_frame, read_pose_points
    from atelier.data.formats.vitonhd import image_size

    poses = {}
    for person in people:
        _check_sizes(person)
        points, joints = read_pose_points(person.keypoints)
        width, height = image_size(person.image, "person photo")
        check_points_in_frame(points, (height, width), str(person.keypoints))
        poses[person.name] = (points, joints)
    return poses


def prepare_garments(work: Plan, root: Path, overwrite: bool) -> int:
    """Write cloth/, cloth-mask/ and the sketches of every pair under `root`; the number of garments written."""
    import numpy as np
    from PIL import Image

    from atelier.data.agnostic import cloth_mask, garment_sketch
    from atelier.data.formats.vitonhd import check_same_size
    from atelier.utils.io import save_image
    from atelier.utils.progress import progress

    written = 0
    for name, path in progress(list(work.garments.items()), desc="garments"):
        sketches = [root / ("im_sketch" if person == name else "im_sketch_unpaired") /
                    (f"{person}.png" if person == name else f"{person}_{name}.png")
                    for person, garment in work.pairs if garment == name]  # fmt: skip
        cloth_target, mask_target = root / "cloth" / f"{name}.jpg", root / "cloth-mask" / f"{name}.jpg"
        if not overwrite and all(target.is_file() for target in (cloth_target, mask_target, *sketches)):
            continue
        loaded = _load(path, "garment photo")
        cloth = np.asarray(loaded.convert("RGB"))
        if name in work.cloth_masks:
            mask = np.asarray(_load(check_same_size(work.cloth_masks[name], path, "garment mask"), "garment mask")
                              .convert("L")) > 127
        else:
            mask = cloth_mask(cloth)
        if not mask.any():
            raise UserError(f"{path}: no garment found on a near-white background; pass --cloth-masks DIR with "
                            f"{name}.png")
        _write_jpeg(loaded, path, cloth_target)
        save_image(Image.fromarray(mask.astype(np.uint8) * 255), mask_target)
        sketch = Image.fromarray(garment_sketch(cloth))
        for target in sketches:
            save_image(sketch, target)
        written += 1
    return written


def run(args: argparse.Namespace) -> int:
    from atelier import __version__
    from atelier.data.agnostic import label_set
    from atelier.utils.io import write_json, write_text
    from atelier.utils.progress import progress

    labels = label_set(args.labels)
    size_hw = None
    if args.parser_size is not None:
        from atelier.data.transforms import parse_size

        size_hw = parse_size(args.parser_size, "--parser-size", order="hw", minimum=8)
    work = plan(args)
    poses = _read_poses(work.people)
    root = args.out / "test"
    todo = [person for person in work.people if args.overwrite or
            not all(path.is_file() for path in _person_targets(root, person).values())]
    parser = None
    if any(person.source == "model" for person in todo):  # loaded before OUT is touched: a bad model writes nothing
        from atelier.data.human_parsing import OnnxParser

        parser = OnnxParser(args.parser_model, labels, size_hw, args.parser_channels)
    _claim_out(args)
    for person in progress(todo, desc="prepare-tryon"):
        prepare_person(person, poses[person.name], labels, parser, root)
    garments = prepare_garments(work, root, args.overwrite) if args.garments is not None else 0
    if work.pairs:
        write_text(args.out / "test_pairs.txt", "".join(f"{person}.jpg {garment}.jpg\n" for person, garment in work.pairs))
    kept = len(work.people) - len(todo)
    write_json(args.out / "prepare.json", {
        "generator": "atelier prepare-tryon", "atelier_version": __version__, "options": _options(args),
        "parse_source": {person.name: person.source for person in work.people},
        "written": [person.name for person in todo], "kept": kept,
    })  # fmt: skip
    print(f"prepared {len(todo)} people into {root} ({kept} existing kept); {garments} garments written, {len(work.pairs)} pairs"
          + (f" in {args.out / 'test_pairs.txt'}" if work.pairs else ""))
    return 0


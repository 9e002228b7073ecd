"""`atelier edit`: redraw a person with an MCLD model, taking the clothes, the face or the pose from other people."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path

from atelier.commands._folder_job import plan, require_positive
from atelier.commands.generate import add_speed_arguments, check_numbers, speed_from_args

EPILOG = """examples:
  atelier edit --checkpoint runs/mcld --person data/deepfashion/test_highres/A.jpg \\
      --clothes-from data/deepfashion/test_highres/B.jpg --out out/edit        # A wearing B's clothes
  atelier edit --checkpoint runs/mcld --person A.jpg --face-from C.jpg --pose-from D.jpg --out out/edit
Every image is a photo of a DeepFashion-layout folder (<root>/<split>_highres/<name>) with MCLD's conditions beside it:
<split>_densepose/<name>.png (DensePose IUV), <split>_texture/<name>.png (UV texture), <split>_face/<name>.npy (face
embedding), written by `atelier prepare-conditions` (or `atelier synth --conditions`); the people may come from
different folders. What each condition is taken from:
  appearance (the image's CLIP token, its texture map but the head): --clothes-from, else --person
  face (the embedding, and the head's texels of the texture map): --face-from, else --person's (embedding zeros when
  the file is missing: no face found)
  target pose (the IUV image): --pose-from, else --person's own
Give at least one of the three. Written: OUT/<person's name>.png, OUT/preview/grid.png (person / donors / output)
and OUT/settings.json; an existing output is kept unless --overwrite. DDIM, 20 steps and --guidance-scale 3.5 by
default, as MCLD's sampling."""

DONORS = {"clothes_from": "clothes", "face_from": "face", "pose_from": "pose"}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("edit", help="redraw a person with an MCLD model and another person's clothes, face or pose",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="an mcld training run (RUN or RUN/final)")
    parser.add_argument("--person", required=True, type=Path, metavar="IMG", help="the person to redraw (A)")
    parser.add_argument("--clothes-from", type=Path, metavar="IMG", help="take the appearance (texture, CLIP token) from this person")
    parser.add_argument("--face-from", type=Path, metavar="IMG", help="take the face embedding from this person")
    parser.add_argument("--pose-from", type=Path, metavar="IMG", help="draw in this person's pose (their IUV image)")
    parser.add_argument("--steps", type=int, default=20, metavar="N", help="DDIM steps (default 20, as MCLD)")
    parser.add_argument("--guidance-scale", type=float, default=3.5, metavar="S", help="classifier-free guidance (default 3.5)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output (default: keep it)")
    add_speed_arguments(parser, compile_default="off")
    parser.set_defaults(func=run)


def _check_arguments(args: argparse.Namespace) -> None:
    from atelier.errors import UserError

    if not any(getattr(args, name) for name in DONORS):
        raise UserError("atelier edit needs at least one of --clothes-from, --face-from, --pose-from: the condition(s) "
                        "to take from another person (with none, use `atelier pose-transfer --method mcld`)")
    require_positive({"--steps": args.steps})
    check_numbers(args, ["guidance_scale"])


def _check_files(args: argparse.Namespace) -> dict[str, Path]:
    """Every image and condition file the edit reads exists, before the model loads: UserError naming the first
    missing one and the command that writes it. Returns {role: image} (role person/clothes/face/pose)."""
    from atelier.data.transforms import open_rgb
    from atelier.errors import UserError
    from atelier.methods.mcld.data import MAKE_THEM, condition_paths

    images = {"person": args.person, **{role: getattr(args, name) or args.person for name, role in DONORS.items()}}
    for image in images.values():
        open_rgb(image)  # missing or unreadable: refused now, naming the file
    needed = [(condition_paths(images["clothes"])["texture"], f"the UV texture map of the {_whose(args, 'clothes_from')}"),
              (condition_paths(images["pose"])["densepose"], f"the DensePose IUV image of the {_whose(args, 'pose_from')}")]
    if images["face"] != images["clothes"]:  # the head of the texture map comes from the face's owner
        needed.append((condition_paths(images["face"])["texture"], f"the UV texture map of the {_whose(args, 'face_from')}"))
    if args.face_from:  # asked for a face: a missing file would silently mean "no face"
        needed.append((condition_paths(images["face"])["face"], "the face embedding of the --face-from person"))
    for path, what in needed:
        if not path.is_file():
            why = " (none is written when no face was found)" if path.suffix == ".npy" else ""
            raise UserError(f"{path}: {what} not found{why}; {MAKE_THEM}")
    return images


def _whose(args: argparse.Namespace, flag: str) -> str:
    return f"--{flag.replace('_', '-')} person" if getattr(args, flag) else "--person"


def run(args: argparse.Namespace) -> int:
    from atelier.methods.mcld.model import load_mcld_model, read_model_config
    from atelier.methods.mcld.sample import edit
    from atelier.utils.images import tensor_to_pil
    from atelier.utils.kept import kept

    _check_arguments(args)
    started = time.time()
    images = _check_files(args)
    read_model_config(args.checkpoint)  # not an MCLD run: refused before the load
    job = plan([(args.person, args.out / f"{args.person.stem}.png")], args.out, args.seed, args.overwrite, started)
    speed = speed_from_args(args, many=False)
    model = kept(load_mcld_model, args.checkpoint, speed=speed)
    for task in job.todo:
        conditions, image = edit(model, images["person"], args.clothes_from, args.face_from, args.pose_from,
                                 seed=task.seed, steps=args.steps, guidance_scale=args.guidance_scale)
        # grid row: the person, each donor (the clothes and face donors' photos, the pose donor's IUV), the output
        size = model.config.image_size
        row = [_image(images["person"], size)]
        row += [conditions.source] if args.clothes_from else []
        row += [_image(images["face"], size)] if args.face_from else []
        row += [conditions.iuv * 2 - 1] if args.pose_from else []
        job.save(task, image, [*(tensor_to_pil(cell) for cell in row), image])
    height, width = model.config.image_size
    donors = {role: str(images[role]) for role in ("person", "clothes", "face", "pose")}
    job.finish(args, {"image_size": [height, width], "donors": donors, "speed": asdict(speed)},
               grid_name="preview/grid.png", cell=(max(width, 88), max(height, 128)))
    print(f"wrote {len(job.written)} images to {args.out} ({job.kept} existing kept; "
          f"overview: {args.out / 'preview' / 'grid.png'})")
    return 0


def _image(path: Path, size_hw: tuple[int, int]):
    from atelier.data.transforms import load_image_tensor

    return load_image_tensor(path, size_hw)

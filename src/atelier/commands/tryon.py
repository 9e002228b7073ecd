"""`atelier try-on` and `atelier design`: a person wearing a garment, or a garment designed from a sketch and a prompt.

Both read a model trained by `atelier train` (task `tryon` or `garment-design`) and either one person or a whole
VITON-HD-layout folder (VITON-HD itself, FashionSynth's `synth --tryon` output, or `atelier prepare-tryon`'s output for
your own photos). A person needs its masked image, mask and DensePose image: found beside it in a VITON-HD layout
(`<split>/image/X.jpg` -> `<split>/agnostic-v3.2/X.jpg`, `agnostic-mask/X_mask.png`, `image-densepose/X.jpg`), or
given with --agnostic, --mask and --densepose.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict
from pathlib import Path

from atelier.commands._folder_job import FolderJob, add_job_arguments, plan, require_positive
from atelier.commands.generate import add_scheduler_argument, add_speed_arguments, check_numbers, speed_from_args

logger = logging.getLogger(__name__)

COMMON_EPILOG = """
Outputs are named <person>.png (what `atelier evaluate --protocol vitonhd` matches against test/image); existing ones
are kept unless --overwrite. Also written: OUT/preview/grid.png (masked person / {control} / output / person) and
OUT/settings.json. --seed N: pair i of the --test-set's pair list uses N+i (a single pair uses N), so an output does
not depend on --batch-size, --limit or resuming.
Your own photos: `atelier prepare-tryon --images DIR --out DATA` writes the masked person, mask and DensePose-style
image a person needs (from a parse map or a human-parsing ONNX model, and OpenPose keypoints)."""

TRYON_EPILOG = """examples:
  atelier try-on --checkpoint runs/tryon --person data/tryon/test/image/00006_00.jpg --garment shirt.jpg --out out/tryon
  atelier try-on --checkpoint runs/tryon --test-set data/tryon --setting unpaired --out out/tryon-unpaired
  atelier try-on --checkpoint runs/tryon --person me.jpg --agnostic me_agnostic.jpg --mask me_mask.png \\
      --densepose me_densepose.jpg --garment shirt.jpg --out out/me""" + COMMON_EPILOG.format(control="garment")

DESIGN_EPILOG = """examples:
  atelier design --checkpoint runs/design --person data/tryon/test/image/00006_00.jpg --sketch s.png \\
      --prompt "red t-shirt, short sleeves, white stripes" --out out/design
  atelier design --checkpoint runs/design --test-set data/tryon --setting unpaired --out out/design-unpaired
With --test-set the prompt of each pair is its garment's caption in captions.json (MGD's noun phrases joined by ", ")
and the sketch is im_sketch/ (paired) or im_sketch_unpaired/ (unpaired).""" + COMMON_EPILOG.format(control="sketch")


def _add_common(parser: argparse.ArgumentParser, guidance: float, guidance_why: str) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="RUN", help="a tryon / garment-design training run (or RUN/final)")
    parser.add_argument("--person", metavar="IMG", help="the person photo")
    parser.add_argument("--agnostic", metavar="IMG", help="the person with the garment region masked (default: found in the VITON-HD layout)")
    parser.add_argument("--mask", metavar="IMG", help="the region to draw, white (default: found in the VITON-HD layout)")
    parser.add_argument("--densepose", metavar="IMG", help="the person's DensePose image (default: found in the VITON-HD layout)")
    parser.add_argument("--test-set", metavar="DIR", help="a VITON-HD-layout folder: draw every pair of --split")
    parser.add_argument("--split", default="test", choices=["test", "train"], help="split of --test-set (default test)")
    parser.add_argument("--setting", default="paired", choices=["paired", "unpaired"],
                        help="paired: each person with their own garment (ground truth known); unpaired: the pairs file's (default paired)")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N pairs of --test-set")
    parser.add_argument("--steps", type=int, default=50, metavar="N", help="sampling steps (default 50, as StableVITON)")
    add_scheduler_argument(parser, default="ddim")
    parser.add_argument("--guidance-scale", type=float, default=guidance, metavar="S", help=f"classifier-free guidance over the text (default {guidance:g}{guidance_why})")
    parser.add_argument("--garment-guidance", type=float, metavar="G",
                        help="guidance over the control image: the network with and without it, eps = without + G (with "
                             "- without); 1 = off (default: the run's sample.garment_guidance, else 1)")
    parser.add_argument("--keep-unmasked", action=argparse.BooleanOptionalAction, default=True,
                        help="keep the person outside the mask at every step (blended latents; default on); "
                             "--no-keep-unmasked lets the network draw every pixel, as StableVITON samples")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="random seed: pair i uses N+i (default 0)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    add_job_arguments(parser, batch_size=8, unit="pairs")
    add_speed_arguments(parser, compile_default="on with --test-set on CUDA, otherwise off")


def add_parser(subparsers) -> None:
    tryon = subparsers.add_parser("try-on", help="virtual try-on: a person wearing a garment (StableVITON-style model)",
                                  epilog=TRYON_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(tryon, 1.0, ": try-on's prompt is empty, so guidance changes nothing")
    tryon.add_argument("--garment", metavar="IMG", help="the garment photo (alone, on white)")
    tryon.set_defaults(func=run, mode="tryon", prompt=None)  # one pair reads args.prompt (try-on: the empty prompt)
    design = subparsers.add_parser("design", help="garment design: a garment drawn on a person from a sketch and a prompt",
                                   epilog=DESIGN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(design, 2.0, "")
    design.add_argument("--sketch", metavar="IMG", help="the garment sketch (black lines on white)")
    design.add_argument("--prompt", metavar="TEXT", help="what the garment is: colour, kind, pattern")
    design.set_defaults(func=run, mode="design")


def _control_flag(args: argparse.Namespace) -> str:
    return "--garment" if args.mode == "tryon" else "--sketch"


def _check_arguments(args: argparse.Namespace) -> None:
    from atelier.errors import UserError

    control = args.garment if args.mode == "tryon" else args.sketch
    single = [args.person, control] + ([args.prompt] if args.mode == "design" else [])
    if bool(args.test_set) == any(single):
        raise UserError(f"pass either --person IMG {_control_flag(args)} IMG{' --prompt TEXT' if args.mode == 'design' else ''}, "
                        "or --test-set DIR (not both, not neither)")
    if not args.test_set and not all(single):
        missing = [flag for flag, value in zip(("--person", _control_flag(args), "--prompt"), single) if not value]
        raise UserError(f"{', '.join(missing)} missing: a single pair needs --person IMG {_control_flag(args)} IMG"
                        f"{' --prompt TEXT' if args.mode == 'design' else ''}")
    require_positive({"--batch-size": args.batch_size, "--steps": args.steps, "--limit": args.limit})
    check_numbers(args, ["guidance_scale", "garment_guidance"])


def _check_mode(args: argparse.Namespace):
    """The checkpoint's config (before the weights load); UserError when it was trained for the other command."""
    from atelier.errors import UserError
    from atelier.methods.tryon.model import read_model_config

    config = read_model_config(args.checkpoint)
    if config.mode != args.mode:
        other = {"tryon": "try-on", "design": "design"}[config.mode]
        raise UserError(f"--checkpoint {args.checkpoint} was trained for {config.mode} (task "
                        f"{'tryon' if config.mode == 'tryon' else 'garment-design'}): use `atelier {other}` with it")
    return config


def person_files(args: argparse.Namespace) -> dict[str, Path]:
    """The person's masked image, mask and DensePose image: the flags, else the VITON-HD layout around --person."""
    from atelier.errors import UserError

    person = Path(args.person)
    found = {"agnostic": person.parent.parent / "agnostic-v3.2" / person.name,
             "mask": person.parent.parent / "agnostic-mask" / f"{person.stem}_mask.png",
             "densepose": person.parent.parent / "image-densepose" / person.name}
    files = {}
    for key, default in found.items():
        given = getattr(args, key)
        path = Path(given) if given else default
        if not path.is_file():
            flag = f"--{key}"
            raise UserError(f"{flag} {path}: not found; the person needs its {key} image: pass {flag} IMG, or keep the "
                            "person in a VITON-HD layout (run `atelier prepare-tryon --images DIR --out DATA` on your photos)")
        files[key] = path
    return files


def _plan_single(args: argparse.Namespace, started: float):
    from atelier.data.transforms import open_rgb
    from atelier.methods.tryon.data import user_item

    config = _check_mode(args)
    files = person_files(args)
    control = args.garment if args.mode == "tryon" else args.sketch
    open_rgb(control)
    item = user_item(args.person, control, tuple(config.image_size), files["agnostic"], files["mask"], files["densepose"],
                     args.prompt or "")
    job = plan([(Path(args.person), args.out / item.name)], args.out, args.seed, args.overwrite, started)
    return job, [item]


def _plan_test_set(args: argparse.Namespace, started: float):
    from atelier.data.formats.vitonhd import load_vitonhd
    from atelier.methods.tryon.data import TryOnExamples

    config = _check_mode(args)
    split = load_vitonhd(args.test_set, args.split)
    examples = TryOnExamples(split, tuple(config.image_size), config.mode, args.setting, args.limit)
    missing = split.check()
    needed = {"agnostic-v3.2", "agnostic-mask", "image-densepose", "cloth" if args.mode == "tryon" else
              ("im_sketch" if args.setting == "paired" else "im_sketch_unpaired")}
    for folder, path in missing.items():
        if folder in needed:
            from atelier.errors import UserError

            raise UserError(f"--test-set {args.test_set}: {path} is missing ({folder}/); every pair needs it")
    job = plan([(f"pair {pair.person} {pair.garment}", args.out / examples.output_name(i)) for i, pair in enumerate(examples.pairs)],
               args.out, args.seed, args.overwrite, started)
    return job, examples


def _draw(args: argparse.Namespace, model, job: FolderJob, items) -> None:
    """Draw the pairs whose output does not exist yet, batch by batch; pair i uses seed --seed + i."""
    from atelier.methods.tryon.data import stack
    from atelier.methods.tryon.sample import generate
    from atelier.utils.images import tensor_to_pil

    for tasks in job.batches(args.batch_size, desc=args.mode):
        chosen = [items[task.index] for task in tasks]
        batch = stack(chosen)
        images = generate(model, batch["agnostic"], batch["mask"], batch["densepose"], batch["control"],
                          [item.caption for item in chosen], steps=args.steps, scheduler=args.scheduler,
                          guidance_scale=args.guidance_scale, seed=[task.seed for task in tasks], show_progress=False,
                          garment_guidance=args.garment_guidance, keep_unmasked=args.keep_unmasked)
        for task, item, image in zip(tasks, chosen, images):
            job.save(task, image, [tensor_to_pil(item.agnostic), tensor_to_pil(item.control), image, tensor_to_pil(item.person)])


def run(args: argparse.Namespace) -> int:
    from atelier.methods.tryon.model import load_tryon_model, trained_garment_guidance
    from atelier.utils.kept import kept

    _check_arguments(args)
    started = time.time()
    job, items = (_plan_test_set if args.test_set else _plan_single)(args, started)
    speed = speed_from_args(args, many=bool(args.test_set))
    model = kept(load_tryon_model, args.checkpoint, speed=speed)
    if args.garment_guidance is None:
        args.garment_guidance = trained_garment_guidance(args.checkpoint)
    _draw(args, model, job, items)
    height, width = model.config.image_size
    job.finish(args, {"image_size": [height, width], "speed": asdict(speed)}, grid_name="preview/grid.png",
               cell=(max(width, 88), max(height, 128)))
    print(f"wrote {len(job.written)} images to {args.out} ({job.kept} existing kept; overview: {args.out / 'preview' / 'grid.png'})")
    if args.test_set and args.mode == "tryon":
        print(f"score them: atelier evaluate --protocol vitonhd --setting {args.setting} --generated {args.out} "
              f"--ground-truth {Path(args.test_set) / args.split / 'image'}")
    return 0

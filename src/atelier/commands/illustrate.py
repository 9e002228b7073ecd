"""`atelier illustrate`: real-to-illustration translation with a Uni-DlLoRA checkpoint (adapters + dual LoRA)."""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict
from pathlib import Path

from atelier.commands._folder_job import SEED_HELP, add_job_arguments, has_folder, image_pairs, plan, require_positive
from atelier.commands.generate import (
    add_scheduler_argument,
    add_speed_arguments,
    check_numbers,
    size_hw,
    speed_from_args,
)

logger = logging.getLogger(__name__)

EPILOG = """examples:
  atelier illustrate photos/ --checkpoint runs/dual-lora/final --out out/illustrated --size 48x64
  atelier illustrate photo.jpg --checkpoint /models/uni-dllora --model /models/stable-diffusion-v1-5 --out out/ill
  atelier illustrate photos/ --checkpoint runs/dual-lora/final --out out/mix --lora-weights real=0.3,illustration=1 \\
      --adapter-weights rgb=0.7,sketch=0.3 --adapter-scale 1.2 --strength 0.6
CHECKPOINT is a dual-lora training run's final/ (lora/real, lora/illustration, adapter/, adapter_1/, sketch.json,
config.yaml naming the base) or the released Uni-DlLoRA folder (adapter/, adapter_1/, custom_duallora/duallora.bin,
pidnet/), whose dual LoRA is converted on load (pass --model with SD 1.5). Defaults are the paper's: DDPM, 50 steps,
strength 0.7, guidance 5, empty prompt (guidance has no effect while prompt and negative prompt are equal).
INPUT is any mix of image files and folders (outputs mirror the folder layout as .png); unreadable images are
skipped and listed; existing outputs are kept unless --overwrite. Writes OUT/grid.png and OUT/settings.json.
Image i of the inputs uses seed --seed + i: outputs do not depend on --batch-size or on resuming."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("illustrate", help="photo -> illustration with a Uni-DlLoRA checkpoint (adapters + dual LoRA)",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders")
    parser.add_argument("--checkpoint", required=True, type=Path, metavar="DIR", help="dual-lora run's final/ or the released checkpoint folder")
    parser.add_argument("--model", metavar="BASE", help="base model (default: model.base of CHECKPOINT/config.yaml)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--lora-weights", default="real=0,illustration=1", metavar="W", help="domain LoRA weights (default real=0,illustration=1)")
    parser.add_argument("--adapter-scale", type=float, default=1.0, metavar="S", help="Uni-adapter conditioning scale (default 1.0)")
    parser.add_argument("--adapter-weights", default="rgb=0.5,sketch=0.5", metavar="W", help="shares of the scale per adapter (default even)")
    parser.add_argument("--sketch", metavar="xdog|PATH", help="override the checkpoint's sketch extractor: xdog, or PiDiNet weights")
    parser.add_argument("--strength", type=float, default=0.7, metavar="S", help="share of the schedule re-noised (default 0.7)")
    parser.add_argument("--steps", type=int, default=50, metavar="N", help="scheduler steps; strength x N of them run (default 50)")
    parser.add_argument("--guidance-scale", type=float, default=5.0, metavar="S", help="classifier-free guidance (default 5)")
    parser.add_argument("--prompt", default="", metavar="TEXT", help="prompt (default empty, as in the paper)")
    parser.add_argument("--negative-prompt", default="", metavar="TEXT", help="negative prompt (default empty)")
    add_scheduler_argument(parser, default="ddpm")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help=SEED_HELP)
    parser.add_argument("--size", metavar="WxH", help="output size (default: the model's native size, 512x512 for SD 1.5)")
    add_job_arguments(parser, batch_size=4)
    add_speed_arguments(parser, compile_default="on for folder INPUTs on CUDA, otherwise off")
    parser.set_defaults(func=run)


def _sketch_override(text: str | None):
    from atelier.methods.unidllora.sketch import SketchSettings

    if text is None:
        return None
    return SketchSettings() if text == "xdog" else SketchSettings(extractor="pidinet", pidinet_weights=text)


def run(args: argparse.Namespace) -> int:
    from atelier.diffusion.sampling import check_range
    from atelier.methods.unidllora.dual_lora import parse_weights
    from atelier.methods.unidllora.model import load_illustrator
    from atelier.methods.unidllora.sample import illustrate
    from atelier.methods.unidllora.uni_adapter import BRANCHES
    from atelier.utils.kept import kept

    require_positive({"--batch-size": args.batch_size, "--steps": args.steps})
    check_numbers(args, ["guidance_scale", "adapter_scale"], shares=["strength"])
    lora_weights = parse_weights(args.lora_weights)
    adapter_weights = list(parse_weights(args.adapter_weights, "--adapter-weights", BRANCHES).values())
    check_range({f"--lora-weights {name}": weight for name, weight in lora_weights.items()})
    check_range({f"--adapter-weights {name}": share for name, share in zip(BRANCHES, adapter_weights)})
    job = plan(image_pairs(args.inputs, args.out), args.out, args.seed, args.overwrite)
    job.refuse_unreadable()
    logger.info("illustrate: %d images (%d kept from earlier runs)", len(job.todo), job.kept)
    speed = speed_from_args(args, many=has_folder(args.inputs))
    if job.todo:
        model = kept(load_illustrator, args.checkpoint, args.model, lora_weights, _sketch_override(args.sketch), speed=speed)

        def convert(images, seeds):
            return illustrate(model, images, prompt=args.prompt, negative_prompt=args.negative_prompt, strength=args.strength,
                              steps=args.steps, guidance_scale=args.guidance_scale, adapter_scale=args.adapter_scale,
                              adapter_weights=adapter_weights, seed=seeds, scheduler=args.scheduler, show_progress=False).images

        job.convert_images(size_hw(model.components, args.size), args.batch_size, convert)
    job.finish(args, {"lora_weights_used": lora_weights, "adapter_weights_used": adapter_weights, "speed": asdict(speed)})
    job.report("illustrated")
    return 0

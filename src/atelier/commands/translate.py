"""`atelier translate`: style transfer of images or folders with a base model, a style LoRA and an image adapter."""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, replace
from pathlib import Path

from atelier.commands._folder_job import SEED_HELP, add_job_arguments, has_folder, image_pairs, plan, require_positive
from atelier.commands.generate import add_model_arguments, add_speed_arguments, check_numbers, size_hw, speed_from_args
from atelier.errors import UserError

logger = logging.getLogger(__name__)

EPILOG = """examples:
  atelier translate --model runs/demo/base/unet/final --lora runs/style/final photo.jpg --out out/styled --size 48x64
  atelier translate --model /models/stable-diffusion-v1-5 --lora monet-lora/ --image-adapter /models/IP-Adapter/models \\
      photos/ --out out/monet --prompt "A Monet painting, " --strength 0.5 --image-cond-scale 0.3 --steps 100
  atelier translate --model runs/demo/base/unet/final --lora runs/style/final photos/ --out out/inverted --size 48x64 \\
      --inversion --strength 0.5 --restore-detail     # keeps layout and fine detail (measured in the demo's style stage)
INPUT is any mix of image files and folders (searched recursively; outputs mirror the folder layout as .png).
Unreadable images are skipped and listed at the end; outputs that exist are kept unless --overwrite.
Image i of the inputs (in the order above) uses seed --seed + i, so each output is the same whatever --batch-size,
and a resumed run writes what an uninterrupted one would have.
Writes the images, OUT/grid.png (inputs beside translations) and OUT/settings.json (every option and the skip list).
--prompt defaults to the LoRA's identifier when LORA holds the config.yaml of an atelier style-lora run."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("translate", help="style transfer of images/folders (SDEdit + style LoRA + image adapter)",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders")
    add_model_arguments(parser, seed_help=SEED_HELP)
    parser.add_argument("--image-adapter", metavar="DIR", help="image adapter: folder with image_encoder/ and ip-adapter*.safetensors|.bin")
    parser.add_argument("--strength", type=float, default=0.5, metavar="S", help="share of the schedule re-noised, in [0, 1] (default 0.5)")
    parser.add_argument("--image-cond-scale", type=float, default=0.3, metavar="S", help="image adapter weight (default 0.3)")
    parser.add_argument("--inversion", action="store_true",
                        help="start from the DDIM inversion of the input by the base model (LoRA off) instead of random "
                             "noise: without the LoRA it returns the input, so only the style changes (needs --scheduler ddim)")
    parser.add_argument("--source-prompt", default="", metavar="TEXT", help="prompt of the inversion (default empty)")
    parser.add_argument("--restore-detail", action="store_true",
                        help="add back what the VAE loses of the input (input - its VAE round trip): keeps prints and edges")
    parser.add_argument("--steps", type=int, default=100, metavar="N", help="scheduler steps; strength x N of them run (default 100)")
    add_job_arguments(parser, batch_size=4)
    add_speed_arguments(parser, compile_default="on for folder INPUTs on CUDA, otherwise off")
    parser.set_defaults(func=run)


def default_prompt(lora: str | None) -> str:
    """The identifier of an atelier style-lora run (LORA/config.yaml's data.caption_prefix), else the empty prompt."""
    from atelier.config import from_dict, read_yaml
    from atelier.methods.style.train import StyleLoraConfig

    path = Path(lora) / "config.yaml" if lora else None
    if path is None or not path.is_file():
        return ""
    try:
        data = read_yaml(path)
        if data.get("task") != "style-lora":
            return ""
        return from_dict(StyleLoraConfig, data).data.caption_prefix
    except UserError as error:
        raise UserError(f"--lora {lora}: its run config could not be read for the default prompt ({error}); "
                        "pass --prompt to give the prompt yourself") from None


def run(args: argparse.Namespace) -> int:
    from atelier.diffusion.img2img import translate
    from atelier.methods.style.model import load_style_model
    from atelier.utils.kept import kept

    require_positive({"--batch-size": args.batch_size, "--steps": args.steps})
    check_numbers(args, ["guidance_scale", "lora_scale", "image_cond_scale"], shares=["strength"])
    job = plan(image_pairs(args.inputs, args.out), args.out, args.seed, args.overwrite)
    job.refuse_unreadable()
    prompt = args.prompt if args.prompt is not None else default_prompt(args.lora)
    logger.info("translate: %d images (%d kept from earlier runs), prompt %r", len(job.todo), job.kept, prompt)
    speed = speed_from_args(args, many=has_folder(args.inputs))
    if args.inversion:
        speed = replace(speed, fuse_lora=False)  # the inversion runs the base model: the LoRA must stay switchable
    if job.todo:
        components, adapter = kept(load_style_model, args.model, args.lora, args.lora_scale, args.image_adapter, speed=speed)

        def convert(images, seeds):
            return translate(components, images, [prompt] * len(images), strength=args.strength, steps=args.steps,
                             guidance_scale=args.guidance_scale, negative_prompt=args.negative_prompt, image_adapter=adapter,
                             image_cond_scale=args.image_cond_scale, seed=seeds, scheduler=args.scheduler,
                             inversion=args.inversion, source_prompt=args.source_prompt, restore_detail=args.restore_detail,
                             show_progress=False).images

        job.convert_images(size_hw(components, args.size), args.batch_size, convert)
    job.finish(args, {"prompt_used": prompt, "speed": asdict(speed)})
    job.report("translated")
    return 0

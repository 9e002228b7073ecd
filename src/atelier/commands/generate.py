"""`atelier generate`: text-to-image with a base model and an optional style LoRA (diffusers or PEFT format)."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

if TYPE_CHECKING:
    from atelier.diffusion.speed import SpeedConfig

EPILOG = """examples:
  atelier generate --model runs/demo/base/unet/final --lora runs/style/final --prompt "an illustration, a woman wearing a red dress" --out out/gen
  atelier generate --model /models/stable-diffusion-v1-5 --lora monet-lora/ --prompt "A Monet painting, a harbour" --num-images 4 --size 512x512 --out out/monet
writes OUT/<index>.png, OUT/grid.png and OUT/settings.json (every option, the model, LoRA and versions).
Image i uses seed --seed + i, whatever --num-images."""


def add_model_arguments(parser: argparse.ArgumentParser, seed_help: str) -> None:
    """Options shared by generate and translate: model, LoRA, sampling and output; `seed_help` says which image gets
    which seed (the commands number their images differently)."""
    parser.add_argument("--model", required=True, metavar="BASE", help="base model: diffusers folder, .safetensors file, hub id or `tiny`")
    parser.add_argument("--lora", metavar="LORA", help="style LoRA: folder with pytorch_lora_weights.safetensors, the file, or a PEFT adapter folder")
    parser.add_argument("--lora-scale", type=float, default=1.0, metavar="S", help="LoRA strength (default 1.0)")
    parser.add_argument("--prompt", metavar="TEXT", help="prompt (include the LoRA's identifier, e.g. 'A Monet painting, ')")
    parser.add_argument("--negative-prompt", default="", metavar="TEXT", help="negative prompt (default empty)")
    parser.add_argument("--guidance-scale", type=float, default=7.5, metavar="S", help="classifier-free guidance (default 7.5)")
    add_scheduler_argument(parser, default="ddim")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help=seed_help)
    parser.add_argument("--size", metavar="WxH", help="output size in pixels (default: the model's native size, e.g. 512x512)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")


class _Schedulers:
    """The --scheduler choices: atelier.diffusion.sampling.SCHEDULERS, looked up only when argparse checks a value or
    prints help, because that module imports torch and building the parser (`atelier --help`) must not wait for it."""

    def _names(self) -> tuple[str, ...]:
        from atelier.diffusion.sampling import SCHEDULERS

        return SCHEDULERS

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


def add_scheduler_argument(parser: argparse.ArgumentParser, default: str, why: str = "") -> None:
    """--scheduler with the sampler names of atelier.diffusion.sampling as its choices; `why` follows the default."""
    # an explicit metavar keeps argparse from listing the choices (and importing torch) while the parser is built
    parser.add_argument("--scheduler", default=default, choices=_Schedulers(), metavar="NAME",
                        help=f"sampler: %(choices)s (default {default}{why})")


def add_speed_arguments(parser: argparse.ArgumentParser, compile_default: str) -> None:
    """Options of the inference speed features (atelier.diffusion.speed); `compile_default` says when --compile is on."""
    group = parser.add_argument_group("speed")
    group.add_argument("--dtype", choices=["auto", "fp32", "bf16", "fp16"], help="weight precision (default auto: bf16 on CUDA, fp32 on CPU)")
    group.add_argument("--compile", action=argparse.BooleanOptionalAction,
                       help=f"torch.compile the UNet (default {compile_default}; runs eagerly with a warning where no compiler works)")
    group.add_argument("--vae-tiling", choices=["auto", "on", "off"], help="VAE in tiles (default auto: only images above 1024 px on a side)")
    group.add_argument("--plain", action="store_true", help="the reference path: fp32 and every speed feature off (slow; for checking)")


def speed_from_args(args: argparse.Namespace, many: bool) -> SpeedConfig:
    """The SpeedConfig the speed flags ask for. --compile defaults to on for `many` (a folder or test-set run) on CUDA;
    on CPU it stays off unless asked for: compiling even the tiny UNet takes minutes there and never pays back."""
    import torch

    from atelier.diffusion.speed import SpeedConfig
    from atelier.errors import UserError

    if args.plain:
        clashes = [flag for flag, clash in (("--dtype", args.dtype not in (None, "fp32")), ("--compile", args.compile is True),
                                            ("--vae-tiling", args.vae_tiling == "on")) if clash]
        if clashes:
            raise UserError(f"--plain runs the reference path (fp32, every speed feature off); drop {' and '.join(clashes)} "
                            "or drop --plain")
        return SpeedConfig.plain()
    tiling = {None: None, "auto": None, "on": True, "off": False}[args.vae_tiling]
    compile_default = many and torch.cuda.is_available()
    return SpeedConfig(dtype=args.dtype or "auto", compile=compile_default if args.compile is None else args.compile,
                       vae_tiling=tiling)


def size_hw(components, text: str | None, flag: str = "--size") -> tuple[int, int]:
    """(H, W) from a WxH flag, checked against the VAE's downsampling; default: the UNet's native size."""
    from atelier.data.transforms import parse_size
    from atelier.errors import UserError

    scale = components.latent_scale
    if text is None:
        native = components.unet.config.sample_size * scale
        return native, native
    width, height = parse_size(text, flag)
    if width % scale or height % scale:
        raise UserError(f"{flag} {text}: width and height must be multiples of {scale} (the VAE's downsampling)")
    return height, width


def check_numbers(args: argparse.Namespace, scales: Sequence[str], shares: Sequence[str] = ()) -> None:
    """Before any work: each of `scales` (argument names, e.g. "guidance_scale") finite and >= 0, each of `shares` in
    [0, 1], --size (when given) within its bounds; the errors name the flag."""
    from atelier.data.transforms import parse_size
    from atelier.diffusion.sampling import check_range

    def flags(names: Sequence[str]) -> dict[str, float]:
        return {"--" + name.replace("_", "-"): getattr(args, name) for name in names}

    check_range(flags(scales))
    check_range(flags(shares), 0.0, 1.0)
    if getattr(args, "size", None):
        parse_size(args.size, "--size")


def write_settings(args: argparse.Namespace, out: Path, extra: dict) -> None:
    """OUT/settings.json: every option of the command plus what it produced and the versions used."""
    import diffusers
    import torch

    from atelier import __version__
    from atelier.utils.io import write_json

    options = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items() if key != "func"}
    write_json(out / "settings.json", {"command": args.command, "options": options, **extra,
                                       "versions": {"atelier": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__}})


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("generate", help="text-to-image with a base model and a style LoRA",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, seed_help="random seed: image i of --num-images uses N+i (default 0)")
    parser.add_argument("--num-images", type=int, default=1, metavar="N", help="images per prompt (default 1)")
    parser.add_argument("--steps", type=int, default=30, metavar="N", help="sampling steps (default 30)")
    parser.add_argument("--overwrite", action="store_true", help="replace the images of an earlier run in OUT")
    add_speed_arguments(parser, compile_default="off: one batch does not repay the compile time")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from atelier.commands._folder_job import OUTPUT_MARKER, claim_out, require_positive
    from atelier.diffusion.sampling import check_seeds
    from atelier.diffusion.text2img import generate
    from atelier.errors import UserError
    from atelier.methods.style.model import load_style_model
    from atelier.utils.images import make_grid
    from atelier.utils.io import save_image
    from atelier.utils.kept import kept

    if not args.prompt:
        raise UserError("--prompt is required: the text to draw (include the LoRA's identifier, e.g. 'A Monet painting, ')")
    require_positive({"--num-images": args.num_images, "--steps": args.steps})
    check_numbers(args, ["guidance_scale", "lora_scale"])
    check_seeds(args.seed, args.num_images)
    claim_out(args.out, args.overwrite)
    out_dir = args.out
    if not args.overwrite and any(path.name != OUTPUT_MARKER for path in out_dir.iterdir()):
        raise UserError(f"--out {out_dir} holds an earlier run's images; pass --overwrite to replace them, or choose "
                        "another folder")
    started = time.time()
    speed = speed_from_args(args, many=False)
    components, _ = kept(load_style_model, args.model, args.lora, args.lora_scale, speed=speed)
    out = generate(components, [args.prompt] * args.num_images, size_hw=size_hw(components, args.size), steps=args.steps,
                   guidance_scale=args.guidance_scale, negative_prompt=args.negative_prompt, seed=args.seed,
                   scheduler=args.scheduler)
    paths = [out_dir / f"{index:04d}.png" for index in range(args.num_images)]
    for path, image in zip(paths, out.images):
        save_image(image, path)
    save_image(make_grid([out.images]), out_dir / "grid.png")
    write_settings(args, out_dir, {"outputs": [p.name for p in paths], "speed": asdict(speed),
                                   "seconds": round(time.time() - started, 2)})
    print(f"wrote {len(paths)} images, grid.png and settings.json to {out_dir}")
    return 0

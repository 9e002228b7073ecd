"""`atelier pose-transfer`: redraw a person in another pose with a CFLD model (the default) or an MCLD model
(`--method mcld`), one image or a whole test split."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from atelier.commands._folder_job import FolderJob, add_job_arguments, plan, require_positive
from atelier.commands.generate import add_scheduler_argument, add_speed_arguments, check_numbers, speed_from_args

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

EPILOG = """examples:
  atelier pose-transfer --checkpoint runs/pose --source a.jpg --target-pose b.json --out out/pose
  atelier pose-transfer --checkpoint runs/pose --source data/deepfashion/test_highres/A.jpg \\
      --target-pose data/deepfashion/test_highres/B.jpg --out out/pose          # B's keypoints from the folder's CSVs
  atelier pose-transfer --checkpoint runs/pose --source a.jpg --target-pose 'B.jpg:[40, 58, ...]:[88, 88, ...]' --out out/pose
  atelier pose-transfer --checkpoint runs/pose --test-set data/deepfashion --out out/test --batch-size 16
  atelier pose-transfer --checkpoint CFLD/checkpoints --base /models/stable-diffusion-v1-5 --test-set fashion --out out/cfld
POSE is a keypoint JSON ({"keypoints_y": [...], "keypoints_x": [...]} or 18 [y, x] pairs, -1 = missing), an annotation
row name:[ys]:[xs], or an image whose annotation is in --annotations CSV or in the CSVs of the folder above it.
Keypoints are in the dataset's frame (256x176 DeepFashion, 128x64 Market-1501). Outputs are named
<source>_2_<target>.png (what `atelier evaluate --protocol cfld --pairs CSV` matches); existing ones are kept unless
--overwrite. Also written: OUT/preview/grid.png (source / target pose / output [/ ground truth]; in a subfolder so
OUT holds only outputs) and OUT/settings.json.
--seed N: pair i of the test split's pair list uses N+i (the --source pair uses N), so an output does not depend on
--batch-size, on --limit or on resuming.
--checkpoint: a `pose` training run (RUN or RUN/final) or CFLD's release folder (pytorch_model.bin +
pytorch_model_1.bin, with --base = a Stable Diffusion 1.5 folder).
--method mcld: --checkpoint is an `mcld` training run; the target's pose is its DensePose IUV and the source's
appearance its UV texture (and face embedding), read beside the images in MCLD's layout (<split>_densepose/<name>.png,
<split>_texture/<name>.png, <split>_face/<name>.npy: `atelier prepare-conditions`, or `atelier synth --conditions`);
--target-pose is then the target IMAGE of such a folder. MCLD samples with DDIM (--scheduler, --pose-scale and
--full-scale are CFLD's), 20 steps and --guidance-scale 3.5 by default, as the paper.
  atelier pose-transfer --method mcld --checkpoint runs/mcld --test-set data/deepfashion --out out/mcld"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("pose-transfer", help="pose-guided person image synthesis with a CFLD or MCLD model",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=["cfld", "mcld"], default="cfld", help="the model's method (default cfld)")
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="pose training run, or CFLD's release folder")
    parser.add_argument("--base", metavar="SD", help="Stable Diffusion 1.5 folder (only with CFLD's release checkpoint)")
    parser.add_argument("--source", metavar="IMG", help="the person to redraw")
    parser.add_argument("--target-pose", metavar="POSE", help="keypoint JSON, annotation row, or an annotated image")
    parser.add_argument("--annotations", metavar="CSV", help="annotation CSV to look --target-pose images up in")
    parser.add_argument("--test-set", metavar="DIR", help="DeepFashion/Market-1501 folder: transfer every pair of a split")
    parser.add_argument("--split", default="test", choices=["test", "train"], help="split of --test-set (default test)")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N pairs of --test-set")
    parser.add_argument("--steps", type=int, metavar="N", help="sampling steps (default 50 for CFLD, 20 for MCLD, as the papers)")
    parser.add_argument("--guidance-scale", type=float, default=3.5, metavar="S", help="MCLD's classifier-free guidance (default 3.5)")
    add_scheduler_argument(parser, default="ddpm", why=", as CFLD")
    parser.add_argument("--pose-scale", type=float, default=2.0, metavar="S", help="guidance of the pose branch over unconditional (default 2)")
    parser.add_argument("--full-scale", type=float, default=2.0, metavar="S", help="guidance of the full branch over the pose branch (default 2)")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="random seed: pair i of --test-set's pair list uses N+i; --source uses N (default 0)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    add_job_arguments(parser, batch_size=8, unit="pairs")
    add_speed_arguments(parser, compile_default="on with --test-set on CUDA, otherwise off")
    parser.set_defaults(func=run)


def _check_arguments(args: argparse.Namespace) -> None:
    from atelier.errors import UserError

    if bool(args.test_set) == bool(args.source or args.target_pose):
        raise UserError("pass either --source IMG --target-pose POSE, or --test-set DIR (not both, not neither)")
    if not args.test_set and not (args.source and args.target_pose):
        raise UserError("--source and --target-pose go together: the person to redraw and the pose to draw them in")
    require_positive({"--batch-size": args.batch_size, "--steps": args.steps, "--limit": args.limit})
    check_numbers(args, ["pose_scale", "full_scale", "guidance_scale"])
    if args.method == "mcld" and args.base:
        raise UserError("--base is for CFLD's released checkpoint; an MCLD run folder holds its whole model")
    if args.steps is None:
        args.steps = 20 if args.method == "mcld" else 50


def _plan_single(args: argparse.Namespace, started: float) -> tuple[FolderJob, np.ndarray]:
    """The job of redrawing --source in --target-pose, and the pose's keypoints (checked against the model's keypoint
    frame, read from its config): read before the model loads, so a bad pose or source costs no load."""
    from atelier.data.pairs import read_target_pose
    from atelier.data.transforms import open_rgb
    from atelier.methods.cfld.model import keypoint_frame
    from atelier.methods.cfld.sample import output_name

    name, keypoints = read_target_pose(args.target_pose, args.annotations, keypoint_frame(args.checkpoint))
    open_rgb(args.source)  # missing or unreadable: refused now, naming the file
    job = plan([(Path(args.source), args.out / output_name(args.source, name))], args.out, args.seed, args.overwrite, started)
    return job, keypoints


def _draw_single(args: argparse.Namespace, model, job: FolderJob, keypoints: np.ndarray) -> None:
    """Redraw --source in --target-pose (seed --seed), unless an earlier run did."""
    from atelier.data.pose import cfld_pose_map
    from atelier.data.transforms import load_image_tensor
    from atelier.methods.cfld.sample import transfer
    from atelier.utils.images import tensor_to_pil

    config = model.config
    for task in job.todo:
        appearance = load_image_tensor(task.source, config.appearance_size)
        pose = cfld_pose_map(keypoints, config.pose_size, config.frame)
        out = transfer(model, appearance[None], pose[None], steps=args.steps, scheduler=args.scheduler,
                       pose_scale=args.pose_scale, full_scale=args.full_scale, seed=task.seed)
        job.save(task, out.images[0], [tensor_to_pil(appearance), tensor_to_pil(pose[:3] * 2 - 1), out.images[0]])


def _plan_test_set(args: argparse.Namespace, started: float):
    """The job of every pair of the split (or the first --limit), and the split: read before the model loads."""
    from atelier.data.pairs import load_pairs
    from atelier.errors import UserError
    from atelier.methods.cfld.sample import output_name

    split = load_pairs(args.test_set, args.split)
    pairs = split.pairs[: args.limit] if args.limit else split.pairs
    if not pairs:
        raise UserError(f"{split.pairs_file}: the file lists no pairs")
    job = plan([(f"pair ({a}, {b})", args.out / output_name(a, b)) for a, b in pairs], args.out, args.seed,
               args.overwrite, started)
    return job, split


def _draw_test_set(args: argparse.Namespace, model, job: FolderJob, split) -> None:
    """Draw the pairs whose output does not exist yet; pair i uses seed --seed + i."""
    from atelier.data.pairs import PosePairs
    from atelier.methods.cfld.sample import transfer_pairs
    from atelier.utils.images import tensor_to_pil

    config = model.config
    pairs = PosePairs(split, config.image_size, config.appearance_size, config.pose_size, args.limit)
    logger.info("pose-transfer: %d pairs to draw (%d kept from earlier runs)", len(job.todo), job.kept)
    # transfer_pairs seeds pair i with --seed + i as the plan does, and batches job.todo as job.batches does
    drawn = transfer_pairs(model, pairs, [task.index for task in job.todo], args.batch_size, steps=args.steps,
                           scheduler=args.scheduler, pose_scale=args.pose_scale, full_scale=args.full_scale, seed=args.seed)
    for tasks, (items, images) in zip(job.batches(args.batch_size, desc="pose-transfer"), drawn):
        for task, item, image in zip(tasks, items, images):
            job.save(task, image, [tensor_to_pil(item.appearance), tensor_to_pil(item.target_pose[:3] * 2 - 1), image,
                                   tensor_to_pil(item.target)])
    real = split.image_dir.with_name(split.image_dir.name.replace(args.split, "train", 1))
    print(f"score them: atelier evaluate --protocol cfld --generated {args.out} --ground-truth {split.image_dir} "
          f"--pairs {split.pairs_file} --real {real}")


def _check_conditions(image_dir: Path, pairs: list[tuple[str, str]]) -> None:
    """Every pair's source texture and target IUV exist (MCLD's layout): else a UserError naming the first missing."""
    from atelier.errors import UserError
    from atelier.methods.mcld.data import MAKE_THEM, condition_paths

    for source, target in pairs:
        for path, what in ((condition_paths(image_dir / source)["texture"], "the UV texture map of the source"),
                           (condition_paths(image_dir / target)["densepose"], "the DensePose IUV image of the target")):
            if not path.is_file():
                raise UserError(f"{path}: {what} not found; {MAKE_THEM}")


def _plan_single_mcld(args: argparse.Namespace, started: float):
    """MCLD: --source and --target-pose are images of a DeepFashion-layout folder with MCLD's conditions beside."""
    from atelier.data.transforms import open_rgb
    from atelier.methods.mcld.model import read_model_config
    from atelier.methods.mcld.sample import output_name

    source, target = Path(args.source), Path(args.target_pose)
    open_rgb(source)  # missing or unreadable: refused now, naming the file
    if source.parent != target.parent:
        from atelier.errors import UserError

        raise UserError(f"--method mcld: --source {source} and --target-pose {target} must be images of one folder "
                        "(<split>_highres/ of a DeepFashion-layout root), whose conditions lie beside it")
    _check_conditions(source.parent, [(source.name, target.name)])
    read_model_config(args.checkpoint)  # not an MCLD run: refused before the load
    job = plan([(source, args.out / output_name(source, target))], args.out, args.seed, args.overwrite, started)
    return job, (source.parent, [(source.name, target.name)])


def _draw_single_mcld(args: argparse.Namespace, model, job: FolderJob, data) -> None:
    from atelier.methods.mcld.sample import transfer_pairs
    from atelier.utils.images import tensor_to_pil

    image_dir, pairs = data
    for task in job.todo:
        (item,), (image,) = next(transfer_pairs(model, image_dir, pairs, [0], 1, task.seed, steps=args.steps,
                                                guidance_scale=args.guidance_scale))
        job.save(task, image, [tensor_to_pil(item[0]), tensor_to_pil(item[2] * 2 - 1), image])


def _plan_test_set_mcld(args: argparse.Namespace, started: float):
    job, split = _plan_test_set(args, started)
    pairs = split.pairs[: args.limit] if args.limit else split.pairs
    _check_conditions(split.image_dir, pairs)
    from atelier.methods.mcld.model import read_model_config

    read_model_config(args.checkpoint)
    return job, split


def _draw_test_set_mcld(args: argparse.Namespace, model, job: FolderJob, split) -> None:
    """Draw the pairs whose output does not exist yet; pair i uses seed --seed + i."""
    from atelier.methods.mcld.sample import transfer_pairs
    from atelier.utils.images import tensor_to_pil

    pairs = split.pairs[: args.limit] if args.limit else split.pairs
    drawn = transfer_pairs(model, split.image_dir, pairs, [task.index for task in job.todo], args.batch_size,
                           seed=args.seed, steps=args.steps, guidance_scale=args.guidance_scale)
    for tasks, (items, images) in zip(job.batches(args.batch_size, desc="pose-transfer"), drawn):
        for task, item, image in zip(tasks, items, images):
            job.save(task, image, [tensor_to_pil(item[0]), tensor_to_pil(item[2] * 2 - 1), image, tensor_to_pil(item[4])])
    real = split.image_dir.with_name(split.image_dir.name.replace(args.split, "train", 1))
    print(f"score them: atelier evaluate --protocol cfld --generated {args.out} --ground-truth {split.image_dir} "
          f"--pairs {split.pairs_file} --real {real}")


def run(args: argparse.Namespace) -> int:
    from atelier.methods.cfld.model import load_pose_model
    from atelier.methods.mcld.model import load_mcld_model
    from atelier.utils.kept import kept

    _check_arguments(args)
    started = time.time()
    mcld = args.method == "mcld"
    plans = {(False, False): _plan_single, (False, True): _plan_test_set, (True, False): _plan_single_mcld,
             (True, True): _plan_test_set_mcld}
    draws = {(False, False): _draw_single, (False, True): _draw_test_set, (True, False): _draw_single_mcld,
             (True, True): _draw_test_set_mcld}
    job, data = plans[mcld, bool(args.test_set)](args, started)
    speed = speed_from_args(args, many=bool(args.test_set))
    if mcld:
        model = kept(load_mcld_model, args.checkpoint, speed=speed)
    else:
        model = kept(load_pose_model, args.checkpoint, args.base, speed=speed)
    draws[mcld, bool(args.test_set)](args, model, job, data)
    height, width = model.config.image_size
    job.finish(args, {"image_size": [height, width], "speed": asdict(speed)}, grid_name="preview/grid.png",
               cell=(max(width, 88), max(height, 128)))
    print(f"wrote {len(job.written)} images to {args.out} ({job.kept} existing kept; "
          f"overview: {args.out / 'preview' / 'grid.png'})")
    return 0

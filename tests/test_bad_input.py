"""Bad input, one row per case: translate, generate, illustrate, pose-transfer, prepare-tryon, prepare-conditions and
every reader (issues 19, 16, 14).

Each row builds its bad input in a fresh folder, runs the command in-process (`tests.helpers.cli_outcome`) or the
reader (`reader_outcome`, which maps errors as the CLI does) and asserts: the exit code, no traceback, one error line,
and that the line names the file, field or flag at fault. Every command row fails before a model is loaded; the rows
that need a model folder get a stand-in holding only the files read before the load.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Callable

import pytest
from PIL import Image

from atelier.errors import UserError
from tests.helpers import cli_outcome, write_random_photos

YS = [10 * (i + 1) for i in range(18)]  # a pose inside the 256x176 frame
XS = [5 * (i + 1) for i in range(18)]
LATIN1 = "caf\xe9 cr\xe8me".encode("latin-1")  # not UTF-8


def reader_outcome(call: Callable[[], object]) -> tuple[int, str]:
    """(exit code, output) of a reader as the CLI would report it: 0, or 2 and `error: <message>` for a UserError;
    any other exception is a bug: -1 and its traceback."""
    import traceback

    try:
        call()
    except UserError as error:
        return 2, f"atelier reader: error: {error}"
    except BaseException:  # noqa: BLE001 - reported as a traceback, which the table forbids
        return -1, traceback.format_exc()
    return 0, ""


# --- builders -------------------------------------------------------------------------------------------------------
def photos(tmp: Path, name: str = "photos", count: int = 2) -> Path:
    """tmp/<name>/ holding `count` small PNGs."""
    write_random_photos(tmp / name, count, (16, 16))
    return tmp / name


def translate(tmp: Path, *extra: str, inputs: list[str] | None = None, out: str = "out") -> list[str]:
    inputs = inputs if inputs is not None else [str(photos(tmp))]
    return ["translate", *inputs, "--model", "tiny", "--out", str(tmp / out), *extra]


def generate(tmp: Path, *extra: str, out: str = "out") -> list[str]:
    return ["generate", "--model", "tiny", "--prompt", "a dress", "--out", str(tmp / out), *extra]


def illustrate(tmp: Path, *extra: str, checkpoint: Path | None = None, inputs: list[str] | None = None,
               out: str = "out") -> list[str]:
    inputs = inputs if inputs is not None else [str(photos(tmp))]
    checkpoint = checkpoint if checkpoint is not None else tmp / "checkpoint"
    return ["illustrate", *inputs, "--checkpoint", str(checkpoint), "--out", str(tmp / out), *extra]


def pose_checkpoint(tmp: Path) -> Path:
    """A stand-in pose run's final/: only cfld.yaml, all pose-transfer reads before loading the model."""
    from atelier.config import save_yaml
    from atelier.methods.cfld.model import PoseModelConfig

    save_yaml(PoseModelConfig(), tmp / "pose" / "cfld.yaml")
    return tmp / "pose"


def pose_json(tmp: Path, data, raw: bytes | None = None) -> list[str]:
    """pose-transfer of one source into the keypoint JSON `data` (or the bytes `raw`)."""
    path = tmp / "pose.json"
    path.write_bytes(raw if raw is not None else json.dumps(data).encode())
    source = write_random_photos(tmp, 1, (16, 16))[0]
    return ["pose-transfer", "--checkpoint", str(pose_checkpoint(tmp)), "--source", str(source), "--target-pose",
            str(path), "--out", str(tmp / "out")]


def pose_single(tmp: Path, *extra: str, pose: str | None = None, source: Path | None = None) -> list[str]:
    source = source if source is not None else write_random_photos(tmp, 1, (16, 16))[0]
    pose = pose if pose is not None else f"b.jpg:{json.dumps(YS)}:{json.dumps(XS)}"
    return ["pose-transfer", "--checkpoint", str(pose_checkpoint(tmp)), "--source", str(source), "--target-pose", pose,
            "--out", str(tmp / "out"), *extra]


def deepfashion(tmp: Path, pairs: bytes | None = None, annotation: bytes | None = None, listing: bytes | None = None) -> Path:
    """A tiny DeepFashion test split (a.jpg, b.jpg) with any of its three text files replaced by the given bytes."""
    root = tmp / "df"
    write_random_photos(root / "test_highres", 2, (16, 16), ".jpg")  # p0.jpg, p1.jpg
    rows = "".join(f"p{i}.jpg:{json.dumps(YS)}:{json.dumps(XS)}\n" for i in range(2))
    files = {"fasion-resize-pairs-test.csv": pairs or b"from,to\np0.jpg,p1.jpg\n",
             "fasion-resize-annotation-test.csv": annotation or f"name:keypoints_y:keypoints_x\n{rows}".encode(),
             "test.lst": listing or b"p0.jpg\np1.jpg\n"}
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def split_run(tmp: Path, *extra: str, **files: bytes) -> list[str]:
    return ["pose-transfer", "--checkpoint", str(tmp / "no-model"), "--test-set", str(deepfashion(tmp, **files)),
            "--out", str(tmp / "out"), *extra]


def mcld_conditions(tmp: Path) -> Path:
    """The tiny test split with stand-ins for MCLD's IUV and texture files of p0 and p1."""
    root = deepfashion(tmp)
    for stem in ("p0", "p1"):
        for kind in ("densepose", "texture"):
            (root / f"test_{kind}").mkdir(exist_ok=True)
            Image.new("RGB", (16, 16)).save(root / f"test_{kind}" / f"{stem}.png")
    return root


def mcld_split_run(tmp: Path, missing: str) -> list[str]:
    """pose-transfer --method mcld on the tiny test split with MCLD's conditions, but `missing` (a path under the root)
    deleted: refused before the checkpoint (which does not exist) is read."""
    root = mcld_conditions(tmp)
    (root / missing).unlink()
    return ["pose-transfer", "--method", "mcld", "--checkpoint", str(tmp / "no-model"), "--test-set", str(root),
            "--out", str(tmp / "out")]


def mcld_edit(tmp: Path, *donors: str, missing: str | None = None) -> list[str]:
    """atelier edit of p0 on the tiny test split with MCLD's conditions (IUV and texture of p0 and p1), `donors` the
    --*-from flags (each naming p1) and `missing` (a path under the root) deleted: refused before the checkpoint (which
    does not exist) is read."""
    root = mcld_conditions(tmp)
    if missing:
        (root / missing).unlink()
    flags = [part for flag in donors for part in (flag, str(root / "test_highres" / "p1.jpg"))]
    return ["edit", "--checkpoint", str(tmp / "no-model"), "--person", str(root / "test_highres" / "p0.jpg"), *flags,
            "--out", str(tmp / "out")]


def mcld_face(tmp: Path, values: list[float]) -> Callable[[], object]:
    """Reading a face embedding .npy holding `values` for a model expecting FashionSynth's 14 floats."""
    import numpy as np

    from atelier.methods.mcld.data import read_face

    np.save(tmp / "p0.npy", np.array(values))
    return lambda: read_face(tmp / "p0.npy", 14)


def annotation_row(ys, xs) -> bytes:
    return f"name:keypoints_y:keypoints_x\np0.jpg:{json.dumps(ys)}:{json.dumps(xs)}\np1.jpg:{json.dumps(YS)}:{json.dumps(XS)}\n".encode()


def foreign_folder(tmp: Path) -> Path:
    """A non-empty folder atelier did not write (someone's notes)."""
    (tmp / "out").mkdir(parents=True, exist_ok=True)
    (tmp / "out" / "notes.txt").write_text("mine")
    return tmp / "out"


def marked_out(tmp: Path) -> Path:
    """An atelier output folder from an earlier run."""
    from atelier.utils.outputs import write_marker

    write_marker(tmp / "out", "output")
    return tmp / "out"


def unreadable_photos(tmp: Path) -> list[str]:
    folder = tmp / "broken"
    folder.mkdir()
    for name in ("a.png", "b.jpg"):
        (folder / name).write_bytes(b"not an image at all")
    return [str(folder)]


def checkpoint_folder(tmp: Path, **files: str) -> Path:
    """A folder holding `files` (relative path -> text), for illustrate --checkpoint."""
    folder = tmp / "checkpoint"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def cfld_release(tmp: Path) -> Path:
    """CFLD's two release files (any tensors: the base is refused before they are read)."""
    import torch

    folder = tmp / "cfld-release"
    folder.mkdir()
    torch.save({"learnable_vector": torch.zeros(1)}, folder / "pytorch_model.bin")
    torch.save({"model.conv_in.weight": torch.zeros(1)}, folder / "pytorch_model_1.bin")
    return folder


def collide(tmp: Path) -> list[str]:
    for name in ("a.png", "a.jpg"):
        Image.new("RGB", (16, 16)).save(tmp / name)
    return [str(tmp / "a.png"), str(tmp / "a.jpg")]


def same_named_folders(tmp: Path) -> list[str]:
    photos(tmp / "x")
    photos(tmp / "y")
    return [str(tmp / "x" / "photos"), str(tmp / "y" / "photos")]


def input_in_out(tmp: Path) -> list[str]:
    return [str(write_random_photos(marked_out(tmp), 1, (16, 16))[0])]


# --- reader calls ---------------------------------------------------------------------------------------------------
def read_pairs_bytes(tmp: Path, data: bytes):
    from atelier.data.formats.deepfashion import read_pairs

    (tmp / "pairs.csv").write_bytes(data)
    return lambda: read_pairs(tmp / "pairs.csv")


def read_annotations_bytes(tmp: Path, data: bytes):
    from atelier.data.formats.deepfashion import read_annotations

    (tmp / "annotation.csv").write_bytes(data)
    return lambda: read_annotations(tmp / "annotation.csv")


def read_list_bytes(tmp: Path, data: bytes):
    from atelier.data.formats.lists import read_list

    (tmp / "train.lst").write_bytes(data)
    return lambda: read_list(tmp / "train.lst")


def select_listed_missing(tmp: Path):
    from atelier.data.formats.captioned import list_images
    from atelier.data.formats.lists import select_listed

    folder = photos(tmp)
    (tmp / "train.lst").write_text("p0.png\nghost-1.png\nghost-2.png\n")
    return lambda: select_listed(list_images(folder), tmp / "train.lst")


def captioned(tmp: Path, metadata: bytes | None = None, sidecar: bytes | None = None):
    from atelier.data.formats.captioned import read_captioned_folder

    folder = photos(tmp)
    if metadata is not None:
        (folder / "metadata.jsonl").write_bytes(metadata)
    if sidecar is not None:
        (folder / "p0.txt").write_bytes(sidecar)
        (folder / "p1.txt").write_text("a caption")
    return lambda: read_captioned_folder(folder)


def metadata_line(file_name: str) -> bytes:
    return (json.dumps({"file_name": file_name, "text": "a caption"}) + "\n").encode()


def keypoint_json(tmp: Path, data):
    from atelier.data.pairs import read_target_pose

    (tmp / "pose.json").write_text(json.dumps(data))
    return lambda: read_target_pose(str(tmp / "pose.json"), frame_hw=(256, 176))


def vitonhd(tmp: Path, pairs: str = "a_00.jpg b_00.jpg\n") -> Path:
    """A tiny VITON-HD test split: people and garments a_00, b_00 (8x6), their agnostic masks, the pairs file."""
    for name in ("a_00", "b_00"):
        for folder in ("image", "cloth"):
            (tmp / "test" / folder).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 6)).save(tmp / "test" / folder / f"{name}.jpg")
        (tmp / "test" / "agnostic-mask").mkdir(exist_ok=True)
        Image.new("L", (8, 6)).save(tmp / "test" / "agnostic-mask" / f"{name}_mask.png")
    (tmp / "test_pairs.txt").write_text(pairs)
    return tmp


def vitonhd_missing_garment(tmp: Path):
    from atelier.data.formats.vitonhd import load_vitonhd

    root = vitonhd(tmp, "a_00.jpg b_00.jpg\nb_00.jpg ghost_00.jpg\n")
    return lambda: load_vitonhd(root, "test")


def vitonhd_mask_size(tmp: Path):
    from atelier.data.formats.vitonhd import load_vitonhd

    root = vitonhd(tmp)
    Image.new("L", (6, 8)).save(root / "test" / "agnostic-mask" / "a_00_mask.png")
    return lambda: [load_vitonhd(root, "test").agnostic_mask(pair) for pair in load_vitonhd(root, "test").pairs]


def openpose_json(tmp: Path, data):
    from atelier.data.formats.vitonhd import read_openpose_json

    (tmp / "a_00_keypoints.json").write_text(json.dumps(data))
    return lambda: read_openpose_json(tmp / "a_00_keypoints.json")


def dresscode_pairs(tmp: Path, data: str):
    from atelier.data.formats.dresscode import load_dresscode

    (tmp / "upper_body" / "images").mkdir(parents=True)
    Image.new("RGB", (8, 6)).save(tmp / "upper_body" / "images" / "000001_0.jpg")
    (tmp / "test_pairs_paired.txt").write_text(data)
    return lambda: load_dresscode(tmp, "test", "paired")


def dresscode_keypoints(tmp: Path, data):
    from atelier.data.formats.dresscode import read_keypoints

    (tmp / "000001_2.json").write_text(json.dumps(data))
    return lambda: read_keypoints(tmp / "000001_2.json")


def dresscode_size(tmp: Path, folder: str, name: str):
    """A DressCode pair whose label map or dense file (`folder`/`name`) is 6x8 while its person image is 8x6."""
    from atelier.data.formats.dresscode import load_dresscode

    images = tmp / "upper_body" / "images"
    images.mkdir(parents=True)
    for image in ("000001_0.jpg", "000001_1.jpg"):
        Image.new("RGB", (8, 6)).save(images / image)
    (tmp / "upper_body" / folder).mkdir()
    Image.new("L", (6, 8)).save(tmp / "upper_body" / folder / name)
    (tmp / "test_pairs_paired.txt").write_text("000001_0.jpg 000001_1.jpg 0\n")
    accessor = "label_map" if folder == "label_maps" else "dense"
    return lambda: [getattr(data, accessor)(pair) for data in [load_dresscode(tmp, "test", "paired")] for pair in data.pairs]


BODY25 = [value for joint in range(25) for value in (4.0 + joint % 8, 3.0 + joint % 10, 0.9)]  # inside 16x16


def prepare(tmp: Path, *extra: str, keypoints=BODY25, parse: tuple | None = ("L", (16, 16), 0), out: str = "out") -> list[str]:
    """prepare-tryon of one 16x16 photo p0.png, with --keypoints holding its JSON (`keypoints`: the pose_keypoints_2d
    list, any other JSON as it is, or None: no --keypoints) and --parse holding p0.png (`parse`: (mode, (W, H),
    colour), or None: no --parse). A flag in `extra` given twice keeps its last value (argparse)."""
    write_random_photos(tmp / "images", 1, (16, 16))
    argv = ["prepare-tryon", "--images", str(tmp / "images"), "--out", str(tmp / out)]
    if keypoints is not None:
        data = {"people": [{"pose_keypoints_2d": keypoints}]} if isinstance(keypoints, list) else keypoints
        (tmp / "keypoints").mkdir()
        (tmp / "keypoints" / "p0_keypoints.json").write_text(json.dumps(data))
        argv += ["--keypoints", str(tmp / "keypoints")]
    if parse is not None:
        argv += ["--parse", prepare_folder(tmp, "parse", {"p0.png": parse})]
    return [*argv, *extra]


def prepare_folder(tmp: Path, name: str, files: dict[str, tuple[str, tuple[int, int], object]]) -> str:
    """tmp/`name`/ holding images {file: (mode, (W, H), colour)}; its path."""
    (tmp / name).mkdir(parents=True, exist_ok=True)
    for file, (mode, size, colour) in files.items():
        Image.new(mode, size, colour).save(tmp / name / file)
    return str(tmp / name)


def conditions(tmp: Path, *extra: str, iuv: tuple | None = ("RGB", (16, 16), (0, 0, 0))) -> list[str]:
    """prepare-conditions of a DeepFashion folder holding one 16x16 photo test_highres/p0.png and, unless `iuv` is
    None, its IUV test_densepose/p0.png (`iuv`: (mode, (W, H), colour))."""
    write_random_photos(tmp / "data" / "test_highres", 1, (16, 16))
    if iuv is not None:
        prepare_folder(tmp / "data", "test_densepose", {"p0.png": iuv})
    return ["prepare-conditions", "--data", str(tmp / "data"), *extra]


def mcld_evaluate(tmp: Path, *extra: str) -> list[str]:
    """evaluate --protocol mcld of one 16x16 output against one ground-truth photo of the same name."""
    write_random_photos(tmp / "gen", 1, (16, 16))
    write_random_photos(tmp / "gt", 1, (16, 16))
    return ["evaluate", "--protocol", "mcld", "--generated", str(tmp / "gen"), "--ground-truth", str(tmp / "gt"),
            "--device", "cpu", "--out", str(tmp / "report.json"), *extra]


def junk_model(tmp: Path) -> str:
    (tmp / "model.onnx").write_bytes(b"not a model")
    return str(tmp / "model.onnx")


def weights_file(tmp: Path, name: str, data: bytes):
    from atelier.weights import load_state_dict

    (tmp / name).write_bytes(data)
    return lambda: load_state_dict(tmp / name)


def image_adapter_file(tmp: Path, data: bytes):
    from atelier.diffusion.image_adapter import read_adapter_weights

    (tmp / "ip-adapter.safetensors").write_bytes(data)
    return lambda: read_adapter_weights(tmp / "ip-adapter.safetensors")


def peft_pickle(tmp: Path) -> Path:
    """A PEFT adapter folder whose adapter_model.bin pickles a payload instead of tensors."""
    folder = tmp / "peft-lora"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 4, "target_modules": ["to_q"]}))
    (folder / "adapter_model.bin").write_bytes(pickle.dumps(_RunsCode(tmp / "pwned")))
    return folder


class _RunsCode:
    """A pickle payload that would create a file if it were ever unpickled freely."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def cli(build: Callable[..., list[str]], *args, **kwargs):
    return lambda tmp: cli_outcome(build(tmp, *args, **kwargs))


def reader(build: Callable[..., Callable[[], object]], *args):
    return lambda tmp: reader_outcome(build(tmp, *args))


def row(case_id: str, run, pattern: str, code: int = 2):
    return pytest.param(run, code, pattern, id=case_id)


BIG = str(2**64)
NAN_POSE = {"keypoints_y": [float("nan")] + YS[1:], "keypoints_x": XS}
CASES = [
    # translate: where outputs go
    row("translate-a.png-and-a.jpg", lambda t: cli_outcome(translate(t, inputs=collide(t))), r"a\.png and .*a\.jpg would both be written"),
    row("translate-two-photos-folders", lambda t: cli_outcome(translate(t, inputs=same_named_folders(t))), r"x/photos/p0\.png and .*y/photos/p0\.png"),
    row("translate-input-inside-out", lambda t: cli_outcome(translate(t, inputs=input_in_out(t))), r"INPUT .*p0\.png lies inside --out"),
    row("translate-input-inside-out-overwrite", lambda t: cli_outcome(translate(t, "--overwrite", inputs=input_in_out(t))), r"INPUT .*p0\.png lies inside --out"),
    row("translate-out-inside-input", lambda t: cli_outcome(translate(t, out="photos/styled")), r"--out .*photos/styled lies inside the INPUT folder"),
    row("translate-overwrite-foreign-folder", lambda t: (foreign_folder(t), cli_outcome(translate(t, "--overwrite")))[1], r"--out .*out is not empty and is not an atelier output folder .*--overwrite"),
    row("translate-into-foreign-folder", lambda t: (foreign_folder(t), cli_outcome(translate(t)))[1], r"--out .*out is not empty and is not an atelier output folder"),
    row("translate-out-is-a-file", lambda t: ((t / "out").write_text("x"), cli_outcome(translate(t)))[1], r"--out .*out is a file"),
    row("translate-out-under-a-file", lambda t: ((t / "file").write_text("x"), cli_outcome(translate(t, out="file/sub")))[1], r"--out .*file/sub: cannot write there"),
    row("translate-output-is-a-folder", lambda t: ((marked_out(t) / "photos" / "p0.png").mkdir(parents=True), cli_outcome(translate(t)))[1], r"output .*out/photos/p0\.png is a folder"),
    row("translate-output-folder-is-a-file", lambda t: ((marked_out(t) / "photos").write_text("x"), cli_outcome(translate(t)))[1], r"out/photos is a file where the outputs need a folder"),
    row("translate-input-named-grid", lambda t: cli_outcome(translate(t, inputs=[str(write_random_photos(t, 1, (16, 16))[0].rename(t / "grid.jpg"))])), r"grid\.jpg would be written to .*grid\.png, where the job writes its own"),
    row("translate-every-input-unreadable", lambda t: cli_outcome(translate(t, inputs=unreadable_photos(t))), r"none of the 2 inputs .*broken/a\.png"),
    row("translate-missing-input", lambda t: cli_outcome(translate(t, inputs=[str(t / "nowhere.png")])), r"INPUT .*nowhere\.png not found"),
    # translate: numbers
    row("translate-guidance-nan", cli(translate, "--guidance-scale", "nan"), r"--guidance-scale nan: expected a finite number"),
    row("translate-guidance-negative", cli(translate, "--guidance-scale", "-2"), r"--guidance-scale -2\.0: expected a finite number at least 0"),
    row("translate-lora-scale-inf", cli(translate, "--lora-scale", "inf"), r"--lora-scale inf"),
    row("translate-image-cond-scale-nan", cli(translate, "--image-cond-scale", "nan"), r"--image-cond-scale nan"),
    row("translate-strength-above-1", cli(translate, "--strength", "1.5"), r"--strength 1\.5: expected a finite number in \[0, 1\]"),
    row("translate-strength-nan", cli(translate, "--strength", "nan"), r"--strength nan"),
    row("translate-steps-0", cli(translate, "--steps", "0"), r"--steps 0: expected a positive integer"),
    row("translate-batch-size-negative", cli(translate, "--batch-size", "-1"), r"--batch-size -1"),
    row("translate-size-absurd", cli(translate, "--size", "100000x100000"), r"--size 100000x100000: each side must be at most 4096"),
    row("translate-size-garbage", cli(translate, "--size", "big"), r"--size 'big': expected WIDTHxHEIGHT"),
    row("translate-seed-too-big", cli(translate, "--seed", BIG), r"--seed 18446744073709551616: expected an integer"),
    # generate
    row("generate-guidance-nan", cli(generate, "--guidance-scale", "nan"), r"--guidance-scale nan"),
    row("generate-lora-scale-negative", cli(generate, "--lora-scale", "-1"), r"--lora-scale -1\.0"),
    row("generate-num-images-0", cli(generate, "--num-images", "0"), r"--num-images 0: expected a positive integer"),
    row("generate-steps-0", cli(generate, "--steps", "0"), r"--steps 0"),
    row("generate-size-absurd", cli(generate, "--size", "64x99999"), r"--size 64x99999: each side must be at most 4096"),
    row("generate-seed-negative-overflow", cli(generate, "--seed", str(-(2**63) - 1)), r"--seed -9223372036854775809"),
    row("generate-overwrite-foreign-folder", lambda t: (foreign_folder(t), cli_outcome(generate(t, "--overwrite")))[1], r"--out .*out is not empty and is not an atelier output folder"),
    row("generate-out-is-a-file", lambda t: ((t / "out").write_text("x"), cli_outcome(generate(t)))[1], r"--out .*out is a file"),
    row("generate-earlier-images-without-overwrite", lambda t: ((marked_out(t) / "0000.png").write_bytes(b"x"), cli_outcome(generate(t)))[1], r"--out .*out holds an earlier run's images; pass --overwrite"),
    # illustrate: the checkpoint names what it is
    row("illustrate-checkpoint-is-a-style-lora", lambda t: cli_outcome(illustrate(t, checkpoint=checkpoint_folder(t, **{"pytorch_lora_weights.safetensors": "", "config.yaml": "task: style-lora\n"}))), r"--checkpoint .*checkpoint is a style LoRA \(a style-lora run\), for `atelier translate/generate --lora`"),
    row("illustrate-checkpoint-is-a-pose-model", lambda t: cli_outcome(illustrate(t, checkpoint=checkpoint_folder(t, **{"cfld.yaml": "{}"}))), r"is a pose-transfer \(CFLD\) model"),
    row("illustrate-checkpoint-is-the-run-folder", lambda t: cli_outcome(illustrate(t, checkpoint=checkpoint_folder(t, **{"final/lora/real/x": ""}))), r"is a dual-lora training run \(its checkpoint is .*checkpoint/final\)"),
    row("illustrate-checkpoint-is-another-tasks-run", lambda t: cli_outcome(illustrate(t, checkpoint=checkpoint_folder(t, **{"final/config.yaml": "task: text2img\n"}))), r"is a training run folder of another task \(the output of a `text2img` training run"),
    row("illustrate-checkpoint-is-a-base-model", lambda t: cli_outcome(illustrate(t, checkpoint=checkpoint_folder(t, **{"model_index.json": "{}"}))), r"is a base model, for --model"),
    row("illustrate-checkpoint-is-empty", lambda t: cli_outcome(illustrate(t, checkpoint=checkpoint_folder(t))), r"is an empty folder, not an illustration checkpoint"),
    row("illustrate-checkpoint-missing", cli(illustrate), r"--checkpoint .*checkpoint is not a folder"),
    # illustrate: numbers and outputs
    row("illustrate-lora-weight-nan", cli(illustrate, "--lora-weights", "real=nan,illustration=1"), r"--lora-weights real nan"),
    row("illustrate-adapter-weight-inf", cli(illustrate, "--adapter-weights", "rgb=inf,sketch=0.5"), r"--adapter-weights rgb inf"),
    row("illustrate-adapter-scale-negative", cli(illustrate, "--adapter-scale", "-1"), r"--adapter-scale -1\.0"),
    row("illustrate-strength-2", cli(illustrate, "--strength", "2"), r"--strength 2\.0"),
    row("illustrate-guidance-inf", cli(illustrate, "--guidance-scale", "inf"), r"--guidance-scale inf"),
    row("illustrate-a.png-and-a.jpg", lambda t: cli_outcome(illustrate(t, inputs=collide(t))), r"would both be written"),
    row("illustrate-input-inside-out-overwrite", lambda t: cli_outcome(illustrate(t, "--overwrite", inputs=input_in_out(t))), r"INPUT .*p0\.png lies inside --out"),
    row("illustrate-every-input-unreadable", lambda t: cli_outcome(illustrate(t, inputs=unreadable_photos(t), checkpoint=checkpoint_folder(t, **{"lora/x": ""}))), r"none of the 2 inputs"),
    # pose-transfer: the target pose
    row("pose-json-strings", cli(pose_json, {"keypoints_y": ["10"] * 18, "keypoints_x": XS}), r"pose\.json: keypoints_y\[0\] is '10'; expected a number"),
    row("pose-json-nan", cli(pose_json, NAN_POSE), r"pose\.json: keypoints_y\[0\] \(nose\) is nan; expected a finite number"),
    row("pose-json-ragged", cli(pose_json, [[1, 2]] * 17 + [[1, 2, 3]]), r"pose\.json: entry \[17\] is \[1, 2, 3\]; expected a \[y, x\] pair"),
    row("pose-json-missing-key", cli(pose_json, {"keypoints_y": YS}), r"pose\.json: key keypoints_x is missing"),
    row("pose-json-1e9", cli(pose_json, {"keypoints_y": [1e9] + YS[1:], "keypoints_x": XS}), r"pose\.json: keypoints_y\[0\] \(nose\) is 1e\+09, outside the 256x176"),
    row("pose-json-short", cli(pose_json, {"keypoints_y": YS[:17], "keypoints_x": XS}), r"pose\.json: expected 18 joints in keypoints_y"),
    row("pose-json-not-an-object", cli(pose_json, "a pose"), r"pose\.json: holds a JSON str"),
    row("pose-json-not-json", cli(pose_json, None, b"{keypoints"), r"pose\.json: not valid JSON"),
    row("pose-json-not-utf8", cli(pose_json, None, LATIN1), r"pose\.json, line 1: the keypoint JSON is not UTF-8"),
    row("pose-row-short", cli(pose_single, pose=f"b.jpg:{json.dumps(YS[:5])}:{json.dumps(XS)}"), r"--target-pose row 'b\.jpg': expected 18 joints in keypoints_y"),
    row("pose-row-1e9", cli(pose_single, pose=f"b.jpg:{json.dumps(YS)}:{json.dumps([10**9] * 18)}"), r"--target-pose row 'b\.jpg': keypoints_x\[0\] \(nose\) is 1e\+09"),
    row("pose-row-name-with-a-newline", cli(pose_single, pose=f"a\nb.jpg:{json.dumps(YS[:5])}:{json.dumps(XS)}"), r"--target-pose row 'a\\nb\.jpg': expected 18 joints"),
    row("pose-source-missing", lambda t: cli_outcome(pose_single(t, source=t / "ghost.jpg")), r"image .*ghost\.jpg not found"),
    row("pose-scale-nan", cli(pose_single, "--pose-scale", "nan"), r"--pose-scale nan"),
    row("pose-full-scale-negative", cli(pose_single, "--full-scale", "-3"), r"--full-scale -3\.0"),
    row("pose-release-on-a-base-of-another-width", lambda t: cli_outcome(["pose-transfer", "--checkpoint", str(cfld_release(t)), "--base", "tiny", *pose_single(t)[3:]]), r"--base tiny: its UNet has block widths .* Stable Diffusion 1\.5"),
    # pose-transfer: the test set's files
    row("test-set-pairs-not-utf8", cli(split_run, pairs=b"from,to\n" + LATIN1 + b",p1.jpg\n"), r"fasion-resize-pairs-test\.csv, line 2: the pairs CSV .*is not UTF-8"),
    row("test-set-annotation-not-utf8", cli(split_run, annotation=b"name:keypoints_y:keypoints_x\n" + LATIN1), r"fasion-resize-annotation-test\.csv, line 2: .*not UTF-8"),
    row("test-set-annotation-1e9", cli(split_run, annotation=annotation_row([10**9] + YS[1:], XS)), r"annotation-test\.csv, line 2 \(p0\.jpg\): keypoints_y\[0\] \(nose\) is 1e\+09"),
    row("test-set-list-names-missing-images", cli(split_run, listing=b"p0.jpg\np1.jpg\nghost.jpg\n"), r"test\.lst: 1 listed images are missing from .*test_highres: ghost\.jpg"),
    row("test-set-list-not-utf8", cli(split_run, listing=LATIN1), r"test\.lst, line 1: the list file .*not UTF-8"),
    row("test-set-limit-0", cli(split_run, "--limit", "0"), r"--limit 0: expected a positive integer"),
    # pose-transfer --method mcld: the conditions beside the images (pairs p0 -> p1)
    row("mcld-face-embedding-of-another-width", reader(mcld_face, [0.5] * 7), r"p0\.npy: face embedding of shape \(7,\) and type float64; this model expects 14 floats"),
    row("mcld-target-iuv-missing", cli(mcld_split_run, "test_densepose/p1.png"), r"test_densepose/p1\.png: the DensePose IUV image of the target not found; run `atelier prepare-conditions` .*`atelier synth --conditions`"),
    row("mcld-source-texture-missing", cli(mcld_split_run, "test_texture/p0.png"), r"test_texture/p0\.png: the UV texture map of the source not found; run `atelier prepare-conditions`"),
    row("mcld-checkpoint-is-not-an-mcld-run", cli(mcld_split_run, "test_densepose/p0.png"), r"--checkpoint .*no-model: expected an MCLD training run"),
    # edit: MCLD's conditions taken from other people
    row("edit-without-a-donor", cli(mcld_edit), r"atelier edit needs at least one of --clothes-from, --face-from, --pose-from"),
    row("edit-donor-texture-missing", cli(mcld_edit, "--clothes-from", missing="test_texture/p1.png"), r"test_texture/p1\.png: the UV texture map of the --clothes-from person not found; run `atelier prepare-conditions`"),
    row("edit-pose-donor-iuv-missing", cli(mcld_edit, "--pose-from", missing="test_densepose/p1.png"), r"test_densepose/p1\.png: the DensePose IUV image of the --pose-from person not found; run `atelier prepare-conditions`"),
    row("edit-face-donor-without-face-file", cli(mcld_edit, "--face-from"), r"test_face/p1\.npy: the face embedding of the --face-from person not found \(none is written when no face was found\)"),
    row("edit-donor-image-missing", cli(mcld_edit, "--clothes-from", missing="test_highres/p1.jpg"), r"image .*p1\.jpg not found"),
    # prepare-tryon: missing inputs, all named in one error before any work
    row("prepare-no-parse-source", cli(prepare, parse=None), r"missing inputs: no parse map for person p0: pass --parse DIR with p0\.png, --parser-model FILE\.onnx, or --masks DIR"),
    row("prepare-no-parse-no-keypoints", cli(prepare, parse=None, keypoints=None), r"no parse map for person p0: .*; no keypoints for person p0: pass --keypoints DIR with p0_keypoints\.json"),
    row("prepare-keypoints-file-missing", lambda t: cli_outcome(prepare(t, "--keypoints", prepare_folder(t, "poses", {}), keypoints=None)), r"no keypoints for person p0: add p0_keypoints\.json to --keypoints .*poses"),
    row("prepare-densepose-missing", lambda t: cli_outcome(prepare(t, "--densepose", prepare_folder(t, "iuv", {}))), r"no DensePose image for person p0: add p0\.jpg to --densepose"),
    row("prepare-garment-missing", lambda t: cli_outcome(prepare(t, "--garments", prepare_folder(t, "tops", {"q0.jpg": ("RGB", (16, 16), "red")}))), r"no garment for person p0: add p0\.jpg to --garments .*tops"),
    # prepare-tryon: bad inputs, one line naming the file or flag
    row("prepare-parse-of-another-size", cli(prepare, parse=("L", (12, 16), 0)), r"parse/p0\.png: the parse map is 12x16 but its image p0\.png is 16x16"),
    row("prepare-mask-of-another-size", lambda t: cli_outcome(prepare(t, "--masks", prepare_folder(t, "masks", {"p0.png": ("L", (16, 8), 255)}), parse=None)), r"masks/p0\.png: the garment mask is 16x8 but its image p0\.png is 16x16"),
    row("prepare-densepose-of-another-size", lambda t: cli_outcome(prepare(t, "--densepose", prepare_folder(t, "iuv", {"p0.png": ("RGB", (8, 8), "red")}))), r"iuv/p0\.png: the DensePose image is 8x8 but its image p0\.png is 16x16"),
    row("prepare-keypoints-no-people", cli(prepare, keypoints={"version": 1.3, "people": []}), r"p0_keypoints\.json: no people \(an empty list\)"),
    row("prepare-keypoints-60-numbers", cli(prepare, keypoints=[1.0] * 60), r"p0_keypoints\.json: people\[0\]\.pose_keypoints_2d has 60 numbers; expected 75 \(BODY_25\) or 54 \(COCO-18\)"),
    row("prepare-keypoints-strings", cli(prepare, keypoints=["1"] * 54), r"p0_keypoints\.json: people\[0\]\.pose_keypoints_2d\[0\] is '1'; expected a number"),
    row("prepare-keypoints-of-another-image", cli(prepare, keypoints=[5000.0, 5.0, 0.9] + BODY25[3:]), r"p0_keypoints\.json: joint 0 at x 5000, y 5 lies far outside the 16x16 image"),
    row("prepare-parse-label-out-of-range", cli(prepare, parse=("L", (16, 16), 25)), r"parse/p0\.png: the parse map holds label 25; --labels lip has labels 0-19"),
    row("prepare-parse-in-colours", cli(prepare, parse=("RGB", (16, 16), "red")), r"parse/p0\.png: the parse map is a RGB image; expected label indices"),
    row("prepare-white-garment", lambda t: cli_outcome(prepare(t, "--garments", prepare_folder(t, "tops", {"p0.jpg": ("RGB", (16, 16), "white")}))), r"tops/p0\.jpg: no garment found on a near-white background; pass --cloth-masks DIR with p0\.png"),
    row("prepare-images-not-a-folder", lambda t: cli_outcome(["prepare-tryon", "--images", str(t / "nowhere"), "--out", str(t / "out")]), r"--images .*nowhere: not a folder"),
    row("prepare-images-empty", lambda t: cli_outcome(["prepare-tryon", "--images", prepare_folder(t, "empty", {}), "--out", str(t / "out")]), r"--images .*empty: no images found"),
    row("prepare-image-name-with-a-space", lambda t: cli_outcome(["prepare-tryon", "--images", prepare_folder(t, "photos", {"my photo.png": ("RGB", (8, 8), "red")}), "--out", str(t / "out")]), r"--images .*photos: 'my photo\.png' is not a file name"),
    row("prepare-pairs-without-garments", cli(prepare, "--pairs", "pairs.txt"), r"--pairs pairs people with garments: pass --garments DIR too"),
    row("prepare-pairs-name-unknown-person", lambda t: ((t / "pairs.txt").write_text("ghost.jpg p0.jpg\n"), cli_outcome(prepare(t, "--garments", prepare_folder(t, "tops", {"p0.jpg": ("RGB", (16, 16), "red")}), "--pairs", str(t / "pairs.txt"))))[1], r"pairs\.txt, line 1: person ghost\.jpg is not among the --images"),
    row("prepare-keypoints-folder-missing", lambda t: cli_outcome(prepare(t, "--keypoints", str(t / "nowhere"))), r"--keypoints .*nowhere: not a folder; check the path"),
    row("prepare-parser-model-missing", lambda t: cli_outcome(prepare(t, "--parser-model", str(t / "ghost.onnx"))), r"--parser-model .*ghost\.onnx: not found; pass a human-parsing \.onnx file"),
    row("prepare-parser-model-not-onnx", lambda t: ((t / "model.onnx").write_bytes(b"not a model"), cli_outcome(prepare(t, "--parser-model", str(t / "model.onnx"), parse=None)))[1], r"--parser-model (needs onnxruntime|.*model\.onnx: not a model onnxruntime can load)"),
    row("prepare-parser-size-garbage", cli(prepare, "--parser-size", "big"), r"--parser-size 'big': expected HEIGHTxWIDTH"),
    row("prepare-labels-unknown", cli(prepare, "--labels", "cihp"), r"--labels: invalid choice: 'cihp'"),
    row("prepare-into-foreign-folder", lambda t: (foreign_folder(t), cli_outcome(prepare(t)))[1], r"--out .*out is not empty and not an atelier output"),
    row("prepare-out-holds-the-photos", lambda t: cli_outcome(prepare(t, out=".")), r"--out .* contains --images"),
    # prepare-conditions: MCLD's IUVs and face model, one line naming the file or flag before any work
    row("conditions-iuv-missing", cli(conditions, iuv=None), r"no DensePose IUV for 1 images \(p0\.png\): expected .*test_densepose/p0\.png; run DensePose .* or pass --densepose DIR"),
    row("conditions-iuv-of-another-size", cli(conditions, iuv=("RGB", (8, 8), (0, 0, 0))), r"test_densepose/p0\.png: the DensePose image is 8x8 but its photo p0\.png is 16x16"),
    row("conditions-iuv-one-channel", cli(conditions, iuv=("L", (16, 16), 0)), r"test_densepose/p0\.png: the DensePose image is a L image; expected a DensePose IUV PNG \(3 channels"),
    row("conditions-iuv-four-channels", cli(conditions, iuv=("RGBA", (16, 16), (0, 0, 0, 255))), r"test_densepose/p0\.png: the DensePose image is a RGBA image; expected a DensePose IUV PNG"),
    row("conditions-iuv-part-25", cli(conditions, iuv=("RGB", (16, 16), (0, 0, 25))), r"(test_densepose/p0\.png: holds part index 25 in its blue channel|needs .*pip install 'atelier\[mcld\]')"),
    row("conditions-densepose-folder-missing", lambda t: cli_outcome(conditions(t, "--densepose", str(t / "nowhere"))), r"--densepose .*nowhere: not a folder"),
    row("conditions-face-model-not-onnx", lambda t: cli_outcome(conditions(t, "--face-model", junk_model(t))), r"(--face-model .*model\.onnx: not a model onnxruntime can load|needs .*pip install 'atelier\[mcld\]')"),
    row("conditions-face-model-missing", lambda t: cli_outcome(conditions(t, "--face-model", str(t / "ghost.onnx"))), r"--face-model .*ghost\.onnx: not found"),
    row("conditions-detector-without-model", lambda t: cli_outcome(conditions(t, "--face-detector", junk_model(t))), r"--face-detector finds the landmarks for --face-model: pass --face-model FILE too"),
    row("evaluate-mcld-face-model-not-onnx", lambda t: cli_outcome(mcld_evaluate(t, "--face-model", junk_model(t))), r"(--face-model .*model\.onnx: not a model onnxruntime can load|needs .*pip install 'atelier\[mcld\]')"),
    row("conditions-data-without-images", lambda t: cli_outcome(["prepare-conditions", "--data", prepare_folder(t, "empty", {})]), r"--data .*empty: no images in train_highres/"),
    # readers: DeepFashion pairs and annotations
    row("reader-pairs-not-utf8", reader(read_pairs_bytes, b"from,to\n" + LATIN1 + b",b\n"), r"pairs\.csv, line 2: the pairs CSV .*not UTF-8 text \(byte 0xe9"),
    row("reader-pairs-nul-byte", reader(read_pairs_bytes, b"from,to\na\x00,b\n"), r"pairs\.csv, line 2: .*NUL byte"),
    row("reader-pairs-folder", lambda t: ((t / "pairs.csv").mkdir(), reader_outcome(lambda: __import__("atelier.data.formats.deepfashion", fromlist=["x"]).read_pairs(t / "pairs.csv")))[1], r"pairs\.csv: is a folder; expected the pairs CSV"),
    row("reader-pairs-header", reader(read_pairs_bytes, b"source,target\na,b\n"), r"pairs\.csv, line 1: expected the header 'from,to'"),
    row("reader-pairs-three-cells", reader(read_pairs_bytes, b"from,to\na,b,c\n"), r"pairs\.csv, line 2: expected two image names"),
    row("reader-annotation-strings", reader(read_annotations_bytes, annotation_row(["1"] * 18, XS)), r"annotation\.csv, line 2, field keypoints_y: expected a JSON list of integers"),
    row("reader-annotation-float", reader(read_annotations_bytes, annotation_row([1.5] * 18, XS)), r"annotation\.csv, line 2, field keypoints_y"),
    row("reader-annotation-huge-int", reader(read_annotations_bytes, annotation_row([10**30] * 18, XS)), r"annotation\.csv, line 2 \(p0\.jpg\): keypoints_y\[0\] \(nose\) is 1e\+30"),
    row("reader-annotation-deep-json", reader(read_annotations_bytes, b"name:keypoints_y:keypoints_x\np0.jpg:" + b"[" * 100000 + b":[]\n"), r"annotation\.csv, line 2, field keypoints_y"),
    row("reader-annotation-header", reader(read_annotations_bytes, b"name,keypoints_y,keypoints_x\n"), r"annotation\.csv, line 1: expected the header"),
    row("reader-annotation-not-utf8", reader(read_annotations_bytes, LATIN1), r"annotation\.csv, line 1: .*not UTF-8"),
    # readers: list files
    row("reader-list-not-utf8", reader(read_list_bytes, b"a.jpg\n" + LATIN1), r"train\.lst, line 2: the list file .*not UTF-8"),
    row("reader-list-names-missing-images", reader(select_listed_missing), r"data\.list_file .*train\.lst: 2 listed images are missing from the data folder: ghost-1, ghost-2"),
    # readers: captioned folders
    row("reader-metadata-not-utf8", reader(captioned, metadata_line("p0.png") + LATIN1), r"metadata\.jsonl, line 2: the metadata\.jsonl .*not UTF-8"),
    row("reader-metadata-outside-root", reader(captioned, metadata_line("../x/p0.png")), r"metadata\.jsonl, line 1: file_name '\.\./x/p0\.png' is not a path inside"),
    row("reader-metadata-absolute-name", reader(captioned, metadata_line("/etc/hostname")), r"metadata\.jsonl, line 1: file_name '/etc/hostname' is not a path inside"),
    row("reader-metadata-nul-in-name", reader(captioned, metadata_line("p0\x00.png")), r"metadata\.jsonl, line 1: file_name 'p0\\x00\.png' is not a path inside"),
    row("reader-metadata-name-too-long", reader(captioned, metadata_line("x" * 5000 + ".png")), r"metadata\.jsonl, line 1: file_name 'xxx"),
    row("reader-metadata-not-an-object", reader(captioned, b"[1, 2]\n"), r"metadata\.jsonl, line 1: missing string field 'file_name'"),
    row("reader-metadata-not-json", reader(captioned, b"{file_name\n"), r"metadata\.jsonl, line 1: not valid JSON"),
    row("reader-sidecar-not-utf8", reader(captioned, None, LATIN1), r"p0\.txt, line 1: the caption .*not UTF-8"),
    # readers: keypoint JSON (the frame given)
    row("reader-keypoint-json-bools", reader(keypoint_json, {"keypoints_y": [True] * 18, "keypoints_x": XS}), r"pose\.json: keypoints_y\[0\] is True"),
    row("reader-keypoint-json-x-is-a-number", reader(keypoint_json, {"keypoints_y": YS, "keypoints_x": 5}), r"pose\.json: key keypoints_x is a int"),
    row("reader-keypoint-json-infinity", reader(keypoint_json, {"keypoints_y": YS, "keypoints_x": [float("inf")] * 18}), r"pose\.json: keypoints_x\[0\] \(nose\) is inf"),
    # readers: try-on (VITON-HD with MGD's additions, DressCode)
    row("reader-vitonhd-pair-names-missing-garment", reader(vitonhd_missing_garment), r"test_pairs\.txt, line 2: the garment image ghost_00\.jpg does not exist in .*test/cloth"),
    row("reader-vitonhd-mask-of-another-size", reader(vitonhd_mask_size), r"agnostic-mask/a_00_mask\.png: the agnostic mask is 6x8 but its image a_00\.jpg is 8x6"),
    row("reader-vitonhd-pairs-three-fields", lambda t: reader_outcome(lambda: __import__("atelier.data.formats.vitonhd", fromlist=["x"]).load_vitonhd(vitonhd(t, "a_00.jpg b_00.jpg 1\n"), "test")), r"test_pairs\.txt, line 1: 3 fields; expected 2"),
    row("reader-openpose-no-people", reader(openpose_json, {"version": 1.3, "people": []}), r"a_00_keypoints\.json: no people \(an empty list\)"),
    row("reader-openpose-74-numbers", reader(openpose_json, {"people": [{"pose_keypoints_2d": [1.0] * 74}]}), r"a_00_keypoints\.json: people\[0\]\.pose_keypoints_2d has 74 numbers; expected 75"),
    row("reader-openpose-strings", reader(openpose_json, {"people": [{"pose_keypoints_2d": ["1"] * 75}]}), r"a_00_keypoints\.json: people\[0\]\.pose_keypoints_2d\[0\] is '1'; expected a number"),
    row("reader-dresscode-pair-names-missing-garment", reader(dresscode_pairs, "000001_0.jpg 000001_1.jpg 0\n"), r"test_pairs_paired\.txt, line 1: the garment image 000001_1\.jpg does not exist"),
    row("reader-dresscode-pairs-without-category", reader(dresscode_pairs, "000001_0.jpg 000001_1.jpg\n"), r"test_pairs_paired\.txt, line 1: 2 fields; expected 3"),
    row("reader-dresscode-label-map-of-another-size", reader(dresscode_size, "label_maps", "000001_4.png"), r"label_maps/000001_4\.png: the label map is 6x8 but its image 000001_0\.jpg is 8x6"),
    row("reader-dresscode-dense-of-another-size", reader(dresscode_size, "dense", "000001_5.png"), r"dense/000001_5\.png: the dense file is 6x8 but its image 000001_0\.jpg is 8x6"),
    row("reader-dresscode-keypoints-no-joints", reader(dresscode_keypoints, {"keypoints": []}), r"000001_2\.json: \"keypoints\" holds 0 joints; expected 18"),
    # readers: weights files
    row("reader-pickle-named-safetensors", reader(weights_file, "cfld.safetensors", pickle.dumps({"a": 1})), r"cfld\.safetensors is not a readable safetensors file"),
    row("reader-pickle-that-runs-code", lambda t: reader_outcome(weights_file(t, "duallora.bin", pickle.dumps(_RunsCode(t / "pwned")))), r"duallora\.bin pickles Python objects other than tensors"),
    row("reader-truncated-torch-file", reader(weights_file, "swin.pth", b"PK\x03\x04 cut short"), r"swin\.pth as a weights-only torch state dict"),
    row("reader-image-adapter-pickle-named-safetensors", reader(image_adapter_file, pickle.dumps({"a": 1})), r"ip-adapter\.safetensors is not a readable safetensors file"),
    row("translate-peft-lora-pickled-bin", lambda t: cli_outcome(translate(t, "--lora", str(peft_pickle(t)), "--steps", "1")), r"adapter_model\.bin pickles Python objects other than tensors"),
]


@pytest.mark.parametrize(("run", "code", "pattern"), CASES)
def test_bad_input(run, code: int, pattern: str, tmp_path: Path) -> None:
    found, output = run(tmp_path)
    assert "Traceback" not in output, output
    assert found == code, output
    errors = [line for line in output.splitlines() if ": error: " in line]
    assert len(errors) == 1, output  # one line: the message has no line breaks and nothing else failed
    assert re.search(pattern, errors[0]), errors[0]
    assert not (tmp_path / "pwned").exists()  # no pickle payload ever ran


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 45 and len({case.id for case in CASES}) == len(CASES)

"""Bad input to the core commands (train, evaluate, synth, demo, doctor, config reading, global flags), one row per
case: each must end in one error line naming the file, field or flag, the right exit code and no traceback; none may
touch a folder it refuses. Then the CLI's one error handler (OSError, UnicodeDecodeError, MemoryError, --debug)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atelier.commands import doctor
from atelier.utils.outputs import MARKER
from tests.helpers import cli_outcome

GOOD_CONFIG = """task: text2img
model:
  base: tiny
data:
  root: {root}
  resolution: [32, 32]
train:
  max_steps: 2
  batch_size: 2
"""


class Workspace:
    """Files the rows point at: a good tiny config, broken configs, a data root, folders of every kind."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data" / "photo"
        self.data.mkdir(parents=True)
        Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(self.data / "p0.png")
        (self.data / "p0.txt").write_text("a photo")
        self.config = self.write("ok.yaml", GOOD_CONFIG.format(root=self.data))
        self.pose_config = self.write("pose.yaml", "task: pose\nmodel:\n  base: tiny\n")
        self.write("notutf8.yaml", b"task: text2img\nprompt: caf\xe9\n")
        self.write("bad.yaml", "task: text2img\ntrain: [1, 2\n")
        self.write("list.yaml", "- 1\n- 2\n")
        self.write("empty.yaml", "")
        self.write("garbage.yaml", bytes(range(256)) * 4)
        self.write("pytag.yaml", "task: !!python/object/apply:os.system ['echo hacked']\n")
        self.write("section.yaml", "task: text2img\ntrain: 5\n")
        self.write("paint.yaml", "task: paint\n")
        self.write("tasklist.yaml", "task: [text2img]\n")
        (root / "folder.yaml").mkdir()
        self.file = self.write("file.txt", "not a folder")
        self.someones = self.folder("someones", {"thesis.txt": "years of work"})
        self.synth_out = self.folder("synthout", {MARKER: json.dumps({"command": "synth"}), "x.txt": "data"})
        self.pose_run = self.folder("poserun", {MARKER: json.dumps({"command": "train", "task": "pose"}),
                                                "log.jsonl": ""})
        self.legacy_pose_run = self.folder("legacyrun", {"config.yaml": "task: pose\n", "checkpoints/keep": ""})
        self.gt = self.folder("gt", {})
        Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(self.gt / "a.png")
        self.temp_only = self.folder("tmponly", {".a.png.1a2b3c4d.tmp.png": "half an image"})
        self.retrieval_run = self.folder("retrievalrun", {"final/retrieval.yaml": "image_size: 64\n"})  # no captioner
        self.write("refs.json", json.dumps({"B001": ["a red dress"], "B002": "a blue shirt"}))
        self.write("gen_list.json", json.dumps(["a red dress"]))
        self.write("gen_numbers.json", json.dumps({"B001": 7}))
        self.write("gen_stray.json", json.dumps({"B001.png": "a dress", "C1": "x", "C2": "y"}))
        # try-on layouts: DressCode with upper_body only, outputs of upper_body and lower_body; VITON-HD whose
        # captions lack the one output's garment
        self.dresscode = self.folder("dc", {"test_pairs_paired.txt": "000001_0.jpg 000001_1.jpg 0\n"})
        self.dresscode_out = self.folder("dcout", {})
        self.viton = self.folder("vt", {"test_pairs.txt": "00001_00.jpg 00002_00.jpg\n",
                                        "captions.json": json.dumps({"00009": ["a", "b", "c"]})})
        self.viton_out = self.folder("vtout", {})
        for path in (self.dresscode / "upper_body" / "images" / "000001_0.jpg", self.dresscode_out / "upper_body" /
                     "000001_0.png", self.dresscode_out / "lower_body" / "000002_0.png",
                     self.viton / "test" / "image" / "00001_00.jpg", self.viton_out / "00001_00.png"):
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((16, 12, 3), dtype=np.uint8)).save(path)

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    def folder(self, name: str, files: dict[str, str]) -> Path:
        folder = self.root / name
        folder.mkdir()
        for relative, text in files.items():
            self.write(f"{name}/{relative}", text)
        return folder

    def at(self, name: str) -> str:
        return str(self.root / name)


def train(ws: Workspace, *extra: str) -> list[str]:
    return ["train", str(ws.config), *extra]


def evaluate(ws: Workspace, *extra: str) -> list[str]:
    out = ["--out", str(ws.root / "r.json")] if "--out" not in extra else []
    return ["evaluate", "--protocol", "standard", "--generated", str(ws.gt), "--ground-truth", str(ws.gt), *out, *extra]


def scored(ws: Workspace, protocol: str, *extra: str) -> list[str]:
    """`atelier evaluate` of a retrieval model or of captions (no images): the protocol and its own flags."""
    return ["evaluate", "--protocol", protocol, "--out", str(ws.root / "r.json"), *extra]


def captions(ws: Workspace, generated: str) -> list[str]:
    return scored(ws, "captions", "--generated", ws.at(generated), "--ground-truth", ws.at("refs.json"))


def tryon(ws: Workspace, protocol: str, *extra: str) -> list[str]:
    """`atelier evaluate` of the dresscode or mgd protocol on the workspace's layouts, `extra` replacing flags."""
    generated, data = (ws.dresscode_out, ws.dresscode) if protocol == "dresscode" else (ws.viton_out, ws.viton)
    return ["evaluate", "--protocol", protocol, "--generated", str(generated), "--data", str(data), "--out",
            ws.at("r.json"), *extra]


def synth(ws: Workspace, *extra: str) -> list[str]:
    out = ["--out", str(ws.root / "fs")] if "--out" not in extra else []
    return ["synth", "--identities", "2", "--poses-per-identity", "2", "--size", "40x64", *out, *extra]


def app(ws: Workspace, *extra: str) -> list[str]:
    """`atelier app` with a bad flag: each must be refused before the server starts (a row that passed would serve)."""
    return ["app", "--workdir", str(ws.root / "work"), "--checkpoints", str(ws.root), *extra]


def index(ws: Workspace, *extra: str) -> list[str]:
    """`atelier index` of ws.gt's image with the (weightless) retrieval run, `extra` replacing flags (argparse keeps a
    flag's last value): each is refused before any model loads."""
    return ["index", "--checkpoint", str(ws.retrieval_run), "--images", str(ws.gt), "--out", ws.at("idx"), *extra]


def override(text: str, expected: list[str], name: str):
    """A row for one bad config override on `atelier train`: exit 2, naming `expected`."""
    return pytest.param(lambda ws: train(ws, text), 2, expected, id=name)


ROWS = [
    # global flags and commands
    pytest.param(lambda ws: [], 2, ["COMMAND"], id="no-command"),
    pytest.param(lambda ws: ["paint"], 2, ["invalid choice: 'paint'"], id="unknown-command"),
    pytest.param(lambda ws: ["--frobnicate", "doctor"], 2, ["--frobnicate"], id="unknown-global-flag"),
    pytest.param(lambda ws: ["doctor", "--fix"], 2, ["--fix"], id="doctor-unknown-flag"),
    pytest.param(lambda ws: ["doctor", "extra"], 2, ["extra"], id="doctor-extra-argument"),
    pytest.param(lambda ws: ["demo", "--task", "paint"], 2, ["--task", "'paint'"], id="demo-unknown-task"),
    pytest.param(lambda ws: ["demo", "--out", str(ws.file)], 2, ["--out", "file.txt", "is a file"], id="demo-out-is-file"),
    pytest.param(lambda ws: ["demo", "--out", str(ws.file / "demo")], 2, ["--out", "file.txt"], id="demo-out-under-file"),
    pytest.param(lambda ws: ["demo", "--fastest"], 2, ["--fastest"], id="demo-unknown-flag"),
    pytest.param(lambda ws: ["demo", "--workers", "0"], 2, ["--workers 0", ">= 1"], id="demo-no-workers"),
    # config files
    pytest.param(lambda ws: ["train", ws.at("missing.yaml")], 2, ["missing.yaml not found"], id="config-missing"),
    pytest.param(lambda ws: ["train", ws.at("folder.yaml")], 2, ["folder.yaml is a folder, expected a YAML file"],
                 id="config-is-folder"),
    pytest.param(lambda ws: ["train", ws.at("notutf8.yaml")], 2, ["notutf8.yaml is not UTF-8"], id="config-not-utf8"),
    pytest.param(lambda ws: ["train", ws.at("garbage.yaml")], 2, ["garbage.yaml"], id="config-binary-garbage"),
    pytest.param(lambda ws: ["train", ws.at("bad.yaml")], 2, ["bad.yaml is not valid YAML"], id="config-bad-yaml"),
    pytest.param(lambda ws: ["train", ws.at("pytag.yaml")], 2, ["pytag.yaml is not valid YAML"], id="config-python-tag"),
    pytest.param(lambda ws: ["train", ws.at("list.yaml")], 2, ["list.yaml", "mapping"], id="config-top-level-list"),
    pytest.param(lambda ws: ["train", ws.at("empty.yaml")], 2, ["empty.yaml", "'task'"], id="config-empty"),
    pytest.param(lambda ws: ["train", ws.at("paint.yaml")], 2, ["paint.yaml", "'paint'", "text2img"], id="config-unknown-task"),
    pytest.param(lambda ws: ["train", ws.at("tasklist.yaml")], 2, ["tasklist.yaml", "['text2img']"], id="config-task-a-list"),
    pytest.param(lambda ws: ["train", ws.at("section.yaml")], 2, ["config.train", "mapping"], id="config-section-not-mapping"),
    override("train.learning_rate=1", ["config.train.learning_rate"], "override-unknown-key"),
    override("train.lr", ["'train.lr'", "KEY=VALUE"], "override-without-value"),
    override("task.x=1", ["'task' is not a section"], "override-into-a-value"),
    # config fields: each names the dotted key and the expected range
    override("train.batch_size=0", ["config.train.batch_size", ">= 1"], "batch-size-0"),
    override("train.batch_size=-4", ["config.train.batch_size", ">= 1"], "batch-size-negative"),
    override("train.batch_size=2.5", ["config.train.batch_size", "int"], "batch-size-float"),
    override("train.lr=nan", ["config.train.lr", "finite"], "lr-nan"),
    override("train.lr=inf", ["config.train.lr", "finite"], "lr-inf"),
    override("train.lr=0", ["config.train.lr", "> 0"], "lr-zero"),
    override("train.lr=-1e-4", ["config.train.lr", "> 0"], "lr-negative"),
    override("train.lr=fast", ["config.train.lr", "float"], "lr-text"),
    override("train.max_steps=0", ["config.train.max_steps", ">= 1"], "max-steps-0"),
    override("train.max_steps=-5", ["config.train.max_steps", ">= 1"], "max-steps-negative"),
    override("train.epochs=0", ["config.train.epochs", ">= 1"], "epochs-0"),
    override("train.gradient_accumulation=0", ["config.train.gradient_accumulation"], "gradient-accumulation-0"),
    override("train.warmup_steps=-1", ["config.train.warmup_steps", ">= 0"], "warmup-negative"),
    override("train.keep_checkpoints=0", ["config.train.keep_checkpoints"], "keep-checkpoints-0"),
    override("train.ema_decay=1.5", ["config.train.ema_decay", "[0, 1)"], "ema-decay-above-1"),
    override("train.adam_betas=[0.9, 1.0]", ["config.train.adam_betas"], "adam-beta-1"),
    override("train.max_grad_norm=-1", ["config.train.max_grad_norm"], "grad-norm-negative"),
    override("data.resolution=[0, 0]", ["config.data.resolution", "8..4096"], "resolution-zero"),
    override("data.resolution=[100000, 100000]", ["config.data.resolution", "4096"], "resolution-huge"),
    override("data.resolution=[30, 30]", ["config.data.resolution", "multiples of 8"], "resolution-not-multiple-of-8"),
    override("data.resolution=[64, 48, 3]", ["config.data.resolution", "2 values"], "resolution-three-sides"),
    override("loss.train_strength=nan", ["config.loss.train_strength", "finite"], "nan-in-loss-section"),
    override("sample.guidance_scale=.inf", ["config.sample.guidance_scale", "finite"], "inf-guidance"),
    pytest.param(lambda ws: ["train", str(ws.pose_config), "data.image_size=[0, 48]"], 2,
                 ["config.data.image_size"], id="pose-image-size-zero"),
    # train's output folder: refused before any work, and nothing refused is touched (see test_bad_input_table)
    pytest.param(lambda ws: train(ws, "--out", str(ws.file)), 2, ["--out", "file.txt is a file"], id="train-out-is-file"),
    pytest.param(lambda ws: train(ws, "--out", str(ws.file / "run")), 2, ["--out", "file.txt is a file, expected a folder"],
                 id="train-out-under-a-file"),
    pytest.param(lambda ws: train(ws, "--out", str(ws.someones)), 2, ["someones", "not an atelier training run"],
                 id="train-out-foreign-folder"),
    pytest.param(lambda ws: train(ws, "--out", str(ws.pose_run)), 2, ["poserun", "--resume", "--overwrite"],
                 id="train-out-a-run-without-flags"),
    pytest.param(lambda ws: train(ws, "--out", str(ws.someones), "--overwrite"), 2,
                 ["someones", "not an atelier output", MARKER], id="train-overwrite-foreign-folder"),
    pytest.param(lambda ws: train(ws, "--out", str(ws.synth_out), "--overwrite"), 2,
                 ["synthout", "atelier synth"], id="train-overwrite-synth-output"),
    pytest.param(lambda ws: train(ws, "--out", str(ws.data), "--overwrite"), 2, ["--out", "is data.root"],
                 id="train-out-is-data-root"),
    pytest.param(lambda ws: train(ws, "--out", str(ws.root / "data"), "--overwrite"), 2, ["--out", "contains data.root"],
                 id="train-out-contains-data-root"),
    pytest.param(lambda ws: train(ws, "--out", str(ws.pose_run), "--resume"), 2, ["poserun", "'pose'", "'text2img'"],
                 id="train-resume-other-task"),
    pytest.param(lambda ws: train(ws, "--out", str(ws.legacy_pose_run), "--resume"), 2,
                 ["legacyrun", "'pose'", "'text2img'"], id="train-resume-other-task-legacy-run"),
    pytest.param(lambda ws: train(ws, "--out", str(ws.someones), "--resume"), 2,
                 ["someones", "not an atelier training run"], id="train-resume-foreign-folder"),
    # evaluate: flags first, --out before any image is read
    pytest.param(lambda ws: evaluate(ws, "--out", str(ws.gt)), 2, ["--out", "is a folder", "report.json"],
                 id="evaluate-out-is-folder"),
    pytest.param(lambda ws: evaluate(ws, "--out", str(ws.file / "r.json")), 2, ["--out", "file.txt is a file"],
                 id="evaluate-out-under-a-file"),
    pytest.param(lambda ws: evaluate(ws, "--workers", "-1"), 2, ["--workers -1"], id="evaluate-workers-negative"),
    pytest.param(lambda ws: evaluate(ws, "--workers", "0"), 2, ["--workers 0"], id="evaluate-workers-zero"),
    pytest.param(lambda ws: evaluate(ws, "--workers", "many"), 2, ["--workers"], id="evaluate-workers-text"),
    pytest.param(lambda ws: evaluate(ws, "--seed", "-3"), 2, ["--seed -3"], id="evaluate-seed-negative"),
    pytest.param(lambda ws: evaluate(ws, "--batch-size", "0"), 2, ["--batch-size 0"], id="evaluate-batch-size-0"),
    pytest.param(lambda ws: evaluate(ws, "--test-size", "100000x100000"), 2, ["--test-size", "4096"],
                 id="evaluate-test-size-huge"),
    pytest.param(lambda ws: evaluate(ws, "--test-size", "tall"), 2, ["--test-size", "HEIGHTxWIDTH"],
                 id="evaluate-test-size-text"),
    pytest.param(lambda ws: evaluate(ws, "--device", "tpu"), 2, ["--device", "'tpu'"], id="evaluate-device-unknown"),
    pytest.param(lambda ws: evaluate(ws, "--protocol", "fancy"), 2, ["--protocol", "'fancy'"],
                 id="evaluate-protocol-unknown"),
    pytest.param(lambda ws: ["evaluate", "--protocol", "standard", "--generated", str(ws.temp_only), "--ground-truth",
                             str(ws.gt), "--out", str(ws.root / "r.json")], 2, ["--generated", "tmponly", "no images"],
                 id="evaluate-only-temp-files"),
    pytest.param(lambda ws: ["evaluate", "--protocol", "standard", "--generated", str(ws.root / "nowhere"), "--out",
                             str(ws.root / "r.json")], 2, ["--generated", "nowhere", "not a folder"],
                 id="evaluate-generated-missing"),
    # evaluate's retrieval and caption protocols: the checkpoint, the data and the captions files before any work
    pytest.param(lambda ws: scored(ws, "fashioniq", "--data", str(ws.root)), 2, ["fashioniq needs --checkpoint"],
                 id="evaluate-fashioniq-without-checkpoint"),
    pytest.param(lambda ws: scored(ws, "fashiongen", "--checkpoint", str(ws.retrieval_run)), 2,
                 ["fashiongen needs --data"], id="evaluate-fashiongen-without-data"),
    pytest.param(lambda ws: scored(ws, "fashioniq", "--checkpoint", str(ws.pose_run), "--data", str(ws.root)), 2,
                 ["--checkpoint", "poserun", "'pose' training run", "expected a retrieval run"],
                 id="evaluate-checkpoint-a-pose-run"),
    pytest.param(lambda ws: scored(ws, "fashiongen", "--checkpoint", str(ws.someones), "--data", str(ws.file)), 2,
                 ["--checkpoint", "someones", "expected a retrieval run"], id="evaluate-checkpoint-foreign-folder"),
    pytest.param(lambda ws: scored(ws, "fashioniq", "--checkpoint", str(ws.retrieval_run), "--data", ws.at("nowhere")),
                 2, ["nowhere is not a folder", "captions/, image_splits/"], id="evaluate-fashioniq-data-missing"),
    pytest.param(lambda ws: scored(ws, "fashioniq", "--checkpoint", str(ws.retrieval_run), "--data", str(ws.gt)), 2,
                 ["gt", "images"], id="evaluate-fashioniq-data-not-fashioniq"),
    pytest.param(lambda ws: scored(ws, "fashioniq", "--checkpoint", str(ws.retrieval_run), "--data", str(ws.gt),
                                   "--split", "test"), 2, ["--split test", "no targets"], id="evaluate-fashioniq-test-split"),
    pytest.param(lambda ws: scored(ws, "fashiongen", "--checkpoint", str(ws.retrieval_run), "--data", str(ws.file)), 2,
                 ["file.txt", "not a readable HDF5 file"], id="evaluate-fashiongen-data-not-hdf5"),
    pytest.param(lambda ws: scored(ws, "captions", "--generated", ws.at("gen_list.json")), 2,
                 ["captions needs --ground-truth"], id="evaluate-captions-without-references"),
    pytest.param(lambda ws: captions(ws, "gen_list.json"), 2, ["gen_list.json", "JSON list", "expected an object"],
                 id="evaluate-captions-a-list"),
    pytest.param(lambda ws: captions(ws, "gen_numbers.json"), 2, ["gen_numbers.json", "'B001'", "expected text"],
                 id="evaluate-captions-not-strings"),
    pytest.param(lambda ws: captions(ws, "gen_stray.json"), 2, ["gen_stray.json", "2 generated ids have no reference",
                                                                "'C1', 'C2'"], id="evaluate-captions-ids-without-reference"),
    # evaluate's try-on protocols: each layout, flag and file checked before any network is built
    pytest.param(lambda ws: scored(ws, "dresscode", "--generated", str(ws.dresscode_out)), 2,
                 ["dresscode needs --data"], id="evaluate-dresscode-without-data"),
    pytest.param(lambda ws: tryon(ws, "dresscode", "--category", "dresses"), 2,
                 ["--generated", "dresses: category folder not found"], id="evaluate-dresscode-category-not-generated"),
    pytest.param(lambda ws: tryon(ws, "dresscode"), 2, ["--data", "lower_body/images: not a folder"],
                 id="evaluate-dresscode-category-not-in-data"),
    pytest.param(lambda ws: tryon(ws, "dresscode", "--category", "upper_body", "--real", str(ws.gt)), 2,
                 ["--real", "its own test persons"], id="evaluate-dresscode-real"),
    pytest.param(lambda ws: tryon(ws, "mgd", "--clip", str(ws.someones)), 2,
                 ["vt/captions.json: no caption for 1 output: 00001_00.png (garment 00001)"],
                 id="evaluate-mgd-caption-missing"),
    pytest.param(lambda ws: tryon(ws, "mgd", "--test-size", "256x192"), 2, ["--test-size 256x192", "512x384"],
                 id="evaluate-mgd-test-size"),
    pytest.param(lambda ws: tryon(ws, "mgd", "--data", str(ws.gt)), 2, ["--data", "gt: neither VITON-HD"],
                 id="evaluate-mgd-data-not-a-layout"),
    pytest.param(lambda ws: tryon(ws, "mgd", "--generated", str(ws.gt)), 2,
                 ["1 of 1 outputs", "name no test person", "a.png"], id="evaluate-mgd-output-names-no-person"),
    pytest.param(lambda ws: tryon(ws, "mgd", "--pose-model", ws.at("body.pth")), 2,
                 ["--pose-model", "body.pth: file not found"], id="evaluate-mgd-pose-model-missing"),
    pytest.param(lambda ws: tryon(ws, "mgd", "--keypoints", str(ws.file)), 2, ["--keypoints", "file.txt: not a folder"],
                 id="evaluate-mgd-keypoints-not-a-folder"),
    pytest.param(lambda ws: evaluate(ws, "--clip", str(ws.someones)), 2, ["--clip: only --protocol mgd uses it"],
                 id="evaluate-clip-outside-mgd"),
    pytest.param(lambda ws: evaluate(ws, "--category", "dresses"), 2, ["--category: only --protocol dresscode / mgd"],
                 id="evaluate-category-outside-tryon"),
    # synth: every size and count has a stated bound
    pytest.param(lambda ws: synth(ws, "--size", "100000x100000"), 2, ["--size", "4096"], id="synth-size-huge"),
    pytest.param(lambda ws: synth(ws, "--size", "0x0"), 2, ["--size"], id="synth-size-zero"),
    pytest.param(lambda ws: synth(ws, "--size=-40x64"), 2, ["--size -40x64", "at least"], id="synth-size-negative"),
    pytest.param(lambda ws: synth(ws, "--size", "big"), 2, ["--size", "WIDTHxHEIGHT"], id="synth-size-text"),
    pytest.param(lambda ws: synth(ws, "--identities", "-1"), 2, ["--identities"], id="synth-identities-negative"),
    pytest.param(lambda ws: synth(ws, "--identities", "100000000"), 2, ["--identities", "100,000"],
                 id="synth-identities-huge"),
    pytest.param(lambda ws: synth(ws, "--identities", "many"), 2, ["--identities"], id="synth-identities-text"),
    pytest.param(lambda ws: synth(ws, "--poses-per-identity", "0"), 2, ["--poses-per-identity"], id="synth-poses-0"),
    pytest.param(lambda ws: synth(ws, "--test-fraction", "nan"), 2, ["--test-fraction"], id="synth-test-fraction-nan"),
    pytest.param(lambda ws: synth(ws, "--test-fraction", "1.5"), 2, ["--test-fraction"], id="synth-test-fraction-1.5"),
    pytest.param(lambda ws: synth(ws, "--seed", "-1"), 2, ["--seed -1"], id="synth-seed-negative"),
    pytest.param(lambda ws: synth(ws, "--tryon", "--tryon-size", "16x16"), 2, ["--tryon-size"], id="synth-tryon-size-small"),
    pytest.param(lambda ws: synth(ws, "--tryon-size", "wide"), 2, ["--tryon-size"], id="synth-tryon-size-text"),
    pytest.param(lambda ws: synth(ws, "--tryon"), 2, ["--tryon", "test people wearing a top", "more identities"],
                 id="synth-tryon-too-few-people"),
    pytest.param(lambda ws: synth(ws, "--out", str(ws.file)), 2, ["--out", "file.txt is a file"], id="synth-out-is-file"),
    pytest.param(lambda ws: synth(ws, "--out", str(ws.someones), "--overwrite"), 2,
                 ["someones", "not an atelier output"], id="synth-overwrite-foreign-folder"),
    pytest.param(lambda ws: synth(ws, "--out", str(ws.someones)), 2, ["someones", "not an atelier output"],
                 id="synth-out-foreign-folder"),
    pytest.param(lambda ws: synth(ws, "--out", str(ws.synth_out)), 2, ["synthout", "--overwrite"],
                 id="synth-out-earlier-synth-output"),
    # index, search, caption (UniFashion retrieval): refused before a model loads
    pytest.param(lambda ws: index(ws, "--checkpoint", str(ws.pose_run)), 2, ["--checkpoint", "poserun", "`pose` training run"],
                 id="index-checkpoint-not-retrieval"),
    pytest.param(lambda ws: index(ws, "--checkpoint", str(ws.gt)), 2, ["--checkpoint", "holds no retrieval model"],
                 id="index-checkpoint-no-model"),
    pytest.param(lambda ws: index(ws, "--images", str(ws.someones)), 2, ["--images", "someones", "no images"],
                 id="index-images-without-images"),
    pytest.param(lambda ws: index(ws, "--images", str(ws.temp_only)), 2, ["--images", "tmponly", "no images"],
                 id="index-images-only-temp-files"),
    pytest.param(lambda ws: index(ws, "--images", ws.at("nowhere")), 2, ["--images", "nowhere", "not a folder"],
                 id="index-images-missing"),
    pytest.param(lambda ws: index(ws, "--batch-size", "0"), 2, ["--batch-size 0"], id="index-batch-size-0"),
    pytest.param(lambda ws: index(ws, "--out", str(ws.someones)), 2, ["someones", "not an atelier output"],
                 id="index-out-foreign-folder"),
    pytest.param(lambda ws: index(ws, "--out", str(ws.gt / "idx")), 2, ["--out", "inside --images"],
                 id="index-out-inside-images"),
    pytest.param(lambda ws: ["search", "--index", str(ws.someones)], 2, ["no query", "--text", "--image"],
                 id="search-no-query"),
    pytest.param(lambda ws: ["search", "--index", str(ws.someones), "--text", " "], 2, ["--text is empty"],
                 id="search-empty-text"),
    pytest.param(lambda ws: ["search", "--index", str(ws.someones), "--text", "red", "-k", "0"], 2, ["-k 0"],
                 id="search-k-0"),
    pytest.param(lambda ws: ["search", "--index", str(ws.someones), "--text", "red"], 2,
                 ["--index", "someones", "not an index", "atelier index"], id="search-index-not-an-index"),
    pytest.param(lambda ws: ["search", "--index", ws.at("nowhere"), "--text", "red"], 2, ["--index", "nowhere"],
                 id="search-index-missing"),
    pytest.param(lambda ws: ["search", "--index", str(ws.someones), "--image", str(ws.file)], 2,
                 ["--image", "file.txt", "cannot be read as an image"], id="search-image-unreadable"),
    pytest.param(lambda ws: ["search", "--index", str(ws.someones), "--image", ws.at("gone.png")], 2,
                 ["--image", "gone.png", "not found"], id="search-image-missing"),
    pytest.param(lambda ws: ["search", "--index", str(ws.someones), "--text", "red", "--out", ws.at("r.txt")], 2,
                 ["--out", "r.txt", ".json or .html"], id="search-out-unknown-kind"),
    pytest.param(lambda ws: ["caption", str(ws.gt), "--checkpoint", str(ws.retrieval_run), "--out", ws.at("cap")], 2,
                 ["--checkpoint", "retrievalrun", "no captioner"], id="caption-run-without-captioner"),
    pytest.param(lambda ws: ["caption", str(ws.gt), "--checkpoint", str(ws.pose_run), "--out", ws.at("cap")], 2,
                 ["--checkpoint", "poserun", "not a retrieval run"], id="caption-checkpoint-not-retrieval"),
    pytest.param(lambda ws: ["caption", str(ws.someones), "--checkpoint", str(ws.retrieval_run), "--out", ws.at("cap")],
                 2, ["IMAGES", "someones", "no images"], id="caption-no-images"),
    # app: refused before anything is served
    pytest.param(lambda ws: app(ws, "--port", "0"), 2, ["--port 0", "1..65535"], id="app-port-0"),
    pytest.param(lambda ws: app(ws, "--port", "70000"), 2, ["--port 70000"], id="app-port-huge"),
    pytest.param(lambda ws: app(ws, "--max-upload-mb", "0"), 2, ["--max-upload-mb 0"], id="app-upload-limit-0"),
    pytest.param(lambda ws: app(ws, "--max-upload-mb", "nan"), 2, ["--max-upload-mb nan"], id="app-upload-limit-nan"),
    pytest.param(lambda ws: app(ws, "--max-side", "10"), 2, ["--max-side 10", "at least 64"], id="app-max-side-small"),
    pytest.param(lambda ws: app(ws, "--keep-models", "0"), 2, ["--keep-models 0"], id="app-keep-no-models"),
    pytest.param(lambda ws: app(ws, "--workdir", str(ws.file)), 2, ["--workdir", "file.txt is a file"], id="app-workdir-is-file"),
    pytest.param(lambda ws: app(ws, "--checkpoints", str(ws.file)), 2, ["--checkpoints", "file.txt", "a file"],
                 id="app-checkpoints-is-file"),
]


@pytest.mark.parametrize("argv, code, fragments", ROWS)
def test_bad_input_table(argv, code, fragments, tmp_path):
    ws = Workspace(tmp_path)
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    exit_code, output = cli_outcome(argv(ws))
    assert "Traceback" not in output, output
    assert exit_code == code, output
    assert output.count("error:") <= 1, output
    for fragment in fragments:
        assert fragment in output, f"{fragment!r} not in {output!r}"
    after = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    assert after == before, "a refused command changed files"  # nothing deleted, written or left behind


def test_the_table_is_large_enough():
    assert len(ROWS) >= 45 and len({row.id for row in ROWS}) == len(ROWS)


# --- the one error handler in atelier.cli ---------------------------------------------------------------------------

def _raising(error: BaseException):
    def run(args):
        raise error
    return run


HANDLED = [
    pytest.param(OSError(errno.ENOSPC, "No space left on device", "/runs/x/report.json"), 1,
                 ["no space left", "/runs/x/report.json"], id="disk-full"),
    pytest.param(OSError(errno.EDQUOT, "Disk quota exceeded", "/runs/x/a.png"), 1, ["quota", "/runs/x/a.png"],
                 id="quota"),
    pytest.param(PermissionError(errno.EACCES, "Permission denied", "/data/a.csv"), 2,
                 ["/data/a.csv", "permission denied"], id="permission"),
    pytest.param(OSError(errno.EROFS, "Read-only file system", "/mnt/ro/out"), 2, ["/mnt/ro/out", "read-only"],
                 id="read-only"),
    pytest.param(IsADirectoryError(errno.EISDIR, "Is a directory", "/data/pairs.csv"), 2,
                 ["/data/pairs.csv is a folder; expected a file"], id="is-a-folder"),
    pytest.param(NotADirectoryError(errno.ENOTDIR, "Not a directory", "/data/a.png/x"), 2,
                 ["/data/a.png/x", "part of this path is a file"], id="not-a-folder"),
    pytest.param(FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/gone.png"), 2,
                 ["/data/gone.png not found"], id="not-found"),
    pytest.param(OSError(errno.ENAMETOOLONG, "File name too long", "/x" * 10), 2, ["file name too long"],
                 id="name-too-long"),
    pytest.param(OSError(errno.EIO, "Input/output error", "/dev/sdz"), 1, ["input/output error", "/dev/sdz"],
                 id="io-error"),
    pytest.param(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), 2,
                 ["atelier doctor: error:", "not UTF-8", "invalid start byte"], id="not-utf8"),
    pytest.param(MemoryError(), 1, ["out of memory", "smaller"], id="memory"),
]


@pytest.mark.parametrize("error, code, fragments", HANDLED)
def test_os_unicode_and_memory_errors_are_one_line(error, code, fragments, monkeypatch):
    monkeypatch.setattr(doctor, "run", _raising(error))
    monkeypatch.delenv("ATELIER_DEBUG", raising=False)
    exit_code, output = cli_outcome(["doctor"])
    assert exit_code == code and "Traceback" not in output and output.count("\n") == 1, output
    assert "--debug" in output
    for fragment in fragments:
        assert fragment in output, f"{fragment!r} not in {output!r}"


def test_a_utf8_error_names_the_file_a_reader_noted(monkeypatch):
    error = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    error.__notes__ = ["captions/a.txt"]
    monkeypatch.setattr(doctor, "run", _raising(error))
    assert "captions/a.txt is not UTF-8" in cli_outcome(["doctor"])[1]


@pytest.mark.parametrize("argv, env", [
    pytest.param(["--debug", "doctor"], None, id="global-flag"),
    pytest.param(["doctor", "--debug"], None, id="after-the-command"),
    pytest.param(["doctor"], "1", id="environment"),
])
def test_debug_shows_the_traceback_and_keeps_the_exit_code(argv, env, monkeypatch):
    monkeypatch.setattr(doctor, "run", _raising(OSError(errno.ENOSPC, "No space left on device", "/r.json")))
    if env is None:
        monkeypatch.delenv("ATELIER_DEBUG", raising=False)
    else:
        monkeypatch.setenv("ATELIER_DEBUG", env)
    code, output = cli_outcome(argv)
    assert code == 1 and "Traceback" in output and "OSError" in output
    assert output.rstrip().splitlines()[-1].startswith("atelier doctor: error: no space left")


def test_debug_traces_user_errors_too(tmp_path, monkeypatch):
    monkeypatch.delenv("ATELIER_DEBUG", raising=False)
    code, output = cli_outcome(["--debug", "train", str(tmp_path / "missing.yaml")])
    assert code == 2 and "Traceback" in output and "read_yaml" in output and "missing.yaml not found" in output
    monkeypatch.setenv("ATELIER_DEBUG", "0")  # 0 means off
    code, output = cli_outcome(["train", str(tmp_path / "missing.yaml")])
    assert code == 2 and "Traceback" not in output


def test_a_bug_keeps_its_traceback(monkeypatch):
    monkeypatch.setattr(doctor, "run", _raising(RuntimeError("a genuine bug")))
    code, output = cli_outcome(["doctor"])
    assert code == -1 and "RuntimeError: a genuine bug" in output  # not dressed up as the user's mistake


def test_an_unwritable_out_is_refused_before_the_work(tmp_path, monkeypatch):
    """Root ignores permission bits, so the probe's refusal is simulated: the message must name the flag and path."""
    from atelier.utils import outputs

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(outputs.tempfile, "TemporaryFile", refuse)
    ws = Workspace(tmp_path)
    for argv in (evaluate(ws), synth(ws), train(ws, "--out", str(tmp_path / "run")), ["demo", "--out", str(tmp_path)]):
        code, output = cli_outcome(argv)
        assert code == 2 and "--out" in output and "cannot write in" in output and "Permission denied" in output, output
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "fs").exists() and not (tmp_path / "run").exists()

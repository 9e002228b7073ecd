"""The web app without a browser: finding runs, checking uploads, keeping models, and each tab's handler running its
command on tiny runs (the browser tests in test_app_browser.py drive the same handlers through the page)."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from atelier.app import checkpoints
from atelier.app.jobs import AppContext, Workspace, flag, run_command
from atelier.app.uploads import Limits, image_folder, image_upload, safe_name, text_upload
from atelier.errors import UserError
from atelier.utils import kept as kept_module
from atelier.utils.kept import keep_models, kept, kept_count

pytest.importorskip("gradio", reason="the app needs gradio (pip install 'atelier[app]'; make install has it)")
pytestmark = pytest.mark.usefixtures("one_thread")


def upload(path: Path, name: str | None = None) -> dict:
    """What gradio hands a handler that runs with preprocess=False."""
    return {"path": str(path), "orig_name": name or path.name, "meta": {"_type": "gradio.FileData"}}


@pytest.fixture
def ctx(app_runs, tmp_path):
    return AppContext(Workspace(tmp_path / "work"), Limits(max_bytes=2**20, max_side=512), [app_runs],
                      checkpoints.find_checkpoints([app_runs]))


@pytest.fixture
def keeping():
    keep_models(4)
    yield
    keep_models(0)


def test_runs_are_found_by_task_and_resolved_by_label_or_path(ctx, app_runs):
    assert [(c.label, c.task) for c in ctx.checkpoints] == [("runs/catalogue", "index"), ("runs/illustrate", "dual-lora"),
                                                           ("runs/pose", "pose"), ("runs/retrieval", "retrieval"),
                                                           ("runs/style", "style-lora")]
    style = checkpoints.resolve("runs/style", "style-lora", ctx.checkpoints, ctx.roots)
    assert style.path == app_runs / "style" / "final" and style.config["model"]["base"] == "tiny"
    by_path = checkpoints.resolve(str(app_runs / "pose"), "pose", ctx.checkpoints, ctx.roots)  # the run folder works too
    assert by_path.path == app_runs / "pose" / "final" and by_path.config["task"] == "pose"
    with pytest.raises(UserError, match="is a pose run; this tab needs a style-lora run"):
        checkpoints.resolve(str(app_runs / "pose"), "style-lora", ctx.checkpoints, ctx.roots)
    with pytest.raises(UserError, match="no such folder"):
        checkpoints.resolve(str(app_runs / "nowhere"), "pose", ctx.checkpoints, ctx.roots)
    with pytest.raises(UserError, match=r"atelier demo --task illustrate"):
        checkpoints.resolve("", "dual-lora", [], [Path("runs/demo")])


def test_kept_models_load_once_until_the_path_changes(tmp_path, keeping):
    calls = []

    def load(path, scale=1.0):
        calls.append((path, scale))
        return object()

    folder = tmp_path / "model"
    folder.mkdir()
    first = kept(load, str(folder), scale=1.0)
    assert kept(load, str(folder), scale=1.0) is first and len(calls) == 1
    assert kept(load, str(folder), scale=0.5) is not first and len(calls) == 2  # other arguments: another model
    (folder / "new").write_text("retrained")  # the folder's mtime moves: load again
    assert kept(load, str(folder), scale=1.0) is not first and len(calls) == 3
    keep_models(2)
    assert kept_count() == 2
    keep_models(0)
    kept(load, str(folder))
    kept(load, str(folder))
    assert len(calls) == 5 and kept_count() == 0  # the command line keeps nothing
    assert kept_module._capacity == 0


def test_uploads_are_checked_and_copied_under_safe_names(tmp_path):
    limits = Limits(max_bytes=50_000, max_side=256, max_unzipped_bytes=200_000)
    good = tmp_path / "a photo.png"
    Image.new("RGB", (64, 96), (200, 10, 10)).save(good)
    copied = image_upload(upload(good, "../../etc/a photo.png"), "photo", tmp_path / "in", limits)
    assert copied == tmp_path / "in" / "a_photo.png" and Image.open(copied).size == (64, 96)
    assert safe_name("..\\x/..hidden.png") == "hidden.png" and safe_name("///") == "upload"
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    wide = tmp_path / "wide.png"
    Image.new("RGB", (300, 20)).save(wide)
    noisy = tmp_path / "noise.bmp"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(noisy)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(good.read_bytes()[:60])
    for path, message in ((text, r"photo notes.png: not an image; upload a .png"), (wide, "300x20 px is larger than 256"),
                          (noisy, r"117.2 KB|0.1 MB is over the upload limit of 0.0476837 MB"), (truncated, "damaged")):
        with pytest.raises(UserError, match=message):
            image_upload(upload(path), "photo", tmp_path / "in", limits)
    with pytest.raises(UserError, match="photo: no image uploaded"):
        image_upload(None, "photo", tmp_path / "in", limits)
    keypoints = tmp_path / "pose.txt"
    keypoints.write_text("{}")
    with pytest.raises(UserError, match=r"keypoint file pose.txt: expected a keypoint JSON \(.json\)"):
        text_upload(upload(keypoints), "keypoint file", tmp_path / "in", limits, (".json",), "a keypoint JSON")
    assert text_upload(None, "keypoint file", tmp_path / "in", limits, (".json",), "a keypoint JSON") is None


def zip_of(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def png_bytes(size=(16, 16), colour=(0, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_folders_take_files_and_zips_and_refuse_clashes_and_bombs(tmp_path):
    limits = Limits(max_bytes=50_000, max_side=256, max_unzipped_bytes=100_000)
    loose = tmp_path / "c.png"
    loose.write_bytes(png_bytes())
    archive = zip_of(tmp_path / "set.zip", {"out/a.png": png_bytes(), "out/b.png": png_bytes(), "readme.txt": b"x",
                                            "__MACOSX/._a.png": b"junk"})
    folder = image_folder([upload(archive), upload(loose)], "generated images", tmp_path / "gen", limits)
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "b.png", "c.png"]
    clash = zip_of(tmp_path / "clash.zip", {"x/a.png": png_bytes(), "y/a.png": png_bytes()})
    with pytest.raises(UserError, match="are both named a.png"):
        image_folder([upload(clash)], "generated images", tmp_path / "g2", limits)
    bomb = zip_of(tmp_path / "bomb.zip", {f"{i}.png": bytes(60_000) for i in range(2)})  # tiny packed, 120 kB unpacked
    with pytest.raises(UserError, match="unpacks to 0 MB, over the 0 MB limit|over the .* limit"):
        image_folder([upload(bomb)], "generated images", tmp_path / "g3", limits)
    fake = zip_of(tmp_path / "fake.zip", {"a.png": b"text, not a png"})
    with pytest.raises(UserError, match=r"fake.zip:a.png: not an image"):
        image_folder([upload(fake)], "ground-truth images", tmp_path / "g4", limits)
    (tmp_path / "broken.zip").write_bytes(b"PK no zip")
    with pytest.raises(UserError, match="not a readable .zip"):
        image_folder([upload(tmp_path / "broken.zip")], "generated images", tmp_path / "g5", limits)
    with pytest.raises(UserError, match="nothing uploaded"):
        image_folder(None, "generated images", tmp_path / "g6", limits)


def test_commands_run_in_process_and_report_errors_as_one_line(tmp_path):
    assert flag("steps", 20.0) == ["--steps=20"] and flag("strength", 0.5) == ["--strength=0.5"] and flag("base", "") == []
    with pytest.raises(UserError, match=r"INPUT .*missing.png not found"):
        run_command(["translate", str(tmp_path / "missing.png"), "--model=tiny", f"--out={tmp_path / 'out'}"])
    with pytest.raises(UserError, match="invalid choice"):
        run_command(["evaluate", "--protocol=nope", f"--generated={tmp_path}", f"--out={tmp_path / 'r.json'}"])


def test_translate_and_illustrate_handlers_write_what_the_cli_writes(ctx, synth_root, keeping):
    from atelier.app.tabs.illustrate import illustrate
    from atelier.app.tabs.translate import translate

    photo = sorted((synth_root / "style" / "photo").glob("*.jpg"))[0]
    result = translate(ctx, upload(photo), "runs/style", "", "", 0.5, True, True, 4, 3.0, 7, "", "", 0.3)
    assert Image.open(result.image).size == (32, 48)  # the LoRA's training size, W x H
    assert result.settings["command"] == "translate" and result.settings["options"]["seed"] == 7
    assert result.settings["options"]["inversion"] and result.settings["prompt_used"] == "an illustration, "
    assert {p.name for p in result.files} == {photo.with_suffix(".png").name, "grid.png", "settings.json"}
    assert json.loads((result.image.parent / "settings.json").read_text()) == result.settings
    again = translate(ctx, upload(photo), "runs/style", "", "", 0.5, True, True, 4, 3.0, 7, "", "", 0.3)
    assert np.array_equal(np.asarray(Image.open(again.image)), np.asarray(Image.open(result.image)))  # same seed
    assert again.image.parents[1] != result.image.parents[1]  # a fresh request folder each run
    drawn = illustrate(ctx, upload(photo), "runs/illustrate", "", 0.0, 1.0, 0.7, 1.0, 0.7, 4, 5.0, 0, "")
    assert Image.open(drawn.image).size == (32, 48)
    assert drawn.settings["adapter_weights_used"] == [0.7, 0.3] and drawn.settings["lora_weights_used"]["illustration"] == 1.0
    with pytest.raises(UserError, match="this tab needs a dual-lora run"):
        illustrate(ctx, upload(photo), "runs/style", "", 0.0, 1.0, 0.5, 1.0, 0.7, 4, 5.0, 0, "")


def test_pose_handler_takes_an_annotated_image_or_a_keypoint_file(ctx, synth_root, tmp_path, keeping):
    from atelier.app.tabs.pose import pose_transfer, preview

    images = sorted((synth_root / "deepfashion" / "test_highres").glob("*.jpg"))
    skeleton = preview(ctx, "runs/pose", None, upload(images[1]), None)
    assert skeleton.shape == (256, 176, 3) and skeleton.any()
    assert preview(ctx, "runs/pose", None, None, None) is None
    result = pose_transfer(ctx, upload(images[0]), None, upload(images[1]), None, "runs/pose", "", 2, "ddim", 2.0, 2.0, 0)
    assert result.image.name == f"{images[0].stem}_2_{images[1].stem}.png" and Image.open(result.image).size == (64, 96)
    written = json.loads(Path(result.settings["options"]["target_pose"]).read_text())
    keypoints = tmp_path / "pose.json"
    keypoints.write_text(json.dumps(written))
    from_file = pose_transfer(ctx, upload(images[0]), upload(keypoints), None, None, "runs/pose", "", 2, "ddim", 2.0, 2.0, 0)
    assert np.array_equal(np.asarray(Image.open(from_file.image)), np.asarray(Image.open(result.image)))
    stranger = tmp_path / "stranger.png"
    Image.new("RGB", (64, 96)).save(stranger)
    with pytest.raises(UserError, match="stranger.png: no keypoints for it in fasion-resize-annotation-t"):
        pose_transfer(ctx, upload(images[0]), None, upload(stranger), None, "runs/pose", "", 2, "ddim", 2.0, 2.0, 0)
    keypoints.write_text(json.dumps({"keypoints_y": [1, 2]}))
    with pytest.raises(UserError, match=r"^keypoint file pose.json: expected 18 joints in keypoints_y"):
        preview(ctx, "runs/pose", upload(keypoints), None, None)


@pytest.mark.usefixtures("isolated_cache")  # offline: LPIPS/FID are reported missing, SSIM/PSNR still scored
def test_evaluate_handler_scores_uploaded_sets(ctx, synth_root, tmp_path):
    from atelier.app.tabs.evaluate import evaluate

    truth = sorted((synth_root / "deepfashion" / "test_highres").glob("*.jpg"))[:2]
    generated = []
    for path in truth:
        image = np.asarray(Image.open(path)).astype(np.int16)
        noisy = np.clip(image + np.random.default_rng(0).integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
        generated.append(tmp_path / path.name)
        Image.fromarray(noisy).save(generated[-1])
    archive = zip_of(tmp_path / "gt.zip", {path.name: path.read_bytes() for path in truth})
    table, result = evaluate(ctx, [upload(p) for p in generated], [upload(archive)], None, "standard", None, "paired", False)
    report = result.settings
    assert report["counts"]["scored"] == 2 and 0 < report["metrics"]["ssim"] < 1 and report["metrics"]["psnr"] > 20
    assert "| ssim |" in table and result.files[0].name == "report.json"


def test_a_bug_in_a_handler_becomes_a_message_not_a_crash():
    import gradio as gr

    from atelier.app.tabs.common import guarded

    with pytest.raises(gr.Error, match=r"internal error \(ZeroDivisionError: division by zero\); the server log"):
        guarded(lambda: 1 / 0)()
    with pytest.raises(gr.Error, match="photo: no image uploaded"):
        guarded(lambda: image_upload(None, "photo", Path("."), Limits()))()
    assert guarded(lambda value: value * 2)(21) == 42


def test_search_and_caption_handlers(ctx, app_runs, keeping):
    import json as json_module

    from atelier.app.tabs.caption import caption
    from atelier.app.tabs.search import search

    product = Path(json_module.loads((app_runs / "catalogue" / "items.json").read_text())["paths"][0])
    for text, image in (("a red dress", None), ("", upload(product)), ("is blue instead of red", upload(product))):
        hits, result = search(ctx, "runs/catalogue", text, image, 3)
        assert len(hits) == 3 and all(Path(path).is_file() for path, _ in hits)
        assert [hit["rank"] for hit in result.settings["hits"]] == [1, 2, 3]
    with pytest.raises(UserError, match="type a text, upload an image, or both"):
        search(ctx, "runs/catalogue", "  ", None, 3)
    words, result = caption(ctx, upload(product), "runs/retrieval")
    assert isinstance(words, str) and {p.name for p in result.files} == {"captions.json", "captions.html"}
    with pytest.raises(UserError, match="this tab needs a retrieval run"):
        caption(ctx, upload(product), "runs/pose")


def test_caption_tab_offers_only_runs_with_a_captioner(app_runs, tmp_path):
    """A composed-phase run (no captioner/) is a retrieval run too, but `atelier caption` refuses it: the tab's
    dropdown must not offer it, or a demo's first choice (runs/demo/retrieval/composed) fails."""
    from atelier.app.checkpoints import Checkpoint
    from atelier.app.tabs.caption import has_captioner

    assert has_captioner(Checkpoint("retrieval", app_runs / "retrieval" / "final", "runs/retrieval"))
    (tmp_path / "final").mkdir()
    assert not has_captioner(Checkpoint("retrieval", tmp_path / "final", "runs/composed"))


@pytest.fixture
def tryon_ctx(app_tryon_runs, tmp_path):
    return AppContext(Workspace(tmp_path / "work"), Limits(max_bytes=2**20, max_side=512), [app_tryon_runs],
                      checkpoints.find_checkpoints([app_tryon_runs]))


def person_of(data: Path, name: str) -> dict:
    """The four person uploads of a test person of a VITON-HD folder, as the Try-on and Design tabs take them."""
    test = data / "test"
    return {"person": upload(test / "image" / f"{name}.jpg"), "agnostic": upload(test / "agnostic-v3.2" / f"{name}.jpg"),
            "mask": upload(test / "agnostic-mask" / f"{name}_mask.png"),
            "densepose": upload(test / "image-densepose" / f"{name}.jpg")}


def test_tryon_and_design_tabs_offer_only_runs_of_their_mode(tryon_ctx, app_tryon_runs, app_runs, tmp_path):
    import gradio as gr

    from atelier.app.tabs.tryon import DESIGN, TRYON, held_out_people, mode_of
    from atelier.app.ui import TAB_MODULES, build_app

    assert [(c.label, c.task, mode_of(c)) for c in tryon_ctx.checkpoints] == [("runs/design", "garment-design", "design"),
                                                                             ("runs/tryon", "tryon", "tryon")]
    assert [module.TITLE for module in TAB_MODULES][3:5] == ["Try-on", "Design"]
    both = AppContext(tryon_ctx.workspace, tryon_ctx.limits, [app_runs, app_tryon_runs],
                      checkpoints.find_checkpoints([app_runs, app_tryon_runs]))
    app = build_app(both)
    pickers = {block.label: block.choices for block in app.blocks.values() if isinstance(block, gr.Dropdown)
               and "(a " in str(block.label)}
    assert pickers == {"try-on model (a tryon run)": [("runs/tryon", "runs/tryon")],
                       "garment design model (a garment-design run)": [("runs/design", "runs/design")]}
    design_run = tryon_ctx.of_task("garment-design")[0]
    rows = held_out_people(design_run.config, DESIGN)
    assert len(rows) == 3 and all(Path(path).is_file() for row in rows for path in row[:2] + row[3:]) and all(row[2] for row in rows)
    assert "/im_sketch_unpaired/" in rows[0][1] and "/agnostic-mask/" in rows[0][4]
    assert "/cloth/" in held_out_people(design_run.config, TRYON)[0][1] and len(held_out_people(design_run.config, TRYON)[0]) == 5
    assert held_out_people({"data": {"root": str(tmp_path)}}, TRYON) == []  # no pairs file: no examples, no error
    assert "atelier demo --task design" in checkpoints.missing_message("garment-design", [Path("runs/demo")])


def test_tryon_handler_writes_what_the_cli_writes(tryon_ctx, app_tryon_runs, tmp_path, keeping):
    from atelier.app.tabs.tryon import try_on
    from atelier.cli import main

    data = Path(tryon_ctx.of_task("tryon")[0].config["data"]["root"])
    pair = (data / "test_pairs.txt").read_text().split()[:2]
    name, garment = Path(pair[0]).stem, data / "test" / "cloth" / pair[1]
    person = person_of(data, name)
    result = try_on(tryon_ctx, *person.values(), upload(garment), "runs/tryon", 2, 1.0, "ddim", 5)
    assert result.image.name == f"{name}.png" and Image.open(result.image).size == (48, 64)
    assert {p.name for p in result.files} == {f"{name}.png", "grid.png", "settings.json"}
    assert result.settings["command"] == "try-on" and result.settings["options"]["seed"] == 5
    inputs = result.image.parents[1] / "inputs"
    assert sorted(p.relative_to(inputs).as_posix() for p in inputs.rglob("*") if p.is_file()) == [
        f"agnostic-mask/{name}_mask.png", f"agnostic-v3.2/{name}.jpg", f"cloth/{pair[1]}", f"image-densepose/{name}.jpg",
        f"image/{name}.jpg"]  # the uploads under their VITON-HD folders: a person and its DensePose share a name
    # the command line on the same files draws the same image
    assert main(["try-on", "--checkpoint", str(app_tryon_runs / "tryon"), "--person", str(data / "test" / "image" / f"{name}.jpg"),
                 "--garment", str(garment), "--steps", "2", "--seed", "5", "--out", str(tmp_path / "cli")]) == 0
    assert np.array_equal(np.asarray(Image.open(result.image)), np.asarray(Image.open(tmp_path / "cli" / f"{name}.png")))
    missing = {**person, "mask": None, "densepose": None}
    with pytest.raises(UserError, match=r"^mask, DensePose image: not uploaded\. .*atelier prepare-tryon"):
        try_on(tryon_ctx, *missing.values(), upload(garment), "runs/tryon", 2, 1.0, "ddim", 0)
    with pytest.raises(UserError, match="garment photo: no image uploaded"):
        try_on(tryon_ctx, *person.values(), None, "runs/tryon", 2, 1.0, "ddim", 0)
    with pytest.raises(UserError, match="is a garment-design run; this tab needs a tryon run"):
        try_on(tryon_ctx, *person.values(), upload(garment), "runs/design", 2, 1.0, "ddim", 0)
    unlabelled = tmp_path / "released"  # a model folder without the run's config.yaml: its tryon.yaml says design
    shutil.copytree(app_tryon_runs / "design" / "final", unlabelled)
    (unlabelled / "config.yaml").unlink()
    with pytest.raises(UserError, match=r"was trained for design; use it in the Design tab"):
        try_on(tryon_ctx, *person.values(), upload(garment), str(unlabelled), 2, 1.0, "ddim", 0)


def test_design_handler_draws_from_a_sketch_and_a_prompt(tryon_ctx, app_tryon_runs, tmp_path, keeping):
    from atelier.app.tabs.design import design
    from atelier.cli import main

    data = Path(tryon_ctx.of_task("garment-design")[0].config["data"]["root"])
    name = Path((data / "test_pairs.txt").read_text().split()[0]).stem
    sketch = data / "test" / "im_sketch" / f"{name}.png"
    person = person_of(data, name)
    result = design(tryon_ctx, *person.values(), upload(sketch), " red t-shirt, short sleeves ", "runs/design", 2, 2.0,
                    "ddim", 0)
    assert Image.open(result.image).size == (48, 64) and result.settings["command"] == "design"
    assert result.settings["options"]["prompt"] == "red t-shirt, short sleeves"
    assert result.settings["options"]["guidance_scale"] == 2.0
    assert main(["design", "--checkpoint", str(app_tryon_runs / "design"), "--person", str(data / "test" / "image" / f"{name}.jpg"),
                 "--sketch", str(sketch), "--prompt", "red t-shirt, short sleeves", "--steps", "2",
                 "--out", str(tmp_path / "cli")]) == 0
    assert np.array_equal(np.asarray(Image.open(result.image)), np.asarray(Image.open(tmp_path / "cli" / f"{name}.png")))
    with pytest.raises(UserError, match="prompt: empty"):
        design(tryon_ctx, *person.values(), upload(sketch), "  ", "runs/design", 2, 2.0, "ddim", 0)
    with pytest.raises(UserError, match="is a tryon run; this tab needs a garment-design run"):
        design(tryon_ctx, *person.values(), upload(sketch), "red", "runs/tryon", 2, 2.0, "ddim", 0)


def test_tryon_preview_tints_the_mask_and_blends_the_densepose(tryon_ctx, tmp_path):
    from atelier.app.tabs.tryon import MASK_TINT, preview

    person = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    mask = np.zeros((32, 24), dtype=np.uint8)
    mask[8:20, 6:18] = 255  # half the person's size: read nearest, as the model reads it
    dense = np.full((64, 48, 3), 200, dtype=np.uint8)
    for array, file in ((person, "me.png"), (mask, "me_mask.png"), (dense, "me_dense.png")):
        Image.fromarray(array).save(tmp_path / file)
    shown = preview(tryon_ctx, upload(tmp_path / "me.png"), upload(tmp_path / "me_mask.png"), upload(tmp_path / "me_dense.png"))
    assert shown.shape == (64, 48 * 2 + 4, 3) and shown.dtype == np.uint8
    tinted, blended = shown[:, :48].astype(float), shown[:, 52:].astype(float)
    inside = np.zeros((64, 48), dtype=bool)
    inside[16:40, 12:36] = True
    assert np.abs(tinted[inside] - (person[inside] + MASK_TINT) / 2).max() <= 0.5
    assert np.array_equal(tinted[~inside], person[~inside])
    assert np.abs(blended - (person.astype(float) + 200) / 2).max() <= 0.5
    assert preview(tryon_ctx, upload(tmp_path / "me.png"), upload(tmp_path / "me_mask.png"), None).shape == (64, 48, 3)
    assert preview(tryon_ctx, upload(tmp_path / "me.png"), None, None) is None
    assert preview(tryon_ctx, None, upload(tmp_path / "me_mask.png"), None) is None
    (tmp_path / "notes.png").write_text("not a mask")
    with pytest.raises(UserError, match="mask notes.png: not an image"):
        preview(tryon_ctx, upload(tmp_path / "me.png"), upload(tmp_path / "notes.png"), None)

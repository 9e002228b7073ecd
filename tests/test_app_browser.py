"""The web app in a real browser: `atelier app` started on a free port, Debian's chromium driven by Playwright.

Each tab gets a FashionSynth upload, runs its task on a tiny model and must show an output image of the model's size;
bad uploads (not an image, over the size limit) must show their error in the page while the app keeps serving.
ATELIER_APP_SCREENSHOTS=DIR saves one screenshot per tab there (`make app-screenshots` writes docs/images/app/);
ATELIER_APP_CHECKPOINTS=DIR runs the same tests on other runs (e.g. the demo's, runs/demo) instead of the tiny ones.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the app needs gradio (pip install 'atelier[app]'; make install has it)")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (make install has it)")
CHROMIUM = os.environ.get("ATELIER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                                reason=f"no chromium at {CHROMIUM}: apt-get install chromium (.ci/run does) or set "
                                       "ATELIER_CHROMIUM")
# what the machine's network needs (no Google services, no sandbox as root): see docs/app.md
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
UPLOAD_LIMIT_MB = 1
TAB_TITLES = ["Translate", "Illustrate", "Pose transfer", "Try-on", "Design", "Search", "Caption", "Evaluate"]
RUN_SECONDS = 180_000  # ms a task may take on a loaded 2-core machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runs(request) -> list[Path]:
    """The folders the app searches: ATELIER_APP_CHECKPOINTS, else the tiny runs (the try-on ones apart)."""
    chosen = os.environ.get("ATELIER_APP_CHECKPOINTS")
    if chosen:
        return [Path(chosen).resolve()]
    return [request.getfixturevalue("app_runs"), request.getfixturevalue("app_tryon_runs")]


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory):
    """`atelier app` in a subprocess on a free port (offline: metric weights missing are reported, not fetched);
    yields (url, process); checks at the end that it still serves."""
    folder = tmp_path_factory.mktemp("app")
    port = free_port()
    env = {**os.environ, "ATELIER_OFFLINE": "1", "ATELIER_CACHE": str(folder / "cache"), "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    log = open(folder / "app.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen([sys.executable, "-m", "atelier", "app", "--port", str(port), "--checkpoints", *map(str, runs),
                                "--workdir", str(folder / "work"), "--max-upload-mb", str(UPLOAD_LIMIT_MB)],
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while True:
        if process.poll() is not None:
            pytest.fail(f"atelier app exited with {process.returncode}:\n{(folder / 'app.log').read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=5).close()
            break
        except OSError:
            if time.time() > deadline:
                process.kill()
                pytest.fail(f"atelier app did not serve {url} in 180 s:\n{(folder / 'app.log').read_text()[-3000:]}")
            time.sleep(0.5)
    yield url, process
    alive = process.poll() is None
    process.terminate()
    process.wait(timeout=30)
    log.close()
    assert alive, f"the app stopped serving:\n{(folder / 'app.log').read_text()[-3000:]}"


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server[0])
    page.wait_for_selector("#translate-run")
    yield page
    page.close()


def config_of(runs: list[Path], name: str) -> dict:
    from atelier.app.checkpoints import find_checkpoints

    tasks = {"translate": "style-lora", "illustrate": "dual-lora", "pose": "pose", "tryon": "tryon", "design": "garment-design"}
    found = [c for c in find_checkpoints(runs) if c.task == tasks[name]]
    assert found, f"no {tasks[name]} run under {runs}"
    return found[0]


def catalogue_product(runs: list[Path]) -> str:
    """The first image of the first catalogue index under `runs`: a product photo, what the captioner learned on."""
    import json

    from atelier.app.checkpoints import find_checkpoints

    index = next(c for c in find_checkpoints(runs) if c.task == "index")
    return json.loads((index.path / "items.json").read_text(encoding="utf-8"))["paths"][0]


def output_size(page, selector: str) -> tuple[int, int]:
    """(W, H) of the image shown in `selector`, once it has loaded."""
    page.wait_for_function("s => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0 }",
                           arg=f"{selector} img", timeout=RUN_SECONDS)
    return tuple(page.locator(f"{selector} img").evaluate("i => [i.naturalWidth, i.naturalHeight]"))


def screenshot(page, name: str) -> None:
    folder = os.environ.get("ATELIER_APP_SCREENSHOTS")
    if folder:
        page.wait_for_timeout(1000)  # let gradio's fade-in of fresh outputs finish
        Path(folder).mkdir(parents=True, exist_ok=True)
        path = Path(folder) / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        with Image.open(path) as shot:  # 256 colours: a third of the bytes in the repository, no visible change
            quantized = shot.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
        quantized.save(path, optimize=True)


def open_tab(page, title: str) -> None:
    page.get_by_role("tab", name=title, exact=True).click()


def person_files(run, name: str) -> tuple[dict[str, Path], dict[str, Path]]:
    """({person, agnostic, mask, densepose}, {garment or sketch}) of the first test pair of the VITON-HD folder `run`
    trained on: the person with the pair's other garment (its sketch, for design)."""
    from atelier.data.formats.vitonhd import load_vitonhd

    split = load_vitonhd(run.config["data"]["root"], "test")
    pair = split.setting("unpaired")[0]
    person = {"person": split.image(pair), "agnostic": split.agnostic(pair), "mask": split.agnostic_mask(pair),
              "densepose": split.densepose(pair)}
    return person, ({"garment": split.cloth(pair)} if name == "tryon" else {"sketch": split.sketch(pair, "unpaired")})


def preview_shown(page, selector: str, person: Path) -> bool:
    """Whether `selector` comes to show the two-panel preview of `person` (mask, DensePose; 4 px apart) at its size,
    shrunk as the tab shrinks a large person."""
    from atelier.app.tabs.tryon import PREVIEW_MAX_SIDE

    with Image.open(person) as image:
        scale = min(1.0, PREVIEW_MAX_SIDE / max(image.size))
        width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    page.wait_for_function("([s, w, h]) => { const i = document.querySelector(s); return i && i.complete && "
                           "i.naturalWidth === w && i.naturalHeight === h }", arg=[f"{selector} img", 2 * width + 4, height],
                           timeout=RUN_SECONDS)
    return True


def test_every_built_task_has_a_tab_and_runs_in_the_browser(page, runs, tmp_path):
    from atelier.app.tabs.common import example_images
    from atelier.app.tabs.translate import default_size, photo_source
    from atelier.config import read_yaml

    assert page.get_by_role("tab").all_inner_texts() == TAB_TITLES

    style = config_of(runs, "translate")
    photo = example_images(*photo_source(style.config))[0]
    page.locator("#translate-photo input[type=file]").set_input_files(photo)
    page.click("#translate-run")
    assert output_size(page, "#translate-output") == tuple(map(int, default_size(style.config).split("x")))
    assert page.get_by_text("settings.json").first.is_visible()
    screenshot(page, "translate")

    open_tab(page, "Illustrate")
    dual = config_of(runs, "illustrate")
    page.locator("#illustrate-photo input[type=file]").set_input_files(photo)
    page.click("#illustrate-run")
    assert output_size(page, "#illustrate-output") == tuple(map(int, default_size(dual.config).split("x")))
    screenshot(page, "illustrate")

    open_tab(page, "Pose transfer")
    pose = config_of(runs, "pose")
    people = sorted((Path(pose.config["data"]["root"]) / "test_highres").glob("*.jpg"))
    page.locator("#pose-source input[type=file]").set_input_files(str(people[0]))
    page.locator("#pose-target input[type=file]").set_input_files(str(people[-1]))
    frame = read_yaml(pose.path / "cfld.yaml").get("frame", [256, 176])
    assert output_size(page, "#pose-skeleton") == (frame[1], frame[0])  # the skeleton preview, before running
    page.click("#pose-run")
    height, width = read_yaml(pose.path / "cfld.yaml")["image_size"]
    assert output_size(page, "#pose-output") == (width, height)
    screenshot(page, "pose")

    for name, title in (("tryon", "Try-on"), ("design", "Design")):
        open_tab(page, title)
        person, control = person_files(config_of(runs, name), name)
        for field, path in control.items():
            page.locator(f"#{name}-{field} input[type=file]").set_input_files(str(path))
        for field in ("agnostic", "person", "mask", "densepose"):  # the preview waits for the last three
            page.locator(f"#{name}-{field} input[type=file]").set_input_files(str(person[field]))
        if name == "design":
            page.fill("#design-prompt textarea", "red t-shirt, short sleeves")
        assert preview_shown(page, f"#{name}-preview", person["person"])  # mask and DensePose over the person
        page.click(f"#{name}-run")
        height, width = read_yaml(config_of(runs, name).path / "tryon.yaml")["image_size"]
        assert output_size(page, f"#{name}-output") == (width, height)
        screenshot(page, name)

    open_tab(page, "Search")
    page.fill("#search-text textarea", "a red dress")
    page.click("#search-run")
    page.locator("#search-hits img").first.wait_for(timeout=RUN_SECONDS)
    assert page.locator("#search-hits img").count() >= 1
    screenshot(page, "search")

    open_tab(page, "Caption")
    page.locator("#caption-image input[type=file]").set_input_files(catalogue_product(runs))
    page.click("#caption-run")
    page.wait_for_function("() => document.querySelectorAll('#caption-files a').length >= 2", timeout=RUN_SECONDS)
    assert "captions" in page.locator("#caption-files").inner_text()  # captions.json and .html offered (a 2-step
    assert page.locator("#caption-text textarea").count() == 1  # captioner may say nothing; the demo's names a garment)
    screenshot(page, "caption")

    open_tab(page, "Evaluate")
    truth = people[:2]
    generated = []
    for path in truth:  # the truth with noise: a known, imperfect score
        image = np.asarray(Image.open(path)).astype(np.int16)
        noisy = image + np.random.default_rng(0).integers(-25, 25, image.shape)
        generated.append(tmp_path / path.name)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(generated[-1])
    page.locator("#evaluate-generated input[type=file]").set_input_files([str(p) for p in generated])
    page.locator("#evaluate-truth input[type=file]").set_input_files([str(p) for p in truth])
    page.wait_for_timeout(500)
    page.click("#evaluate-run")
    table = page.locator("#evaluate-table")
    table.get_by_text("ssim", exact=True).wait_for(timeout=RUN_SECONDS)
    assert "2 generated images scored" in table.inner_text()
    psnr = float(re.search(r"psnr\s+([\d.]+)", table.inner_text()).group(1))
    assert 15 < psnr < 40
    screenshot(page, "evaluate")


def test_bad_uploads_show_their_error_and_the_app_keeps_serving(page, server, runs, tmp_path):
    not_image = tmp_path / "notes.png"
    not_image.write_text("a shopping list, not a photo")
    page.locator("#translate-photo input[type=file]").set_input_files(str(not_image))
    page.click("#translate-run")
    page.get_by_text("photo notes.png: not an image").wait_for(timeout=60_000)

    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(int((UPLOAD_LIMIT_MB + 0.5) * 2**20)))
    page.reload()
    page.wait_for_selector("#translate-run")
    open_tab(page, "Pose transfer")
    page.locator("#pose-source input[type=file]").set_input_files(str(big))
    page.get_by_text(re.compile(r"exceed the maximum allowed size.*big\.png")).wait_for(timeout=60_000)

    bad_pose = tmp_path / "pose.json"
    bad_pose.write_text(json.dumps({"keypoints_y": [10, 20]}))
    page.locator("#pose-keypoints input[type=file]").set_input_files(str(bad_pose))
    page.get_by_text("keypoint file pose.json: expected 18 joints").wait_for(timeout=60_000)

    open_tab(page, "Try-on")  # a mask that is not an image: its preview says so
    person, _ = person_files(config_of(runs, "tryon"), "tryon")
    page.locator("#tryon-person input[type=file]").set_input_files(str(person["person"]))
    page.locator("#tryon-mask input[type=file]").set_input_files(str(not_image))
    # each preview reads the current inputs: on a slow machine the person's preview may run after the mask is set too,
    # so the error can show twice
    page.get_by_text("mask notes.png: not an image").first.wait_for(timeout=60_000)

    assert server[1].poll() is None
    with urllib.request.urlopen(server[0], timeout=10) as response:  # still serving
        assert response.status == 200

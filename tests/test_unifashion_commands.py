"""`atelier index`, `search` and `caption` on one tiny retrieval run trained for 2 steps on FashionSynth's products,
and the catalogue index itself: exact self-retrieval, resume after an interruption, the IVF index."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.cli import main
from atelier.errors import UserError
from atelier.methods.unifashion import index as catalogue
from atelier.methods.unifashion.model import load_retrieval_model

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny-retrieval.yaml"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def products(tmp_path_factory) -> Path:
    from atelier.data.synth import write_retrieval

    root = tmp_path_factory.mktemp("retrieval")
    write_retrieval(root, identities=14, size=(64, 64), seed=1)
    return root


@pytest.fixture(scope="module")
def run(products, tmp_path_factory) -> Path:
    """A retrieval run with a captioner, 2 steps (its image features barely tell images apart yet)."""
    out = tmp_path_factory.mktemp("run") / "run"
    h5 = products / "fashiongen" / "fashiongen_256_256_train.h5"
    argv = ["train", str(CONFIG), f"data.fashiongen={h5}", "train.max_steps=2", "train.batch_size=4",
            "train.checkpoint_every=100", "train.sample_every=100", "model.caption_length=12", "--out", str(out)]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def sharp(run, tmp_path_factory) -> Path:
    """The run's model with large seeded random weights, saved as a checkpoint: its features tell every product
    apart (self-similarity 1, others at most ~0.996), which a 2-step model's do not."""
    model = load_retrieval_model(run / "final")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim > 1:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return model.save(tmp_path_factory.mktemp("sharp") / "model")


@pytest.fixture(scope="module")
def built(run, products, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("index") / "catalogue"
    argv = ["index", "--checkpoint", str(run), "--images", str(products / "products"), "--out", str(out),
            "--batch-size", "8"]
    assert main(argv) == 0
    return out


def images_of(products: Path) -> list[Path]:
    return sorted((products / "products").resolve().glob("*.png"))


def test_index_writes_vectors_items_and_a_flat_index(built, products, run):
    record = json.loads((built / "items.json").read_text())
    paths = images_of(products)
    assert record["paths"] == [str(path) for path in paths] and record["index"] == "flat"
    assert record["checkpoint"] == str((run / "final").resolve())
    assert np.load(built / "vectors.npy").shape == (len(paths), 8, 32)  # tiny model: 8 queries of 32
    assert not (built / "parts").exists()


@pytest.mark.parametrize("kind, query", [("text", ["--text", "a blue dress"]), ("image", ["--image", "IMG"]),
                                         ("composed", ["--image", "IMG", "--text", "is red"])])
def test_search_returns_k_ranked_hits(built, products, tmp_path, capsys, kind, query):
    query = [str(images_of(products)[5]) if word == "IMG" else word for word in query]
    out = tmp_path / "hits.json"
    assert main(["search", "--index", str(built), *query, "-k", "5", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    hits = result["hits"]
    assert [hit["rank"] for hit in hits] == [1, 2, 3, 4, 5]
    assert all(Path(hit["path"]) in images_of(products) for hit in hits)
    assert [hit["score"] for hit in hits] == sorted((hit["score"] for hit in hits), reverse=True)
    assert result["query"]["kind"] == kind
    assert capsys.readouterr().out.count(".png") == 5


def test_an_image_of_the_catalogue_finds_itself_first(sharp, products, tmp_path):
    paths = images_of(products)
    argv = ["index", "--checkpoint", str(sharp), "--images", str(products / "products"), "--out", str(tmp_path / "i")]
    assert main(argv) == 0
    index, model = catalogue.load_index(tmp_path / "i"), load_retrieval_model(sharp)
    for path in paths[::3]:
        (first, score), (_, second) = catalogue.search(index, catalogue.query_features(model, image=Image.open(path)), 2)
        assert first == path and score == pytest.approx(1.0, abs=1e-5) and second < score - 1e-4
    page = tmp_path / "html" / "results.html"
    assert main(["search", "--index", str(tmp_path / "i"), "--image", str(paths[4]), "-k", "3", "--out", str(page)]) == 0
    sources = [part.split("'")[0] for part in page.read_text().split("<img src='")[1:]]
    assert [(page.parent / source).resolve() for source in sources][:2] == [paths[4], paths[4]]  # the query, then hit 1
    assert len(sources) == 4 and all((page.parent / source).is_file() for source in sources)


def test_a_search_with_another_model_is_refused(built, sharp, capsys):
    assert main(["search", "--index", str(built), "--text", "a dress", "--checkpoint", str(sharp)]) == 2
    assert "not the one this index was built with" in capsys.readouterr().err


def test_an_interrupted_index_resumes_to_the_same_vectors(sharp, products, tmp_path):
    model, paths = load_retrieval_model(sharp), images_of(products)
    straight = catalogue.build_index(model, paths, 4, tmp_path / "straight")
    calls, interrupt_at = [], [3]
    embed = model.image_features

    def interrupted(pixels):
        calls.append(len(pixels))
        if len(calls) in interrupt_at:
            raise KeyboardInterrupt  # as a kill would: mid-run, after two batches were written
        return embed(pixels)

    model.image_features = interrupted
    with pytest.raises(KeyboardInterrupt):
        catalogue.build_index(model, paths, 4, tmp_path / "resumed")
    interrupt_at.clear()
    assert sorted(p.name for p in (tmp_path / "resumed" / "parts").iterdir()) == ["batch-000000.npy", "batch-000001.npy",
                                                                                  "plan.json"]
    with pytest.raises(UserError, match="unfinished index"):
        catalogue.load_index(tmp_path / "resumed")
    calls.clear()
    resumed = catalogue.build_index(model, paths, 4, tmp_path / "resumed")
    assert len(calls) == len(range(0, len(paths), 4)) - 2  # the two finished batches were kept
    vectors = [np.load(folder / "vectors.npy") for folder in (tmp_path / "straight", tmp_path / "resumed")]
    np.testing.assert_array_equal(vectors[0], vectors[1])
    assert resumed.paths == straight.paths == paths
    calls.clear()
    catalogue.build_index(model, paths[1:], 4, tmp_path / "resumed")  # other images: nothing of the old run fits
    assert len(calls) == len(range(0, len(paths) - 1, 4))


def test_the_ivf_index_finds_what_the_exact_one_finds(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16))
    vectors = centres[rng.integers(0, 20, (3000, 4))] + 0.3 * rng.normal(size=(3000, 4, 16))
    vectors = (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)
    paths = [Path(f"item{number}.png") for number in range(3000)]
    flat = catalogue.CatalogueIndex(catalogue.faiss_index(vectors.reshape(-1, 16), False, None)[0], paths, 4, {})
    ivf_index, settings = catalogue.faiss_index(vectors.reshape(-1, 16), True, None)
    assert settings["index"] == "ivf" and settings["nlist"] == 307 and settings["nprobe"] == 32
    ivf = catalogue.CatalogueIndex(ivf_index, paths, 4, settings)
    agree = 0
    for item in range(0, 3000, 150):
        exact = catalogue.search(flat, vectors[item], 10)
        assert exact[0] == (paths[item], pytest.approx(1.0, abs=1e-5))
        assert catalogue.search(ivf, vectors[item], 10, nprobe=307) == exact  # every list visited: exact again
        agree += len({p for p, _ in catalogue.search(ivf, vectors[item], 10)} & {p for p, _ in exact})
    assert agree >= 0.9 * 20 * 10
    monkeypatch.setattr(catalogue, "IVF_MIN_VECTORS", 2999)
    assert catalogue.faiss_index(vectors[:750].reshape(-1, 16), None, None)[1]["index"] == "ivf"  # 3000 vectors


def test_caption_writes_a_caption_per_image(run, products, tmp_path):
    folder, single = products / "products", sorted((products / "fashioniq" / "images").iterdir())[0]
    out = tmp_path / "captions"
    assert main(["caption", str(single), str(folder), "--checkpoint", str(run / "final"), "--out", str(out),
                 "--max-new-tokens", "6"]) == 0
    captions = json.loads((out / "captions.json").read_text())
    expected = [single, *sorted(folder.glob("*.png"))]
    assert list(captions) == [str(path) for path in expected] and all(isinstance(c, str) for c in captions.values())
    page = (out / "captions.html").read_text()
    assert page.count("<img src=") == len(expected) and single.name in page
    assert json.loads((out / "settings.json").read_text())["captioned"] == len(expected)


def test_caption_needs_the_runs_captioner(run, products, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(run / "final", bare, ignore=shutil.ignore_patterns("captioner"))
    assert main(["caption", str(products / "products"), "--checkpoint", str(bare), "--out", str(tmp_path / "o")]) == 2
    assert "has no captioner" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("damage, message", [("items.json", "not valid JSON"), ("index.faiss", "cannot be read as a FAISS"),
                                             ("count", "not an `atelier index` record")])
def test_a_damaged_index_is_refused_in_one_line(built, tmp_path, capsys, damage, message):
    copy = shutil.copytree(built, tmp_path / "copy")
    if damage == "count":
        record = json.loads((copy / "items.json").read_text())
        (copy / "items.json").write_text(json.dumps({**record, "items": record["items"] + 1}))
    else:
        (copy / damage).write_bytes(b"{junk")
    assert main(["search", "--index", str(copy), "--text", "a dress"]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1

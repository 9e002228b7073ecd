"""FashionSynth in the retrieval layouts: FashionIQ and FashionGen files shaped as the real ones, triplet captions that
say the recorded change, product photos of the right colour, disjoint identity splits, byte-identical reruns."""

import json

import h5py
import numpy as np
import pytest
from PIL import Image

from atelier.cli import main
from atelier.data.synth import PALETTE, Garment, Identity, write_retrieval
from atelier.data.synth.products import products_of
from atelier.data.synth.triplets import relative_captions
from atelier.data.synth.writer import held_out_identities
from atelier.errors import UserError

ARGS = dict(identities=14, size=(48, 40), seed=1, test_fraction=0.5)
CATEGORIES, SPLITS = ("dress", "shirt", "toptee"), ("train", "val", "test")


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("retrieval") / "out"
    summary = write_retrieval(out, **ARGS)
    return out, summary, _load(out / "retrieval.json")


def test_fashioniq_layout_has_the_real_shapes(written):
    out, summary, truth = written
    root = out / "fashioniq"
    assert summary.fashioniq == root and sum(summary.triplets.values()) >= 6 and min(summary.triplets.values()) > 0
    for category in CATEGORIES:
        for split in SPLITS:
            gallery = _load(root / "image_splits" / f"split.{category}.{split}.json")
            assert isinstance(gallery, list) and all(isinstance(asin, str) for asin in gallery)
            assert all((root / "images" / f"{asin}.png").is_file() for asin in gallery)
            assert all(truth["products"][asin]["fashioniq_category"] == category for asin in gallery)
            assert all(truth["products"][asin]["split"] == split for asin in gallery)
            keys = {"candidate", "captions"} | ({"target"} if split != "test" else set())
            entries = _load(root / "captions" / f"cap.{category}.{split}.json")
            assert all(set(entry) == keys for entry in entries)
            assert all(len(e["captions"]) == 2 and all(isinstance(c, str) and c for c in e["captions"]) for e in entries)
            recorded = truth["fashioniq"][category][split]
            assert [e["candidate"] for e in entries] == [t["candidate"] for t in recorded]
            if split != "test":
                assert [e["target"] for e in entries] == [t["target"] for t in recorded]
            captions = _load(root / "captions" / f"cap.{category}.{split}.caption.json")
            assert [c["image"] for c in captions] == gallery
            assert all(c["caption"] == truth["products"][c["image"]]["caption"] for c in captions)
    every_gallery = [a for c in CATEGORIES for s in SPLITS for a in _load(root / "image_splits" / f"split.{c}.{s}.json")]
    bottoms = [a for a, p in truth["products"].items() if p["type"] == "bottom"]
    assert sorted(every_gallery) == sorted(set(truth["products"]) - set(bottoms))  # bottoms: no FashionIQ category
    assert sorted(p.name for p in (out / "products").iterdir()) == sorted(f"{a}.png" for a in truth["products"])


def test_triplet_captions_say_the_recorded_change(written):
    _, _, truth = written
    products = truth["products"]
    for category in CATEGORIES:
        gallery = {s: set(_load(written[0] / "fashioniq" / "image_splits" / f"split.{category}.{s}.json")) for s in SPLITS}
        for split in SPLITS:
            for triplet in truth["fashioniq"][category][split]:
                old, new = products[triplet["candidate"]], products[triplet["target"]]
                assert triplet["candidate"] != triplet["target"]
                assert {triplet["candidate"], triplet["target"]} <= gallery[split]
                values = {"colour": "colour", "pattern": "pattern_phrase", "cut": "cut"}
                changed = [name for name, key in values.items() if old[key] != new[key]]
                assert triplet["changed"] == changed and 1 <= len(changed) <= 2
                text = " | ".join(triplet["captions"])
                for name in changed:
                    said = {"colour": new["colour"], "cut": "sleeve"}.get(name, new["pattern_phrase"])
                    assert said in text, (triplet, said)
                if "colour" in changed:
                    assert f"instead of {old['colour']}" in triplet["captions"][0]
                else:  # no colour change claimed
                    assert old["colour"] not in text.split()


def test_relative_captions_phrase_one_change_twice_and_two_changes_once_each():
    def product(colour, pattern="solid", cut="sleeveless"):
        dress = Garment("dress", cut, colour, PALETTE[colour], pattern, PALETTE["white"], 10.0)
        person = Identity(1, "WOMEN", "Dresses", (dress,), (240, 200, 170), (30, 20, 20), "long", (0, 0, 0), (230, 230, 230), 20.0, 15.0, 1.0)
        return products_of(person, "train")[0]

    blue, red = product("blue"), product("red")
    assert relative_captions(blue, red) == ("is red instead of blue", "is red in colour")
    assert relative_captions(blue, product("blue", "stripes")) == ("has white stripes", "is striped instead of plain")
    assert relative_captions(product("blue", "dots"), blue) == ("is plain", "has no pattern instead of white dots")
    assert relative_captions(blue, product("red", cut="short-sleeved")) == ("is red instead of blue", "has short sleeves")
    with pytest.raises(ValueError, match="3 attributes"):
        relative_captions(blue, product("red", "checks", "short-sleeved"))
    assert red.caption() == "a red sleeveless dress" and product("orange", "dots").caption() == "an orange sleeveless dress with white dots"


def test_product_photos_show_the_garment_on_white(written):
    out, _, truth = written
    for asin, product in truth["products"].items():
        image = np.asarray(Image.open(out / "products" / f"{asin}.png").convert("RGB"), dtype=np.float32)
        assert image.shape == (40, 48, 3)
        assert (image[0] == 255).all() and (image[:, 0] == 255).all()  # pure white around the garment
        cloth = image[(image < 250).any(axis=-1)]
        assert len(cloth) > 0.15 * 40 * 48
        if product["pattern"] == "solid":
            median = np.median(cloth, axis=0)
            assert np.abs(median - product["rgb"]).max() < 25, (asin, product["colour"], median)
            assert min(PALETTE, key=lambda name: np.abs(np.subtract(PALETTE[name], median)).sum()) == product["colour"]
        else:  # both the garment colour and the pattern colour are drawn
            for colour in (product["rgb"], PALETTE[product["pattern_colour"]]):
                assert np.abs(cloth - colour).max(axis=1).min() < 40, (asin, colour)


def test_fashiongen_files_have_n_rows_of_the_real_dtypes(written):
    out, summary, truth = written
    for name, members in (("train", {"train"}), ("validation", {"val", "test"})):
        asins = truth["fashiongen"][name]
        assert sorted(asins) == sorted(a for a, p in truth["products"].items() if p["split"] in members)
        with h5py.File(summary.fashiongen / f"fashiongen_256_256_{name}.h5", "r") as h5:
            n = len(asins)
            assert h5["input_image"].shape == (n, 40, 48, 3) and h5["input_image"].dtype == np.uint8
            for key in ("input_description", "input_name", "input_category", "input_subcategory", "input_productID"):
                assert h5[key].shape == (n, 1) and h5[key].dtype.kind == "S", key
            assert h5["index"][:, 0].tolist() == list(range(n))
            assert [v.decode() for v in h5["input_productID"][:, 0]] == asins
            for row, asin in enumerate(asins):
                product = truth["products"][asin]
                assert h5["input_category"][row, 0].decode() == product["fashiongen_category"]
                assert h5["input_subcategory"][row, 0].decode() == product["fashiongen_subcategory"]
                assert h5["input_name"][row, 0].decode() == product["name"]
                assert product["colour"] in h5["input_description"][row, 0].decode()
                pixels = np.asarray(Image.open(out / "products" / f"{asin}.png").convert("RGB"))
                assert np.array_equal(h5["input_image"][row], pixels)


def test_identity_splits_are_disjoint_and_match_synthesize(written):
    _, summary, truth = written
    by_split = {s: {p["identity"] for p in truth["products"].values() if p["split"] == s} for s in SPLITS}
    assert by_split == {s: set(truth["splits"][s]) for s in SPLITS}
    assert all(by_split[a].isdisjoint(by_split[b]) for a, b in (("train", "val"), ("train", "test"), ("val", "test")))
    assert by_split["val"] | by_split["test"] == set(held_out_identities(14, 1, 7))  # synthesize's test identities
    assert summary.identities == {"train": 7, "val": 4, "test": 3}


def test_same_seed_same_bytes_and_bad_arguments(written, tmp_path):
    out, _, _ = written
    write_retrieval(tmp_path / "again", **ARGS)
    assert _files(tmp_path / "again") == _files(out)
    with pytest.raises(UserError, match="--overwrite"):
        write_retrieval(tmp_path / "again", **ARGS)
    write_retrieval(tmp_path / "again", overwrite=True, **{**ARGS, "seed": 2, "identities": 4})
    assert len(list((tmp_path / "again" / "products").iterdir())) < len(list((out / "products").iterdir()))
    with pytest.raises(UserError, match="hold out 1"):
        write_retrieval(tmp_path / "few", identities=4, test_fraction=0.2)
    with pytest.raises(UserError, match="at least 32"):
        write_retrieval(tmp_path / "tiny", identities=10, size=(16, 16))


def test_atelier_synth_retrieval_end_to_end(tmp_path, capsys):
    out = tmp_path / "fs"
    flags = ["--identities", "5", "--test-fraction", "0.4", "--poses-per-identity", "2", "--size", "40x64", "--seed", "3"]
    assert main(["synth", "--out", str(out), *flags, "--retrieval", "--retrieval-size", "40x40"]) == 0
    printed = capsys.readouterr().out
    assert "Retrieval: " in printed and "triplets" in printed and str(out / "retrieval" / "fashioniq") in printed
    truth = _load(out / "retrieval" / "retrieval.json")
    assert truth["arguments"] == {"identities": 5, "size": [40, 40], "seed": 3, "test_fraction": 0.4}
    records = [json.loads(line) for line in (out / "labels" / "attributes.jsonl").read_text().splitlines()]
    synth_test = {r["identity"] for r in records if r["split"] == "test"}
    assert synth_test == set(truth["splits"]["val"]) | set(truth["splits"]["test"])
    assert main(["synth", "--out", str(out), *flags, "--overwrite"]) == 0  # a rerun without --retrieval drops it
    assert not (out / "retrieval").exists() and "Retrieval" not in capsys.readouterr().out
    assert main(["synth", "--out", str(tmp_path / "few"), "--identities", "4", "--retrieval"]) == 2
    assert "--retrieval needs" in capsys.readouterr().err and not (tmp_path / "few").exists()
    assert main(["synth", "--out", str(tmp_path / "bad"), "--retrieval-size", "20x20"]) == 2
    assert "--retrieval-size" in capsys.readouterr().err


def test_the_readers_read_what_fashionsynth_writes(tmp_path):
    """The retrieval readers (data.formats) accept every file FashionSynth writes, and agree with retrieval.json."""
    from atelier.data.formats.fashiongen import FashionGenH5
    from atelier.data.formats.fashioniq import CATEGORIES, load_fashioniq
    from atelier.data.synth import write_retrieval

    write_retrieval(tmp_path, identities=14, size=(64, 64), seed=1)
    truth = json.loads((tmp_path / "retrieval.json").read_text())
    for split in ("train", "val", "test"):
        loaded = load_fashioniq(tmp_path / "fashioniq", split)
        assert set(loaded.triplets) == set(CATEGORIES)
        for category, triplets in loaded.triplets.items():
            gallery = set(loaded.galleries[category])
            assert all(t.candidate in gallery and (t.target in gallery or split == "test") for t in triplets)
    for name in ("train", "validation"):
        with FashionGenH5(tmp_path / "fashiongen" / f"fashiongen_256_256_{name}.h5") as products:
            assert len(products) > 0 and products.image(0).size == (64, 64)
            assert products.product_id(0) in json.dumps(truth)

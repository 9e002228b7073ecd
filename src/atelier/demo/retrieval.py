"""Demo task `retrieval`: UniFashion's retrieval and captioning half, tiny, on FashionSynth's retrieval layouts.

Data (cached under OUT/retrieval-data): `write_retrieval` at 64x64, 640 people, half of them held out (large val
galleries, so a modification text alone rarely singles out the target); the held-out people's products are the
FashionIQ val split and the FashionGen validation file, which no model sees in training. Trained (cached under
OUT/retrieval): phase `pretrain` (ITC + ITM + captioning LM on the FashionGen train pairs), then phase `composed`
(FashionIQ train triplets) from it.

Scored on the held-out products:
- composed retrieval, FashionIQ-style: every val triplet's query (reference image + "{cap1} and {cap2}") ranked
  against its category's whole val gallery; R@1/5/10/50 beside random ranking and the same model given only the text
  (text-only) or only the reference image (image-only: the gallery ranked by similarity to the reference). The
  galleries are small (tens of images), so R@10/R@50 are near ceiling for everything: the checks use each query's
  rank of its target, lower is better, paired over the queries.
- cross-modal retrieval, FashionGen-style: every validation product's image ranked against all validation
  descriptions and the reverse (all categories together: FashionSynth has too few products per sub-category for
  FAME-ViL's 100 same-sub-category negatives); R@1/5/10 beside random ranking, checked on per-query ranks.
- captioning: a greedy caption per validation product against its description: BLEU-4, ROUGE-L and CIDEr-D beside a
  constant caption (the most common training description) and the caption of the nearest training image (ITC image
  features); checked on per-image ROUGE-L.
Last, the FashionIQ-layout product images are indexed (`build_index`, OUT/retrieval/catalogue) for `atelier search`
and the web app.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch

from atelier.config import TrainConfig, to_dict
from atelier.demo.context import DemoContext, cached
from atelier.demo.results import Check, Figure, StageResult, Table, paired_beats, spread
from atelier.methods.unifashion.train import (
    RetrievalConfig,
    RetrievalDataConfig,
    RetrievalModelSection,
    RetrievalTask,
    normalise,
)

DATA = {"identities": 640, "size": (64, 64), "seed": 5, "test_fraction": 0.5}
FAST_DATA = {"identities": 32, "test_fraction": 0.2}  # seed 5 at 32 people: 6 val triplets, the fewest a --fast check can test
KS = (1, 5, 10, 50)
PRETRAIN_STEPS, COMPOSED_STEPS = 600, 300  # 200 pretrain steps lost the composed-vs-text-only claim; 600 vs 300: i2t R@1 51% vs 9%, captions ROUGE-L 50 vs 39 (measured)


def ensure_data(ctx: DemoContext) -> Path:
    """FashionSynth's retrieval layouts for the demo, cached under OUT/retrieval-data."""
    from atelier.data.synth import write_retrieval

    chosen = ctx.pick(DATA, {**DATA, **FAST_DATA})
    return ctx.timed("synthesize retrieval data", lambda: cached(
        ctx.out / "retrieval-data", chosen, lambda folder: write_retrieval(folder, overwrite=True, **chosen)))


def retrieval_configs(ctx: DemoContext, data: Path, pretrained: Path) -> tuple[RetrievalConfig, RetrievalConfig]:
    """The two phases (configs/tiny-retrieval.yaml holds the same settings)."""
    def train(steps: int) -> TrainConfig:
        return TrainConfig(max_steps=ctx.pick(steps, 2), batch_size=ctx.pick(16, 4), lr=1e-3, optimizer="adamw",
                           adam_betas=(0.9, 0.98), weight_decay=0.05, lr_schedule="onecycle", checkpoint_every=steps,
                           log_every=10)

    pretrain = RetrievalConfig(
        phase="pretrain", model=RetrievalModelSection(base="tiny", language_model="tiny", lora_rank=None, freeze_vision=False),
        data=RetrievalDataConfig(fashiongen=str(data / "fashiongen" / "fashiongen_256_256_train.h5")), train=train(PRETRAIN_STEPS))
    composed = RetrievalConfig(
        phase="composed", model=RetrievalModelSection(base=str(pretrained), language_model="", freeze_vision=False),
        data=RetrievalDataConfig(fashioniq=str(data / "fashioniq")), train=train(COMPOSED_STEPS))
    return pretrain, composed


def ensure_runs(ctx: DemoContext, data: Path) -> tuple[Path, Path, tuple[RetrievalConfig, RetrievalConfig]]:
    """The pretrained and the composed run folders, cached under OUT/retrieval/{pretrain,composed}."""
    folder = ctx.out / "retrieval"
    cfgs = retrieval_configs(ctx, data, folder / "pretrain" / "final")
    key = {"configs": [to_dict(cfg) for cfg in cfgs], **ctx.stamps("retrieval-data")}

    def build(out: Path) -> None:
        for cfg, name in zip(cfgs, ("pretrain", "composed")):
            ctx.train(f"train retrieval ({name})", lambda c=cfg: RetrievalTask(c), cfg, out / name)

    cached(folder, key, build)
    return folder / "pretrain", folder / "composed", cfgs


def ranks(scores: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """Per query (row), how many items score strictly above its target (0 = first)."""
    return (scores > scores.gather(1, targets[:, None])).sum(dim=1).numpy()


def recalls(rank: np.ndarray) -> dict[str, float]:
    return {f"R@{k}": float((rank < k).mean() * 100) for k in KS}


def random_ranks(sizes: list[int], seed: int = 0) -> np.ndarray:
    """Each query's rank under a random ordering of its gallery of `size` items (seeded)."""
    rng = np.random.default_rng(seed)
    return np.array([rng.integers(0, size) for size in sizes])


@torch.no_grad()
def composed_scores(model, data: Path) -> tuple[dict[str, np.ndarray], list[int], list[dict]]:
    """Per val triplet: the target's rank under the composed query, text only, image only; the gallery sizes; and the
    first queries' top hits for the figure."""
    from atelier.methods.unifashion.data import ComposedTriplets
    from atelier.methods.unifashion.tokenizer import encode

    triplets = ComposedTriplets(data / "fashioniq", "val", (model.config.image_size,) * 2)
    found: dict[str, list] = {"composed": [], "text only": [], "image only": []}
    sizes, shown = [], []
    for category, gallery in triplets.galleries.items():
        items = [item for item in triplets.items if item.category == category]
        if not items:
            continue
        gallery_features = model.image_features(normalise(torch.stack([triplets.image(asin) for asin in gallery])))
        targets = torch.tensor([gallery.index(item.target) for item in items])
        references = normalise(torch.stack([triplets.image(item.reference) for item in items]))
        ids, mask = encode(model.tokenizer, [item.text for item in items], model.config.max_text_length)
        composed = model.composed_features(references, ids, mask)
        reference_vectors = torch.nn.functional.normalize(model.image_features(references).mean(dim=1), dim=-1)
        queries = {"composed": composed, "text only": model.text_features(ids, mask), "image only": reference_vectors}
        for name, vectors in queries.items():
            scores = model.similarity(gallery_features, vectors).t()
            found[name].append(ranks(scores, targets))
            if name == "composed":
                top = scores.topk(min(3, len(gallery)), dim=1).indices
                shown += [{"reference": item.reference, "target": item.target, "text": item.text,
                           "hits": [gallery[i] for i in row]} for item, row in zip(items, top.tolist())]
        sizes += [len(gallery)] * len(items)
    return {name: np.concatenate(parts) for name, parts in found.items()}, sizes, shown


@torch.no_grad()
def crossmodal_scores(model, data: Path) -> tuple[np.ndarray, np.ndarray, list[str], torch.Tensor]:
    """Ranks of each validation product's description given its image (i2t) and the reverse (t2i), its texts, and
    the images' features (reused for the nearest-caption baseline)."""
    from atelier.methods.unifashion.data import ImageTextPairs
    from atelier.methods.unifashion.tokenizer import encode

    pairs = ImageTextPairs(data / "fashiongen" / "fashiongen_256_256_validation.h5", (model.config.image_size,) * 2)
    images, texts = pairs.batch(range(len(pairs)))
    pixels = normalise(images)
    image_features = model.image_features(pixels)
    ids, mask = encode(model.tokenizer, texts, model.config.max_text_length)
    scores = model.similarity(image_features, model.text_features(ids, mask))
    targets = torch.arange(len(texts))
    return ranks(scores, targets), ranks(scores.t(), targets), texts, pixels


@torch.no_grad()
def caption_scores(model, captioner, data: Path, pixels: torch.Tensor, truths: list[str]) -> tuple[dict, dict]:
    """Per-image ROUGE-L and corpus BLEU-4 / ROUGE-L / CIDEr-D of the captioner, a constant caption and the nearest
    training image's caption, against each validation product's description."""
    from atelier.methods.unifashion.data import ImageTextPairs
    from atelier.metrics.captions import caption_scores as corpus_scores
    from atelier.metrics.captions import rouge_l

    train = ImageTextPairs(data / "fashiongen" / "fashiongen_256_256_train.h5", (model.config.image_size,) * 2)
    train_images, train_texts = train.batch(range(len(train)))
    pooled = [torch.nn.functional.normalize(model.image_features(x).mean(dim=1), dim=-1) for x in (pixels, normalise(train_images))]
    nearest = (pooled[0] @ pooled[1].t()).argmax(dim=1).tolist()
    captions = {
        "captioner": [caption.strip() for caption in _generate(captioner, pixels, model.tokenizer)],
        "constant (the most common training description)": [Counter(train_texts).most_common(1)[0][0]] * len(truths),
        "nearest training image's description": [train_texts[index] for index in nearest],
    }
    references = {str(i): [truth] for i, truth in enumerate(truths)}
    corpus, per_image = {}, {}
    for name, predicted in captions.items():
        hypotheses = {str(i): text for i, text in enumerate(predicted)}
        corpus[name] = corpus_scores(hypotheses, references)
        per_image[name] = np.array([rouge_l({key: hypotheses[key]}, {key: references[key]}) for key in references])
    return corpus, {"per_image": per_image, "examples": list(zip(truths, *captions.values()))[:4]}


def _generate(captioner, pixels: torch.Tensor, tokenizer, batch: int = 32) -> list[str]:
    return [text for start in range(0, len(pixels), batch)
            for text in captioner.generate(pixels[start : start + batch], 24, tokenizer)]


def retrieval_checks(composed: dict[str, np.ndarray], random_composed: np.ndarray, i2t: np.ndarray, t2i: np.ndarray,
                     random_i2t: np.ndarray, random_t2i: np.ndarray, rouge: dict[str, np.ndarray]) -> list[Check]:
    """The stage's claims, each a paired test over the held-out queries (rank of the target, lower is better; per-image
    ROUGE-L for captions)."""
    def lower(claim, ours, theirs):
        return paired_beats(claim, ours, theirs, lower_is_better=True, digits=2)

    names = list(rouge)
    return [
        lower("composed retrieval ranks the target higher than the same model given the text only (target rank)",
              composed["composed"], composed["text only"]),
        lower("composed retrieval ranks the target higher than the same model given the reference image only "
              "(target rank)", composed["composed"], composed["image only"]),
        lower("composed retrieval beats random ranking (target rank)", composed["composed"], random_composed),
        lower("image-to-text retrieval beats random ranking (rank of the product's own description)", i2t, random_i2t),
        lower("text-to-image retrieval beats random ranking (rank of the described product)", t2i, random_t2i),
        paired_beats("captions closer to the description than a constant caption (per-image ROUGE-L)",
                     rouge[names[0]], rouge[names[1]], digits=3),
        paired_beats("captions closer to the description than the nearest training image's description (per-image "
                     "ROUGE-L)", rouge[names[0]], rouge[names[2]], digits=3),
    ]


def run_retrieval(ctx: DemoContext) -> StageResult:
    """Synthesize (or reuse) the retrieval data, train (or reuse) both phases, score them beside the baselines."""
    from atelier.methods.unifashion.index import build_index
    from atelier.methods.unifashion.model import load_retrieval_model
    from atelier.methods.unifashion.train import load_captioner

    data = ensure_data(ctx)
    pretrain_run, composed_run, cfgs = ensure_runs(ctx, data)
    pretrained = load_retrieval_model(pretrain_run / "final")
    composed_model = load_retrieval_model(composed_run / "final")
    composed, sizes, shown = ctx.timed("score composed retrieval", lambda: composed_scores(composed_model, data))
    i2t, t2i, truths, pixels = ctx.timed("score cross-modal retrieval", lambda: crossmodal_scores(pretrained, data))
    corpus, captions = ctx.timed("caption held-out products", lambda: caption_scores(
        pretrained, load_captioner(pretrain_run / "final", pretrained), data, pixels, truths))
    images = sorted((data / "fashioniq" / "images").glob("*.png"))
    ctx.timed("index the catalogue", lambda: build_index(
        composed_model, images, 64, ctx.out / "retrieval" / "catalogue", checkpoint=str((composed_run / "final").resolve())))
    random_composed = random_ranks(sizes)
    random_i2t, random_t2i = random_ranks([len(truths)] * len(truths), 1), random_ranks([len(truths)] * len(truths), 2)
    composed_rows = [{"method": name, **recalls(rank), "mean target rank": float(rank.mean())}
                     for name, rank in {**composed, "random ranking": random_composed}.items()]
    cross_rows = [{"method": name, **{f"i2t {k}": v for k, v in recalls(a).items() if k != "R@50"},
                   **{f"t2i {k}": v for k, v in recalls(b).items() if k != "R@50"}}
                  for name, a, b in (("ITC (pretrained)", i2t, t2i), ("random ranking", random_i2t, random_t2i))]
    caption_rows = [{"captions": name, "BLEU-4": scores["BLEU-4"] * 100, "ROUGE-L": scores["ROUGE-L"] * 100,
                     "CIDEr-D": scores["CIDEr-D"] * 100} for name, scores in corpus.items()]
    checks = retrieval_checks(composed, random_composed, i2t, t2i, random_i2t, random_t2i, captions["per_image"])
    return StageResult(
        task="retrieval",
        title="Retrieval and captioning: UniFashion's first half on FashionSynth products",
        summary=retrieval_summary(composed, sizes, i2t, t2i, corpus),
        tables=[Table(f"composed retrieval, FashionIQ-style: {len(sizes)} val queries of held-out people, each ranked "
                      f"in its category's val gallery ({min(sizes)}-{max(sizes)} images); recall in %, higher is better; "
                      "mean target rank (0 = first), lower is better", composed_rows),
                Table(f"cross-modal retrieval, FashionGen-style: {len(truths)} validation products, each image against "
                      "every description and the reverse; recall in %",
                      cross_rows),
                Table(f"captions of the {len(truths)} validation products against their descriptions (x100; higher is "
                      "better)", caption_rows),
                Table("caption examples", [{"description": row[0], "captioner": row[1], "nearest training image's": row[3]}
                                           for row in captions["examples"]])],
        checks=checks,
        figures=[Figure("composed queries: reference / target / the top 3 hits of the composed query (text in the "
                        "table above)", ctx.out / "retrieval" / "composed_grid.png",
                        grid=_grid(data, spread(shown, 6)), cell=(64, 64)),
                 Figure("pretrain loss (ITC + ITM + captioning)", pretrain_run / "loss.png"),
                 Figure("composed-phase loss", composed_run / "loss.png")],
        config={"pretrain": cfgs[0], "composed": cfgs[1], "data": ctx.pick(DATA, {**DATA, **FAST_DATA})},
        notes=["The composed queries of the grid: " + "; ".join(f"row {i + 1}: {row['text']!r}"
                                                                for i, row in enumerate(spread(shown, 6))),
               f"The {len(images)} FashionIQ-layout product images are indexed with the composed model in "
               "OUT/retrieval/catalogue: what `atelier search` and the web app's Search tab query.",
               caption_note(checks[-2:])],
    )


def caption_note(caption_checks: list[Check]) -> str:
    """What the caption checks (beside the constant, beside the nearest training image's description) say, in words."""
    names = ("a constant caption", "the nearest training image's description")
    beaten = [name for name, check in zip(names, caption_checks) if check.passed]
    missed = [name for name, check in zip(names, caption_checks) if not check.passed]
    said = f"beats {' and '.join(beaten)}" if beaten else "beats neither baseline"
    return (f"The captioner shares the Q-Former with retrieval and trains {PRETRAIN_STEPS} steps here, from scratch: it "
            f"{said}" + (f", not {' or '.join(missed)}; the claim is kept and reported as measured (FashionSynth's "
                         "products repeat, so a near-duplicate's description is a strong baseline)." if missed else "."))


def _grid(data: Path, rows: list[dict]) -> list[list]:
    from PIL import Image

    def image(asin: str):
        return Image.open(data / "fashioniq" / "images" / f"{asin}.png").convert("RGB")

    return [[image(row["reference"]), image(row["target"]), *map(image, row["hits"])] for row in rows]


def retrieval_summary(composed: dict[str, np.ndarray], sizes: list[int], i2t: np.ndarray, t2i: np.ndarray,
                      corpus: dict[str, dict]) -> str:
    first = {name: float((rank < 1).mean() * 100) for name, rank in composed.items()}
    tenth = {name: float((rank < 10).mean() * 100) for name, rank in composed.items()}
    mine = corpus["captioner"]
    return (f"A tiny UniFashion retrieval model (BLIP-2 Q-Former, 8 queries, 64x64) trained from scratch here: "
            f"composed retrieval puts the target first for {first['composed']:.0f}% of {len(sizes)} held-out queries "
            f"(text only {first['text only']:.0f}%, image only {first['image only']:.0f}%, random "
            f"{float(np.mean([1 / s for s in sizes]) * 100):.0f}%) and among its first 10 for {tenth['composed']:.0f}% "
            f"(text only {tenth['text only']:.0f}%, image only {tenth['image only']:.0f}%, random "
            f"{float(np.mean([min(1.0, 10 / s) for s in sizes]) * 100):.0f}%); image -> text R@1 {float((i2t < 1).mean() * 100):.0f}% "
            f"and text -> image {float((t2i < 1).mean() * 100):.0f}% among {len(i2t)} validation products; captions "
            f"ROUGE-L {mine['ROUGE-L'] * 100:.1f}, CIDEr-D {mine['CIDEr-D'] * 100:.1f}.")

"""`atelier evaluate --protocol captions`: generated captions (what `atelier caption` writes) against reference
captions, scored with coco-caption's metrics (`atelier.metrics.captions`; METEOR through `atelier.metrics.meteor`).

Files: --generated is a JSON object {image id or path: caption}; --ground-truth a JSON object {image id: [reference
captions]} or {image id: reference}. A generated id matches the reference with the same key, else the one with the
same file stem ("images/B00X.png" -> "B00X"). Every generated caption must find a reference; references without a
generated caption are left out (and counted).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from atelier.data.formats.text import parse_json, read_text
from atelier.errors import UserError
from atelier.metrics.captions import caption_scores, tokenize
from atelier.metrics.meteor import JAR_VARIABLE, meteor, meteor_unavailable
from atelier.metrics.report import protocol_report

GENERATED = '{"image id or path": "caption", ...}'
REFERENCES = '{"image id": ["reference", ...], ...} or {"image id": "reference", ...}'
LABELS = {
    "bleu_4": "BLEU-4 x 100, corpus level, coco-caption BleuScorer (closest reference length)",
    "meteor": "METEOR 1.5 x 100, coco-caption's Java scorer (-l en -norm)",
    "rouge_l": "ROUGE-L F (beta 1.2) x 100, mean over images, as coco-caption",
    "cider_d": "CIDEr-D x 100 (sigma 6, clipped, document frequencies from these references), as coco-caption",
}


def _json_object(path: Path, what: str, expected: str) -> dict:
    data = parse_json(read_text(path, what), f"{path}: not valid JSON; expected {expected}")
    if not isinstance(data, dict):
        raise UserError(f"{path}: the {what} holds a JSON {type(data).__name__}; expected an object {expected}")
    if not data:
        raise UserError(f"{path}: the {what} is an empty object; expected {expected}")
    return data


def read_generated(path: str | os.PathLike) -> dict[str, str]:
    """{id: caption} from a JSON object of strings; UserError naming the file and the first key that is not text."""
    path = Path(path)
    data = _json_object(path, "generated captions file", GENERATED)
    for key, value in data.items():
        if not isinstance(value, str):
            raise UserError(f"{path}: the caption of {key!r} is a JSON {type(value).__name__}; expected text, as "
                            f"{GENERATED}")
    return data


def read_references(path: str | os.PathLike) -> dict[str, list[str]]:
    """{id: [references]} from a JSON object of texts or of non-empty lists of texts; UserError naming the file and
    the first key that is neither."""
    path = Path(path)
    references = {}
    for key, value in _json_object(path, "reference captions file", REFERENCES).items():
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not value or not all(isinstance(text, str) for text in value):
            raise UserError(f"{path}: the references of {key!r} are not text or a non-empty list of texts; expected "
                            f"{REFERENCES}")
        references[key] = value
    return references


def match_ids(generated: dict[str, str], references: dict[str, list[str]], generated_path, references_path) -> dict[str, str]:
    """{generated id: reference id}: the same key, else the same file stem. UserError listing the first generated ids
    without a reference, and for two generated ids that find the same reference."""
    by_stem: dict[str, list[str]] = {}
    for key in references:
        by_stem.setdefault(Path(key).stem, []).append(key)
    matched, unmatched = {}, []
    for key in generated:
        found = [key] if key in references else by_stem.get(Path(key).stem, [])
        if len(found) > 1:
            raise UserError(f"{references_path}: generated id {key!r} matches {len(found)} references by file stem "
                            f"({', '.join(map(repr, found[:3]))}); key the references uniquely")
        if found:
            matched[key] = found[0]
        else:
            unmatched.append(key)
    if unmatched:
        shown = ", ".join(repr(key) for key in unmatched[:5])
        raise UserError(f"{generated_path}: {len(unmatched)} generated ids have no reference in {references_path} "
                        f"(first: {shown}); ids match by exact key, then by file stem")
    seen: dict[str, str] = {}
    for key, reference in matched.items():
        if reference in seen:
            raise UserError(f"{generated_path}: {seen[reference]!r} and {key!r} both match the reference {reference!r}; "
                            "keep one caption per image")
        seen[reference] = key
    return matched


def evaluate_captions(generated: str | os.PathLike, ground_truth: str | os.PathLike) -> dict:
    """The `captions` protocol's report: BLEU-4, METEOR (or its reason in `missing`), ROUGE-L and CIDEr-D, x 100, of
    the generated captions against their references (BLEU-1..3 in details). Refuses bad files and unmatched ids."""
    started = time.time()
    hypotheses, references = read_generated(generated), read_references(ground_truth)
    matched = match_ids(hypotheses, references, generated, ground_truth)
    refs = {key: references[reference] for key, reference in matched.items()}
    scores = caption_scores(hypotheses, refs)
    metrics: dict = {"bleu_4": scores["BLEU-4"] * 100, "meteor": None, "rouge_l": scores["ROUGE-L"] * 100,
                     "cider_d": scores["CIDEr-D"] * 100}
    missing = {}
    reason = meteor_unavailable()
    if reason is None:
        try:
            tokenised = {key: " ".join(tokenize(text)) for key, text in hypotheses.items()}
            metrics["meteor"] = meteor(tokenised, {k: [" ".join(tokenize(r)) for r in v] for k, v in refs.items()},
                                       os.environ[JAR_VARIABLE]) * 100
        except (OSError, RuntimeError) as error:
            reason = str(error)
    if reason is not None:
        missing["meteor"] = reason
    details = {f"bleu_{n}": scores[f"BLEU-{n}"] * 100 for n in (1, 2, 3)}
    details["tokenisation"] = "lowercase, runs of letters and digits (punctuation dropped), for every metric"
    counts = {"scored": len(matched), "references": sum(len(v) for v in refs.values()),
              "unused_reference_ids": len(references) - len(matched)}
    return protocol_report("captions", "Image captioning, coco-caption metrics", "github.com/tylin/coco-caption "
                           "(pycocoevalcap: bleu, meteor, rouge, cider-D)", "generated vs references", metrics, LABELS,
                           counts, missing=missing, details=details,
                           inputs={"generated": generated, "ground_truth": ground_truth}, started=started)

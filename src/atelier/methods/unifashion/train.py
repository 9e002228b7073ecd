"""Task `retrieval`: train UniFashion's retrieval and captioning model on the shared loop.

Phase `pretrain` (BLIP-2's stage 1 plus its captioning): image-caption pairs (a FashionGen HDF5 file: FashionSynth's
`retrieval/fashiongen/` or the real one), every step ITC + ITM with hard negatives + the captioner's LM loss, each
weighted by `loss`. Phase `composed`: FashionIQ triplets, the composed query (reference image + "{cap1} and {cap2}")
trained with InfoNCE against the batch's target images. The vision tower stays frozen as in BLIP-2
(`model.freeze_vision`; a tiny model from scratch has no pretrained one and trains it); the Q-Former, its
projections, the queries, the temperature, the captioner's projection and the language model's LoRA (or, with
`model.lora_rank: null`, the whole LM) train.

`model.base: tiny` builds the tiny configuration with a word-level tokenizer made from the training texts (saved
with the run); any other value is a folder: a `retrieval` run's final/ (to go on, e.g. phase composed after
pretrain) or a `Salesforce/blip2-itm-vit-g`-layout folder. The optimiser defaults are UniFashion's: AdamW, betas
(0.9, 0.98), weight decay 0.05, one-cycle schedule.

Output: RUN/final/ holds retrieval.yaml, retrieval.safetensors and tokenizer/ (`load_retrieval_model`), and
captioner/ when a captioner trained (`load_captioner`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from atelier.config import TrainConfig
from atelier.data.formats.fashioniq import CATEGORIES
from atelier.errors import UserError
from atelier.training.base import task_device

logger = logging.getLogger(__name__)
CAPTIONER_FOLDER = "captioner"


@dataclass
class RetrievalModelSection:
    base: str = "tiny"  # tiny, a retrieval run's final/, or a Salesforce/blip2-itm-vit-g-layout folder
    language_model: str = "tiny"  # the captioner's LM: tiny, a transformers causal-LM folder, or "" for none
    lora_rank: int | None = 8  # LoRA on the language model (PEFT); null trains the whole LM (a tiny, untrained one)
    freeze_vision: bool = True  # BLIP-2 keeps its pretrained ViT frozen; a tiny model from scratch must train it
    caption_length: int = 24  # tokens per caption, the end token included


@dataclass
class RetrievalDataConfig:
    fashiongen: str = ""  # phase pretrain: a FashionGen HDF5 file of image/description pairs
    fashioniq: str = ""  # phase composed: a FashionIQ folder (captions/, image_splits/, images/)
    categories: list[str] = field(default_factory=lambda: list(CATEGORIES))
    split: Literal["train", "val"] = "train"
    max_items: int | None = None
    cache: bool = True  # keep decoded images in memory (FashionSynth-sized data)


@dataclass
class RetrievalLossConfig:
    itc: float = 1.0
    itm: float = 1.0
    caption: float = 1.0


@dataclass
class RetrievalSampleConfig:
    count: int = 4  # queries shown in RUN/samples/step-N.json
    max_new_tokens: int = 24


def paper_train_config() -> TrainConfig:
    """UniFashion's optimiser: AdamW, betas (0.9, 0.98), weight decay 0.05, one-cycle learning rate."""
    return TrainConfig(max_steps=10_000, batch_size=64, lr=1e-4, optimizer="adamw", adam_betas=(0.9, 0.98),
                       weight_decay=0.05, lr_schedule="onecycle", warmup_steps=0, checkpoint_every=1000,
                       sample_every=1000)


@dataclass
class RetrievalConfig:
    task: Literal["retrieval"] = "retrieval"
    phase: Literal["pretrain", "composed"] = "pretrain"
    model: RetrievalModelSection = field(default_factory=RetrievalModelSection)
    data: RetrievalDataConfig = field(default_factory=RetrievalDataConfig)
    loss: RetrievalLossConfig = field(default_factory=RetrievalLossConfig)
    train: TrainConfig = field(default_factory=paper_train_config)
    sample: RetrievalSampleConfig = field(default_factory=RetrievalSampleConfig)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> the float pixels BLIP-2 takes (CLIP's mean and std)."""
    from atelier.methods.unifashion.model import CLIP_MEAN, CLIP_STD

    mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


class RetrievalTask:
    """The loop's task for `retrieval` (see the module docstring); examples are rows of the phase's dataset."""

    def __init__(self, cfg: RetrievalConfig, device: str | torch.device | None = None):
        from atelier.methods.unifashion.model import RetrievalModel, RetrievalModelConfig, load_retrieval_model
        from atelier.methods.unifashion.tokenizer import build_tokenizer

        self.cfg = cfg
        self.device = task_device(device)
        torch.manual_seed(cfg.train.seed)  # new parts' initial weights (all of a tiny model) are a function of the seed
        tiny = cfg.model.base == "tiny"
        model = None if tiny else load_retrieval_model(cfg.model.base)
        if model is not None and model.tokenizer is None:
            raise UserError(f"model.base {cfg.model.base}: the folder has no tokenizer; a BLIP-2 folder needs its "
                            "tokenizer files (tokenizer.json or vocab.txt) beside config.json")
        size = RetrievalModelConfig.tiny().image_size if tiny else model.config.image_size
        self.data = self._load_data(size)
        if tiny:
            tokenizer = build_tokenizer(self._texts())
            model = RetrievalModel(RetrievalModelConfig.tiny(vocab_size=len(tokenizer)), tokenizer)
        self.model = model.to(self.device).train()
        self.tokenizer = model.tokenizer
        self.model.blip2.vision_model.requires_grad_(not cfg.model.freeze_vision)
        self.captioner = self._build_captioner() if cfg.phase == "pretrain" and cfg.model.language_model else None

    def _load_data(self, size: int):
        from atelier.methods.unifashion.data import ComposedTriplets, ImageTextPairs

        data = self.cfg.data
        if self.cfg.phase == "pretrain":
            if not data.fashiongen:
                raise UserError("config.data.fashiongen is empty: phase pretrain trains on a FashionGen HDF5 file of "
                                "image/description pairs (FashionSynth writes one: atelier synth --retrieval)")
            return ImageTextPairs(data.fashiongen, (size, size), data.max_items, cache=data.cache)
        if not data.fashioniq:
            raise UserError("config.data.fashioniq is empty: phase composed trains on a FashionIQ folder (FashionSynth "
                            "writes one: atelier synth --retrieval)")
        return ComposedTriplets(data.fashioniq, data.split, (size, size), data.categories, data.max_items)

    def _texts(self) -> list[str]:
        """Every text of the training data (the tiny tokenizer's vocabulary comes from them)."""
        if self.cfg.phase == "pretrain":
            return [self.data.file.description(index) for index in range(len(self.data))]
        return [item.text for item in self.data.items]

    def _build_captioner(self):
        from atelier.methods.unifashion.captioner import Captioner, load_language_model, tiny_language_model

        spec = self.cfg.model.language_model
        lm = tiny_language_model(self.tokenizer) if spec == "tiny" else load_language_model(spec)
        return Captioner(self.model, lm, self.cfg.model.lora_rank).to(self.device).train()

    # --- the loop's interface ---------------------------------------------------------------------------------
    def num_examples(self) -> int:
        return len(self.data)

    def collate(self, indices: list[int]) -> list[int]:
        return list(indices)

    def step_modules(self) -> list[torch.nn.Module]:
        return [self.model] + ([self.captioner] if self.captioner is not None else [])

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        state = {f"retrieval.{name}": p for name, p in self.model.named_parameters() if p.requires_grad}
        if self.captioner is not None:
            state.update({f"captioner.{name}": p for name, p in self.captioner.named_parameters()
                          if p.requires_grad and not name.startswith("retrieval.")})
        return state

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.trainable_state_dict().values())

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        from atelier.training.base import load_strict

        load_strict(self.trainable_state_dict(), state, "retrieval checkpoint")

    def _text_batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        from atelier.methods.unifashion.tokenizer import encode

        ids, mask = encode(self.tokenizer, texts, self.model.config.max_text_length)
        return ids.to(self.device), mask.to(self.device)

    def training_loss(self, batch: list[int], generator: torch.Generator, step: int) -> torch.Tensor:
        from atelier.methods.unifashion.losses import composed_loss, itc_loss, itm_loss
        from atelier.methods.unifashion.model import similarity

        if self.cfg.phase == "composed":
            references, texts, targets = self.data.batch(batch)
            ids, mask = self._text_batch(texts)
            composed = self.model.composed_features(normalise(references.to(self.device)), ids, mask)
            target_features = self.model.image_features(normalise(targets.to(self.device)))
            return composed_loss(composed, target_features, self.model.temperature)
        images, texts = self.data.batch(batch)
        pixels = normalise(images.to(self.device))
        ids, mask = self._text_batch(texts)
        weights = self.cfg.loss
        image_features = self.model.image_features(pixels)
        text_features = self.model.text_features(ids, mask)
        loss = weights.itc * itc_loss(image_features, text_features, self.model.temperature)
        if weights.itm and len(batch) > 1:
            logits = similarity(image_features, text_features) / self.model.temperature.clamp(0.001, 0.5)
            loss = loss + weights.itm * itm_loss(self.model, pixels, ids, mask, logits.detach(), generator)
        if self.captioner is not None and weights.caption:
            from atelier.methods.unifashion.captioner import encode_captions

            caption_ids, caption_mask = encode_captions(self.tokenizer, texts, self.cfg.model.caption_length)
            loss = loss + weights.caption * self.captioner.loss(pixels, caption_ids.to(self.device),
                                                               caption_mask.to(self.device))
        return loss

    @torch.no_grad()
    def sample(self, folder: Path, step: int) -> None:
        """RUN/samples/step-N.json: over the first 32 examples, the share whose own text (pretrain) or target
        (composed) ranks first among theirs, and for the first `sample.count` the generated caption beside the truth."""
        from atelier.methods.unifashion.model import similarity
        from atelier.utils.io import write_json

        self.model.eval()
        indices = list(range(min(32, len(self.data))))
        if self.cfg.phase == "composed":
            references, texts, targets = self.data.batch(indices)
            ids, mask = self._text_batch(texts)
            queries = self.model.composed_features(normalise(references.to(self.device)), ids, mask)
            scores = similarity(self.model.image_features(normalise(targets.to(self.device))), queries).t()
            report = {"step": step, "queries": len(indices), "composed_R@1_within_batch": _top1(scores)}
        else:
            images, texts = self.data.batch(indices)
            pixels = normalise(images.to(self.device))
            ids, mask = self._text_batch(texts)
            scores = similarity(self.model.image_features(pixels), self.model.text_features(ids, mask))
            report = {"step": step, "queries": len(indices), "i2t_R@1_within_batch": _top1(scores),
                      "t2i_R@1_within_batch": _top1(scores.t())}
            if self.captioner is not None:
                count = min(self.cfg.sample.count, len(indices))
                self.captioner.eval()
                generated = self.captioner.generate(pixels[:count], self.cfg.sample.max_new_tokens, self.tokenizer)
                self.captioner.train()
                report["captions"] = [{"generated": g, "truth": t} for g, t in zip(generated, texts[:count])]
        self.model.train()
        write_json(Path(folder) / f"step-{step:07d}.json", report)

    def save_outputs(self, folder: Path) -> None:
        self.model.save(folder)
        if self.captioner is not None:
            save_captioner(self.captioner, self.cfg.model, Path(folder) / CAPTIONER_FOLDER)


def _top1(scores: torch.Tensor) -> float:
    """Percent of rows whose diagonal entry is the largest (ties counted as hits)."""
    diagonal = scores.diagonal()[:, None]
    return float(((scores > diagonal).sum(dim=1) == 0).float().mean() * 100)


def save_captioner(captioner, section: RetrievalModelSection, folder: Path) -> None:
    """captioner/: captioner.json (the LM: tiny with its config, or the folder it came from; the LoRA rank) and
    captioner.safetensors (the projection and the LM's trained tensors; a tiny LM's every tensor)."""
    from atelier.utils.io import save_safetensors, write_json

    lm = captioner.lm.get_base_model() if section.lora_rank is not None else captioner.lm
    tiny = section.language_model == "tiny"
    state = _captioner_tensors(captioner, tiny)
    folder.mkdir(parents=True, exist_ok=True)
    save_safetensors({name: t.detach().contiguous() for name, t in state.items()}, folder / "captioner.safetensors")
    write_json(folder / "captioner.json", {"language_model": section.language_model, "lora_rank": section.lora_rank,
                                           "lm_config": lm.config.to_dict() if tiny else None})


def load_captioner(folder: str | Path, retrieval) -> Any:
    """The Captioner saved by a retrieval run in FOLDER/captioner/ around `retrieval` (its loaded model), in eval
    mode; UserError when the run trained none."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from atelier.methods.unifashion.captioner import Captioner, load_language_model
    from atelier.training.base import load_strict
    from atelier.weights import load_state_dict

    folder = Path(folder) / CAPTIONER_FOLDER
    if not (folder / "captioner.json").is_file():
        raise UserError(f"{folder.parent}: no captioner/ (the run trained no captioner: phase pretrain with "
                        "model.language_model set trains one)")
    spec = json.loads((folder / "captioner.json").read_text(encoding="utf-8"))
    if spec["language_model"] == "tiny":
        config = AutoConfig.for_model(**spec["lm_config"])
        lm = AutoModelForCausalLM.from_config(config)
    else:
        lm = load_language_model(spec["language_model"])
    captioner = Captioner(retrieval, lm, spec["lora_rank"])
    own = _captioner_tensors(captioner, spec["language_model"] == "tiny")
    load_strict(own, load_state_dict(folder / "captioner.safetensors"), str(folder / "captioner.safetensors"))
    return captioner.eval()


def _captioner_tensors(captioner, tiny: bool) -> dict[str, torch.Tensor]:
    """What a captioner's file holds: its own tensors (not the retrieval model's), all of them for a tiny LM (it is
    rebuilt from its config), else the trained ones (the LM itself is reloaded from its folder)."""
    return {name: p for name, p in captioner.named_parameters()
            if not name.startswith("retrieval.") and (tiny or p.requires_grad)}

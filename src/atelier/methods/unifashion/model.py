"""UniFashion's retrieval model (Zhao et al., EMNLP 2024): BLIP-2's Q-Former over a ViT, with UniFashion's composed
query, as one module around `transformers.Blip2ForImageTextRetrieval`.

Paper facts kept: 32 learnable query tokens (BLIP-2, Li et al. 2023) read the frozen ViT-g/14 (224x224, 1408 wide, 39
layers) through cross-attention in every other Q-Former layer (BERT-base: 768 wide, 12 layers); image and text meet in
a 256-wide space, L2-normalised; the image-text score is the best of the 32 query-text cosines (ITC); the image-text
matching head (ITM) reads the query outputs of queries and text fused with the image, averaged over the queries; the
contrastive temperature is learnt, initialised at 0.07. The composed query (UniFashion's composed retrieval, the SPRC
design it reranks with) fuses the queries and the modification text with the REFERENCE image and keeps the text's
first token ([CLS]) projected by the text projection; it is scored against target images like a text.

Images enter at `image_size` with CLIP's normalisation and a bicubic resize (`preprocess`), as BLIP-2's processor.
Checkpoints: atelier's folder (`retrieval.yaml` + `retrieval.safetensors` + `tokenizer/`, `RetrievalModel.save`) and
a `Salesforce/blip2-itm-vit-g`-layout folder (`config.json` + weights, `RetrievalModel.from_pretrained`); both through
`load_retrieval_model`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from atelier.config import from_dict, read_yaml, save_yaml
from atelier.errors import UserError

MODEL_CONFIG = "retrieval.yaml"
MODEL_WEIGHTS = "retrieval.safetensors"
TOKENIZER_FOLDER = "tokenizer"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
INIT_TEMPERATURE = 0.07  # BLIP-2's initial ITC temperature
QUERY_INIT_STD = 0.02  # BLIP-2 draws its query tokens from N(0, 0.02); transformers starts them at zero


@dataclass
class RetrievalModelConfig:
    """The sizes of a retrieval model. The defaults are BLIP-2's ViT-g/14 + BERT-base Q-Former
    (`Salesforce/blip2-itm-vit-g`): BERT's vocabulary plus BLIP-2's [DEC] token, text cut to 32 tokens."""

    image_size: int = 224
    patch_size: int = 14
    vision_hidden: int = 1408
    vision_layers: int = 39
    vision_heads: int = 16
    vision_mlp: int = 6144
    qformer_hidden: int = 768
    qformer_layers: int = 12
    qformer_heads: int = 12
    qformer_mlp: int = 3072
    cross_attention_frequency: int = 2  # layer i cross-attends to the image when i % frequency == 0
    num_query_tokens: int = 32
    embed_dim: int = 256  # transformers' image_text_hidden_size: the shared ITC space
    vocab_size: int = 30523
    max_text_length: int = 32  # tokens per text, [CLS] and [SEP] included
    max_positions: int = 512  # the Q-Former's text position table
    dropout: float = 0.1  # the Q-Former's hidden and attention dropout

    @classmethod
    def tiny(cls, vocab_size: int = 64) -> RetrievalModelConfig:
        """About 300K parameters: 64x64 images in 16 patches, 64-wide, 2 layers each side, 8 queries."""
        return cls(image_size=64, patch_size=16, vision_hidden=64, vision_layers=2, vision_heads=4, vision_mlp=128,
                   qformer_hidden=64, qformer_layers=2, qformer_heads=4, qformer_mlp=128, cross_attention_frequency=1,
                   num_query_tokens=8, embed_dim=32, vocab_size=vocab_size, max_text_length=16, max_positions=16,
                   dropout=0.0)

    def validate(self, where: str = "retrieval model") -> None:
        """UserError naming the first size that cannot build a model."""
        for name in ("image_size", "patch_size", "vision_hidden", "vision_layers", "vision_heads", "vision_mlp",
                     "qformer_hidden", "qformer_layers", "qformer_heads", "qformer_mlp", "cross_attention_frequency",
                     "num_query_tokens", "embed_dim", "vocab_size", "max_text_length", "max_positions"):
            if getattr(self, name) < 1:
                raise UserError(f"{where}.{name} is {getattr(self, name)}: expected a whole number >= 1")
        if self.image_size % self.patch_size:
            raise UserError(f"{where}.image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        for side in ("vision", "qformer"):
            hidden, heads = getattr(self, f"{side}_hidden"), getattr(self, f"{side}_heads")
            if hidden % heads:
                raise UserError(f"{where}.{side}_hidden {hidden} is not a multiple of {side}_heads {heads}")
        if self.max_text_length > self.max_positions:
            raise UserError(f"{where}.max_text_length {self.max_text_length} exceeds max_positions {self.max_positions}, "
                            "the Q-Former's position table: lower it or raise max_positions")
        if not 0 <= self.dropout < 1:
            raise UserError(f"{where}.dropout is {self.dropout}: expected a number in [0, 1)")

    def to_blip2(self):
        """The transformers Blip2Config of these sizes (no language model is built from its default text config)."""
        from transformers import Blip2Config, Blip2QFormerConfig, Blip2VisionConfig

        vision = Blip2VisionConfig(hidden_size=self.vision_hidden, intermediate_size=self.vision_mlp,
                                   num_hidden_layers=self.vision_layers, num_attention_heads=self.vision_heads,
                                   image_size=self.image_size, patch_size=self.patch_size)
        qformer = Blip2QFormerConfig(vocab_size=self.vocab_size, hidden_size=self.qformer_hidden,
                                     num_hidden_layers=self.qformer_layers, num_attention_heads=self.qformer_heads,
                                     intermediate_size=self.qformer_mlp, max_position_embeddings=self.max_positions,
                                     cross_attention_frequency=self.cross_attention_frequency,
                                     hidden_dropout_prob=self.dropout, attention_probs_dropout_prob=self.dropout,
                                     use_qformer_text_input=True)
        return Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(),
                           num_query_tokens=self.num_query_tokens, image_text_hidden_size=self.embed_dim)

    @classmethod
    def from_blip2(cls, config, max_text_length: int = 32) -> RetrievalModelConfig:
        """The sizes of a transformers Blip2Config (a loaded BLIP-2 folder's)."""
        vision, qformer = config.vision_config, config.qformer_config
        return cls(image_size=vision.image_size, patch_size=vision.patch_size, vision_hidden=vision.hidden_size,
                   vision_layers=vision.num_hidden_layers, vision_heads=vision.num_attention_heads,
                   vision_mlp=vision.intermediate_size, qformer_hidden=qformer.hidden_size,
                   qformer_layers=qformer.num_hidden_layers, qformer_heads=qformer.num_attention_heads,
                   qformer_mlp=qformer.intermediate_size, cross_attention_frequency=qformer.cross_attention_frequency,
                   num_query_tokens=config.num_query_tokens, embed_dim=config.image_text_hidden_size,
                   vocab_size=qformer.vocab_size, max_text_length=min(max_text_length, qformer.max_position_embeddings),
                   max_positions=qformer.max_position_embeddings, dropout=qformer.hidden_dropout_prob)


def similarity(image_feats: torch.Tensor, text_feats: torch.Tensor) -> torch.Tensor:
    """(N, M) ITC scores of N images' query features (N, Q, D) against M text features (M, D): for each pair, the
    largest of the Q query-text dot products (cosines for normalised features), as BLIP-2."""
    return torch.einsum("nqd,md->nmq", image_feats, text_feats).amax(dim=-1)


def preprocess(images: list, size: int) -> torch.Tensor:
    """(B, 3, size, size) float pixels of PIL images as BLIP-2's processor makes them: RGB, bicubic resize to
    size x size, scaled to [0, 1], normalised with CLIP's mean and std. Refuses an empty list."""
    from atelier.data.transforms import resize_image
    from atelier.utils.images import pil_to_tensor

    if not images:
        raise UserError("no images to preprocess: pass at least one image")
    pixels = (torch.stack([pil_to_tensor(resize_image(image.convert("RGB"), (size, size))) for image in images]) + 1) / 2
    return (pixels - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)


class RetrievalModel(nn.Module):
    """BLIP-2's retrieval model (`self.blip2`, a Blip2ForImageTextRetrieval), a learnable ITC temperature and, when
    given, the tokenizer its vocabulary belongs to (saved with it)."""

    similarity = staticmethod(similarity)

    def __init__(self, config: RetrievalModelConfig, tokenizer=None, blip2=None):
        """A fresh model of `config` (random weights; queries drawn as BLIP-2 does), or one around a loaded `blip2`.
        Refuses a tokenizer with more tokens than config.vocab_size."""
        from transformers import Blip2ForImageTextRetrieval

        super().__init__()
        config.validate()
        if tokenizer is not None and len(tokenizer) > config.vocab_size:
            raise UserError(f"the tokenizer has {len(tokenizer)} tokens but the retrieval model's vocab_size is "
                            f"{config.vocab_size}: build the model with vocab_size >= {len(tokenizer)}")
        self.config = config
        self.tokenizer = tokenizer
        if blip2 is None:
            blip2 = Blip2ForImageTextRetrieval(config.to_blip2())
            with torch.no_grad():
                blip2.query_tokens.normal_(0.0, QUERY_INIT_STD)
        self.blip2 = blip2
        self.temperature = nn.Parameter(torch.tensor(INIT_TEMPERATURE))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> RetrievalModel:
        """A `Salesforce/blip2-itm-vit-g`-layout folder (config.json + weights, as save_pretrained writes), with its
        tokenizer when the folder has one; the temperature starts at 0.07 (transformers' model does not keep it)."""
        from transformers import Blip2ForImageTextRetrieval

        from atelier.methods.unifashion.tokenizer import TOKENIZER_FILES, load_tokenizer

        folder = Path(folder)
        try:
            blip2 = Blip2ForImageTextRetrieval.from_pretrained(str(folder), local_files_only=True)
        except Exception as error:  # OSError (missing weights), ValueError (wrong model type), safetensors errors
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"BLIP-2 folder {folder} cannot be loaded as Blip2ForImageTextRetrieval ({first}); expected "
                            "a Salesforce/blip2-itm-vit-g-layout folder (config.json + model.safetensors)") from None
        if not blip2.config.qformer_config.use_qformer_text_input:
            raise UserError(f"BLIP-2 folder {folder}: its Q-Former has no text layers (qformer_config."
                            "use_qformer_text_input is false), so it cannot encode text; pass an image-text retrieval "
                            "checkpoint such as Salesforce/blip2-itm-vit-g")
        has_tokenizer = any((folder / name).is_file() for name in TOKENIZER_FILES)
        tokenizer = load_tokenizer(folder) if has_tokenizer else None
        return cls(RetrievalModelConfig.from_blip2(blip2.config), tokenizer, blip2=blip2)

    def vision_embeds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 1 + patches, vision_hidden) ViT outputs of (B, 3, image_size, image_size) preprocessed pixels."""
        size = self.config.image_size
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
            raise UserError(f"pixel values of shape {tuple(pixel_values.shape)}: this retrieval model takes (B, 3, "
                            f"{size}, {size}); make them with preprocess(images, {size})")
        return self.blip2.vision_model(pixel_values=pixel_values).last_hidden_state

    def query_outputs(self, pixel_values: torch.Tensor, image_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """(B, Q, qformer_hidden) Q-Former outputs of the learnt queries reading the image (unprojected); pass
        `image_embeds` (from vision_embeds) to skip the ViT."""
        embeds = self.vision_embeds(pixel_values) if image_embeds is None else image_embeds
        queries = self.blip2.query_tokens.expand(embeds.shape[0], -1, -1)
        return self.blip2.qformer(query_embeds=queries, encoder_hidden_states=embeds,
                                  encoder_attention_mask=self._ones(embeds)).last_hidden_state

    def image_features(self, pixel_values: torch.Tensor, image_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """(B, Q, D) L2-normalised projected query outputs: the image side of ITC."""
        return nn.functional.normalize(self.blip2.vision_projection(self.query_outputs(pixel_values, image_embeds)), dim=-1)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, D) L2-normalised projected first token ([CLS]) of the text alone through the Q-Former: the text side of
        ITC."""
        hidden = self.blip2.qformer(query_embeds=self.blip2.embeddings(input_ids=input_ids), query_length=0,
                                    attention_mask=attention_mask).last_hidden_state
        return nn.functional.normalize(self.blip2.text_projection(hidden[:, 0]), dim=-1)

    def fuse(self, image_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, Q + L, qformer_hidden): queries and text through the Q-Former together, the queries cross-attending to
        the image (the multimodal encoder both ITM and the composed query read)."""
        queries = self.blip2.query_tokens.expand(image_embeds.shape[0], -1, -1)
        mask = torch.cat([self._ones(queries), attention_mask], dim=1)
        return self.blip2.qformer(query_embeds=self.blip2.embeddings(input_ids=input_ids, query_embeds=queries),
                                  query_length=queries.shape[1], attention_mask=mask, encoder_hidden_states=image_embeds,
                                  encoder_attention_mask=self._ones(image_embeds)).last_hidden_state

    def itm_logits_from_embeds(self, image_embeds: torch.Tensor, input_ids: torch.Tensor,
                               attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, 2) ITM logits (no match, match) from ViT outputs: itm_head on the fused query outputs, mean over queries."""
        fused = self.fuse(image_embeds, input_ids, attention_mask)
        return self.blip2.itm_head(fused[:, : self.config.num_query_tokens]).mean(dim=1)

    def itm_logits(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, 2) ITM logits (no match, match) of image i with text i, as transformers' use_image_text_matching_head."""
        return self.itm_logits_from_embeds(self.vision_embeds(pixel_values), input_ids, attention_mask)

    def composed_features(self, reference_pixel_values: torch.Tensor, input_ids: torch.Tensor,
                          attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, D) L2-normalised composed query: the modification text's [CLS] after fusing with the queries that read
        the reference image, projected by the text projection; score it against targets' image_features with
        `similarity`."""
        fused = self.fuse(self.vision_embeds(reference_pixel_values), input_ids, attention_mask)
        return nn.functional.normalize(self.blip2.text_projection(fused[:, self.config.num_query_tokens]), dim=-1)

    def save(self, folder: str | Path) -> Path:
        """Write atelier's folder: retrieval.yaml (the config), retrieval.safetensors (every weight, the temperature
        included) and tokenizer/ when the model has a tokenizer."""
        from atelier.utils.io import save_safetensors

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_safetensors(self.state_dict(), folder / MODEL_WEIGHTS)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(folder / TOKENIZER_FOLDER))
        save_yaml(self.config, folder / MODEL_CONFIG)  # last: its presence marks a complete folder
        return folder

    @staticmethod
    def _ones(tokens: torch.Tensor) -> torch.Tensor:
        return torch.ones(tokens.shape[:2], dtype=torch.long, device=tokens.device)


def _load_atelier_folder(folder: Path) -> RetrievalModel:
    from atelier.methods.unifashion.tokenizer import load_tokenizer
    from atelier.weights import load_state_dict

    config = from_dict(RetrievalModelConfig, read_yaml(folder / MODEL_CONFIG), where=MODEL_CONFIG)
    tokenizer = load_tokenizer(folder / TOKENIZER_FOLDER) if (folder / TOKENIZER_FOLDER).is_dir() else None
    model = RetrievalModel(config, tokenizer)
    state = load_state_dict(folder / MODEL_WEIGHTS)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        problems = (f"{len(missing)} missing (first: {missing[:3]})" if missing else "",
                    f"{len(unexpected)} unexpected (first: {unexpected[:3]})" if unexpected else "",
                    f"shapes differ: {wrong[:3]}" if wrong else "")
        raise UserError(f"{folder / MODEL_WEIGHTS} does not fit {folder / MODEL_CONFIG}: "
                        f"{'; '.join(p for p in problems if p)}; save the model again")
    model.load_state_dict(state)
    return model


def load_retrieval_model(folder: str | Path) -> RetrievalModel:
    """atelier's retrieval folder (retrieval.yaml present) or a `Salesforce/blip2-itm-vit-g`-layout folder (config.json
    of model_type blip-2), in eval mode on the CPU. Refuses any other folder."""
    folder = Path(folder)
    if (folder / MODEL_CONFIG).is_file():
        model = _load_atelier_folder(folder)
    elif _is_blip2_folder(folder / "config.json"):
        model = RetrievalModel.from_pretrained(folder)
    else:
        raise UserError(f"retrieval model folder {folder}: expected atelier's ({MODEL_CONFIG} + {MODEL_WEIGHTS}) or a "
                        "Salesforce/blip2-itm-vit-g-layout folder (config.json with model_type blip-2 + weights)")
    return model.eval()


def _is_blip2_folder(config_file: Path) -> bool:
    """Whether config_file is a transformers config of model_type blip-2 (False when absent or unreadable)."""
    try:
        return json.loads(config_file.read_text(encoding="utf-8")).get("model_type") == "blip-2"
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False

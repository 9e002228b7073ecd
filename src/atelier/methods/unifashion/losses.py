"""UniFashion's retrieval losses, BLIP-2's stage-1 objectives plus the composed one.

- ITC: symmetric InfoNCE over the batch on `similarity` (best query per image-text pair) divided by the learnt
  temperature, which BLIP-2 keeps in [0.001, 0.5].
- ITM: binary image-text matching on the batch's positives and, per BLIP-2, one hard negative text per image and one
  hard negative image per text, each drawn with probability softmax(ITC logits) with the positive excluded.
- Composed: InfoNCE of each composed query (reference image + modification text) against the batch's target images.
"""

from __future__ import annotations

import torch
from torch import nn

from atelier.errors import UserError
from atelier.methods.unifashion.model import RetrievalModel, similarity

TEMPERATURE_RANGE = (0.001, 0.5)  # BLIP-2 clamps its temperature to this range


def _logits(image_feats: torch.Tensor, text_feats: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    return similarity(image_feats, text_feats) / temperature.clamp(*TEMPERATURE_RANGE)


def itc_loss(image_feats: torch.Tensor, text_feats: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Mean of image->text and text->image cross-entropy where image i matches text i: (B, Q, D) image features,
    (B, D) text features, the model's temperature (clamped to [0.001, 0.5])."""
    logits = _logits(image_feats, text_feats, temperature)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (nn.functional.cross_entropy(logits, labels) + nn.functional.cross_entropy(logits.t(), labels)) / 2


def sample_hard_negatives(similarity_logits: torch.Tensor,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(negative image index per text, negative text index per image), each (B,), drawn from the (B, B)
    image-to-text ITC logits by softmax with the diagonal (the positives) excluded, so never the positive.
    Refuses a batch of fewer than 2 pairs."""
    size = similarity_logits.shape[0]
    if size < 2:
        raise UserError(f"ITM hard negatives need a batch of at least 2 image-text pairs, got {size}: raise the batch size")
    with torch.no_grad():
        logits = similarity_logits.detach().float().clone()
        logits.fill_diagonal_(float("-inf"))
        image_for_text = torch.multinomial(logits.t().softmax(dim=1), 1, generator=generator).squeeze(1)
        text_for_image = torch.multinomial(logits.softmax(dim=1), 1, generator=generator).squeeze(1)
    return image_for_text, text_for_image


def itm_loss(model: RetrievalModel, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             similarity_logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cross-entropy of the ITM head on 3B pairs: the B positives (label 1), each text with a hard negative image
    and each image with a hard negative text (label 0), negatives from `sample_hard_negatives(similarity_logits)`
    (BLIP-2 passes its ITC logits, temperature included). The ViT runs once on the B images."""
    image_embeds = model.vision_embeds(pixel_values)
    image_for_text, text_for_image = sample_hard_negatives(similarity_logits, generator)
    images = torch.cat([image_embeds, image_embeds[image_for_text], image_embeds])
    ids = torch.cat([input_ids, input_ids, input_ids[text_for_image]])
    mask = torch.cat([attention_mask, attention_mask, attention_mask[text_for_image]])
    size = input_ids.shape[0]
    labels = torch.cat([torch.ones(size), torch.zeros(2 * size)]).long().to(input_ids.device)
    return nn.functional.cross_entropy(model.itm_logits_from_embeds(images, ids, mask), labels)


def composed_loss(composed: torch.Tensor, target_image_feats: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each composed query (B, D) over the batch's targets (B, Q, D), query i matching target i,
    scored by `similarity` over the temperature (clamped to [0.001, 0.5])."""
    logits = _logits(target_image_feats, composed, temperature).t()
    return nn.functional.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))

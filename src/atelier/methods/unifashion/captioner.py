"""UniFashion's captioner: the Q-Former's query outputs of an image, projected by one linear layer into a causal
language model's input embeddings, are a soft prompt the caption tokens follow (BLIP-2's stage 2; UniFashion tunes
the LLM with LoRA). The loss is the LM loss on the caption tokens only; generation is greedy and batched.

Any transformers causal LM fits: a tiny GPT-2 built on atelier's tokenizer (`tiny_language_model`) for tests, or a
local folder (`load_language_model`); `lora_rank` wraps it with PEFT LoRA on PEFT's default projections for its
architecture (the base weights frozen).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from atelier.errors import UserError
from atelier.methods.unifashion.model import RetrievalModel

IGNORE = -100  # label of the positions the LM loss skips


def end_token_id(tokenizer) -> int:
    """The token that ends a caption: the tokenizer's EOS, else its SEP (BERT). Refuses a tokenizer with neither."""
    for token_id in (tokenizer.eos_token_id, tokenizer.sep_token_id):
        if token_id is not None:
            return token_id
    raise UserError("the captioner's tokenizer has no end-of-text token (eos_token or sep_token): use one that has")


def encode_captions(tokenizer, captions: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each (len(captions), L): each caption's words (no start token: the soft prompt
    comes first) then the end token, cut to `max_length` tokens with the end kept, padded on the right. Refuses no
    captions and max_length < 1."""
    if not captions or max_length < 1:
        raise UserError(f"captions to encode: got {len(captions)} with max_length {max_length}; expected at least one "
                        "caption and max_length >= 1")
    end = end_token_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    rows = [tokenizer(caption, add_special_tokens=False)["input_ids"][: max_length - 1] + [end] for caption in captions]
    width = max(len(row) for row in rows)
    ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    return ids, mask


def tiny_language_model(tokenizer, hidden: int = 64, layers: int = 2, heads: int = 2, max_positions: int = 64):
    """A randomly initialised GPT2LMHeadModel over `tokenizer`'s vocabulary (a few hundred thousand parameters)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    end = end_token_id(tokenizer)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=max_positions, n_embd=hidden, n_layer=layers,
                        n_head=heads, bos_token_id=end, eos_token_id=end, pad_token_id=tokenizer.pad_token_id)
    return GPT2LMHeadModel(config)


def load_language_model(folder: str | Path):
    """A causal LM from a local transformers folder (AutoModelForCausalLM). Refuses a folder that is not one."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:  # OSError (missing files), ValueError (not a causal LM), safetensors errors
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"language model folder {folder} cannot be loaded as a causal LM ({first}); expected a "
                        "transformers folder (config.json + weights) of a causal language model") from None


class Captioner(nn.Module):
    """Retrieval model's Q-Former -> `projection` -> soft prompt of the causal LM `lm` (LoRA-wrapped when lora_rank)."""

    def __init__(self, retrieval: RetrievalModel, lm, lora_rank: int | None = None):
        super().__init__()
        if lora_rank is not None:
            lm = _with_lora(lm, lora_rank)
        self.retrieval = retrieval
        self.lm = lm
        self.projection = nn.Linear(retrieval.config.qformer_hidden, lm.get_input_embeddings().embedding_dim)

    def soft_prompt(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, Q, LM width): the image's query outputs in the LM's input-embedding space."""
        prompt = self.projection(self.retrieval.query_outputs(pixel_values))
        return prompt.to(self.lm.get_input_embeddings().weight.dtype)

    def loss(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy over the caption tokens (`encode_captions`' layout; padding and the soft prompt
        carry no loss), the first caption token predicted from the last prompt position."""
        prompt = self.soft_prompt(pixel_values)
        embeds = torch.cat([prompt, self.lm.get_input_embeddings()(input_ids)], dim=1)
        ones = torch.ones(prompt.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device)
        labels = torch.cat([torch.full_like(ones, IGNORE, dtype=torch.long), input_ids.masked_fill(attention_mask == 0, IGNORE)], dim=1)
        return self.lm(inputs_embeds=embeds, attention_mask=torch.cat([ones, attention_mask], dim=1), labels=labels).loss

    @torch.no_grad()
    def generate(self, pixel_values: torch.Tensor, max_new_tokens: int, tokenizer) -> list[str]:
        """One greedy caption per image, at most `max_new_tokens` tokens, stopped at the tokenizer's end token and
        decoded without special tokens."""
        prompt = self.soft_prompt(pixel_values)
        end = end_token_id(tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
        mask = torch.ones(prompt.shape[:2], dtype=torch.long, device=prompt.device)
        tokens = self.lm.generate(inputs_embeds=prompt, attention_mask=mask, max_new_tokens=max_new_tokens,
                                  do_sample=False, num_beams=1, eos_token_id=end, pad_token_id=pad)
        return [text.strip() for text in tokenizer.batch_decode(tokens, skip_special_tokens=True)]


def _with_lora(lm, rank: int):
    """`lm` wrapped by PEFT LoRA of rank `rank` (alpha = rank, no dropout) on PEFT's default target modules for its
    architecture; only the LoRA weights train."""
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise UserError(f"captioner lora_rank {rank}: expected a whole number >= 1, or none for full fine-tuning")
    try:
        return get_peft_model(lm, LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, task_type="CAUSAL_LM"))
    except ValueError as error:  # PEFT knows no default target modules for this architecture
        raise UserError(f"LoRA on the captioner's {type(lm).__name__}: {str(error).splitlines()[0]}") from None

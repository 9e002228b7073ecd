"""The Q-Former's (and the tiny captioner's) tokenizer: atelier's offline word-level one, or a BLIP-2 folder's own.

`build_tokenizer` trains a lowercase word-level vocabulary (`tokenizers` WordLevel, words and punctuation split
apart) from a list of texts; every encoding is `[CLS] words [SEP]`, BERT's layout, so the Q-Former's ITC text feature
is the first token as in BLIP-2. Unknown words become [UNK]. It is saved and loaded as a transformers tokenizer folder
(`save_pretrained`); `load_tokenizer` also loads a real BLIP-2 folder's BERT tokenizer (`Salesforce/blip2-itm-vit-g`
ships `bert-base-uncased`'s vocabulary plus BLIP-2's [DEC] token).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from atelier.errors import UserError

SPECIALS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
            "bos_token": "[BOS]", "eos_token": "[EOS]"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")


def build_tokenizer(texts: Iterable[str], min_count: int = 1):
    """A PreTrainedTokenizerFast whose vocabulary is the specials ([PAD] = 0, [UNK], [CLS], [SEP], [BOS], [EOS]) then
    every lowercased word or punctuation run seen at least `min_count` times in `texts`, most frequent first.
    Refuses min_count < 1 and texts with no word at all."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from tokenizers.trainers import WordLevelTrainer
    from transformers import PreTrainedTokenizerFast

    if min_count < 1:
        raise UserError(f"tokenizer min_count {min_count}: expected a whole number >= 1 (1 keeps every word)")
    texts = [text for text in texts if text.strip()]
    specials = list(SPECIALS.values())
    tokenizer = Tokenizer(WordLevel(unk_token=SPECIALS["unk_token"]))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(texts, WordLevelTrainer(min_frequency=min_count, special_tokens=specials))
    if tokenizer.get_vocab_size() == len(specials):
        raise UserError(f"no word occurs {min_count} or more times in the {len(texts)} non-empty texts given to the "
                        "tokenizer: pass the captions it should cover, or lower min_count")
    cls, sep = SPECIALS["cls_token"], SPECIALS["sep_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIALS)


def load_tokenizer(folder: str | Path):
    """The tokenizer saved in `folder`: atelier's (save_pretrained of `build_tokenizer`'s) or a BLIP-2 folder's BERT
    tokenizer, both through AutoTokenizer. Refuses a folder without tokenizer files or with unreadable ones."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not folder.is_dir() or not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(f"tokenizer folder {folder}: expected {' or '.join(TOKENIZER_FILES)} in it (save one with "
                        "build_tokenizer(...).save_pretrained, or pass a BLIP-2 folder that ships its tokenizer)")
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as error:  # OSError, ValueError, json errors: one line naming the folder
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"tokenizer folder {folder} cannot be loaded ({first}); save it again with save_pretrained "
                        "or replace its tokenizer files") from None


def encode(tokenizer, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each (len(texts), L): `[CLS] text [SEP]` cut to `max_length` tokens, padded on
    the right to the longest text."""
    batch = tokenizer(list(texts), padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]

"""A small CLIP byte-level BPE tokenizer built offline (no download), for the tiny base model.

The vocabulary is CLIP's: the 256 byte symbols, each also with the end-of-word marker `</w>`, the two special tokens,
and one merge chain per word of a fixed fashion vocabulary, so those words take one or a few tokens and any other
word still tokenizes (down to characters).
"""

from __future__ import annotations

from pathlib import Path

FASHION_WORDS = """
a an the and with in of on wearing woman man person girl boy photo illustration painting drawing sketch style
top bottom dress shirt blouse tee trousers skirt shorts jeans jacket coat shoes hair face
red blue green yellow black white pink purple orange grey gray brown navy beige
solid striped stripes dotted dots checked checks plaid floral plain
front back side view standing walking pose fashion clothing garment outfit studio background light dark
""".split()


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2 byte -> printable unicode symbol table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    symbols = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            symbols.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(s) for s in symbols)))


def build_vocab(words: list[str] = FASHION_WORDS) -> tuple[dict[str, int], list[str]]:
    """Return (vocab, merges) in CLIP's format for the given words."""
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    merges: list[str] = []
    for word in dict.fromkeys(w.lower() for w in words):
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        merged = parts[0]
        for part in parts[1:]:
            merge = f"{merged} {part}"
            merged = merged + part
            if merge not in merges:
                merges.append(merge)
                tokens.append(merged)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    return vocab, merges


def write_tokenizer_files(folder: str | Path, max_length: int = 77) -> Path:
    """Write vocab.json, merges.txt and tokenizer_config.json into `folder` (loadable by CLIPTokenizer.from_pretrained)."""
    from atelier.utils.io import write_json, write_text

    folder = Path(folder)
    vocab, merges = build_vocab()
    write_json(folder / "vocab.json", vocab)
    write_text(folder / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    write_json(
        folder / "tokenizer_config.json",
        {
            "model_max_length": max_length,
            "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "do_lower_case": True,
            "tokenizer_class": "CLIPTokenizer",
        },
    )
    return folder


def vocab_size() -> int:
    return len(build_vocab()[0])

"""UniFashion (Zhao et al., EMNLP 2024), its retrieval and captioning half, one module per part: tokenizer (offline
word-level, or a BLIP-2 folder's BERT), model (BLIP-2's Q-Former retrieval model with the composed-query head, image
preprocessing, atelier's folder and BLIP-2's), losses (ITC, ITM with hard negatives, composed InfoNCE) and captioner
(Q-Former queries as a causal LM's soft prompt, optional LoRA)."""

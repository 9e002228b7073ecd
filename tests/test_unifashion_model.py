"""UniFashion's retrieval model, losses, tokenizer and captioner at tiny size: shapes and agreement with transformers'
BLIP-2 forward, the losses on hand-made cases, a few optimisation steps that learn colours, checkpoints both ways."""

import json

import pytest
import torch
from PIL import Image

from atelier.config import from_dict
from atelier.errors import UserError
from atelier.methods.unifashion.captioner import Captioner, encode_captions, tiny_language_model
from atelier.methods.unifashion.losses import composed_loss, itc_loss, itm_loss, sample_hard_negatives
from atelier.methods.unifashion.model import (
    CLIP_MEAN,
    CLIP_STD,
    RetrievalModel,
    RetrievalModelConfig,
    load_retrieval_model,
    preprocess,
    similarity,
)
from atelier.methods.unifashion.tokenizer import build_tokenizer, encode, load_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread

COLOURS = {"red": (220, 30, 30), "blue": (30, 40, 220), "green": (30, 180, 40), "yellow": (240, 220, 20),
           "black": (10, 10, 10), "white": (245, 245, 245), "pink": (250, 150, 190), "orange": (250, 140, 0)}
NAMES = list(COLOURS)
DRESSES = [f"a {name} dress" for name in NAMES]
EDITS = [f"make it {name}" for name in NAMES]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(DRESSES + EDITS)


@pytest.fixture(scope="module")
def pixels():
    """The eight colours as solid 40x40 images, preprocessed to the tiny model's 64x64."""
    return preprocess([Image.new("RGB", (40, 40), rgb) for rgb in COLOURS.values()], 64)


def tiny_model(tokenizer, seed=0):
    torch.manual_seed(seed)
    return RetrievalModel(RetrievalModelConfig.tiny(), tokenizer)


def top1(scores: torch.Tensor, right: torch.Tensor) -> float:
    return (scores.argmax(dim=1) == right).float().mean().item()


def test_tokenizer_lowercases_words_wraps_them_and_round_trips(tokenizer, tmp_path):
    ids, mask = encode(tokenizer, ["A RED dress", "make it purple, please"], max_length=16)
    assert tokenizer.convert_ids_to_tokens(ids[0].tolist()) == ["[CLS]", "a", "red", "dress", "[SEP]", "[PAD]", "[PAD]"]
    assert tokenizer.convert_ids_to_tokens(ids[1].tolist()) == ["[CLS]", "make", "it", "[UNK]", "[UNK]", "[UNK]", "[SEP]"]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 0, 0], [1] * 7] and tokenizer.pad_token_id == 0
    assert encode(tokenizer, ["a red dress"], max_length=3)[0].tolist() == [[tokenizer.cls_token_id,
                                                                              tokenizer.convert_tokens_to_ids("a"),
                                                                              tokenizer.sep_token_id]]
    tokenizer.save_pretrained(str(tmp_path / "tok"))
    loaded = load_tokenizer(tmp_path / "tok")
    assert torch.equal(encode(loaded, ["A red dress"], 16)[0], encode(tokenizer, ["A red dress"], 16)[0])
    assert loaded.decode(ids[0], skip_special_tokens=True) == "a red dress"


def test_tokenizer_min_count_and_refusals():
    vocab = build_tokenizer(["red dress", "red coat", "blue dress"], min_count=2).get_vocab()
    assert {"red", "dress"} <= set(vocab) and not {"coat", "blue"} & set(vocab)
    with pytest.raises(UserError, match="min_count 0"):
        build_tokenizer(["red"], min_count=0)
    with pytest.raises(UserError, match="no word occurs 2 or more times"):
        build_tokenizer(["red", "  "], min_count=2)


def test_load_tokenizer_reads_a_bert_folder_and_refuses_others(tmp_path):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "dress"]) + "\n")
    (bert / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True}))
    loaded = load_tokenizer(bert)
    assert loaded("Red dress")["input_ids"] == [2, 5, 6, 3]
    with pytest.raises(UserError, match="expected tokenizer.json or tokenizer_config.json or vocab.txt"):
        load_tokenizer(tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot be loaded") as caught:
        load_tokenizer(broken)
    assert "\n" not in str(caught.value)


def test_config_sizes_tiny_and_refusals(tokenizer):
    blip2 = RetrievalModelConfig().to_blip2()  # BLIP-2 ViT-g/14 + BERT-base Q-Former, without building it
    assert (blip2.vision_config.hidden_size, blip2.vision_config.num_hidden_layers, blip2.vision_config.image_size) == (1408, 39, 224)
    assert (blip2.qformer_config.hidden_size, blip2.qformer_config.encoder_hidden_size, blip2.num_query_tokens) == (768, 1408, 32)
    assert RetrievalModelConfig.from_blip2(blip2) == RetrievalModelConfig()
    params = sum(p.numel() for p in tiny_model(tokenizer).parameters())
    assert 100_000 < params < 1_000_000
    with pytest.raises(UserError, match="qformer_hidden 30 is not a multiple of qformer_heads 4"):
        from_dict(RetrievalModelConfig, {"qformer_hidden": 30, "qformer_heads": 4}, where="retrieval")
    with pytest.raises(UserError, match="vocab_size is 16"):
        RetrievalModel(RetrievalModelConfig.tiny(vocab_size=16), tokenizer)


def test_preprocess_uses_clip_normalisation_and_the_model_refuses_other_sizes(tokenizer, pixels):
    from transformers import BlipImageProcessorPil

    assert pixels.shape == (8, 3, 64, 64)
    red = torch.tensor([220, 30, 30]) / 255
    expected = (red - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(pixels[0, :, 10, 20], expected, atol=1e-5)
    photo = Image.radial_gradient("L").convert("RGB").resize((90, 70))  # not square, not 64: resized bicubic
    blip = BlipImageProcessorPil(size={"height": 64, "width": 64})(images=[photo], return_tensors="pt")["pixel_values"]
    assert torch.allclose(preprocess([photo], 64), torch.as_tensor(blip), atol=1e-5)  # BLIP-2's processor
    with pytest.raises(UserError, match="no images"):
        preprocess([], 64)
    with pytest.raises(UserError, match=r"takes \(B, 3, 64, 64\)"):
        tiny_model(tokenizer).image_features(torch.zeros(1, 3, 32, 32))


def test_shapes_normalised_features_and_transformers_agreement(tokenizer, pixels):
    model = tiny_model(tokenizer).eval()
    ids, mask = encode(tokenizer, DRESSES[:3] + ["red"], 16)
    with torch.no_grad():
        images, texts = model.image_features(pixels[:4]), model.text_features(ids, mask)
        assert images.shape == (4, 8, 32) and texts.shape == (4, 32)
        assert torch.allclose(images.norm(dim=-1), torch.ones(4, 8)) and torch.allclose(texts.norm(dim=-1), torch.ones(4))
        assert images[0].std(dim=0).mean() > 1e-3  # the queries differ (BLIP-2's random init, not transformers' zeros)
        itc = model.blip2(pixel_values=pixels[:4], input_ids=ids, attention_mask=mask)
        assert torch.allclose(itc.logits_per_image, model.similarity(images, texts), atol=1e-5)
        itm = model.blip2(pixel_values=pixels[:4], input_ids=ids, attention_mask=mask, use_image_text_matching_head=True)
        assert model.itm_logits(pixels[:4], ids, mask).shape == (4, 2)
        assert torch.allclose(itm.logits_per_image, model.itm_logits(pixels[:4], ids, mask), atol=1e-5)
        composed = model.composed_features(pixels[:4], ids, mask)
    assert composed.shape == (4, 32) and torch.allclose(composed.norm(dim=-1), torch.ones(4))
    assert not torch.allclose(composed, texts, atol=1e-3)  # the reference image changes the query
    assert model.temperature.item() == pytest.approx(0.07)


def test_similarity_is_the_best_query():
    images = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [-1.0, 0.0]]])  # 2 images x 2 queries
    texts = torch.tensor([[1.0, 0.0], [0.0, -1.0], [0.8, 0.6]])
    hand = [[max(1.0, 0.0), max(0.0, -1.0), max(0.8, 0.6)], [max(0.6, -1.0), max(-0.8, 0.0), max(0.48 + 0.48, -0.8)]]
    assert torch.allclose(similarity(images, texts), torch.tensor(hand))


def test_itc_and_composed_losses_prefer_matched_pairs():
    texts = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1, 0.0], [0.0, 1.0, 0.1], [0.1, 0.0, 1.0]]), dim=-1)
    images = torch.stack([texts + 0.05 * torch.randn(3, 3, generator=torch.Generator().manual_seed(q)) for q in range(2)], 1)
    images = torch.nn.functional.normalize(images, dim=-1)  # (3 images, 2 queries, 3): each near its own text
    temperature = torch.tensor(0.07)
    matched, shuffled = itc_loss(images, texts, temperature), itc_loss(images, texts[[1, 2, 0]], temperature)
    assert matched < 0.1 < 5 < shuffled
    assert composed_loss(texts, images, temperature) < 0.1 < 5 < composed_loss(texts[[2, 0, 1]], images, temperature)
    assert itc_loss(images, texts, torch.tensor(5.0)) == itc_loss(images, texts, torch.tensor(0.5))  # clamped as BLIP-2


def test_hard_negatives_never_pick_the_positive_and_follow_the_similarity():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 6, generator=generator) + 20 * torch.eye(6)  # the positives score highest
    for _ in range(100):
        image_for_text, text_for_image = sample_hard_negatives(logits, generator)
        assert (image_for_text != torch.arange(6)).all() and (text_for_image != torch.arange(6)).all()
    peaked = torch.zeros(3, 3)
    peaked[0, 2] = 30.0  # image 0 looks like text 2: text 2's negative image is 0, image 0's negative text is 2
    image_for_text, text_for_image = sample_hard_negatives(peaked, generator)
    assert image_for_text[2] == 0 and text_for_image[0] == 2
    with pytest.raises(UserError, match="at least 2"):
        sample_hard_negatives(torch.zeros(1, 1))


def test_itm_loss_scores_positives_against_both_hard_negatives(tokenizer, pixels):
    model = tiny_model(tokenizer).eval()
    ids, mask = encode(tokenizer, DRESSES[:4], 16)
    logits = torch.randn(4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        loss = itm_loss(model, pixels[:4], ids, mask, logits, torch.Generator().manual_seed(7))
        image_for_text, text_for_image = sample_hard_negatives(logits, torch.Generator().manual_seed(7))
        every = torch.arange(4)
        pairs = [(every, every, 1), (image_for_text, every, 0), (every, text_for_image, 0)]  # (images, texts, label)
        by_hand = torch.cat([torch.nn.functional.cross_entropy(model.itm_logits(pixels[i], ids[t], mask[t]),
                                                               torch.full((4,), label), reduction="none")
                             for i, t, label in pairs]).mean()
    assert torch.allclose(loss, by_hand, atol=1e-5)


def test_itc_training_retrieves_the_right_colour(tokenizer, pixels):
    model = tiny_model(tokenizer)
    ids, mask = encode(tokenizer, DRESSES, 16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(40):
        loss = itc_loss(model.image_features(pixels), model.text_features(ids, mask), model.temperature)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        scores = similarity(model.image_features(pixels), model.text_features(ids, mask))
    assert top1(scores, torch.arange(8)) >= 0.75  # chance: 1/8
    assert top1(scores.t(), torch.arange(8)) >= 0.75


def test_composed_query_learns_a_colour_change(tokenizer, pixels):
    model = tiny_model(tokenizer)
    ids, mask = encode(tokenizer, EDITS, 16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):  # reference colour + "make it X" -> X, the eight targets distinct in each batch
        target = torch.randperm(8, generator=generator)
        reference = (target + torch.randint(1, 8, (8,), generator=generator)) % 8
        composed = model.composed_features(pixels[reference], ids[target], mask[target])
        loss = composed_loss(composed, model.image_features(pixels[target]), model.temperature)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    target = torch.arange(8)
    with torch.no_grad():  # unseen pairing: every reference three colours away from its target
        scores = similarity(model.image_features(pixels), model.composed_features(pixels[(target + 3) % 8], ids, mask)).t()
    assert top1(scores, target) >= 0.5  # chance: 1/8


def test_captioner_overfits_four_captions_and_generates_them(tokenizer, pixels):
    captions = ["a red dress", "a blue striped shirt", "green jeans", "a black coat with buttons"]
    words = build_tokenizer(captions + DRESSES)
    torch.manual_seed(0)
    captioner = Captioner(RetrievalModel(RetrievalModelConfig.tiny(), words), tiny_language_model(words))
    images = pixels[[0, 1, 2, 4]]
    ids, mask = encode_captions(words, captions, 16)
    assert words.convert_ids_to_tokens(ids[2].tolist()) == ["green", "jeans", "[EOS]", "[PAD]", "[PAD]", "[PAD]"]
    optimizer = torch.optim.AdamW(captioner.parameters(), lr=3e-3)
    for _ in range(120):
        loss = captioner.loss(images, ids, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    captioner.eval()
    assert captioner.generate(images, 12, words) == captions
    assert captioner.generate(images[:1], 2, words) == ["a red"]  # stopped by max_new_tokens
    with pytest.raises(UserError, match="at least one caption"):
        encode_captions(words, [], 16)


@pytest.mark.filterwarnings("ignore:fan_in_fan_out:UserWarning")  # PEFT's note on GPT-2's Conv1D layers
def test_captioner_lora_trains_only_the_adapters(tokenizer, pixels):
    captioner = Captioner(tiny_model(tokenizer), tiny_language_model(tokenizer), lora_rank=4)
    trainable = {name for name, p in captioner.lm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    ids, mask = encode_captions(tokenizer, DRESSES[:2], 16)
    captioner.loss(pixels[:2], ids, mask).backward()
    assert all(p.grad is not None for name, p in captioner.lm.named_parameters() if name in trainable)
    assert len(captioner.generate(pixels[:2], 3, tokenizer)) == 2
    with pytest.raises(UserError, match="lora_rank 0"):
        Captioner(tiny_model(tokenizer), tiny_language_model(tokenizer), lora_rank=0)


def test_save_and_load_give_identical_outputs(tokenizer, pixels, tmp_path):
    model = tiny_model(tokenizer, seed=3).eval()
    with torch.no_grad():
        model.temperature.fill_(0.05)
    ids, mask = encode(tokenizer, DRESSES[:2], 16)
    model.save(tmp_path / "run")
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"retrieval.yaml", "retrieval.safetensors", "tokenizer"}
    loaded = load_retrieval_model(tmp_path / "run")
    assert loaded.config == model.config and not loaded.training and loaded.temperature.item() == pytest.approx(0.05)
    with torch.no_grad():
        assert torch.equal(loaded.image_features(pixels[:2]), model.image_features(pixels[:2]))
        assert torch.equal(loaded.composed_features(pixels[:2], ids, mask), model.composed_features(pixels[:2], ids, mask))
        assert torch.equal(loaded.text_features(*encode(loaded.tokenizer, DRESSES[:2], 16)), model.text_features(ids, mask))
    (tmp_path / "run" / "retrieval.yaml").write_text(
        (tmp_path / "run" / "retrieval.yaml").read_text().replace("qformer_layers: 2", "qformer_layers: 3"))
    with pytest.raises(UserError, match="does not fit") as caught:
        load_retrieval_model(tmp_path / "run")
    assert "\n" not in str(caught.value)
    with pytest.raises(UserError, match="expected atelier's"):
        load_retrieval_model(tmp_path)


def test_a_blip2_itm_folder_loads_with_its_tokenizer(tokenizer, pixels, tmp_path):
    from transformers import Blip2ForImageTextRetrieval

    torch.manual_seed(1)
    blip2 = Blip2ForImageTextRetrieval(RetrievalModelConfig.tiny().to_blip2()).eval()
    blip2.save_pretrained(str(tmp_path / "blip2"))
    tokenizer.save_pretrained(str(tmp_path / "blip2"))
    loaded = load_retrieval_model(tmp_path / "blip2")
    assert loaded.config == RetrievalModelConfig.tiny() and loaded.tokenizer is not None
    ids, mask = encode(loaded.tokenizer, DRESSES[:3], 16)
    with torch.no_grad():
        expected = blip2(pixel_values=pixels[:3], input_ids=ids, attention_mask=mask).logits_per_image
        got = similarity(loaded.image_features(pixels[:3]), loaded.text_features(ids, mask))
        expected_itm = blip2(pixel_values=pixels[:3], input_ids=ids, attention_mask=mask,
                             use_image_text_matching_head=True).logits_per_image
        assert torch.allclose(got, expected, atol=1e-6)
        assert torch.allclose(loaded.itm_logits(pixels[:3], ids, mask), expected_itm, atol=1e-6)
    (tmp_path / "blip2" / "model.safetensors").unlink()
    with pytest.raises(UserError, match="cannot be loaded as Blip2ForImageTextRetrieval"):
        load_retrieval_model(tmp_path / "blip2")

"""The retrieval task's examples, read from FashionSynth's FashionGen and FashionIQ layouts."""

from __future__ import annotations

import pytest
import torch

from atelier.errors import UserError
from atelier.methods.unifashion.data import ComposedTriplets, ImageTextPairs


@pytest.fixture(scope="module")
def retrieval_root(tmp_path_factory):
    from atelier.data.synth import write_retrieval

    root = tmp_path_factory.mktemp("retrieval")
    write_retrieval(root, identities=14, size=(64, 64), seed=1)
    return root


def test_image_text_pairs_read_fashiongen_rows(retrieval_root):
    path = retrieval_root / "fashiongen" / "fashiongen_256_256_train.h5"
    pairs = ImageTextPairs(path, (32, 24), limit=5, cache=True)
    images, texts = pairs.batch([0, 3, 4])
    assert len(pairs) == 5 and images.shape == (3, 3, 32, 24) and images.dtype == torch.uint8
    assert all(isinstance(text, str) and text for text in texts)
    assert pairs[3][0] is pairs[3][0]  # cached after the first read
    assert not (images[0] == 255).all()  # a garment, not a blank page


def test_composed_triplets_pair_reference_text_and_target(retrieval_root):
    triplets = ComposedTriplets(retrieval_root / "fashioniq", "train", (32, 32))
    references, texts, targets = triplets.batch([0, 1])
    assert references.shape == targets.shape == (2, 3, 32, 32)
    assert " and " in texts[0] and texts[0][0].isupper()
    first = triplets.items[0]
    assert first.reference != first.target and first.target in triplets.galleries[first.category]
    assert len(ComposedTriplets(retrieval_root / "fashioniq", "train", (32, 32), limit=3)) == 3
    with pytest.raises(UserError, match="test split has no targets"):
        ComposedTriplets(retrieval_root / "fashioniq", "test", (32, 32))

"""The shapes text encoder: word tokenizer over the scene grammar's vocabulary, shapes, masking, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adatsq.core.models.shapes import scenes
from adatsq.core.models.shapes.text_encoder import (
    PAD,
    UNK,
    ShapesTextEncoder,
    TextEncoderConfig,
    WordTokenizer,
    prompt_words,
    shapes_vocabulary,
)


def test_vocabulary_covers_the_grammar() -> None:
    vocab = shapes_vocabulary()
    assert vocab[:2] == (PAD, UNK)
    tok = WordTokenizer(vocab, 16)
    rng = np.random.default_rng(1)
    prompts = [
        scenes.sample(rng, c, 32, s)[2]
        for c in scenes.CATEGORIES
        for s in ("train", "eval")
        for _ in range(50)
    ]
    ids, mask = tok.encode(prompts)
    assert not (ids == 1).any()  # no <unk>
    assert tok.max_words(prompts) <= 16  # text_len 16 holds every prompt
    assert int(mask.sum(1).max()) == tok.max_words(prompts)


def test_tokenizer_round_trip_and_unknown() -> None:
    tok = WordTokenizer(shapes_vocabulary(), 16)
    ids, mask = tok.encode(["A photo of a Red circle!", "a zebra, square"])
    assert ids.shape == mask.shape == (2, 16) and ids.dtype == torch.long
    assert tok.decode(ids[0]) == "a photo of a red circle"
    assert prompt_words("Two objects: a cyan square") == ["two", "objects", "a", "cyan", "square"]
    assert ids[1, 1].item() == tok.index[UNK] and tok.decode(ids[1]) == "a <unk> square"
    assert mask[0].tolist() == [True] * 6 + [False] * 10
    with pytest.raises(ValueError, match="starts with"):
        WordTokenizer(("a", "b"), 4)


def test_encoder_shapes_and_padding_is_inert() -> None:
    torch.manual_seed(0)
    enc = ShapesTextEncoder(
        TextEncoderConfig(shapes_vocabulary(), joint_attention_dim=48, pooled_projection_dim=40)
    )
    enc.train()  # the slow path, as in training (eval may take PyTorch's nested-tensor fast path)
    ids, mask = enc.tokenizer.encode(["a red circle", "a photo of three squares"])
    hidden, pooled = enc(ids, mask)
    assert hidden.shape == (2, 16, 48) and pooled.shape == (2, 40)
    assert torch.all(hidden[~mask] == 0)
    noisy = ids.clone()
    noisy[~mask] = torch.randint(2, len(enc.tokenizer), (int((~mask).sum()),))
    hidden2, pooled2 = enc(noisy, mask)
    torch.testing.assert_close(pooled2, pooled)
    torch.testing.assert_close(hidden2, hidden)
    alone_h, alone_p = enc(*enc.tokenizer.encode(["a red circle"]))
    torch.testing.assert_close(alone_p, pooled[:1])  # batch neighbours do not leak in


def test_save_load_round_trip(tmp_path) -> None:
    torch.manual_seed(1)
    enc = ShapesTextEncoder(TextEncoderConfig(shapes_vocabulary())).eval()
    enc.save(tmp_path / "text_encoder")
    back = ShapesTextEncoder.load(tmp_path / "text_encoder")
    assert back.config == enc.config
    with torch.no_grad():
        a, b = enc.encode(["one blue triangle"]), back.encode(["one blue triangle"])
    torch.testing.assert_close(a, b)
    assert back.num_bytes() == 4 * sum(p.numel() for p in enc.state_dict().values())

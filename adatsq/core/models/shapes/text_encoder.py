"""The shapes model's own text encoder: a word-level tokenizer and a two-layer transformer, trained jointly
with the Flux transformer and shipped with it in full precision (the compiler quantizes the transformer only).

Tokenizing lower-cases the prompt and keeps its runs of ``[a-z0-9]`` (punctuation is dropped); each word maps
to its index in a fixed vocabulary (``<pad>`` = 0, ``<unk>`` = 1, then the words), padded or cut to
``text_len``. The encoder computes, for token ids ``w`` with mask ``m`` (1 on words, 0 on padding),

    h⁰ = E[w] + P,   hˡ = Layerˡ(hˡ⁻¹, keys masked by m),   h = LN(h^L)
    encoder_hidden_states = m ⊙ (h·W_t + b_t)                           [b, text_len, joint_attention_dim]
    pooled_projections = ((Σᵢ mᵢ hᵢ) / max(Σᵢ mᵢ, 1))·W_p + b_p          [b, pooled_projection_dim]

so padding changes neither output: keys at padded positions are masked in every layer, padded rows of the
hidden states are zero, and the pooled vector is the mean over words only.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "PAD",
    "UNK",
    "ShapesTextEncoder",
    "TextEncoderConfig",
    "WordTokenizer",
    "prompt_words",
    "shapes_vocabulary",
]

PAD = "<pad>"
UNK = "<unk>"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

_WORD = re.compile(r"[a-z0-9]+")


def prompt_words(text: str) -> list[str]:
    """The words of a prompt: lower-cased runs of letters and digits (punctuation and spaces split)."""
    return _WORD.findall(text.lower())


def shapes_vocabulary() -> tuple[str, ...]:
    """Every word the scene grammar can write (:mod:`~adatsq.core.models.shapes.scenes`): the words of all
    train and eval templates, the shapes and their plurals, the colours, number words and relation phrases;
    after ``<pad>`` and ``<unk>``, sorted. A checkpoint stores its own copy (``config.json``), so a later change
    of the grammar cannot silently renumber a trained encoder."""
    from adatsq.core.models.shapes import scenes

    templates = [t for ts in (*scenes.TRAIN_TEMPLATES.values(), *scenes.EVAL_TEMPLATES.values()) for t in ts]
    words = [re.sub(r"\{\w+\}s?", " ", t) for t in templates]  # placeholders (and a plural "s") out
    words += [*scenes.SHAPES, *(s + "s" for s in scenes.SHAPES), *scenes.COLORS]
    words += [*scenes.NUMBERS.values(), *scenes.RELATIONS.values()]
    return WordTokenizer.build_vocab(words)


class WordTokenizer:
    """Word ↔ id over a fixed vocabulary; unknown words map to ``<unk>``, short prompts are padded."""

    def __init__(self, vocab: Sequence[str], text_len: int) -> None:
        if list(vocab[:2]) != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}; got {list(vocab[:2])}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("the vocabulary repeats a word")
        self.vocab = tuple(vocab)
        self.text_len = text_len
        self.index = {w: i for i, w in enumerate(self.vocab)}

    @staticmethod
    def build_vocab(words: Iterable[str]) -> tuple[str, ...]:
        """``<pad>``, ``<unk>`` and the sorted distinct words of ``words`` (each split by :func:`prompt_words`)."""
        found = {w for text in words for w in prompt_words(text)}
        return (PAD, UNK, *sorted(found))

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (int64) and word mask (bool), both [len(prompts), text_len]; longer prompts are cut."""
        ids = torch.zeros(len(prompts), self.text_len, dtype=torch.long)
        for row, text in enumerate(prompts):
            words = prompt_words(text)[: self.text_len]
            ids[row, : len(words)] = torch.tensor([self.index.get(w, 1) for w in words], dtype=torch.long)
        return ids, ids != 0

    def decode(self, ids: torch.Tensor) -> str:
        """The words of one row of ids, padding dropped."""
        return " ".join(self.vocab[i] for i in ids.tolist() if i != 0)

    def max_words(self, prompts: Iterable[str]) -> int:
        return max((len(prompt_words(p)) for p in prompts), default=0)


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
    """Everything that fixes the encoder's architecture, vocabulary included (saved as ``config.json``)."""

    vocab: tuple[str, ...]
    text_len: int = 16
    width: int = 128
    layers: int = 2
    heads: int = 4
    ff_mult: int = 4
    joint_attention_dim: int = 128
    pooled_projection_dim: int = 128

    def to_json(self) -> dict[str, Any]:
        return {"_class_name": "ShapesTextEncoder", **dataclasses.asdict(self), "vocab": list(self.vocab)}

    @staticmethod
    def from_json(data: dict[str, Any]) -> TextEncoderConfig:
        fields = {f.name for f in dataclasses.fields(TextEncoderConfig)}
        unknown = set(data) - fields - {"_class_name"}
        if unknown:
            raise ValueError(f"unknown text encoder config keys: {sorted(unknown)}")
        kwargs = {k: v for k, v in data.items() if k in fields}
        return TextEncoderConfig(**{**kwargs, "vocab": tuple(kwargs["vocab"])})


class ShapesTextEncoder(nn.Module):
    """Token embedding + learned positions + ``layers`` pre-norm transformer encoder layers (no dropout, so
    training is deterministic); ``forward`` gives Flux's ``encoder_hidden_states`` and ``pooled_projections``."""

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = WordTokenizer(config.vocab, config.text_len)
        w = config.width
        self.embed = nn.Embedding(len(config.vocab), w)
        self.positions = nn.Parameter(torch.randn(config.text_len, w) * 0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                w,
                config.heads,
                config.ff_mult * w,
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(w)
        self.to_hidden = nn.Linear(w, config.joint_attention_dim)
        self.to_pooled = nn.Linear(w, config.pooled_projection_dim)

    @property
    def device(self) -> torch.device:
        return self.positions.device

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(encoder_hidden_states [b, L, joint], pooled_projections [b, pooled]) for ids/mask [b, L]."""
        h = self.embed(ids) + self.positions[: ids.shape[1]]
        pad = ~mask
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=pad)
        h = self.norm(h)
        m = mask.to(h.dtype).unsqueeze(-1)
        hidden = self.to_hidden(h) * m
        pooled = self.to_pooled((h * m).sum(1) / m.sum(1).clamp(min=1.0))
        return hidden, pooled

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize ``prompts`` and run the encoder on its own device."""
        ids, mask = self.tokenizer.encode(prompts)
        return self(ids.to(self.device), mask.to(self.device))

    # --- files ----------------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """``folder/config.json`` and ``folder/model.safetensors`` (float32)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_NAME).write_text(json.dumps(self.config.to_json(), indent=1) + "\n")
        state = {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_NAME))

    @classmethod
    def load(cls, folder: str | Path) -> ShapesTextEncoder:
        """The encoder :meth:`save` wrote to ``folder``, in eval mode, float32, on the CPU."""
        from safetensors.torch import load_file

        folder = Path(folder)
        config = TextEncoderConfig.from_json(json.loads((folder / CONFIG_NAME).read_text()))
        model = cls(config)
        model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
        return model.eval()

    def num_bytes(self) -> int:
        """Size of the saved weights (float32)."""
        return 4 * sum(p.numel() for p in self.state_dict().values())

"""An untrained shapes-flux checkpoint (seeded random weights in the trained layout), for tests of the code
paths around the trained model without the trained weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def untrained_checkpoint(root: Path, **config: Any) -> Path:
    """``root/checkpoint``: the registry's shapes-flux transformer (``config`` overrides entries of its
    config) and text encoder with seeded random weights, written by train.py's ``write_checkpoint``."""
    import torch
    from diffusers import FluxTransformer2DModel

    from adatsq.core.models.shapes.family import TEXT_LEN, TRANSFORMER_CONFIG
    from adatsq.core.models.shapes.text_encoder import ShapesTextEncoder, TextEncoderConfig, shapes_vocabulary
    from adatsq.core.models.shapes.train import write_checkpoint

    torch.manual_seed(0)
    cfg = {k: v for k, v in {**TRANSFORMER_CONFIG, **config}.items() if not k.startswith("_")}
    transformer = FluxTransformer2DModel(**cfg).eval()
    encoder = ShapesTextEncoder(TextEncoderConfig(shapes_vocabulary(), text_len=TEXT_LEN)).eval()
    folder = root / "checkpoint"
    write_checkpoint(folder, transformer, encoder, {"note": "untrained: seeded random weights"})
    return folder

"""``shapes-flux``: a small FluxTransformer2DModel trained here on rendered 32×32 shapes, pixels as latents.

There is no VAE: the latent is the image itself, x ∈ [-1, 1]^{3×32×32}, packed into 2×2 patches as Flux packs
its latents, so 256 tokens of 12 channels (``in_channels = 12``). Prompts go through the checkpoint's own
:class:`~adatsq.core.models.shapes.text_encoder.ShapesTextEncoder` (full precision). Everything else is Flux's
calling convention (:class:`~adatsq.core.models.flux.FluxFamily`): the transformer gets ``timestep = t/1000 =
σ``, predicts the flow velocity v = ε − x₀ of x_σ = (1 − σ)·x₀ + σ·ε, and the Euler scheduler steps
x ← x + (σ_next − σ)·v over σ = linspace(1, 1/N, N) (shift 1, no dynamic shifting).

Widths (hidden 192 = 3 heads × 64): every linear's K is m·2^k with a Paley m and a multiple of the group size
64: 192 = 12·16, ff.net.2 768 = 12·64, single-block proj_out 960 = 192 + 768 = 60·16.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adatsq.core.models.base import Conditioning, LayerRule, ModelSpec, Role
from adatsq.core.models.flux import FLUX_RULES, FluxFamily

__all__ = [
    "CALIBRATION_PROMPTS",
    "CHECKPOINT_DIR",
    "SHAPES_FLUX_RULES",
    "GROUP_SIZE",
    "SCHEDULER_CONFIG",
    "TEXT_LEN",
    "TRAIN_COMMAND",
    "TRANSFORMER_CONFIG",
    "ShapesFluxFamily",
    "checkpoint_bytes",
]

#: where the trained checkpoint ships (resolved: the strict editable install links files, not folders)
CHECKPOINT_DIR = Path(__file__).resolve().with_name("checkpoint")
TRAIN_COMMAND = (
    "python -m adatsq.core.models.shapes.train --out runs/shapes-flux --device cuda --minutes 9 "
    f"--export {CHECKPOINT_DIR}"
)

TEXT_LEN = 16
GROUP_SIZE = 64
TRANSFORMER_CONFIG: dict[str, Any] = {
    "_class_name": "FluxTransformer2DModel",
    "patch_size": 1,
    "in_channels": 12,
    "out_channels": None,  # = in_channels
    "num_layers": 3,
    "num_single_layers": 6,
    "attention_head_dim": 64,
    "num_attention_heads": 3,
    "joint_attention_dim": 128,
    "pooled_projection_dim": 128,
    "guidance_embeds": False,
    "axes_dims_rope": [16, 24, 24],
}
# σ_i = linspace(1, 1/N, N), unshifted: shift 1 because a 32×32 image (256 tokens) is the resolution the
# schedule was trained at, and dynamic shifting (mu from the token count) would only matter across resolutions.
SCHEDULER_CONFIG: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}


def _calibration_prompts(n: int = 48, seed: int = 0) -> tuple[str, ...]:
    import numpy as np

    from adatsq.core.models.shapes.scenes import CATEGORIES, sample

    rng = np.random.default_rng(seed)
    return tuple(sample(rng, CATEGORIES[i % len(CATEGORIES)], split="train")[2] for i in range(n))


#: the default calibration prompts: 48 training-split sentences, 8 per GenEval category, fixed
CALIBRATION_PROMPTS: tuple[str, ...] = _calibration_prompts()


def checkpoint_bytes(transformer: nn.Module, text_encoder: nn.Module) -> int:
    """Weight bytes of a checkpoint: the transformer in float16 (2 bytes a parameter), the encoder in
    float32 (4 bytes); config files not counted."""
    return 2 * sum(p.numel() for p in transformer.state_dict().values()) + 4 * sum(
        p.numel() for p in text_encoder.state_dict().values()
    )


#: Flux's layer rules, but ``x_embedder`` (K = 12 pixel channels: too narrow for the int3 packing's K
#: multiple of 8, and 2.3 k parameters) stays in full precision
SHAPES_FLUX_RULES: tuple[LayerRule, ...] = tuple(
    r for r in FLUX_RULES if r.pattern != r"x_embedder|context_embedder"
) + (
    LayerRule(r"context_embedder", Role.WEIGHT_ONLY),
    LayerRule(r"x_embedder", Role.KEEP),
)


class ShapesFluxFamily(FluxFamily):
    """Flux's calling convention on pixel latents, with the checkpoint's own text encoder."""

    name = "shapes_flux"
    text_components = ("text_encoder",)
    geneval = True
    rules = SHAPES_FLUX_RULES

    def latent_shape(self, spec: ModelSpec, model: nn.Module, resolution: tuple[int, ...]) -> tuple[int, ...]:
        """(C, H, W) = (in_channels / 4, H, W): the image itself, no VAE (H and W even, for 2×2 packing)."""
        height, width = resolution
        if height % 2 or width % 2:
            raise ValueError(f"{spec.name}: resolution {resolution} must be even (2×2 packing)")
        return (model.config.in_channels // 4, height, width)

    def load_text_encoders(self, source: str, revision: str | None, dtype: torch.dtype) -> Any:
        """The :class:`ShapesTextEncoder` of ``<source>/text_encoder``, in float32 whatever ``dtype`` (it is
        not compiled; the transformer's inputs are cast where the model runs)."""
        from adatsq.core.models.shapes.text_encoder import ShapesTextEncoder

        folder = Path(source) / "text_encoder"
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"no shapes text encoder in {folder}; train the shapes-flux checkpoint with `{TRAIN_COMMAND}`"
            )
        return ShapesTextEncoder.load(folder)

    def encode_prompts(self, pipe: Any, prompts: Sequence[str], spec: ModelSpec) -> Conditioning:
        """Flux's two tensors from the shapes encoder, float32 on the CPU."""
        if pipe.config.text_len != spec.text_len:
            raise ValueError(
                f"{spec.name}: the text encoder pads to {pipe.config.text_len} tokens, the spec to {spec.text_len}"
            )
        with torch.no_grad():
            hidden, pooled = pipe.encode(list(prompts))
        return Conditioning(
            {"prompt_embeds": hidden.float().cpu(), "pooled_prompt_embeds": pooled.float().cpu()}
        )

    def default_prompts(self, spec: ModelSpec) -> tuple[str, ...]:
        """:data:`CALIBRATION_PROMPTS` (training-split sentences: the eval set's wordings stay unseen)."""
        return CALIBRATION_PROMPTS

    def decode_images(self, latents: torch.Tensor) -> list[Any]:
        """The latent is the image: [-1, 1] → uint8 0..255, H×W×3 per sample."""
        x = ((latents.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return list(x.permute(0, 2, 3, 1).cpu().numpy())

    def missing_checkpoint(self, spec: ModelSpec) -> str | None:
        """Why ``spec``'s shipped checkpoint cannot be loaded (the command that makes it), or None."""
        root = Path(spec.hf_id)
        if (root / "transformer" / "config.json").is_file():
            return None
        return f"{spec.name} has no trained checkpoint in {root} yet; train one with `{TRAIN_COMMAND}`"

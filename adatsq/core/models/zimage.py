"""Z-Image (ZImageTransformer2DModel, ZImagePipeline).

The pipeline feeds the transformer *lists* (one (C, 1, h, w) latent and one (L, D) caption tensor per
sample) and a reversed time ``(1000 − t)/1000`` = 1 − σ (the transformer scales it by ``t_scale``); it
negates the output before ``scheduler.step``. CFG, when ``guidance_scale > 0``, is batched into one call
(latents repeated, positive then negative captions) and combined as ``pos + g·(pos − neg)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from adatsq.core.models.base import (
    Conditioning,
    Family,
    LayerRule,
    ModelSpec,
    Role,
    dynamic_shift_mu,
    placement,
)

_BLOCK = r"(?:noise_refiner|context_refiner|layers)\.\d+"
_FINAL = r"all_final_layer\.\d+-\d+"  # keyed by "{patch}-{f_patch}"
# Every nn.Linear matches exactly one rule (LayerInventory.from_rules raises otherwise). Full size (Turbo):
# 238 act + 37 weight-only + 1 kept = 276 linears.
ZIMAGE_RULES = (
    LayerRule(rf"({_BLOCK})\.attention\.to_[qkv]", Role.ACT, r"\1.attention.qkv"),
    LayerRule(rf"{_BLOCK}\.attention\.to_out\.0", Role.ACT),
    LayerRule(rf"({_BLOCK})\.feed_forward\.w[13]", Role.ACT, r"\1.feed_forward.w13"),
    LayerRule(rf"{_BLOCK}\.feed_forward\.w2", Role.ACT),
    # adaLN modulation (noise_refiner and layers blocks; the final layer's SiLU→Linear): one t vector per sample
    LayerRule(rf"{_BLOCK}\.adaLN_modulation\.0|{_FINAL}\.adaLN_modulation\.1", Role.WEIGHT_ONLY),
    LayerRule(r"t_embedder\.mlp\.[02]|cap_embedder\.1|all_x_embedder\.\d+-\d+", Role.WEIGHT_ONLY),
    LayerRule(rf"{_FINAL}\.linear", Role.KEEP),  # the final projection stays in full precision
)


class ZImageFamily(Family):
    name = "zimage"
    transformer_class = "ZImageTransformer2DModel"
    pipeline_class = "ZImagePipeline"
    rules = ZIMAGE_RULES

    def latent_shape(self, spec: ModelSpec, model: nn.Module, resolution: tuple[int, ...]) -> tuple[int, ...]:
        height, width = resolution
        return (model.config.in_channels, 2 * (height // 16), 2 * (width // 16))

    def synthetic_conditioning(
        self, spec: ModelSpec, model: nn.Module, n: int, generator: torch.Generator
    ) -> Conditioning:
        d = model.config.cap_feat_dim
        return Conditioning(
            {
                "prompt_embeds": torch.randn(n, spec.text_len, d, generator=generator),
                "negative_prompt_embeds": torch.randn(n, spec.text_len, d, generator=generator),
            }
        )

    def encode_prompts(self, pipe: Any, prompts: Sequence[str], spec: ModelSpec) -> Conditioning:
        pos, neg = pipe.encode_prompt(
            prompt=list(prompts),
            negative_prompt=[""] * len(prompts),
            do_classifier_free_guidance=True,
            max_sequence_length=spec.text_len,
        )

        def pad(embs: list[torch.Tensor]) -> torch.Tensor:
            # Real captions differ in length; a fixed length keeps the per-sample tensors stackable, and the
            # lengths (below) let velocity hand the transformer each caption unpadded, as the pipeline does.
            out = torch.zeros(len(embs), spec.text_len, embs[0].shape[-1])
            for i, e in enumerate(embs):
                out[i, : e.shape[0]] = e[: spec.text_len].float().cpu()
            return out

        def lengths(embs: list[torch.Tensor]) -> torch.Tensor:
            return torch.tensor([min(e.shape[0], spec.text_len) for e in embs], dtype=torch.long)

        return Conditioning(
            {
                "prompt_embeds": pad(pos),
                "negative_prompt_embeds": pad(neg),
                "prompt_lengths": lengths(pos),
                "negative_prompt_lengths": lengths(neg),
            }
        )

    def set_timesteps(
        self, scheduler: Any, spec: ModelSpec, steps: int, latent_shape: tuple[int, ...]
    ) -> None:
        _, h, w = latent_shape
        mu = dynamic_shift_mu(scheduler.config, (h // 2) * (w // 2))
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps).tolist(), mu=mu)

    def velocity(
        self, model: nn.Module, latents: torch.Tensor, t: torch.Tensor, cond: Conditioning, spec: ModelSpec
    ) -> torch.Tensor:
        device, dtype = placement(model)
        b = latents.shape[0]
        timestep = (1000 - t.expand(b).float().to(device)) / 1000
        caps = _captions(cond, "prompt", device, dtype)
        x = latents.to(device, dtype)
        cfg = spec.guidance_scale > 0
        if cfg:
            x = x.repeat(2, 1, 1, 1)
            timestep = timestep.repeat(2)
            caps = caps + _captions(cond, "negative_prompt", device, dtype)
        out = model(list(x.unsqueeze(2).unbind(0)), timestep.to(dtype), caps, return_dict=False)[0]
        pred = torch.stack([o.float() for o in out], dim=0)
        if cfg:
            pos, neg = pred[:b], pred[b:]
            pred = pos + spec.guidance_scale * (pos - neg)
        return -pred.squeeze(2)


def _captions(cond: Conditioning, name: str, device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
    """One caption-feature tensor per sample, cut to its length where encoded prompts recorded one (synthetic
    conditioning has none: every row is ``text_len`` long)."""
    embeds = list(cond[f"{name}_embeds"].to(device, dtype).unbind(0))
    if f"{name}_lengths" not in cond.tensors:
        return embeds
    return [e[: int(n)] for e, n in zip(embeds, cond[f"{name}_lengths"].tolist(), strict=True)]

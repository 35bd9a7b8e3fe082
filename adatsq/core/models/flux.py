"""Flux (FluxTransformer2DModel, FluxPipeline): dev and schnell.

Per step the pipeline calls ``transformer(hidden_states=pack(latents), timestep=t/1000, guidance=g or None,
pooled_projections, encoder_hidden_states, txt_ids, img_ids)``; the transformer multiplies timestep and
guidance by 1000 again. The sigma schedule is ``linspace(1, 1/N, N)`` shifted by ``mu`` that grows with the
image token count (dynamic shifting, dev) or unshifted (schnell). The output is the flow velocity.
Latents are kept unpacked here, (C, h, w) with h = 2·⌊H/16⌋, and packed into 2×2 patches per call.
"""

from __future__ import annotations

import re
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

VAE_SCALE = 8

# Every nn.Linear matches exactly one rule (LayerInventory.from_rules raises otherwise). Full size (dev):
# 418 act + 85 weight-only + 1 kept = 504 linears; schnell has no guidance_embedder (83 weight-only).
FLUX_RULES = (
    LayerRule(r"(transformer_blocks\.\d+)\.attn\.to_[qkv]", Role.ACT, r"\1.attn.qkv"),
    LayerRule(r"(transformer_blocks\.\d+)\.attn\.add_[qkv]_proj", Role.ACT, r"\1.attn.add_qkv"),
    LayerRule(r"transformer_blocks\.\d+\.attn\.to_out\.0", Role.ACT),
    LayerRule(r"transformer_blocks\.\d+\.attn\.to_add_out", Role.ACT),
    LayerRule(r"transformer_blocks\.\d+\.ff(_context)?\.net\.(0\.proj|2)", Role.ACT),
    LayerRule(r"(single_transformer_blocks\.\d+)\.(attn\.to_[qkv]|proj_mlp)", Role.ACT, r"\1.qkv_mlp"),
    LayerRule(r"single_transformer_blocks\.\d+\.proj_out", Role.ACT),
    LayerRule(  # adaLN modulation: one SiLU(temb) vector per sample
        r"transformer_blocks\.\d+\.norm1(_context)?\.linear|single_transformer_blocks\.\d+\.norm\.linear"
        r"|norm_out\.linear",
        Role.WEIGHT_ONLY,
    ),
    LayerRule(r"time_text_embed\.(timestep|guidance|text)_embedder\.linear_[12]", Role.WEIGHT_ONLY),
    LayerRule(r"x_embedder|context_embedder", Role.WEIGHT_ONLY),
    LayerRule(r"proj_out", Role.KEEP),  # the final projection stays in full precision
)


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) → (B, h/2·w/2, 4C), the pipeline's ``_pack_latents``."""
    from diffusers import FluxPipeline

    b, c, h, w = latents.shape
    return FluxPipeline._pack_latents(latents, b, c, h, w)


def unpack(tokens: torch.Tensor, c: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`pack`: (B, h/2·w/2, 4C) → (B, C, h, w)."""
    b = tokens.shape[0]
    x = tokens.reshape(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


def image_ids(h: int, w: int) -> torch.Tensor:
    from diffusers import FluxPipeline

    return FluxPipeline._prepare_latent_image_ids(1, h // 2, w // 2, "cpu", torch.float32)


class FluxFamily(Family):
    name = "flux"
    transformer_class = "FluxTransformer2DModel"
    pipeline_class = "FluxPipeline"
    text_components = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
    rules = FLUX_RULES

    def input_split(self, model: nn.Module, name: str) -> tuple[int, ...] | None:
        """A single block's ``proj_out`` reads torch.cat([attention output, MLP hidden], dim=-1)
        (FluxSingleTransformerBlock.forward): (3072, 12288) for Flux-dev."""
        found = re.fullmatch(r"(single_transformer_blocks\.\d+)\.proj_out", name)
        if found is None:
            return None
        block = model.get_submodule(found[1])
        return (block.attn.to_q.out_features, block.proj_mlp.out_features)

    def latent_shape(self, spec: ModelSpec, model: nn.Module, resolution: tuple[int, ...]) -> tuple[int, ...]:
        height, width = resolution
        c = model.config.in_channels // 4
        return (c, 2 * (height // (VAE_SCALE * 2)), 2 * (width // (VAE_SCALE * 2)))

    def synthetic_conditioning(
        self, spec: ModelSpec, model: nn.Module, n: int, generator: torch.Generator
    ) -> Conditioning:
        cfg = model.config
        return Conditioning(
            {
                "prompt_embeds": torch.randn(n, spec.text_len, cfg.joint_attention_dim, generator=generator),
                "pooled_prompt_embeds": torch.randn(n, cfg.pooled_projection_dim, generator=generator),
            }
        )

    def encode_prompts(self, pipe: Any, prompts: Sequence[str], spec: ModelSpec) -> Conditioning:
        embeds, pooled, _text_ids = pipe.encode_prompt(
            prompt=list(prompts), prompt_2=None, max_sequence_length=spec.text_len
        )
        return Conditioning(
            {"prompt_embeds": embeds.float().cpu(), "pooled_prompt_embeds": pooled.float().cpu()}
        )

    def set_timesteps(
        self, scheduler: Any, spec: ModelSpec, steps: int, latent_shape: tuple[int, ...]
    ) -> None:
        _, h, w = latent_shape
        mu = dynamic_shift_mu(scheduler.config, (h // 2) * (w // 2))
        sigmas = np.linspace(1.0, 1 / steps, steps)
        scheduler.set_timesteps(sigmas=sigmas, mu=mu)

    def velocity(
        self, model: nn.Module, latents: torch.Tensor, t: torch.Tensor, cond: Conditioning, spec: ModelSpec
    ) -> torch.Tensor:
        b, c, h, w = latents.shape
        device, dtype = placement(model)
        hidden = pack(latents).to(device, dtype)
        timestep = t.expand(b).to(device, dtype) / 1000
        guidance = None
        if model.config.guidance_embeds:
            guidance = torch.full((b,), spec.guidance_scale, dtype=torch.float32).to(device, dtype)
        text = cond["prompt_embeds"]
        out = model(
            hidden_states=hidden,
            timestep=timestep,
            guidance=guidance,
            pooled_projections=cond["pooled_prompt_embeds"].to(device, dtype),
            encoder_hidden_states=text.to(device, dtype),
            txt_ids=torch.zeros(text.shape[1], 3, dtype=dtype, device=device),
            img_ids=image_ids(h, w).to(device, dtype),
            return_dict=False,
        )[0]
        return unpack(out.float(), c, h, w)

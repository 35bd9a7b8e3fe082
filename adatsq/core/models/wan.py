"""Wan2.1 (WanTransformer3DModel, WanPipeline).

Per step the pipeline calls the transformer twice with the same latents and the raw integer timestep
``t`` (0…999): once with the prompt embeddings and once with the negative ones, then
``v = v_uncond + g·(v_cond − v_uncond)`` (classifier-free guidance). UniPC in flow-prediction mode with a
static flow shift sets the timesteps. Latents are (C, F', H/8, W/8) with F' = (F − 1)/4 + 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from adatsq.core.models.base import Conditioning, Family, LayerRule, ModelSpec, Role, placement

# Every nn.Linear matches exactly one rule (LayerInventory.from_rules raises otherwise). Full size (1.3B):
# 300 act + 3 weight-only + 3 kept = 306 linears.
WAN_RULES = (
    LayerRule(r"(blocks\.\d+)\.attn1\.to_[qkv]", Role.ACT, r"\1.attn1.qkv"),
    LayerRule(r"(blocks\.\d+)\.attn2\.to_[kv]", Role.ACT, r"\1.attn2.kv"),
    LayerRule(r"blocks\.\d+\.(attn1\.to_out\.0|attn2\.(to_q|to_out\.0))", Role.ACT),
    LayerRule(r"blocks\.\d+\.ffn\.net\.(0\.proj|2)", Role.ACT),
    # Wan keeps time_embedder in float32 (_keep_in_fp32_modules) and reads its parameter dtype: keep it as is
    LayerRule(r"condition_embedder\.time_embedder\.linear_[12]", Role.KEEP),
    LayerRule(r"condition_embedder\.(time_proj|text_embedder\.linear_[12])", Role.WEIGHT_ONLY),
    LayerRule(r"proj_out", Role.KEEP),  # the final projection stays in full precision
)


class WanFamily(Family):
    name = "wan"
    transformer_class = "WanTransformer3DModel"
    pipeline_class = "WanPipeline"
    scheduler_class = "UniPCMultistepScheduler"
    rules = WAN_RULES

    def latent_shape(self, spec: ModelSpec, model: nn.Module, resolution: tuple[int, ...]) -> tuple[int, ...]:
        frames, height, width = resolution
        return (model.config.in_channels, (frames - 1) // 4 + 1, height // 8, width // 8)

    def synthetic_conditioning(
        self, spec: ModelSpec, model: nn.Module, n: int, generator: torch.Generator
    ) -> Conditioning:
        d = model.config.text_dim
        return Conditioning(
            {
                "prompt_embeds": torch.randn(n, spec.text_len, d, generator=generator),
                "negative_prompt_embeds": torch.randn(n, spec.text_len, d, generator=generator),
            }
        )

    def encode_prompts(self, pipe: Any, prompts: Sequence[str], spec: ModelSpec) -> Conditioning:
        pos, neg = pipe.encode_prompt(
            prompt=list(prompts), negative_prompt=[""] * len(prompts), max_sequence_length=spec.text_len
        )
        return Conditioning({"prompt_embeds": pos.float().cpu(), "negative_prompt_embeds": neg.float().cpu()})

    def set_timesteps(
        self, scheduler: Any, spec: ModelSpec, steps: int, latent_shape: tuple[int, ...]
    ) -> None:
        scheduler.set_timesteps(steps)

    def scheduler_timestep(self, t: torch.Tensor) -> torch.Tensor:
        return t.long()

    def velocity(
        self, model: nn.Module, latents: torch.Tensor, t: torch.Tensor, cond: Conditioning, spec: ModelSpec
    ) -> torch.Tensor:
        device, dtype = placement(model)
        b = latents.shape[0]
        x = latents.to(device, dtype)
        timestep = t.expand(b).to(device)
        v = model(
            hidden_states=x,
            timestep=timestep,
            encoder_hidden_states=cond["prompt_embeds"].to(device, dtype),
            return_dict=False,
        )[0]
        if spec.guidance_scale > 1.0:
            neg = cond["negative_prompt_embeds"].to(device, dtype)
            v_u = model(hidden_states=x, timestep=timestep, encoder_hidden_states=neg, return_dict=False)[0]
            v = v_u + spec.guidance_scale * (v - v_u)
        return v.float()

"""End-to-end metrics for the final selection among Pareto paths (lower is better).

``latent`` (compiler/stages/search.latent_metric): relative error of the final latents against the
full-precision sample over held-out seeds; works for every model, tiny ones included.

``clip``: the paper's choice. The quantized model samples the held-out prompts, the real pipeline's VAE decodes
the latents, and CLIP (transformers ``CLIPModel``, ViT-L/14 by default) scores image-text similarity; the metric
is the negative mean CLIP score. Real models only: the tiny models have no VAE and no text. Not run here (no
checkpoint can be downloaded); the code follows the documented diffusers/transformers APIs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from adatsq.compiler.context import CompileContext
from adatsq.compiler.prompts import conditioning
from adatsq.core.errors import CompileError
from adatsq.core.models.base import run_sampler
from adatsq.core.models.registry import load_pipeline
from adatsq.passes.quant_linear import quant_linears, set_activation_bits

__all__ = ["CLIP_MODEL", "clip_metric"]

CLIP_MODEL = "openai/clip-vit-large-patch14"


def clip_metric(
    ctx: CompileContext,
    qmodel: nn.Module,
    unit_bits_to_layers: Callable[[CompileContext, Sequence[int]], dict[str, int]],
) -> Callable[[Sequence[tuple[int, ...]]], float]:
    if ctx.spec.is_tiny:
        raise CompileError(
            f"--metric clip needs a real model with a VAE and prompts; {ctx.spec.name} has none (use --metric latent)"
        )
    from transformers import CLIPModel, CLIPProcessor

    c = ctx.config
    generator = torch.Generator().manual_seed(c.seed + 10_000)
    cond, prompts = conditioning(ctx, c.heldout_samples, c.calib_samples, generator)
    noise = ctx.family.sample_noise(ctx.spec, ctx.model, ctx.resolution, c.heldout_samples, generator)
    pipe = load_pipeline(
        ctx.spec, ctx.model, c.model_path, text_encoders=False
    )  # the VAE; prompts are encoded
    clip = CLIPModel.from_pretrained(CLIP_MODEL).eval()
    processor = CLIPProcessor.from_pretrained(CLIP_MODEL)
    modules = quant_linears(qmodel)

    def decode(latents: torch.Tensor) -> list:
        vae = pipe.vae
        x = latents.to(vae.dtype)
        if hasattr(vae.config, "shift_factor") and vae.config.shift_factor is not None:
            x = x / vae.config.scaling_factor + vae.config.shift_factor
        else:
            x = x / vae.config.scaling_factor
        images = vae.decode(x, return_dict=False)[0]
        return pipe.image_processor.postprocess(images, output_type="pil")

    def metric(step_bits: Sequence[tuple[int, ...]]) -> float:
        def before(i: int) -> None:
            set_activation_bits(qmodel, unit_bits_to_layers(ctx, step_bits[i]), modules)

        with torch.no_grad():
            final = run_sampler(ctx.family, ctx.spec, qmodel, noise, cond, ctx.steps, before_step=before)
            inputs = processor(
                text=list(prompts or []), images=decode(final), return_tensors="pt", padding=True
            )
            out = clip(**inputs)
            score = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds).mean()
        return -100.0 * float(score)

    return metric

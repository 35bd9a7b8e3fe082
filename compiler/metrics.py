"""End-to-end metrics for the final selection among Pareto paths (lower is better).

``latent`` (compiler/stages/search.latent_metric): relative error of the final latents against the
full-precision sample over held-out seeds; works for every model, tiny ones included.

``clip``: the paper's choice. The quantized model samples the held-out prompts, the real pipeline's VAE decodes
the latents, and CLIP (transformers ``CLIPModel``, ViT-L/14 by default) scores image-text similarity; the metric
is the negative mean CLIP score. Real models only: the tiny models have no VAE and no text. Not run here (no
checkpoint can be downloaded); the code follows the documented diffusers/transformers APIs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from adatsq.compiler.context import CompileContext
from adatsq.compiler.prompts import conditioning
from adatsq.core.errors import CompileError
from adatsq.core.models.base import Conditioning, sample_paths
from adatsq.core.models.registry import load_pipeline
from adatsq.passes.quant_linear import quant_linears, set_activation_bits

__all__ = ["CLIP_MODEL", "PathBits", "PathsMetric", "UnitBitsToLayers", "clip_metric", "score_paths"]

#: a path as the metrics see it: per step, the activation bits of each unit
PathBits = Sequence[tuple[int, ...]]
UnitBitsToLayers = Callable[[CompileContext, Sequence[int]], dict[str, int]]
#: an end-to-end metric: (paths, advance(n) per finished path) → one value per path, lower is better
PathsMetric = Callable[[Sequence[PathBits], Callable[[int], None]], list[float]]

CLIP_MODEL = "openai/clip-vit-large-patch14"


def score_paths(
    ctx: CompileContext,
    qmodel: nn.Module,
    unit_bits_to_layers: UnitBitsToLayers,
    noise: torch.Tensor,
    cond: Conditioning,
    paths: Sequence[PathBits],
    score: Callable[[torch.Tensor], float],
    advance: Callable[[int], None],
) -> list[float]:
    """``score(final latents)`` of the quantized model sampling ``noise`` along each path (its activation
    bits switched per step), every prefix several paths share sampled once (``core.models.sample_paths``)."""
    modules = quant_linears(qmodel)
    values = [math.nan] * len(paths)

    def set_step(bits: Sequence[int]) -> None:
        set_activation_bits(qmodel, unit_bits_to_layers(ctx, bits), modules)

    def on_final(j: int, final: torch.Tensor) -> None:
        values[j] = score(final)
        advance(1)

    with torch.no_grad():
        taken = sample_paths(ctx.family, ctx.spec, qmodel, noise, cond, paths, set_step, on_final)  # type: ignore[arg-type]
    ctx.log(
        f"end-to-end metric: {len(paths)} paths in {taken} sampling steps "
        f"({sum(len(p) for p in paths)} without the shared prefixes)"
    )
    return values


def clip_metric(ctx: CompileContext, qmodel: nn.Module, unit_bits_to_layers: UnitBitsToLayers) -> PathsMetric:
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

    def decode(latents: torch.Tensor) -> list:
        vae = pipe.vae
        x = latents.to(vae.dtype)
        if hasattr(vae.config, "shift_factor") and vae.config.shift_factor is not None:
            x = x / vae.config.scaling_factor + vae.config.shift_factor
        else:
            x = x / vae.config.scaling_factor
        images = vae.decode(x, return_dict=False)[0]
        return pipe.image_processor.postprocess(images, output_type="pil")

    def score(final: torch.Tensor) -> float:
        inputs = processor(text=list(prompts or []), images=decode(final), return_tensors="pt", padding=True)
        out = clip(**inputs)
        return -100.0 * float(torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds).mean())

    def metric(paths: Sequence[PathBits], advance: Callable[[int], None]) -> list[float]:
        return score_paths(ctx, qmodel, unit_bits_to_layers, noise, cond, paths, score, advance)

    return metric

"""``--metric geneval``: the search's final selection by GenEval-mini, as the paper selects by CLIP score.

For a path (one activation-bit configuration per step) the quantized model samples the fixed evaluation
prompts (:func:`geneval_prompts`: ``--heldout-samples`` prompts per GenEval category from the eval templates,
never the training sentences) from held-out noise seeds; the family decodes the final latents to images
(shapes-flux: the latents are the pixels), the detector reads them and each prompt is scored by GenEval's
rules (compiler/geneval/score.py). The metric is

    m = −accuracy + 10⁻³ · ‖x0_q − x0_fp‖² / ‖x0_fp‖²      (lower is better)

The accuracy is the GenEval total (mean over categories), a multiple of 1/(prompts per category · 6); the
relative error of the final samples against the full-precision ones for the same noise, at most ~1 in
practice, only breaks ties between paths of equal accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from adatsq.compiler.context import CompileContext
from adatsq.compiler.geneval.score import evaluate
from adatsq.compiler.metrics import PathBits, PathsMetric, UnitBitsToLayers, score_paths
from adatsq.core.models.base import run_sampler
from adatsq.core.models.shapes.scenes import PromptSpec, evaluation_set

__all__ = ["TIE_BREAK", "geneval_metric", "geneval_prompts"]

#: weight of the relative final-sample error in the metric (a tie-break under the accuracy's 1/(6·n) steps)
TIE_BREAK = 1e-3


def geneval_prompts(ctx: CompileContext) -> list[tuple[PromptSpec, str]]:
    """The evaluation prompts of the metric: ``--heldout-samples`` per category, fixed (seed 1234)."""
    return evaluation_set(ctx.config.heldout_samples)


def geneval_metric(
    ctx: CompileContext, qmodel: nn.Module, unit_bits_to_layers: UnitBitsToLayers
) -> PathsMetric:
    """The metric of a path (module docstring); CompileContext refuses ``--metric geneval`` for a family
    whose samples are no shape scenes."""
    from adatsq.compiler.prompts import encoded

    specs, texts = zip(*geneval_prompts(ctx), strict=True)
    cond = encoded(ctx, list(texts))
    generator = torch.Generator().manual_seed(ctx.config.seed + 10_000)
    noise = ctx.family.sample_noise(ctx.spec, ctx.model, ctx.resolution, len(texts), generator)
    with torch.no_grad():
        reference = run_sampler(ctx.family, ctx.spec, ctx.model, noise, cond, ctx.steps).float()

    def score(final: torch.Tensor) -> float:
        final = final.float()
        accuracy = evaluate(ctx.family.decode_images(final), list(specs), n_boot=0).total.accuracy
        error = float((final - reference).pow(2).sum() / reference.pow(2).sum())
        return -accuracy + TIE_BREAK * error

    def metric(paths: Sequence[PathBits], advance: Callable[[int], None]) -> list[float]:
        return score_paths(ctx, qmodel, unit_bits_to_layers, noise, cond, paths, score, advance)

    return metric

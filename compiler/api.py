"""The Python API: ``adatsq.compile(transformer, model="flux-dev", target=3.1, out="engines/")``."""

from __future__ import annotations

from typing import Any

from torch import nn

from adatsq.compiler.context import CompileContext
from adatsq.compiler.pipeline import run_pipeline
from adatsq.compiler.settings import CompileConfig
from adatsq.core.errors import CompileError
from adatsq.core.schedule import Schedule

__all__ = ["compile_model"]


def compile_model(
    transformer: nn.Module | None = None, *, model: str, target: float, out: str, **options: Any
) -> Schedule:
    """Compile ``transformer`` (a diffusers DiT of the registry entry ``model``'s class) into ``out``.

    ``transformer=None`` loads the entry itself (or ``model_path``). ``options`` are the fields of
    :class:`CompileConfig` (steps, resolution, calib_samples, candidates, tau, weight_bits, seed,
    max_engines, until, ...). Returns the schedule written to ``out/schedule.json``.
    """
    config = CompileConfig(model=model, target=float(target), out=str(out), **options)
    ctx = CompileContext(config, model=transformer)
    if transformer is not None:
        expected = ctx.family.transformer_class
        if type(transformer).__name__ != expected:
            raise CompileError(f"{model} expects a {expected}, got a {type(transformer).__name__}")
    run_pipeline(ctx)
    return ctx.schedule

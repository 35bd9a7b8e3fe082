"""The W8A8 sanity check of the method tests (CPU and GPU): a compiled tiny-flux's samples against full
precision."""

from __future__ import annotations

from pathlib import Path

import torch

from adatsq.core.models import family_of, get_spec, load_transformer, run_sampler
from adatsq.core.schedule import load_schedule
from adatsq.export.onnx_export import load_quantized_model
from adatsq.passes.quant_linear import quant_linears, set_activation_bits


def w8a8_error(out: Path, steps: int) -> float:
    """Relative squared error of the W8A8 model compiled into ``out`` (sampled on the CPU reference path,
    2 draws, ``steps`` steps) against full precision."""
    schedule = load_schedule(out / "schedule.json")
    assert set(schedule.weight_bits.values()) == {8}
    spec = get_spec("tiny-flux")
    fam = family_of(spec)
    fp = load_transformer(spec)
    q = load_quantized_model(out)
    modules = quant_linears(q)
    g = torch.Generator().manual_seed(123)
    cond = fam.synthetic_conditioning(spec, fp, 2, g)
    noise = fam.sample_noise(spec, fp, spec.resolution, 2, g)
    with torch.no_grad():
        ref = run_sampler(fam, spec, fp, noise, cond, steps)
        got = run_sampler(
            fam,
            spec,
            q,
            noise,
            cond,
            steps,
            before_step=lambda i: set_activation_bits(q, schedule.bits_at(i), modules),
        )
    return float((got - ref).pow(2).sum() / ref.pow(2).sum())

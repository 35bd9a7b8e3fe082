"""Inputs of a tiny-flux calibration: the model and seeded synthetic conditioning and noise."""

from __future__ import annotations

from typing import Any

import torch


def tiny_flux_inputs(samples: int) -> tuple[Any, Any, torch.nn.Module, Any, torch.Tensor]:
    """(spec, family, model, cond, noise) of tiny-flux with ``samples`` samples from generator seed 0."""
    from adatsq.core.models import family_of, get_spec, load_transformer

    spec = get_spec("tiny-flux")
    fam = family_of(spec)
    model = load_transformer(spec)
    g = torch.Generator().manual_seed(0)
    cond = fam.synthetic_conditioning(spec, model, samples, g)
    noise = fam.sample_noise(spec, model, spec.resolution, samples, g)
    return spec, fam, model, cond, noise

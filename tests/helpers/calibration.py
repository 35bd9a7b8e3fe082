"""Inputs of a tiny model's sampling or calibration: the model and seeded synthetic conditioning and noise."""

from __future__ import annotations

from typing import Any

import torch


def tiny_inputs(samples: int, name: str = "tiny-flux") -> tuple[Any, Any, torch.nn.Module, Any, torch.Tensor]:
    """(spec, family, model, cond, noise) of the tiny model ``name`` with ``samples`` samples from generator
    seed 0."""
    from adatsq.core.models import family_of, get_spec, load_transformer

    spec = get_spec(name)
    fam = family_of(spec)
    model = load_transformer(spec)
    g = torch.Generator().manual_seed(0)
    cond = fam.synthetic_conditioning(spec, model, samples, g)
    noise = fam.sample_noise(spec, model, spec.resolution, samples, g)
    return spec, fam, model, cond, noise

"""Calibration: trajectories through the real scheduler and the flow-matching Fisher I[t, l]."""

from __future__ import annotations

import pytest
import torch

from adatsq.calib.calibrate import calibrate, fisher_information
from adatsq.core.models import family_of, get_spec, load_transformer, run_sampler


@pytest.fixture(scope="module")
def tiny_wan_calibration():
    spec = get_spec("tiny-wan")
    fam = family_of(spec)
    model = load_transformer(spec)
    g = torch.Generator().manual_seed(0)
    cond = fam.synthetic_conditioning(spec, model, 2, g)
    noise = fam.sample_noise(spec, model, spec.resolution, 2, g)
    data = calibrate(fam, spec, model, fam.inventory(model), cond, noise, 4, {"seed": 0})
    return spec, fam, model, data


def test_trajectory_matches_the_sampler(tiny_wan_calibration) -> None:
    spec, fam, model, data = tiny_wan_calibration
    with torch.no_grad():
        final = run_sampler(fam, spec, model, data.noise, data.cond, 4)
    assert torch.equal(final, data.final)
    assert torch.equal(data.latents[0], data.noise)
    assert data.latents.shape == (4, 2, *data.noise.shape[1:]) == data.outputs.shape
    assert data.timesteps[0] == 999


def test_fisher_shape_positive_and_layer_specific(tiny_wan_calibration) -> None:
    _spec, _fam, _model, data = tiny_wan_calibration
    assert data.fisher.shape == (4, len(data.layers))
    assert torch.isfinite(data.fisher).all() and (data.fisher > 0).all()
    assert data.fisher.std() > 0.1 * data.fisher.mean()  # not a constant: it ranks layers and steps
    assert (data.act_absmax >= data.act_rms).all() and (data.act_rms > 0).all()


def test_fisher_equals_direct_per_sample_gradients(tiny_wan_calibration) -> None:
    """I[t, l] = mean_n Σ (∂L_t,n/∂W_l)² with L = mean((v − (ε − x0))²), recomputed by hand for one layer."""
    spec, fam, model, data = tiny_wan_calibration
    name = data.layers[0]
    w = dict(model.named_modules())[name].weight
    t = 2
    total = 0.0
    for n in range(data.samples):
        model.zero_grad()
        w.requires_grad_(True)
        v = fam.velocity(
            model,
            data.latents[t, n : n + 1],
            data.timesteps[t].long(),
            data.cond.select(slice(n, n + 1)),
            spec,
        )
        loss = (v - (data.noise[n : n + 1] - data.final[n : n + 1])).pow(2).mean()
        (g,) = torch.autograd.grad(loss, [w])
        total += float(g.double().pow(2).sum())
    w.requires_grad_(False)
    assert data.fisher[t, 0].item() == pytest.approx(total / data.samples, rel=1e-4)


def test_fisher_restores_requires_grad(tiny_wan_calibration) -> None:
    spec, fam, model, data = tiny_wan_calibration
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    fisher_information(fam, spec, model, data, data.layers[:2])
    assert before == {n: p.requires_grad for n, p in model.named_parameters()}

"""Calibration: trajectories through the real scheduler and the flow-matching Fisher I[t, l]."""

from __future__ import annotations

import pytest
import torch

from adatsq.calib.calibrate import CalibrationData, calibrate, fisher_information
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
        per_sample = [
            run_sampler(fam, spec, model, data.noise[n : n + 1], data.cond.select(slice(n, n + 1)), 4)
            for n in range(data.samples)
        ]
        batched = run_sampler(fam, spec, model, data.noise, data.cond, 4)
    # exact: calibrate() runs this same run_sampler, one sample at a time (with an on_step hook that only
    # reads), in this process
    assert torch.equal(torch.cat(per_sample), data.final)
    # batched over the samples, only the float summation order of the matmuls differs
    assert torch.allclose(batched, data.final, rtol=1e-5, atol=1e-5)
    assert torch.equal(data.latents[0], data.noise)
    assert data.latents.shape == (4, 2, *data.noise.shape[1:]) == data.outputs.shape
    assert data.timesteps[0] == 999


def test_fisher_shape_positive_and_layer_specific(tiny_wan_calibration) -> None:
    _spec, _fam, _model, data = tiny_wan_calibration
    assert data.fisher.shape == (4, len(data.layers))
    assert torch.isfinite(data.fisher).all() and (data.fisher > 0).all()
    assert data.fisher.std() > 0.1 * data.fisher.mean()  # not a constant: it ranks layers and steps


def test_state_dict_round_trip_and_older_caches(tiny_wan_calibration) -> None:
    """The cache holds only what later stages read; a cache of the previous format (with the per-(step, layer)
    input max |x| / RMS that nothing read) still loads, to the same data."""
    _spec, _fam, model, data = tiny_wan_calibration
    state = data.state_dict()
    assert "act_absmax" not in state and "act_rms" not in state
    old = {**state, "act_absmax": torch.ones_like(data.fisher), "act_rms": torch.ones_like(data.fisher)}
    for loaded in (CalibrationData.from_state_dict(state), CalibrationData.from_state_dict(old)):
        assert torch.equal(loaded.fisher, data.fisher) and torch.equal(loaded.latents, data.latents)
        assert loaded.layers == data.layers and loaded.cond.tensors.keys() == data.cond.tensors.keys()
    assert not any(m._forward_pre_hooks for m in model.modules())  # calibration leaves no hooks behind


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


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_fisher_consumes_each_gradient(tiny_wan_calibration) -> None:
    """Gradients are freed as they are produced: while backward runs, no gradient of an earlier-finished
    layer is still held when the next layer's gradient arrives, and none is left afterwards."""
    spec, fam, model, data = tiny_wan_calibration
    modules = dict(model.named_modules())
    weights = [modules[n].weight for n in data.layers]
    held: list[int] = []

    def count_held(_module: torch.nn.Module, _gin: object, _gout: object) -> None:
        held.append(sum(w.grad is not None for w in weights))

    handles = [modules[n].register_full_backward_hook(count_held) for n in data.layers]
    try:
        fisher = fisher_information(fam, spec, model, data, data.layers)
    finally:
        for h in handles:
            h.remove()
    assert held and max(held) == 0
    assert all(w.grad is None for w in weights)
    assert torch.equal(fisher, data.fisher)  # same function, same inputs, same process

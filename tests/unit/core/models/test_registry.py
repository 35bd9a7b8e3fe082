"""Model registry: entries, tiny models of the real diffusers classes, layer roles, calling conventions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adatsq.core.models import MODELS, ModelLoadError, family_of, get_spec, load_transformer, run_sampler
from adatsq.plugins.hadamard import is_supported_width

TINY = ["tiny-flux", "tiny-wan", "tiny-zimage"]


def test_real_entries_point_at_real_checkpoints() -> None:
    expected = {
        "flux-dev": ("black-forest-labs/FLUX.1-dev", "FluxTransformer2DModel", "FluxPipeline"),
        "flux-schnell": ("black-forest-labs/FLUX.1-schnell", "FluxTransformer2DModel", "FluxPipeline"),
        "z-image": ("Tongyi-MAI/Z-Image-Turbo", "ZImageTransformer2DModel", "ZImagePipeline"),
        "wan2.1-1.3b": ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "WanTransformer3DModel", "WanPipeline"),
    }
    for name, (hf_id, cls, pipe) in expected.items():
        spec = get_spec(name)
        fam = family_of(spec)
        assert (spec.hf_id, fam.transformer_class, fam.pipeline_class) == (hf_id, cls, pipe)
        assert not spec.is_tiny
    assert get_spec("flux-dev").scheduler_config["use_dynamic_shifting"] is True
    assert get_spec("flux-schnell").scheduler_config["use_dynamic_shifting"] is False


def test_unknown_model_lists_known() -> None:
    with pytest.raises(ModelLoadError, match="known models: flux-dev, flux-schnell"):
        get_spec("sdxl")


@pytest.mark.parametrize("name", TINY)
def test_tiny_models_are_real_classes_and_seeded(name: str) -> None:
    spec = get_spec(name)
    a, b = load_transformer(spec, seed=0), load_transformer(spec, seed=0)
    assert type(a).__name__ == family_of(spec).transformer_class
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    widths = {m.in_features for m in a.modules() if isinstance(m, nn.Linear)}
    assert any(w & (w - 1) for w in widths), "tiny widths must include a non-power-of-two"


@pytest.mark.parametrize("name", TINY)
def test_inventory_covers_every_linear(name: str) -> None:
    spec = get_spec(name)
    model = load_transformer(spec)
    inv = family_of(spec).inventory(model)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert sorted(inv.act_layers + inv.weight_only + inv.skipped) == sorted(linears)
    assert len(set(inv.act_layers)) == len(inv.act_layers)
    for unit in inv.units:  # members of a unit read one tensor: equal input width
        modules = dict(model.named_modules())
        assert len({modules[m].in_features for m in unit.members}) == 1
    for n in inv.act_layers:
        assert is_supported_width(dict(model.named_modules())[n].in_features)


def test_shared_input_units_match_the_architecture() -> None:
    flux = family_of(get_spec("tiny-flux")).inventory(load_transformer(get_spec("tiny-flux")))
    units = {u.name: u.members for u in flux.units}
    assert units["transformer_blocks.0.attn.qkv"] == tuple(f"transformer_blocks.0.attn.to_{c}" for c in "qkv")
    assert set(units["single_transformer_blocks.0.qkv_mlp"]) == {
        "single_transformer_blocks.0.attn.to_q",
        "single_transformer_blocks.0.attn.to_k",
        "single_transformer_blocks.0.attn.to_v",
        "single_transformer_blocks.0.proj_mlp",
    }
    assert "transformer_blocks.0.norm1.linear" in flux.weight_only  # adaLN modulation: weight-only
    assert "x_embedder" in flux.weight_only
    wan = family_of(get_spec("tiny-wan")).inventory(load_transformer(get_spec("tiny-wan")))
    assert {u.name for u in wan.units} >= {"blocks.0.attn1.qkv", "blocks.0.attn2.kv"}
    zim = family_of(get_spec("tiny-zimage")).inventory(load_transformer(get_spec("tiny-zimage")))
    assert {"layers.0.feed_forward.w1", "layers.0.feed_forward.w3"} == set(
        next(u.members for u in zim.units if u.name == "layers.0.feed_forward.w13")
    )
    assert "layers.0.adaLN_modulation.0" in zim.weight_only


def test_flux_calling_convention_sigma_and_guidance() -> None:
    """Flux gets t/1000 (σ) and, for dev, a guidance vector; the dynamic shift depends on resolution."""
    spec = get_spec("tiny-flux")
    fam = family_of(spec)
    model = load_transformer(spec)
    seen = {}

    def hook(_m: nn.Module, _args: tuple, kwargs: dict) -> None:
        seen.update(timestep=kwargs["timestep"].clone(), guidance=kwargs["guidance"].clone())

    model.register_forward_pre_hook(hook, with_kwargs=True)
    g = torch.Generator().manual_seed(0)
    cond = fam.synthetic_conditioning(spec, model, 2, g)
    x = fam.sample_noise(spec, model, spec.resolution, 2, g)
    with torch.no_grad():
        v = fam.velocity(model, x, torch.tensor(750.0), cond, spec)
    assert v.shape == x.shape
    assert torch.allclose(seen["timestep"], torch.full((2,), 0.75))
    assert torch.allclose(seen["guidance"], torch.full((2,), spec.guidance_scale))
    from adatsq.calib.calibrate import expected_timesteps

    low = expected_timesteps(fam, spec, 8, (4, 8, 8))
    high = expected_timesteps(fam, spec, 8, (4, 64, 64))
    assert low[0] == high[0] == 1000.0 and low[3] < high[3]  # more tokens, larger shift


def test_wan_calls_twice_per_step_for_cfg() -> None:
    spec = get_spec("tiny-wan")
    fam = family_of(spec)
    model = load_transformer(spec)
    calls: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda _m, _a, kw: calls.append(kw["timestep"]), with_kwargs=True)
    g = torch.Generator().manual_seed(0)
    cond = fam.synthetic_conditioning(spec, model, 1, g)
    x = fam.sample_noise(spec, model, spec.resolution, 1, g)
    with torch.no_grad():
        run_sampler(fam, spec, model, x, cond, 3)
    assert len(calls) == 6 and calls[0].dtype == torch.int64 and int(calls[0][0]) == 999


def test_zimage_reversed_time_and_negated_output() -> None:
    spec = get_spec("tiny-zimage")
    fam = family_of(spec)
    model = load_transformer(spec)
    seen = {}
    model.register_forward_hook(lambda _m, args, out: seen.update(t=args[1].clone(), out=out[0]))
    g = torch.Generator().manual_seed(0)
    cond = fam.synthetic_conditioning(spec, model, 1, g)
    x = fam.sample_noise(spec, model, spec.resolution, 1, g)
    with torch.no_grad():
        v = fam.velocity(model, x, torch.tensor(900.0), cond, spec)
    assert torch.allclose(seen["t"], torch.tensor([0.1]))
    assert torch.allclose(v, -torch.stack(seen["out"]).squeeze(2))


def test_model_path_loads_save_pretrained(tmp_path) -> None:
    spec = get_spec("tiny-wan")
    model = load_transformer(spec, seed=3)
    model.save_pretrained(tmp_path / "transformer")
    loaded = load_transformer(spec, model_path=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(ModelLoadError, match="holds a WanTransformer3DModel"):
        load_transformer(get_spec("tiny-flux"), model_path=tmp_path)
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_transformer(spec, model_path=tmp_path / "missing")


def test_registry_has_all_names() -> None:
    assert set(MODELS) == {"flux-dev", "flux-schnell", "z-image", "wan2.1-1.3b", *TINY}

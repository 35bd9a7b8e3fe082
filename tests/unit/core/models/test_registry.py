"""Model registry: entries, tiny models of the real diffusers classes, layer roles, calling conventions."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from adatsq.core.errors import CompileError
from adatsq.core.models import (
    MODELS,
    Family,
    LayerInventory,
    LayerRule,
    LayerRuleError,
    ModelLoadError,
    Role,
    build_architecture,
    family_of,
    get_spec,
    load_transformer,
    run_sampler,
)
from adatsq.core.models.flux import FLUX_RULES
from adatsq.plugins.hadamard import is_supported_width

TINY = ["tiny-flux", "tiny-wan", "tiny-zimage"]
REAL = ["flux-dev", "flux-schnell", "z-image", "wan2.1-1.3b"]

# (act, weight-only, keep) per entry, derived from the architectures:
# Flux: act = 12 per double block (to_q/k/v, add_q/k/v_proj, to_out.0, to_add_out, ff and ff_context 0.proj/2)
#   + 5 per single block (to_q/k/v, proj_mlp, proj_out); weight-only = 2 adaLN per double block + 1 per single
#   block + norm_out + 2 each for the timestep/guidance/text embedders + x_embedder + context_embedder
#   (schnell: no guidance embedder); keep = the final proj_out. Dev: 19·12 + 38·5 = 418, 19·2 + 38 + 1 + 8 = 85.
# Wan: act = 10 per block; weight-only = condition_embedder.time_proj + text_embedder.linear_1/2;
#   keep = time_embedder.linear_1/2 (diffusers keeps them in float32) + proj_out.
# Z-Image: act = 7 per block (to_q/k/v, to_out.0, w1/w2/w3) over noise_refiner + context_refiner + layers;
#   weight-only = adaLN_modulation.0 of the modulated blocks (noise_refiner + layers) + the final layer's
#   adaLN + t_embedder (2) + cap_embedder + all_x_embedder; keep = the final layer's linear.
COUNTS = {
    "tiny-flux": (2 * 12 + 2 * 5, 2 * 2 + 2 + 1 + 8, 1),
    "tiny-wan": (2 * 10, 3, 3),
    "tiny-zimage": ((1 + 1 + 2) * 7, (1 + 2) + 1 + 4, 1),
    "flux-dev": (19 * 12 + 38 * 5, 19 * 2 + 38 + 1 + 8, 1),  # 418 + 85 + 1 = 504
    "flux-schnell": (19 * 12 + 38 * 5, 19 * 2 + 38 + 1 + 6, 1),  # 418 + 83 + 1 = 502
    "z-image": ((2 + 2 + 30) * 7, (2 + 30) + 1 + 4, 1),  # 238 + 37 + 1 = 276
    "wan2.1-1.3b": (30 * 10, 3, 3),  # 300 + 3 + 3 = 306
}
# parameters of the full-size architectures (../shared/reference/dit-models.md, measured there on meta)
PARAMS = {
    "flux-dev": 11_901_408_320,
    "flux-schnell": 11_891_178_560,
    "z-image": 6_154_908_736,
    "wan2.1-1.3b": 1_418_996_800,
}


def _linears(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


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
    linears = _linears(model)
    assert sorted(inv.act_layers + inv.weight_only + inv.kept) == sorted(linears)
    assert len(set(inv.act_layers)) == len(inv.act_layers)
    for unit in inv.units:  # members of a unit read one tensor: equal input width
        modules = dict(model.named_modules())
        assert len({modules[m].in_features for m in unit.members}) == 1
    for n in inv.act_layers:
        assert is_supported_width(dict(model.named_modules())[n].in_features)


@pytest.mark.parametrize("name", [*TINY, *REAL])
def test_every_linear_of_every_entry_has_a_rule(name: str) -> None:
    """Full-size architectures from the registry's published configs, on the meta device (no checkpoint, no
    memory): every nn.Linear matches exactly one rule, and the counts per role are the architecture's."""
    spec = get_spec(name)
    model = build_architecture(spec, device="meta")
    assert type(model).__name__ == family_of(spec).transformer_class
    assert all(p.is_meta for p in model.parameters())
    inv = family_of(spec).inventory(model)  # raises LayerRuleError on an unmatched or doubly matched linear
    act, weight_only, keep = COUNTS[name]
    assert inv.counts() == {Role.ACT: act, Role.WEIGHT_ONLY: weight_only, Role.KEEP: keep}
    assert sorted(inv.act_layers + inv.weight_only + inv.kept) == sorted(_linears(model))
    modules = dict(model.named_modules())
    for unit in inv.units:
        assert len({modules[m].in_features for m in unit.members}) == 1
    for n in inv.act_layers:
        assert is_supported_width(modules[n].in_features)
    if name in PARAMS:
        assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


def test_kept_layers_are_the_deliberate_ones() -> None:
    kept = {n: family_of(get_spec(n)).inventory(build_architecture(get_spec(n))).kept for n in REAL}
    assert kept == {
        "flux-dev": ("proj_out",),
        "flux-schnell": ("proj_out",),
        "z-image": ("all_final_layer.2-1.linear",),
        "wan2.1-1.3b": (
            "condition_embedder.time_embedder.linear_1",
            "condition_embedder.time_embedder.linear_2",
            "proj_out",
        ),
    }


def test_published_configs_live_in_the_registry() -> None:
    for name in REAL:
        spec = get_spec(name)
        assert spec.published_config["_class_name"] == family_of(spec).transformer_class
        assert spec.architecture_config == dict(spec.published_config)
    assert get_spec("flux-dev").published_config["guidance_embeds"] is True
    assert get_spec("flux-schnell").published_config["guidance_embeds"] is False
    assert {k: v for k, v in get_spec("flux-dev").published_config.items() if k != "guidance_embeds"} == {
        k: v for k, v in get_spec("flux-schnell").published_config.items() if k != "guidance_embeds"
    }
    assert get_spec("z-image").published_config["axes_lens"] == [1536, 512, 512]  # the Hub's, not the default
    tiny = get_spec("tiny-wan")
    assert tiny.published_config is None and tiny.architecture_config == tiny.transformer_config


def test_build_architecture_on_cpu_is_the_seeded_tiny_model() -> None:
    spec = get_spec("tiny-zimage")
    a, b = build_architecture(spec, device="cpu", seed=1), load_transformer(spec, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_linear_no_rule_matches_is_an_error_naming_it() -> None:
    """What a diffusers rename looks like: one pattern stops matching. It must not be skipped silently."""
    model = build_architecture(get_spec("flux-dev"))
    rules = tuple(r for r in FLUX_RULES if r.pattern != r"transformer_blocks\.\d+\.attn\.to_out\.0")
    assert len(rules) == len(FLUX_RULES) - 1
    with pytest.raises(LayerRuleError, match=r"19 nn\.Linear of FluxTransformer2DModel match no rule") as exc:
        LayerInventory.from_rules(model, rules, family="flux")
    msg = str(exc.value)
    assert "flux family" in msg and "transformer_blocks.0.attn.to_out.0" in msg and "add a LayerRule" in msg
    assert "and 11 more" in msg  # 8 named, the rest counted: the message stays one line
    assert isinstance(exc.value, CompileError)  # bad input to a compile: one-line message, exit code 2


def test_a_linear_two_rules_match_is_an_error() -> None:
    model = load_transformer(get_spec("tiny-flux"))
    rules = (*FLUX_RULES, LayerRule(r"x_embedder", Role.KEEP))
    with pytest.raises(
        LayerRuleError, match=r"x_embedder \('x_embedder\|context_embedder' and 'x_embedder'\)"
    ):
        LayerInventory.from_rules(model, rules)


@pytest.mark.parametrize("role", ["act", "skip", "weight-only", None])  # even a valid role's string
def test_a_rule_needs_a_role(role: object) -> None:
    with pytest.raises(TypeError, match="role must be a Role"):
        LayerRule(r"proj_out", role)  # type: ignore[arg-type]
    if role != "act":
        with pytest.raises(ValueError):
            Role(role)  # a misspelled role is no role ("skip" is now Role.KEEP)


def test_roles_read_as_strings_and_units_are_for_act_rules() -> None:
    assert [str(r) for r in Role] == ["act", "weight_only", "keep"]
    assert Role("keep") is Role.KEEP and f"{Role.WEIGHT_ONLY}" == "weight_only"
    with pytest.raises(ValueError, match="only Role.ACT"):
        LayerRule(r"(a)\.b", Role.WEIGHT_ONLY, r"\1")
    with pytest.raises(re.error):
        LayerRule(r"(unclosed", Role.ACT)


class _KeepEverything(Family):
    name = "flux"
    transformer_class = "FluxTransformer2DModel"
    rules = (LayerRule(r".*", Role.KEEP),)


def test_a_compile_that_quantizes_nothing_is_an_error(tmp_path) -> None:
    from adatsq.compiler.context import CompileContext
    from adatsq.compiler.pipeline import run_pipeline
    from adatsq.compiler.settings import CompileConfig

    ctx = CompileContext(CompileConfig(model="tiny-flux", target=3.1, out=str(tmp_path / "out")))
    ctx.family = _KeepEverything()
    with pytest.raises(
        CompileError, match="tiny-flux .*no linear is activation-quantized .*0 weight-only, 50 kept"
    ):
        run_pipeline(ctx)
    assert not (tmp_path / "out" / "compile_config.json").exists()
    assert not (tmp_path / "out" / "schedule.json").exists()


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
    assert set(MODELS) == {"flux-dev", "flux-schnell", "z-image", "wan2.1-1.3b", "shapes-flux", *TINY}

"""The shapes-flux registry entry: pixel latents, Flux's calling convention, widths, checkpoint size."""

from __future__ import annotations

import pytest
import torch

from adatsq.core.models import (
    ModelLoadError,
    family_of,
    get_spec,
    load_text_encoders,
    load_transformer,
    run_sampler,
)
from adatsq.core.models.shapes.family import TRAIN_COMMAND, ShapesFluxFamily, checkpoint_bytes
from adatsq.core.models.shapes.text_encoder import ShapesTextEncoder, TextEncoderConfig, shapes_vocabulary
from adatsq.plugins.hadamard import hadamard_factors

SPEC = get_spec("shapes-flux")


@pytest.fixture(scope="module")
def parts() -> tuple[ShapesFluxFamily, torch.nn.Module, ShapesTextEncoder]:
    from diffusers import FluxPipeline  # noqa: F401  (its lazy import, seconds on 2 cores, lands in setup)

    fam = family_of(SPEC)
    model = fam.build(SPEC.architecture_config, seed=0)
    torch.manual_seed(0)
    enc = ShapesTextEncoder(TextEncoderConfig(shapes_vocabulary(), text_len=SPEC.text_len)).eval()
    return fam, model, enc


def test_entry() -> None:
    fam = family_of(SPEC)
    assert isinstance(fam, ShapesFluxFamily) and fam.name == SPEC.family == "shapes_flux"
    assert SPEC.resolution == (32, 32) and SPEC.guidance_scale == 0.0 and SPEC.group_size == 64
    assert SPEC.scheduler_config["use_dynamic_shifting"] is False and SPEC.scheduler_config["shift"] == 1.0
    cfg = SPEC.architecture_config
    assert cfg["in_channels"] == 12 and cfg["guidance_embeds"] is False
    assert sum(cfg["axes_dims_rope"]) == cfg["attention_head_dim"]


def test_widths_rotate_and_group(parts) -> None:
    _fam, model, _enc = parts
    hidden = model.config.num_attention_heads * model.config.attention_head_dim
    assert hidden & (hidden - 1)  # not a power of two: the rotation meets a Paley factor
    act = set(parts[0].inventory(model).act_layers)
    modules = dict(model.named_modules())
    widths = {modules[n].in_features for n in act}
    assert widths == {hidden, 4 * hidden, 5 * hidden}
    for k in widths:
        m, _p = hadamard_factors(k)
        assert m in (12, 60) and k % SPEC.group_size == 0


def test_checkpoint_fits_20_mb(parts) -> None:
    _fam, model, enc = parts
    n = checkpoint_bytes(model, enc)
    assert n == 2 * sum(p.numel() for p in model.state_dict().values()) + enc.num_bytes()
    assert n <= 20_000_000


def test_latents_velocity_and_sampler(parts) -> None:
    fam, model, enc = parts
    assert fam.latent_shape(SPEC, model, (32, 32)) == (3, 32, 32)
    cond = fam.encode_prompts(enc, ["a red circle", "two squares"], SPEC)
    assert cond["prompt_embeds"].shape == (2, SPEC.text_len, model.config.joint_attention_dim)
    assert cond["pooled_prompt_embeds"].shape == (2, model.config.pooled_projection_dim)
    seen = {}
    model.register_forward_hook(lambda _m, args, kwargs, out: seen.update(kwargs), with_kwargs=True)
    x = fam.sample_noise(SPEC, model, SPEC.resolution, 2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        v = fam.velocity(model, x, torch.tensor(900.0), cond, SPEC)
        assert v.shape == x.shape == (2, 3, 32, 32)
        assert seen["hidden_states"].shape == (2, 256, 12) and seen["guidance"] is None
        torch.testing.assert_close(seen["timestep"], torch.full((2,), 0.9))
        out = run_sampler(fam, SPEC, model, x, cond, steps=2)
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()


def test_without_checkpoint_loading_names_the_training_command(monkeypatch, tmp_path) -> None:
    import dataclasses

    import adatsq.core.models.registry as registry

    empty = dataclasses.replace(SPEC, hf_id=str(tmp_path / "checkpoint"))
    monkeypatch.setitem(registry.MODELS, "shapes-flux", empty)
    with pytest.raises(ModelLoadError, match="shapes.train"):
        load_transformer(empty)
    with pytest.raises(ModelLoadError, match="shapes.train"):
        load_text_encoders(empty)
    assert "--export" in TRAIN_COMMAND

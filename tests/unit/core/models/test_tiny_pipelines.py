"""Tiny real diffusers pipelines (tests/helpers/pipelines.py): saved, loaded back, their prompts encoded by
the family's ``encode_prompts`` and fed to the registry's tiny transformer through ``velocity``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers.pipelines import TEXT_WIDTH, save_tiny_pipeline

from adatsq.core.models import Conditioning, family_of, get_spec, load_transformer
from adatsq.core.models.base import timesteps_for

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

PROMPTS = ["a red cat", "a blue dog on a hill"]
SPECS = {"flux": "tiny-flux", "zimage": "tiny-zimage", "wan": "tiny-wan"}
# conditioning keys: "text" = (text_len, TEXT_WIDTH) per sample, "pooled" = (TEXT_WIDTH,)
KEYS = {
    "flux": {"prompt_embeds": "text", "pooled_prompt_embeds": "pooled"},
    "zimage": {
        "prompt_embeds": "text",
        "negative_prompt_embeds": "text",
        "prompt_lengths": "length",
        "negative_prompt_lengths": "length",
    },
    "wan": {"prompt_embeds": "text", "negative_prompt_embeds": "text"},
}
# components the saved folder must hold (the transformer included: save_pretrained needs it)
COMPONENTS = {
    "flux": {"scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "transformer", "vae"},
    "zimage": {"scheduler", "text_encoder", "tokenizer", "transformer", "vae"},
    "wan": {"scheduler", "text_encoder", "tokenizer", "transformer", "vae"},
}


@pytest.fixture(scope="module", params=list(SPECS))
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def folder(family: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_pipeline(family, tmp_path_factory.mktemp(f"pipe_{family}"))


@pytest.fixture(scope="module")
def pipe(family: str, folder: Path) -> Any:
    cls = getattr(diffusers, family_of(get_spec(SPECS[family])).pipeline_class)
    return cls.from_pretrained(folder, transformer=None)


@pytest.fixture(scope="module")
def cond(family: str, pipe: Any) -> Conditioning:
    spec = get_spec(SPECS[family])
    return family_of(spec).encode_prompts(pipe, PROMPTS, spec)


def test_saved_folder_is_a_full_pipeline(family: str, folder: Path) -> None:
    spec = get_spec(SPECS[family])
    fam = family_of(spec)
    assert folder.name == family
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == fam.pipeline_class
    present = {k for k, v in index.items() if isinstance(v, list) and v[0] is not None}
    assert present == COMPONENTS[family]
    assert index["transformer"] == ["diffusers", fam.transformer_class]
    assert index["scheduler"] == ["diffusers", fam.scheduler_class]
    saved = json.loads((folder / "transformer" / "config.json").read_text())
    assert {k: saved[k] for k in spec.transformer_config} == json.loads(json.dumps(spec.transformer_config))


def test_loads_without_transformer(family: str, pipe: Any) -> None:
    fam = family_of(get_spec(SPECS[family]))
    assert type(pipe).__name__ == fam.pipeline_class
    assert pipe.transformer is None
    assert type(pipe.scheduler).__name__ == fam.scheduler_class
    assert pipe.text_encoder is not None and pipe.vae is not None


def test_loads_without_vae(family: str, folder: Path, cond: Conditioning) -> None:
    """Text encoders only (what prompt encoding needs): the same embeddings as the full pipeline's."""
    spec = get_spec(SPECS[family])
    fam = family_of(spec)
    pipe = getattr(diffusers, fam.pipeline_class).from_pretrained(folder, transformer=None, vae=None)
    assert pipe.vae is None and pipe.transformer is None
    again = fam.encode_prompts(pipe, PROMPTS, spec)
    assert all(torch.equal(again[k], cond[k]) for k in cond.tensors)


def test_registry_loads_text_encoders(family: str, folder: Path, cond: Conditioning) -> None:
    from adatsq.core.models import registry

    if not hasattr(registry, "load_text_encoders"):
        pytest.skip("registry has no load_text_encoders")
    spec = get_spec(SPECS[family])
    pipe = registry.load_text_encoders(spec, folder)
    again = family_of(spec).encode_prompts(pipe, PROMPTS, spec)
    assert all(torch.equal(again[k], cond[k]) for k in cond.tensors)


def test_save_is_seeded(family: str, folder: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    again = save_tiny_pipeline(family, tmp_path)
    for part in ("text_encoder", "vae", "transformer"):
        (a,) = sorted((folder / part).glob("*.safetensors"))
        (b,) = sorted((again / part).glob("*.safetensors"))
        wa, wb = load_file(a), load_file(b)
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), part


def test_encode_prompts_shapes(family: str, cond: Conditioning) -> None:
    spec = get_spec(SPECS[family])
    assert set(cond.tensors) == set(KEYS[family])
    for key, kind in KEYS[family].items():
        t = cond[key]
        if kind == "length":  # tokens per caption (Z-Image's captions go to the transformer unpadded)
            assert t.dtype == torch.int64 and tuple(t.shape) == (len(PROMPTS),), key
            assert bool(((t >= 1) & (t <= spec.text_len)).all()), key
            continue
        want = (len(PROMPTS), spec.text_len, TEXT_WIDTH) if kind == "text" else (len(PROMPTS), TEXT_WIDTH)
        assert tuple(t.shape) == want, key
        assert t.dtype == torch.float32 and t.device.type == "cpu", key
        assert torch.isfinite(t).all(), key


def test_encode_prompts_width_fits_transformer(family: str) -> None:
    spec = get_spec(SPECS[family])
    cfg = spec.transformer_config
    widths = {
        "flux": (cfg.get("joint_attention_dim"), cfg.get("pooled_projection_dim")),
        "zimage": (cfg.get("cap_feat_dim"),),
        "wan": (cfg.get("text_dim"),),
    }[family]
    assert all(w == TEXT_WIDTH for w in widths)


def test_encode_prompts_deterministic_and_prompt_dependent(
    family: str, pipe: Any, cond: Conditioning
) -> None:
    spec = get_spec(SPECS[family])
    again = family_of(spec).encode_prompts(pipe, PROMPTS, spec)
    assert set(again.tensors) == set(cond.tensors)
    for key in cond.tensors:
        assert torch.equal(again[key], cond[key]), key
    assert not torch.allclose(cond["prompt_embeds"][0], cond["prompt_embeds"][1])
    if "pooled_prompt_embeds" in cond.tensors:
        assert not torch.allclose(cond["pooled_prompt_embeds"][0], cond["pooled_prompt_embeds"][1])
    if "negative_prompt_embeds" in cond.tensors:  # both negatives are the empty prompt
        neg = cond["negative_prompt_embeds"]
        assert torch.equal(neg[0], neg[1])
        assert not torch.allclose(neg[0], cond["prompt_embeds"][0])


def test_velocity_on_encoded_prompts(family: str, cond: Conditioning) -> None:
    spec = get_spec(SPECS[family])
    fam = family_of(spec)
    model = load_transformer(spec)
    g = torch.Generator().manual_seed(0)
    noise = fam.sample_noise(spec, model, spec.resolution, len(PROMPTS), g)
    _, timesteps = timesteps_for(fam, spec, spec.steps, tuple(noise.shape[1:]))
    with torch.no_grad():
        v = fam.velocity(model, noise, timesteps[0], cond, spec)
    assert v.shape == noise.shape
    assert v.dtype == torch.float32
    assert torch.isfinite(v).all()
    assert not torch.allclose(v[0], v[1])  # same-shaped noise, different prompts (and noise)
    with torch.no_grad():
        same = fam.velocity(model, noise[:1].expand_as(noise), timesteps[0], cond, spec)
    assert not torch.allclose(same[0], same[1], atol=1e-6)  # the prompt alone changes the output


def test_zimage_captions_reach_the_transformer_unpadded(family: str, cond: Conditioning) -> None:
    """As ZImagePipeline calls it: each caption's own tokens, not the zero rows that pad it to text_len."""
    if family != "zimage":
        pytest.skip("Z-Image only")
    spec = get_spec(SPECS[family])
    fam = family_of(spec)
    model = load_transformer(spec)
    lengths = cond["prompt_lengths"].tolist()
    assert len(set(lengths)) == 2 and min(lengths) < spec.text_len  # two captions of their own lengths
    embeds = cond["prompt_embeds"]
    assert all(
        bool(embeds[i, n:].eq(0).all()) and bool(embeds[i, n - 1].ne(0).any()) for i, n in enumerate(lengths)
    )
    pos = [embeds[i, :n] for i, n in enumerate(lengths)]  # what ZImagePipeline.encode_prompt returned
    noise = fam.sample_noise(spec, model, spec.resolution, 2, torch.Generator().manual_seed(0))
    t = timesteps_for(fam, spec, 2, tuple(noise.shape[1:]))[1][0]
    with torch.no_grad():
        got = fam.velocity(model, noise, t, cond, spec)
        timestep = (1000 - t.expand(2).float()) / 1000
        out = model(
            list(noise.unsqueeze(2).unbind(0)), timestep, [p.float() for p in pos], return_dict=False
        )[0]
        want = -torch.stack([o.float() for o in out]).squeeze(2)
        padded = Conditioning({k: v for k, v in cond.tensors.items() if not k.endswith("_lengths")})
        zero_rows = fam.velocity(model, noise, t, padded, spec)
    assert spec.guidance_scale == 0  # the reference above has no CFG branch
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(zero_rows, want, rtol=1e-4, atol=1e-5)  # padding would change the output

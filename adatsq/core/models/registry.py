"""The model registry: named DiTs, their families, and how to load them.

Real entries load from the Hugging Face Hub (or a local ``save_pretrained`` folder with ``--model-path``);
``tiny-*`` entries are the same diffusers classes with small configs and seeded random weights. Tiny widths
are deliberately not all powers of two (96 = 12·8, 160 = 20·8, 480 = 60·8) so the rotation code meets the
Paley factors of the real widths (3072 = 12·256, 15360 = 60·256, 10240 = 20·512).

The real entries carry their checkpoint's published ``transformer/config.json`` (``configs/<name>.json``), so
:func:`build_architecture` makes the full-size model without the Hub: on the ``meta`` device to inspect its
layers, or with random weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adatsq.core.errors import InputError
from adatsq.core.models.base import Family, ModelSpec
from adatsq.core.models.flux import FluxFamily
from adatsq.core.models.shapes import family as shapes
from adatsq.core.models.wan import WanFamily
from adatsq.core.models.zimage import ZImageFamily

__all__ = [
    "FAMILIES",
    "MODELS",
    "ModelLoadError",
    "build_architecture",
    "family_of",
    "get_spec",
    "load_pipeline",
    "load_text_encoders",
    "load_transformer",
]

FAMILIES: dict[str, Family] = {
    f.name: f for f in (FluxFamily(), WanFamily(), ZImageFamily(), shapes.ShapesFluxFamily())
}

CONFIG_DIR = Path(__file__).with_name("configs")


def _published(name: str) -> dict[str, Any]:
    """The published ``transformer/config.json`` of a real entry (private ``_`` keys other than the class
    name dropped when it was copied here)."""
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())


_FLUX_DEV_SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}
_FLUX_SCHNELL_SCHEDULER = {"num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False}
_ZIMAGE_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": False}
_WAN_SCHEDULER = {
    "num_train_timesteps": 1000,
    "prediction_type": "flow_prediction",
    "use_flow_sigmas": True,
    "flow_shift": 3.0,
    "solver_order": 2,
    "predict_x0": True,
    "solver_type": "bh2",
    "lower_order_final": True,
    "final_sigmas_type": "zero",
}

MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec(
            "flux-dev",
            "flux",
            "black-forest-labs/FLUX.1-dev",
            None,
            steps=50,
            resolution=(1024, 1024),
            guidance_scale=3.5,
            scheduler_config=_FLUX_DEV_SCHEDULER,
            text_len=512,
            description="FLUX.1-dev, 12B, guidance-distilled",
            published_config=_published("flux-dev"),
        ),
        ModelSpec(
            "flux-schnell",
            "flux",
            "black-forest-labs/FLUX.1-schnell",
            None,
            steps=4,
            resolution=(1024, 1024),
            guidance_scale=0.0,
            scheduler_config=_FLUX_SCHNELL_SCHEDULER,
            text_len=256,
            description="FLUX.1-schnell, 12B, timestep-distilled (4 steps)",
            published_config=_published("flux-schnell"),
        ),
        ModelSpec(
            "z-image",
            "zimage",
            "Tongyi-MAI/Z-Image-Turbo",
            None,
            steps=9,
            resolution=(1024, 1024),
            guidance_scale=0.0,
            scheduler_config=_ZIMAGE_SCHEDULER,
            text_len=512,
            description="Z-Image-Turbo, 6B",
            published_config=_published("z-image"),
        ),
        ModelSpec(
            "wan2.1-1.3b",
            "wan",
            "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
            None,
            steps=25,
            resolution=(81, 480, 832),
            guidance_scale=5.0,
            scheduler_config=_WAN_SCHEDULER,
            text_len=512,
            description="Wan2.1 text-to-video 1.3B, 480p",
            published_config=_published("wan2.1-1.3b"),
        ),
        ModelSpec(
            "tiny-flux",
            "flux",
            "black-forest-labs/FLUX.1-dev",
            None,
            steps=8,
            resolution=(128, 128),
            guidance_scale=3.5,
            scheduler_config=_FLUX_DEV_SCHEDULER,
            text_len=16,
            group_size=32,
            transformer_config={
                "patch_size": 1,
                "in_channels": 16,
                "num_layers": 2,
                "num_single_layers": 2,
                "attention_head_dim": 48,
                "num_attention_heads": 2,
                "joint_attention_dim": 32,
                "pooled_projection_dim": 32,
                "guidance_embeds": True,
                "axes_dims_rope": [8, 20, 20],
            },
            description="FluxTransformer2DModel, 2+2 blocks, width 96 = 12·8, random weights",
        ),
        ModelSpec(
            "tiny-wan",
            "wan",
            "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
            None,
            steps=6,
            resolution=(5, 64, 64),
            guidance_scale=5.0,
            scheduler_config=_WAN_SCHEDULER,
            text_len=16,
            group_size=32,
            transformer_config={
                "patch_size": [1, 2, 2],
                "num_attention_heads": 2,
                "attention_head_dim": 48,
                "in_channels": 4,
                "out_channels": 4,
                "text_dim": 32,
                "freq_dim": 256,
                "ffn_dim": 160,
                "num_layers": 2,
                "cross_attn_norm": True,
                "qk_norm": "rms_norm_across_heads",
                "rope_max_seq_len": 32,
            },
            description="WanTransformer3DModel, 2 blocks, width 96, FFN 160 = 20·8, random weights",
        ),
        ModelSpec(
            "tiny-zimage",
            "zimage",
            "Tongyi-MAI/Z-Image-Turbo",
            None,
            steps=6,
            resolution=(128, 128),
            guidance_scale=0.0,
            scheduler_config=_ZIMAGE_SCHEDULER,
            text_len=16,
            group_size=32,
            transformer_config={
                "all_patch_size": [2],
                "all_f_patch_size": [1],
                "in_channels": 4,
                "dim": 96,
                "n_layers": 2,
                "n_refiner_layers": 1,
                "n_heads": 2,
                "n_kv_heads": 2,
                "qk_norm": True,
                "cap_feat_dim": 32,
                "rope_theta": 256.0,
                "t_scale": 1000.0,
                "axes_dims": [16, 16, 16],
                "axes_lens": [256, 32, 32],
            },
            description="ZImageTransformer2DModel, 1+1+2 blocks, width 96, random weights",
        ),
        ModelSpec(  # trained here; its checkpoint ships in the package (hf_id is that folder)
            "shapes-flux",
            "shapes_flux",
            str(shapes.CHECKPOINT_DIR),
            None,
            steps=20,
            resolution=(32, 32),
            guidance_scale=0.0,
            scheduler_config=shapes.SCHEDULER_CONFIG,
            text_len=shapes.TEXT_LEN,
            group_size=shapes.GROUP_SIZE,
            description="FluxTransformer2DModel, 3+6 blocks, width 192 = 12·16, trained on 32×32 rendered shapes",
            published_config=shapes.TRANSFORMER_CONFIG,
        ),
    )
}


class ModelLoadError(InputError):
    """A model name or checkpoint folder that cannot be loaded; the message says what to do."""


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelLoadError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


def family_of(spec: ModelSpec) -> Family:
    return FAMILIES[spec.family]


def build_architecture(
    spec: ModelSpec, device: torch.device | str = "meta", seed: int = 0, dtype: torch.dtype = torch.float32
) -> nn.Module:
    """The spec's transformer class at its real size (tiny entries: their tiny config) on ``device``, from the
    config in the registry: no checkpoint, no Hub. On ``meta`` it allocates nothing (layer names and shapes
    only); elsewhere the weights are the class's seeded random initialisation, in ``dtype``."""
    return family_of(spec).build(spec.architecture_config, device=device, seed=seed, dtype=dtype)


def _checkpoint_dir(model_path: Path) -> tuple[Path, str | None]:
    if (model_path / "transformer" / "config.json").is_file():
        return model_path, "transformer"
    if (model_path / "config.json").is_file():
        return model_path, None
    raise ModelLoadError(
        f"--model-path {model_path}: no config.json there or in its transformer/ folder; pass a folder written "
        f"by save_pretrained (a transformer folder or a whole pipeline folder)"
    )


def load_transformer(
    spec: ModelSpec, model_path: str | Path | None = None, dtype: torch.dtype = torch.float32, seed: int = 0
) -> nn.Module:
    """The spec's transformer: from ``model_path`` if given, else tiny-from-config or the Hub checkpoint."""
    family = family_of(spec)
    cls = family.transformer_cls()
    if model_path is not None:
        root, sub = _checkpoint_dir(Path(model_path))
        import json

        cfg = json.loads(((root / sub) if sub else root).joinpath("config.json").read_text())
        found = cfg.get("_class_name")
        if found and found != cls.__name__:
            raise ModelLoadError(
                f"--model-path {model_path} holds a {found}, but {spec.name} is a {cls.__name__}; "
                f"pick the model name of that architecture"
            )
        model = cls.from_pretrained(root, subfolder=sub, dtype=dtype)
    elif spec.is_tiny:
        model = family.build_tiny(spec, seed=seed)
        if dtype != torch.float32:
            model = model.to(dtype)
    else:
        reason = family.missing_checkpoint(spec)  # a checkpoint trained here whose folder is still empty
        if reason is not None:
            raise ModelLoadError(reason)
        model = cls.from_pretrained(spec.hf_id, subfolder="transformer", revision=spec.revision, dtype=dtype)
    return model.eval()


def _pipeline_source(spec: ModelSpec, model_path: str | Path | None) -> str:
    if model_path is None:
        return spec.hf_id
    if not (Path(model_path) / "model_index.json").is_file():
        raise ModelLoadError(
            f"--model-path {model_path}: no model_index.json there, so no text encoders or VAE to load (a "
            f"transformer folder alone); pass the whole pipeline folder written by the pipeline's save_pretrained"
        )
    return str(model_path)


def load_text_encoders(
    spec: ModelSpec,
    model_path: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> Any:
    """The pipeline's text encoders and tokenizers only (no transformer, no VAE; a family's own encoder where
    it has one), on ``device``: what ``Family.encode_prompts`` needs, without the transformer next to it."""
    source = _pipeline_source(spec, model_path)
    try:
        pipe = family_of(spec).load_text_encoders(source, spec.revision, dtype)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"the text encoders of {spec.name} from {source} cannot be loaded: {exc}"
        ) from exc
    return pipe.to(device)


def load_pipeline(
    spec: ModelSpec, transformer: nn.Module, model_path: str | Path | None = None, text_encoders: bool = True
) -> Any:
    """The real diffusers pipeline around ``transformer`` (its VAE; its text encoders unless
    ``text_encoders=False``, for callers whose prompts are encoded already)."""
    import diffusers

    family = family_of(spec)
    cls = getattr(diffusers, family.pipeline_class)
    skip = {} if text_encoders else dict.fromkeys(family.text_components)
    return cls.from_pretrained(
        _pipeline_source(spec, model_path),
        transformer=transformer,
        revision=spec.revision,
        dtype=transformer.dtype,
        **skip,
    )

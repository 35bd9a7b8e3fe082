"""Model registry and per-family calling conventions."""

from adatsq.core.models.base import Conditioning, Family, LayerInventory, ModelSpec, Unit, run_sampler
from adatsq.core.models.registry import (
    FAMILIES,
    MODELS,
    ModelLoadError,
    family_of,
    get_spec,
    load_pipeline,
    load_transformer,
)

__all__ = [
    "FAMILIES",
    "MODELS",
    "Conditioning",
    "Family",
    "LayerInventory",
    "ModelLoadError",
    "ModelSpec",
    "Unit",
    "family_of",
    "get_spec",
    "load_pipeline",
    "load_transformer",
    "run_sampler",
]

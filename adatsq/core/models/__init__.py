"""Model registry and per-family calling conventions."""

from adatsq.core.models.base import (
    Conditioning,
    Family,
    LayerInventory,
    LayerRule,
    LayerRuleError,
    ModelSpec,
    Role,
    Unit,
    run_sampler,
    sample_paths,
)
from adatsq.core.models.registry import (
    FAMILIES,
    MODELS,
    ModelLoadError,
    build_architecture,
    family_of,
    get_spec,
    load_pipeline,
    load_text_encoders,
    load_transformer,
)

__all__ = [
    "FAMILIES",
    "MODELS",
    "Conditioning",
    "Family",
    "LayerInventory",
    "LayerRule",
    "LayerRuleError",
    "ModelLoadError",
    "ModelSpec",
    "Role",
    "Unit",
    "build_architecture",
    "family_of",
    "get_spec",
    "load_pipeline",
    "load_text_encoders",
    "load_transformer",
    "run_sampler",
    "sample_paths",
]

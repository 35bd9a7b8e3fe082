"""Per-family export wrappers: the ONNX graph's tensor inputs, and how a runner builds them from the
keyword arguments a diffusers pipeline passes to the family's transformer.

Every wrapper holds the (quantized) transformer as ``self.model``, so initializer names are
``model.<parameter name>`` (the prefix the ONNX passes strip). Inputs are plain tensors: no lists, no
complex numbers, no float64 in the graph.

Flux (``FluxTransformer2DModel``)
    hidden_states          float32 [batch, img_tokens, in_channels]        packed 2×2 latents
    encoder_hidden_states  float32 [batch, txt_tokens, joint_attention_dim]
    pooled_projections     float32 [batch, pooled_projection_dim]
    timestep               float32 [batch]                                 σ = t/1000 (as the pipeline)
    guidance               float32 [batch]          only if guidance_embeds (the guidance scale)
    txt_rope               float32 [2, txt_tokens, head_dim]               (cos, sin) of FluxPosEmbed(txt_ids)
    img_rope               float32 [2, img_tokens, head_dim]               (cos, sin) of FluxPosEmbed(img_ids)
    → sample               float32 [batch, img_tokens, out_channels]
  RoPE decision: diffusers computes the rotary tables in float64 (3 Casts to DOUBLE in the graph, which
  TensorRT lacks). They depend only on the ids, so they are computed OUTSIDE the graph by the model's own
  ``FluxPosEmbed`` (float64, then float32 exactly as the model does) and fed as inputs: bit-identical to
  the eager model, and no DOUBLE anywhere. Text and image parts are separate inputs because
  ``torch.export`` dims cannot express txt_tokens + img_tokens; RoPE rows are per-token, so
  ``pos_embed(cat(txt, img)) = cat(pos_embed(txt), pos_embed(img))``.

Wan (``WanTransformer3DModel``)
    hidden_states          float32 [batch, C, frames, height, width]       latents (height, width even)
    timestep               int64   [batch]                                 raw t (0…999)
    encoder_hidden_states  float32 [batch, txt_tokens, text_dim]
    → sample               float32 [batch, C_out, frames, height, width]
  Wan's RoPE is float32 in the graph (ScatterND from the slice assignment; no DOUBLE); it stays inside.
  CFG is two calls per step, as in the pipeline.

Z-Image: NOT exportable yet (complex ``polar`` RoPE and list inputs need a re-implemented forward with a
real-valued rotary embedding); :func:`adapter_for` raises :class:`ExportUnsupported` for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "ExportAdapter",
    "ExportUnsupported",
    "FluxAdapter",
    "WanAdapter",
    "adapter_for",
    "add_dtype_anchors",
]

PREFIX = "model."
MAX_BATCH = 64
MAX_TOKENS = 65536


class ExportUnsupported(NotImplementedError):
    """The family has no export wrapper yet."""


def add_dtype_anchors(model: nn.Module) -> nn.Module:
    """Give every QuantLinear a zero-size float parameter ``dtype_anchor``, in place.

    diffusers reads ``next(module.parameters()).dtype`` (Wan's time embedder) of modules whose linears
    became QuantLinear (buffers only); the anchor answers that read. It holds no data, is unused by the computation and vanishes from exported graphs.
    """
    from adatsq.passes.quant_linear import QuantLinear

    for m in model.modules():
        if isinstance(m, QuantLinear) and not any(True for _ in m.parameters(recurse=False)):
            m.register_parameter("dtype_anchor", nn.Parameter(torch.zeros(0), requires_grad=False))
    return model


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[str | int, ...]
    doc: str


class ExportAdapter:
    """One family's graph interface (see the module docstring)."""

    family: str = ""

    def wrap(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def inputs(self, config: Any) -> list[TensorSpec]:
        raise NotImplementedError

    def output(self, config: Any) -> TensorSpec:
        raise NotImplementedError

    def example_inputs(
        self, config: Any, latent_shape: tuple[int, ...], text_len: int
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def dynamic_shapes(self, config: Any) -> dict[str, dict[int, Any]]:
        raise NotImplementedError

    def feeds(self, config: Any, kwargs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Graph inputs from the keyword arguments the diffusers pipeline passes to the transformer."""
        raise NotImplementedError

    def io_record(self, config: Any) -> dict[str, Any]:
        return {
            "family": self.family,
            "inputs": [dataclasses.asdict(s) for s in self.inputs(config)],
            "output": dataclasses.asdict(self.output(config)),
            "how_to_build_inputs": self.__doc__ or "",
        }


def _np(t: torch.Tensor | None, dtype: Any = np.float32) -> np.ndarray:
    assert t is not None
    return t.detach().cpu().numpy().astype(dtype, copy=False)


# ------------------------------------------------------------------------------------------------ Flux


class _RopeFromInputs(nn.Module):
    """Stands in for ``FluxPosEmbed``: returns the (cos, sin) the wrapper received as inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.value: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.value is not None
        return self.value


class _FluxWrapper(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rope = _RopeFromInputs()
        self.guidance = bool(model.config.guidance_embeds)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        pooled_projections: torch.Tensor,
        timestep: torch.Tensor,
        guidance: torch.Tensor | None,
        txt_rope: torch.Tensor,
        img_rope: torch.Tensor,
    ) -> torch.Tensor:
        rope = torch.cat([txt_rope, img_rope], dim=1)
        self.rope.value = (rope[0], rope[1])
        saved = self.model.pos_embed
        self.model.pos_embed = self.rope
        try:
            ids = hidden_states.new_zeros((0, 3))
            return self.model(
                hidden_states=hidden_states,
                encoder_hidden_states=encoder_hidden_states,
                pooled_projections=pooled_projections,
                timestep=timestep,
                guidance=guidance if self.guidance else None,
                txt_ids=ids,
                img_ids=ids,
                return_dict=False,
            )[0]
        finally:
            self.model.pos_embed = saved
            self.rope.value = None


def flux_rope(config: Any, ids: torch.Tensor) -> torch.Tensor:
    """(2, N, head_dim) float32: (cos, sin) of the model's own FluxPosEmbed on ``ids`` (N, 3)."""
    from diffusers.models.transformers.transformer_flux import FluxPosEmbed

    if ids.ndim == 3:
        ids = ids[0]
    cos, sin = FluxPosEmbed(theta=10000, axes_dim=list(config.axes_dims_rope))(ids.float())
    return torch.stack([cos, sin]).float()


class FluxAdapter(ExportAdapter):
    """Runner: hidden_states/encoder_hidden_states/pooled_projections/timestep(σ)/guidance as the pipeline
    passes them; txt_rope = stack(FluxPosEmbed(txt_ids)), img_rope = stack(FluxPosEmbed(img_ids))."""

    family = "flux"

    def wrap(self, model: nn.Module) -> nn.Module:
        return _FluxWrapper(model)

    def _head_dim(self, config: Any) -> int:
        return int(config.attention_head_dim)

    def inputs(self, config: Any) -> list[TensorSpec]:
        d = self._head_dim(config)
        specs = [
            TensorSpec(
                "hidden_states", "float32", ("batch", "img_tokens", config.in_channels), "packed latents"
            ),
            TensorSpec(
                "encoder_hidden_states",
                "float32",
                ("batch", "txt_tokens", config.joint_attention_dim),
                "T5 embeddings",
            ),
            TensorSpec(
                "pooled_projections", "float32", ("batch", config.pooled_projection_dim), "CLIP pooled"
            ),
            TensorSpec("timestep", "float32", ("batch",), "sigma = t / 1000"),
        ]
        if config.guidance_embeds:
            specs.append(TensorSpec("guidance", "float32", ("batch",), "guidance scale (e.g. 3.5)"))
        specs += [
            TensorSpec("txt_rope", "float32", (2, "txt_tokens", d), "(cos, sin) = FluxPosEmbed(txt_ids)"),
            TensorSpec("img_rope", "float32", (2, "img_tokens", d), "(cos, sin) = FluxPosEmbed(img_ids)"),
        ]
        return specs

    def output(self, config: Any) -> TensorSpec:
        out = config.out_channels or config.in_channels
        return TensorSpec("sample", "float32", ("batch", "img_tokens", out), "flow velocity (packed)")

    def example_inputs(
        self, config: Any, latent_shape: tuple[int, ...], text_len: int
    ) -> dict[str, torch.Tensor]:
        _, h, w = latent_shape
        b, s, t, d = 2, (h // 2) * (w // 2), text_len, self._head_dim(config)
        g = torch.Generator().manual_seed(0)
        ex = {
            "hidden_states": torch.randn(b, s, config.in_channels, generator=g),
            "encoder_hidden_states": torch.randn(b, t, config.joint_attention_dim, generator=g),
            "pooled_projections": torch.randn(b, config.pooled_projection_dim, generator=g),
            "timestep": torch.rand(b, generator=g),
            "guidance": torch.full((b,), 3.5),
            "txt_rope": torch.randn(2, t, d, generator=g),
            "img_rope": torch.randn(2, s, d, generator=g),
        }
        return ex

    def dynamic_shapes(self, config: Any) -> dict[str, dict[int, Any]]:
        dim = torch.export.Dim
        b = dim("batch", min=1, max=MAX_BATCH)
        s = dim("img_tokens", min=1, max=MAX_TOKENS)
        t = dim("txt_tokens", min=1, max=MAX_TOKENS)
        return {
            "hidden_states": {0: b, 1: s},
            "encoder_hidden_states": {0: b, 1: t},
            "pooled_projections": {0: b},
            "timestep": {0: b},
            "guidance": {0: b},
            "txt_rope": {1: t},
            "img_rope": {1: s},
        }

    def feeds(self, config: Any, kwargs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        hs = kwargs["hidden_states"]
        b = hs.shape[0]
        feeds = {
            "hidden_states": _np(hs),
            "encoder_hidden_states": _np(kwargs["encoder_hidden_states"]),
            "pooled_projections": _np(kwargs["pooled_projections"]),
            "timestep": _np(torch.as_tensor(kwargs["timestep"]).float().expand(b)),
        }
        if config.guidance_embeds:
            g = kwargs.get("guidance")
            if g is None:
                raise ValueError("this Flux graph has a guidance input; the call passed guidance=None")
            feeds["guidance"] = _np(torch.as_tensor(g).float().expand(b))
        feeds["txt_rope"] = _np(flux_rope(config, kwargs["txt_ids"]))
        feeds["img_rope"] = _np(flux_rope(config, kwargs["img_ids"]))
        return feeds


# ------------------------------------------------------------------------------------------------ Wan


class _WanWrapper(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> torch.Tensor:
        return self.model(
            hidden_states=hidden_states,
            timestep=timestep,
            encoder_hidden_states=encoder_hidden_states,
            return_dict=False,
        )[0]


class WanAdapter(ExportAdapter):
    """Runner: hidden_states, timestep (int64, raw 0…999), encoder_hidden_states exactly as WanPipeline
    passes them; CFG = two calls (cond, uncond) per denoising step."""

    family = "wan"

    def wrap(self, model: nn.Module) -> nn.Module:
        return _WanWrapper(model)

    def inputs(self, config: Any) -> list[TensorSpec]:
        return [
            TensorSpec(
                "hidden_states",
                "float32",
                ("batch", config.in_channels, "frames", "height", "width"),
                "latents",
            ),
            TensorSpec("timestep", "int64", ("batch",), "raw timestep 0..999"),
            TensorSpec("encoder_hidden_states", "float32", ("batch", "txt_tokens", config.text_dim), "UMT5"),
        ]

    def output(self, config: Any) -> TensorSpec:
        return TensorSpec(
            "sample", "float32", ("batch", config.out_channels, "frames", "height", "width"), "flow velocity"
        )

    def example_inputs(
        self, config: Any, latent_shape: tuple[int, ...], text_len: int
    ) -> dict[str, torch.Tensor]:
        c, f, h, w = latent_shape
        g = torch.Generator().manual_seed(0)
        return {
            "hidden_states": torch.randn(2, c, f, h, w, generator=g),
            "timestep": torch.tensor([999, 500], dtype=torch.int64),
            "encoder_hidden_states": torch.randn(2, text_len, config.text_dim, generator=g),
        }

    def dynamic_shapes(self, config: Any) -> dict[str, dict[int, Any]]:
        dim = torch.export.Dim
        b = dim("batch", min=1, max=MAX_BATCH)
        f = dim("frames", min=1, max=1024)
        ph, pw = config.patch_size[1], config.patch_size[2]
        h = ph * dim("height_patches", min=1, max=1024)
        w = pw * dim("width_patches", min=1, max=1024)
        t = dim("txt_tokens", min=1, max=MAX_TOKENS)
        return {
            "hidden_states": {0: b, 2: f, 3: h, 4: w},
            "timestep": {0: b},
            "encoder_hidden_states": {0: b, 1: t},
        }

    def feeds(self, config: Any, kwargs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        hs = kwargs["hidden_states"]
        t = torch.as_tensor(kwargs["timestep"]).reshape(-1).expand(hs.shape[0])
        return {
            "hidden_states": _np(hs),
            "timestep": _np(t.round().long() if t.is_floating_point() else t, np.int64),
            "encoder_hidden_states": _np(kwargs["encoder_hidden_states"]),
        }


ADAPTERS: dict[str, type[ExportAdapter]] = {"flux": FluxAdapter, "wan": WanAdapter}


def adapter_for(family: str) -> ExportAdapter:
    if family not in ADAPTERS:
        raise ExportUnsupported(
            f"ONNX export of the {family!r} family is not implemented yet (Z-Image needs a wrapper with "
            f"tensor inputs and a real-valued RoPE); use the torch backend"
        )
    return ADAPTERS[family]()

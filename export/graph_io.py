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

Z-Image (``ZImageTransformer2DModel``, basic mode: one image and one caption per sample)
    hidden_states          float32 [batch, C, 1, height, width]            latents (height, width even)
    timestep               float32 [batch]                                 (1000 − t)/1000 = 1 − σ, as the
                                                                           pipeline passes it (NOT negated)
    cap_feats              float32 [batch, cap_tokens, cap_feat_dim]       caption embeddings
    x_rope                 float32 [2, img_tokens_padded, head_dim/2]      (cos, sin) of the image tokens
    cap_rope               float32 [2, cap_tokens_padded, head_dim/2]      (cos, sin) of the caption tokens
    → sample               float32 [batch, C_out, 1, height, width]        the transformer's output stacked,
                                                                           BEFORE the pipeline's negation
  The eager model takes lists and pads each sample's image and caption tokens to a multiple of 32 with
  learned pad tokens (``x_pad_token``, ``cap_pad_token``). The graph re-implements that forward on tensors:
  every sample of a batch has the same image/caption token counts (so the eager model builds no
  attention mask either), padding is ``cat(tokens, pad_token.expand(...))`` with the padded lengths read
  from the RoPE inputs' dim 1 (``img_tokens_padded = ceil32(height·width/4)``, ``cap_tokens_padded =
  ceil32(cap_tokens)``). Batch, height, width and cap_tokens are all dynamic.
  RoPE decision: diffusers builds complex64 tables (``torch.polar``) and rotates with ``view_as_complex``,
  which the exporter cannot translate. The tables depend only on position ids, so they are computed OUTSIDE
  the graph by the model's own ``RopeEmbedder`` on the position ids the model builds (:func:`zimage_rope`),
  as (real, imag) = (cos, sin) float32, bit-identical to the eager tables. In the graph the complex
  multiply is replaced by the equivalent real rotation of interleaved pairs
  ``(x0·cos − x1·sin, x0·sin + x1·cos)`` (an export-only attention processor; the model itself is not
  modified). Runner: the family's ``velocity`` negates the graph output exactly as it negates the eager
  model's output; CFG is one batched call (latents repeated, positive then negative captions).
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
    "ZImageAdapter",
    "adapter_for",
]

PREFIX = "model."
MAX_BATCH = 64
MAX_TOKENS = 65536
PROFILE_MAX_BATCH = 4  # the TensorRT profiles' largest batch (io.json min/opt/max shapes)


class ExportUnsupported(NotImplementedError):
    """The family has no export wrapper yet."""


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

    def dims(self, config: Any, latent_shape: tuple[int, ...], text_len: int) -> dict[str, int]:
        """Every symbolic dimension but ``batch`` at the compiled resolution (``latent_shape`` of one
        sample, ``text_len`` text tokens)."""
        raise NotImplementedError

    def call_batch(self, guidance_scale: float) -> int:
        """The batch of one image's transformer call (2 where CFG batches cond and uncond in one call)."""
        return 1

    def profile(
        self, config: Any, latent_shape: tuple[int, ...], text_len: int, guidance_scale: float = 0.0
    ) -> dict[str, dict[str, int]]:
        """min/opt/max of every symbolic dimension: batch 1..PROFILE_MAX_BATCH, opt = one image's call;
        the token dimensions fixed at the compiled resolution (the schedule and the calibration were made
        for exactly these token counts, and the pipelines pad the text to ``text_len``)."""
        opt = self.call_batch(guidance_scale)
        table = {"batch": {"min": 1, "opt": opt, "max": max(PROFILE_MAX_BATCH, opt)}}
        for sym, n in self.dims(config, latent_shape, text_len).items():
            table[sym] = {"min": n, "opt": n, "max": n}
        return table

    def io_record(
        self,
        config: Any,
        latent_shape: tuple[int, ...] | None = None,
        text_len: int | None = None,
        guidance_scale: float = 0.0,
    ) -> dict[str, Any]:
        """io.json's interface part; with the compiled ``latent_shape`` and ``text_len``, every input also
        gets integer ``min_shape``/``opt_shape``/``max_shape`` (the TensorRT profile) and ``dims`` the
        per-symbol ranges."""
        inputs = [dataclasses.asdict(s) for s in self.inputs(config)]
        record: dict[str, Any] = {"family": self.family, "inputs": inputs}
        if latent_shape is not None and text_len is not None:
            table = self.profile(config, latent_shape, text_len, guidance_scale)
            for inp in inputs:
                for key in ("min", "opt", "max"):
                    shape = []
                    for d in inp["shape"]:
                        if isinstance(d, int):
                            shape.append(d)
                        elif d in table:
                            shape.append(table[d][key])
                        else:
                            raise ValueError(f"{self.family}: input {inp['name']} dim {d!r} has no range")
                    inp[f"{key}_shape"] = shape
            record["dims"] = table
        record["output"] = dataclasses.asdict(self.output(config))
        record["how_to_build_inputs"] = self.__doc__ or ""
        return record


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

    def dims(self, config: Any, latent_shape: tuple[int, ...], text_len: int) -> dict[str, int]:
        _, h, w = latent_shape
        return {"img_tokens": (h // 2) * (w // 2), "txt_tokens": text_len}

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

    def dims(self, config: Any, latent_shape: tuple[int, ...], text_len: int) -> dict[str, int]:
        _, f, h, w = latent_shape
        return {"frames": f, "height": h, "width": w, "txt_tokens": text_len}

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


# ------------------------------------------------------------------------------------------------ Z-Image


def _rotate_real(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """``view_as_real(view_as_complex(x) * freqs_cis)`` with real tables: x [B, S, H, D], rope [2, S, D/2]."""
    cos = rope[0].unsqueeze(1)  # [S, 1, D/2]
    sin = rope[1].unsqueeze(1)
    xf = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(3)
    return out.type_as(x)


class _ZImageRealRopeProcessor:
    """``ZSingleStreamAttnProcessor`` with ``freqs_cis`` = real (cos, sin) [2, S, D/2] (export only)."""

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        freqs_cis: torch.Tensor | None = None,
    ) -> torch.Tensor:
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        query = attn.to_q(hidden_states).unflatten(-1, (attn.heads, -1))
        key = attn.to_k(hidden_states).unflatten(-1, (attn.heads, -1))
        value = attn.to_v(hidden_states).unflatten(-1, (attn.heads, -1))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if freqs_cis is not None:
            query = _rotate_real(query, freqs_cis)
            key = _rotate_real(key, freqs_cis)
        dtype = query.dtype
        out = dispatch_attention_fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False)
        out = out.flatten(2, 3).to(dtype)
        output = attn.to_out[0](out)
        if len(attn.to_out) > 1:
            output = attn.to_out[1](output)
        return output


class _ZImageWrapper(nn.Module):
    """Tensor re-implementation of ``ZImageTransformer2DModel.forward`` (basic mode, patch 2, f_patch 1)."""

    def __init__(self, model: nn.Module, patch_size: int = 2, f_patch_size: int = 1) -> None:
        super().__init__()
        self.model = model
        self.p = patch_size
        self.pf = f_patch_size

    def _attentions(self) -> list[nn.Module]:
        m = self.model
        blocks = [*m.noise_refiner, *m.context_refiner, *m.layers]
        return [b.attention for b in blocks]

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        cap_feats: torch.Tensor,
        x_rope: torch.Tensor,
        cap_rope: torch.Tensor,
    ) -> torch.Tensor:
        attns = self._attentions()
        saved = [a.processor for a in attns]
        proc = _ZImageRealRopeProcessor()
        for a in attns:
            a.processor = proc
        try:
            return self._forward(hidden_states, timestep, cap_feats, x_rope, cap_rope)
        finally:
            for a, s in zip(attns, saved):
                a.processor = s

    def _forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        cap_feats: torch.Tensor,
        x_rope: torch.Tensor,
        cap_rope: torch.Tensor,
    ) -> torch.Tensor:
        m = self.model
        key = f"{self.p}-{self.pf}"
        squeeze = hidden_states.ndim == 4
        x = hidden_states.unsqueeze(2) if squeeze else hidden_states
        b, c, f, h, w = x.shape
        p, pf = self.p, self.pf
        ft, ht, wt = f // pf, h // p, w // p
        adaln = m.t_embedder(timestep * m.t_scale).type_as(x)

        # patchify: (c, f, h, w) -> (f h w, pf ph pw c), per sample
        x = x.reshape(b, c, ft, pf, ht, p, wt, p).permute(0, 2, 4, 6, 3, 5, 7, 1)
        x = x.reshape(b, ft * ht * wt, pf * p * p * c)
        n_img = ft * ht * wt
        x = m.all_x_embedder[key](x)
        x = torch.cat([x, m.x_pad_token.expand(b, x_rope.shape[1] - n_img, -1)], dim=1)
        for layer in m.noise_refiner:
            x = layer(x, None, x_rope, adaln)

        cap = m.cap_embedder(cap_feats)
        cap = torch.cat([cap, m.cap_pad_token.expand(b, cap_rope.shape[1] - cap.shape[1], -1)], dim=1)
        for layer in m.context_refiner:
            cap = layer(cap, None, cap_rope)

        unified = torch.cat([x, cap], dim=1)
        rope = torch.cat([x_rope, cap_rope], dim=1)
        for layer in m.layers:
            unified = layer(unified, None, rope, adaln)
        unified = m.all_final_layer[key](unified, c=adaln)

        out = unified[:, :n_img].reshape(b, ft, ht, wt, pf, p, p, m.out_channels)
        out = out.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, m.out_channels, f, h, w)
        return out.squeeze(2) if squeeze else out


def _ceil32(n: int) -> int:
    return n + (-n) % 32


def zimage_position_ids(
    frames: int, height: int, width: int, cap_len: int, patch: int = 2, f_patch: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """(image ids [ceil32(tokens), 3], caption ids [ceil32(cap_len), 3]) exactly as
    ``ZImageTransformer2DModel.patchify_and_embed`` + ``_prepare_sequence`` build them: caption tokens at
    (1 + i, 0, 0) (pads included), image tokens at (cap_padded + 1 + f, h, w), image pads at (0, 0, 0)."""
    from diffusers.models.transformers.transformer_z_image import ZImageTransformer2DModel as Z

    cap_pad = _ceil32(cap_len)
    cap_ids = Z.create_coordinate_grid((cap_pad, 1, 1), (1, 0, 0)).flatten(0, 2)
    grid = (frames // f_patch, height // patch, width // patch)
    img = Z.create_coordinate_grid(grid, (cap_pad + 1, 0, 0)).flatten(0, 2)
    n = img.shape[0]
    pad = torch.zeros((_ceil32(n) - n, 3), dtype=img.dtype)
    return torch.cat([img, pad], dim=0), cap_ids


def zimage_rope(config: Any, ids: torch.Tensor) -> torch.Tensor:
    """(2, N, head_dim/2) float32: (cos, sin) = (real, imag) of the model's own RopeEmbedder on ``ids``."""
    from diffusers.models.transformers.transformer_z_image import RopeEmbedder

    emb = RopeEmbedder(
        theta=config.rope_theta, axes_dims=list(config.axes_dims), axes_lens=list(config.axes_lens)
    )
    freqs = emb(ids)
    return torch.stack([freqs.real, freqs.imag]).float().contiguous()


class ZImageAdapter(ExportAdapter):
    """Runner: hidden_states = stack of the per-sample (C, 1, h, w) latents the pipeline passes as ``x``
    (every sample the same size), timestep = the pipeline's ``t`` ((1000 − t)/1000), cap_feats = stack of
    the per-sample caption tensors (same length), x_rope/cap_rope = zimage_rope(zimage_position_ids(...)).
    The output is the transformer's output stacked, before the pipeline's negation."""

    family = "zimage"

    def wrap(self, model: nn.Module) -> nn.Module:
        return _ZImageWrapper(model)

    def _half_head(self, config: Any) -> int:
        return int(sum(config.axes_dims)) // 2

    def inputs(self, config: Any) -> list[TensorSpec]:
        d = self._half_head(config)
        c = config.in_channels
        return [
            TensorSpec("hidden_states", "float32", ("batch", c, 1, "height", "width"), "latents"),
            TensorSpec("timestep", "float32", ("batch",), "(1000 - t) / 1000, as the pipeline passes it"),
            TensorSpec(
                "cap_feats", "float32", ("batch", "cap_tokens", config.cap_feat_dim), "caption embeddings"
            ),
            TensorSpec(
                "x_rope",
                "float32",
                (2, "img_tokens_padded", d),
                "(cos, sin) of RopeEmbedder(image ids); img_tokens_padded = ceil32(height*width/4)",
            ),
            TensorSpec(
                "cap_rope",
                "float32",
                (2, "cap_tokens_padded", d),
                "(cos, sin) of RopeEmbedder(caption ids); cap_tokens_padded = ceil32(cap_tokens)",
            ),
        ]

    def dims(self, config: Any, latent_shape: tuple[int, ...], text_len: int) -> dict[str, int]:
        _, h, w = latent_shape
        return {
            "height": h,
            "width": w,
            "cap_tokens": text_len,
            "img_tokens_padded": _ceil32((h // 2) * (w // 2)),
            "cap_tokens_padded": _ceil32(text_len),
        }

    def call_batch(self, guidance_scale: float) -> int:
        return 2 if guidance_scale > 0 else 1  # CFG: latents repeated, positive then negative captions

    def output(self, config: Any) -> TensorSpec:
        return TensorSpec(
            "sample",
            "float32",
            ("batch", config.in_channels, 1, "height", "width"),
            "transformer output stacked (the pipeline negates it into the flow velocity)",
        )

    def example_inputs(
        self, config: Any, latent_shape: tuple[int, ...], text_len: int
    ) -> dict[str, torch.Tensor]:
        c, h, w = latent_shape
        g = torch.Generator().manual_seed(0)
        x_ids, cap_ids = zimage_position_ids(1, h, w, text_len)
        return {
            "hidden_states": torch.randn(2, c, 1, h, w, generator=g),
            "timestep": torch.rand(2, generator=g),
            "cap_feats": torch.randn(2, text_len, config.cap_feat_dim, generator=g),
            "x_rope": zimage_rope(config, x_ids),
            "cap_rope": zimage_rope(config, cap_ids),
        }

    def dynamic_shapes(self, config: Any) -> dict[str, dict[int, Any]]:
        dim = torch.export.Dim
        b = dim("batch", min=1, max=MAX_BATCH)
        h = 2 * dim("height_patches", min=1, max=1024)
        w = 2 * dim("width_patches", min=1, max=1024)
        t = dim("cap_tokens", min=1, max=MAX_TOKENS)
        sx = dim("img_tokens_padded", min=1, max=MAX_TOKENS)
        sc = dim("cap_tokens_padded", min=1, max=MAX_TOKENS)
        return {
            "hidden_states": {0: b, 3: h, 4: w},
            "timestep": {0: b},
            "cap_feats": {0: b, 1: t},
            "x_rope": {1: sx},
            "cap_rope": {1: sc},
        }

    def feeds(self, config: Any, kwargs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        xs = kwargs["x"] if "x" in kwargs else kwargs["hidden_states"]
        caps = kwargs["cap_feats"] if "cap_feats" in kwargs else kwargs["encoder_hidden_states"]
        t = kwargs["t"] if "t" in kwargs else kwargs["timestep"]
        x = torch.stack(list(xs)) if isinstance(xs, (list, tuple)) else torch.as_tensor(xs)
        if x.ndim == 4:
            x = x.unsqueeze(2)
        cap = torch.stack(list(caps)) if isinstance(caps, (list, tuple)) else torch.as_tensor(caps)
        b, _, f, h, w = x.shape
        if f != 1:
            raise ValueError(f"Z-Image graphs take single-frame latents, got {f} frames")
        x_ids, cap_ids = zimage_position_ids(f, h, w, cap.shape[1])
        return {
            "hidden_states": _np(x.float()),
            "timestep": _np(torch.as_tensor(t).float().reshape(-1).expand(b)),
            "cap_feats": _np(cap.float()),
            "x_rope": _np(zimage_rope(config, x_ids)),
            "cap_rope": _np(zimage_rope(config, cap_ids)),
        }


class ShapesFluxAdapter(FluxAdapter):
    """shapes-flux: Flux's transformer and calling convention on pixel latents (core/models/shapes), so
    Flux's graph; its conditioning comes from the checkpoint's own text encoder, outside the graph."""

    family = "shapes_flux"


ADAPTERS: dict[str, type[ExportAdapter]] = {
    "flux": FluxAdapter, "shapes_flux": ShapesFluxAdapter, "wan": WanAdapter, "zimage": ZImageAdapter
}  # fmt: skip


def adapter_for(family: str) -> ExportAdapter:
    if family not in ADAPTERS:
        raise ExportUnsupported(
            f"ONNX export of the {family!r} family is not implemented; use the torch backend"
        )
    return ADAPTERS[family]()

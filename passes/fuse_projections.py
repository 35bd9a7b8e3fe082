"""Fused attention projections for the torch runtime: the quantized q/k/v linears of one attention read one
tensor, so they become one ``adatsq::qlinear`` call, x·[W_q; W_k; W_v]ᵀ = [x·W_qᵀ | x·W_kᵀ | x·W_vᵀ]: one
rotation + activation quantization of x instead of three, and one GEMM of N = Σ N_i.

Per output row the fused op has that member's packed codes, float16 scales and bias, and it quantizes x as
each member did (same width, rotation, group and bits), so every column is the member's contract-1 result.
The members stay in the model with their buffers as views of the fused ones (no second copy of the weights),
and the fused module reads its activation bits from them at every call: ``set_activation_bits`` on the
schedule's layer names still switches configurations. Members of one unit always share bits (the schedule is
per unit); a call with members at different bits is an error.

Only diffusers attention classes whose processors honour ``fused_projections`` (``FUSABLE``, checked against
diffusers 0.42: Flux's ``_get_fused_projections``, Wan's ``_get_qkv_projections``) are fused, and only when
every projection the fused processor calls can be: Flux reads ``to_added_qkv`` when it exists and otherwise
skips the text projections, so a Flux attention fuses its image and text projections together or not at all.
Fuse after the model is on its device: ``Module.to`` copies buffers and would part the views.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adatsq.core.contract import UNQUANTIZED
from adatsq.passes.quant_linear import QuantLinear

__all__ = ["FUSABLE", "FusedProjection", "fuse_projections", "use_fused"]

#: diffusers attention classes → (fused attribute, member attributes) in the order their processors use
FUSABLE: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "FluxAttention": (
        ("to_qkv", ("to_q", "to_k", "to_v")),
        ("to_added_qkv", ("add_q_proj", "add_k_proj", "add_v_proj")),
    ),
    "WanAttention": (
        ("to_qkv", ("to_q", "to_k", "to_v")),  # self-attention
        ("to_kv", ("to_k", "to_v")),  # cross-attention (``is_cross_attention``)
        ("to_added_kv", ("add_k_proj", "add_v_proj")),  # image conditioning (I2V)
    ),
}


class FusedProjection(nn.Module):
    """One quantized linear over the concatenated output rows of ``members`` (module docstring)."""

    def __init__(self, members: Sequence[QuantLinear]) -> None:
        super().__init__()
        reason = unfusable(members)
        if reason:
            raise ValueError(f"cannot fuse these projections: {reason}")
        self._members = tuple(members)
        first = members[0]
        self.in_features, self.out_features = first.in_features, sum(m.out_features for m in members)
        self.register_buffer("w_packed", torch.cat([m.w_packed for m in members]))
        self.register_buffer("w_scale", torch.cat([m.w_scale for m in members]))
        has_bias = first.bias is not None
        self.register_buffer("bias", torch.cat([m.bias for m in members]) if has_bias else None)
        start = 0
        for m in members:  # the members' buffers become views of the fused ones: one copy of the weights
            rows = slice(start, start + m.out_features)
            m.w_packed, m.w_scale = self.w_packed[rows], self.w_scale[rows]
            if has_bias:
                m.bias = self.bias[rows]
            start += m.out_features

    @property
    def members(self) -> tuple[QuantLinear, ...]:
        return self._members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bits = {m.a_bits if m.act_quantized else UNQUANTIZED for m in self._members}
        if len(bits) != 1:
            raise RuntimeError(
                f"fused projections need one activation bit width, got {sorted(bits)}: set the bits per unit "
                "(the schedule does), or run the model unfused"
            )
        m = self._members[0]
        a_bits = bits.pop()
        return torch.ops.adatsq.qlinear(
            x, self.w_packed, self.w_scale, self.bias, a_bits, m.w_bits, m.group_size, m.rotate_input
        )

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, members={len(self._members)}"


def unfusable(members: Sequence[nn.Module | None]) -> str | None:
    """Why ``members`` cannot be one op, or None: they must be single-block QuantLinears of one input width,
    weight format, group, rotation and quantization, without per-layer input transforms (smoothing, CLQ's G)
    or a low-rank branch, and all with a bias or all without."""
    if not members or not all(isinstance(m, QuantLinear) for m in members):
        return "not all quantized linears"
    qs: list[QuantLinear] = list(members)  # type: ignore[arg-type]
    keys = {
        (m.in_features, m.w_bits, m.group_size, m.rotate_input, m.act_quantized, m.bias is not None)
        for m in qs
    }
    if len(keys) != 1:
        return f"different input widths, formats, groups, rotations or biases: {sorted(keys)}"
    for m in qs:
        if len(m.blocks) != 1:
            return "a member has several rotation blocks"
        if m.smooth_inv is not None or m.obs is not None or m.lowrank_down is not None:
            return "a member transforms its input (smoothing, orthogonal smoothing) or has a low-rank branch"
        if m.w_packed.device != qs[0].w_packed.device:
            return "members on different devices"
    return None


def _groups(attn: nn.Module) -> list[tuple[str, tuple[str, ...]]] | None:
    """The (fused name, members) groups the fused processor of ``attn`` calls, or None if one of them cannot
    be fused (then the attention stays unfused)."""
    table = FUSABLE.get(type(attn).__name__)
    if table is None or getattr(attn, "fused_projections", False):
        return None
    cross = bool(getattr(attn, "is_cross_attention", False))
    wanted = []
    for fused, names in table:
        if (fused == "to_qkv" and cross) or (fused == "to_kv" and not cross):
            continue  # Wan: self-attention fuses q/k/v, cross-attention only k/v
        mods = [getattr(attn, n, None) for n in names]
        if all(m is None for m in mods) and fused not in ("to_qkv", "to_kv"):
            continue  # no such projections here (Flux's single blocks, Wan without image conditioning)
        if unfusable(mods):
            return None
        wanted.append((fused, names))
    return wanted


def fuse_projections(model: nn.Module) -> int:
    """Fuse every attention of ``model`` that can be (module docstring); returns the number of fused ops."""
    count = 0
    for attn in list(model.modules()):
        groups = _groups(attn)
        if not groups:
            continue
        for fused, names in groups:
            setattr(attn, fused, FusedProjection([getattr(attn, n) for n in names]))
            count += 1
        attn.fused_projections = True
    return count


def use_fused(model: nn.Module, on: bool) -> int:
    """Switch the fused attentions of ``model`` between their fused ops and their members (both stay valid:
    the members' buffers are the fused ones' rows); returns the number switched."""
    n = 0
    for attn in model.modules():
        if any(isinstance(c, FusedProjection) for c in attn.children()):
            attn.fused_projections = on
            n += 1
    return n

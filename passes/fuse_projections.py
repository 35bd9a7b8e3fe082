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

Linears that a block calls one after another on the very same tensor, through processors without a fused
path (``SHARED_INPUT``: Flux's single blocks, whose ``proj_mlp`` and q/k/v all read ``norm_hidden_states``;
Z-Image's q/k/v and its SwiGLU's w1/w3), become one op too, x·[W_1; …; W_n]ᵀ = [x·W_1ᵀ | … | x·W_nᵀ]: each
linear's forward is routed to a :class:`SharedInput`, which computes every column at the group's first call
and hands each later caller its columns when it passes that very tensor (the same object, not modified in
place since), so x is rotated and quantized once per group. The linears keep their names and modules.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn

from adatsq.core.contract import UNQUANTIZED
from adatsq.passes.quant_linear import QuantLinear

__all__ = [
    "FUSABLE",
    "SHARED_INPUT",
    "FusedProjection",
    "SharedInput",
    "fuse_projections",
    "use_fused",
]

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

#: diffusers blocks → groups of their linears (attribute paths) that the block's forward and processors call,
#: in some order, on one and the same tensor (checked against diffusers 0.42): Flux's single block computes
#: ``proj_mlp(norm_hidden_states)`` and then ``attn(hidden_states=norm_hidden_states)``, whose unfused processor
#: calls ``to_q``, ``to_k`` and ``to_v`` on it; Z-Image's ``ZSingleStreamAttnProcessor`` calls ``to_q``, ``to_k``,
#: ``to_v`` on ``hidden_states`` and its ``FeedForward`` computes ``w2(silu(w1(x)) · w3(x))``.
SHARED_INPUT: dict[str, tuple[tuple[str, ...], ...]] = {
    "FluxSingleTransformerBlock": (("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),),
    "ZImageTransformerBlock": (
        ("attention.to_q", "attention.to_k", "attention.to_v"),
        ("feed_forward.w1", "feed_forward.w3"),
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


class _Kept:
    """The columns of a :class:`SharedInput` call its other members have not fetched yet, and the input."""

    def __init__(self) -> None:
        self.x: torch.Tensor | None = None
        self.version = -1
        self.parts: dict[int, torch.Tensor] = {}


class SharedInput(nn.Module):
    """One op for linears called one after another on one tensor: member i's call of ``forward`` is routed to
    ``part(x, i)``. A call computes every member's columns and keeps the others', which each other member's
    next call takes if it passes the same tensor, unchanged (its version counter; under torch.compile the
    traced data flow decides); any other call computes its own. Each member gets exactly its columns of the
    fused op, which are its own contract-1 result."""

    def __init__(self, members: Sequence[QuantLinear]) -> None:
        super().__init__()
        self.fused = FusedProjection(members)
        bounds = [0]
        for m in members:
            bounds.append(bounds[-1] + m.out_features)
        self.bounds = tuple(bounds)
        self._kept = _Kept()

    @property
    def members(self) -> tuple[QuantLinear, ...]:
        return self.fused.members

    def part(self, x: torch.Tensor, which: int) -> torch.Tensor:
        kept = self._kept
        same = kept.x is x and which in kept.parts
        if same and not torch.compiler.is_compiling():
            same = kept.version == x._version
        if same:
            y = kept.parts.pop(which)
            if not kept.parts:
                kept.x = None
            return y
        out = self.fused(x)
        parts = [out[..., a:b] for a, b in zip(self.bounds, self.bounds[1:])]
        kept.x, kept.parts = x, {j: y for j, y in enumerate(parts) if j != which}
        if not torch.compiler.is_compiling():
            kept.version = x._version
        return parts[which]

    def route(self, on: bool) -> None:
        """Each member's forward as its part of this op (on), or the member's own forward again (off)."""
        for i, m in enumerate(self.members):
            if on:  # an instance attribute, so no submodule: the member keeps its name and its module
                object.__setattr__(m, "forward", functools.partial(self.part, which=i))
            else:
                m.__dict__.pop("forward", None)
        self._kept = _Kept()

    def extra_repr(self) -> str:
        return f"members={len(self.members)}"


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
        if m.smooth_inv is not None or m.obs_perm is not None or m.lowrank_down is not None:
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


def _share_inputs(block: nn.Module) -> list[SharedInput]:
    """The ``SHARED_INPUT`` groups of ``block`` that can be one op, each a :class:`SharedInput` (routed,
    registered on the block as ``shared_inputs``); a group with a member that cannot be fused stays as it is."""
    done = []
    for paths in SHARED_INPUT.get(type(block).__name__, ()):
        members = [_submodule(block, p) for p in paths]
        if unfusable(members):
            continue
        shared = SharedInput(members)  # type: ignore[arg-type]
        shared.route(True)
        done.append(shared)
    if done:
        block.shared_inputs = nn.ModuleList(done)
    return done


def _submodule(module: nn.Module, path: str) -> nn.Module | None:
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


def fuse_projections(model: nn.Module) -> int:
    """Fuse every routed group and every attention of ``model`` that can be (module docstring); returns the
    number of fused ops."""
    count = 0
    routed: set[int] = set()
    for block in list(model.modules()):
        for shared in _share_inputs(block):
            routed.update(id(m) for m in shared.members)
            count += 1
    for attn in list(model.modules()):
        groups = _groups(attn)
        if not groups or any(id(getattr(attn, n, None)) in routed for _, names in groups for n in names):
            continue  # its projections are routed to a SharedInput already
        for fused, names in groups:
            setattr(attn, fused, FusedProjection([getattr(attn, n) for n in names]))
            count += 1
        attn.fused_projections = True
    return count


def use_fused(model: nn.Module, on: bool) -> int:
    """Switch the fused attentions and routed groups of ``model`` between their fused ops and their members
    (both stay valid: the members' buffers are the fused ones' rows); returns the number switched."""
    n = 0
    for mod in list(model.modules()):
        if isinstance(mod, SharedInput):
            mod.route(on)
            n += 1
        elif hasattr(mod, "fused_projections") and any(
            isinstance(c, FusedProjection) for c in mod.children()
        ):
            mod.fused_projections = on
            n += 1
    return n

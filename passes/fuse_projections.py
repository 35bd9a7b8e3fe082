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

Blocks where another projection reads the attention's input (``SHARED_INPUT``: Flux's single blocks, whose
``proj_mlp`` and q/k/v all read ``norm_hidden_states`` and form one schedule unit) get one op for all four,
x·[W_q; W_k; W_v; W_mlp]ᵀ = [q | k | v | mlp]: :class:`SharedInput` computes every column at the first of the
two calls and hands the other caller its columns when it calls with that very tensor (the same object, not
modified in place since), so x is rotated and quantized once per block.
"""

from __future__ import annotations

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
    "SharedPart",
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

#: diffusers blocks → (their attention, the block's projection that reads the attention's input). Checked
#: against diffusers 0.42: FluxSingleTransformerBlock.forward computes ``proj_mlp(norm_hidden_states)``, then
#: ``attn(hidden_states=norm_hidden_states)``, whose fused processor calls ``to_qkv`` on that tensor.
SHARED_INPUT: dict[str, tuple[str, str]] = {"FluxSingleTransformerBlock": ("attn", "proj_mlp")}


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
    """The columns one caller of a :class:`SharedInput` has not fetched yet, and the input they are of."""

    def __init__(self) -> None:
        self.x: torch.Tensor | None = None
        self.version = -1
        self.part = -1
        self.y: torch.Tensor | None = None


class SharedInput(nn.Module):
    """One op for two callers of one input: part 0 is the first ``split`` output columns of ``fused``, part 1
    the rest. A call computes both parts and keeps the other one, which the other part's next call takes if
    it passes the same tensor, unchanged (its version counter; under torch.compile the traced data flow
    decides); any other call computes its own. Each caller gets exactly its columns of the fused op.

    Registered on the block as ``shared_input``; ``parts`` are the callers' modules (not registered, so the
    module tree has no cycle): part 0 is the attention's ``to_qkv``, part 1 runs as the block's own linear's
    ``forward``, so that linear keeps its name and the schedule still sets its bits."""

    def __init__(self, fused: FusedProjection, split: int) -> None:
        super().__init__()
        if not 0 < split < fused.out_features:
            raise ValueError(f"split {split} outside the fused op's {fused.out_features} columns")
        self.fused = fused
        self.split = split
        self.parts = (SharedPart(self, 0), SharedPart(self, 1))
        self._kept = _Kept()

    def part(self, x: torch.Tensor, which: int) -> torch.Tensor:
        kept = self._kept
        same = kept.x is x and kept.part == which
        if same and not torch.compiler.is_compiling():
            same = kept.version == x._version
        y = kept.y
        kept.x, kept.y, kept.part = None, None, -1
        if same and y is not None:
            return y
        out = self.fused(x)
        parts = (out[..., : self.split], out[..., self.split :])
        kept.x, kept.part, kept.y = x, 1 - which, parts[1 - which]
        if not torch.compiler.is_compiling():
            kept.version = x._version
        return parts[which]

    def extra_repr(self) -> str:
        return f"split={self.split}"


class SharedPart(nn.Module):
    """Caller ``which`` of a :class:`SharedInput` (which it holds without registering it)."""

    def __init__(self, shared: SharedInput, which: int) -> None:
        super().__init__()
        object.__setattr__(self, "_shared", shared)
        self.which = which

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._shared.part(x, self.which)

    def extra_repr(self) -> str:
        return f"part={self.which}"


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


def _share_input(block: nn.Module) -> bool:
    """Fuse the attention's q/k/v with the block's other projection of the same input (``SHARED_INPUT``) as
    one :class:`SharedInput`; False (nothing changed) when the block is not listed or they cannot be one op."""
    names = SHARED_INPUT.get(type(block).__name__)
    if names is None:
        return False
    attn, other = getattr(block, names[0], None), getattr(block, names[1], None)
    groups = None if attn is None else _groups(attn)
    if groups is None or [g for g, _ in groups] != ["to_qkv"]:
        return False  # Flux's single blocks have q/k/v only (no text projections)
    members = [getattr(attn, n) for n in groups[0][1]]
    if unfusable([*members, other]):
        return False
    block.shared_input = SharedInput(FusedProjection([*members, other]), sum(m.out_features for m in members))
    attn.to_qkv = block.shared_input.parts[0]
    attn.fused_projections = True
    _route(block.shared_input, True)
    return True


def _route(shared: SharedInput, on: bool) -> None:
    """Part 1 of ``shared`` as its linear's forward (on), or that linear's own forward again (off)."""
    linear = shared.fused.members[-1]
    if on:
        object.__setattr__(linear, "forward", shared.parts[1].forward)  # an instance attribute: no submodule
    else:
        linear.__dict__.pop("forward", None)


def fuse_projections(model: nn.Module) -> int:
    """Fuse every attention of ``model`` that can be (module docstring); returns the number of fused ops."""
    count = 0
    for block in list(model.modules()):
        count += _share_input(block)
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
    for mod in list(model.modules()):
        if isinstance(mod, SharedInput):
            _route(mod, on)
        elif hasattr(mod, "fused_projections") and any(
            isinstance(c, FusedProjection | SharedPart) for c in mod.children()
        ):
            mod.fused_projections = on
            n += 1
    return n

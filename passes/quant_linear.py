"""Quantized linear modules and the pass that puts them into a transformer.

``QuantLinear`` holds the packed codes of W·R (R the Hadamard rotation of its input width, folded offline:
x·R·(W·R)ᵀ = x·Wᵀ), their float16 group scales and the bias, and calls ``torch.ops.adatsq.qlinear``, so its
numerics are contract 1 on every backend. ``a_bits`` is mutable: the runner and the search set it per step.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

import adatsq.plugins.op  # noqa: F401  (registers torch.ops.adatsq.qlinear)
from adatsq.core.contract import UNQUANTIZED
from adatsq.passes.base import Pass, PassConditionError, PassResult
from adatsq.plugins.formats import format_for_bits
from adatsq.plugins.hadamard import is_supported_width, rotate_blocks
from adatsq.plugins.reference import effective_group, granular_weight_scale, quantize_weight_rtn

__all__ = [
    "QUANT_TENSOR",
    "InsertQuantLinearPass",
    "LayerQuant",
    "QuantLinear",
    "block_buffer",
    "quant_linears",
    "rotated_weight",
    "rotates_input",
    "rotation_blocks",
    "set_activation_bits",
    "set_submodule",
]


def rotates_input(in_features: int, act_quantized: bool, rotation: bool = True) -> bool:
    """Whether a linear's input is rotated online (and its weight stored as W·R): exactly the
    activation-quantized layers whose width has a Hadamard rotation; weight-only layers (one vector per
    sample) never are, and no layer is with ``rotation=False`` (the no-rotation ablation). Decided here only:
    :class:`InsertQuantLinearPass` builds the op with it and the GPTQ Hessians (compiler/stages/quantize.py)
    rotate their inputs by it, so the two cannot disagree."""
    return rotation and act_quantized and is_supported_width(in_features)


def rotation_blocks(
    in_features: int,
    act_quantized: bool,
    group_size: int,
    rotation: bool = True,
    split: Sequence[int] | None = None,
) -> tuple[int, ...] | None:
    """The blocks of a linear's online rotation R = diag(R_b1, R_b2, ...), or None when its input is not
    rotated (:func:`rotates_input`). ``split``: the widths of the tensors its input concatenates (Flux's
    single-block ``proj_out`` reads [attention 3072 | MLP 12288]); each becomes its own rotation block when
    every block has a Hadamard width and a whole number of groups (so no activation group straddles two
    blocks), else the layer keeps one block of its whole width. Each block is then its own ``adatsq::qlinear``
    call at a width the kernels handle fast (3072 = 12·2^8 and 12288 = 12·2^10 instead of 15360 = 60·2^8), and
    y = Σ_b x_b·R_b·(W_b·R_b)ᵀ + bias = x·Wᵀ + bias."""
    if not rotates_input(in_features, act_quantized, rotation):
        return None
    if split and len(split) > 1:
        blocks = tuple(int(b) for b in split)
        g = effective_group(in_features, group_size)
        if (
            sum(blocks) == in_features
            and g == group_size
            and all(b % g == 0 and is_supported_width(b) for b in blocks)
        ):
            return blocks
    return (in_features,)


def rotated_weight(weight: torch.Tensor, blocks: tuple[int, ...] | None = None) -> torch.Tensor:
    """W·R in float64: row n of W·R is W[n]·R = rotate(W[n]) (block by block for a block-diagonal R)."""
    return rotate_blocks(weight.detach().double(), blocks)


class QuantLinear(nn.Module):
    """y = qlinear(x; pack(q(W·R)), s_w, b, a_bits) — contract 1, any backend of ``adatsq::qlinear``."""

    def __init__(
        self,
        codes: torch.Tensor,
        scale: torch.Tensor,
        bias: torch.Tensor | None,
        w_bits: int,
        group_size: int,
        rotate_input: bool,
        a_bits: int = UNQUANTIZED,
        act_quantized: bool = True,
        blocks: Sequence[int] | None = None,
        smooth: torch.Tensor | None = None,
        lowrank: tuple[torch.Tensor, torch.Tensor] | None = None,
        obs_perm: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        fmt = format_for_bits(w_bits)
        fmt.check(codes)
        self.out_features, self.in_features = codes.shape
        self.w_bits = w_bits
        self.group_size = effective_group(self.in_features, group_size)
        self.rotate_input = rotate_input
        self.act_quantized = act_quantized
        self.a_bits = a_bits
        self.blocks = self._checked_blocks(blocks)
        starts = [0, *itertools.accumulate(self.blocks)]
        for i, (a, b) in enumerate(itertools.pairwise(starts)):
            # block i: its columns of the codes, its groups of the scales (block 0 keeps the plain names)
            self.register_buffer(block_buffer("w_packed", i), fmt.pack(codes[:, a:b].contiguous()))
            g0, g1 = a // self.group_size, b // self.group_size
            self.register_buffer(block_buffer("w_scale", i), scale[:, g0:g1].to(torch.float16).contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        # SmoothQuant's s (calib/smoothing.py): the input is scaled by 1/s online, the codes are of W·diag(s)
        inv = None if smooth is None else (1.0 / smooth.detach().double()).float().reshape(self.in_features)
        self.register_buffer("smooth_inv", inv)
        # CLQ's orthogonal smoothing G = P·diag(R_b, …) (calib/obs.py): x̂·P = x̂[..., perm], then the op's
        # rotation of each block; x̂·G·(Ŵ·G)ᵀ = x̂·Ŵᵀ, the codes are of Ŵ·G
        self.register_buffer("obs_perm", None if obs_perm is None else self._checked_perm(obs_perm))
        # SVDQuant's branch (calib/lowrank.py): y += (x̂·L_down)·L_upᵀ, in the model's dtype; codes are of E
        down, up = (
            (None, None) if lowrank is None else (lowrank[0].detach().float(), lowrank[1].detach().float())
        )
        self.register_buffer("lowrank_down", down)
        self.register_buffer("lowrank_up", up)
        self.register_buffer("_dtype_probe", torch.empty(0), persistent=False)

    def _checked_perm(self, perm: torch.Tensor) -> torch.Tensor:
        """``perm`` as int32, checked to be a permutation of the K input channels of a rotated layer."""
        k = self.in_features
        if tuple(perm.shape) != (k,) or perm.dtype.is_floating_point or perm.dtype == torch.bool:
            raise ValueError(f"obs_perm {tuple(perm.shape)} {perm.dtype} is not an integer [{k}] permutation")
        # int32: TensorRT's Gather indices and weight inputs
        perm = perm.detach().to(torch.int32).contiguous()
        if not torch.equal(torch.sort(perm.cpu()).values, torch.arange(k, dtype=torch.int32)):
            raise ValueError(f"obs_perm is not a permutation of the {k} input channels")
        if not self.rotate_input:
            raise ValueError("obs_perm needs the layer's rotation: G = P·diag(R_b, …) rotates each block")
        return perm

    def _checked_blocks(self, blocks: Sequence[int] | None) -> tuple[int, ...]:
        if not blocks or len(blocks) == 1:
            return (self.in_features,)
        blocks = tuple(int(b) for b in blocks)
        if sum(blocks) != self.in_features or any(b % self.group_size for b in blocks):
            raise ValueError(
                f"blocks {blocks} must add up to K={self.in_features} and each hold whole groups of {self.group_size}"
            )
        if not self.rotate_input:
            raise ValueError("blocks are rotation blocks: a layer without rotation has one block")
        return blocks

    @classmethod
    def from_packed(
        cls,
        packed: torch.Tensor,
        scale: torch.Tensor,
        bias: torch.Tensor | None,
        w_bits: int,
        group_size: int,
        rotate_input: bool,
        in_features: int,
        a_bits: int = UNQUANTIZED,
        act_quantized: bool = True,
        blocks: Sequence[int] | None = None,
        more: Sequence[tuple[torch.Tensor, torch.Tensor]] = (),
        smooth_inv: torch.Tensor | None = None,
        lowrank: tuple[torch.Tensor, torch.Tensor] | None = None,
        obs_perm: torch.Tensor | None = None,
    ) -> QuantLinear:
        """The module holding already packed codes (``fmt.pack`` bytes of an [N, width] code matrix per
        rotation block, as stored in weights.safetensors: ``packed``/``scale`` for block 0, ``more`` for the
        others) without unpacking and repacking them: the tensors are used as given (no copy). Shapes and
        dtypes are checked; values need not be (every byte pattern of the int3/int4/int8 packings decodes to
        in-range codes)."""
        fmt = format_for_bits(w_bits)
        q = cls(torch.zeros(0, in_features, dtype=torch.int8), torch.zeros(0, in_features // effective_group(
                in_features, group_size)), None, w_bits, group_size, rotate_input, a_bits=a_bits,
                act_quantized=act_quantized, blocks=blocks)  # fmt: skip
        parts = [(packed, scale), *more]
        if len(parts) != len(q.blocks):
            raise ValueError(f"{len(parts)} packed blocks for the rotation blocks {q.blocks}")
        n = packed.shape[0] if packed.dim() == 2 else -1
        for i, (width, (p, sc)) in enumerate(zip(q.blocks, parts, strict=True)):
            probe = fmt.pack(torch.zeros(1, width, dtype=torch.int8))
            if p.dim() != 2 or p.shape[0] != n or p.shape[1] != probe.shape[1] or p.dtype != probe.dtype:
                raise ValueError(
                    f"{fmt.name}: packed weight {tuple(p.shape)} {p.dtype} is not [{n}, {probe.shape[1]}] "
                    f"{probe.dtype} for K={width}"
                )
            groups = width // q.group_size
            if tuple(sc.shape) != (n, groups):
                raise ValueError(
                    f"scales {tuple(sc.shape)} do not fit N={n}, K={width}, group {q.group_size} (want [{n}, {groups}])"
                )
            setattr(q, block_buffer("w_packed", i), p)
            setattr(q, block_buffer("w_scale", i), sc if sc.dtype == torch.float16 else sc.to(torch.float16))
        if bias is not None and tuple(bias.shape) != (n,):
            raise ValueError(f"bias {tuple(bias.shape)} and N={n} do not fit (want [{n}])")
        q.out_features = n
        if bias is not None:
            q.bias = bias if bias.dtype == torch.float32 else bias.float()
        if smooth_inv is not None:
            if tuple(smooth_inv.shape) != (in_features,):
                raise ValueError(f"smooth_inv {tuple(smooth_inv.shape)} does not fit K={in_features}")
            q.smooth_inv = smooth_inv
        if obs_perm is not None:
            q.obs_perm = q._checked_perm(obs_perm)
        if lowrank is not None:
            down, up = lowrank
            if (
                down.dim() != 2
                or up.dim() != 2
                or down.shape[0] != in_features
                or up.shape[0] != n
                or down.shape[1] != up.shape[1]
            ):
                raise ValueError(
                    f"low-rank factors {tuple(down.shape)} / {tuple(up.shape)} do not fit K={in_features}, N={n} "
                    f"(want [K, r] and [N, r])"
                )
            q.lowrank_down, q.lowrank_up = down, up
        return q

    def packed_blocks(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(packed codes, float16 scales) of each rotation block, in order."""
        return [
            (getattr(self, block_buffer("w_packed", i)), getattr(self, block_buffer("w_scale", i)))
            for i in range(len(self.blocks))
        ]

    @property
    def weight(self) -> torch.Tensor:
        """An empty tensor with the module's compute dtype and device, for diffusers code that reads
        ``linear.weight.dtype`` (e.g. Z-Image's timestep embedder); the weights live in ``w_packed``."""
        return self._dtype_probe

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 - nn.Module's signature
        # model.to(bfloat16) must not touch the op's contract: scales stay float16, bias float32
        super()._apply(fn, recurse)
        for i in range(len(self.blocks)):
            name = block_buffer("w_scale", i)
            setattr(self, name, getattr(self, name).to(torch.float16))
        if self.bias is not None:
            self.bias = self.bias.float()
        return self

    @property
    def codes(self) -> torch.Tensor:
        fmt = format_for_bits(self.w_bits)
        return torch.cat(
            [
                fmt.unpack(p.cpu(), width)
                for width, (p, _) in zip(self.blocks, self.packed_blocks(), strict=True)
            ],
            dim=1,
        )

    @property
    def scales(self) -> torch.Tensor:
        """The float16 scales of the whole width (the blocks' scales side by side)."""
        return torch.cat([sc for _, sc in self.packed_blocks()], dim=1)

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, w{self.w_bits}a{self.a_bits}, "
            f"group={self.group_size}, rotate={self.rotate_input}"
            + (f", blocks={self.blocks}" if len(self.blocks) > 1 else "")
            + (", smoothed" if self.smooth_inv is not None else "")
            + (", obs" if self.obs_perm is not None else "")
            + (f", rank={self.lowrank_down.shape[1]}" if self.lowrank_down is not None else "")
        )

    def op_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the op's calls read (before their own rotation): x̂ = x·diag(s)⁻¹ (SmoothQuant; x̂·(W·diag(s))ᵀ
        = x·Wᵀ), then x̂·P = x̂[..., perm] (CLQ's G = P·diag(R_b, …); the blocks' ops rotate by R_b)."""
        if self.smooth_inv is not None:
            x = x * self.smooth_inv.to(x.dtype)
        if self.obs_perm is not None:
            x = x.index_select(-1, self.obs_perm)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a_bits = self.a_bits if self.act_quantized else UNQUANTIZED
        args = (a_bits, self.w_bits, self.group_size, self.rotate_input)
        x = self.op_input(x)
        if len(self.blocks) == 1:
            y = torch.ops.adatsq.qlinear(x, self.w_packed, self.w_scale, self.bias, *args)
        else:  # block-diagonal rotation: one op per block, the bias added by the last (y = Σ_b x_b·Ŵ_bᵀ + b)
            # narrow, not split: the exporter turns split into SplitToSequence/SequenceAt, narrow into a Slice
            starts = itertools.accumulate(self.blocks, initial=0)
            parts = [x.narrow(-1, a, w) for a, w in zip(starts, self.blocks, strict=False)]
            last = len(parts) - 1
            y = None
            for i, (part, (packed, scale)) in enumerate(zip(parts, self.packed_blocks(), strict=True)):
                out = torch.ops.adatsq.qlinear(part, packed, scale, self.bias if i == last else None, *args)
                y = out if y is None else y + out
        if self.lowrank_down is not None:  # y = x̂·Eᵀ + (x̂·L_down)·L_upᵀ
            y = y + (x @ self.lowrank_down.to(x.dtype)) @ self.lowrank_up.to(x.dtype).t()
        return y


class LayerQuant:
    """How one linear is quantized: its weight bits, whether it is activation-quantized, whether rotations
    are on (:func:`rotates_input`), and optionally precomputed codes/scales (from GPTQ); without them,
    round-to-nearest with scales by ``scale_method`` (plugins/reference.SCALE_METHODS)."""

    def __init__(
        self,
        w_bits: int,
        act_quantized: bool,
        group_size: int,
        codes: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        rotation: bool = True,
        scale_method: str = "absmax",
        split: Sequence[int] | None = None,
        smooth: torch.Tensor | None = None,
        lowrank: tuple[torch.Tensor, torch.Tensor] | None = None,
        bias: torch.Tensor | None = None,
        obs_perm: torch.Tensor | None = None,
        obs_blocks: Sequence[int] | None = None,
        weight_group: str = "group",
    ) -> None:
        self.w_bits = w_bits
        #: the round-to-nearest scales' granularity (plugins/reference.WEIGHT_GRANULARITIES)
        self.weight_group = weight_group
        self.act_quantized = act_quantized
        self.group_size = group_size
        self.codes = codes
        self.scale = scale
        self.rotation = rotation
        self.scale_method = scale_method
        #: the widths of the tensors the layer's input concatenates (:func:`rotation_blocks`)
        self.split = tuple(split) if split else None
        #: SmoothQuant's per-channel s (K) or None; given codes are then of W·diag(s) already
        self.smooth = smooth
        #: SVDQuant's (L_down, L_up) or None; given codes are then of the residual E already
        self.lowrank = lowrank
        #: a bias replacing the linear's (D²Quant's mean-shift correction b − μ), or None: the linear's own
        self.bias = bias
        #: CLQ's G = P·diag(R_b, …) (calib/obs.py) as the permutation (K) and its rotation blocks (b, …, b)
        #: (calib/obs.obs_blocks), or None; the layer rotates by those blocks and given codes are of
        #: W·diag(s)·G already
        if (obs_perm is None) != (obs_blocks is None):
            raise ValueError("obs_perm and obs_blocks go together")
        self.obs_perm = obs_perm
        self.obs_blocks = None if obs_blocks is None else tuple(int(b) for b in obs_blocks)

    def blocks(self, in_features: int) -> tuple[int, ...] | None:
        if self.obs_blocks is not None:
            ok = sum(self.obs_blocks) == in_features and all(is_supported_width(b) for b in self.obs_blocks)
            if not (self.act_quantized and ok):
                raise ValueError(
                    f"CLQ's G needs an activation-quantized layer and Hadamard blocks {self.obs_blocks} of K={in_features}"
                )
            return self.obs_blocks
        return rotation_blocks(in_features, self.act_quantized, self.group_size, self.rotation, self.split)


def block_buffer(name: str, block: int) -> str:
    """Buffer names of rotation block ``block``: ``w_packed``/``w_scale`` for block 0 (every unsplit layer),
    ``w_packed_1``/``w_scale_1``... for the others. The weight store and the graphs' initializers use them
    after ``<layer>.`` (:data:`QUANT_TENSOR` parses them back)."""
    return name if block == 0 else f"{name}_{block}"


#: ``<layer>.w_packed[_b]`` / ``<layer>.w_scale[_b]``: a quantized layer's codes or scales of rotation block b
QUANT_TENSOR = re.compile(r"(?P<layer>.+)\.(?P<kind>w_packed|w_scale)(?:_(?P<block>\d+))?")


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


class InsertQuantLinearPass(Pass[nn.Module]):
    """Replace each named ``nn.Linear`` by a :class:`QuantLinear` (in place).

    Activation-quantized layers get an online rotation when their width has a Hadamard matrix; weight-only
    layers (one vector per sample: adaLN modulation, embedders) keep their input unrotated and a_bits = 16.
    """

    def __init__(self, layers: Mapping[str, LayerQuant]) -> None:
        self.layers = dict(layers)

    def requires(self, target: nn.Module) -> None:
        modules = dict(target.named_modules())
        for name in self.layers:
            if not isinstance(modules.get(name), nn.Linear):
                raise PassConditionError(f"{self.name}: {name!r} is not an nn.Linear in the model")

    def call(self, target: nn.Module) -> PassResult[nn.Module]:
        modules = dict(target.named_modules())
        for name, lq in self.layers.items():
            linear = modules[name]
            blocks = lq.blocks(linear.in_features)
            rotate_input = blocks is not None
            if lq.codes is None:
                w = linear.weight.detach().double()
                w = w * lq.smooth.double()[None, :] if lq.smooth is not None else w
                # W·P (CLQ); its ·diag(R_b, …) is the rotation below
                w = w[:, lq.obs_perm.long().to(w.device)] if lq.obs_perm is not None else w
                w = w - lq.lowrank[1].double() @ lq.lowrank[0].double().t() if lq.lowrank is not None else w
                w = rotate_blocks(w, blocks) if rotate_input else w
                w32 = w.float()
                scale = granular_weight_scale(w32, lq.w_bits, lq.group_size, lq.scale_method, lq.weight_group)
                codes, scale = quantize_weight_rtn(w32, lq.w_bits, lq.group_size, scale=scale)
            else:  # packed where the layer lives (the quantize stage keeps GPTQ's codes on the host)
                codes, scale = lq.codes.to(linear.weight.device), lq.scale.to(linear.weight.device)
            q = QuantLinear(
                codes,
                scale,
                linear.bias if lq.bias is None else lq.bias,
                lq.w_bits,
                lq.group_size,
                rotate_input,
                act_quantized=lq.act_quantized,
                blocks=blocks,
                smooth=lq.smooth,
                lowrank=lq.lowrank,
                obs_perm=lq.obs_perm,
            )
            set_submodule(target, name, q.to(linear.weight.device))
        return PassResult(target, modified=bool(self.layers))

    def ensures(self, result: nn.Module) -> None:
        modules = dict(result.named_modules())
        missing = [n for n in self.layers if not isinstance(modules.get(n), QuantLinear)]
        if missing:
            raise PassConditionError(f"{self.name}: not replaced: {missing[:5]}")


def quant_linears(model: nn.Module) -> dict[str, QuantLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}


def set_activation_bits(
    model: nn.Module, bits: Mapping[str, int], modules: Mapping[str, QuantLinear] | None = None
) -> None:
    """Set ``a_bits`` of the named activation-quantized layers (others keep theirs)."""
    modules = quant_linears(model) if modules is None else modules
    for name, b in bits.items():
        modules[name].a_bits = int(b)

"""Quantized linear modules and the pass that puts them into a transformer.

``QuantLinear`` holds the packed codes of W·R (R the Hadamard rotation of its input width, folded offline:
x·R·(W·R)ᵀ = x·Wᵀ), their float16 group scales and the bias, and calls ``torch.ops.adatsq.qlinear``, so its
numerics are contract 1 on every backend. ``a_bits`` is mutable: the runner and the search set it per step.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

import adatsq.plugins.op  # noqa: F401  (registers torch.ops.adatsq.qlinear)
from adatsq.core.contract import UNQUANTIZED
from adatsq.passes.base import Pass, PassConditionError, PassResult
from adatsq.plugins.formats import format_for_bits
from adatsq.plugins.hadamard import is_supported_width, rotate
from adatsq.plugins.reference import effective_group, quantize_weight_rtn

__all__ = [
    "InsertQuantLinearPass",
    "LayerQuant",
    "QuantLinear",
    "quant_linears",
    "rotated_weight",
    "rotates_input",
    "set_activation_bits",
]


def rotates_input(in_features: int, act_quantized: bool, rotation: bool = True) -> bool:
    """Whether a linear's input is rotated online (and its weight stored as W·R): exactly the
    activation-quantized layers whose width has a Hadamard rotation; weight-only layers (one vector per
    sample) never are, and no layer is with ``rotation=False`` (the no-rotation ablation). Decided here only:
    :class:`InsertQuantLinearPass` builds the op with it and the GPTQ Hessians (compiler/stages/quantize.py)
    rotate their inputs by it, so the two cannot disagree."""
    return rotation and act_quantized and is_supported_width(in_features)


def rotated_weight(weight: torch.Tensor) -> torch.Tensor:
    """W·R in float64: row n of W·R is W[n]·R = rotate(W[n])."""
    return rotate(weight.detach().double())


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
        self.register_buffer("w_packed", fmt.pack(codes))
        self.register_buffer("w_scale", scale.to(torch.float16).contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.register_buffer("_dtype_probe", torch.empty(0), persistent=False)

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
    ) -> QuantLinear:
        """The module holding already packed codes (``fmt.pack`` bytes of an [N, in_features] code matrix, as
        stored in weights.safetensors) without unpacking and repacking them: the tensors are used as given
        (no copy). Shapes and dtypes are checked; values need not be (every byte pattern of the int3/int4/int8
        packings decodes to in-range codes)."""
        fmt = format_for_bits(w_bits)
        probe = fmt.pack(torch.zeros(1, in_features, dtype=torch.int8))
        n = packed.shape[0] if packed.dim() == 2 else -1
        if packed.dim() != 2 or packed.shape[1] != probe.shape[1] or packed.dtype != probe.dtype:
            raise ValueError(
                f"{fmt.name}: packed weight {tuple(packed.shape)} {packed.dtype} is not [N, {probe.shape[1]}] "
                f"{probe.dtype} for K={in_features}"
            )
        q = cls(torch.zeros(0, in_features, dtype=torch.int8), torch.zeros(0, 1), None, w_bits, group_size,
                rotate_input, a_bits=a_bits, act_quantized=act_quantized)  # fmt: skip
        groups = in_features // q.group_size
        if tuple(scale.shape) != (n, groups) or (bias is not None and tuple(bias.shape) != (n,)):
            raise ValueError(
                f"scale {tuple(scale.shape)} / bias {None if bias is None else tuple(bias.shape)} do not fit "
                f"N={n}, K={in_features}, group {q.group_size} (want [{n}, {groups}] and [{n}])"
            )
        q.out_features = n
        q.w_packed = packed
        q.w_scale = scale if scale.dtype == torch.float16 else scale.to(torch.float16)
        if bias is not None:
            q.bias = bias if bias.dtype == torch.float32 else bias.float()
        return q

    @property
    def weight(self) -> torch.Tensor:
        """An empty tensor with the module's compute dtype and device, for diffusers code that reads
        ``linear.weight.dtype`` (e.g. Z-Image's timestep embedder); the weights live in ``w_packed``."""
        return self._dtype_probe

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 - nn.Module's signature
        # model.to(bfloat16) must not touch the op's contract: scales stay float16, bias float32
        super()._apply(fn, recurse)
        self.w_scale = self.w_scale.to(torch.float16)
        if self.bias is not None:
            self.bias = self.bias.float()
        return self

    @property
    def codes(self) -> torch.Tensor:
        return format_for_bits(self.w_bits).unpack(self.w_packed.cpu(), self.in_features)

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, w{self.w_bits}a{self.a_bits}, "
            f"group={self.group_size}, rotate={self.rotate_input}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a_bits = self.a_bits if self.act_quantized else UNQUANTIZED
        return torch.ops.adatsq.qlinear(
            x, self.w_packed, self.w_scale, self.bias, a_bits, self.w_bits, self.group_size, self.rotate_input
        )


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
    ) -> None:
        self.w_bits = w_bits
        self.act_quantized = act_quantized
        self.group_size = group_size
        self.codes = codes
        self.scale = scale
        self.rotation = rotation
        self.scale_method = scale_method


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
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
            rotate_input = rotates_input(linear.in_features, lq.act_quantized, lq.rotation)
            if lq.codes is None:
                w = rotated_weight(linear.weight) if rotate_input else linear.weight.detach().double()
                codes, scale = quantize_weight_rtn(
                    w.float(), lq.w_bits, lq.group_size, method=lq.scale_method
                )
            else:
                codes, scale = lq.codes, lq.scale
            q = QuantLinear(
                codes,
                scale,
                linear.bias,
                lq.w_bits,
                lq.group_size,
                rotate_input,
                act_quantized=lq.act_quantized,
            )
            _set_submodule(target, name, q.to(linear.weight.device))
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

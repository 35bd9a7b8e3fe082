"""The quantized linear op of DESIGN.md contract 1, in torch on the CPU: the ground truth.

For x (M×K), W (N×K), bias b, group size G (one group per token when G does not divide K):

* rotation:    x̃ = x·R with R orthonormal Hadamard; the stored weight is W·R, so x̃·(W·R)ᵀ = x·Wᵀ.
* activations: per token and group g, s_x = absmax(x̃_g)/qmax_a, q_x = clamp(round(x̃_g/s_x), −qmax_a−1, qmax_a)
               with qmax_a = 2^(a−1)−1, round half to even; a = 16 leaves x̃ unquantized.
* weights:     per output channel and group, integers in [−2^(w−1), 2^(w−1)−1] with float16 scales s_w.
* product:     y = Σ_g s_x[:, g]·s_w[:, g]ᵀ ⊙ (q_x,g · q_w,gᵀ) + b; each integer dot product is exact
               (|q_x·q_w| ≤ 128·8·K < 2^24 in float32), the sum over groups accumulates in float32.

Every other implementation (GPU kernels, the ONNX function body, the TensorRT plugin) is tested against this.
"""

from __future__ import annotations

import torch

from adatsq.core.contract import UNQUANTIZED
from adatsq.plugins.formats import format_for_bits
from adatsq.plugins.hadamard import rotate

__all__ = [
    "WEIGHT_GRANULARITIES",
    "channel_scale_as_groups",
    "granular_weight_scale",
    "pow2_ladder_scale",
    "dequantize_weight",
    "effective_group",
    "qlinear_reference",
    "qmax",
    "quantize_activation",
    "quantize_weight_rtn",
    "weight_scale",
    "clipped_weight_scale",
    "MSE_SHRINK",
    "SCALE_METHODS",
]

_TINY = 1e-30


def qmax(bits: int) -> int:
    """Largest positive code of a signed symmetric ``bits``-bit integer (3 → 3, 4 → 7, 8 → 127)."""
    return 2 ** (bits - 1) - 1


def effective_group(k: int, group_size: int) -> int:
    """G if it divides K, else K (one group per token / per output channel)."""
    return group_size if group_size > 0 and k % group_size == 0 else k


def quantize_activation(x_rot: torch.Tensor, bits: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token, per-group dynamic symmetric quantization of rotated activations.

    Returns integer codes (float32 holding integers, shape of ``x_rot``) and scales (..., K/G), float32.
    """
    k = x_rot.shape[-1]
    g = effective_group(k, group_size)
    q = qmax(bits)
    xg = x_rot.float().reshape(*x_rot.shape[:-1], k // g, g)
    absmax = torch.maximum(xg.amax(dim=-1), xg.amin(dim=-1).neg_())  # max|x| without an |x| copy
    scale = torch.where(absmax > _TINY, absmax / q, torch.ones_like(absmax))
    codes = (xg / scale.unsqueeze(-1)).round_().clamp_(-q - 1, q)
    return codes.reshape(x_rot.shape), scale


#: How weight scales are chosen (contract 1 leaves them free: float16 per channel and group, fixed offline).
#: ``absmax``: s = absmax/qmax, the largest weight on the largest code. ``mse``: per channel and group, the
#: float16 scale c·absmax/qmax with the least squared round-to-nearest error Σ(w − s·q(w/s))², over the
#: shrink factors c of :data:`MSE_SHRINK` and c = qmax/(qmax + ½) (GPTQ's grid, which uses the negative
#: code −qmax−1 for the largest magnitudes).
SCALE_METHODS = ("absmax", "mse")
MSE_SHRINK = tuple(1.0 - i / 40 for i in range(21))  # 1.0, 0.975, ..., 0.5


def _fp16_scale(scale: torch.Tensor) -> torch.Tensor:
    # keep the float16 scale finite and non-zero: [2^-14, 65504] is float16's normal range
    return scale.clamp(2.0**-14, 65504.0).to(torch.float16)


def _absmax_base(wg: torch.Tensor, q: int) -> torch.Tensor:
    """absmax/qmax per group of ``wg`` (N × groups × G, float32); 1 for an all-zero group."""
    absmax = wg.abs().amax(dim=-1)
    return torch.where(absmax > _TINY, absmax / q, torch.ones_like(absmax))


def clipped_weight_scale(w_rot: torch.Tensor, bits: int, group_size: int, ratio: float) -> torch.Tensor:
    """Float16 scales ratio·absmax/qmax per output channel and group (N×K/G); ratio 1 is ``absmax``'s."""
    n, k = w_rot.shape
    g = effective_group(k, group_size)
    return _fp16_scale(_absmax_base(w_rot.float().reshape(n, k // g, g), qmax(bits)) * ratio)


def weight_scale(w_rot: torch.Tensor, bits: int, group_size: int, method: str = "absmax") -> torch.Tensor:
    """Float16 scales per output channel and group (N×K/G) by ``method`` (:data:`SCALE_METHODS`)."""
    if method not in SCALE_METHODS:
        raise ValueError(f"weight scale method {method!r} is not one of {SCALE_METHODS}")
    n, k = w_rot.shape
    g = effective_group(k, group_size)
    wg = w_rot.float().reshape(n, k // g, g)
    q = qmax(bits)
    base = _absmax_base(wg, q)
    best = _fp16_scale(base)
    if method == "absmax":
        return best
    w64 = wg.double()
    best_err = _rtn_error(w64, best, q)
    for c in sorted({*MSE_SHRINK, q / (q + 0.5)}, reverse=True)[1:]:  # c = 1 is ``best`` already
        cand = _fp16_scale(base * c)
        err = _rtn_error(w64, cand, q)
        better = err < best_err  # ties keep the larger scale (first in the order)
        best = torch.where(better, cand, best)
        best_err = torch.where(better, err, best_err)
    return best


def _rtn_error(wg: torch.Tensor, scale16: torch.Tensor, q: int) -> torch.Tensor:
    """Σ over each group of (w − s·clamp(round(w/s), −q−1, q))², float64 (N×groups)."""
    s = scale16.double().unsqueeze(-1)
    return (wg - torch.clamp(torch.round(wg / s), -q - 1, q) * s).pow(2).sum(dim=-1)


def quantize_weight_rtn(
    w_rot: torch.Tensor,
    bits: int,
    group_size: int,
    scale: torch.Tensor | None = None,
    method: str = "absmax",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Round-to-nearest weight codes (int8, N×K) and float16 scales (N×K/G; ``method`` as :func:`weight_scale`)."""
    n, k = w_rot.shape
    g = effective_group(k, group_size)
    scale = weight_scale(w_rot, bits, group_size, method) if scale is None else scale
    q = qmax(bits)
    wg = w_rot.float().reshape(n, k // g, g) / scale.float().unsqueeze(-1)
    codes = torch.clamp(torch.round(wg), -q - 1, q).reshape(n, k)
    return codes.to(torch.int8), scale


#: the exponents of pow2_ladder_scale: s_g = s_n·2^e, e ∈ [POW2_MIN, POW2_MAX]; code·2^e is exact in e4m3 for
#: every 3- and 4-bit code (|code|·2^e ≤ 8·4 < 448, and 2^-9 is e4m3's smallest subnormal step)
POW2_MIN, POW2_MAX = -9, 2


def pow2_ladder_scale(scale: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Group scales (N×groups) moved onto the row's ladder ref[n]·2^e (ref N×1 float16), e = ⌈log2(s/ref)⌉
    clamped to [POW2_MIN, POW2_MAX]: the smallest ladder step ≥ s (never more clipping than s itself), within
    2× of it. With such scales q_w·2^e is an exact e4m3 operand, so an FP8 GEMM can carry the group factor in
    the weight and promote by the activation scale alone (one FMA), s_w[n] applied once in the epilogue."""
    r = ref.float()
    e = torch.ceil(torch.log2(scale.float() / r)).clamp(POW2_MIN, POW2_MAX)
    return _fp16_scale(r * torch.exp2(e))


#: the weights' scale granularity along K (``--weight-group``): one float16 scale per group of G (contract 1's),
#: one per output channel, or one per channel times a power of two per group (:func:`pow2_ladder_scale`);
#: all three are stored in contract 1's N×K/G layout, so the op and the kernels take each of them as it is
WEIGHT_GRANULARITIES = ("group", "channel", "pow2")


def granular_weight_scale(
    w_rot: torch.Tensor, bits: int, group_size: int, method: str = "absmax", granularity: str = "group"
) -> torch.Tensor:
    """Float16 weight scales N×K/G at ``granularity`` (:data:`WEIGHT_GRANULARITIES`); the row's scale of
    ``channel`` and the ladder's reference of ``pow2`` are ``weight_scale`` over all of K."""
    if granularity not in WEIGHT_GRANULARITIES:
        raise ValueError(f"weight scale granularity {granularity!r} is not one of {WEIGHT_GRANULARITIES}")
    if granularity == "group":
        return weight_scale(w_rot, bits, group_size, method)
    k = w_rot.shape[1]
    row = weight_scale(w_rot, bits, k, method)
    if granularity == "channel":
        return channel_scale_as_groups(row, k, group_size)
    return pow2_ladder_scale(weight_scale(w_rot, bits, group_size, method), row)


def channel_scale_as_groups(scale: torch.Tensor, k: int, group_size: int) -> torch.Tensor:
    """One scale per output channel (N×1) in contract 1's grouped layout: N×K/G, each row's scale repeated,
    so s_w[n, g]·q_w = s_w[n]·q_w for every group g and the format, the op and the kernels stay as they are."""
    groups = k // effective_group(k, group_size)
    if scale.shape[-1] != 1:
        raise ValueError(f"a per-channel scale is N×1, got {tuple(scale.shape)}")
    return scale.expand(-1, groups).contiguous()


def dequantize_weight(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """W·R ≈ q_w ⊙ s_w, float32 (N×K)."""
    n, k = codes.shape
    groups = scale.shape[-1]
    return (codes.float().reshape(n, groups, k // groups) * scale.float().unsqueeze(-1)).reshape(n, k)


def qlinear_reference(
    x: torch.Tensor,
    w_codes: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    a_bits: int,
    group_size: int,
    rotate_input: bool = True,
) -> torch.Tensor:
    """y = quantized x̃ · quantized (W·R)ᵀ + b, float32; ``x`` is (..., K) in any float dtype."""
    k = x.shape[-1]
    n = w_codes.shape[0]
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k).float()
    x_rot = rotate(x2) if rotate_input else x2
    groups = w_scale.shape[-1]
    g = k // groups
    if a_bits >= UNQUANTIZED:
        y = x_rot @ dequantize_weight(w_codes, w_scale).t()
    else:
        if effective_group(k, group_size) != g:
            raise ValueError(f"weight groups ({groups} of {g}) do not match group_size={group_size} at K={k}")
        qx, sx = quantize_activation(x_rot, a_bits, group_size)
        qx = qx.reshape(-1, groups, g)
        qw = w_codes.float().reshape(n, groups, g)
        sw = w_scale.float()
        y = torch.zeros(x2.shape[0], n, dtype=torch.float32, device=x2.device)
        part = torch.empty_like(y)  # one product buffer, scaled in place: no temporaries per group
        for j in range(groups):  # y += ((q_x,j·q_w,jᵀ) ⊙ s_x,j) ⊙ s_w,jᵀ in group order
            torch.mm(qx[:, j, :], qw[:, j, :].t(), out=part)
            y += part.mul_(sx[:, j : j + 1]).mul_(sw[:, j].unsqueeze(0))
    if bias is not None:
        y = y + bias.float()
    return y.reshape(*lead, n)


def qlinear_reference_packed(
    x: torch.Tensor,
    w_packed: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    a_bits: int,
    w_bits: int,
    group_size: int,
    rotate_input: bool,
) -> torch.Tensor:
    """:func:`qlinear_reference` from packed weights (the registered format of ``w_bits``), on the inputs'
    device: the CPU implementation of ``adatsq::qlinear`` and the GPU fallback for shapes no kernel takes."""
    codes = format_for_bits(w_bits).unpack(w_packed, x.shape[-1])
    return qlinear_reference(x, codes, w_scale, bias, a_bits, group_size, rotate_input)

"""D²Quant's two weight-side techniques (Yan et al. 2026, arXiv 2602.02546), as options on AdaTSQ's weights.

**Dual-scale quantizer (DSQ)**, for the down-projection-like layers (:data:`DOWN_PROJECTION`). Besides the
per-group scales s_w of contract 1, a per-input-channel scale η (K) is fitted so that

    W ≈ Q(W·diag(η)⁻¹)·diag(η),        y = x·Wᵀ ≈ (x·diag(η))·Q(W·diag(η)⁻¹)ᵀ

by alternating (:func:`dsq_scales`): quantize W·diag(η)⁻¹ (round-to-nearest, rotated by R when the layer is),
then, with those codes fixed (V = deq(codes)·Rᵀ), re-solve every column's η_j in closed form (from two
starts, η = 1 and η_j ∝ max|W_:,j|),
η_j = ⟨W_:,j, V_:,j⟩ / ‖V_:,j‖² (the least-squares scale of column j), and keep the η of least
trace(D·H·Dᵀ), D = W − V·diag(η), H the layer's input Hessian (η = 1, plain quantization, is the first
candidate, so DSQ never fits worse). The quantize stage then keeps DSQ on a layer only where the final
(GPTQ) weights' error trace(D·H·Dᵀ) is lower with η than without. In the paper η
is absorbed into the preceding up-projection (a linear factor of a gated MLP). A DiT's down-projections read
GELU(·) (``ff.net.2``) or [attention | GELU(·)] (Flux's single-block ``proj_out``), which do not commute with
a scale, so here η is applied online: it is the layer's ``smooth_inv`` Mul (x̂ = x·diag(s)⁻¹ with s = 1/η),
the one SmoothQuant uses, so contract 1, its kernels and the ONNX function body are unchanged; the Hessian of
x̂ is diag(η)·H·diag(η) and GPTQ then quantizes W·diag(η)⁻¹ (its codes replace the round-to-nearest ones).

**Deviation-aware correction (DAC).** Weight quantization shifts each output channel's mean:
d = x̃·(Ŵ − W)ᵀ has E[d] = μ = E[x̃]·(Ŵ − W)ᵀ and E[d²] = diag((Ŵ − W)·H·(Ŵ − W)ᵀ)/Σα, both exact from the
replay's α-weighted mean of x̃ and its Hessian H = Σ α x̃ x̃ᵀ (no extra pass). Subtracting μ lowers the
expected squared deviation of a channel from E[d²] to E[d²] − μ²; the correction is applied where that
fraction μ²/E[d²] is at least :data:`DAC_MIN_GAIN` (the deviation is mostly a shift, not noise), by folding
−μ into the layer's bias (:func:`dac_shift`). The paper puts the correction into the LayerNorm after the
attention; Flux's norms have no affine parameters (adaLN modulates them), so here it sits in the bias of the
layer whose weights caused it, on every quantized layer. The shift from activation quantization (which depends
on the step's bit configuration) is not corrected.
"""

from __future__ import annotations

import re

import torch

from adatsq.calib.smoothing import SMOOTH_RANGE
from adatsq.plugins.hadamard import rotate_blocks, rotation_matrix
from adatsq.plugins.reference import dequantize_weight, quantize_weight_rtn

__all__ = ["DAC_MIN_GAIN", "DOWN_PROJECTION", "DSQ_ITERATIONS", "dac_shift", "dsq_error", "dsq_scales"]

#: the down-projection-like layers DSQ applies to: the MLPs' second linear (Flux ``ff.net.2`` and
#: ``ff_context.net.2``, Wan ``ffn.net.2``) and Flux's single-block ``proj_out`` (it reads the MLP's GELU)
DOWN_PROJECTION = re.compile(
    r"(?:.+\.)?(?:ff|ff_context|ffn)\.net\.2|(?:.+\.)?single_transformer_blocks\.\d+\.proj_out"
)
#: DSQ's alternating steps (the paper's default)
DSQ_ITERATIONS = 15
#: DAC corrects a channel when subtracting its mean shift removes at least this fraction of E[d²]
DAC_MIN_GAIN = 0.5


def _rotations(blocks: tuple[int, ...] | None, device: torch.device) -> list[torch.Tensor] | None:
    """The float64 matrices R_b of the rotation blocks (None: not rotated)."""
    return None if blocks is None else [rotation_matrix(b, dtype=torch.float64).to(device) for b in blocks]


def _unrotate(v: torch.Tensor, mats: list[torch.Tensor] | None) -> torch.Tensor:
    """v·Rᵀ (R = diag(R_b1, ...), orthonormal): the inverse of :func:`rotate_blocks` on rows."""
    if mats is None:
        return v
    parts, start = [], 0
    for r in mats:
        parts.append(v[:, start : start + r.shape[0]] @ r.t())
        start += r.shape[0]
    return torch.cat(parts, dim=1)


def _fit(
    w: torch.Tensor,
    eta: torch.Tensor,
    bits: int,
    group: int,
    blocks: tuple[int, ...] | None,
    mats: list[torch.Tensor] | None,
    method: str,
    hessian: torch.Tensor | None,
) -> tuple[torch.Tensor, float]:
    """V = deq(Q((W·diag(η)⁻¹)·R))·Rᵀ and the error of V·diag(η): ‖D‖² or, with H, trace(D·H·Dᵀ), D = W − V·diag(η)."""
    scaled = w / eta[None, :]
    rot = rotate_blocks(scaled, blocks) if blocks is not None else scaled
    codes, scale = quantize_weight_rtn(rot.float(), bits, group, method=method)
    v = _unrotate(dequantize_weight(codes, scale).to(w.dtype), mats)
    d = w - v * eta[None, :]
    err = d.pow(2).sum() if hessian is None else ((d @ hessian) * d).sum()
    return v, float(err)


def dsq_error(
    w: torch.Tensor,
    eta: torch.Tensor,
    bits: int,
    group: int,
    blocks: tuple[int, ...] | None = None,
    method: str = "absmax",
    hessian: torch.Tensor | None = None,
) -> float:
    """The error of W ≈ Q(W·diag(η)⁻¹)·diag(η) (Q round-to-nearest, in the rotated domain when ``blocks``):
    ‖·‖², or trace(D·H·Dᵀ) with ``hessian`` H of the layer's input (the domain of W)."""
    w = w.detach().double()
    h = None if hessian is None else hessian.detach().double().to(w.device)
    mats = _rotations(blocks, w.device)
    return _fit(w, eta.double().to(w.device), bits, group, blocks, mats, method, h)[1]


def dsq_scales(
    weight: torch.Tensor,
    bits: int,
    group: int,
    blocks: tuple[int, ...] | None = None,
    iterations: int = DSQ_ITERATIONS,
    method: str = "absmax",
    hessian: torch.Tensor | None = None,
) -> torch.Tensor:
    """DSQ's per-input-channel η (K, float64, positive, within SMOOTH_RANGE) of W (N×K) for ``bits``-bit
    codes in groups of ``group`` (rotated by ``blocks`` when given): module docstring. The iterate kept is
    the one of least :func:`dsq_error` (H-weighted with ``hessian``, the Hessian of the layer's input)."""
    w = weight.detach().double()
    h = None if hessian is None else hessian.detach().double().to(w.device)
    ones = torch.ones(w.shape[1], dtype=torch.float64, device=w.device)
    col = w.abs().amax(dim=0)
    live = col > 0
    # two starts: η = 1 (plain quantization) and η_j ∝ max|W_:,j| (every column of W·diag(η)⁻¹ on one range;
    # from η = 1 a column that rounds to zero has no least-squares η and would stay at zero)
    spread = torch.where(live, col / col[live].log().mean().exp(), ones) if bool(live.any()) else ones
    mats = _rotations(blocks, w.device)
    best, best_err = ones, float("inf")
    for eta in (ones, spread.clamp(*SMOOTH_RANGE)):
        for _ in range(iterations + 1):
            v, err = _fit(w, eta, bits, group, blocks, mats, method, h)
            if err < best_err:
                best, best_err = eta, err
            num, den = (w * v).sum(dim=0), v.pow(2).sum(dim=0)
            ok = (den > 0) & (num > 0)  # a column quantized to zero, or of opposite sign, keeps its η
            eta = torch.where(ok, num / den.clamp_min(1e-300), eta).clamp(*SMOOTH_RANGE)
    return best


def dac_shift(
    mean_x: torch.Tensor, hessian: torch.Tensor, total_weight: float, delta_w: torch.Tensor
) -> torch.Tensor:
    """DAC's correction μ (N, float64) of a layer: μ_n = E[x̃]·ΔW_nᵀ where μ_n² ≥ DAC_MIN_GAIN·E[d_n²], else 0
    (E[d²] = diag(ΔW·H·ΔWᵀ)/Σα); the corrected bias is b − μ. ``mean_x``: the α-weighted mean of x̃ (K);
    ``hessian``: Σ α x̃ x̃ᵀ; ``total_weight``: Σα over the tokens; ``delta_w``: Ŵ − W (N×K), all in the domain
    the op multiplies (smoothed, rotated)."""
    if total_weight <= 0:
        return torch.zeros(delta_w.shape[0], dtype=torch.float64, device=delta_w.device)
    dw = delta_w.double()
    h = hessian.to(dtype=torch.float64, device=dw.device)
    mu = dw @ mean_x.double().to(dw.device)
    second = ((dw @ h) * dw).sum(dim=1) / total_weight
    return torch.where(mu.pow(2) >= DAC_MIN_GAIN * second, mu, torch.zeros_like(mu))

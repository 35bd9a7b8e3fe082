"""SmoothQuant's per-channel smoothing (Xiao et al. 2023, arXiv 2211.10438), as this pipeline applies it.

For a linear y = x·Wᵀ with input channels j, the scales

    s_j = max|X_j|^α / max|W_:,j|^(1−α)          (α = 0.5 by default, the paper's)

move quantization difficulty from the activations' outlier channels to the weights: x̂ = x·diag(s)⁻¹ and
Ŵ = W·diag(s), so x̂·Ŵᵀ = x·Wᵀ exactly. max|X_j| is over every calibration token the layer saw (all steps and
samples); channels the data never excited (max|X_j| = 0) or whose weights are zero keep s_j = 1, and s is
clamped to [10⁻⁵, 10⁵] so neither side under- or overflows. The Hessian of the smoothed input is
diag(s)⁻¹·H·diag(s)⁻¹ (H = Σ x xᵀ), exact.
"""

from __future__ import annotations

import torch

__all__ = ["SMOOTH_RANGE", "smooth_hessian", "smoothing_scales"]

#: the clamp of s: beyond it a channel's scale would over- or underflow float16 weight scales
SMOOTH_RANGE = (1e-5, 1e5)


def smoothing_scales(act_absmax: torch.Tensor, weight: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """s (K, float64) from the per-channel activation maxima (K) and the weight W (N×K)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"smoothing alpha must be in [0, 1], got {alpha}")
    a = act_absmax.detach().double().reshape(-1)
    w = weight.detach().double().abs().amax(dim=0)
    if a.shape != w.shape:
        raise ValueError(f"activation maxima for {a.numel()} channels, weight has {w.numel()} input channels")
    live = (a > 0) & (w > 0)
    s = torch.where(
        live, a.clamp_min(1e-300).pow(alpha) / w.clamp_min(1e-300).pow(1.0 - alpha), torch.ones_like(a)
    )
    return s.clamp(*SMOOTH_RANGE)


def smooth_hessian(hessian: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """diag(s)⁻¹·H·diag(s)⁻¹: the Hessian of x̂ = x·diag(s)⁻¹ from that of x."""
    inv = (1.0 / s.double()).to(hessian.dtype)
    return hessian * inv[:, None] * inv[None, :]

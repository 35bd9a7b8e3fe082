"""SmoothQuant's per-channel smoothing (Xiao et al. 2023, arXiv 2211.10438), as this pipeline applies it.

For a linear y = x·Wᵀ with input channels j, the scales

    s_j = max|X_j|^α / max|W_:,j|^(1−α)          (α = 0.5 by default, the paper's)

move quantization difficulty from the activations' outlier channels to the weights: x̂ = x·diag(s)⁻¹ and
Ŵ = W·diag(s), so x̂·Ŵᵀ = x·Wᵀ exactly. max|X_j| is over every calibration token the layer saw (all steps and
samples); channels the data never excited (max|X_j| = 0) or whose weights are zero keep s_j = 1, and s is
clamped to [10⁻⁵, 10⁵] so neither side under- or overflows. The Hessian of the smoothed input is
diag(s)⁻¹·H·diag(s)⁻¹ (H = Σ x xᵀ), exact.

PTQ4DiT (Wu et al., NeurIPS 2024, arXiv 2405.16005) balances the same way (its channel-wise salience
balancing, CSB, is s_j = √(s(X_j)/s(W_j)), i.e. α = ½ with salience s(·) = max|·| per channel), but takes the
activation salience over the denoising steps through its Spearman-ρ-guided salience calibration (SSC):

    s(X_j) = Σ_t η_t·max|X_j^(t)|,   η = softmax_t(−ρ_t),   ρ_t = Spearman(max|X^(t)|, max|W|) over channels j

so the steps whose activation salience is least aligned with the weight salience (ρ_t small: the two are
complementary, which is where balancing helps) weigh most (:func:`ssc_salience`).
"""

from __future__ import annotations

import torch

__all__ = ["SMOOTH_RANGE", "smooth_hessian", "smoothing_scales", "spearman_rho", "ssc_salience"]

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


def _ranks(v: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of ``v`` (float64), ties at their average rank (Spearman's convention)."""
    _, inverse, counts = torch.unique(v, sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()  # the rank of each distinct value's last occurrence
    return (ends - (counts.double() - 1) / 2)[inverse]


def spearman_rho(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two vectors: the Pearson correlation of their ranks; 0 when either has
    no spread."""
    ra, rb = _ranks(a.detach().double().reshape(-1)), _ranks(b.detach().double().reshape(-1))
    if ra.shape != rb.shape:
        raise ValueError(f"spearman_rho: {ra.numel()} and {rb.numel()} values")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / den if den > 0 else 0.0


def ssc_salience(step_absmax: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """PTQ4DiT's activation salience (K, float64) from the per-step maxima max|X_j^(t)| (T×K) and W (N×K):
    Σ_t η_t·max|X^(t)| with η = softmax(−ρ), ρ_t the Spearman correlation of step t's maxima with max|W_:,j|.
    Steps the calibration never ran (all-zero maxima) get no weight."""
    a = step_absmax.detach().double()
    w_sal = weight.detach().double().abs().amax(dim=0)
    if a.dim() != 2 or a.shape[1] != w_sal.numel():
        raise ValueError(
            f"per-step maxima {tuple(a.shape)} do not fit a weight of {w_sal.numel()} input channels"
        )
    seen = a.amax(dim=1) > 0
    rho = torch.tensor(
        [spearman_rho(a[t], w_sal) for t in range(a.shape[0])], dtype=torch.float64, device=a.device
    )
    logits = torch.where(seen, -rho, torch.full_like(rho, -torch.inf))
    if not bool(seen.any()):
        return torch.zeros_like(w_sal)
    eta = torch.softmax(logits, dim=0)
    return (eta[:, None] * a).sum(dim=0)

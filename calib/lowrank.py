"""SVDQuant's low-rank branch (Li et al. 2025, arXiv 2411.05007), as this pipeline applies it.

The (smoothed) weight Ŵ (N×K) is split by its SVD Ŵ = U·Σ·Vᵀ into a rank-r part kept in 16 bits and a residual
that is quantized:

    Ŵ = L_up·L_downᵀ + E,    L_down = V_r (K×r),  L_up = U_r·Σ_r (N×r),  E = Ŵ − U_r·Σ_r·V_rᵀ

so y = x̂·Ŵᵀ = (x̂·L_down)·L_upᵀ + x̂·Eᵀ: the branch takes the weight's dominant directions (where smoothing
moved the activations' outliers), and E, with a smaller range, goes through the quantized op. The rank costs
(K + N)·r 16-bit values of memory per layer and nothing in activation bits.
"""

from __future__ import annotations

import torch

__all__ = ["lowrank_split"]


def lowrank_split(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L_down K×r, L_up N×r, residual E N×K), float64, from W (N×K) and r ≥ 1 (at most min(N, K))."""
    n, k = weight.shape
    if not 1 <= rank <= min(n, k):
        raise ValueError(f"low-rank rank must be in [1, {min(n, k)}] for a {n}×{k} weight, got {rank}")
    w = weight.detach().double()
    u, sigma, vh = torch.linalg.svd(w, full_matrices=False)
    down = vh[:rank].t().contiguous()
    up = (u[:, :rank] * sigma[:rank]).contiguous()
    return down, up, w - up @ down.t()

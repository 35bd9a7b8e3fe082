"""CLQ's orthogonal-based smoothing (OBS) and its cross-layer parameter search (CLPS), as this pipeline applies
them (Liu et al. 2025, "CLQ: Cross-Layer Guided Orthogonal-based Quantization for Diffusion Transformers";
no code was public when this was written, so this follows the paper's description and figure).

OBS. Each input channel j gets an outlier score; the channels are swapped (a permutation P, most outlying
first, so the outliers share the first rotation blocks instead of spreading over every group) and then
rotated by a block-diagonal Hadamard matrix H = diag(R_b, …, R_b) (:func:`~adatsq.plugins.hadamard.
rotation_matrix` blocks of width b). G = P·H is orthogonal, so

    x̂ = x·G,   Ŵ = W·G,   x̂·Ŵᵀ = x·G·Gᵀ·Wᵀ = x·Wᵀ,

and the Hessian of x̂ is Gᵀ·H_x·G. Here the score is max|X_j|·max|W_:,j| (the channel's share of the product's
range; the paper's exact score is not published). G runs online as the paper's kernel would run it: a gather
x[..., perm] before the op, then the op's own rotation R_b on each of the blocks (the layer's rotation blocks,
as for Flux's split ``proj_out``), so a layer stores K indices for G, not K² values; :func:`obs_matrix` is G
itself, the reference the tests hold that path to.

CLPS. The paper searches each layer's quantizer bounds by the error they cause further down the network (the
block where the error peaks). Here the bound is a clip ratio r of the weight scales, s = r·absmax/qmax per
group, chosen per layer from :data:`CLIP_RATIOS` by the output error trace(D·H·Dᵀ) under the layer's
Hessian. With cross-block calibration (the quantize stage's ``--cbc``: every layer's Hessian is of the input
the already-quantized blocks upstream produce) that error includes the upstream blocks' quantization; the
search does not look at the layers downstream of the one it sets, which the paper does.
"""

from __future__ import annotations

import torch

from adatsq.calib.gptq import weighted_reconstruction_error
from adatsq.plugins.hadamard import is_supported_width, rotation_matrix
from adatsq.plugins.reference import (
    clipped_weight_scale,
    dequantize_weight,
    effective_group,
    quantize_weight_rtn,
)

__all__ = [
    "CLIP_RATIOS",
    "clip_search",
    "obs_block",
    "obs_blocks",
    "obs_matrix",
    "obs_permutation",
    "outlier_scores",
]

#: the weight clip ratios CLPS chooses from, largest first (ties keep the larger)
CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7)


def outlier_scores(act_absmax: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per input channel j: max|X_j|·max|W_:,j| (float64, K)."""
    a = act_absmax.detach().double().reshape(-1)
    w = weight.detach().double().abs().amax(dim=0)
    if a.shape != w.shape:
        raise ValueError(f"activation maxima for {a.numel()} channels, weight has {w.numel()} input channels")
    return a * w


def obs_block(k: int, group_size: int, blocks: int) -> int:
    """The width b = K/n of G's Hadamard blocks: n = ``blocks`` when K/n is a Hadamard width holding whole
    groups, else the block count nearest to it (fewer blocks first) for which it is."""
    g = effective_group(k, group_size)
    counts = sorted((n for n in range(1, k + 1) if k % n == 0), key=lambda n: (abs(n - blocks), n))
    for n in counts:
        b = k // n
        if b % g == 0 and is_supported_width(b):
            return b
    raise ValueError(f"no Hadamard block width divides K={k} in whole groups of {g}")


def obs_blocks(k: int, block: int) -> tuple[int, ...]:
    """G's rotation blocks (b, …, b) of a width-K layer."""
    if block <= 0 or k % block:
        raise ValueError(f"block {block} does not divide K={k}")
    return (block,) * (k // block)


def obs_permutation(scores: torch.Tensor, block: int) -> torch.Tensor:
    """perm (int64, K), x·P = x[..., perm]: block i of width b holds the channels of ranks [i·b, (i+1)·b) by
    descending score, most outlying first, each block in ascending channel order. Which block a channel joins
    is CLQ's choice; its place inside the block only picks the Hadamard row it is mixed by, and a canonical
    place keeps near-tied scores (float rounding of the statistics) from reordering the block."""
    k = scores.numel()
    ranked = torch.sort(scores.double().reshape(-1), descending=True, stable=True).indices
    return torch.cat([torch.sort(part).values for part in ranked.split(list(obs_blocks(k, block)))])


def obs_matrix(scores: torch.Tensor, block: int) -> torch.Tensor:
    """G = P·diag(R_b, …) (float64, K×K): column i of P is e_{perm[i]}, perm = :func:`obs_permutation`."""
    k = scores.numel()
    perm = obs_permutation(scores, block)
    h = torch.block_diag(*[rotation_matrix(b) for b in obs_blocks(k, block)])
    g = torch.empty_like(h)
    g[perm] = h  # (P·H)[perm[i]] = H[i], since P[perm[i], i] = 1
    return g


def clip_search(
    w: torch.Tensor, hessian: torch.Tensor, bits: int, group_size: int
) -> tuple[torch.Tensor, torch.Tensor, float, dict[str, float]]:
    """Round-to-nearest codes and float16 scales r·absmax/qmax of ``w`` (N×K, already in the op's domain) for
    the r of :data:`CLIP_RATIOS` with the least trace((Ŵ − W)·H·(Ŵ − W)ᵀ); returns codes, scales, r and the
    error of every r."""
    w32 = w.float()
    best: tuple[torch.Tensor, torch.Tensor, float, float] | None = None
    errors: dict[str, float] = {}
    for r in CLIP_RATIOS:
        scale = clipped_weight_scale(w32, bits, group_size, r)
        codes, scale = quantize_weight_rtn(w32, bits, group_size, scale=scale)
        err = weighted_reconstruction_error(w, dequantize_weight(codes, scale), hessian)
        errors[str(r)] = err
        if best is None or err < best[3]:
            best = (codes, scale, r, err)
    assert best is not None
    return best[0], best[1], best[2], errors

"""Q-DiT's automatic group-size allocation (Chen et al., CVPR 2025, arXiv 2406.17343), as this pipeline
applies it.

Contract 1 quantizes a layer's activations and weights in groups of G consecutive input channels (one G per
layer for both). A smaller G follows the data more closely and costs more float16 weight scales: N·K/G of them
per layer (2 bytes each). Q-DiT chooses G per layer; here each layer l picks G_l from a candidate set to

    minimise   Σ_l e_l(G_l)        subject to   Σ_l N_l·K_l/G_l  ≤  Σ_l N_l·K_l/G

(G the model's group size: the allocation may spend no more scale bytes than G everywhere), with
e_l(G) = ‖ŷ_l(G) − y_l‖² / ‖y_l‖², the relative output error of the layer quantized at G (round-to-nearest
weights, the layer's activation bits, contract 1's per-token dynamic activations) on a subsample of its
calibration inputs, y_l = x·Wᵀ. The paper runs an evolutionary search scored by FID; this is a
simplification to a per-layer proxy: a multiple-choice knapsack solved greedily (from the fewest scales,
repeatedly take the step to a layer's next finer G with the largest error decrease per added scale that the
budget still allows), and the uniform-G allocation is kept when the greedy one's total error is not lower.

Q-DiT's sample-wise dynamic activation quantization needs nothing here: contract 1's activation scales are
computed per token at run time (finer than per sample), so every sample, and every token, gets its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from adatsq.plugins.hadamard import rotate_blocks
from adatsq.plugins.reference import effective_group, qlinear_reference, quantize_weight_rtn

__all__ = ["allocate_group_sizes", "candidate_groups", "layer_group_errors", "scale_count"]


def candidate_groups(k: int, group_size: int, multiples: Sequence[float]) -> list[int]:
    """The candidate G of a layer of width K: round(m·G) for each multiple m that is an integer ≥ 1 dividing K
    (a G that does not divide K would mean one group per token: plugins/reference.effective_group), and G's
    own effective group always, ascending."""
    out = {effective_group(k, group_size)}
    for m in multiples:
        g = round(m * group_size)
        if g >= 1 and abs(g - m * group_size) < 1e-9 and k % g == 0:
            out.add(g)
    return sorted(out)


def scale_count(n: int, k: int, group: int) -> int:
    """Float16 weight scales of an N×K layer at group ``group``: N·K/G (G the effective group)."""
    return n * (k // effective_group(k, group))


def layer_group_errors(
    x: torch.Tensor,
    weight: torch.Tensor,
    w_bits: int,
    a_bits: int,
    groups: Sequence[int],
    blocks_of: Mapping[int, tuple[int, ...] | None] | None = None,
    scale_method: str = "absmax",
) -> dict[int, float]:
    """e(G) for each G of ``groups``: the relative squared output error of x·Wᵀ (x: T×K tokens, W: N×K, both
    as the op sees them before its rotation) quantized at group G, round-to-nearest weights (scales by
    ``scale_method``) and ``a_bits``-bit per-token activations. ``blocks_of[G]``: the layer's rotation blocks at
    G (None or absent: not rotated); x̃ = x·R and W·R then go through the op unrotated, which is the op's
    blockwise product (no activation group straddles two blocks: passes/quant_linear.rotation_blocks).
    Computed on W's device (x, e.g. tokens kept on the host, is moved there)."""
    x64 = x.detach().reshape(-1, x.shape[-1]).to(weight.device, torch.float64)  # x may wait on the host
    w64 = weight.detach().double()
    ref = x64 @ w64.t()
    denom = float(ref.pow(2).sum()) or 1.0
    out: dict[int, float] = {}
    for g in groups:
        blocks = (blocks_of or {}).get(g)
        xr = rotate_blocks(x64, blocks) if blocks is not None else x64
        wr = rotate_blocks(w64, blocks) if blocks is not None else w64
        codes, scale = quantize_weight_rtn(wr.float(), w_bits, g, method=scale_method)
        y = qlinear_reference(xr.float(), codes, scale, None, a_bits, g, rotate_input=False).double()
        out[g] = float((y - ref).pow(2).sum()) / denom
    return out


def allocate_group_sizes(
    errors: Mapping[str, Mapping[int, float]],
    shapes: Mapping[str, tuple[int, int]],
    group_size: int,
) -> dict[str, int]:
    """G per layer minimising Σ e_l(G_l) within Σ N_l·K_l/G_l ≤ Σ N_l·K_l/G (module docstring).

    ``errors[l]``: e_l per candidate G (:func:`layer_group_errors`); ``shapes[l]``: (N, K). Greedy from the
    coarsest G of every layer; the result is never worse in Σ e than G everywhere (when that is a candidate
    of every layer). Deterministic: ties go to the layer that comes first in ``errors``."""
    names = list(errors)
    cost = {n: {g: scale_count(*shapes[n], g) for g in errors[n]} for n in names}
    budget = sum(scale_count(*shapes[n], group_size) for n in names)
    # each layer's candidates from the fewest scales to the most
    order = {n: sorted(errors[n], key=lambda g: (cost[n][g], -g)) for n in names}
    pick = {n: 0 for n in names}  # index into order[n]
    used = sum(cost[n][order[n][0]] for n in names)
    while True:
        best: tuple[float, str, int] | None = None
        for n in names:
            now = order[n][pick[n]]
            # any finer G, not only the next one: the errors need not be convex in the scale count
            for j in range(pick[n] + 1, len(order[n])):
                g = order[n][j]
                extra = cost[n][g] - cost[n][now]
                gain = errors[n][now] - errors[n][g]
                if gain <= 0 or used + extra > budget:
                    continue
                ratio = gain / max(extra, 1)
                if best is None or ratio > best[0]:
                    best = (ratio, n, j)
        if best is None:
            break
        _, n, j = best
        used += cost[n][order[n][j]] - cost[n][order[n][pick[n]]]
        pick[n] = j
    chosen = {n: order[n][pick[n]] for n in names}
    uniform = {n: effective_group(shapes[n][1], group_size) for n in names}
    if all(uniform[n] in errors[n] for n in names):
        total = sum(errors[n][chosen[n]] for n in names)
        if sum(errors[n][uniform[n]] for n in names) <= total:
            return uniform
    return chosen

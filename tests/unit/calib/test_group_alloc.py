"""Q-DiT's group-size allocation (calib/group_alloc.py) and its sample-wise dynamic activations (contract 1's
per-token scales): the candidates, the knapsack's budget and optimality guard, a layer that needs fine groups
getting them, and the per-token independence of the quantized op."""

from __future__ import annotations

import itertools

import pytest
import torch

from adatsq.calib.group_alloc import allocate_group_sizes, candidate_groups, layer_group_errors, scale_count
from adatsq.plugins.reference import qlinear_reference, quantize_weight_rtn


def test_candidates_divide_the_width_and_keep_the_models_group() -> None:
    assert candidate_groups(384, 32, (0.5, 1, 2, 4)) == [16, 32, 64, 128]
    assert candidate_groups(96, 32, (0.5, 1, 2, 4)) == [16, 32]  # 64 and 128 do not divide 96
    assert candidate_groups(100, 32, (2,)) == [100]  # G = 32 does not divide 100: one group (effective)
    assert candidate_groups(96, 32, (0.3, 1)) == [32]  # 9.6 is no group size
    assert scale_count(8, 96, 32) == 24 and scale_count(8, 100, 32) == 8


def _brute_force(errors: dict[str, dict[int, float]], shapes: dict[str, tuple[int, int]], g: int) -> float:
    names = list(errors)
    budget = sum(scale_count(*shapes[n], g) for n in names)
    best = float("inf")
    for pick in itertools.product(*(list(errors[n]) for n in names)):
        if sum(scale_count(*shapes[n], p) for n, p in zip(names, pick, strict=True)) <= budget:
            best = min(best, sum(errors[n][p] for n, p in zip(names, pick, strict=True)))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_allocation_within_budget_and_never_worse_than_uniform(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    shapes = {
        f"l{i}": (int(n), int(k)) for i, (n, k) in enumerate(torch.randint(1, 5, (5, 2), generator=g) * 64)
    }
    errors = {}
    for n, (_, k) in shapes.items():  # errors falling with G, at random rates
        groups = candidate_groups(k, 64, (0.5, 1, 2, 4))
        rate = float(torch.rand(1, generator=g)) * 2
        errors[n] = {c: (c / 64) ** rate * float(torch.rand(1, generator=g) + 0.5) for c in groups}
    chosen = allocate_group_sizes(errors, shapes, 64)
    budget = sum(scale_count(*shapes[n], 64) for n in shapes)
    assert sum(scale_count(*shapes[n], chosen[n]) for n in shapes) <= budget
    total = sum(errors[n][chosen[n]] for n in shapes)
    assert total <= sum(errors[n][64] for n in shapes) + 1e-15
    assert total <= 1.25 * _brute_force(errors, shapes, 64)  # the greedy is near the exact knapsack here


def test_the_layer_that_gains_most_gets_the_fine_groups() -> None:
    shapes = {"flat": (256, 256), "outliers": (64, 256)}  # coarse groups on the big layer pay for fine ones
    errors = {
        "flat": {32: 0.010, 64: 0.0101, 128: 0.0102, 256: 0.0103},  # G barely matters
        "outliers": {32: 0.001, 64: 0.01, 128: 0.1, 256: 0.4},  # G matters a lot
    }
    chosen = allocate_group_sizes(errors, shapes, 64)
    assert chosen["outliers"] == 32 and chosen["flat"] > 64


def test_layer_errors_fall_with_finer_groups_on_a_layer_with_local_outliers() -> None:
    g = torch.Generator().manual_seed(0)
    k, n = 256, 32
    x = torch.randn(128, k, generator=g)
    # one outlier channel per 64: every group of 64 or more holds one, three groups of 16 in four none
    x[:, ::64] *= 30.0
    w = torch.randn(n, k, generator=g) / k**0.5
    e = layer_group_errors(x, w, 4, 4, [16, 64, 256])
    print({k: f"{v:.3e}" for k, v in e.items()})
    assert e[16] < 0.5 * e[64] and e[64] < e[256]
    e8 = layer_group_errors(x, w, 8, 16, [16])  # 8-bit weights, unquantized activations: small
    assert e8[16] < 1e-3


def test_activation_scales_are_per_token_so_per_sample() -> None:
    """Q-DiT's sample-wise dynamic activation quantization is contract 1's per-token dynamic quantization:
    a token's output does not depend on the other tokens of the batch, and scaling one sample by 2^k scales
    its codes' scales by 2^k and its output by 2^k exactly (no static range is shared across samples). Without
    the rotation every step is exact (integer dot products, elementwise scales), so the checks are bitwise."""
    g = torch.Generator().manual_seed(1)
    k, n = 128, 24
    w = torch.randn(n, k, generator=g) / k**0.5
    codes, scale = quantize_weight_rtn(w, 4, 32)
    x = torch.randn(6, k, generator=g)
    y = qlinear_reference(x, codes, scale, None, 4, 32, rotate_input=False)
    for i in range(x.shape[0]):  # alone, every token gets the very same output (integer products are exact)
        assert torch.equal(
            qlinear_reference(x[i : i + 1], codes, scale, None, 4, 32, rotate_input=False), y[i : i + 1]
        )
    loud = x.clone()
    loud[2] *= 2.0**5  # one sample 32× louder: a shared (static) range would crush the others' codes
    y_loud = qlinear_reference(loud, codes, scale, None, 4, 32, rotate_input=False)
    assert torch.equal(y_loud[2], y[2] * 2.0**5)
    assert torch.equal(y_loud[[0, 1, 3, 4, 5]], y[[0, 1, 3, 4, 5]])

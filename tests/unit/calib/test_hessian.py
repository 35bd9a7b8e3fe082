"""HessianAccumulator: exact Σ α x xᵀ, weighting, merging and caching."""

from __future__ import annotations

import pytest
import torch

from adatsq.calib.hessian import HessianAccumulator

K = 48


def _x(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, K, generator=torch.Generator().manual_seed(seed))


def test_equals_direct_product() -> None:
    x = _x(0, 3, 7)  # (batch, tokens, K): leading dims are flattened
    acc = HessianAccumulator(K)
    acc.add(x)
    x2 = x.reshape(-1, K).double()
    torch.testing.assert_close(acc.matrix, x2.t() @ x2, rtol=1e-12, atol=1e-12)
    assert acc.count == 21
    assert acc.matrix.dtype == torch.float64
    torch.testing.assert_close(acc.matrix, acc.matrix.t(), rtol=0, atol=0)


def test_split_batches_sum_up() -> None:
    x = _x(1, 40)
    whole = HessianAccumulator(K)
    whole.add(x)
    parts = HessianAccumulator(K)
    for chunk in x.split(7):
        parts.add(chunk)
    torch.testing.assert_close(parts.matrix, whole.matrix, rtol=1e-12, atol=1e-12)
    assert parts.count == whole.count == 40


def test_weighting_is_sqrt_alpha_trick() -> None:
    xs = [_x(s, 16) for s in range(3)]
    alphas = [0.7, 0.2, 0.1]
    acc = HessianAccumulator(K)
    plain = HessianAccumulator(K)
    for a, x in zip(alphas, xs):
        acc.add(x, weight=a)
        plain.add(x * a**0.5)  # feeding √α·x to an unweighted accumulator
    expected = sum(a * x.double().t() @ x.double() for a, x in zip(alphas, xs))
    torch.testing.assert_close(acc.matrix, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(plain.matrix, expected, rtol=1e-6, atol=1e-6)
    assert acc.count == 48
    assert acc.total_weight == pytest.approx(16 * sum(alphas))
    zero = HessianAccumulator(K)
    zero.add(xs[0], weight=0.0)
    assert float(zero.matrix.abs().max()) == 0.0
    assert zero.count == 16


def test_merge_and_iadd() -> None:
    a, b = HessianAccumulator(K), HessianAccumulator(K)
    xa, xb = _x(2, 10), _x(3, 5)
    a.add(xa, weight=2.0)
    b.add(xb)
    both = HessianAccumulator(K)
    both.add(xa, weight=2.0)
    both.add(xb)
    merged = HessianAccumulator(K)
    merged.merge(a)
    merged += b
    torch.testing.assert_close(merged.matrix, both.matrix, rtol=1e-12, atol=1e-12)
    assert merged.count == 15
    assert merged.total_weight == pytest.approx(25.0)
    with pytest.raises(ValueError, match="K=8"):
        merged += HessianAccumulator(8)


def test_state_dict_round_trip() -> None:
    acc = HessianAccumulator(K)
    acc.add(_x(4, 9), weight=0.5)
    state = acc.state_dict()
    back = HessianAccumulator.from_state_dict(state)
    assert torch.equal(back.matrix, acc.matrix)
    assert (back.k, back.count, back.total_weight) == (acc.k, acc.count, acc.total_weight)
    state["matrix"].zero_()  # the state is a copy: the accumulator is untouched
    assert float(acc.matrix.abs().max()) > 0
    # .matrix is a copy too
    m = acc.matrix
    m.zero_()
    assert float(acc.matrix.abs().max()) > 0


def test_rejects_bad_inputs() -> None:
    acc = HessianAccumulator(K)
    with pytest.raises(ValueError, match=f"\\(\\.\\.\\., {K}\\)"):
        acc.add(torch.ones(3, K + 1))
    with pytest.raises(ValueError, match="weight"):
        acc.add(torch.ones(3, K), weight=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        acc.add(torch.full((3, K), float("nan")))
    with pytest.raises(ValueError, match="positive"):
        HessianAccumulator(0)

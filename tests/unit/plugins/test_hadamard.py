"""Hadamard rotations: orthonormal at every model width, rotate() == x·R, Paley bases, folding invariance."""

from __future__ import annotations

import math

import pytest
import torch

from adatsq.plugins.hadamard import (
    HadamardError,
    hadamard_factors,
    hadamard_matrix,
    is_supported_width,
    paley_base,
    rotate,
    rotation_matrix,
)

TINY_WIDTHS = (96, 160, 256, 384, 480)
DENSE_WIDTHS = (768, 1536)  # R·Rᵀ formed explicitly
MID_WIDTHS = (2560, 3072, 3840)  # R formed for rotate() == x·R; orthonormality through rotate()
BIG_WIDTHS = (8960, 10240, 12288, 15360)  # never formed (15360² float64 = 1.9 GB): checked through rotate()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("k", TINY_WIDTHS + DENSE_WIDTHS)
def test_rotation_matrix_orthonormal(k: int) -> None:
    r = rotation_matrix(k)
    assert r.shape == (k, k)
    assert r.dtype == torch.float64
    torch.testing.assert_close(r @ r.t(), torch.eye(k, dtype=torch.float64), rtol=0, atol=1e-12)
    # ±1/√K entries: a scaled ±1 Hadamard matrix
    torch.testing.assert_close(r.abs(), torch.full_like(r, 1 / math.sqrt(k)), rtol=0, atol=1e-15)


@pytest.mark.parametrize("k", TINY_WIDTHS + DENSE_WIDTHS + MID_WIDTHS)
def test_rotate_equals_matrix_product(k: int) -> None:
    x = torch.randn(2, 3, k, generator=_gen(k), dtype=torch.float64)
    torch.testing.assert_close(rotate(x), x @ rotation_matrix(k), rtol=0, atol=1e-12)
    x32 = x.float()
    y32 = rotate(x32)
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32, (x @ rotation_matrix(k)).float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", MID_WIDTHS + BIG_WIDTHS)
def test_big_widths_orthonormal_through_rotate(k: int) -> None:
    gen = _gen(k)
    # norms preserved
    x = torch.randn(4, k, generator=gen, dtype=torch.float64)
    y = rotate(x)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-12, atol=0)
    # a random subset of rows of R (row i = rotate(e_i)) is orthonormal with ±1/√K entries
    idx = torch.randperm(k, generator=gen)[:48]
    basis = torch.zeros(48, k, dtype=torch.float64)
    basis[torch.arange(48), idx] = 1.0
    rows = rotate(basis)
    torch.testing.assert_close(rows @ rows.t(), torch.eye(48, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(rows.abs(), torch.full_like(rows, 1 / math.sqrt(k)), rtol=0, atol=1e-15)
    # round trip on those coordinates: x = x̃·Rᵀ, so x̃·R[idx]ᵀ = x[:, idx]
    torch.testing.assert_close(y @ rows.t(), x[:, idx], rtol=0, atol=1e-10)
    # inner products preserved (x R)(x R)ᵀ = x xᵀ: R is orthogonal on the whole space
    torch.testing.assert_close(y @ y.t(), x @ x.t(), rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("k", "factors"),
    [
        (3072, (12, 256)),
        (12288, (12, 1024)),
        (15360, (60, 256)),
        (1536, (12, 128)),
        (8960, (140, 64)),
        (3840, (60, 64)),
        (10240, (20, 512)),
        (2560, (20, 128)),
        (768, (12, 64)),
        (96, (12, 8)),
        (160, (20, 8)),
        (384, (12, 32)),
        (480, (60, 8)),
        (256, (1, 256)),
        (4096, (1, 4096)),
    ],
)
def test_hadamard_factors(k: int, factors: tuple[int, int]) -> None:
    assert hadamard_factors(k) == factors
    assert factors[0] * factors[1] == k
    assert is_supported_width(k)


@pytest.mark.parametrize("m", [4, 8, 12, 20, 24, 28, 36, 44, 60, 140])
def test_paley_bases(m: int) -> None:
    h = paley_base(m)
    assert h.shape == (m, m)
    assert set(h.unique().tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(h @ h.t(), m * torch.eye(m, dtype=torch.float64), rtol=0, atol=0)


def test_unpaleyable_order_raises() -> None:
    with pytest.raises(HadamardError, match="Paley"):
        paley_base(52)  # 51 is not prime, 25 is not prime


@pytest.mark.parametrize("k", [7, 52, 100, 3 * 5 * 7, 0])
def test_unsupported_width_raises(k: int) -> None:
    assert not is_supported_width(k)
    with pytest.raises(HadamardError, match=str(k)) as info:
        hadamard_factors(k)
    if k > 0:
        assert "m·2^k" in str(info.value)  # the message says which widths work
    with pytest.raises(HadamardError):
        rotate(torch.zeros(2, max(k, 1)) if k else torch.zeros(2, 0))


def test_hadamard_matrix_is_pm1() -> None:
    h = hadamard_matrix(480)
    assert set(h.unique().tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(h @ h.t(), 480 * torch.eye(480, dtype=torch.float64), rtol=0, atol=0)


@pytest.mark.parametrize("k", [96, 384, 3072])
def test_folding_invariance(k: int) -> None:
    """x·R·(W·R)ᵀ = x·Wᵀ: the rotation folded into the weight cancels the online rotation."""
    gen = _gen(k + 1)
    x = torch.randn(6, k, generator=gen, dtype=torch.float64)
    w = torch.randn(24, k, generator=gen, dtype=torch.float64)
    folded = rotate(w)  # W·R, row by row
    torch.testing.assert_close(rotate(x) @ folded.t(), x @ w.t(), rtol=1e-10, atol=1e-10)
    x32, w32 = x.float(), w.float()
    torch.testing.assert_close(rotate(x32) @ rotate(w32).t(), x32 @ w32.t(), rtol=1e-4, atol=1e-4)

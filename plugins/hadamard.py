"""Orthonormal Hadamard rotations for every width the supported DiTs use, built without tables.

R = (H_m ⊗ H_{2^k}) / √K for K = m·2^k, where H_{2^k} is Sylvester's (Walsh–Hadamard) matrix and H_m a
Paley matrix: Paley I gives order q+1 for a prime q ≡ 3 (mod 4), Paley II order 2(q+1) for a prime
q ≡ 1 (mod 4). The model widths factor as 3072 = 12·2^8, 12288 = 12·2^10, 15360 = 60·2^8, 1536 = 12·2^7,
8960 = 140·2^6, 3840 = 60·2^6, 10240 = 20·2^9, 2560 = 20·2^7.

Applied online as x̃ = x·R without forming R: view each token as an m×p matrix X (p = 2^k),
then x̃ = H_mᵀ · X · H_p / √K, since (x·(A⊗B))[i·p+j] = Σ_{a,b} X[a,b]·A[a,i]·B[b,j].
R is orthonormal (R·Rᵀ = I), so x̃·(W·R)ᵀ = x·R·Rᵀ·Wᵀ = x·Wᵀ.
"""

from __future__ import annotations

import functools
import math

import torch

__all__ = [
    "HadamardError",
    "hadamard_factors",
    "hadamard_matrix",
    "is_supported_width",
    "paley_base",
    "rotate",
    "rotate_blocks",
    "rotation_matrix",
]


class HadamardError(ValueError):
    """No Hadamard rotation of this width can be built."""


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


def _legendre(a: int, q: int) -> int:
    a %= q
    if a == 0:
        return 0
    return 1 if pow(a, (q - 1) // 2, q) == 1 else -1


def _jacobsthal(q: int) -> torch.Tensor:
    idx = torch.arange(q)
    diff = (idx[None, :] - idx[:, None]) % q
    chi = torch.tensor([_legendre(int(d), q) for d in range(q)], dtype=torch.float64)
    return chi[diff]


def _paley_order(m: int) -> str | None:
    if m >= 4 and _is_prime(m - 1) and (m - 1) % 4 == 3:
        return "paley1"
    if m >= 6 and m % 2 == 0 and _is_prime(m // 2 - 1) and (m // 2 - 1) % 4 == 1:
        return "paley2"
    return None


@functools.lru_cache(maxsize=64)
def paley_base(m: int) -> torch.Tensor:
    """A ±1 Hadamard matrix of order m by Paley's construction (float64, H·Hᵀ = m·I)."""
    kind = _paley_order(m)
    if kind == "paley1":
        q = m - 1
        s = torch.zeros(m, m, dtype=torch.float64)
        s[0, 1:] = 1.0
        s[1:, 0] = -1.0
        s[1:, 1:] = _jacobsthal(q)
        return torch.eye(m, dtype=torch.float64) + s
    if kind == "paley2":
        q = m // 2 - 1
        c = torch.zeros(q + 1, q + 1, dtype=torch.float64)
        c[0, 1:] = 1.0
        c[1:, 0] = 1.0
        c[1:, 1:] = _jacobsthal(q)
        a = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
        b = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
        return torch.kron(c, a) + torch.kron(torch.eye(q + 1, dtype=torch.float64), b)
    raise HadamardError(f"no Paley construction of order {m}")


@functools.lru_cache(maxsize=64)
def _sylvester(p: int) -> torch.Tensor:
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < p:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h


def hadamard_factors(k: int) -> tuple[int, int]:
    """Split K = m·p with p a power of two and m = 1 or a Paley order, choosing the smallest m."""
    if k < 1:
        raise HadamardError(f"width must be positive, got {k}")
    p = k & -k
    while p >= 1:
        m = k // p
        if m == 1 or (m & (m - 1) == 0) or _paley_order(m):
            if m & (m - 1) == 0:
                return 1, k
            return m, p
        p //= 2
    raise HadamardError(
        f"no Hadamard rotation for width {k}: it must be m·2^k with m a power of two, q+1 (q prime ≡ 3 mod 4) "
        f"or 2(q+1) (q prime ≡ 1 mod 4), e.g. 12, 20, 28, 36, 44, 60, 140"
    )


def is_supported_width(k: int) -> bool:
    try:
        hadamard_factors(k)
    except HadamardError:
        return False
    return True


def hadamard_matrix(k: int) -> torch.Tensor:
    """The ±1 Hadamard matrix H_m ⊗ H_p of order K (float64, unnormalised)."""
    m, p = hadamard_factors(k)
    hp = _sylvester(p)
    return hp if m == 1 else torch.kron(paley_base(m), hp)


def rotation_matrix(k: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """R = H / √K, orthonormal (K×K). For offline folding; online code uses :func:`rotate`."""
    return (hadamard_matrix(k) / math.sqrt(k)).to(dtype)


def rotate(x: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """x̃ = x·R along the last axis, computed as H_mᵀ·X·H_p/√K per token (never forms R)."""
    k = x.shape[-1] if k is None else k
    m, p = hadamard_factors(k)
    hp = _sylvester(p).to(device=x.device, dtype=x.dtype)
    lead = x.shape[:-1]
    xm = x.reshape(*lead, m, p) @ hp
    if m > 1:
        hm = paley_base(m).to(device=x.device, dtype=x.dtype)
        xm = torch.einsum("...ap,ai->...ip", xm, hm)
    return (xm / math.sqrt(k)).reshape(*lead, k)


def rotate_blocks(x: torch.Tensor, blocks: tuple[int, ...] | None = None) -> torch.Tensor:
    """x̃ = x·diag(R_b1, R_b2, ...) along the last axis: each block of consecutive channels rotated by its own
    width's R (``blocks`` None or one block: :func:`rotate`). A block-diagonal matrix of orthonormal blocks is
    orthonormal, so x̃·(W·R)ᵀ = x·Wᵀ still holds with W·R = [W_1·R_b1, W_2·R_b2, ...]."""
    if blocks is None or len(blocks) == 1:
        return rotate(x)
    if sum(blocks) != x.shape[-1]:
        raise HadamardError(f"rotation blocks {blocks} do not add up to the width {x.shape[-1]}")
    return torch.cat([rotate(part) for part in x.split(list(blocks), dim=-1)], dim=-1)

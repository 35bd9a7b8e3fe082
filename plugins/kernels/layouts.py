"""Kernel-side weight layouts derived once from the exchange formats of plugins/formats.py.

int3 bit planes ("int3p", 3 bits per code exactly, K % 128 == 0): for every row and every group of 128 codes,
12 little-endian int32 words (48 bytes), u = code + 4 ∈ [0, 7]:

* words 0..7  (L_i): bits [2t, 2t+2) hold u & 3 of code 16·i + t   (t < 16)
* words 8..11 (H_j): bit t holds u >> 2 of code 32·j + t           (t < 32)

Every load of a group is two aligned vectors (8 and 4 words), which the Triton pipeliner copies
asynchronously; the 24-bit words of the exchange int3 format straddle bytes and cannot be loaded that way.
The planes are built on the weight's device from the exchange format and cached per packed tensor.
"""

from __future__ import annotations

import torch

from adatsq.plugins.formats import format_for_bits

__all__ = ["int3_planes", "int3_planes_cached", "unpack_int3_planes"]

GROUP = 128


def _to_int32(words: torch.Tensor) -> torch.Tensor:
    """Unsigned 32-bit values held in int64 → the same bits as int32."""
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def int3_planes(codes: torch.Tensor) -> torch.Tensor:
    """int8 codes in [-4, 3] (N×K) → int3p bytes (N × 3K/8), uint8."""
    n, k = codes.shape
    if k % GROUP:
        raise ValueError(f"int3 planes need K % {GROUP} == 0, got K={k}")
    u = (codes.to(torch.int64) + 4).reshape(n, k // GROUP, 8, 16)
    t16 = torch.arange(16, device=codes.device, dtype=torch.int64)
    lo = ((u & 3) << (2 * t16)).sum(-1)  # (n, groups, 8)
    t32 = torch.arange(32, device=codes.device, dtype=torch.int64)
    hi = ((u >> 2).reshape(n, k // GROUP, 4, 32) << t32).sum(-1)  # (n, groups, 4)
    words = _to_int32(torch.cat([lo, hi], dim=-1)).contiguous()  # (n, groups, 12)
    return words.view(torch.uint8).reshape(n, k // GROUP * 48)


def unpack_int3_planes(planes: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`int3_planes` (the decode the Triton kernel does), for tests."""
    n = planes.shape[0]
    w = planes.contiguous().view(torch.int32).reshape(n, k // GROUP, 12).to(torch.int64) & 0xFFFFFFFF
    t16 = torch.arange(16, device=planes.device, dtype=torch.int64)
    t32 = torch.arange(32, device=planes.device, dtype=torch.int64)
    lo = (w[..., :8, None] >> (2 * t16)) & 3  # (n, groups, 8, 16)
    hi = ((w[..., 8:, None] >> t32) & 1).reshape(n, k // GROUP, 8, 16)
    return ((lo | (hi << 2)) - 4).reshape(n, k).to(torch.int8)


_PLANES: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}


def int3_planes_cached(packed: torch.Tensor, k: int) -> torch.Tensor:
    """int3p of an exchange-format int3 tensor, built once per (storage, offset, version)."""
    key = (packed.untyped_storage().data_ptr(), packed.storage_offset(), packed._version)
    hit = _PLANES.get(key)
    if hit is None or hit[0] is not packed:
        hit = (packed, int3_planes(format_for_bits(3).unpack(packed, k)))
        _PLANES[key] = hit
    return hit[1]

"""Triton GEMM of the quantized linear op on Hopper 8-bit tensor cores (wgmma).

y[m, n] = Σ_g s_x[g, m] · s_w[n, g] · Σ_{k ∈ g} q_x[m, k] · q_w[n, k]  (+ b[n])

One K-step of the main loop is exactly one group (BK = G): the tile product ``part = q_x,g · q_w,gᵀ`` starts
from zero, so every group's integer dot product is exact (FP8 path: |part| ≤ 128·8·8 = 8192, integers of
that size are exact in the e4m3 wgmma accumulator; int8 path: int32), and it is promoted to float32 with one
FFMA per element, ``acc += part · (s_x ⊗ s_w)`` (DeepGEMM-style promotion at the group boundary).

Operand paths (constexpr, one compiled kernel each):

* FP8=True: activations as e4m3 bytes (a ≤ 4, |q| ≤ 8) and weights as e4m3 (w ≤ 4), QGMMA.
* FP8=False: int8 activations (a = 8) and int8 weights, IGMMA with s32 accumulation.

Weight operand (WFMT): 9 = pre-expanded one byte per code (e4m3 or int8 matching the path), 8 = int8 codes
(int8 path only), 4 = packed int4 (low nibble first, two's complement), 5 = int3 bit planes (3 bits per code,
plugins/kernels/layouts.py; ``qgemm_triton`` builds them once from the exchange int3 format, WFMT 3, whose
24-bit words straddle bytes), 3 = exchange int3 decoded directly (byte loads, slow; kept for reference);
packed formats are expanded in registers inside the kernel.
SWAP=True computes the transposed tile (weights as the wgmma A operand) so the expanded weights can feed
the tensor cores from registers instead of a shared-memory round trip.
"""

from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl

from adatsq.plugins.kernels.layouts import int3_planes_cached

__all__ = [
    "CONFIGS",
    "DEFAULT",
    "TUNED",
    "WFMT_E",
    "WFMT_INT3",
    "WFMT_INT3P",
    "WFMT_INT4",
    "WFMT_INT8",
    "TileConfig",
    "qgemm_triton",
]

WFMT_INT3 = 3
WFMT_INT4 = 4
WFMT_INT3P = 5
WFMT_INT8 = 8
WFMT_E = 9


@dataclasses.dataclass(frozen=True)
class TileConfig:
    """One launch configuration: CTA tile BM×BN (BK = G), warps, pipeline stages, operand order."""

    bm: int = 128
    bn: int = 256
    warps: int = 8
    stages: int = 3
    swap: bool = False
    pair: bool = False


CONFIGS: tuple[TileConfig, ...] = (
    TileConfig(128, 128, 8, 4, False, False),
    TileConfig(128, 128, 8, 3, False, True),
    TileConfig(128, 128, 8, 4, True, False),
    TileConfig(128, 64, 4, 4, True, False),
    TileConfig(256, 64, 8, 4, True, False),
    TileConfig(256, 64, 8, 3, True, True),
)

# (wfmt, fp8) -> chosen config; benchmarks/bench_qlinear.py fills it from its sweep, else DEFAULT.
TUNED: dict[tuple[int, bool], TileConfig] = {}
DEFAULT = TileConfig(128, 128, 8, 4, False, False)


@triton.jit
def _codes_to_operand(u, OFFSET: tl.constexpr, FP8: tl.constexpr):
    """Unsigned u = code + OFFSET → e4m3 (FP8) or int8 code.

    FP8: float16 with bits 0x6400 | u is exactly 1024 + u, so (that − 1024 − OFFSET) is the code in
    float16, exact, then one cvt to e4m3 (|code| ≤ 8 is exact in e4m3). int8: u − OFFSET.
    """
    if FP8:
        h = (u | 0x6400).to(tl.int16).to(tl.float16, bitcast=True) - (1024.0 + OFFSET)
        out = h.to(tl.float8e4nv)
    else:
        out = (u - OFFSET).to(tl.int8)
    return out


@triton.jit
def _weight_tile(
    w_ptr,
    offs_n,
    nmask,
    g,
    stride_w,
    BN: tl.constexpr,
    BK: tl.constexpr,
    WFMT: tl.constexpr,
    FP8: tl.constexpr,
):
    """The (BN, BK) weight codes of group g as e4m3 (FP8) or int8."""
    if WFMT == 3:
        # word w of the row: bytes 3w, 3w+1, 3w+2 little endian; code 8w+i = ((word >> 3i) & 7) - 4.
        offs_w = g * (BK // 8) + tl.arange(0, BK // 8)
        rows = w_ptr + offs_n[:, None] * stride_w + offs_w[None, :] * 3
        b0 = tl.load(rows, mask=nmask[:, None], other=0).to(tl.int32)
        b1 = tl.load(rows + 1, mask=nmask[:, None], other=0).to(tl.int32)
        b2 = tl.load(rows + 2, mask=nmask[:, None], other=0).to(tl.int32)
        word = b0 | (b1 << 8) | (b2 << 16)
        # u_i = code_i + 4 in [0, 7]; joins keep the 8 codes of a word in one thread, in order i = 4a+2b+c
        u0 = word & 7
        u1 = (word >> 3) & 7
        u2 = (word >> 6) & 7
        u3 = (word >> 9) & 7
        u4 = (word >> 12) & 7
        u5 = (word >> 15) & 7
        u6 = (word >> 18) & 7
        u7 = (word >> 21) & 7
        u = tl.join(tl.join(tl.join(u0, u4), tl.join(u2, u6)), tl.join(tl.join(u1, u5), tl.join(u3, u7)))
        u = tl.reshape(u, (BN, BK))
        tile = _codes_to_operand(u, 4, FP8)
    elif WFMT == 5:
        # int3 bit planes (plugins/kernels/layouts.py): per group 12 int32 words, L_0..7 then H_0..3;
        # u(16i + t) = ((L_i >> 2t) & 3) | (((H_{i//2} >> (16(i%2) + t)) & 1) << 2).
        base = w_ptr.to(tl.pointer_type(tl.int32)) + offs_n[:, None] * (stride_w // 4) + g * 12
        lo = tl.load(base + tl.arange(0, 8)[None, :], mask=nmask[:, None], other=0)
        hi = tl.load(base + 8 + tl.arange(0, 4)[None, :], mask=nmask[:, None], other=0)
        hi8 = tl.reshape(tl.join(hi, hi >> 16), (BN, 8))
        t = tl.arange(0, 16)
        u = ((lo[:, :, None] >> (2 * t)[None, None, :]) & 3) | (
            ((hi8[:, :, None] >> t[None, None, :]) & 1) << 2
        )
        tile = _codes_to_operand(tl.reshape(u, (BN, BK)), 4, FP8)
    elif WFMT == 4:
        # byte b = codes 2b (low nibble) and 2b+1 (high nibble); u = nibble ^ 8 = code + 8 in [0, 15].
        # (A byte-permute LUT in inline PTX, 4 codes per instruction group, measured slower: NOTES.md.)
        offs_b = g * (BK // 2) + tl.arange(0, BK // 2)
        byts = tl.load(w_ptr + offs_n[:, None] * stride_w + offs_b[None, :], mask=nmask[:, None], other=0)
        byts = byts.to(tl.int32)
        u = tl.reshape(tl.join((byts & 15) ^ 8, (byts >> 4) ^ 8), (BN, BK))
        tile = _codes_to_operand(u, 8, FP8)
    else:
        offs_k = g * BK + tl.arange(0, BK)
        # pre-expanded: w_ptr already points at e4m3 / int8 codes (a direct load keeps it pipelined)
        tile = tl.load(w_ptr + offs_n[:, None] * stride_w + offs_k[None, :], mask=nmask[:, None], other=0.0)
    return tile


@triton.jit
def _group_dot(x_ptrs, mmask, w_ptr, offs_n, nmask, g, stride_w, BN: tl.constexpr, BK: tl.constexpr,
               WFMT: tl.constexpr, FP8: tl.constexpr, SWAP: tl.constexpr):  # fmt: skip
    """Exact integer tile product of one group: (BM, BN), or (BN, BM) when SWAP; float32 values."""
    xt = tl.load(x_ptrs, mask=mmask[:, None], other=0.0)
    wt = _weight_tile(w_ptr, offs_n, nmask, g, stride_w, BN, BK, WFMT, FP8)
    if SWAP:
        if FP8:
            part = tl.dot(wt, tl.trans(xt))
        else:
            part = tl.dot(wt, tl.trans(xt), out_dtype=tl.int32).to(tl.float32)
    else:
        if FP8:
            part = tl.dot(xt, tl.trans(wt))
        else:
            part = tl.dot(xt, tl.trans(wt), out_dtype=tl.int32).to(tl.float32)
    return part


@triton.jit
def _scales(sx_ptr, sw_ptr, g, M, N, offs_m, offs_n, mmask, nmask):
    """s_x[g, m-tile] and s_w[g, n-tile]: contiguous (group-major) loads, issued before the group's wgmma so
    their latency hides behind it (loaded after the wait they stalled every group: NOTES.md)."""
    sx = tl.load(sx_ptr + g * M + offs_m, mask=mmask, other=0.0)
    sw = tl.load(sw_ptr + g * N + offs_n, mask=nmask, other=0.0)
    return sx, sw


@triton.jit
def _promote(acc, part, sx, sw, SWAP: tl.constexpr):
    """acc += part · s_x[g, m] · s_w[g, n] (one FMUL for the outer product, one FFMA)."""
    if SWAP:
        acc += part * (sw[:, None] * sx[None, :])
    else:
        acc += part * (sx[:, None] * sw[None, :])
    return acc


@triton.jit
def _qgemm_kernel(
    x_ptr, w_ptr, sx_ptr, sw_ptr, bias_ptr, y_ptr,
    M, N, K, stride_w,
    WFMT: tl.constexpr, FP8: tl.constexpr, HAS_BIAS: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, SWAP: tl.constexpr, PAIR: tl.constexpr,
    GROUP_M: tl.constexpr = 8,
):  # fmt: skip
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BM)
    num_n = tl.cdiv(N, BN)
    per_group = GROUP_M * num_n
    first_m = (pid // per_group) * GROUP_M
    size_m = min(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % size_m
    pid_n = (pid % per_group) // size_m

    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    mmask = offs_m < M
    nmask = offs_n < N
    offs_k = tl.arange(0, BK)
    x_ptrs = x_ptr + offs_m[:, None].to(tl.int64) * K + offs_k[None, :]
    NG = K // BK
    if SWAP:
        acc = tl.zeros((BN, BM), dtype=tl.float32)
    else:
        acc = tl.zeros((BM, BN), dtype=tl.float32)
    # PAIR: two groups per iteration, two independent wgmma chains, so the promotion FFMAs of the first
    # group run on the CUDA cores while the tensor cores work on the second (needs NG even).
    for it in range(0, NG // (2 if PAIR else 1)):
        g = it * (2 if PAIR else 1)
        sx0, sw0 = _scales(sx_ptr, sw_ptr, g, M, N, offs_m, offs_n, mmask, nmask)
        if PAIR:
            sx1, sw1 = _scales(sx_ptr, sw_ptr, g + 1, M, N, offs_m, offs_n, mmask, nmask)
        p0 = _group_dot(x_ptrs, mmask, w_ptr, offs_n, nmask, g, stride_w, BN, BK, WFMT, FP8, SWAP)
        if PAIR:
            p1 = _group_dot(
                x_ptrs + BK, mmask, w_ptr, offs_n, nmask, g + 1, stride_w, BN, BK, WFMT, FP8, SWAP
            )
        acc = _promote(acc, p0, sx0, sw0, SWAP)
        if PAIR:
            acc = _promote(acc, p1, sx1, sw1, SWAP)
        x_ptrs += BK * (2 if PAIR else 1)

    if SWAP:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n, mask=nmask, other=0.0)[:, None]
        y_ptrs = y_ptr + offs_m[None, :].to(tl.int64) * N + offs_n[:, None]
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=nmask[:, None] & mmask[None, :])
    else:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n, mask=nmask, other=0.0)[None, :]
        y_ptrs = y_ptr + offs_m[:, None].to(tl.int64) * N + offs_n[None, :]
        tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mmask[:, None] & nmask[None, :])


_SW_CACHE: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}


def s_w_group_major(s_w: torch.Tensor) -> torch.Tensor:
    """float16 (N, K/G) → float32 (K/G, N), cached per tensor version (weights are static)."""
    key = (s_w.data_ptr(), s_w.shape[0], s_w._version)
    hit = _SW_CACHE.get(key)
    if hit is None or hit[0] is not s_w:
        hit = (s_w, s_w.t().float().contiguous())
        _SW_CACHE[key] = hit
    return hit[1]


def qgemm_triton(
    q: torch.Tensor,
    s_x: torch.Tensor,
    w: torch.Tensor,
    wfmt: int,
    s_w: torch.Tensor,
    bias: torch.Tensor | None,
    group: int,
    fp8: bool,
    out_dtype: torch.dtype = torch.bfloat16,
    config: TileConfig | None = None,
) -> torch.Tensor:
    """y = Σ_g s_x·s_w·(q_x·q_w)_g + b; q (M×K) e4m3/int8 codes, s_x float32 (K/G, M) group-major,
    w (N × row bytes) in ``wfmt``, s_w float16 (N, K/G) (used group-major float32, cached), bias
    float32 (N) or None."""
    m, k = q.shape
    n = s_w.shape[0]
    if k % group or group not in (64, 128):
        raise ValueError(f"Triton qgemm needs group 64 or 128 dividing K, got group={group}, K={k}")
    y = torch.empty((m, n), device=q.device, dtype=out_dtype)
    if m == 0:
        return y
    qb = q
    cfg = config or TUNED.get((wfmt, fp8), DEFAULT)
    if wfmt == WFMT_INT3:  # the exchange int3 straddles bytes: use its bit-plane form (built once, cached)
        w, wfmt = int3_planes_cached(w, k), WFMT_INT3P
    wb = w if wfmt == WFMT_E or wfmt == WFMT_INT8 else w.view(torch.uint8)
    b = bias if bias is not None else s_x
    sw_t = s_w_group_major(s_w)
    if cfg.pair and (k // group) % 2:
        cfg = dataclasses.replace(cfg, pair=False)
    grid = (triton.cdiv(m, cfg.bm) * triton.cdiv(n, cfg.bn),)
    _qgemm_kernel[grid](
        qb, wb, s_x, sw_t, b, y, m, n, k, wb.stride(0),
        WFMT=wfmt, FP8=fp8, HAS_BIAS=bias is not None, BM=cfg.bm, BN=cfg.bn, BK=group, SWAP=cfg.swap, PAIR=cfg.pair,
        num_warps=cfg.warps, num_stages=cfg.stages,
    )  # fmt: skip
    return y

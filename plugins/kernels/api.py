"""GPU implementation of ``adatsq::qlinear`` from the two kernels: fused rotate+quantize, then the GEMM.

* :func:`quantize_activations`: CUDA C++ (plugins/csrc/rotate_quant.cu) through ctypes; one pass over x.
* :func:`qgemm`: Triton wgmma GEMM (plugins/kernels/triton_qgemm.py) or the CUDA C++ mma.sync GEMM
  (plugins/csrc/qgemm_mma.cu, the TensorRT path) selected by ``backend``.
* :func:`weight_only_gemv`: a = 16 layers (one vector per sample) as a GEMV over the packed weights
  (plugins/csrc/weight_only_gemv.cu).
* :func:`qlinear_cuda`: the registered CUDA implementation of the op. The weight operand stays packed
  (int3/int4, expanded in the kernel) unless ``ADATSQ_QLINEAR_WEIGHTS=expanded``, which expands once
  into a cache keyed by the packed tensor's storage (twice the memory of int4; for benchmarking).

Path choice: FP8 (e4m3 codes, QGMMA) when a ≤ 4 and w ≤ 4 (|codes| ≤ 8, exact in e4m3); int8 (IGMMA)
otherwise (a = 8 codes reach 128, not exact in e4m3).
"""

from __future__ import annotations

import functools
import math
import os

import torch

from adatsq.plugins.formats import format_for_bits
from adatsq.plugins.hadamard import hadamard_factors, paley_base
from adatsq.plugins.kernels import cuda_lib
from adatsq.plugins.reference import UNQUANTIZED, effective_group, qlinear_reference

__all__ = [
    "expand_weight",
    "gpu_supported",
    "qgemm",
    "qlinear_cuda",
    "quantize_activations",
    "use_fp8",
    "weight_only_gemv",
    "weight_only_supported",
    "wfmt_of",
]

FP8 = torch.float8_e4m3fn
_WFMT = {3: 3, 4: 4, 8: 8}


def use_fp8(a_bits: int, w_bits: int) -> bool:
    return a_bits <= 4 and w_bits <= 4


def wfmt_of(w_bits: int) -> int:
    return _WFMT[w_bits]


def gpu_supported(k: int, group_size: int, rotate: bool) -> bool:
    """Shapes the kernels take: K ≤ 32768, K % 256 == 0 (rotation), G ∈ {64, 128} dividing K."""
    g = effective_group(k, group_size)
    if g not in (64, 128) or k % g or k > 32768 or k % 8:
        return False
    if rotate:
        try:
            _m, p = hadamard_factors(k)
        except ValueError:
            return False
        return p >= 8
    return True


@functools.lru_cache(maxsize=64)
def _hm_device(m: int, device_index: int) -> torch.Tensor:
    return paley_base(m).to(torch.int8).to(f"cuda:{device_index}")


def quantize_activations(
    x2: torch.Tensor, a_bits: int, group: int, rotate: bool, fp8: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (M×K, e4m3 or int8) and group-major float32 scales (K/G, M) of x̃ = x·R."""
    if x2.dtype not in cuda_lib.DTYPE_CODE:
        x2 = x2.float()
    x2 = x2.contiguous()
    mrows, k = x2.shape
    q = torch.empty((mrows, k), device=x2.device, dtype=FP8 if fp8 else torch.int8)
    sx = torch.empty((k // group, mrows), device=x2.device, dtype=torch.float32)
    m, p = hadamard_factors(k) if rotate else (1, k)
    hm = _hm_device(m, x2.device.index or 0) if (rotate and m > 1) else None
    code = cuda_lib.lib().adatsq_rotate_quant(
        x2.data_ptr(), cuda_lib.DTYPE_CODE[x2.dtype], mrows, k, k, int(rotate), m, p,
        None if hm is None else hm.data_ptr(), group, a_bits, int(fp8), q.data_ptr(), sx.data_ptr(),
        cuda_lib.stream_ptr(x2.device),
    )  # fmt: skip
    cuda_lib.check(code, "adatsq_rotate_quant")
    return q, sx


def expand_weight(w_packed: torch.Tensor, w_bits: int, k: int, fp8: bool) -> torch.Tensor:
    """Packed codes (N × bytes) → one byte per code (N×K): e4m3 when ``fp8`` else int8."""
    n = w_packed.shape[0]
    out = torch.empty((n, k), device=w_packed.device, dtype=FP8 if fp8 else torch.int8)
    code = cuda_lib.lib().adatsq_expand_weight(
        w_packed.contiguous().data_ptr(), wfmt_of(w_bits), n, k, int(fp8), out.data_ptr(),
        cuda_lib.stream_ptr(w_packed.device),
    )  # fmt: skip
    cuda_lib.check(code, "adatsq_expand_weight")
    return out


def qgemm(
    q: torch.Tensor,
    sx: torch.Tensor,
    w: torch.Tensor,
    wfmt: int,
    s_w: torch.Tensor,
    bias: torch.Tensor | None,
    group: int,
    out_dtype: torch.dtype = torch.bfloat16,
    backend: str = "triton",
    config: object | None = None,
) -> torch.Tensor:
    """The GEMM alone. ``wfmt``: 3/4 packed, 8 int8 codes, 9 expanded (one byte per code, q's type)."""
    fp8 = q.dtype == FP8
    s_w = s_w.to(torch.float16).contiguous()
    b = None if bias is None else bias.float().contiguous()
    if backend == "triton":
        from adatsq.plugins.kernels.triton_qgemm import qgemm_triton

        return qgemm_triton(q, sx, w, wfmt, s_w, b, group, fp8, out_dtype, config)  # type: ignore[arg-type]
    if backend == "cuda":
        mrows, k = q.shape
        n = s_w.shape[0]
        y = torch.empty((mrows, n), device=q.device, dtype=out_dtype)
        c_wfmt = 9 if (wfmt == 9 and fp8) else (8 if wfmt == 9 else wfmt)
        code = cuda_lib.lib().adatsq_qgemm(
            q.data_ptr(), int(fp8), sx.data_ptr(), w.data_ptr(), c_wfmt, s_w.data_ptr(),
            None if b is None else b.data_ptr(), y.data_ptr(), cuda_lib.DTYPE_CODE[out_dtype], mrows, n, k,
            group, cuda_lib.stream_ptr(q.device),
        )  # fmt: skip
        cuda_lib.check(code, "adatsq_qgemm")
        return y
    raise ValueError(f"unknown qgemm backend {backend!r}")


def weight_only_supported(k: int, group_size: int, w_bits: int) -> bool:
    """Shapes of the weight-only (a = 16) kernel: K and G multiples of 8, G dividing K."""
    g = effective_group(k, group_size)
    return w_bits in _WFMT and k % 8 == 0 and g % 8 == 0 and k % g == 0


def weight_only_gemv(
    x2: torch.Tensor,
    w_packed: torch.Tensor,
    w_bits: int,
    s_w: torch.Tensor,
    bias: torch.Tensor | None,
    group: int,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """y = x·(q_w ⊙ s_w)ᵀ + b (a = 16, no rotation) straight from the packed weights; M×N in ``out_dtype``
    (float32 or bfloat16)."""
    if x2.dtype not in cuda_lib.DTYPE_CODE:
        x2 = x2.float()
    x2 = x2.contiguous()
    mrows, k = x2.shape
    n = s_w.shape[0]
    s_w = s_w.to(torch.float16).contiguous()
    b = None if bias is None else bias.float().contiguous()
    y = torch.empty((mrows, n), device=x2.device, dtype=out_dtype)
    code = cuda_lib.lib().adatsq_weight_only_gemv(
        x2.data_ptr(), cuda_lib.DTYPE_CODE[x2.dtype], mrows, k, k, w_packed.contiguous().data_ptr(),
        wfmt_of(w_bits), s_w.data_ptr(), None if b is None else b.data_ptr(), y.data_ptr(),
        cuda_lib.DTYPE_CODE[out_dtype], n, group, cuda_lib.stream_ptr(x2.device),
    )  # fmt: skip
    cuda_lib.check(code, "adatsq_weight_only_gemv")
    return y


_EXPANDED: dict[tuple[int, int, int, bool], tuple[torch.Tensor, torch.Tensor]] = {}


def _expanded(w_packed: torch.Tensor, w_bits: int, k: int, fp8: bool) -> torch.Tensor:
    key = (w_packed.untyped_storage().data_ptr(), w_packed.storage_offset(), w_bits, fp8)
    hit = _EXPANDED.get(key)
    if hit is None or hit[0].shape[0] != w_packed.shape[0]:
        hit = (w_packed, expand_weight(w_packed, w_bits, k, fp8))  # keep w_packed alive: ptr stays valid
        _EXPANDED[key] = hit
    return hit[1]


def qlinear_cuda(
    x: torch.Tensor,
    w_packed: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    a_bits: int,
    w_bits: int,
    group_size: int,
    rotate: bool,
) -> torch.Tensor:
    """CUDA implementation of ``adatsq::qlinear`` (same contract as the CPU reference)."""
    k = x.shape[-1]
    n = w_scale.shape[0]
    lead = x.shape[:-1]
    g = effective_group(k, group_size)
    if a_bits >= UNQUANTIZED and not rotate and weight_only_supported(k, group_size, w_bits):
        out_dtype = torch.bfloat16 if x.dtype == torch.bfloat16 else torch.float32
        y = weight_only_gemv(x.reshape(-1, k), w_packed, w_bits, w_scale, bias, g, out_dtype)
        return y.to(x.dtype).reshape(*lead, n)
    if a_bits >= UNQUANTIZED or not gpu_supported(k, group_size, rotate):
        return _fallback(x, w_packed, w_scale, bias, a_bits, w_bits, group_size, rotate)
    x2 = x.reshape(-1, k)
    fp8 = use_fp8(a_bits, w_bits)
    q, sx = quantize_activations(x2, a_bits, g, rotate, fp8)
    if os.environ.get("ADATSQ_QLINEAR_WEIGHTS", "packed") == "expanded":
        w, wfmt = _expanded(w_packed, w_bits, k, fp8), 9
    else:
        w, wfmt = w_packed, wfmt_of(w_bits)
    out_dtype = x.dtype if x.dtype in (torch.float32, torch.bfloat16, torch.float16) else torch.float32
    y = qgemm(q, sx, w, wfmt, w_scale, bias, g, out_dtype=out_dtype)
    return y.reshape(*lead, n)


def _fallback(
    x: torch.Tensor,
    w_packed: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    a_bits: int,
    w_bits: int,
    group_size: int,
    rotate: bool,
) -> torch.Tensor:
    """Shapes the kernels do not take (or a rotated a = 16 layer): the reference, on the GPU."""
    codes = format_for_bits(w_bits).unpack(w_packed, x.shape[-1])
    y = qlinear_reference(x, codes, w_scale, bias, a_bits, group_size, rotate)
    return y.to(x.dtype)


def flops(m: int, n: int, k: int) -> float:
    return 2.0 * m * n * k


def tflops(m: int, n: int, k: int, ms: float) -> float:
    return flops(m, n, k) / (ms * 1e-3) / 1e12 if ms > 0 else math.nan

"""GPU implementation of ``adatsq::qlinear`` from the two kernels: fused rotate+quantize, then the GEMM.

* :func:`quantize_activations`: CUDA C++ (plugins/csrc/rotate_quant.cu, rotate_quant_warp.cu) through ctypes; one
  pass over x.
* :func:`qgemm`: the GEMM. ``backend="auto"`` (default): the sm_90a FP8 wgmma GEMM built on CUTLASS
  (plugins/csrc/qgemm_sm90.cu) for the FP8 path with G = 128, else the Triton wgmma GEMM
  (plugins/kernels/triton_qgemm.py); packed weights are expanded to one byte per code into a transient
  buffer first (a bandwidth-bound pass, 7-39 µs on the H200 for the image models' layers), so they stay
  packed in memory. ``"sm90"``, ``"triton"`` (Triton, unpacking packed weights inside the GEMM) and
  ``"cuda"`` (the portable mma.sync GEMM of plugins/csrc/qgemm_mma.cu) force one.
* :func:`weight_only_gemv`: a = 16 layers (one vector per sample) as a GEMV over the packed weights
  (plugins/csrc/weight_only_gemv.cu); :func:`weight_only_gemm` for the ones that see more than
  ``GEMV_MAX_TOKENS`` tokens (expanded codes, float32 GEMM).
* :func:`qlinear_cuda`: the registered CUDA implementation of the op. The weight operand stays packed
  (int3/int4, expanded per call) unless ``ADATSQ_QLINEAR_WEIGHTS=expanded``, which expands once into a
  cache keyed by the packed tensor's storage (twice the memory of int4; for benchmarking).

Path choice: FP8 (e4m3 codes, QGMMA) when a ≤ 4 and w ≤ 4 (|codes| ≤ 8, exact in e4m3); int8 (IGMMA)
otherwise (a = 8 codes reach 128, not exact in e4m3).
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
from collections.abc import Callable

import torch

from adatsq.core.contract import UNQUANTIZED
from adatsq.plugins.hadamard import hadamard_factors, paley_base
from adatsq.plugins.kernels import cuda_lib
from adatsq.plugins.reference import dequantize_weight, effective_group, qlinear_reference_packed

__all__ = [
    "GEMV_MAX_TOKENS",
    "derived",
    "expand_weight",
    "gpu_supported",
    "qgemm",
    "qgemm_sm90",
    "qlinear_cuda",
    "quantize_activations",
    "sm90_supported",
    "use_fp8",
    "weight_only_gemm",
    "weight_only_gemv",
    "weight_only_supported",
    "weight_scales_gmajor",
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


def sm90_supported(n: int, k: int, group: int, device: torch.device) -> bool:
    """Shapes and devices of the CUTLASS wgmma GEMM: an sm_90 GPU, G = 128, K % 128 == 0, N % 8 == 0."""
    if group != 128 or k % 128 or n % 8 or device.type != "cuda":
        return False
    return torch.cuda.get_device_capability(device) == (9, 0)


def weight_scales_gmajor(s_w: torch.Tensor) -> torch.Tensor:
    """float16 scales N × groups → float32 group-major (groups × N), the layout the wgmma GEMM reads."""
    s_w = s_w.to(torch.float16).contiguous()
    n, groups = s_w.shape
    out = torch.empty((groups, n), device=s_w.device, dtype=torch.float32)
    code = cuda_lib.lib().adatsq_weight_scales_gmajor(
        s_w.data_ptr(), n, groups, out.data_ptr(), cuda_lib.stream_ptr(s_w.device)
    )
    cuda_lib.check(code, "adatsq_weight_scales_gmajor")
    return out


@functools.lru_cache(maxsize=256)
def _sm90_workspace(m: int, n: int, k: int) -> int:
    """Workspace bytes of the sm90 GEMM for one shape (a host query into CUTLASS, asked once per shape)."""
    nbytes = ctypes.c_size_t(0)
    cuda_lib.check(
        cuda_lib.lib().adatsq_qgemm_sm90_workspace(m, n, k, ctypes.byref(nbytes)), "sm90 workspace"
    )
    return nbytes.value


def qgemm_sm90(
    q: torch.Tensor,
    sx: torch.Tensor,
    w_e4m3: torch.Tensor,
    sw_gmajor: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype = torch.bfloat16,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """y = Σ_g s_x·s_w·(q_x·q_w)_g + b on the CUTLASS sm_90a kernel: e4m3 codes q (M×K), w (N×K), group-major
    float32 scales sx (K/128 × M), sw (K/128 × N); float32 or bfloat16 out (float16: computed in float32).
    ``out``: an M×N float32/bfloat16 tensor to write into."""
    mrows, k = q.shape
    n = w_e4m3.shape[0]
    y_dtype = out_dtype if out_dtype in (torch.float32, torch.bfloat16) else torch.float32
    if out is not None and (out.shape != (mrows, n) or out.dtype != y_dtype or not out.is_contiguous()):
        raise ValueError(
            f"out must be a contiguous {mrows}×{n} {y_dtype} tensor, got {out.dtype} {tuple(out.shape)}"
        )
    y = torch.empty((mrows, n), device=q.device, dtype=y_dtype) if out is None else out
    nbytes = _sm90_workspace(mrows, n, k)
    ws = torch.empty(nbytes, device=q.device, dtype=torch.uint8) if nbytes else None
    code = cuda_lib.lib().adatsq_qgemm_sm90(
        q.data_ptr(), sx.data_ptr(), w_e4m3.data_ptr(), sw_gmajor.data_ptr(), None if bias is None else bias.data_ptr(),
        y.data_ptr(), cuda_lib.DTYPE_CODE[y_dtype], mrows, n, k, None if ws is None else ws.data_ptr(), nbytes,
        cuda_lib.stream_ptr(q.device),
    )  # fmt: skip
    cuda_lib.check(code, "adatsq_qgemm_sm90")
    return y if y_dtype == out_dtype else y.to(out_dtype)


def qgemm(
    q: torch.Tensor,
    sx: torch.Tensor,
    w: torch.Tensor,
    wfmt: int,
    s_w: torch.Tensor,
    bias: torch.Tensor | None,
    group: int,
    out_dtype: torch.dtype = torch.bfloat16,
    backend: str = "auto",
    config: object | None = None,
    sw_gmajor: torch.Tensor | None = None,
) -> torch.Tensor:
    """The GEMM alone. ``wfmt``: 3/4 packed, 8 int8 codes, 9 expanded (one byte per code, q's type).
    ``sw_gmajor``: :func:`weight_scales_gmajor` of ``s_w`` if the caller keeps it (sm90 backend)."""
    fp8 = q.dtype == FP8
    k = q.shape[1]
    s_w = s_w.to(torch.float16).contiguous()
    b = None if bias is None else bias.float().contiguous()
    if backend == "auto":
        if wfmt in (3, 4):  # expand into a transient buffer: the packed weight stays the resident copy
            w, wfmt = expand_weight(w, wfmt, k, fp8), 9
        backend = "sm90" if fp8 and sm90_supported(s_w.shape[0], k, group, q.device) else "triton"
    if backend == "sm90":
        if wfmt != 9 or not fp8:
            raise ValueError("the sm90 GEMM takes e4m3 codes and expanded e4m3 weights (wfmt 9)")
        sw = weight_scales_gmajor(s_w) if sw_gmajor is None else sw_gmajor
        return qgemm_sm90(q, sx, w, sw, b, out_dtype)
    if backend == "triton":
        from adatsq.plugins.kernels.triton_qgemm import qgemm_triton

        return qgemm_triton(q, sx, w, wfmt, s_w, b, group, fp8, out_dtype, config)  # type: ignore[arg-type]
    if backend == "cuda":
        mrows = q.shape[0]
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


#: tokens up to which a weight-only layer runs the GEMV (it reads the weights once per 8 tokens); above, the
#: layers that see every token (Flux's x_embedder / context_embedder) run :func:`weight_only_gemm`
GEMV_MAX_TOKENS = 8


def weight_only_gemm(
    x2: torch.Tensor, w_packed: torch.Tensor, w_bits: int, s_w: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """y = x·(q_w ⊙ s_w)ᵀ + b for many tokens: the codes expanded on the device, q·s in float32 (exact) and one
    float32 GEMM; M×N float32."""
    # int8 codes are stored as they are (one byte each); int3/int4 are expanded on the device
    codes = (
        w_packed.view(torch.int8) if w_bits == 8 else expand_weight(w_packed, w_bits, x2.shape[1], fp8=False)
    )
    w = dequantize_weight(codes, s_w)
    return torch.nn.functional.linear(x2.float(), w, None if bias is None else bias.float())


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


_DERIVED: dict[tuple[object, ...], tuple[torch.Tensor, torch.Tensor]] = {}


def derived(source: torch.Tensor, tag: tuple[object, ...], build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``build()`` once per (storage of ``source``, ``tag``): device tensors derived from a resident weight
    (its expansion, its transposed scales). The entry keeps ``source`` alive so its address stays its own;
    a tensor of another shape at the same address rebuilds."""
    key = (source.untyped_storage().data_ptr(), source.storage_offset(), *tag)
    hit = _DERIVED.get(key)
    if hit is None or hit[0].shape != source.shape:
        hit = (source, build())
        _DERIVED[key] = hit
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
        x2 = x.reshape(-1, k)
        if x2.shape[0] > GEMV_MAX_TOKENS:  # an embedder over the tokens: one GEMM, not a GEMV per 8 rows
            return weight_only_gemm(x2, w_packed, w_bits, w_scale, bias).to(x.dtype).reshape(*lead, n)
        out_dtype = torch.bfloat16 if x.dtype == torch.bfloat16 else torch.float32
        y = weight_only_gemv(x2, w_packed, w_bits, w_scale, bias, g, out_dtype)
        return y.to(x.dtype).reshape(*lead, n)
    if a_bits >= UNQUANTIZED or not gpu_supported(k, group_size, rotate):
        # shapes the kernels do not take (or a rotated a = 16 layer): the reference, on the GPU
        y = qlinear_reference_packed(x, w_packed, w_scale, bias, a_bits, w_bits, group_size, rotate)
        return y.to(x.dtype)
    x2 = x.reshape(-1, k)
    fp8 = use_fp8(a_bits, w_bits)
    q, sx = quantize_activations(x2, a_bits, g, rotate, fp8)
    sw_gmajor = None
    if os.environ.get("ADATSQ_QLINEAR_WEIGHTS", "packed") == "expanded":
        w, wfmt = (
            derived(w_packed, ("expanded", w_bits, fp8), lambda: expand_weight(w_packed, w_bits, k, fp8)),
            9,
        )
        if fp8 and sm90_supported(n, k, g, x.device):
            sw_gmajor = derived(w_scale, ("gmajor",), lambda: weight_scales_gmajor(w_scale))
    else:
        w, wfmt = w_packed, wfmt_of(w_bits)
    out_dtype = x.dtype if x.dtype in (torch.float32, torch.bfloat16, torch.float16) else torch.float32
    y = qgemm(q, sx, w, wfmt, w_scale, bias, g, out_dtype=out_dtype, sw_gmajor=sw_gmajor)
    return y.reshape(*lead, n)


def flops(m: int, n: int, k: int) -> float:
    return 2.0 * m * n * k


def tflops(m: int, n: int, k: int, ms: float) -> float:
    return flops(m, n, k) / (ms * 1e-3) / 1e12 if ms > 0 else math.nan

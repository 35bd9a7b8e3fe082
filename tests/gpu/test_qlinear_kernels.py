"""GPU kernels of the quantized linear op against the reference (plugins/reference.py).

* Activation kernel: codes equal the reference's except rare ±1 flips where x̃/s sits on a rounding
  boundary (the rotation sums in another order than torch's), each certified: at every differing code the
  reference's x̃/s is within the tie window of a half-integer (helpers.ties.check_code_flips), and at most
  1e-3 of the codes differ; scales within 1e-5.
* GEMM (every path and weight format): given the kernel's codes and scales, the float32 output equals the
  float64 evaluation of Σ_g s_x·s_w·(q_x·q_w) + b to 1e-5 relative (the integer part is exact); bf16 output
  within bf16 rounding.
* The registered op on CUDA, CUDA graphs and torch.compile.
Fresh random inputs every run, rows with outliers ×100, M not a multiple of the tile, every model width.
"""

from __future__ import annotations

import pytest
import torch
from helpers.ties import check_code_flips, reference_codes, tie_distance, tie_window

from adatsq.plugins.formats import format_for_bits
from adatsq.plugins.hadamard import rotate
from adatsq.plugins.reference import qlinear_reference

pytestmark = pytest.mark.gpu

WIDTHS = (3072, 12288, 15360, 1536, 8960, 3840, 10240)
G = 128


def _cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    pytest.importorskip("triton")


def _x(m: int, k: int, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(m, k, generator=gen)
    rows = torch.randint(0, m, (max(1, m // 8),), generator=gen)
    x[rows] *= 100.0  # outlier tokens
    cols = torch.randint(0, k, (8,), generator=gen)
    x[:, cols] *= 30.0  # outlier channels
    return x.to(dtype)


def _weights(n: int, k: int, w_bits: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = -(2 ** (w_bits - 1)), 2 ** (w_bits - 1) - 1
    codes = torch.randint(lo, hi + 1, (n, k), generator=gen, dtype=torch.int8)
    scale = (torch.rand(n, k // G, generator=gen) * 0.02 + 0.001).to(torch.float16)
    return codes, scale


def _gemm_ref64(q: torch.Tensor, sx: torch.Tensor, codes: torch.Tensor, sw: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
    """float64 Σ_g s_x[g,m]·s_w[n,g]·(q_x·q_w)_g + b from the kernel's own codes (sx group-major)."""
    qf = q.float().cpu().double()
    m, k = qf.shape
    ng = k // G
    qw = codes.double().reshape(-1, ng, G)
    qx = qf.reshape(m, ng, G)
    y = torch.zeros(m, codes.shape[0], dtype=torch.float64)
    for g in range(ng):
        y += (qx[:, g] @ qw[:, g].t()) * sx[g].cpu().double()[:, None] * sw[:, g].double()[None, :]
    if bias is not None:
        y += bias.double()[None, :]
    return y


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def _reference_after_flips(
    q: torch.Tensor, x_rot: torch.Tensor, a_bits: int, group: int, what: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's codes ``q`` against the reference's on the same rotated input: equal except certified tie
    flips (one step, x̃/s on a rounding boundary), at most 1e-3 of them; returns the reference codes, scales."""
    ref_q, ref_s, ratios = reference_codes(x_rot, a_bits, group)
    got = q.float().cpu()
    assert torch.isfinite(got).all()
    flips = check_code_flips(ref_q, ratios, got, a_bits, what, limit=max(3, int(1e-3 * got.numel())))
    if flips:
        worst = float(tie_distance(torch.tensor(flips)).max()) / tie_window(a_bits, x_rot.shape[-1])
        print(
            f"{what}: {len(flips)} of {got.numel()} codes are certified tie flips (at most {worst:.1e} of the tie window)"
        )
    return ref_q, ref_s


@pytest.mark.parametrize("k", WIDTHS)
@pytest.mark.parametrize("a_bits", [3, 4, 8])
def test_rotate_quant_matches_reference(k: int, a_bits: int) -> None:
    _cuda()
    from adatsq.plugins.kernels.api import quantize_activations

    gen = torch.Generator().manual_seed(torch.seed())
    m = 77
    x = _x(m, k, torch.bfloat16, gen)
    fp8 = a_bits <= 4
    q, sx = quantize_activations(x.cuda(), a_bits, G, True, fp8)
    torch.cuda.synchronize()
    _, ref_s = _reference_after_flips(q, rotate(x.float()), a_bits, G, f"K={k} a{a_bits}")
    torch.testing.assert_close(sx.t().cpu(), ref_s, rtol=1e-5, atol=0)


@pytest.mark.parametrize(
    ("k", "group"),
    [(3072, 32), (3072, 256), (3072, 768), (3072, 96), (1536, 64), (1536, 512), (1536, 1536), (1536, 48)],
)
@pytest.mark.parametrize("a_bits", [3, 8])
def test_rotate_quant_group_sizes(k: int, group: int, a_bits: int) -> None:
    """Groups inside one lane run, across whole rows, the whole token, and sizes the warp kernel leaves to the
    CTA kernel (96 and 48 do not divide p)."""
    _cuda()
    from adatsq.plugins.kernels.api import quantize_activations

    gen = torch.Generator().manual_seed(torch.seed())
    x = _x(45, k, torch.bfloat16, gen)
    q, sx = quantize_activations(x.cuda(), a_bits, group, True, a_bits <= 4)
    assert sx.shape == (k // group, 45)
    _, ref_s = _reference_after_flips(q, rotate(x.float()), a_bits, group, f"K={k} G={group} a{a_bits}")
    torch.testing.assert_close(sx.t().cpu(), ref_s, rtol=1e-5, atol=0)


@pytest.mark.parametrize("k", [1536, 3072, 12288])
@pytest.mark.parametrize("options", ["", "warps", "warps,w2", "warps,occ3", "warps,w2,occ3"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_warp_kernels_bit_identical_to_cta_kernel(
    k: int, options: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The warp kernels (the default one warp per token of rotate_quant_warp.cu; with ADATSQ_RQ_KERNEL=warps the
    one, two or four warps per token of rotate_quant_warps.cu) perform the CTA kernel's additions in its order,
    so codes and scales are equal bit for bit (ADATSQ_RQ_KERNEL=cta forces the CTA kernel). M covers one token,
    a partial last CTA, and several rounds of the persistent grid."""
    _cuda()
    from adatsq.plugins.kernels.api import quantize_activations

    gen = torch.Generator().manual_seed(torch.seed())
    for m in (1, 7, 3001):
        x = _x(m, k, dtype, gen).cuda()
        for a_bits, group in ((3, 128), (4, 64), (8, 128)):
            fp8 = a_bits <= 4
            monkeypatch.setenv("ADATSQ_RQ_KERNEL", "cta")
            q_ref, s_ref = quantize_activations(x, a_bits, group, True, fp8)
            monkeypatch.setenv("ADATSQ_RQ_KERNEL", options)
            q, s = quantize_activations(x, a_bits, group, True, fp8)
            torch.cuda.synchronize()
            what = f"K={k} M={m} a{a_bits} G={group} {dtype} options={options!r}"
            assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8)), what
            assert torch.equal(s, s_ref), what


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_rotate_quant_dtypes_and_no_rotation(dtype: torch.dtype) -> None:
    _cuda()
    from adatsq.plugins.kernels.api import quantize_activations

    gen = torch.Generator().manual_seed(torch.seed())
    x = _x(45, 3072, dtype, gen)
    for rot in (True, False):
        q, sx = quantize_activations(x.cuda(), 4, G, rot, True)
        xr = rotate(x.float()) if rot else x.float()
        _, ref_s = _reference_after_flips(q, xr, 4, G, f"{dtype} rotate={rot}")
        torch.testing.assert_close(sx.t().cpu(), ref_s, rtol=1e-5, atol=0)


@pytest.mark.parametrize("k", WIDTHS)
@pytest.mark.parametrize(("a_bits", "w_bits"), [(3, 3), (4, 4), (3, 4), (4, 3), (8, 4), (8, 3)])
@pytest.mark.parametrize("variant", ["packed", "expanded"])
@pytest.mark.parametrize("backend", ["auto", "triton"])
def test_gemm_integer_part_exact(k: int, a_bits: int, w_bits: int, variant: str, backend: str) -> None:
    """auto: CUTLASS sm_90a GEMM on the FP8 path (packed weights expanded per call), Triton on int8;
    triton: the Triton kernels, unpacking packed weights inside the GEMM."""
    _cuda()
    from adatsq.plugins.kernels.api import expand_weight, qgemm, quantize_activations, use_fp8, wfmt_of

    gen = torch.Generator().manual_seed(torch.seed())
    m, n = 300, 384
    x = _x(m, k, torch.bfloat16, gen)
    codes, sw = _weights(n, k, w_bits, gen)
    bias = torch.randn(n, generator=gen)
    fp8 = use_fp8(a_bits, w_bits)
    q, sx = quantize_activations(x.cuda(), a_bits, G, True, fp8)
    packed = format_for_bits(w_bits).pack(codes).cuda()
    if variant == "packed":
        w, wfmt = packed, wfmt_of(w_bits)
    else:
        w, wfmt = expand_weight(packed, w_bits, k, fp8), 9
    ref = _gemm_ref64(q, sx, codes, sw, bias)
    y32 = qgemm(q, sx, w, wfmt, sw.cuda(), bias.cuda(), G, out_dtype=torch.float32, backend=backend)
    y16 = qgemm(q, sx, w, wfmt, sw.cuda(), bias.cuda(), G, out_dtype=torch.bfloat16, backend=backend)
    torch.cuda.synchronize()
    assert torch.isfinite(y32).all()
    assert _rel(y32.cpu(), ref) <= 1e-5
    assert _rel(y16.float().cpu(), ref) <= 4e-3  # bf16 rounding of the output (2^-8 relative)


@pytest.mark.parametrize("w_bits", [3, 4, 8])
@pytest.mark.parametrize("k", [3072, 8960])
def test_cuda_mma_gemm_exact(w_bits: int, k: int) -> None:
    """The CUDA C++ mma.sync GEMM (the TensorRT path): int8 codes, packed weights, exact integer part."""
    _cuda()
    from adatsq.plugins.kernels.api import qgemm, quantize_activations, wfmt_of

    gen = torch.Generator().manual_seed(torch.seed())
    m, n = 200, 320
    x = _x(m, k, torch.bfloat16, gen)
    codes, sw = _weights(n, k, w_bits, gen)
    bias = torch.randn(n, generator=gen)
    q, sx = quantize_activations(x.cuda(), 4, G, True, False)
    packed = format_for_bits(w_bits).pack(codes).cuda()
    y = qgemm(q, sx, packed, wfmt_of(w_bits), sw.cuda(), bias.cuda(), G, torch.float32, backend="cuda")
    torch.cuda.synchronize()
    assert _rel(y.cpu(), _gemm_ref64(q, sx, codes, sw, bias)) <= 1e-5


@pytest.mark.parametrize(("m", "n"), [(77, 200), (1, 8), (4608, 3072)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_sm90_gemm_exact(m: int, n: int, with_bias: bool) -> None:
    """The CUTLASS sm_90a kernel called directly: M and N off the 128-tiles (N = 200: an odd number of
    column tiles in the 2-CTA cluster), no bias, K = 15360; poisoned output fully overwritten."""
    _cuda()
    from adatsq.plugins.kernels.api import (
        expand_weight,
        qgemm_sm90,
        quantize_activations,
        weight_scales_gmajor,
    )

    gen = torch.Generator().manual_seed(torch.seed())
    k = 15360
    x = _x(m, k, torch.bfloat16, gen)
    codes, sw = _weights(n, k, 4, gen)
    bias = torch.randn(n, generator=gen) if with_bias else None
    q, sx = quantize_activations(x.cuda(), 4, G, True, True)
    w = expand_weight(format_for_bits(4).pack(codes).cuda(), 4, k, True)
    swg = weight_scales_gmajor(sw.cuda())
    assert torch.equal(swg.cpu(), sw.float().t())
    y = torch.full((m, n), float("nan"), device="cuda")
    qgemm_sm90(q, sx, w, swg, None if bias is None else bias.cuda(), torch.float32, out=y)
    torch.cuda.synchronize()
    assert torch.isfinite(y).all()
    assert _rel(y.cpu(), _gemm_ref64(q, sx, codes, sw, bias)) <= 1e-5


@pytest.mark.parametrize(("a_bits", "w_bits"), [(4, 4), (3, 3), (8, 4)])
def test_qlinear_launch_c_abi(a_bits: int, w_bits: int) -> None:
    """adatsq_qlinear_launch, the TensorRT plugin's whole enqueue, in its own workspace: on the FP8 path it
    runs the same kernels as the torch op (bit-identical output); a = 8 takes the mma.sync path."""
    _cuda()
    import ctypes

    import adatsq.plugins.kernels  # noqa: F401
    from adatsq.plugins.hadamard import hadamard_factors
    from adatsq.plugins.kernels import cuda_lib
    from adatsq.plugins.kernels.api import _hm_device

    gen = torch.Generator().manual_seed(torch.seed())
    m, k, n = 333, 3072, 640
    x = _x(m, k, torch.bfloat16, gen).cuda()
    codes, sw = _weights(n, k, w_bits, gen)
    bias = torch.randn(n, generator=gen).cuda()
    packed, sw = format_for_bits(w_bits).pack(codes).cuda(), sw.cuda()
    lib = cuda_lib.lib()
    nbytes = lib.adatsq_qlinear_workspace_size(m, n, k, G, a_bits, w_bits)
    ws = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    y = torch.full((m, n), float("nan"), dtype=torch.bfloat16, device="cuda")
    hm_order, p = hadamard_factors(k)
    hm = _hm_device(hm_order, 0) if hm_order > 1 else None
    code = lib.adatsq_qlinear_launch(
        x.data_ptr(), 2, m, k, 1, hm_order, p, None if hm is None else hm.data_ptr(), G, a_bits, packed.data_ptr(),
        w_bits, sw.data_ptr(), bias.data_ptr(), y.data_ptr(), 2, n, ws.data_ptr(), ctypes.c_size_t(nbytes),
        torch.cuda.current_stream().cuda_stream,
    )  # fmt: skip
    cuda_lib.check(code, "adatsq_qlinear_launch")
    op = torch.ops.adatsq.qlinear(x, packed, sw, bias, a_bits, w_bits, G, True)
    torch.cuda.synchronize()
    assert not y.isnan().any()
    if a_bits <= 4:
        assert torch.equal(y, op)
    else:
        assert _rel(y.float().cpu(), op.float().cpu()) <= 4e-3
    small = lib.adatsq_qlinear_workspace_size(m, n, k, G, 8, w_bits)
    assert (nbytes > small) == (a_bits <= 4)  # the FP8 path also holds the expanded weight


@pytest.mark.parametrize("w_bits", [3, 4])
def test_expand_weight_bit_exact(w_bits: int) -> None:
    _cuda()
    from adatsq.plugins.kernels.api import expand_weight

    gen = torch.Generator().manual_seed(torch.seed())
    codes, _ = _weights(96, 1024, w_bits, gen)
    fmt = format_for_bits(w_bits)
    packed = fmt.pack(codes)
    assert torch.equal(fmt.unpack(packed, 1024), codes)
    assert torch.equal(expand_weight(packed.cuda(), w_bits, 1024, False).cpu(), codes)
    assert torch.equal(expand_weight(packed.cuda(), w_bits, 1024, True).float().cpu(), codes.float())


@pytest.mark.parametrize(("a_bits", "w_bits"), [(3, 3), (4, 4), (8, 4), (16, 4)])
def test_registered_op_cuda(a_bits: int, w_bits: int) -> None:
    _cuda()
    import adatsq.plugins.kernels  # noqa: F401  (registers the CUDA implementation)

    gen = torch.Generator().manual_seed(torch.seed())
    m, k, n = 133, 3072, 256
    x = _x(m, k, torch.float32, gen) * 0.1
    codes, sw = _weights(n, k, w_bits, gen)
    bias = torch.randn(n, generator=gen)
    packed = format_for_bits(w_bits).pack(codes)
    y = torch.ops.adatsq.qlinear(x.cuda(), packed.cuda(), sw.cuda(), bias.cuda(), a_bits, w_bits, G, True)
    ref = qlinear_reference(x, codes, sw, bias, a_bits, G, True)
    assert y.dtype == x.dtype
    assert y.shape == ref.shape
    if a_bits == 16:
        assert _rel(y.cpu(), ref) <= 1e-4
        return
    # The op against the reference is split in two exact statements, because one ±1 activation-code flip at a
    # rounding boundary (the rotation's float32 sums in another order) in an outlier token moves y by up to
    # ~4e-3 relative on its own: (1) the op's activation codes are the reference's up to certified tie flips,
    # and its scales equal; (2) y is exactly the product of the op's own codes (integer part exact).
    from adatsq.plugins.kernels.api import quantize_activations, use_fp8

    q, sx = quantize_activations(x.cuda(), a_bits, G, True, use_fp8(a_bits, w_bits))
    _, ref_s = _reference_after_flips(q, rotate(x.float()), a_bits, G, f"op a{a_bits}w{w_bits}")
    torch.testing.assert_close(sx.t().cpu(), ref_s, rtol=1e-5, atol=0)
    assert _rel(y.cpu(), _gemm_ref64(q, sx, codes, sw, bias)) <= 1e-5


def test_cuda_graph_and_compile() -> None:
    _cuda()
    import adatsq.plugins.kernels  # noqa: F401

    gen = torch.Generator().manual_seed(torch.seed())
    m, k, n = 256, 3072, 512
    x = _x(m, k, torch.bfloat16, gen).cuda()
    codes, sw = _weights(n, k, 4, gen)
    packed, sw = format_for_bits(4).pack(codes).cuda(), sw.cuda()

    def f(inp: torch.Tensor) -> torch.Tensor:
        return torch.ops.adatsq.qlinear(inp, packed, sw, None, 4, 4, G, True)

    eager = f(x)
    compiled = torch.compile(f, fullgraph=True)(x)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)
    static_x = x.clone()
    f(static_x)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = f(static_x)
    x2 = _x(m, k, torch.bfloat16, gen).cuda()
    static_x.copy_(x2)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(static_y, f(x2), rtol=0, atol=0)


# ------------------------------------------------------------------ weight-only (a = 16) GEMV kernel


@pytest.mark.parametrize("w_bits", [3, 4, 8])
@pytest.mark.parametrize("k", [256, 3072, 1536, 15360])
@pytest.mark.parametrize("m", [1, 2, 3, 13])  # the vectorized kernel at 1, 2, 4 and 8 tokens per block
def test_weight_only_gemv_matches_float64(w_bits: int, k: int, m: int) -> None:
    _cuda()
    from adatsq.plugins.kernels.api import weight_only_gemv
    from adatsq.plugins.reference import dequantize_weight, quantize_weight_rtn

    n = 200  # not a multiple of the 8 channels per block
    codes, scale = quantize_weight_rtn(torch.randn(n, k), w_bits, G)
    packed = format_for_bits(w_bits).pack(codes).cuda()
    x = torch.randn(m, k)
    x[0, 5] *= 100.0
    bias = torch.randn(n)
    ref = x.double() @ dequantize_weight(codes, scale).double().t() + bias.double()
    y = weight_only_gemv(x.cuda(), packed, w_bits, scale.cuda(), bias.cuda(), G, torch.float32)
    err = float((y.double().cpu() - ref).norm() / ref.norm())
    assert err <= 1e-5, err
    y16 = weight_only_gemv(x.cuda().bfloat16(), packed, w_bits, scale.cuda(), None, G, torch.bfloat16)
    ref16 = x.bfloat16().double() @ dequantize_weight(codes, scale).double().t()
    assert float((y16.double().cpu() - ref16).norm() / ref16.norm()) <= 1e-2


@pytest.mark.parametrize("w_bits", [3, 4, 8])
@pytest.mark.parametrize("m", [1, 3])
def test_weight_only_gemv_generic_fallback_matches_float64(w_bits: int, m: int) -> None:
    """K = 200, group 40: K % 32 != 0, so the generic kernel runs instead of the vectorized one."""
    _cuda()
    from adatsq.plugins.kernels.api import weight_only_gemv
    from adatsq.plugins.reference import dequantize_weight, quantize_weight_rtn

    n, k, group = 200, 200, 40
    codes, scale = quantize_weight_rtn(torch.randn(n, k), w_bits, group)
    packed = format_for_bits(w_bits).pack(codes).cuda()
    x = torch.randn(m, k)
    x[0, 5] *= 100.0
    bias = torch.randn(n)
    ref = x.double() @ dequantize_weight(codes, scale).double().t() + bias.double()
    y = weight_only_gemv(x.cuda(), packed, w_bits, scale.cuda(), bias.cuda(), group, torch.float32)
    err = float((y.double().cpu() - ref).norm() / ref.norm())
    assert err <= 1e-5, err
    y16 = weight_only_gemv(x.cuda().bfloat16(), packed, w_bits, scale.cuda(), None, group, torch.bfloat16)
    ref16 = x.bfloat16().double() @ dequantize_weight(codes, scale).double().t()
    assert float((y16.double().cpu() - ref16).norm() / ref16.norm()) <= 1e-2


@pytest.mark.parametrize("w_bits", [3, 4, 8])
def test_weight_only_over_many_tokens_runs_one_gemm(w_bits: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """An a = 16 layer over more than GEMV_MAX_TOKENS tokens (Flux's embedders) takes the float32 GEMM on the
    expanded codes, not the GEMV, and equals the float64 reference."""
    _cuda()
    from adatsq.plugins.kernels import api
    from adatsq.plugins.reference import dequantize_weight, quantize_weight_rtn

    monkeypatch.setattr(api, "weight_only_gemv", lambda *a, **kw: pytest.fail("the GEMV ran"))
    k, n, m = 256, 96, api.GEMV_MAX_TOKENS + 40
    codes, scale = quantize_weight_rtn(torch.randn(n, k), w_bits, G)
    packed = format_for_bits(w_bits).pack(codes)
    x = torch.randn(2, m // 2, k)
    bias = torch.randn(n)
    ref = x.double() @ dequantize_weight(codes, scale).double().t() + bias.double()
    y = api.qlinear_cuda(x.cuda(), packed.cuda(), scale.cuda(), bias.cuda(), 16, w_bits, G, False)
    assert y.shape == (2, m // 2, n) and y.dtype == torch.float32
    assert float((y.double().cpu() - ref).norm() / ref.norm()) <= 1e-5
    y16 = api.qlinear_cuda(x.cuda().bfloat16(), packed.cuda(), scale.cuda(), None, 16, w_bits, G, False)
    ref16 = x.bfloat16().double() @ dequantize_weight(codes, scale).double().t()
    assert y16.dtype == torch.bfloat16 and float((y16.double().cpu() - ref16).norm() / ref16.norm()) <= 1e-2


def test_registered_op_a16_runs_the_gemv(monkeypatch: pytest.MonkeyPatch) -> None:
    _cuda()
    import adatsq.plugins.op  # noqa: F401
    from adatsq.plugins.kernels import api
    from adatsq.plugins.reference import quantize_weight_rtn

    called = []
    real = api.weight_only_gemv
    monkeypatch.setattr(api, "weight_only_gemv", lambda *a, **kw: called.append(1) or real(*a, **kw))
    k, n = 3072, 96
    codes, scale = quantize_weight_rtn(torch.randn(n, k), 3, G)
    packed = format_for_bits(3).pack(codes)
    x = torch.randn(2, 1, k)
    bias = torch.randn(n)
    y_cpu = torch.ops.adatsq.qlinear(x, packed, scale, bias, 16, 3, G, False)
    y_gpu = torch.ops.adatsq.qlinear(x.cuda(), packed.cuda(), scale.cuda(), bias.cuda(), 16, 3, G, False)
    assert called and y_gpu.shape == y_cpu.shape
    assert float((y_gpu.cpu() - y_cpu).norm() / y_cpu.norm()) <= 1e-5

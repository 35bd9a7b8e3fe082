"""GPTQ on the GPU: the CUDA-graph column loop (calib/gptq._graphed_blocks) gives the same bits as the eager
loop on the same device, and both optimise what GPTQ optimises (error below round-to-nearest's)."""

from __future__ import annotations

import pytest
import torch

import adatsq.calib.gptq as gptq
from adatsq.plugins.reference import dequantize_weight, quantize_weight_rtn

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize(("n", "k", "bits"), [(256, 1024, 3), (384, 384, 4), (128, 128, 3)])
def test_graphed_columns_equal_the_eager_loop(
    n: int, k: int, bits: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = torch.Generator(device="cuda").manual_seed(n + k + bits)
    w = torch.randn(n, k, device="cuda", generator=g)
    x = torch.randn(4 * k, k, device="cuda", generator=g)
    x[:, :8] *= 20.0  # outlier channels
    h = (x.t() @ x).double()
    graphed = gptq.gptq_quantize(w, h, bits, 128)
    monkeypatch.setattr(gptq, "CUDA_GRAPHS", False)
    eager = gptq.gptq_quantize(w, h, bits, 128)
    assert torch.equal(graphed[0], eager[0])
    assert torch.equal(graphed[1], eager[1])
    rc, rs = quantize_weight_rtn(w, bits, 128)
    err = gptq.weighted_reconstruction_error(w, dequantize_weight(*graphed).double(), h)
    assert err < gptq.weighted_reconstruction_error(w, dequantize_weight(rc, rs).double(), h)


@pytest.mark.parametrize(("n", "k"), [(3072, 12288), (3072, 15360)])
def test_peak_memory_within_the_estimate(n: int, k: int) -> None:
    """Flux-dev's widest layers (ff.net.2, the single blocks' proj_out): the allocator's peak while one is
    quantized from its float32 Hessian stays within gptq_peak_bytes, the reserve the quantize stage keeps."""
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    g = torch.Generator(device="cuda").manual_seed(k)
    w = torch.randn(n, k, device="cuda", generator=g)
    x = torch.randn(2 * k, k, device="cuda", generator=g)
    h = x.t() @ x
    del x
    torch.cuda.reset_peak_memory_stats()
    codes, scales = gptq.gptq_quantize(w, h, 3, 64)
    peak = torch.cuda.max_memory_allocated() - base
    assert codes.shape == (n, k) and scales.shape == (n, k // 64)
    assert peak <= gptq.gptq_peak_bytes(n, k), (peak / 2**30, gptq.gptq_peak_bytes(n, k) / 2**30)

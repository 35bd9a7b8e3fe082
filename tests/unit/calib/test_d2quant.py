"""D²Quant's DSQ and DAC (calib/d2quant.py): the layers DSQ applies to, DSQ never fitting worse than plain
quantization and recovering a column-scaled weight, its exactness through QuantLinear's smooth_inv Mul, and
DAC's shift equal to the measured mean deviation, applied only where the deviation is mostly a shift."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adatsq.calib.d2quant import DAC_MIN_GAIN, DOWN_PROJECTION, dac_shift, dsq_error, dsq_scales
from adatsq.passes.quant_linear import InsertQuantLinearPass, LayerQuant, rotation_blocks
from adatsq.plugins.reference import dequantize_weight, quantize_weight_rtn

N, K = 48, 256


def test_down_projection_layers() -> None:
    down = [
        "transformer_blocks.0.ff.net.2",
        "transformer_blocks.3.ff_context.net.2",
        "single_transformer_blocks.1.proj_out",
        "blocks.2.ffn.net.2",
    ]
    other = [
        "transformer_blocks.0.ff.net.0.proj",
        "proj_out",
        "single_transformer_blocks.1.proj_mlp",
        "norm_out.linear",
    ]
    assert all(DOWN_PROJECTION.fullmatch(n) for n in down)
    assert not any(DOWN_PROJECTION.fullmatch(n) for n in other)


def _column_scaled(seed: int = 0) -> torch.Tensor:
    """W = Z·diag(c): per-input-channel magnitudes c spread over two decades (a GELU-fed down-projection's
    columns), which one scale per group of 32 columns cannot follow."""
    g = torch.Generator().manual_seed(seed)
    c = torch.logspace(-1, 1, K, dtype=torch.float64)[torch.randperm(K, generator=g)]
    return torch.randn(N, K, generator=g, dtype=torch.float64) * c


@pytest.mark.parametrize("bits", [3, 4])
def test_dsq_recovers_column_scales(bits: int) -> None:
    w = _column_scaled()
    eta = dsq_scales(w, bits, 32)
    plain = dsq_error(w, torch.ones(K, dtype=torch.float64), bits, 32)
    dual = dsq_error(w, eta, bits, 32)
    print(f"W{bits} ‖W − Ŵ‖²: one scale per group {plain:.3e}, dual scale {dual:.3e}")
    assert eta.dtype == torch.float64 and bool((eta > 0).all())
    assert dual < 0.7 * plain  # the columns within a group no longer share the largest one's step


def test_dsq_never_fits_worse_also_rotated_and_weighted() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N, K, generator=g, dtype=torch.float64)
    x = torch.randn(300, K, generator=g, dtype=torch.float64)
    x[:, :4] *= 20
    h = x.t() @ x
    blocks = rotation_blocks(K, True, 32)
    ones = torch.ones(K, dtype=torch.float64)
    for hessian in (None, h):
        eta = dsq_scales(w, 4, 32, blocks, hessian=hessian)
        assert dsq_error(w, eta, 4, 32, blocks, hessian=hessian) <= dsq_error(
            w, ones, 4, 32, blocks, hessian=hessian
        )


def test_dsq_layer_is_exact_through_the_smooth_mul() -> None:
    """x·diag(η)·(Q(W·diag(η)⁻¹))ᵀ: at 8 bits and unquantized activations only the weight rounding is left,
    and it is smaller than plain 8-bit rounding's on the column-scaled weight."""
    w = _column_scaled(1).float()
    x = torch.randn(64, K, generator=torch.Generator().manual_seed(2))
    lin = nn.Linear(K, N, bias=False)
    with torch.no_grad():
        lin.weight.copy_(w)
    eta = dsq_scales(w, 8, 32)
    errs = {}
    for name, smooth in (("plain", None), ("dsq", 1.0 / eta)):
        model = nn.Sequential(nn.Linear(K, N, bias=False))
        model[0].load_state_dict(lin.state_dict())
        InsertQuantLinearPass({"0": LayerQuant(8, True, 32, rotation=False, smooth=smooth)})(model)
        with torch.no_grad():
            y, ref = model(x), lin(x)
        errs[name] = float((y - ref).pow(2).sum() / ref.pow(2).sum())
    assert model[0].smooth_inv is not None and torch.allclose(model[0].smooth_inv.double(), eta, rtol=1e-6)
    print(f"W8A16 relative error: plain {errs['plain']:.2e}, dsq {errs['dsq']:.2e}")
    assert errs["dsq"] < 1e-4 and errs["dsq"] < errs["plain"]


def _deviation(shift: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4000, K, generator=g, dtype=torch.float64) + shift  # a non-zero mean input
    w = torch.randn(N, K, generator=g, dtype=torch.float64) / K**0.5
    codes, scale = quantize_weight_rtn(w.float(), 3, 32)
    return x, w, dequantize_weight(codes, scale).double() - w


def test_dac_shift_is_the_mean_deviation_where_it_dominates() -> None:
    x, _, dw = _deviation(shift=2.0)
    mean, h, total = x.mean(dim=0), x.t() @ x, float(x.shape[0])
    mu = dac_shift(mean, h, total, dw)
    d = x @ dw.t()  # the deviation x·(Ŵ − W)ᵀ per token and output channel
    measured = d.mean(dim=0)
    gain = measured.pow(2) / d.pow(2).mean(dim=0)
    keep = gain >= DAC_MIN_GAIN
    assert 0 < int(keep.sum()) < N  # some channels are mostly shifted, some mostly noise
    torch.testing.assert_close(mu[keep], measured[keep], rtol=1e-9, atol=1e-12)
    assert bool((mu[~keep] == 0).all())
    before, after = d.pow(2).mean(dim=0), (d - mu).pow(2).mean(dim=0)
    torch.testing.assert_close(before - after, mu.pow(2), rtol=1e-9, atol=1e-12)  # E[d²] − E[(d − μ)²] = μ²
    assert float(after.sum()) < 0.8 * float(before.sum())


def test_dac_leaves_a_zero_mean_deviation_alone() -> None:
    x, _, dw = _deviation(shift=0.0)
    mu = dac_shift(x.mean(dim=0), x.t() @ x, float(x.shape[0]), dw)
    assert int((mu != 0).sum()) == 0
    assert bool((dac_shift(x.mean(dim=0), x.t() @ x, 0.0, dw) == 0).all())

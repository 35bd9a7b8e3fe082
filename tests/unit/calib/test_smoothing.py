"""SmoothQuant's smoothing (calib/smoothing.py): the scales' formula and guards, the exact identities
x̂·Ŵᵀ = x·Wᵀ and H_x̂ = D·H·D, and (issue 15's sanity check) on a layer with outlier input channels both
smoothing and the Hadamard rotation lower the W4A4 output error against plain round-to-nearest."""

from __future__ import annotations

import pytest
import torch
from helpers.outliers import K, M, N, outlier_layer, w4a4_error
from torch import nn

from adatsq.calib.smoothing import SMOOTH_RANGE, smooth_hessian, smoothing_scales, spearman_rho, ssc_salience
from adatsq.passes.quant_linear import InsertQuantLinearPass, LayerQuant


def test_scales_formula_and_guards() -> None:
    a = torch.tensor([4.0, 0.0, 9.0, 1e12])
    w = torch.tensor([[1.0, 2.0, 0.0, 1.0], [-4.0, 1.0, 0.0, 1.0]])
    s = smoothing_scales(a, w, alpha=0.5)
    assert s.dtype == torch.float64
    assert s[0] == pytest.approx(2.0 / 2.0)  # sqrt(4) / sqrt(max|W| = 4)
    assert s[1] == 1.0 and s[2] == 1.0  # a channel never excited, a zero weight column: untouched
    assert s[3] == SMOOTH_RANGE[1]  # clamped
    assert torch.equal(smoothing_scales(a, w, alpha=0.0)[:1], torch.tensor([0.25], dtype=torch.float64))
    with pytest.raises(ValueError, match="alpha"):
        smoothing_scales(a, w, alpha=1.5)
    with pytest.raises(ValueError, match="channels"):
        smoothing_scales(a[:3], w)


def test_smoothed_hessian_is_that_of_the_smoothed_input() -> None:
    x, _, _ = outlier_layer()
    s = torch.rand(K, dtype=torch.float64) + 0.5
    h = x.double().t() @ x.double()
    xs = x.double() / s
    torch.testing.assert_close(smooth_hessian(h, s), xs.t() @ xs, rtol=1e-12, atol=1e-9)


def test_smoothing_and_rotation_beat_rtn_on_outlier_channels() -> None:
    x, lin, _ = outlier_layer()
    s = smoothing_scales(x.abs().amax(dim=0), lin.weight)
    rtn = w4a4_error(x, lin, rotation=False)
    smooth = w4a4_error(x, lin, rotation=False, smooth=s)
    rotated = w4a4_error(x, lin, rotation=True)
    both = w4a4_error(
        x, lin, rotation=True, smooth=s
    )  # ViDiT-Q's static (smoothing) + dynamic (rotation) balance
    print(
        f"W4A4 relative squared error: rtn {rtn:.3e}, smoothquant {smooth:.3e}, rotation {rotated:.3e}, "
        f"smoothing + rotation {both:.3e}"
    )
    assert smooth < 0.7 * rtn and rotated < 0.7 * rtn and both < 0.7 * rtn


def test_smoothed_layer_is_exact_at_16_bits() -> None:
    x, lin, _ = outlier_layer(1)
    s = smoothing_scales(x.abs().amax(dim=0), lin.weight)
    model = nn.Sequential(nn.Linear(K, N, bias=False))
    model[0].load_state_dict(lin.state_dict())
    InsertQuantLinearPass({"0": LayerQuant(8, True, 128, rotation=False, smooth=s)})(model)
    q = model[0]
    assert q.smooth_inv is not None and torch.allclose(q.smooth_inv.double(), 1 / s, rtol=1e-6)
    with torch.no_grad():
        y, ref = q(x), lin(x)
    assert float((y - ref).pow(2).sum() / ref.pow(2).sum()) < 1e-4  # only the 8-bit weight rounding is left


def test_spearman_rho_is_pearson_of_average_ranks() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(3)
    a = torch.randint(0, 6, (40,), generator=g).double()  # many ties
    b = a + torch.randint(0, 4, (40,), generator=g).double()
    assert spearman_rho(a, b) == pytest.approx(
        float(scipy_stats.spearmanr(a.numpy(), b.numpy())[0]), abs=1e-12
    )
    assert spearman_rho(a, a.exp()) == pytest.approx(1.0) and spearman_rho(a, -a) == pytest.approx(-1.0)
    assert spearman_rho(a, torch.ones(40)) == 0.0  # no spread: no correlation


def test_ssc_weighs_the_steps_whose_salience_opposes_the_weights() -> None:
    """PTQ4DiT's SSC: η = softmax(−ρ): a step whose activation salience ranks like the weight salience
    (ρ = 1) weighs e⁻¹/(e⁻¹ + e), one whose salience is the reverse (ρ = −1) e/(e⁻¹ + e); a step the
    calibration never ran (all zeros) weighs nothing."""
    w = torch.diag(torch.arange(1.0, 9.0))  # weight salience max|W_:,j| = j + 1
    aligned, opposed = torch.arange(1.0, 9.0) * 2, torch.arange(8.0, 0.0, -1.0)
    steps = torch.stack([aligned, opposed, torch.zeros(8)]).double()
    e = torch.tensor([-1.0, 1.0], dtype=torch.float64).exp()
    eta = e / e.sum()
    torch.testing.assert_close(ssc_salience(steps, w), eta[0] * aligned.double() + eta[1] * opposed.double())
    with pytest.raises(ValueError, match="input channels"):
        ssc_salience(steps[:, :4], w)


def test_ptq4dit_balancing_beats_rtn_on_outliers_that_move_over_the_steps() -> None:
    """Outlier channels that differ between two steps: the SSC-weighted balancing s_j = √(s(X_j)/max|W_j|)
    lowers the W4A4 output error on both steps' tokens against plain round-to-nearest."""
    g = torch.Generator().manual_seed(5)
    x0, lin, _ = outlier_layer(2)
    x1 = torch.randn(M, K, generator=g)
    x1[:, torch.randperm(K, generator=g)[:6]] *= 25.0
    steps = torch.stack([x0.abs().amax(dim=0), x1.abs().amax(dim=0)])
    s = smoothing_scales(ssc_salience(steps, lin.weight), lin.weight, 0.5)
    x = torch.cat([x0, x1])
    rtn, csb = w4a4_error(x, lin, rotation=False), w4a4_error(x, lin, rotation=False, smooth=s)
    print(f"W4A4 relative squared error: rtn {rtn:.3e}, ptq4dit (csb + ssc) {csb:.3e}")
    assert csb < 0.7 * rtn

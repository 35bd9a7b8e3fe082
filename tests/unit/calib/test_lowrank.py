"""SVDQuant's low-rank branch (calib/lowrank.py): the split is exact and optimal in rank, the branch runs in the
layer next to the quantized residual, the weight store keeps it, and (issue 15's sanity check) smoothing plus
the branch lowers the W4A4 error of a layer with outlier channels below plain round-to-nearest's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from adatsq.calib.lowrank import lowrank_split
from adatsq.calib.smoothing import smoothing_scales
from adatsq.passes.quant_linear import InsertQuantLinearPass, LayerQuant, quant_linears
from adatsq.passes.weight_store import LoadQuantizedWeightsPass, save_weight_store

K, N, M = 256, 64, 512


def test_split_is_exact_and_the_best_rank_r_part() -> None:
    w = torch.randn(N, K, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    down, up, e = lowrank_split(w, 8)
    assert down.shape == (K, 8) and up.shape == (N, 8) and e.shape == (N, K)
    torch.testing.assert_close(up @ down.t() + e, w, rtol=0, atol=1e-12)  # W = L_up·L_downᵀ + E
    sigma = torch.linalg.svdvals(w)
    assert float(torch.linalg.matrix_norm(e) ** 2) == pytest.approx(float((sigma[8:] ** 2).sum()), rel=1e-9)
    with pytest.raises(ValueError, match="rank"):
        lowrank_split(w, 0)


def _outlier_layer() -> tuple[torch.Tensor, nn.Linear]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(M, K, generator=g)
    x[:, torch.randperm(K, generator=g)[:6]] *= 40.0
    lin = nn.Linear(K, N, bias=True)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(N, K, generator=g) / K**0.5)
        lin.bias.copy_(torch.randn(N, generator=g))
    return x, lin


def _quantized(lin: nn.Linear, w_bits: int, **kw: object) -> nn.Module:
    model = nn.Sequential(nn.Linear(K, N))
    model[0].load_state_dict(lin.state_dict())
    InsertQuantLinearPass({"0": LayerQuant(w_bits, True, 128, rotation=False, **kw)})(model)  # type: ignore[arg-type]
    return model


def _err(model: nn.Module, lin: nn.Linear, x: torch.Tensor, a_bits: int) -> float:
    model[0].a_bits = a_bits
    with torch.no_grad():
        y, ref = model(x), lin(x)
    return float((y - ref).pow(2).sum() / ref.pow(2).sum())


def test_branch_runs_next_to_the_residual() -> None:
    x, lin = _outlier_layer()
    s = smoothing_scales(x.abs().amax(dim=0), lin.weight)
    down, up, _ = lowrank_split(lin.weight.double() * s, 16)
    q = _quantized(lin, 8, smooth=s, lowrank=(down, up))
    assert q[0].lowrank_down.shape == (K, 16) and "rank=16" in repr(q[0])
    assert _err(q, lin, x, 16) < 1e-4  # x̂·Eᵀ + (x̂·L_down)·L_upᵀ + b = x·Wᵀ + b up to the 8-bit rounding of E


def test_svdquant_beats_rtn_on_outlier_channels() -> None:
    x, lin = _outlier_layer()
    s = smoothing_scales(x.abs().amax(dim=0), lin.weight)
    down, up, _ = lowrank_split(lin.weight.double() * s, 32)
    rtn = _err(_quantized(lin, 4), lin, x, 4)
    svd = _err(_quantized(lin, 4, smooth=s, lowrank=(down, up)), lin, x, 4)
    print(f"W4A4 relative squared error: rtn {rtn:.3e}, svdquant {svd:.3e}")
    assert svd < 0.7 * rtn


def test_weight_store_keeps_the_branch(tmp_path: Path) -> None:
    x, lin = _outlier_layer()
    s = smoothing_scales(x.abs().amax(dim=0), lin.weight)
    down, up, _ = lowrank_split(lin.weight.double() * s, 4)
    q = _quantized(lin, 4, smooth=s, lowrank=(down, up))
    save_weight_store(tmp_path / "w.safetensors", q)
    fresh = nn.Sequential(nn.Linear(K, N))
    LoadQuantizedWeightsPass(tmp_path / "w.safetensors")(fresh)
    got = quant_linears(fresh)["0"]
    assert torch.equal(got.lowrank_down, q[0].lowrank_down) and torch.equal(got.smooth_inv, q[0].smooth_inv)
    got.a_bits = q[0].a_bits = 4
    with torch.no_grad():
        assert torch.equal(got(x), q[0](x))

"""A linear layer with a few outlier input channels (as in DiT activations), and its W4A4 output error under a
:class:`~adatsq.passes.quant_linear.LayerQuant` setting: the shared setup of the smoothing/rotation tests."""

from __future__ import annotations

import torch
from torch import nn

from adatsq.passes.quant_linear import InsertQuantLinearPass, LayerQuant

K, N, M = 256, 64, 512


def outlier_layer(seed: int = 0) -> tuple[torch.Tensor, nn.Linear, torch.Tensor]:
    """(x: M×K with 6 channels ×40, the float linear K → N, the outlier channels)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=g)
    outliers = torch.randperm(K, generator=g)[:6]
    x[:, outliers] *= 40.0
    lin = nn.Linear(K, N, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(N, K, generator=g) / K**0.5)
    return x, lin, outliers


def w4a4_error(x: torch.Tensor, lin: nn.Linear, **kw: object) -> float:
    """Relative squared output error of ``lin`` quantized at W4A4, group 128, with LayerQuant options ``kw``."""
    model = nn.Sequential(nn.Linear(K, N, bias=False))
    model[0].load_state_dict(lin.state_dict())
    InsertQuantLinearPass({"0": LayerQuant(4, True, 128, **kw)})(model)  # type: ignore[arg-type]
    model[0].a_bits = 4
    with torch.no_grad():
        y, ref = model(x), lin(x)
    return float((y - ref).pow(2).sum() / ref.pow(2).sum())

"""InsertQuantLinearPass: structure, folding invariance, numerics against the reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adatsq.passes.base import PassConditionError
from adatsq.passes.quant_linear import (
    InsertQuantLinearPass,
    LayerQuant,
    QuantLinear,
    rotates_input,
    set_activation_bits,
)
from adatsq.plugins.hadamard import is_supported_width, rotate
from adatsq.plugins.reference import channel_scale_as_groups, dequantize_weight, quantize_weight_rtn


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(96, 160)
        self.b = nn.Linear(160, 96, bias=False)
        self.mod = nn.Linear(96, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x))) + self.mod(x.mean(1, keepdim=True)).sum(-1, keepdim=True)


def test_structure_and_modified_flag() -> None:
    torch.manual_seed(0)
    model = _Toy()
    layers = {"a": LayerQuant(4, True, 32), "b": LayerQuant(4, True, 32), "mod": LayerQuant(4, False, 32)}
    result = InsertQuantLinearPass(layers)(model)
    assert result.modified
    assert all(isinstance(getattr(model, n), QuantLinear) for n in layers)
    assert model.a.rotate_input and model.b.rotate_input and not model.mod.rotate_input
    assert model.a.w_packed.dtype == torch.uint8 and model.a.w_packed.shape == (160, 48)
    assert model.a.w_scale.shape == (160, 3) and model.a.w_scale.dtype == torch.float16
    with pytest.raises(PassConditionError, match="not an nn.Linear"):
        InsertQuantLinearPass({"a": LayerQuant(4, True, 32)})(model)


def test_weights_are_folded_rotations() -> None:
    """The stored codes quantize W·R: dequantized, they undo to ≈ W after R (x·R·(W·R)ᵀ = x·Wᵀ)."""
    torch.manual_seed(1)
    model = _Toy()
    w = model.a.weight.detach().clone()
    InsertQuantLinearPass({"a": LayerQuant(8, True, 32)})(model)
    w_rot = dequantize_weight(model.a.codes, model.a.w_scale).double()
    assert torch.allclose(w_rot, rotate(w.double()), atol=2e-3)


def test_channel_scales_are_one_per_row_in_the_grouped_layout() -> None:
    """``weight_group="channel"``: round-to-nearest on one scale per output channel (the whole of K), stored as the
    N×K/G scales contract 1 expects with each row's scale repeated."""
    torch.manual_seed(3)
    model = _Toy()
    w_rot = rotate(model.a.weight.detach().double()).float()
    InsertQuantLinearPass({"a": LayerQuant(3, True, 32, weight_group="channel")})(model)
    scale = model.a.w_scale
    assert scale.shape == (160, 3) and torch.equal(scale, scale[:, :1].expand_as(scale))
    codes, row_scale = quantize_weight_rtn(w_rot, 3, 96)
    assert torch.equal(model.a.codes, codes) and torch.equal(scale[:, :1], row_scale)
    with pytest.raises(ValueError, match="N×1"):
        channel_scale_as_groups(scale, 96, 32)


def test_forward_close_to_float_and_bits_switch() -> None:
    torch.manual_seed(2)
    model = _Toy()
    x = torch.randn(2, 7, 96)
    with torch.no_grad():
        ref = model(x)
    InsertQuantLinearPass({n: LayerQuant(8, True, 32) for n in ("a", "b")})(model)
    set_activation_bits(model, {"a": 8, "b": 8})
    with torch.no_grad():
        y8 = model(x)
    set_activation_bits(model, {"a": 3, "b": 3})
    with torch.no_grad():
        y3 = model(x)

    def sqnr(y: torch.Tensor) -> float:
        return float(10 * torch.log10(ref.pow(2).sum() / (y - ref).pow(2).sum()))

    assert sqnr(y8) > 30
    assert 3 < sqnr(y3) < sqnr(y8) - 10


@pytest.mark.parametrize("k", [96, 160, 184, 232])  # 184 = 23·8 and 232 = 29·8 have no Hadamard rotation
@pytest.mark.parametrize("act_quantized", [True, False])
def test_rotation_is_decided_by_one_function(k: int, act_quantized: bool) -> None:
    """QuantLinear's rotation is ``LayerQuant.blocks``'s answer (``rotation_blocks`` on ``rotates_input``),
    and the GPTQ Hessians of the quantize stage rotate by the blocks of the same LayerQuant objects
    (CompileContext.layer_quant), so weights folded with R never meet unrotated Hessians (or the reverse)."""
    import inspect

    from adatsq.compiler.stages import quantize

    assert "ctx.layer_quant(" in inspect.getsource(quantize.run_quantize)
    assert rotates_input(k, act_quantized) == (act_quantized and is_supported_width(k))
    lq = LayerQuant(4, act_quantized, 32)
    assert lq.blocks(k) == ((k,) if rotates_input(k, act_quantized) else None)
    model = nn.Sequential(nn.Linear(k, 16))
    InsertQuantLinearPass({"0": lq})(model)
    assert model[0].rotate_input == rotates_input(k, act_quantized)
    assert model[0].rotate_input == (act_quantized and k in (96, 160))

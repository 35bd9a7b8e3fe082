"""Block-diagonal rotations (issue 13): a linear reading concatenated tensors (Flux's single-block proj_out:
[attention | MLP]) rotates each part with its own width's R, one ``adatsq::qlinear`` call per block."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from adatsq.compiler.context import CompileContext
from adatsq.compiler.settings import CompileConfig
from adatsq.passes.quant_linear import (
    InsertQuantLinearPass,
    LayerQuant,
    QuantLinear,
    quant_linears,
    rotation_blocks,
)
from adatsq.passes.weight_store import LoadQuantizedWeightsPass, load_weight_store, save_weight_store
from adatsq.plugins.hadamard import HadamardError, rotate, rotate_blocks, rotation_matrix
from adatsq.plugins.reference import qlinear_reference, quantize_weight_rtn


def test_rotation_blocks_rules() -> None:
    assert rotation_blocks(15360, True, 128, split=(3072, 12288)) == (3072, 12288)
    assert rotation_blocks(15360, True, 128) == (15360,)  # no split named: one block (60·2^8)
    assert rotation_blocks(15360, False, 128, split=(3072, 12288)) is None  # weight-only: never rotated
    assert rotation_blocks(15360, True, 128, rotation=False, split=(3072, 12288)) is None
    assert rotation_blocks(320, True, 128, split=(64, 256)) == (320,)  # 64 is not a whole number of groups
    assert rotation_blocks(320, True, 32, split=(64, 256)) == (64, 256)
    assert rotation_blocks(320, True, 32, split=(100, 220)) == (320,)  # 100 is no Hadamard width


def test_block_rotation_is_orthonormal_and_blockwise() -> None:
    x = torch.randn(5, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    r = torch.block_diag(rotation_matrix(32), rotation_matrix(64))
    torch.testing.assert_close(rotate_blocks(x, (32, 64)), x @ r, rtol=0, atol=1e-12)
    torch.testing.assert_close(r @ r.t(), torch.eye(96, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.equal(rotate_blocks(x, (96,)), rotate(x))
    with pytest.raises(HadamardError, match="do not add up"):
        rotate_blocks(x, (32, 32))


@pytest.mark.parametrize("a_bits", [3, 8, 16])
def test_split_layer_is_the_sum_of_its_blocks(a_bits: int) -> None:
    """y = Σ_b qlinear(x_b; W_b·R_b) + bias, exactly (the bias added once), and ≈ x·Wᵀ + b at 16 bits."""
    g = torch.Generator().manual_seed(1)
    lin = nn.Linear(96, 24)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(24, 96, generator=g) * 0.1)
        lin.bias.copy_(torch.randn(24, generator=g))
    model = nn.Sequential(lin)
    InsertQuantLinearPass({"0": LayerQuant(8, True, 32, split=(32, 64))})(model)
    q = model[0]
    assert isinstance(q, QuantLinear) and q.blocks == (32, 64) and q.rotate_input
    q.a_bits = a_bits
    x = torch.randn(7, 96, generator=g)
    (c0, s0), (c1, s1) = [(q.codes[:, :32], q.scales[:, :1]), (q.codes[:, 32:], q.scales[:, 1:])]
    want = qlinear_reference(x[:, :32], c0, s0, None, a_bits, 32) + qlinear_reference(
        x[:, 32:], c1, s1, q.bias, a_bits, 32
    )
    with torch.no_grad():
        y = q(x)
    assert torch.equal(y, want)
    if a_bits == 16:  # x̃·(W·R)ᵀ = x·Wᵀ: only the 8-bit weight rounding is left
        ref = (x @ lin.weight.t() + lin.bias).detach()
        assert float((y - ref).pow(2).sum() / ref.pow(2).sum()) < 1e-4


def test_weights_of_a_split_layer_are_w_times_the_block_rotation() -> None:
    w = torch.randn(8, 96, generator=torch.Generator().manual_seed(2))
    model = nn.Sequential(nn.Linear(96, 8, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(w)
    InsertQuantLinearPass({"0": LayerQuant(8, True, 32, split=(32, 64))})(model)
    r = torch.block_diag(rotation_matrix(32), rotation_matrix(64))
    codes, scale = quantize_weight_rtn((w.double() @ r).float(), 8, 32)
    assert torch.equal(model[0].codes, codes) and torch.equal(model[0].scales, scale)


def test_tiny_flux_splits_single_block_proj_out_and_the_store_keeps_it(tmp_path: Path) -> None:
    ctx = CompileContext(CompileConfig(model="tiny-flux", target=3.1, out=str(tmp_path / "o"), device="cpu"))
    qmodel = ctx.quantized_copy()
    layers = quant_linears(qmodel)
    split = {n: m.blocks for n, m in layers.items() if len(m.blocks) > 1}
    singles = [
        n
        for n in ctx.inventory.act_layers
        if n.startswith("single_transformer_blocks.") and n.endswith("proj_out")
    ]
    assert singles and set(split) == set(singles)
    block = qmodel.single_transformer_blocks[0]
    assert split[singles[0]] == (block.attn.to_q.out_features, block.proj_mlp.out_features)
    save_weight_store(tmp_path / "w.safetensors", qmodel)
    tensors, records, _ = load_weight_store(tmp_path / "w.safetensors")
    assert records[singles[0]]["blocks"] == list(split[singles[0]])
    assert f"{singles[0]}.w_packed_1" in tensors and f"{singles[0]}.w_scale_1" in tensors
    fresh = ctx.copy_for_quantized_layers()
    LoadQuantizedWeightsPass(tmp_path / "w.safetensors")(fresh)
    again = quant_linears(fresh)[singles[0]]
    assert again.blocks == split[singles[0]] and torch.equal(again.codes, layers[singles[0]].codes)
    x = torch.randn(3, again.in_features)
    with torch.no_grad():
        assert torch.equal(again(x), layers[singles[0]](x))

"""A layer with a block-diagonal rotation (Flux-dev's single-block proj_out: K = 3072 + 12288) on the GPU: one
registered-op call per block at the fast widths, summed, the bias once; at 16 bits it is x·Wᵀ + b up to the
weight rounding. The per-block kernels themselves are tests/gpu/test_qlinear_kernels.py's (3072, 12288)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adatsq.passes.quant_linear import InsertQuantLinearPass, LayerQuant

pytestmark = pytest.mark.gpu

SPLIT = (3072, 12288)


def _cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    pytest.importorskip("triton")


def _layer(w_bits: int, gen: torch.Generator) -> tuple[nn.Module, nn.Linear]:
    lin = nn.Linear(sum(SPLIT), 256)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(256, sum(SPLIT), generator=gen) * 0.01)
        lin.bias.copy_(torch.randn(256, generator=gen))
    model = nn.Sequential(nn.Linear(sum(SPLIT), 256))
    model[0].load_state_dict(lin.state_dict())
    InsertQuantLinearPass({"0": LayerQuant(w_bits, True, 128, split=SPLIT)})(model)
    return model, lin


@pytest.mark.parametrize(("a_bits", "w_bits"), [(3, 3), (4, 4), (8, 4), (16, 4)])
def test_split_layer_on_cuda_is_the_sum_of_its_block_ops(a_bits: int, w_bits: int) -> None:
    _cuda()
    gen = torch.Generator().manual_seed(torch.seed())
    model, lin = _layer(w_bits, gen)
    q = model[0].cuda()
    assert q.blocks == SPLIT
    q.a_bits = a_bits
    x = (torch.randn(133, sum(SPLIT), generator=gen) * 0.5).cuda()
    with torch.no_grad():
        y = q(x)
        parts = x.split(list(SPLIT), dim=-1)
        (p0, s0), (p1, s1) = q.packed_blocks()
        want = torch.ops.adatsq.qlinear(
            parts[0], p0, s0, None, a_bits, w_bits, 128, True
        ) + torch.ops.adatsq.qlinear(parts[1], p1, s1, q.bias, a_bits, w_bits, 128, True)
    assert torch.equal(y, want)
    if a_bits == 16:  # x̃·(W·R)ᵀ = x·Wᵀ up to the weight rounding
        ref = lin(x.cpu()).detach()
        err = float((y.cpu() - ref).pow(2).sum() / ref.pow(2).sum())
        assert err < (0.05 if w_bits == 3 else 0.02)


def test_split_layer_in_a_cuda_graph() -> None:
    _cuda()
    gen = torch.Generator().manual_seed(0)
    model, _ = _layer(3, gen)
    q = model[0].cuda()
    q.a_bits = 3
    x = torch.randn(64, sum(SPLIT), generator=gen).cuda()
    with torch.no_grad():
        eager = q(x)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            q(x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = q(x)
        graph.replay()
    assert torch.equal(out, eager)

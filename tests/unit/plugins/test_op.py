"""torch.ops.adatsq.qlinear: equals the reference per format, fake-tensor shapes, opcheck, torch.compile."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

import adatsq.plugins.op  # noqa: F401  (registers torch.ops.adatsq.qlinear)
from adatsq.plugins.formats import format_for_bits
from adatsq.plugins.hadamard import rotate
from adatsq.plugins.reference import qlinear_reference, quantize_weight_rtn

K, N, G = 256, 32, 128


def _layer(w_bits: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(N, K, generator=gen)
    codes, scales = quantize_weight_rtn(rotate(w), w_bits, G)
    return codes, scales, format_for_bits(w_bits).pack(codes), torch.randn(N, generator=gen)


@pytest.mark.parametrize("w_bits", [3, 4, 8])
@pytest.mark.parametrize("a_bits", [3, 4, 8, 16])
@pytest.mark.parametrize("rotate_input", [True, False])
def test_op_equals_reference(w_bits: int, a_bits: int, rotate_input: bool) -> None:
    codes, scales, packed, bias = _layer(w_bits)
    x = torch.randn(2, 5, K, generator=torch.Generator().manual_seed(1))
    y = torch.ops.adatsq.qlinear(x, packed, scales, bias, a_bits, w_bits, G, rotate_input)
    expected = qlinear_reference(x, codes, scales, bias, a_bits, G, rotate_input)
    assert y.shape == (2, 5, N)
    # exact on purpose: on the CPU the op runs qlinear_reference_packed → qlinear_reference, the very code
    # path of ``expected``, in this process and thread setting; no sum is ordered differently, no tie can flip
    assert torch.equal(y, expected)
    y_nobias = torch.ops.adatsq.qlinear(x, packed, scales, None, a_bits, w_bits, G, rotate_input)
    assert torch.equal(y_nobias, qlinear_reference(x, codes, scales, None, a_bits, G, rotate_input))


def test_output_dtype_follows_input() -> None:
    codes, scales, packed, bias = _layer(4)
    x = torch.randn(3, K, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    y = torch.ops.adatsq.qlinear(x, packed, scales, bias, 4, 4, G, True)
    assert y.dtype == torch.bfloat16
    expected = qlinear_reference(x, codes, scales, bias, 4, G).to(torch.bfloat16)
    assert torch.equal(y, expected)  # exact: the same code path (see test_op_equals_reference)


def test_fake_tensor_mode_shapes() -> None:
    with FakeTensorMode():
        x = torch.empty(3, 7, K, dtype=torch.float16)
        packed = torch.empty(N, K // 2, dtype=torch.uint8)
        scales = torch.empty(N, K // G, dtype=torch.float16)
        bias = torch.empty(N, dtype=torch.float16)
        y = torch.ops.adatsq.qlinear(x, packed, scales, bias, 4, 4, G, True)
        assert isinstance(y, FakeTensor)
        assert y.shape == (3, 7, N)
        assert y.dtype == torch.float16


@pytest.mark.parametrize("w_bits", [3, 4])
def test_opcheck(w_bits: int) -> None:
    """Schema, fake implementation and AOT dispatch agree with the real op (torch.library.opcheck)."""
    _, scales, packed, bias = _layer(w_bits)
    x = torch.randn(4, K, generator=torch.Generator().manual_seed(3))
    torch.library.opcheck(torch.ops.adatsq.qlinear.default, (x, packed, scales, bias, 4, w_bits, G, True))


def test_torch_compile_fullgraph() -> None:
    """Dynamo captures the op in one graph (aot_eager: traces through the fake impl, no C++ codegen)."""
    codes, scales, packed, bias = _layer(4)
    x = torch.randn(2, 5, K, generator=torch.Generator().manual_seed(4))

    def f(inp: torch.Tensor) -> torch.Tensor:
        return torch.ops.adatsq.qlinear(inp * 2.0, packed, scales, bias, 4, 4, G, True) + 1.0

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    y = compiled(x)
    # exact: aot_eager calls the same CPU op (the reference) on x·2, which is exact in float
    assert torch.equal(y, qlinear_reference(x * 2.0, codes, scales, bias, 4, G) + 1.0)

"""The tie-flip certification of tests/helpers/ties.py accepts tie flips and nothing else.

A toy of two QuantLinear layers stands in for "another implementation": the same torch model with chosen codes
replaced (``QuantizerTrace`` overrides), so every case is exact and machine-independent. Layer ``a`` is not
rotated and its first group is built so that x̃/s is EXACTLY 2.5 at one position (scale 1.75/7 = 0.25,
x = 0.625): the reference rounds it to 2 (half to even), an implementation whose sum landed a hair above would
give 3. That is a tie flip; the same change anywhere else, two steps at once, many codes at once, another bit
width, or diverged inputs are not.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
import torch
from helpers.ties import (
    STEP_MATCH,
    QuantizerTrace,
    certify_outputs,
    check_code_flips,
    reference_codes,
    tie_window,
)
from torch import nn

from adatsq.passes.quant_linear import QuantLinear, quant_linears
from adatsq.plugins.reference import quantize_weight_rtn

K = 32
TIE = 1  # flat index of the exact tie in layer a's codes (token 0, channel 1)
OFF_TIE = 2  # flat index of x̃/s = 1.0 exactly


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = QuantLinear(*quantize_weight_rtn(torch.randn(K, K, generator=g), 4, K), None, 4, K, False, 4)
        self.b = QuantLinear(
            *quantize_weight_rtn(torch.randn(16, K, generator=g), 4, K), None, 4, K, False, 4
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def _input() -> torch.Tensor:
    x = torch.rand(1, 6, K, generator=torch.Generator().manual_seed(1)) - 0.5
    x[0, 0, :3] = torch.tensor([1.75, 0.625, 0.25])  # absmax 1.75 → s = 0.25; x̃/s = 7, 2.5, 1.0
    x[0, 0, 3:] = x[0, 0, 3:].clamp(-1.7, 1.7)
    return x


def _run(
    model: nn.Module, x: torch.Tensor, overrides: Mapping[str, tuple[torch.Tensor, torch.Tensor]]
) -> tuple:
    """(output, layer → (input, codes)) of the toy with ``overrides``: the "other implementation"."""
    with QuantizerTrace(quant_linears(model), overrides) as trace, torch.no_grad():
        y = model(x).numpy()
    return y, {n: (t.x.numpy(), t.codes.numpy()) for n, t in trace.layers.items()}


def _certify(other: tuple, model: nn.Module, x: torch.Tensor, **kw: object):  # noqa: ANN202
    def run_torch() -> np.ndarray:
        with torch.no_grad():
            return model(x).numpy()

    return certify_outputs(other[0], run_torch, quant_linears(model), lambda: other, "toy", **kw)


def _flip(index: int, code: float) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {"a": (torch.tensor([index]), torch.tensor([code]))}


def test_exact_tie_is_where_the_toy_says() -> None:
    codes, scale, ratios = reference_codes(_input().reshape(-1, K), 4, K)
    assert float(scale[0, 0]) == 0.25
    assert float(ratios.view(-1)[TIE]) == 2.5 and float(codes.view(-1)[TIE]) == 2.0  # half to even
    assert float(ratios.view(-1)[OFF_TIE]) == 1.0 and float(codes.view(-1)[OFF_TIE]) == 1.0


def test_a_tie_flip_is_certified() -> None:
    model, x = _Toy().eval(), _input()
    cert = _certify(_run(model, x, _flip(TIE, 3.0)), model, x)
    assert cert.err > STEP_MATCH  # the flip matters, so it had to be explained
    assert [(f.layer, f.codes, f.ratios) for f in cert.flips] == [("a", 1, [2.5])]
    assert cert.residual == 0.0  # with that code aligned, the reference IS the other implementation


def test_agreement_needs_no_certificate() -> None:
    model, x = _Toy().eval(), _input()

    def no_tap() -> tuple:
        raise AssertionError("the tapped graph is only run to explain a difference")

    cert = certify_outputs(
        _run(model, x, {})[0], lambda: model(x).detach().numpy(), quant_linears(model), no_tap, "toy"
    )
    assert cert.err == 0.0 and cert.flips == []


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (_flip(OFF_TIE, 2.0), "from a rounding boundary"),  # one step, but x̃/s = 1.0 is no tie
        (_flip(TIE, 4.0), "differ by up to 2.0 steps"),  # at the tie, but two steps
        ({"a": (torch.arange(8, 16), torch.full((8,), 7.0))}, "codes differ .more than 3.: not tie flips"),
    ],
)
def test_what_is_not_a_tie_flip(overrides: dict, match: str) -> None:
    model, x = _Toy().eval(), _input()
    other = _run(model, x, overrides)
    with pytest.raises(AssertionError, match=match):
        _certify(other, model, x)


def test_another_bit_width_is_not_a_tie_flip() -> None:
    model, x = _Toy().eval(), _input()
    model.a.a_bits = 8
    other = _run(model, x, {})
    model.a.a_bits = 4
    with pytest.raises(AssertionError, match="not tie flips"):
        _certify(other, model, x)


def test_diverged_inputs_are_not_a_tie_flip() -> None:
    model, x = _Toy().eval(), _input()
    other = _run(model, x + 1e-2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2)), {})
    with pytest.raises(AssertionError, match="divergence before any quantizer"):
        _certify(other, model, x)


def test_output_must_be_that_of_the_tapped_graph() -> None:
    model, x = _Toy().eval(), _input()
    y, layers = _run(model, x, _flip(TIE, 3.0))
    with pytest.raises(AssertionError, match="not that of the tapped graph"):
        certify_outputs(
            y * 1.01, lambda: model(x).detach().numpy(), quant_linears(model), lambda: (y, layers), "toy"
        )


def test_check_code_flips_window_scales_with_qmax() -> None:
    ref = torch.tensor([[2.0, 100.0]])
    assert check_code_flips(ref, torch.tensor([[2.5 - 5e-5, 100.5 - 1e-3]]), ref, 8, "none") == []
    got = torch.tensor([[3.0, 101.0]])
    near = torch.tensor([[2.5 - 0.9 * tie_window(4, 2), 100.5 - 0.9 * tie_window(8, 2)]])
    assert len(check_code_flips(ref[:, :1], near[:, :1], got[:, :1], 4, "4-bit")) == 1
    assert len(check_code_flips(ref[:, 1:], near[:, 1:], got[:, 1:], 8, "8-bit")) == 1
    far = torch.tensor([[2.5 - 2 * tie_window(4, 2)]])
    with pytest.raises(AssertionError, match="not a tie flip"):
        check_code_flips(ref[:, :1], far, got[:, :1], 4, "4-bit")


class _SharedToy(nn.Module):
    """``a1`` and ``a2`` read one x, then ``b`` reads both; ``fuse()`` makes a1/a2 one FusedProjection."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(2)
        self.a1, self.a2 = (
            QuantLinear(*quantize_weight_rtn(torch.randn(K, K, generator=g), 4, K), None, 4, K, False, 4)
            for _ in range(2)
        )
        self.b = QuantLinear(
            *quantize_weight_rtn(torch.randn(16, 2 * K, generator=g), 4, K), None, 4, K, False, 4
        )
        self.fused: nn.Module | None = None

    def fuse(self) -> _SharedToy:
        from adatsq.passes.fuse_projections import FusedProjection

        self.fused = FusedProjection([self.a1, self.a2])
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fused(x) if self.fused is not None else torch.cat([self.a1(x), self.a2(x)], -1)
        return self.b(torch.relu(h))


def test_a_fused_op_is_traced_under_its_members() -> None:
    """A fused op's one quantizer call is recorded under each member's name: the same records (input,
    codes, bits) as the unfused members' calls, so a fused torch model certifies against per-layer taps."""
    from helpers.ties import traced_modules

    x = _input()
    plain, fused = _SharedToy(), _SharedToy().fuse()
    y_plain, layers_plain = _run(plain, x, {})
    with QuantizerTrace(traced_modules(fused)) as trace, torch.no_grad():
        y_fused = fused(x).numpy()
    assert list(trace.layers) == ["a1", "a2", "b"]  # execution order, the fused op as its members
    assert np.array_equal(y_fused, y_plain)
    for name, (x_p, codes_p) in layers_plain.items():
        assert np.array_equal(trace.layers[name].x.numpy(), x_p)
        assert np.array_equal(trace.layers[name].codes.numpy(), codes_p)
    # the members' tie flip (one x, so both members flip together) certifies against the fused reference
    flip = (torch.tensor([TIE]), torch.tensor([3.0]))
    other = _run(plain, x, {"a1": flip, "a2": flip})
    assert other[1]["a1"][1].reshape(-1)[TIE] == 3.0

    def run_fused() -> np.ndarray:
        with torch.no_grad():
            return fused(x).numpy()

    cert = certify_outputs(other[0], run_fused, traced_modules(fused), lambda: other, "fused toy")
    assert [(f.layer, f.codes) for f in cert.flips] == [("a1", 1), ("a2", 1)]
    assert cert.err > STEP_MATCH and cert.residual <= STEP_MATCH
    # a flip in one member only is no tie flip of the fused op's one input: never certified
    lone = _run(plain, x, {"a1": flip})
    with pytest.raises(AssertionError):
        certify_outputs(lone[0], run_fused, traced_modules(fused), lambda: lone, "fused toy, one member")

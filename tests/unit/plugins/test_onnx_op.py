"""The ``adatsq::QLinear`` ONNX node: its function body run by ONNX Runtime equals the torch reference.

"Equals" is stated as exact facts a rounding tie cannot break (:mod:`helpers.ties`). The body rotates with
MatMuls that sum in another order than torch's ``rotate`` (and differently per CPU, kernel and thread count),
so where x̃/s sits on a half-integer one code may round the other way, and one such flip moves a small
layer's output by ~1e-2. So, with the body's own codes and scales exposed (a debug variant of the SAME body):
(1) its codes are the reference's except tie flips (:func:`helpers.ties.check_code_flips`), its scales the
reference's to 1e-5; (2) its output is exactly the product of its own codes (≤ 1e-5, float summation only);
(3) when no code flipped, its output is the reference's to 1e-5. Rounding itself (half to even) is checked
exactly at constructed ties, with the rotation off so that both sides round the very same values.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers.ort_session import ort_session
from helpers.runs import TappedGraph
from helpers.ties import certify_outputs, check_code_flips, max_flips, reference_codes
from onnx import TensorProto

import adatsq.plugins.op  # noqa: F401  (registers torch.ops.adatsq.qlinear)
from adatsq.plugins import onnx_op
from adatsq.plugins.formats import format_for_bits
from adatsq.plugins.hadamard import rotate
from adatsq.plugins.reference import (
    effective_group,
    qlinear_reference,
    qmax,
    quantize_activation,
    quantize_weight_rtn,
)

WIDTHS = (96, 160, 256, 480)  # 12·8, 20·8, 2^8, 60·8
N_OUT = 24
X3 = ("batch", "tokens", "K")


_session = ort_session
DEBUG_OUTPUTS = [("x_codes", TensorProto.FLOAT), ("x_scale_q", TensorProto.FLOAT)]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / max(np.linalg.norm(b.astype(np.float64)), 1e-30))


@functools.cache
def _layer(
    k: int, w_bits: int, group: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes int8 N×K, packed bytes, fp16 scales, bias) of a random RTN-quantized weight."""
    g = torch.Generator().manual_seed(seed)
    codes, scale = quantize_weight_rtn(torch.randn(N_OUT, k, generator=g), w_bits, group)
    packed = format_for_bits(w_bits).pack(codes)
    assert torch.equal(format_for_bits(w_bits).unpack(packed, k), codes)
    return codes, packed, scale, torch.randn(N_OUT, generator=g)


def _activations(k: int, seed: int, tokens: int = 9) -> torch.Tensor:
    """[2, tokens, K] with ×100 outlier channels in some rows and one all-zero row."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, tokens, k, generator=g)
    x[0, 1, 3] *= 100.0
    x[1, 4, k // 2 :: 17] *= 100.0
    x[1, 2] = 0.0
    return x


def _product_of_codes(
    codes: np.ndarray,
    scales: np.ndarray,
    w_codes: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
) -> np.ndarray:
    """float64 Σ_g s_x[:, g]·s_w[:, g]·(q_x,g·q_w,gᵀ) + b of GIVEN activation codes (M×K) and scales (M×K/G)."""
    m, k = codes.shape
    groups = w_scale.shape[-1]
    qx = codes.astype(np.float64).reshape(m, groups, k // groups)
    qw = w_codes.double().numpy().reshape(-1, groups, k // groups)
    sw = w_scale.double().numpy()
    y = np.einsum("mgk,ngk->mng", qx, qw) * scales.reshape(m, 1, groups) * sw[None]
    return y.sum(-1) + (0.0 if bias is None else bias.double().numpy())


def _body_run(
    packed: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    x: torch.Tensor,
    **attrs: object,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, codes M×K, scales M×K/G) of the body on ``x``: y from the shipped node, codes and scales from the
    debug variant of the same body, whose y must be the shipped node's."""
    args = (packed.numpy(), scale.numpy(), None if bias is None else bias.numpy())
    feeds = {"x": x.numpy()}
    y = _session(onnx_op.make_qlinear_model(*args, **attrs)).run(None, feeds)[0]
    debug = onnx_op.qlinear_function(outputs=("y", "x_codes", "x_scale_q"))
    model = onnx_op.make_qlinear_model(*args, **attrs, functions=[debug], extra_outputs=DEBUG_OUTPUTS)
    y_dbg, codes, scales = _session(model).run(None, feeds)
    assert np.array_equal(y_dbg, y), "the debug variant of the body computes another y"
    k = x.shape[-1]
    return y, codes.reshape(-1, k), scales.reshape(codes.reshape(-1, k).shape[0], -1)


@pytest.mark.parametrize("a_bits", [3, 4, 8, 16])
@pytest.mark.parametrize("w_bits", [3, 4, 8])
def test_golden_against_reference(a_bits: int, w_bits: int) -> None:
    worst = 0.0
    flipped = 0
    for k in WIDTHS:
        for group in (32, 128):  # 128 does not divide 96, 160, 480: one group per token there
            seed = 1000 * k + 10 * group + w_bits
            codes, packed, scale, bias = _layer(k, w_bits, group, seed)
            use_bias = (k // 32 + group) % 2 == 0  # alternate with / without bias
            b = bias if use_bias else None
            x = _activations(k, seed + a_bits)
            attrs = dict(
                k=k, a_bits=a_bits, w_bits=w_bits, group_size=group, x_shape=("batch", "tokens", "K")
            )
            y, x_codes, x_scales = _body_run(packed, scale, b, x, **attrs)
            ref = qlinear_reference(x, codes, scale, b, a_bits, group).numpy()
            assert y.shape == (2, 9, N_OUT)
            assert y.dtype == np.float32
            assert np.isfinite(y).all()
            assert np.allclose(y[1, 2], 0.0 if b is None else b.numpy(), atol=1e-6), "zero row must give bias"
            err = _rel(y, ref)
            if a_bits < 16:
                q_ref, s_ref, ratios = reference_codes(rotate(x.reshape(-1, k)), a_bits, group)
                flips = check_code_flips(
                    q_ref, ratios, x_codes, a_bits, f"K={k} G={group} a{a_bits}w{w_bits}"
                )
                flipped += len(flips)
                assert np.allclose(x_scales, s_ref.numpy(), rtol=1e-5, atol=0)
                own = _rel(y, _product_of_codes(x_codes, x_scales, codes, scale, b).reshape(y.shape))
                assert own <= 1e-5, (k, group, own)  # exact integer part: float summation order only
                if flips:
                    print(
                        f"K={k} G={group}: certified tie flips at x̃/s = {flips}, rel err vs reference {err:.1e}"
                    )
                    continue
            assert err <= 1e-5, (k, group, err)
            worst = max(worst, err)
    print(f"a{a_bits}w{w_bits}: worst norm-wise relative error {worst:.2e} ({flipped} certified tie flips)")


def test_unrotated_layer_and_int8_bytes() -> None:
    """rotate=0 (identity [[1]] factors) and w re-typed to INT8 bytes read the same."""
    k, group = 160, 32
    codes, packed, scale, bias = _layer(k, 4, group, 7)
    model = onnx_op.make_qlinear_model(
        packed.numpy(), scale.numpy(), bias.numpy(), k=k, a_bits=4, w_bits=4, group_size=group, rotate=False,
        x_shape=X3,
    )  # fmt: skip
    node = model.graph.node[0]
    assert list(node.input[4:]) == ["adatsq_hadamard_1", "adatsq_hadamard_1"]
    assert onnx.helper.get_node_attr_value(node, "rotation_m") == 1
    x = _activations(k, 8)
    y = _session(model).run(None, {"x": x.numpy()})[0]
    ref = qlinear_reference(x, codes, scale, bias, 4, group, rotate_input=False).numpy()
    # Tight, not certified: with the rotation off x̃ = x exactly on both sides (products with [[1]], division
    # by √1), and absmax/qmax and x/s are single correctly rounded operations, so both sides round the SAME
    # values and no code can differ; only the float sum over groups is ordered differently.
    assert _rel(y, ref) <= 1e-6
    onnx_op.packed_weights_as_int8(model)
    assert next(t for t in model.graph.initializer if t.name == "w").data_type == TensorProto.INT8
    onnx.checker.check_model(model, full_check=True)
    # exact: the same body in the same process and thread setting; only the weight's byte type differs
    assert np.array_equal(_session(model).run(None, {"x": x.numpy()})[0], y)


def test_float16_activations_keep_their_dtype() -> None:
    k, group = 96, 32
    codes, packed, scale, bias = _layer(k, 3, group, 3)
    x = _activations(k, 4).half()
    y, x_codes, x_scales = _body_run(
        packed,
        scale,
        bias,
        x,
        k=k,
        a_bits=8,
        w_bits=3,
        group_size=group,
        x_dtype=TensorProto.FLOAT16,
        x_shape=X3,
    )
    assert y.dtype == np.float16
    ref = torch.ops.adatsq.qlinear(x, packed, scale, bias, 8, 3, group, True)
    assert ref.dtype == torch.float16
    q_ref, _, ratios = reference_codes(rotate(x.reshape(-1, k).float()), 8, group)
    flips = check_code_flips(q_ref, ratios, x_codes, 8, "float16 input")
    # y is its own codes' product rounded to float16 (2^-11 relative per element)
    own = _product_of_codes(x_codes, x_scales, codes, scale, bias).reshape(y.shape)
    assert _rel(y.astype(np.float32), own) <= 1e-3
    if not flips:
        assert _rel(y.astype(np.float32), ref.float().numpy()) <= 1e-3


@pytest.mark.parametrize("a_bits", [3, 4, 8])
def test_activation_codes_equal_reference(a_bits: int) -> None:
    """The body's integer codes (a debug output of the SAME body) against ``quantize_activation``."""
    k, group, tokens = 480, 32, 2200  # ~1.06 M codes
    _, packed, scale, _ = _layer(k, 4, group, 11)
    debug = onnx_op.qlinear_function(outputs=("y", "x_codes", "x_scale_q"))
    model = onnx_op.make_qlinear_model(
        packed.numpy(), scale.numpy(), None, k=k, a_bits=a_bits, w_bits=4, group_size=group,
        x_shape=X3, functions=[debug], extra_outputs=[("x_codes", TensorProto.FLOAT), ("x_scale_q", TensorProto.FLOAT)],
    )  # fmt: skip
    g = torch.Generator().manual_seed(a_bits)
    x = torch.randn(1, tokens, k, generator=g) * torch.exp(torch.randn(1, 1, k, generator=g))
    x[0, ::50, 7] *= 100.0
    x[0, 5] = 0.0
    _, codes, scales = _session(model).run(None, {"x": x.numpy()})
    ref_codes, ref_scales, ratios = reference_codes(rotate(x.reshape(-1, k)), a_bits, group)
    codes = codes.reshape(tokens, k)
    assert np.array_equal(codes, np.round(codes))
    assert np.abs(codes).max() <= 2 ** (a_bits - 1)
    # every mismatch a certified tie flip (one step, x̃/s on a boundary), and rare
    flips = check_code_flips(
        ref_codes, ratios, codes, a_bits, f"a{a_bits} codes", limit=max_flips(codes.size)
    )
    print(f"a{a_bits}: {len(flips)} of {codes.size} codes are certified tie flips")
    # scales: absmax/qmax of the rotated values, whose float error between implementations is ~1e-6 relative
    assert np.allclose(scales.reshape(tokens, k // group), ref_scales.numpy(), rtol=1e-5, atol=0)
    assert (codes[5] == 0).all()
    assert np.allclose(scales.reshape(tokens, -1)[5], 1.0)


@pytest.mark.parametrize("a_bits", [3, 4, 8])
def test_exact_ties_round_half_to_even(a_bits: int) -> None:
    """Contract 1 rounds half to even. At x̃/s EXACTLY k + ½ (rotation off, so x̃ = x on both sides, and the
    scale 0.25 = absmax/qmax is exact), the body's codes equal numpy's and the reference's bit for bit."""
    q = qmax(a_bits)
    group = 16
    halves = [j + 0.5 for j in range(-q, q)][: group - 1]  # |x̃/s| ≤ qmax: absmax stays q·0.25
    row = np.zeros(2 * group, np.float32)
    row[:group] = [q, *halves, *[0.0] * (group - 1 - len(halves))]
    row[group:] = -row[:group]
    x = torch.from_numpy(np.stack([row, row[::-1].copy()]) * np.float32(0.25)).reshape(1, 2, 2 * group)
    k = x.shape[-1]
    _, packed, scale, _ = _layer(k, 4, group, 21)
    _, codes, scales = _body_run(
        packed, scale, None, x, k=k, a_bits=a_bits, w_bits=4, group_size=group, rotate=False, x_shape=X3
    )
    ref_codes, ref_scales = quantize_activation(x.reshape(-1, k), a_bits, group)
    expected = np.clip(np.round(x.reshape(-1, k).numpy() / 0.25), -q - 1, q)  # numpy rounds half to even
    assert effective_group(k, group) == group and np.all(scales == 0.25) and torch.all(ref_scales == 0.25)
    assert np.array_equal(codes, expected)
    assert np.array_equal(ref_codes.numpy(), expected)


def test_checker_shape_inference_and_function_shape() -> None:
    k = 480
    _, packed, scale, bias = _layer(k, 3, 32, 5)
    model = onnx_op.make_qlinear_model(
        packed.numpy(), scale.numpy(), bias.numpy(), k=k, a_bits=3, w_bits=3, group_size=32,
        x_shape=("batch", "tokens", "K"),
    )  # fmt: skip
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 10
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 21), ("adatsq", 1)}

    model.graph.output[0].type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    out = inferred.graph.output[0].type.tensor_type
    assert out.elem_type == TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in out.shape.dim] == ["batch", "tokens", N_OUT]

    node = model.graph.node[0]
    assert (node.domain, node.op_type) == ("adatsq", "QLinear")
    assert list(node.input) == ["x", "w", "w_scale", "bias", "adatsq_hadamard_60", "adatsq_hadamard_8"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {
        "plugin_version": b"1", "plugin_namespace": b"adatsq", "a_bits": 3, "w_bits": 3,
        "group_size": 32, "rotate": 1, "rotation_m": 60,
    }  # fmt: skip
    (fn,) = model.functions
    assert (fn.domain, fn.name) == ("adatsq", "QLinear")
    assert set(fn.attribute) == set(attrs)
    used = {n.op_type for n in fn.node}
    assert all(n.domain == "" for n in fn.node)
    assert not used & {"If", "Loop", "Scan"}
    assert {"Round", "Clip", "ReduceMax", "MatMul", "ReduceSum", "Gather"} <= used


def test_helpers_validate_and_are_idempotent() -> None:
    with pytest.raises(ValueError, match="a_bits"):
        onnx_op.qlinear_attributes(a_bits=5, w_bits=4, group_size=32, k=64, rotate=True)
    with pytest.raises(ValueError, match="w_bits"):
        onnx_op.qlinear_attributes(a_bits=4, w_bits=2, group_size=32, k=64, rotate=True)
    assert (
        onnx_op.qlinear_attributes(a_bits=4, w_bits=4, group_size=128, k=160, rotate=True)["group_size"]
        == 160
    )
    _, packed, scale, _ = _layer(96, 4, 32, 1)
    model = onnx_op.make_qlinear_model(
        packed.numpy(), scale.numpy(), None, k=96, a_bits=4, w_bits=4, group_size=32
    )
    before = model.SerializeToString()
    onnx_op.add_qlinear_functions(model)
    assert model.SerializeToString() == before
    for n in (1, 8, 12, 20, 60):
        h = onnx_op.hadamard_base(n)
        assert np.array_equal(h @ h.T, n * np.eye(n, dtype=np.float32))
    low = onnx.helper.make_model(
        onnx.helper.make_graph([], "g", [], []), opset_imports=[onnx.helper.make_opsetid("", 20)]
    )
    with pytest.raises(ValueError, match="opset"):
        onnx_op.add_qlinear_functions(low)


def test_polygraphy_inspect_and_run(tmp_path: Path) -> None:
    exe = shutil.which("polygraphy")
    if exe is None:
        pytest.skip("polygraphy not installed")
    _, packed, scale, bias = _layer(160, 4, 32, 9)
    model = onnx_op.make_qlinear_model(
        packed.numpy(),
        scale.numpy(),
        bias.numpy(),
        k=160,
        a_bits=4,
        w_bits=4,
        group_size=32,
        x_shape=(3, 160),
    )
    path = tmp_path / "qlinear.onnx"
    onnx.save(model, path)
    inspect = subprocess.run(
        [exe, "inspect", "model", str(path), "--show", "layers", "attrs"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert inspect.returncode == 0, inspect.stderr
    assert "QLinear" in inspect.stdout
    assert "plugin_namespace = adatsq" in inspect.stdout
    outputs = tmp_path / "out.json"
    run = subprocess.run(
        [exe, "run", str(path), "--onnxrt", "--save-outputs", str(outputs)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PASSED" in run.stdout + run.stderr
    assert outputs.exists()


class _QLinearLayer(torch.nn.Module):
    def __init__(self, k: int, n: int, a_bits: int, w_bits: int, group: int, bias: bool, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        codes, scale = quantize_weight_rtn(torch.randn(n, k, generator=g), w_bits, group)
        self.register_buffer("w_packed", format_for_bits(w_bits).pack(codes))
        self.register_buffer("w_scale", scale)
        self.register_buffer("bias", torch.randn(n, generator=g) if bias else None)
        self.cfg = (a_bits, w_bits, group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a_bits, w_bits, group = self.cfg
        return torch.ops.adatsq.qlinear(
            x, self.w_packed, self.w_scale, self.bias, a_bits, w_bits, group, True
        )


class _TwoLayers(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = _QLinearLayer(96, 160, a_bits=4, w_bits=4, group=32, bias=True, seed=1)
        self.fc2 = _QLinearLayer(160, 64, a_bits=3, w_bits=3, group=128, bias=False, seed=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.nn.functional.gelu(self.fc1(x)))


def test_dynamo_export_emits_qlinear_nodes() -> None:
    net = _TwoLayers().eval()
    tokens = torch.export.Dim("tokens", min=1, max=4096)
    program = torch.onnx.export(
        net,
        (torch.randn(2, 7, 96),),
        dynamo=True,
        opset_version=21,
        custom_translation_table=onnx_op.export_translation_table(),
        dynamic_shapes=({1: tokens},),
        verbose=False,
    )
    model = onnx_op.finalize_exported_model(program.model_proto)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 10
    nodes = [n for n in model.graph.node if n.op_type == "QLinear"]
    assert len(nodes) == 2
    assert all(n.domain == "adatsq" for n in nodes)
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in nodes]
    assert attrs[0] == {
        "plugin_version": b"1", "plugin_namespace": b"adatsq", "a_bits": 4, "w_bits": 4,
        "group_size": 32, "rotate": 1, "rotation_m": 12,
    }  # fmt: skip
    assert (attrs[1]["a_bits"], attrs[1]["w_bits"], attrs[1]["group_size"], attrs[1]["rotation_m"]) == (
        3,
        3,
        160,
        20,
    )
    assert nodes[1].input[3] == ""  # no bias
    assert [n.input[4:] for n in nodes] == [
        ["adatsq_hadamard_12", "adatsq_hadamard_8"],
        ["adatsq_hadamard_20", "adatsq_hadamard_8"],
    ]
    hadamards = sorted(t.name for t in model.graph.initializer if t.name.startswith("adatsq_hadamard_"))
    assert hadamards == ["adatsq_hadamard_12", "adatsq_hadamard_20", "adatsq_hadamard_8"]
    assert [(f.domain, f.name) for f in model.functions] == [("adatsq", "QLinear")]
    weights = {t.name: t.data_type for t in model.graph.initializer}
    assert weights[nodes[0].input[1]] == TensorProto.UINT8
    assert weights[nodes[0].input[2]] == TensorProto.FLOAT16

    x = torch.randn(2, 13, 96)  # another token count than the example
    x[0, 3] = 0.0
    x[1, 5, 11] = 300.0
    feeds = {model.graph.input[0].name: x.numpy()}
    y = _session(model).run(None, feeds)[0]
    assert y.shape == (2, 13, 64)
    # fc2 reads ORT's GELU of fc1, not torch's: a code of either layer on a tie may round the other way,
    # so the comparison is certified (torch reproduces y once such codes are ORT's), at the old 1e-5
    tapped_model, taps = onnx_op.tap_activation_codes(model)
    assert [name for name in taps] == [n.name or n.output[0] for n in nodes]
    tapped = TappedGraph(_session(tapped_model), {name: (t[0], t[1]) for name, t in taps.items()})

    def run_torch() -> np.ndarray:
        with torch.no_grad():
            return net(x).numpy()

    modules = dict(zip(taps, (net.fc1, net.fc2)))
    cert = certify_outputs(y, run_torch, modules, lambda: tapped.run(feeds), "dynamo export", match=1e-5)
    print(f"dynamo export: norm-wise relative error {cert.err:.2e}, certified tie flips {cert.flips}")


def test_importing_module_needs_no_tensorrt() -> None:
    code = "import adatsq.plugins.onnx_op, sys; sys.exit('tensorrt' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0

"""WeightOnlyDequantPass: weight-only int4 QLinear nodes become blocked DequantizeLinear + MatMul; the result
equals the torch reference in ONNX Runtime; other nodes are untouched; the weight bytes stay the stored ones.

Comparisons without activation quantization (a_bits 16) are plain float tolerances: no rounding tie is
involved. The real exported graph keeps activation-quantized layers, so there the comparison with torch is
certified (:func:`helpers.ties.certify_outputs`): a code on a rounding tie may round differently in ORT.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers.ort_session import ort_session
from helpers.runs import tapped_session
from helpers.ties import certify_outputs
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import save_file

from adatsq.passes.onnx import CleanupPass, ExternalizeWeightsPass, WeightOnlyDequantPass
from adatsq.passes.onnx.cleanup import checkable
from adatsq.plugins import onnx_op
from adatsq.plugins.formats import format_for_bits
from adatsq.plugins.reference import qlinear_reference, quantize_weight_rtn

N, K = 40, 256


def _model(w_bits: int, a_bits: int, group: int, rotate: bool, bias: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    codes, scale = quantize_weight_rtn(torch.randn(N, K, generator=g), w_bits, group)
    packed = format_for_bits(w_bits).pack(codes)
    b = torch.randn(N, generator=g) if bias else None
    model = onnx_op.make_qlinear_model(
        packed.numpy(), scale.numpy(), None if b is None else b.numpy(),
        k=K, a_bits=a_bits, w_bits=w_bits, group_size=group, rotate=rotate, x_shape=("batch", "tokens", "K"),
    )  # fmt: skip
    return model, codes, scale, b, packed


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort_session(model).run(None, {"x": x})[0]


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("group", [64, 128])
def test_int4_weight_only_lowered_and_exact(group: int, bias: bool) -> None:
    model, codes, scale, b, packed = _model(4, 16, group, rotate=False, bias=bias)
    x = torch.randn(2, 7, K, generator=torch.Generator().manual_seed(1))
    before = _run(model, x.numpy())
    lowered = copy.deepcopy(model)
    assert WeightOnlyDequantPass()(lowered).modified
    # structural: no QLinear left; Cast → DequantizeLinear(axis 1, block G) → Transpose → MatMul (→ Add)
    assert _ops(lowered) == ["Cast", "DequantizeLinear", "Transpose", "MatMul"] + (["Add"] if bias else [])
    dq = lowered.graph.node[1]
    attrs = {a.name: helper.get_attribute_value(a) for a in dq.attribute}
    assert attrs == {"axis": 1, "block_size": group}
    w = next(t for t in lowered.graph.initializer if t.name == dq.input[0])
    assert w.data_type == TensorProto.INT4 and list(w.dims) == [N, K]
    assert w.raw_data == packed.numpy().tobytes()  # the stored bytes, re-typed, not re-packed
    onnx.checker.check_model(lowered, full_check=True)
    # numerical: equals the torch reference (a_bits 16) and the QLinear function body
    ref = qlinear_reference(x, codes, scale, b, 16, group, rotate_input=False).numpy()
    after = _run(lowered, x.numpy())
    assert np.abs(after - ref).max() <= 1e-5 * np.abs(ref).max()
    assert np.abs(after - before).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize(
    ("w_bits", "a_bits", "group", "rotate"),
    [
        (3, 16, 128, False),  # int3 has no ONNX type: stays QLinear
        (4, 4, 128, True),  # activation-quantized
        (4, 16, 128, True),  # rotated input
        (4, 16, 32, False),  # block size TensorRT does not take
    ],
)
def test_other_nodes_untouched(w_bits: int, a_bits: int, group: int, rotate: bool) -> None:
    model, *_ = _model(w_bits, a_bits, group, rotate, bias=True)
    before = model.SerializeToString()
    result = WeightOnlyDequantPass()(model)
    assert not result.modified and model.SerializeToString() == before


def test_any_block_size_when_asked() -> None:
    model, codes, scale, b, _ = _model(4, 16, 32, rotate=False, bias=True)
    assert WeightOnlyDequantPass(block_sizes=None)(model).modified
    x = torch.randn(3, 5, K, generator=torch.Generator().manual_seed(2))
    ref = qlinear_reference(x, codes, scale, b, 16, 32, rotate_input=False).numpy()
    assert np.abs(_run(model, x.numpy()) - ref).max() <= 1e-5 * np.abs(ref).max()


def test_int4_points_into_the_weight_file(tmp_path: Path) -> None:
    """The re-typed INT4 initializer is external data at the packed tensor's offset in the safetensors file."""
    model, codes, scale, b, packed = _model(4, 16, 128, rotate=False, bias=True)
    weights = tmp_path / "weights.safetensors"
    save_file({"w": packed, "w_scale": scale, "bias": b.float()}, str(weights))
    WeightOnlyDequantPass()(model)
    ExternalizeWeightsPass(weights, prefix="", max_inline_bytes=0)(model)
    CleanupPass()(model)
    w = next(t for t in model.graph.initializer if t.name == "w")
    assert w.data_type == TensorProto.INT4 and w.data_location == TensorProto.EXTERNAL
    ext = {e.key: e.value for e in w.external_data}
    header_len = int.from_bytes(weights.read_bytes()[:8], "little")
    header = json.loads(weights.read_bytes()[8 : 8 + header_len])
    assert int(ext["offset"]) == 8 + header_len + header["w"]["data_offsets"][0]
    assert int(ext["length"]) == N * K // 2
    graph = tmp_path / "g.onnx"
    onnx.save(model, str(graph))
    onnx.checker.check_model(checkable(model), full_check=True)
    x = torch.randn(2, 3, K, generator=torch.Generator().manual_seed(3))
    y = ort_session(graph).run(None, {"x": x.numpy()})[0]
    ref = qlinear_reference(x, codes, scale, b, 16, 128, rotate_input=False).numpy()
    assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()
    # onnx's own INT4 reader decodes the stored bytes to exactly the codes (the layouts are one)
    loaded = {t.name: t for t in onnx.load(str(graph)).graph.initializer}["w"]
    assert np.array_equal(numpy_helper.to_array(loaded).astype(np.int8), codes.numpy())


def test_exported_tiny_graph_with_lowering_matches_torch(compiled_tiny_flux: Path, tmp_path: Path) -> None:
    """On a real exported configuration graph (tiny groups of 32, so lowered with ``block_sizes=None``):
    every int4 weight-only layer lowered, output equal to the torch model's up to certified tie flips."""
    from adatsq.core.layout import OutputLayout
    from adatsq.core.schedule import load_schedule
    from adatsq.export.graph_io import adapter_for
    from adatsq.export.onnx_export import load_quantized_model
    from adatsq.passes.quant_linear import quant_linears, set_activation_bits

    out = compiled_tiny_flux
    s = load_schedule(out / "schedule.json")
    model = load_quantized_model(out)
    weight_only = [n for n, m in quant_linears(model).items() if not m.act_quantized]
    assert weight_only and all(quant_linears(model)[n].w_bits == 4 for n in weight_only)
    graph = onnx.load(str(OutputLayout(out).onnx_graph(0)), load_external_data=False)
    n_qlinear = sum(n.op_type == "QLinear" for n in graph.graph.node)
    assert WeightOnlyDequantPass(block_sizes=None)(graph).modified
    CleanupPass()(graph)
    assert sum(n.op_type == "QLinear" for n in graph.graph.node) == n_qlinear - len(weight_only)
    assert sum(n.op_type == "DequantizeLinear" for n in graph.graph.node) == len(weight_only)
    path = out / "onnx" / ".lowered_config_00.onnx"
    onnx.save(graph, str(path))
    try:
        sess = ort_session(path)
        tapped = tapped_session(path)
    finally:
        path.unlink()
    g = torch.Generator().manual_seed(5)
    from adatsq.core.models.flux import image_ids, pack

    kwargs = dict(
        hidden_states=pack(torch.randn(2, model.config.in_channels // 4, 8, 12, generator=g)),
        timestep=torch.tensor([0.7, 0.2]),
        guidance=torch.full((2,), 3.5),
        pooled_projections=torch.randn(2, model.config.pooled_projection_dim, generator=g),
        encoder_hidden_states=torch.randn(2, 5, model.config.joint_attention_dim, generator=g),
        txt_ids=torch.zeros(5, 3),
        img_ids=image_ids(8, 12),
    )
    set_activation_bits(model, dict(zip(s.act_layers, s.configs[0])))

    def run_torch() -> np.ndarray:
        with torch.no_grad():
            return model(**kwargs, return_dict=False)[0].numpy()

    feeds = adapter_for("flux").feeds(model.config, kwargs)
    y = sess.run(None, feeds)[0]
    cert = certify_outputs(y, run_torch, quant_linears(model), lambda: tapped.run(feeds), "lowered config 00")
    print(
        f"tiny-flux config 00 with {len(weight_only)} weight-only layers as DequantizeLinear: rel err "
        f"{cert.err:.1e}, certified tie flips: {'; '.join(map(str, cert.flips)) or 'none'}"
    )

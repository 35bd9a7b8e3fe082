"""The TensorRT twins onnx/config_NN.trt.onnx (export/trt_graph.py) on the session-compiled tiny models.

Per family and configuration: the twin's weight inputs are exactly the graph's weight-file initializers (same
name, dtype, static shape, and io.json's records), nothing of the weight file stays an initializer, the
QLinear nodes and function are kept, and ONNX Runtime gives the same output for the twin fed the weights as
inputs as for config_NN.onnx. Tolerance: the twin folds only integer computations, so it runs the same float
ops as config_NN.onnx (bit-identical outputs measured on tiny-flux), but ONNX Runtime's own graph optimizations
may still fuse the two graphs differently; 1e-5 relative covers last-bit differences. A difference above it is
accepted only as certified quantizer tie flips against the torch reference (helpers.ties), as the config
graphs themselves are certified (one flipped 4-bit code moves a tiny model's output by up to ~1e-2).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers.golden import config_graphs, flux_kwargs, wan_kwargs, zimage_kwargs
from helpers.ort_session import ort_session
from helpers.runs import tapped_session
from helpers.ties import certify_outputs, rel
from onnx import TensorProto, helper, numpy_helper

from adatsq.core.schedule import load_schedule
from adatsq.export.graph_io import adapter_for
from adatsq.export.onnx_export import load_quantized_model
from adatsq.export.trt_graph import rewrite_sequence_ops, weight_feeds, weights_to_inputs
from adatsq.passes.onnx.externalize_weights import safetensors_layout
from adatsq.passes.quant_linear import quant_linears, set_activation_bits

TWIN_MATCH = 1e-5  # see the module docstring

FAMILIES = [
    ("compiled_tiny_flux", "flux", flux_kwargs),
    pytest.param("compiled_tiny_wan", "wan", wan_kwargs, marks=pytest.mark.slow),
    ("compiled_tiny_zimage", "zimage", zimage_kwargs),
]


def _twin(path: Path) -> Path:
    return path.with_name(path.name.replace(".onnx", ".trt.onnx"))


@pytest.mark.parametrize(("fixture", "family", "make_kwargs"), FAMILIES)
def test_twin_structure(
    fixture: str, family: str, make_kwargs: object, request: pytest.FixtureRequest
) -> None:
    out: Path = request.getfixturevalue(fixture)
    io = json.loads((out / "onnx" / "io.json").read_text())
    layout = safetensors_layout(out / "onnx" / "weights.safetensors")
    records = {w["name"]: w for w in io["weight_inputs"]}
    graphs = config_graphs(out)
    assert io["trt_graphs"] == {str(k): _twin(p).name for k, p in enumerate(graphs)}
    for k, path in enumerate(graphs):
        src = onnx.load(str(path), load_external_data=False)
        twin = onnx.load(str(_twin(path)), load_external_data=False)
        external = {t.name: t for t in src.graph.initializer if t.data_location == TensorProto.EXTERNAL}
        assert external, "the config graph reads its weights from the weight file"
        inputs = {i.name: i for i in twin.graph.input}
        # the config graph's own inputs first and unchanged, then one input per weight-file initializer
        assert [i.name for i in twin.graph.input][: len(src.graph.input)] == [i.name for i in src.graph.input]
        assert set(inputs) - {i.name for i in src.graph.input} == set(external)
        assert set(io["weight_inputs_per_config"][str(k)]) == set(external)
        for name, t in external.items():
            tt = inputs[name].type.tensor_type
            dims = [d.dim_value for d in tt.shape.dim]
            assert all(d.HasField("dim_value") for d in tt.shape.dim), f"{name}: weight input not static"
            assert (tt.elem_type, dims) == (t.data_type, list(t.dims))
            key = name.removeprefix("model.")
            assert (layout[key]["dtype"], list(layout[key]["shape"])) == (t.data_type, dims)
            assert records[name]["key"] == key and records[name]["shape"] == dims
        packed = [n for n, t in external.items() if t.data_type == TensorProto.UINT8]
        assert packed and all(records[n]["dtype"] == "uint8" for n in packed)  # stays UINT8, as an input
        # nothing of the weight file is an initializer of the twin; what is inline is small
        for t in twin.graph.initializer:
            assert t.name.removeprefix("model.") not in layout, t.name
        ops = {n.op_type for n in twin.graph.node}
        assert not ops & {"SplitToSequence", "SequenceAt", "Constant"}
        assert [(f.domain, f.name) for f in twin.functions] == [(f.domain, f.name) for f in src.functions]
        q_src = {n.name: n.attribute for n in src.graph.node if n.op_type == "QLinear"}
        q_twin = {n.name: n.attribute for n in twin.graph.node if n.op_type == "QLinear"}
        assert q_twin == q_src  # the same QLinear nodes: names, a_bits, w_bits, plugin attributes
        assert twin.ir_version == src.ir_version
    # one weight list for every configuration
    assert {n for names in io["weight_inputs_per_config"].values() for n in names} == set(records)


@pytest.mark.parametrize(("fixture", "family", "make_kwargs"), FAMILIES)
def test_twin_matches_config_graph(
    fixture: str, family: str, make_kwargs, request: pytest.FixtureRequest
) -> None:
    out: Path = request.getfixturevalue(fixture)
    io = json.loads((out / "onnx" / "io.json").read_text())
    s = load_schedule(out / "schedule.json")
    model = load_quantized_model(out)
    modules = quant_linears(model)
    kwargs = make_kwargs(model)
    feeds = adapter_for(family).feeds(model.config, kwargs)
    weights = weight_feeds(out / "onnx" / "weights.safetensors", io["weight_inputs"])
    for k, path in enumerate(config_graphs(out)):
        y = ort_session(path).run(None, feeds)[0]
        twin = _twin(path)
        names = set(io["weight_inputs_per_config"][str(k)])
        twin_feeds = {**feeds, **{n: a for n, a in weights.items() if n in names}}
        y_twin = ort_session(twin).run(None, twin_feeds)[0]
        err = rel(y_twin, y)
        print(f"{out.name} {twin.name}: rel {err:.1e} vs {path.name}")
        if err <= TWIN_MATCH:
            continue
        bits = dict(zip(s.act_layers, s.configs[k]))

        def run_torch(bits: dict[str, int] = bits) -> np.ndarray:
            set_activation_bits(model, bits, modules)
            with torch.no_grad():
                ref = model(**kwargs, return_dict=False)[0]
            return (torch.stack(ref) if isinstance(ref, list) else ref).numpy()

        tapped = tapped_session(twin)
        cert = certify_outputs(
            y_twin,
            run_torch,
            modules,
            lambda tapped=tapped, twin_feeds=twin_feeds: tapped.run(twin_feeds),
            f"{out.name} {twin.name}",
        )
        print(f"  certified against torch: {'; '.join(map(str, cert.flips)) or 'no flips'}")


# ------------------------------------------------------------------------- the rewrites on small graphs


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    model.ir_version = 10
    return ort_session(model).run(None, feeds)


def _seq_model(split: np.ndarray | None, positions: list[int], keepdims: int = 1) -> onnx.ModelProto:
    nodes, inits = [], []
    inputs = ["x"]
    if split is not None:
        inits.append(numpy_helper.from_array(split.astype(np.int64), "split"))
        inputs.append("split")
    nodes.append(helper.make_node("SplitToSequence", inputs, ["seq"], axis=1, keepdims=keepdims))
    outs = []
    for j, i in enumerate(positions):
        nodes.append(helper.make_node("Constant", [], [f"p{j}"], value=numpy_helper.from_array(np.int64(i))))
        nodes.append(helper.make_node("SequenceAt", ["seq", f"p{j}"], [f"y{j}"], name=f"at{j}"))
        outs.append(helper.make_tensor_value_info(f"y{j}", TensorProto.FLOAT, None))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 7, 3])
    graph = helper.make_graph(nodes, "g", [x], outs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize(
    ("split", "positions", "keepdims"),
    [
        (np.array([2, 4, 1]), [0, 1, 2, -1], 1),  # 1-D sizes, a negative position
        (np.array(3), [0, 1, 2], 1),  # chunk size 3 of 7 rows: the last chunk is 1 row
        (None, [0, 4, 6], 0),  # no split: single rows, squeezed
        (None, [1], 1),  # no split, keepdims: (2, 1, 3)
    ],
)
def test_sequence_ops_become_slices(split: np.ndarray | None, positions: list[int], keepdims: int) -> None:
    model = _seq_model(split, positions, keepdims)
    x = np.arange(42, dtype=np.float32).reshape(2, 7, 3)
    before = _run(onnx.ModelProto.FromString(model.SerializeToString()), {"x": x})
    assert rewrite_sequence_ops(model) == len(positions)
    ops = [n.op_type for n in model.graph.node]
    assert "SplitToSequence" not in ops and "SequenceAt" not in ops and "Slice" in ops
    after = _run(model, {"x": x})
    for a, b in zip(before, after):
        assert a.shape == b.shape and np.array_equal(a, b)  # a copy of the same rows: exact


def test_run_time_split_sizes_become_slices() -> None:
    """Split sizes computed in the graph (Flux's [txt_tokens, img_tokens] from Shape): Slice bounds as
    ReduceSum of the leading sizes, evaluated at run time."""
    n_txt = helper.make_node("Shape", ["t"], ["st"], start=1, end=2)
    n_img = helper.make_node("Shape", ["i"], ["si"], start=1, end=2)
    cat = helper.make_node("Concat", ["st", "si"], ["split"], axis=0)
    seq = helper.make_node("SplitToSequence", ["x", "split"], ["seq"], axis=1)
    nodes = [n_txt, n_img, cat, seq]
    for j in range(2):
        nodes.append(helper.make_node("Constant", [], [f"p{j}"], value=numpy_helper.from_array(np.int64(j))))
        nodes.append(helper.make_node("SequenceAt", ["seq", f"p{j}"], [f"y{j}"], name=f"at{j}"))
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info(n, f, s)
            for n, s in (("x", [1, "n", 4]), ("t", [1, "a"]), ("i", [1, "b"]))
        ],
        [helper.make_tensor_value_info(f"y{j}", f, None) for j in range(2)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    rng = np.random.default_rng(0)
    for a, b in ((3, 5), (1, 9)):
        feeds = {
            "x": rng.standard_normal((1, a + b, 4)).astype(np.float32),
            "t": np.zeros((1, a), np.float32),
            "i": np.zeros((1, b), np.float32),
        }
        m = onnx.ModelProto.FromString(model.SerializeToString())
        before = _run(onnx.ModelProto.FromString(model.SerializeToString()), feeds)
        rewrite_sequence_ops(m)
        assert "SequenceAt" not in {n.op_type for n in m.graph.node}
        after = _run(m, feeds)
        assert [y.shape for y in after] == [(1, a, 4), (1, b, 4)]
        assert all(np.array_equal(p, q) for p, q in zip(before, after))


def test_weights_to_inputs_refuses_a_mismatch(compiled_tiny_flux: Path) -> None:
    path = config_graphs(compiled_tiny_flux)[0]
    layout = safetensors_layout(compiled_tiny_flux / "onnx" / "weights.safetensors")
    model = onnx.load(str(path), load_external_data=False)
    found = weights_to_inputs(onnx.ModelProto.FromString(model.SerializeToString()), layout)
    assert found and all(w.key in layout for w in found)
    name = found[0].key
    bad = {**layout, name: {**layout[name], "offset": layout[name]["offset"] + 1}}
    with pytest.raises(ValueError, match="does not match"):
        weights_to_inputs(onnx.ModelProto.FromString(model.SerializeToString()), bad)
    missing = {k: v for k, v in layout.items() if k != name}
    with pytest.raises(ValueError, match="has no"):
        weights_to_inputs(onnx.ModelProto.FromString(model.SerializeToString()), missing)


def test_int4_weight_only_constants_stay_embedded(tmp_path: Path) -> None:
    """WeightOnlyDequantPass's form (an INT4 initializer over UINT8 bytes of the weight file → blocked
    DequantizeLinear → MatMul): the INT4 weight stays an external initializer of the twin (TensorRT's INT4
    weight-only path needs a constant), its scale and bias become inputs, the DequantizeLinear is not folded,
    the twin passes the parser check and ONNX Runtime gives the same output (same ops on the same bytes)."""
    from safetensors.numpy import save_file

    from adatsq.export.trt_check import check_model
    from adatsq.export.trt_graph import make_trt_graph

    rng = np.random.default_rng(0)
    n, k = 4, 64
    packed = rng.integers(0, 256, (n, k // 2), dtype=np.uint8)
    tensors = {
        "w": packed,
        "s": (rng.random((n, 1)) * 0.1 + 0.01).astype(np.float16),
        "b": rng.standard_normal(n).astype(np.float32),
    }
    weights = tmp_path / "weights.safetensors"
    save_file(tensors, str(weights))
    layout = safetensors_layout(weights)

    def external(name: str, elem: int, dims: list[int]) -> TensorProto:
        t = TensorProto(name=f"model.{name}", data_type=elem, dims=dims)
        t.data_location = TensorProto.EXTERNAL
        rec = layout[name]
        for key, value in (
            ("location", "weights.safetensors"),
            ("offset", rec["offset"]),
            ("length", rec["length"]),
        ):
            t.external_data.add(key=key, value=str(value))
        return t

    nodes = [
        helper.make_node("Cast", ["model.s"], ["s32"], to=TensorProto.FLOAT),
        helper.make_node("DequantizeLinear", ["model.w", "s32"], ["wq"], axis=1, block_size=k),
        helper.make_node("Transpose", ["wq"], ["wt"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "wt"], ["xw"]),
        helper.make_node("Add", ["xw", "model.b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n])],
        initializer=[
            external("w", TensorProto.INT4, [n, k]),
            external("s", TensorProto.FLOAT16, [n, 1]),
            external("b", TensorProto.FLOAT, [n]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    embedded: list[str] = []
    twin, found = make_trt_graph(model, layout, embedded=embedded)
    assert embedded == ["model.w"]
    assert sorted(w.name for w in found) == ["model.b", "model.s"]
    assert [t.name for t in twin.graph.initializer if t.data_location == TensorProto.EXTERNAL] == ["model.w"]
    assert "DequantizeLinear" in {n.op_type for n in twin.graph.node}
    assert check_model(twin).ok, check_model(twin).text()
    onnx.save(model, str(tmp_path / "g.onnx"))
    onnx.save(twin, str(tmp_path / "g.trt.onnx"))
    x = rng.standard_normal((3, k)).astype(np.float32)
    y = ort_session(tmp_path / "g.onnx").run(None, {"x": x})[0]
    feeds = {"x": x, **weight_feeds(weights, [w.record() for w in found])}
    assert np.array_equal(ort_session(tmp_path / "g.trt.onnx").run(None, feeds)[0], y)

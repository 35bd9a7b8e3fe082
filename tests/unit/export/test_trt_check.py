"""The static TensorRT-parser check (export/trt_check.py): every exported twin passes, the ONNX Runtime graphs
fail with exactly the findings of issue 16, and each violation class is caught on a small bad graph."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers.golden import config_graphs
from onnx import TensorProto, helper, numpy_helper

from adatsq.core.errors import CompileError
from adatsq.export.trt_check import check_file, check_model, parser_table, require_trt_ready

FIXTURES = [
    "compiled_tiny_flux",
    pytest.param("compiled_tiny_wan", marks=pytest.mark.slow),
    "compiled_tiny_zimage",
]


@pytest.mark.parametrize("fixture", FIXTURES)
def test_every_exported_twin_passes(fixture: str, request: pytest.FixtureRequest) -> None:
    out: Path = request.getfixturevalue(fixture)
    twins = sorted((out / "onnx").glob("config_*.trt.onnx"))
    assert len(twins) == len(config_graphs(out)) >= 2
    for twin in twins:
        report = require_trt_ready(twin)
        print(report.text())
        assert report.ok and report.nodes > 0


def test_config_graph_fails_with_the_issue_findings(compiled_tiny_flux: Path) -> None:
    """tiny-flux's ONNX Runtime graph: SplitToSequence ×9, SequenceAt ×36 and ReduceMean axes from
    Reshape(Constant) ×12 (issue 16, item 2), one UINT8 initializer per QLinear (item 3)."""
    path = config_graphs(compiled_tiny_flux)[0]
    report = check_file(path)
    assert not report.ok
    model = onnx.load(str(path), load_external_data=False)
    by = collections.Counter(v.op for v in report.violations)
    count = collections.Counter(n.op_type for n in model.graph.node)
    assert by["ai.onnx::SplitToSequence"] == count["SplitToSequence"] > 0
    assert by["ai.onnx::SequenceAt"] == count["SequenceAt"] > 0
    assert by["ai.onnx::ReduceMean"] == count["ReduceMean"] > 0
    uint8 = [v for v in report.violations if v.reason.startswith("uint8 initializer")]
    assert len(uint8) == count["QLinear"]
    assert "TensorRT parser violation" in report.text()
    with pytest.raises(CompileError, match="SplitToSequence"):
        require_trt_ready(path)


# ----------------------------------------------------------------------- one small graph per violation

F = TensorProto.FLOAT


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto] | None = None,
    inits: list[onnx.TensorProto] | None = None,
    opset: int = 21,
    ir: int = 10,
    functions: list[onnx.FunctionProto] | None = None,
    outputs: list[str] | None = None,
) -> onnx.ModelProto:
    inputs = inputs if inputs is not None else [helper.make_tensor_value_info("x", F, [2, 8])]
    outs = [helper.make_tensor_value_info(o, F, None) for o in (outputs or [nodes[-1].output[0]])]
    graph = helper.make_graph(nodes, "g", inputs, outs, initializer=inits or [])
    opsets = [helper.make_opsetid("", opset)]
    if functions:
        opsets.append(helper.make_opsetid("adatsq", 1))
    m = helper.make_model(graph, opset_imports=opsets, functions=functions or [])
    m.ir_version = ir
    return m


def _axes(name: str = "axes") -> onnx.TensorProto:
    return numpy_helper.from_array(np.array([1], np.int64), name)


def _qlinear_function() -> onnx.FunctionProto:
    return helper.make_function(
        "adatsq", "QLinear", ["x"], ["y"], [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_opsetid("", 21)], attributes=["plugin_namespace"],
    )  # fmt: skip


def _reasons(model: onnx.ModelProto) -> list[str]:
    return [str(v) for v in check_model(model).violations]


def test_a_clean_graph_passes() -> None:
    m = _model(
        [
            helper.make_node("ReduceMean", ["x", "axes"], ["m"], name="mean"),
            helper.make_node("QLinear", ["m"], ["y"], name="q", domain="adatsq", plugin_namespace="adatsq"),
        ],
        inits=[_axes()],
        functions=[_qlinear_function()],
    )
    assert _reasons(m) == []


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("sequence_op", "no parser importer (sequence op"),
        ("unknown_op", "op not in the parser's table"),
        ("custom_op", "only the adatsq::QLinear plugin"),
        ("no_namespace", "plugin_namespace must be 'adatsq'"),
        ("no_function", "no model-local function"),
        ("computed_axes", "input 1 (axes) 'axes_r' must be an initializer"),
        ("clip_bounds", "input 2 (max) 'hi' must be an initializer"),
        ("opset", "opset 25 outside the parser's 9..24"),
        ("ir", "ir_version 11 outside"),
        ("uint8_initializer", "uint8 initializer"),
        ("uint8_intermediate", "uint8 intermediate tensor"),
        ("double", "type double not supported"),
        ("op_dtype", "data input 'xi' is int32"),
        ("no_rank", "unknown rank"),
        ("foreign_domain", "opset import of domain 'com.microsoft'"),
    ],
)
def test_each_violation_class_is_caught(case: str, expect: str) -> None:
    axes = [_axes()]
    fn = [_qlinear_function()]
    x8 = [helper.make_tensor_value_info("x", F, [2, 8])]
    cases = {
        "sequence_op": lambda: _model(
            [
                helper.make_node("SplitToSequence", ["x"], ["s"], name="split", axis=1),
                helper.make_node("SequenceLength", ["s"], ["y"], name="len"),
            ],
        ),
        "unknown_op": lambda: _model([helper.make_node("NoSuchOp", ["x"], ["y"], name="bad")]),
        "custom_op": lambda: _model(
            [helper.make_node("Other", ["x"], ["y"], name="o", domain="adatsq", plugin_namespace="adatsq")],
            functions=fn,
        ),
        "no_namespace": lambda: _model(
            [helper.make_node("QLinear", ["x"], ["y"], name="q", domain="adatsq")], functions=fn
        ),
        "no_function": lambda: _model(
            [helper.make_node("QLinear", ["x"], ["y"], name="q", domain="adatsq", plugin_namespace="adatsq")],
            functions=[],
        ),
        "computed_axes": lambda: _model(
            [
                helper.make_node("Reshape", ["axes", "shape"], ["axes_r"], name="r"),
                helper.make_node("ReduceMean", ["x", "axes_r"], ["y"], name="mean"),
            ],
            inits=[*axes, numpy_helper.from_array(np.array([1], np.int64), "shape")],
        ),
        "clip_bounds": lambda: _model(
            [
                helper.make_node("Neg", ["lo"], ["hi"], name="neg"),
                helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip"),
            ],
            inits=[numpy_helper.from_array(np.array(0.0, np.float32), "lo")],
        ),
        "opset": lambda: _model([helper.make_node("Relu", ["x"], ["y"])], opset=25),
        "ir": lambda: _model([helper.make_node("Relu", ["x"], ["y"])], ir=11),
        "uint8_initializer": lambda: _model(
            [helper.make_node("Cast", ["w"], ["wf"], to=F), helper.make_node("Add", ["x", "wf"], ["y"])],
            inits=[numpy_helper.from_array(np.zeros((2, 8), np.uint8), "w")],
        ),
        "uint8_intermediate": lambda: _model(
            [
                helper.make_node("Cast", ["x"], ["u"], to=TensorProto.UINT8),
                helper.make_node("Cast", ["u"], ["y"], to=F),
            ],
        ),
        "double": lambda: _model(
            [
                helper.make_node("Cast", ["x"], ["d"], to=TensorProto.DOUBLE),
                helper.make_node("Cast", ["d"], ["y"], to=F),
            ],
        ),
        "op_dtype": lambda: _model(
            [helper.make_node("Sqrt", ["xi"], ["y"], name="sqrt")],
            inputs=[helper.make_tensor_value_info("xi", TensorProto.INT32, [4])],
        ),
        "no_rank": lambda: _model(
            [helper.make_node("Relu", ["x"], ["y"])], inputs=[helper.make_tensor_value_info("x", F, None)]
        ),
        "foreign_domain": lambda: _model([helper.make_node("Relu", ["x"], ["y"])], inputs=x8),
    }
    model = cases[case]()
    if case == "foreign_domain":
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    reasons = _reasons(model)
    assert any(expect in r for r in reasons), reasons


def test_constant_node_axes_are_weights_for_the_parser() -> None:
    """The parser imports a Constant node as weights (onnx-tensorrt's Constant importer): Constant axes pass."""
    const = helper.make_node("Constant", [], ["axes"], value=_axes("v"))
    m = _model([const, helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="mean")])
    assert _reasons(m) == []


def test_table_records_its_source() -> None:
    table = parser_table()
    assert table["source"]["repository"].endswith("onnx/onnx-tensorrt")
    assert len(table["source"]["commit"]) == 40
    assert table["ops"]["SplitToSequence"]["supported"] is False
    assert table["initializer_inputs"]["ReduceMean"] == {"1": "axes"}
    assert "uint8" in table["io_only_types"]

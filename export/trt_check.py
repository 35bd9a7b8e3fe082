"""Static check of an ONNX graph against the TensorRT ONNX parser's tables (no TensorRT needed).

The table is ``export/trt_parser_ops.json`` (derived for adatsq from onnx-tensorrt's docs/operators.md and
importer sources; its ``source`` records the branch and commit). One graph is checked for:

* **opset and IR version** within the parser's range; only the default domain (``""``/``ai.onnx``) and the
  plugin's domain ``adatsq`` imported;
* **op types**: every default-domain node of the main graph (and of If/Loop/Scan bodies) has a parser
  importer (``Supported`` = Y); ``SplitToSequence``/``SequenceAt`` and the other sequence ops have none;
* **custom domains**: only ``adatsq::QLinear`` (the plugin, ``plugin_namespace`` = ``adatsq``), backed by a
  model-local function of that name (what ONNX Runtime runs); its body is not checked, since TensorRT maps the
  node to the plugin and the build fails when it does not (export/trt_build.py, plugin-layer count);
* **dtypes**: every tensor's type is one the parser supports; UINT8 only as a network input or output (no
  UINT8 initializer: the parser would convert it to INT32); each op's data input (input 0) has a type the
  op's Supported Types lists;
* **initializer inputs**: the ``axes``-style inputs the parser requires as initializers (ReduceMean axes,
  Slice axes, Squeeze/Unsqueeze axes, Pad axes, Clip min/max, ...) are initializers or Constant-node outputs
  (both import as weights), not computed tensors such as ``Reshape(Constant)``;
* every graph input has a known rank.

:func:`check_model` returns a :class:`TrtCheckReport` listing every violation (node name, op, reason).
The export stage runs :func:`require_trt_ready` on every ``config_NN.trt.onnx`` and fails the compile on any
violation. **Static only**: passing it means the graph matches the documented tables, not that TensorRT
parsed or built it (nothing here has run TensorRT).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper

from adatsq.core.errors import CompileError
from adatsq.plugins.onnx_op import DOMAIN, OP_TYPE

__all__ = [
    "TABLE_PATH",
    "TrtCheckReport",
    "Violation",
    "check_file",
    "check_model",
    "parser_table",
    "require_trt_ready",
]


def _table_path(name: str = "trt_parser_ops.json") -> Path:
    """The table beside this module (package data), else beside the file this module's link points to (a
    strict editable install links only the listed package data)."""
    here = Path(__file__).with_name(name)
    return here if here.is_file() else Path(__file__).resolve().with_name(name)


TABLE_PATH = _table_path()
_DEFAULT = ("", "ai.onnx")
_FLOATS = {"float32", "float16", "bfloat16"}

#: ONNX elem type → the table's type names (anything absent, e.g. DOUBLE, STRING, UINT16, is unsupported).
_TYPE_NAMES: dict[int, str] = {
    TensorProto.FLOAT: "float32",
    TensorProto.FLOAT16: "float16",
    TensorProto.BFLOAT16: "bfloat16",
    TensorProto.INT32: "int32",
    TensorProto.INT64: "int64",
    TensorProto.BOOL: "bool",
    TensorProto.UINT8: "uint8",
    TensorProto.INT8: "int8",
    TensorProto.INT4: "int4",
    TensorProto.FLOAT8E4M3FN: "float8e4m3fn",
}


@functools.cache
def parser_table(path: Path = TABLE_PATH) -> dict[str, Any]:
    """The parser table (``trt_parser_ops.json``)."""
    return json.loads(Path(path).read_text())


@dataclasses.dataclass(frozen=True)
class Violation:
    node: str  # node name, or the tensor / graph-level item
    op: str  # "domain::op_type", or "" for graph-level items
    reason: str

    def __str__(self) -> str:
        return f"{self.node} [{self.op}]: {self.reason}" if self.op else f"{self.node}: {self.reason}"


@dataclasses.dataclass
class TrtCheckReport:
    graph: str
    violations: list[Violation]
    nodes: int

    @property
    def ok(self) -> bool:
        return not self.violations

    def text(self) -> str:
        if self.ok:
            return f"{self.graph}: TensorRT parser check passed ({self.nodes} nodes)"
        lines = [f"{self.graph}: {len(self.violations)} TensorRT parser violation(s) in {self.nodes} nodes:"]
        lines += [f"  {v}" for v in self.violations]
        return "\n".join(lines)


def _type_name(elem: int) -> str:
    return _TYPE_NAMES.get(elem) or TensorProto.DataType.Name(elem).lower()


def _walk(graph: onnx.GraphProto) -> Iterator[tuple[onnx.GraphProto, onnx.NodeProto]]:
    """Every node of ``graph`` and of its control-flow bodies, with the graph holding it."""
    for node in graph.node:
        yield graph, node
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _walk(a.g)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from _walk(g)


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    """Elem type of every named tensor: inputs, outputs, initializers, Constant outputs, inferred values."""
    types: dict[str, int] = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - an un-inferable graph still gets the declared types checked
        inferred = model
    for g in (inferred.graph, model.graph):
        for v in [*g.input, *g.output, *g.value_info]:
            if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type:
                types[v.name] = v.type.tensor_type.elem_type
        for t in g.initializer:
            types[t.name] = t.data_type
    for _, node in _walk(model.graph):
        if node.op_type == "Constant" and node.domain in _DEFAULT:
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


def _initializers(graph: onnx.GraphProto, outer: frozenset[str]) -> frozenset[str]:
    """What the parser imports as weights in ``graph``: its initializers and the outputs of its Constant
    nodes (onnx-tensorrt's Constant importer returns weights, ``onnxOpImporters.cpp``), plus the outer
    scope's."""
    consts = {
        n.output[0] for n in graph.node if n.op_type == "Constant" and n.domain in _DEFAULT and n.output
    }
    return outer | {t.name for t in graph.initializer} | consts


def check_model(model: onnx.ModelProto, name: str = "graph") -> TrtCheckReport:
    """Check ``model`` (loaded with or without external data) against the parser table."""
    table = parser_table()
    ops: Mapping[str, Mapping[str, Any]] = table["ops"]
    supported_types = set(table["data_types"])
    io_only = set(table["io_only_types"])
    needs_init: Mapping[str, Mapping[str, str]] = table["initializer_inputs"]
    out: list[Violation] = []

    lo, hi = table["ir_version"]["min"], table["ir_version"]["max"]
    if not lo <= model.ir_version <= hi:
        out.append(Violation("model", "", f"ir_version {model.ir_version} outside the parser's {lo}..{hi}"))
    opsets = {imp.domain: imp.version for imp in model.opset_import}
    default = opsets.get("", opsets.get("ai.onnx"))
    lo, hi = table["opset"]["min"], table["opset"]["max"]
    if default is None:
        out.append(Violation("model", "", "no default-domain opset import"))
    elif not lo <= default <= hi:
        out.append(Violation("model", "", f"opset {default} outside the parser's {lo}..{hi}"))
    for domain in opsets:
        if domain not in (*_DEFAULT, DOMAIN):
            out.append(
                Violation("model", "", f"opset import of domain {domain!r}: no parser importer or plugin")
            )

    graph = model.graph
    types = _value_types(model)
    functions = {(f.domain, f.name) for f in model.functions}
    net_io = {v.name for v in graph.input} | {v.name for v in graph.output}

    for v in graph.input:
        shape = v.type.tensor_type.shape if v.type.HasField("tensor_type") else None
        if shape is None or not v.type.tensor_type.HasField("shape"):
            out.append(Violation(v.name, "", "graph input of unknown rank (TensorRT needs the rank)"))
    for t in graph.initializer:
        tname = _type_name(t.data_type)
        if tname in io_only:
            out.append(Violation(t.name, "", f"{tname} initializer: {tname} only as network input/output"))
    for tensor, elem in types.items():
        tname = _type_name(elem)
        if tname not in supported_types:
            out.append(Violation(tensor, "", f"type {tname} not supported by the parser"))
        elif tname in io_only and tensor not in net_io and tensor not in {t.name for t in graph.initializer}:
            out.append(
                Violation(tensor, "", f"{tname} intermediate tensor: {tname} only as network input/output")
            )

    init_scopes: dict[int, frozenset[str]] = {}

    def initializers_of(g: onnx.GraphProto) -> frozenset[str]:
        if id(g) not in init_scopes:
            init_scopes[id(g)] = _initializers(g, init_scopes.get(id(graph), frozenset()))
        return init_scopes[id(g)]

    initializers_of(graph)
    count = 0
    for g, node in _walk(graph):
        count += 1
        label = node.name or (node.output[0] if node.output else "?")
        op = f"{node.domain or 'ai.onnx'}::{node.op_type}"
        if node.domain not in _DEFAULT:
            if (node.domain, node.op_type) != (DOMAIN, OP_TYPE):
                out.append(Violation(label, op, "custom op: only the adatsq::QLinear plugin is available"))
                continue
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            ns = attrs.get("plugin_namespace")
            if (ns.decode() if isinstance(ns, bytes) else ns) != DOMAIN:
                out.append(Violation(label, op, f"plugin_namespace must be {DOMAIN!r} (plugin precedence)"))
            if (node.domain, node.op_type) not in functions:
                out.append(Violation(label, op, "no model-local function (ONNX Runtime could not run it)"))
            continue
        rec = ops.get(node.op_type)
        if rec is None or not rec.get("supported", False):
            why = "no parser importer" if rec is not None else "op not in the parser's table"
            if node.op_type in table.get("sequence_ops_hint", []):
                why += " (sequence op: rewrite as Slice, export/trt_graph.py)"
            out.append(Violation(label, op, why))
            continue
        first = next((i for i in node.input if i), None)
        probe = first if first is not None else (node.output[0] if node.output else None)
        if probe is not None and probe in types:
            tname = _type_name(types[probe])
            if tname not in rec.get("types", []):
                out.append(
                    Violation(label, op, f"data input {probe!r} is {tname}; the parser takes {rec['types']}")
                )
        inits = initializers_of(g)
        for index, what in needs_init.get(node.op_type, {}).items():
            i = int(index)
            if i >= len(node.input) or not node.input[i]:
                continue
            if node.op_type == "Clip" and (first is None or _type_name(types.get(first, 0)) not in _FLOATS):
                continue
            if node.input[i] not in inits:
                out.append(
                    Violation(label, op, f"input {i} ({what}) {node.input[i]!r} must be an initializer")
                )
    return TrtCheckReport(name, out, count)


def check_file(path: Path) -> TrtCheckReport:
    """:func:`check_model` of the graph at ``path`` (external data not loaded)."""
    return check_model(onnx.load(str(path), load_external_data=False), Path(path).name)


def require_trt_ready(path: Path) -> TrtCheckReport:
    """:func:`check_file`, raising :class:`CompileError` with the full report on any violation."""
    report = check_file(path)
    if not report.ok:
        raise CompileError(report.text())
    return report

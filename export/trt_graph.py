"""The TensorRT-ready twin of a configuration graph: ``onnx/config_NN.onnx`` → ``onnx/config_NN.trt.onnx``.

``config_NN.onnx`` stays what ONNX Runtime runs (parameters as external data in ``onnx/weights.safetensors``).
The twin is the same computation in the form the TensorRT ONNX parser imports, and the form in which N engines
can share ONE device copy of the weights:

1. **Weights are graph inputs.** Every initializer whose bytes live in ``weights.safetensors`` becomes a graph
   INPUT of the same name, dtype and static shape (its safetensors key is the name without ``model.``). A
   runner loads the file once into device buffers and binds the same buffers to every engine's weight inputs
   (the shared decision of issue 16; ``onnx/io.json`` ``weight_inputs``). Why inputs and not the other two
   options: a plugin-held weight store only covers the QLinear weights (norms, biases and embeddings would
   still be copied into every plan) and needs a resource lifetime TensorRT does not document across engine
   reloads; refit and weight-stripped plans keep one device copy per engine (reference/tensorrt.md §3).
   Cost: TensorRT cannot pre-transform a weight it only sees at run time (the few plain MatMuls run as
   activation × activation GEMMs), and trtexec must be given the weights' static shapes.
2. **Packed weights stay UINT8** (issue item 3). As an initializer, a UINT8 tensor that does not feed Q/DQ is
   converted to INT32 by the recent parser (``addConstant`` takes no UINT8), so the plugin's format
   negotiation would fail. As a network INPUT, UINT8 is a supported type and is never converted ("UINT8 is
   only supported as network input or output tensor types", onnx-tensorrt docs/operators.md). Decision: the
   packed codes are UINT8 graph inputs, and the plugin accepts UINT8 or INT8 at its weight input (the same
   bytes either way), so it also works if a runner binds them as INT8.
3. **Constant folding** with onnxscript's constant folder, of the integer/bool computations (shapes, axes,
   indices; float math is left as it is, see :func:`_fold`), functions never inlined (the model-local QLinear
   function is kept: ONNX Runtime runs its body, TensorRT maps the node to the plugin), after the weights
   became inputs, so nothing folds a weight into a transformed copy that would no longer be in the weight
   file. All remaining ``Constant`` nodes are lifted to initializers, so every ``axes``-style input the
   parser requires to be an initializer is one (``ReduceMean`` took its axes from ``Reshape(Constant)``:
   "Axis input must be an initializer!").
4. **Sequence ops → Slice.** ``SplitToSequence`` + ``SequenceAt`` (no parser importer) with constant split
   sizes and positions become one ``Slice`` per ``SequenceAt`` (initializer starts/ends/axes), named as the
   ``SequenceAt`` output, so consumers are untouched.

The twin is checked by :mod:`adatsq.export.trt_check` in the export stage (a violation fails the compile).
ONNX Runtime runs the twin when the weights are fed as inputs (:func:`weight_feeds`); the tests compare it
with ``config_NN.onnx`` on all three tiny families. **Not run through TensorRT** (none can be installed where
this was written): the form follows the parser's documented tables, checked statically.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from adatsq.core.layout import TRT_GRAPH_SUFFIX, config_tag
from adatsq.export.graph_io import PREFIX

__all__ = [
    "TRT_SUFFIX",
    "WeightInput",
    "make_trt_graph",
    "rewrite_sequence_ops",
    "trt_graph_name",
    "weight_feeds",
    "weights_to_inputs",
    "write_trt_graph",
]

TRT_SUFFIX = TRT_GRAPH_SUFFIX
WEIGHTS_FILE = "weights.safetensors"

_DTYPE_NAMES: dict[int, str] = {
    TensorProto.UINT8: "uint8",
    TensorProto.INT8: "int8",
    TensorProto.FLOAT16: "float16",
    TensorProto.BFLOAT16: "bfloat16",
    TensorProto.FLOAT: "float32",
    TensorProto.INT32: "int32",  # CLQ's channel permutations (<layer>.obs_perm, Gather indices)
}


def trt_graph_name(config_id: int) -> str:
    """``config_NN.trt.onnx`` (in ``onnx/``, beside ``config_NN.onnx``)."""
    return f"{config_tag(config_id)}{TRT_SUFFIX}"


@dataclasses.dataclass(frozen=True)
class WeightInput:
    """One weight graph input: ``name`` in the graph, ``key`` in weights.safetensors."""

    name: str
    key: str
    dtype: str
    shape: tuple[int, ...]

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "dtype": self.dtype, "shape": list(self.shape)}


def weights_to_inputs(
    model: onnx.ModelProto,
    layout: Mapping[str, Mapping[str, Any]],
    location: str = WEIGHTS_FILE,
    prefix: str = PREFIX,
    embedded: list[str] | None = None,
) -> list[WeightInput]:
    """In place: every external initializer stored in ``location`` → a graph input (same name, dtype, shape).

    ``layout`` is :func:`adatsq.passes.onnx.externalize_weights.safetensors_layout` of the weight file; each
    initializer's (offset, length, dtype, shape) must be its entry's, so a weight input always names exactly
    the bytes a runner binds. Initializers not in the file (Hadamard factors, small constants) stay.

    Exception: an INT4 initializer over UINT8 bytes of the file (WeightOnlyDequantPass's weight-only layers at
    int4 with a TensorRT block size, feeding ``DequantizeLinear``) stays an external initializer, named in
    ``embedded``: TensorRT's INT4 weight-only path needs the weight rooted at a constant and INT4 is no
    network-input type, so those bytes are embedded in every engine (not shared). The tiny models and the W3
    Flux-dev export have no such layer (int3 weights, or group 32)."""
    graph = model.graph
    keep: list[TensorProto] = []
    found: list[WeightInput] = []
    for init in graph.initializer:
        ext = {e.key: e.value for e in init.external_data}
        if init.data_location != TensorProto.EXTERNAL or ext.get("location") != location:
            keep.append(init)
            continue
        key = init.name.removeprefix(prefix)
        rec = layout.get(key)
        if rec is None:
            raise ValueError(f"initializer {init.name!r} points into {location} but the file has no {key!r}")
        span = (int(ext.get("offset", -1)), int(ext.get("length", -1)))
        if span != (rec["offset"], rec["length"]):
            raise ValueError(f"initializer {init.name!r} does not match {location}[{key!r}]")
        if init.data_type == TensorProto.INT4 and rec["dtype"] == TensorProto.UINT8:
            keep.append(init)
            if embedded is not None:
                embedded.append(init.name)
            continue
        if rec["dtype"] != init.data_type:
            raise ValueError(f"initializer {init.name!r} does not match {location}[{key!r}]")
        if tuple(init.dims) != tuple(rec["shape"]):
            raise ValueError(f"initializer {init.name!r} shape {tuple(init.dims)} != file {rec['shape']}")
        if init.data_type not in _DTYPE_NAMES:
            raise ValueError(
                f"weight {init.name!r}: dtype {TensorProto.DataType.Name(init.data_type)} unsupported"
            )
        found.append(
            WeightInput(init.name, key, _DTYPE_NAMES[init.data_type], tuple(int(d) for d in init.dims))
        )
    del graph.initializer[:]
    graph.initializer.extend(keep)
    taken = {i.name for i in graph.input}
    for w in found:
        if w.name in taken:
            raise ValueError(f"weight {w.name!r} is already a graph input")
        graph.input.append(helper.make_tensor_value_info(w.name, _elem(w.dtype), list(w.shape)))
    return found


def _elem(dtype: str) -> int:
    return {v: k for k, v in _DTYPE_NAMES.items()}[dtype]


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Values known in the graph itself: initializers and ``Constant`` nodes with a ``value`` tensor."""
    known = {
        t.name: numpy_helper.to_array(t) for t in graph.initializer if t.data_location != TensorProto.EXTERNAL
    }
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for a in node.attribute:
                if a.name == "value":
                    known[node.output[0]] = numpy_helper.to_array(a.t)
    return known


def rewrite_sequence_ops(model: onnx.ModelProto) -> int:
    """In place: each ``SequenceAt(SplitToSequence(x, split), i)`` → ``Slice(x, starts, ends, axes)``.

    Element i of ``SplitToSequence`` along ``axis``: with 1-D ``split`` sizes s, rows [Σ_{j<i} s_j, Σ_{j≤i} s_j)
    (constant s: computed here, a negative i counted from the end; s computed in the graph, e.g. Flux's
    [txt_tokens, img_tokens] from Shape: ``ReduceSum(Slice(s, 0, i))`` in the graph, i ≥ 0 only); with a
    constant scalar chunk size c, rows [i·c, (i+1)·c) (Slice clamps the end of the last, shorter chunk); with
    no ``split``, row i, squeezed when ``keepdims`` = 0. ``i`` must be a constant; anything else is an error
    naming the node. Returns the number of ``SequenceAt`` nodes rewritten; the ``SplitToSequence`` nodes go
    (a sequence consumed by anything else is an error)."""
    graph = model.graph
    known = _constants(graph)
    splits = {
        n.output[0]: n for n in graph.node if n.op_type == "SplitToSequence" and n.domain in ("", "ai.onnx")
    }
    if not splits:
        return 0
    for node in graph.node:
        if node.op_type != "SequenceAt" and any(i in splits for i in node.input):
            raise ValueError(
                f"{node.op_type} node {node.name!r} consumes a SplitToSequence: only SequenceAt is rewritten"
            )
    if any(o.name in splits for o in graph.output):
        raise ValueError("a SplitToSequence output is a graph output")
    used = {n.name for n in graph.node} | {t.name for t in graph.initializer} | {i.name for i in graph.input}
    used |= {o for n in graph.node for o in n.output}
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[TensorProto] = []

    def fresh(base: str) -> str:
        name, k = base, 0
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        return name

    def const(base: str, values: Sequence[int]) -> str:
        name = fresh(base)
        new_inits.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        return name

    def node_(op: str, inputs: list[str], out: str, base: str, **attrs: Any) -> str:
        new_nodes.append(helper.make_node(op, inputs, [out], name=fresh(base), **attrs))
        return out

    def leading_sum(sizes: str, stop: int, tag: str) -> str:
        """Σ_{j<stop} sizes_j as a 1-element tensor (sizes computed in the graph)."""
        if stop == 0:
            return const(f"{tag}_zero", [0])
        ax0 = const(f"{tag}_ax0", [0])
        head = [sizes, const(f"{tag}_from", [0]), const(f"{tag}_to", [stop]), ax0]
        part = node_("Slice", head, fresh(f"{tag}_head"), f"{tag}_head_slice")
        return node_("ReduceSum", [part, ax0], fresh(tag), f"{tag}_sum", keepdims=1)

    count = 0
    for node in graph.node:
        if node.op_type == "SplitToSequence" and node.output[0] in splits:
            continue
        if node.op_type != "SequenceAt" or node.input[0] not in splits:
            new_nodes.append(node)
            continue
        split = splits[node.input[0]]
        attrs = {a.name: helper.get_attribute_value(a) for a in split.attribute}
        axis, keepdims = int(attrs.get("axis", 0)), int(attrs.get("keepdims", 1))
        if node.input[1] not in known:
            raise ValueError(f"SequenceAt {node.name!r}: position is not a constant")
        i = int(np.asarray(known[node.input[1]]).reshape(()))
        tag, out = node.name or node.output[0], node.output[0]
        x, sizes_name = split.input[0], (split.input[1] if len(split.input) > 1 else "")
        axes = const(f"{tag}_axes", [axis])
        squeeze = False
        if sizes_name and sizes_name not in known:
            if i < 0:
                raise ValueError(f"SequenceAt {node.name!r}: negative position with run-time split sizes")
            starts = leading_sum(sizes_name, i, f"{tag}_starts")
            ends = leading_sum(sizes_name, i + 1, f"{tag}_ends")
        else:
            sizes = np.asarray(known[sizes_name]).astype(np.int64) if sizes_name else None
            if sizes is not None and sizes.ndim == 1:
                bounds = np.concatenate([[0], np.cumsum(sizes)])
                i = i + len(sizes) if i < 0 else i
                if not 0 <= i < len(sizes):
                    raise ValueError(
                        f"SequenceAt {node.name!r}: position out of range of {len(sizes)} chunks"
                    )
                start, end = int(bounds[i]), int(bounds[i + 1])
            else:
                if i < 0:
                    raise ValueError(f"SequenceAt {node.name!r}: negative position with a chunk-size split")
                chunk = 1 if sizes is None else int(sizes.reshape(()))
                squeeze = sizes is None and keepdims == 0
                start, end = i * chunk, (i + 1) * chunk
            starts, ends = const(f"{tag}_starts", [start]), const(f"{tag}_ends", [end])
        sliced = fresh(f"{out}_rows") if squeeze else out
        node_("Slice", [x, starts, ends, axes], sliced, f"{tag}_slice")
        if squeeze:
            node_("Squeeze", [sliced, axes], out, f"{tag}_squeeze")
        count += 1
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(new_inits)
    return count


def _integer_only(node: Any) -> bool | None:
    """onnxscript ``should_fold``: never a node that reads or writes a floating-point tensor (nor Q/DQ)."""
    import onnx_ir as ir

    floats = {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE}
    if node.op_type in ("DequantizeLinear", "QuantizeLinear"):
        return False
    if any(v is not None and v.dtype in floats for v in (*node.inputs, *node.outputs)):
        return False
    return None


def _fold(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxscript's constant folder on the INTEGER/BOOL computations only (shapes, axes, indices: what the
    parser needs as initializers), twice (a fold can expose another); unused nodes removed; then every
    main-graph Constant lifted to an initializer. Float subexpressions stay for the runtime, so the twin
    computes exactly the float ops config_NN.onnx computes: folding them in numpy changed results in the last
    bits, which on the random tiny models flips quantizer ties (measured 1.9e-3 on tiny-flux; 0 with integer
    folding only). Q/DQ are never folded (TensorRT fuses them). Not the optimizer's pattern rewriter: it took
    ~90 % of the time and rewrites nothing the parser needs. Functions are never inlined."""
    import onnx_ir as ir
    import onnxscript.optimizer as optimizer
    from onnx_ir.passes.common import LiftConstantsToInitializersPass, RemoveUnusedNodesPass

    ir_model = ir.from_proto(model)
    for _ in range(2):
        if not optimizer.fold_constants(ir_model, should_fold=_integer_only).modified:
            break
    RemoveUnusedNodesPass()(ir_model)
    LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(ir_model)
    return ir.to_proto(ir_model)


def make_trt_graph(
    config_graph: onnx.ModelProto,
    layout: Mapping[str, Mapping[str, Any]],
    location: str = WEIGHTS_FILE,
    embedded: list[str] | None = None,
) -> tuple[onnx.ModelProto, list[WeightInput]]:
    """The twin of a configuration graph (loaded WITHOUT external data: the weights are never read) and its
    weight inputs, in graph-input order (``embedded``: see :func:`weights_to_inputs`). The graph's own inputs, its QLinear node names and the function are
    kept; ``ir_version`` and opsets are the source's."""
    model = onnx.ModelProto()
    model.CopyFrom(config_graph)
    weights = weights_to_inputs(model, layout, location, embedded=embedded)
    rewrite_sequence_ops(model)
    folded = _fold(model)
    folded.ir_version = config_graph.ir_version
    folded.producer_name = config_graph.producer_name or "adatsq"
    names = {i.name for i in folded.graph.input}
    # an input the folded graph no longer reads (none in our graphs) is dropped by the optimizer
    weights = [w for w in weights if w.name in names]
    data_inputs = [i.name for i in config_graph.graph.input]
    missing = [n for n in data_inputs if n not in names]
    if missing:
        raise ValueError(f"folding removed graph inputs {missing}")
    return folded, weights


def write_trt_graph(
    src: Path, dst: Path, layout: Mapping[str, Mapping[str, Any]], embedded: list[str] | None = None
) -> list[WeightInput]:
    """Read ``src`` (no external data), write its twin to ``dst`` atomically; returns its weight inputs."""
    from adatsq.core.atomic import atomic_write

    model, weights = make_trt_graph(onnx.load(str(src), load_external_data=False), layout, embedded=embedded)
    atomic_write(dst, lambda p: onnx.save_model(model, str(p)))
    return weights


def weight_feeds(weights: Path, inputs: Iterable[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """ONNX Runtime feeds for the weight inputs (io.json ``weight_inputs`` records) from the weight file.
    bfloat16 has no numpy dtype (and no ORT CPU MatMul): such a weight is an error here."""
    from safetensors.numpy import safe_open

    feeds: dict[str, np.ndarray] = {}
    with safe_open(str(weights), framework="np") as f:
        for w in inputs:
            if w["dtype"] == "bfloat16":
                raise ValueError(f"{w['name']}: bfloat16 weights cannot be fed to ONNX Runtime on the CPU")
            array = f.get_tensor(w["key"])
            if list(array.shape) != list(w["shape"]) or array.dtype != np.dtype(w["dtype"]):
                raise ValueError(
                    f"{w['name']}: file has {array.dtype}{list(array.shape)}, graph {w['dtype']}{w['shape']}"
                )
            feeds[w["name"]] = array
    return feeds

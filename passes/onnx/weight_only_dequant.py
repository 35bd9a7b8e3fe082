"""Lower weight-only ``adatsq::QLinear`` nodes to TensorRT's native form: blocked ``DequantizeLinear`` + MatMul.

A weight-only layer (a_bits = 16, no rotation: adaLN modulation, embedders) computes y = x·(q_w ⊙ s_w)ᵀ + b.
Where the packed weight is byte for byte an ONNX tensor type (int4: two's-complement nibbles, low nibble
first = ONNX INT4 raw data) and the group size is a block size TensorRT's INT4 weight-only path takes
(reference/tensorrt.md: blocks of 64 or 128 along one of the last two dims), the node becomes

    w      INT4 [N, K]      the SAME initializer re-typed (same bytes, same offset in weights.safetensors)
    s      = Cast(w_scale float16 [N, K/G] → float32)                 exact: float16 ⊂ float32
    W      = DequantizeLinear(w, s, axis=1, block_size=G)  [N, K]     = q_w ⊙ s_w, exact in float32
    y      = MatMul(x, Transpose(W)) (+ bias)                          x·Wᵀ (+ b)

which is contract 1 for a_bits = 16 up to float32 summation order. Every other QLinear (activation-quantized,
rotated, int3 weights, other group sizes) is left as it is. The graphs are float32, so no cast is needed
around the MatMul.
"""

from __future__ import annotations

from collections.abc import Collection

import onnx
from onnx import TensorProto, helper

from adatsq.core.contract import UNQUANTIZED
from adatsq.passes.base import Pass, PassConditionError, PassResult
from adatsq.plugins.formats import format_for_bits
from adatsq.plugins.onnx_op import DOMAIN, OP_TYPE

__all__ = ["TRT_INT4_BLOCK_SIZES", "WeightOnlyDequantPass"]

#: block sizes of TensorRT's INT4 weight-only quantization (reference/tensorrt.md §1)
TRT_INT4_BLOCK_SIZES = (64, 128)
_PACKED_TYPES = (TensorProto.UINT8, TensorProto.INT8)


def _attrs(node: onnx.NodeProto) -> dict[str, int | str]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class WeightOnlyDequantPass(Pass[onnx.ModelProto]):
    """QLinear(a_bits=16, rotate=0, w in a format with an ONNX raw type, G in ``block_sizes``) →
    DequantizeLinear + MatMul (in place). ``block_sizes=None`` accepts any G (ONNX Runtime takes any;
    for tests on tiny models only, since TensorRT would reject the graph)."""

    def __init__(self, block_sizes: Collection[int] | None = TRT_INT4_BLOCK_SIZES) -> None:
        self.block_sizes = None if block_sizes is None else tuple(block_sizes)

    def _lowers_to(self, node: onnx.NodeProto) -> int | None:
        """The ONNX element type the node's weight is re-typed to, or None if it stays a QLinear."""
        if node.domain != DOMAIN or node.op_type != OP_TYPE:
            return None
        a = _attrs(node)
        if a["a_bits"] != UNQUANTIZED or a["rotate"]:
            return None
        raw = format_for_bits(int(a["w_bits"])).onnx_raw_type
        if raw != "INT4":  # TensorRT's weight-only block DQ is INT4 (and FP4/FP8)
            return None
        if self.block_sizes is not None and a["group_size"] not in self.block_sizes:
            return None
        return getattr(TensorProto, raw)

    def _candidates(self, graph: onnx.GraphProto) -> dict[str, tuple[onnx.NodeProto, TensorProto, int]]:
        """Node name → (node, its packed-weight initializer, target element type) for every node to lower:
        a lowerable QLinear whose weight is an initializer of packed bytes that no other node reads."""
        inits = {t.name: t for t in graph.initializer}
        users: dict[str, int] = {}
        for node in graph.node:
            for i in node.input:
                users[i] = users.get(i, 0) + 1
        out = {}
        for node in graph.node:
            elem = self._lowers_to(node)
            w = inits.get(node.input[1]) if elem is not None else None
            if elem is not None and w is not None and w.data_type in _PACKED_TYPES and users[w.name] == 1:
                out[node.name or node.output[0]] = (node, w, elem)
        return out

    def call(self, target: onnx.ModelProto) -> PassResult[onnx.ModelProto]:
        graph = target.graph
        todo = self._candidates(graph)
        new_nodes: list[onnx.NodeProto] = []
        for node in graph.node:
            name = node.name or node.output[0]
            if name not in todo:
                new_nodes.append(node)
                continue
            _, w, elem = todo[name]
            a = _attrs(node)
            n, nbytes = (int(d) for d in w.dims)
            k = nbytes * 8 // int(a["w_bits"])
            w.data_type = elem  # same raw bytes: the int4 packing is the ONNX INT4 layout
            del w.dims[:]
            w.dims.extend([n, k])
            scale = helper.make_node(
                "Cast", [node.input[2]], [f"{name}/scale_f32"], name=f"{name}/scale_f32", to=TensorProto.FLOAT
            )
            dq = helper.make_node(
                "DequantizeLinear",
                [w.name, scale.output[0]],
                [f"{name}/weight"],
                name=f"{name}/dequantize",
                axis=1,
                block_size=int(a["group_size"]),
            )
            wt = helper.make_node(
                "Transpose", dq.output, [f"{name}/weight_t"], name=f"{name}/transpose", perm=[1, 0]
            )
            has_bias = len(node.input) > 3 and node.input[3] != ""
            mm_out = f"{name}/matmul" if has_bias else node.output[0]
            new_nodes += [
                scale,
                dq,
                wt,
                helper.make_node("MatMul", [node.input[0], wt.output[0]], [mm_out], name=mm_out),
            ]
            if has_bias:
                new_nodes.append(
                    helper.make_node("Add", [mm_out, node.input[3]], [node.output[0]], name=f"{name}/bias")
                )
        del graph.node[:]
        graph.node.extend(new_nodes)
        return PassResult(target, bool(todo))

    def ensures(self, result: onnx.ModelProto) -> None:
        left = self._candidates(result.graph)
        if left:
            raise PassConditionError(f"{self.name}: weight-only nodes not lowered: {sorted(left)[:3]}")

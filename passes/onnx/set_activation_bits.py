"""Set the ``a_bits`` attribute of every ``adatsq::QLinear`` node from one schedule configuration.

Node → layer mapping: the exporter names each QLinear's packed-weight initializer after the torch buffer
``<layer>.w_packed`` (plus the export wrapper's prefix, e.g. ``model.``). The pass strips the suffix and the
prefix (and a rotation block's ``_<b>``), so the mapping is exact and does not depend on node names or
exporter metadata; it also renames each node to its layer name (block b > 0: ``<layer>#<b>``) so that graphs, Polygraphy output and TensorRT layer info read naturally.
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx
from onnx import helper

from adatsq.core.contract import UNQUANTIZED
from adatsq.passes.base import Pass, PassConditionError, PassResult
from adatsq.passes.quant_linear import QUANT_TENSOR
from adatsq.plugins.onnx_op import DOMAIN, OP_TYPE

__all__ = ["SetActivationBitsPass", "qlinear_layers"]


def _is_qlinear(node: onnx.NodeProto) -> bool:
    return node.domain == DOMAIN and node.op_type == OP_TYPE


def qlinear_layers(model: onnx.ModelProto, prefix: str = "model.") -> dict[str, list[onnx.NodeProto]]:
    """Layer name → its QLinear nodes, from each node's packed-weight input ``<prefix><layer>.w_packed``
    (one node per layer; a layer with several rotation blocks has one node per block, reading
    ``<layer>.w_packed``, ``<layer>.w_packed_1``, ..., in block order)."""
    out: dict[str, dict[int, onnx.NodeProto]] = {}
    for node in model.graph.node:
        if not _is_qlinear(node):
            continue
        w = node.input[1]
        found = QUANT_TENSOR.fullmatch(w)  # <layer>.w_packed (rotation block 0) or <layer>.w_packed_<b>
        if found is None or found["kind"] != "w_packed":
            raise PassConditionError(
                f"QLinear node {node.name!r} reads {w!r}, not a '<layer>.w_packed' tensor"
            )
        layer, block = found["layer"].removeprefix(prefix), int(found["block"] or 0)
        nodes = out.setdefault(layer, {})
        if block in nodes:
            raise PassConditionError(f"two QLinear nodes read the weights of layer {layer!r} (block {block})")
        nodes[block] = node
    return {layer: [nodes[b] for b in sorted(nodes)] for layer, nodes in out.items()}


def _attr(node: onnx.NodeProto, name: str) -> onnx.AttributeProto:
    for a in node.attribute:
        if a.name == name:
            return a
    raise PassConditionError(f"QLinear node {node.name!r} has no attribute {name!r}")


class SetActivationBitsPass(Pass[onnx.ModelProto]):
    """a_bits(node of layer l) ← ``bits[l]`` for the activation-quantized layers; every other QLinear
    (weight-only layers) keeps a_bits = 16. In place; ``modified`` says whether any attribute changed."""

    def __init__(self, bits: Mapping[str, int], prefix: str = "model.") -> None:
        self.bits = {k: int(v) for k, v in bits.items()}
        self.prefix = prefix

    def requires(self, target: onnx.ModelProto) -> None:
        layers = qlinear_layers(target, self.prefix)
        missing = [n for n in self.bits if n not in layers]
        if missing:
            raise PassConditionError(f"{self.name}: no QLinear node for layers {missing[:3]}")

    def call(self, target: onnx.ModelProto) -> PassResult[onnx.ModelProto]:
        modified = False
        for layer, nodes in qlinear_layers(target, self.prefix).items():
            want = self.bits.get(layer, UNQUANTIZED)
            for block, node in enumerate(nodes):
                attr = _attr(node, "a_bits")
                if attr.i != want:
                    attr.CopyFrom(helper.make_attribute("a_bits", want))
                    modified = True
                name = layer if block == 0 else f"{layer}#{block}"
                if node.name != name:
                    node.name = name
                    modified = True
        return PassResult(target, modified)

    def ensures(self, result: onnx.ModelProto) -> None:
        for layer, nodes in qlinear_layers(result, self.prefix).items():
            if any(_attr(node, "a_bits").i != self.bits.get(layer, UNQUANTIZED) for node in nodes):
                raise PassConditionError(f"{self.name}: a_bits of {layer!r} not set")

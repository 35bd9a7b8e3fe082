"""Set the ``a_bits`` attribute of every ``adatsq::QLinear`` node from one schedule configuration.

Node → layer mapping: the exporter names each QLinear's packed-weight initializer after the torch buffer
``<layer>.w_packed`` (plus the export wrapper's prefix, e.g. ``model.``). The pass strips the suffix and the
prefix, so the mapping is exact and does not depend on node names or exporter metadata; it also renames
each node to its layer name so that graphs, Polygraphy output and TensorRT layer info read naturally.
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx
from onnx import helper

from adatsq.core.contract import UNQUANTIZED
from adatsq.passes.base import Pass, PassConditionError, PassResult
from adatsq.plugins.onnx_op import DOMAIN, OP_TYPE

__all__ = ["SetActivationBitsPass", "qlinear_layers"]

WEIGHT_SUFFIX = ".w_packed"


def _is_qlinear(node: onnx.NodeProto) -> bool:
    return node.domain == DOMAIN and node.op_type == OP_TYPE


def qlinear_layers(model: onnx.ModelProto, prefix: str = "model.") -> dict[str, onnx.NodeProto]:
    """Layer name → QLinear node, from the node's packed-weight input ``<prefix><layer>.w_packed``."""
    out: dict[str, onnx.NodeProto] = {}
    for node in model.graph.node:
        if not _is_qlinear(node):
            continue
        w = node.input[1]
        if not w.endswith(WEIGHT_SUFFIX):
            raise PassConditionError(
                f"QLinear node {node.name!r} reads {w!r}, not a '<layer>.w_packed' tensor"
            )
        layer = w[: -len(WEIGHT_SUFFIX)].removeprefix(prefix)
        if layer in out:
            raise PassConditionError(f"two QLinear nodes read the weights of layer {layer!r}")
        out[layer] = node
    return out


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
        for layer, node in qlinear_layers(target, self.prefix).items():
            want = self.bits.get(layer, UNQUANTIZED)
            attr = _attr(node, "a_bits")
            if attr.i != want:
                attr.CopyFrom(helper.make_attribute("a_bits", want))
                modified = True
            if node.name != layer:
                node.name = layer
                modified = True
        return PassResult(target, modified)

    def ensures(self, result: onnx.ModelProto) -> None:
        for layer, node in qlinear_layers(result, self.prefix).items():
            if _attr(node, "a_bits").i != self.bits.get(layer, UNQUANTIZED):
                raise PassConditionError(f"{self.name}: a_bits of {layer!r} not set")

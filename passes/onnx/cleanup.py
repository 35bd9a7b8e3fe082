"""Final cleanup of a configuration graph: no dead nodes or dangling initializers (onnx-ir's
``RemoveUnusedNodesPass``, through :func:`~adatsq.plugins.onnx_op.remove_unused_nodes`), no exporter metadata
(stack traces of the build machine), shape inference, and ``onnx.checker`` with ``full_check``.

Shape inference and the checker run on :func:`checkable` (external initializers as typed graph inputs):
the checker's external-data checks resolve paths against the working directory, not the graph's folder;
the byte ranges are verified by :class:`~adatsq.passes.onnx.externalize_weights.ExternalizeWeightsPass` anyway.
"""

from __future__ import annotations

import onnx

from adatsq.passes.base import Pass, PassConditionError, PassResult
from adatsq.plugins.onnx_op import remove_unused_nodes

__all__ = ["CleanupPass"]


def _used_names(graph: onnx.GraphProto) -> set[str]:
    used = {o.name for o in graph.output}
    for node in graph.node:
        used.update(i for i in node.input if i)
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                used |= _used_names(a.g)
    return used


class CleanupPass(Pass[onnx.ModelProto]):
    """Remove dead nodes and unused initializers, drop metadata, infer shapes, check (in place)."""

    def __init__(self, strip_metadata: bool = True, check: bool = True) -> None:
        self.strip_metadata = strip_metadata
        self.check = check

    def call(self, target: onnx.ModelProto) -> PassResult[onnx.ModelProto]:
        modified = remove_unused_nodes(target)
        graph = target.graph
        if self.strip_metadata:
            for node in graph.node:
                if len(node.metadata_props):
                    del node.metadata_props[:]
                    modified = True
            del graph.value_info[:]
        inferred = onnx.shape_inference.infer_shapes(
            checkable(target), check_type=True, strict_mode=True, data_prop=True
        )
        del inferred  # a check only: stored value_info can pin symbolic dims ORT then enforces wrongly
        return PassResult(target, modified)

    def ensures(self, result: onnx.ModelProto) -> None:
        used = _used_names(result.graph)
        dangling = [i.name for i in result.graph.initializer if i.name not in used]
        if dangling:
            raise PassConditionError(f"{self.name}: dangling initializers {dangling[:3]}")
        if self.check:
            onnx.checker.check_model(checkable(result), full_check=True)


def checkable(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy for ``onnx.checker``: external initializers become graph inputs of the same type and shape.

    The checker insists on opening external files relative to the working directory; as inputs, the tensors keep their types and shapes for the full check and shape inference.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    for init in list(graph.initializer):
        if init.data_location == onnx.TensorProto.EXTERNAL:
            graph.initializer.remove(init)
            graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return out

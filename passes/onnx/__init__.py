"""ONNX graph passes (one per file), all following the pass contract of :mod:`adatsq.passes.base`.

They specialise the ONE exported graph per distinct configuration of ``schedule.json``:

* :class:`~adatsq.passes.onnx.set_activation_bits.SetActivationBitsPass`: a_bits of every QLinear node
  from the configuration (layer name ← the node's packed-weight initializer name ``<layer>.w_packed``);
* :class:`~adatsq.passes.onnx.weight_only_dequant.WeightOnlyDequantPass`: weight-only int4 layers become
  TensorRT's native blocked ``DequantizeLinear`` + MatMul (block 64/128); others stay QLinear;
* :class:`~adatsq.passes.onnx.externalize_weights.ExternalizeWeightsPass`: every parameter initializer
  points into ``weights.safetensors`` by byte offset (one copy of the weights for all graphs);
* :class:`~adatsq.passes.onnx.cleanup.CleanupPass`: drops dead nodes and unused initializers (onnx-ir),
  strips exporter metadata, runs shape inference and ``onnx.checker`` (full check).
"""

from adatsq.passes.onnx.cleanup import CleanupPass
from adatsq.passes.onnx.externalize_weights import ExternalizeWeightsPass, safetensors_layout
from adatsq.passes.onnx.set_activation_bits import SetActivationBitsPass, qlinear_layers
from adatsq.passes.onnx.weight_only_dequant import TRT_INT4_BLOCK_SIZES, WeightOnlyDequantPass

__all__ = [
    "CleanupPass",
    "ExternalizeWeightsPass",
    "SetActivationBitsPass",
    "TRT_INT4_BLOCK_SIZES",
    "WeightOnlyDequantPass",
    "qlinear_layers",
    "safetensors_layout",
]

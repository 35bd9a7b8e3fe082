"""``torch.ops.adatsq.qlinear``: the quantized linear as one torch custom op.

Signature: ``qlinear(x, w_packed, w_scale, bias, a_bits, w_bits, group_size, rotate) -> y`` with
``w_packed`` in the registered format of ``w_bits`` (plugins/formats.py), ``w_scale`` float16 (N, K/G),
``y`` in ``x.dtype``. The CPU implementation is the reference (plugins/reference.py); GPU kernels register
a CUDA implementation in ``plugins/kernels``; the fake implementation gives torch.compile, CUDA graphs and
the ONNX exporter the output shape. ``export/`` translates the op into the ONNX node of plugins/onnx_op.py.
"""

from __future__ import annotations

import torch

from adatsq.plugins.reference import qlinear_reference_packed

__all__ = ["qlinear"]

_LIB = "adatsq"


@torch.library.custom_op(f"{_LIB}::qlinear", mutates_args=())
def qlinear(
    x: torch.Tensor,
    w_packed: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    a_bits: int,
    w_bits: int,
    group_size: int,
    rotate: bool,
) -> torch.Tensor:
    cpu_bias = None if bias is None else bias.cpu()
    y = qlinear_reference_packed(
        x.cpu(), w_packed.cpu(), w_scale.cpu(), cpu_bias, a_bits, w_bits, group_size, rotate
    )
    return y.to(device=x.device, dtype=x.dtype)


@qlinear.register_fake
def _(
    x: torch.Tensor,
    w_packed: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    a_bits: int,
    w_bits: int,
    group_size: int,
    rotate: bool,
) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], w_scale.shape[0]))


# The CUDA implementation (plugins/kernels) registers itself on import; it needs no GPU or Triton to import.
from adatsq.plugins import kernels as _kernels  # noqa: E402, F401

"""GPU kernels of the quantized linear op, registered as the CUDA implementation of ``adatsq::qlinear``.

Importing this package needs neither a GPU, Triton nor nvcc: it only registers
:func:`adatsq.plugins.kernels.api.qlinear_cuda` for the CUDA dispatch key. Triton and the CUDA C++
library (plugins/csrc, loaded through ctypes) are imported / built on the first CUDA call.
"""

from __future__ import annotations

import torch

import adatsq.plugins.op  # noqa: F401  (defines adatsq::qlinear)

__all__ = ["register_cuda"]

_REGISTERED = False


def register_cuda() -> None:
    """Register the CUDA implementation of ``adatsq::qlinear`` once (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return

    def _impl(
        x: torch.Tensor,
        w_packed: torch.Tensor,
        w_scale: torch.Tensor,
        bias: torch.Tensor | None,
        a_bits: int,
        w_bits: int,
        group_size: int,
        rotate: bool,
    ) -> torch.Tensor:
        from adatsq.plugins.kernels.api import qlinear_cuda

        return qlinear_cuda(x, w_packed, w_scale, bias, a_bits, w_bits, group_size, rotate)

    torch.library.register_kernel("adatsq::qlinear", "cuda", _impl)
    _REGISTERED = True


register_cuda()

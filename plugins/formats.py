"""Weight packing formats, one registry entry per format: the only place that knows a layout.

int4: two codes per byte along K, low nibble first, two's-complement nibbles: byte for byte the raw data
      of an ONNX INT4 tensor, so ONNX initializers can point straight into weights.safetensors.
int3: exactly 3 bits per code: 8 codes (offset by +4, 0..7) fill one 24-bit little-endian word of 3 bytes,
      code i in bits [3i, 3i+3); K must be a multiple of 8.
int8: one signed byte per code.

``FORMATS[name]`` gives the packer; ``format_for_bits(bits)`` picks the format of a weight width.
Kernels register themselves against a format name in ``plugins/kernels`` (no if/elif over formats).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

__all__ = ["FORMATS", "WeightFormat", "format_for_bits", "register_format"]


def _pack_int4(codes: torch.Tensor) -> torch.Tensor:
    n, k = codes.shape
    u = (codes.to(torch.int16) & 0x0F).to(torch.uint8).reshape(n, k // 2, 2)
    return (u[..., 0] | (u[..., 1] << 4)).contiguous()


def _unpack_int4(packed: torch.Tensor, k: int) -> torch.Tensor:
    lo = (packed & 0x0F).to(torch.int16)
    hi = (packed >> 4).to(torch.int16)
    lo = torch.where(lo >= 8, lo - 16, lo)
    hi = torch.where(hi >= 8, hi - 16, hi)
    return torch.stack([lo, hi], dim=-1).reshape(packed.shape[0], k).to(torch.int8)


def _pack_int3(codes: torch.Tensor) -> torch.Tensor:
    n, k = codes.shape
    u = (codes.to(torch.int32) + 4).reshape(n, k // 8, 8)
    shifts = torch.arange(0, 24, 3, dtype=torch.int32, device=codes.device)
    word = (u << shifts).sum(dim=-1)
    out = torch.stack([(word >> s) & 0xFF for s in (0, 8, 16)], dim=-1)
    return out.to(torch.uint8).reshape(n, k // 8 * 3).contiguous()


def _unpack_int3(packed: torch.Tensor, k: int) -> torch.Tensor:
    n = packed.shape[0]
    b = packed.to(torch.int32).reshape(n, k // 8, 3)
    word = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
    shifts = torch.arange(0, 24, 3, dtype=torch.int32, device=packed.device)
    codes = ((word.unsqueeze(-1) >> shifts) & 0x7) - 4
    return codes.reshape(n, k).to(torch.int8)


def _pack_int8(codes: torch.Tensor) -> torch.Tensor:
    return codes.to(torch.int8).contiguous()


def _unpack_int8(packed: torch.Tensor, k: int) -> torch.Tensor:
    return packed.to(torch.int8).reshape(packed.shape[0], k)


@dataclasses.dataclass(frozen=True)
class WeightFormat:
    """A packed weight layout: ``pack(codes int8 N×K) -> uint8/int8 N×bytes``, ``unpack(packed, K)``."""

    name: str
    bits: int
    k_multiple: int
    pack: Callable[[torch.Tensor], torch.Tensor]
    unpack: Callable[[torch.Tensor, int], torch.Tensor]
    #: ONNX element type (``onnx.TensorProto`` attribute name) whose raw layout IS this packing, so a
    #: standard blocked ``DequantizeLinear`` can read the stored bytes unchanged; None when there is none.
    onnx_raw_type: str | None = None

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1))

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def packed_bytes(self, n: int, k: int) -> int:
        return n * ((k * self.bits + 7) // 8)

    def check(self, codes: torch.Tensor) -> None:
        if codes.dim() != 2 or codes.shape[1] % self.k_multiple:
            raise ValueError(f"{self.name}: K={codes.shape[-1]} must be a multiple of {self.k_multiple}")
        if codes.numel() and (int(codes.min()) < self.qmin or int(codes.max()) > self.qmax):
            raise ValueError(f"{self.name}: codes outside [{self.qmin}, {self.qmax}]")


FORMATS: dict[str, WeightFormat] = {}


def register_format(fmt: WeightFormat) -> WeightFormat:
    if fmt.name in FORMATS:
        raise ValueError(f"weight format {fmt.name!r} registered twice")
    FORMATS[fmt.name] = fmt
    return fmt


register_format(WeightFormat("int3", 3, 8, _pack_int3, _unpack_int3))
register_format(WeightFormat("int4", 4, 2, _pack_int4, _unpack_int4, onnx_raw_type="INT4"))
register_format(WeightFormat("int8", 8, 1, _pack_int8, _unpack_int8, onnx_raw_type="INT8"))


def format_for_bits(bits: int) -> WeightFormat:
    for fmt in FORMATS.values():
        if fmt.bits == bits:
            return fmt
    raise ValueError(f"no weight format of {bits} bits; known: {sorted(f.bits for f in FORMATS.values())}")

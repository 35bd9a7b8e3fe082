"""CPU checks of what the GPU kernels assume, without a GPU, Triton or nvcc.

* The in-kernel weight unpacking (Triton: joins of per-position codes, the float16 magic number
  0x6400 | u = 1024 + u) reproduces plugins/formats.py bit for bit for int3 and int4.
* The butterfly schedule of rotate_quant.cu (in-register h < 8, lane shuffles 8 ≤ h < 256, shared-memory
  stages h ≥ 256, then H_mᵀ) equals plugins/hadamard.py:rotate.
* Importing adatsq.plugins.kernels registers the CUDA implementation without needing CUDA.
* The cache of tensors derived from resident weights (expansion, transposed scales) keys on storage, tag and
  shape.
"""

from __future__ import annotations

import math

import pytest
import torch

from adatsq.plugins.formats import format_for_bits
from adatsq.plugins.hadamard import hadamard_factors, paley_base, rotate


def _codes(n: int, k: int, bits: int) -> torch.Tensor:
    return torch.randint(-(2 ** (bits - 1)), 2 ** (bits - 1), (n, k), dtype=torch.int8)


def _magic_fp16(u: torch.Tensor, offset: int) -> torch.Tensor:
    """float16 with bits 0x6400 | u equals 1024 + u; minus (1024 + offset) is the code, exactly."""
    h = (u.to(torch.int32) | 0x6400).to(torch.int16).view(torch.float16)
    return h.float() - (1024.0 + offset)


@pytest.mark.parametrize("bits", [3, 4])
def test_pack_roundtrip_bit_exact(bits: int) -> None:
    fmt = format_for_bits(bits)
    codes = _codes(64, 1024, bits)
    packed = fmt.pack(codes)
    assert packed.shape == (64, 1024 * bits // 8)
    assert torch.equal(fmt.unpack(packed, 1024), codes)
    assert torch.equal(fmt.pack(fmt.unpack(packed, 1024)), packed)


def test_int4_kernel_unpack_matches_format() -> None:
    codes = _codes(32, 256, 4)
    byts = format_for_bits(4).pack(codes).to(torch.int32)
    # kernel: u = nibble ^ 8 (= code + 8), low nibble first (tl.join(lo, hi) then reshape)
    u = torch.stack([(byts & 15) ^ 8, (byts >> 4) ^ 8], dim=-1).reshape(32, 256)
    assert torch.equal(_magic_fp16(u, 8), codes.float())


def test_int3_kernel_unpack_matches_format() -> None:
    codes = _codes(32, 256, 3)
    byts = format_for_bits(3).pack(codes).to(torch.int32).reshape(32, 32, 3)
    word = byts[..., 0] | (byts[..., 1] << 8) | (byts[..., 2] << 16)
    u = [(word >> (3 * i)) & 7 for i in range(8)]

    # tl.join(tl.join(tl.join(u0, u4), tl.join(u2, u6)), tl.join(tl.join(u1, u5), tl.join(u3, u7))):
    # element [a, b, c] (join adds the minor axis) = u[4a + 2b + c], so a row-major reshape is in order.
    def join(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([x, y], dim=-1)

    t = join(join(join(u[0], u[4]), join(u[2], u[6])), join(join(u[1], u[5]), join(u[3], u[7])))
    assert torch.equal(_magic_fp16(t.reshape(32, 256), 4), codes.float())


def _kernel_schedule_rotate(x: torch.Tensor) -> torch.Tensor:
    """The stage order of rotate_quant.cu, emulated in float64 on one token."""
    k = x.shape[-1]
    m, p = hadamard_factors(k)
    v = x.double().clone()

    def stage(h: int) -> None:
        y = v.reshape(-1, p // (2 * h), 2, h)  # within each segment of p: pairs at distance h
        a, b = y[:, :, 0].clone(), y[:, :, 1].clone()
        y[:, :, 0], y[:, :, 1] = a + b, a - b

    for h in (1, 2, 4):  # registers
        stage(h)
    h = 8
    while h < p and h < 256:  # lane shuffles
        stage(h)
        h *= 2
    while h < p:  # shared memory
        stage(h)
        h *= 2
    if m > 1:
        v = (paley_base(m).t() @ v.reshape(m, p)).reshape(k)
    return v / math.sqrt(k)


@pytest.mark.parametrize("k", [3072, 12288, 15360, 1536, 8960, 3840, 10240])
def test_butterfly_schedule_equals_rotation(k: int) -> None:
    x = torch.randn(k, dtype=torch.float64)
    torch.testing.assert_close(
        _kernel_schedule_rotate(x), rotate(x.unsqueeze(0)).squeeze(0), rtol=1e-12, atol=1e-12
    )


def test_kernels_import_registers_cuda_impl_without_cuda() -> None:
    import adatsq.plugins.kernels as kernels

    kernels.register_cuda()  # idempotent
    x = torch.randn(3, 256)
    codes = _codes(8, 256, 4)
    scale = torch.full((8, 2), 0.01, dtype=torch.float16)
    y = torch.ops.adatsq.qlinear(x, format_for_bits(4).pack(codes), scale, None, 4, 4, 128, True)
    assert y.shape == (3, 8)


def test_int3_planes_roundtrip_and_kernel_decode() -> None:
    from adatsq.plugins.kernels.layouts import int3_planes, unpack_int3_planes

    codes = _codes(16, 512, 3)
    planes = int3_planes(codes)
    assert planes.shape == (16, 512 * 3 // 8)  # exactly 3 bits per code
    assert torch.equal(unpack_int3_planes(planes, 512), codes)
    assert torch.equal(format_for_bits(3).unpack(format_for_bits(3).pack(codes), 512), codes)
    # the Triton decode: u(16i + t) = ((L_i >> 2t) & 3) | (((H_{i//2} >> (16(i%2) + t)) & 1) << 2)
    w = planes.view(torch.int32).reshape(16, 4, 12)
    lo, hi = w[..., :8], w[..., 8:]
    hi8 = torch.stack([hi, hi >> 16], -1).reshape(16, 4, 8)
    t = torch.arange(16, dtype=torch.int32)
    u = ((lo[..., None] >> (2 * t)) & 3) | (((hi8[..., None] >> t) & 1) << 2)
    assert torch.equal(_magic_fp16(u.reshape(16, 512), 4), codes.float())


def test_derived_builds_once_per_storage_tag_and_shape() -> None:
    from adatsq.plugins.kernels import api

    builds: list[str] = []

    def build(name: str) -> torch.Tensor:
        builds.append(name)
        return torch.full((2,), float(len(builds)))

    w = torch.arange(12, dtype=torch.int8).reshape(3, 4)
    first = api.derived(w, ("expanded", 4, True), lambda: build("a"))
    again = api.derived(w, ("expanded", 4, True), lambda: build("b"))
    assert again is first and builds == ["a"]
    api.derived(w, ("expanded", 4, False), lambda: build("c"))  # other tag: its own entry
    api.derived(w.view(4, 3), ("expanded", 4, True), lambda: build("d"))  # same address, other shape
    api.derived(w.clone(), ("expanded", 4, True), lambda: build("e"))  # other storage
    assert builds == ["a", "c", "d", "e"]

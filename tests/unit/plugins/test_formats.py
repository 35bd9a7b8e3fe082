"""Weight packing formats: bit-exact round trips, byte counts, the ONNX INT4 layout, the int3 layout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adatsq.plugins.formats import FORMATS, format_for_bits

SHAPES = [(1, 8), (3, 16), (17, 64), (64, 256)]


def _random_codes(fmt_name: str, n: int, k: int, seed: int = 0) -> torch.Tensor:
    fmt = FORMATS[fmt_name]
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(fmt.qmin, fmt.qmax + 1, (n, k), generator=gen, dtype=torch.int64)
    flat = codes.view(-1)
    flat[0], flat[-1] = fmt.qmin, fmt.qmax  # both extremes always present
    if flat.numel() > 3:
        flat[1], flat[2] = fmt.qmax, fmt.qmin
    return codes.to(torch.int8)


@pytest.mark.parametrize("name", ["int3", "int4", "int8"])
@pytest.mark.parametrize(("n", "k"), SHAPES)
def test_round_trip_bit_exact(name: str, n: int, k: int) -> None:
    fmt = FORMATS[name]
    codes = _random_codes(name, n, k, seed=n * k)
    fmt.check(codes)
    packed = fmt.pack(codes)
    assert packed.shape[0] == n
    assert packed.numel() * packed.element_size() == math.ceil(n * k * fmt.bits / 8)
    back = fmt.unpack(packed, k)
    assert back.dtype == torch.int8
    assert torch.equal(back, codes)


@pytest.mark.parametrize("name", ["int3", "int4", "int8"])
def test_every_code_value_round_trips(name: str) -> None:
    fmt = FORMATS[name]
    values = torch.arange(fmt.qmin, fmt.qmax + 1, dtype=torch.int8)
    k = math.lcm(values.numel(), fmt.k_multiple)
    codes = values.repeat(k // values.numel()).reshape(1, k)
    assert torch.equal(fmt.unpack(fmt.pack(codes), k), codes)


@pytest.mark.parametrize("name", ["int3", "int4", "int8"])
def test_packed_bytes_formula(name: str) -> None:
    fmt = FORMATS[name]
    for n, k in SHAPES:
        assert (
            fmt.packed_bytes(n, k)
            == math.ceil(n * k * fmt.bits / 8)
            == fmt.pack(_random_codes(name, n, k)).numel()
        )


def test_int4_is_onnx_int4_raw_layout() -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    codes = _random_codes("int4", 6, 32, seed=7)
    packed = FORMATS["int4"].pack(codes)
    values = codes.numpy().astype(np.int8)
    # onnx's own packing of an INT4 tensor (two's-complement nibbles, element 2i in the low nibble)
    tensor = helper.make_tensor("w", onnx.TensorProto.INT4, list(values.shape), values.flatten().tolist())
    onnx_bytes = bytes(tensor.raw_data) if tensor.raw_data else bytes(np.asarray(tensor.int32_data, np.uint8))
    assert bytes(packed.numpy().tobytes()) == onnx_bytes
    # and onnx reads our bytes back as the same values
    ours = helper.make_tensor(
        "w", onnx.TensorProto.INT4, list(values.shape), packed.numpy().tobytes(), raw=True
    )
    np.testing.assert_array_equal(numpy_helper.to_array(ours).astype(np.int8), values)
    # hand check: (−8, 7) → 0x78, (1, −1) → 0xF1, (0, −2) → 0xE0
    hand = FORMATS["int4"].pack(torch.tensor([[-8, 7, 1, -1, 0, -2]], dtype=torch.int8))
    assert hand.tolist() == [[0x78, 0xF1, 0xE0]]


def test_int4_matches_ml_dtypes_from_array() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from onnx import numpy_helper

    codes = _random_codes("int4", 4, 16, seed=8)
    tensor = numpy_helper.from_array(codes.numpy().astype(ml_dtypes.int4))
    assert bytes(FORMATS["int4"].pack(codes).numpy().tobytes()) == bytes(tensor.raw_data)


def test_int3_hand_packed_layout() -> None:
    """8 codes + 4 → u0..u7 ∈ [0, 7], word = Σ u_i << 3i, stored as 3 little-endian bytes."""
    codes = torch.tensor([[-4, -3, -2, -1, 0, 1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3]], dtype=torch.int8)
    # first 8: u = 0..7 → word = Σ i << 3i = 0o76543210 = 0xFAC688 → bytes 88 C6 FA
    # next 8: u = 7 everywhere → word = 0xFFFFFF
    packed = FORMATS["int3"].pack(codes)
    assert packed.dtype == torch.uint8
    assert packed.tolist() == [[0x88, 0xC6, 0xFA, 0xFF, 0xFF, 0xFF]]
    zeros = FORMATS["int3"].pack(torch.zeros(1, 8, dtype=torch.int8))  # u = 4 → 0o44444444 = 0x924924
    assert zeros.tolist() == [[0x24, 0x49, 0x92]]


def test_int8_is_plain_bytes() -> None:
    codes = _random_codes("int8", 3, 8)
    packed = FORMATS["int8"].pack(codes)
    assert packed.dtype == torch.int8
    assert torch.equal(packed, codes)


@pytest.mark.parametrize("name", ["int3", "int4", "int8"])
def test_check_rejects_out_of_range(name: str) -> None:
    fmt = FORMATS[name]
    k = 8
    ok = torch.zeros(2, k, dtype=torch.int16)
    fmt.check(ok)
    for bad_value in (fmt.qmin - 1, fmt.qmax + 1):  # int16 holds −129 and 128 for int8
        bad = ok.clone()
        bad[1, 3] = bad_value
        with pytest.raises(ValueError, match="outside"):
            fmt.check(bad)


@pytest.mark.parametrize(("name", "k"), [("int3", 12), ("int4", 7)])
def test_check_rejects_bad_k(name: str, k: int) -> None:
    with pytest.raises(ValueError, match="multiple"):
        FORMATS[name].check(torch.zeros(2, k, dtype=torch.int8))


def test_format_for_bits() -> None:
    assert [format_for_bits(b).name for b in (3, 4, 8)] == ["int3", "int4", "int8"]
    with pytest.raises(ValueError, match="no weight format"):
        format_for_bits(5)

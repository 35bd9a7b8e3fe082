"""Point every parameter initializer of a graph into ``weights.safetensors`` (ONNX external data).

safetensors layout: bytes [0, 8) hold the header length n (uint64, little endian); bytes [8, 8 + n) a JSON
header mapping each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` with offsets
relative to the data start 8 + n. An initializer ``<prefix><name>`` whose safetensors entry has the same
dtype, shape and bytes becomes ``data_location = EXTERNAL`` with ``location`` = the weight file's name
relative to the graph's folder, ``offset`` = 8 + n + begin and ``length`` = end − begin; its inline bytes
are dropped. All configuration graphs then share ONE weight file and stay a few hundred KiB each.

ORT and ``onnx.checker`` refuse external data outside the model's folder (``../weights.safetensors`` is
rejected: "External data path escapes model directory"), and onnx.load refuses a symlinked or hard-linked
one, so the weight file itself lives in ``onnx/`` (the root ``weights.safetensors`` is a symlink to it);
see :func:`adatsq.export.onnx_export.place_weights`.

Initializers not in the file (the Hadamard factors ``adatsq_hadamard_<n>`` and the exporter's small
constants) stay inline; anything inline larger than ``max_inline_bytes`` is an error, so no parameter is
ever duplicated into a graph silently.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, numpy_helper

from adatsq.passes.base import Pass, PassConditionError, PassResult

__all__ = ["ExternalizeWeightsPass", "safetensors_layout"]

_ST_DTYPES: dict[str, int] = {
    "F32": TensorProto.FLOAT,
    "F16": TensorProto.FLOAT16,
    "BF16": TensorProto.BFLOAT16,
    "F64": TensorProto.DOUBLE,
    "U8": TensorProto.UINT8,
    "I8": TensorProto.INT8,
    "I16": TensorProto.INT16,
    "I32": TensorProto.INT32,
    "I64": TensorProto.INT64,
    "BOOL": TensorProto.BOOL,
}


def safetensors_layout(path: Path) -> dict[str, dict[str, Any]]:
    """name → {dtype (ONNX elem type), shape, offset (absolute, bytes), length} of a safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    base = 8 + n
    out: dict[str, dict[str, Any]] = {}
    for name, rec in header.items():
        if name == "__metadata__":
            continue
        begin, end = rec["data_offsets"]
        out[name] = {
            "dtype": _ST_DTYPES.get(rec["dtype"], -1),
            "shape": tuple(rec["shape"]),
            "offset": base + begin,
            "length": end - begin,
        }
    return out


def _inline_bytes(t: TensorProto) -> bytes:
    if t.HasField("raw_data"):
        return t.raw_data
    return numpy_helper.to_array(t).tobytes()


_PACKED_4BIT = (TensorProto.INT4, TensorProto.UINT4)
_BYTES = (TensorProto.UINT8, TensorProto.INT8)


def _same_storage(t: TensorProto, rec: dict[str, Any]) -> bool:
    """The initializer can be the file's tensor: same dtype and shape, or a 4-bit tensor [..., K] re-typed
    from the stored packed bytes [..., K/2] (two codes per byte, low nibble first, is the ONNX raw layout)."""
    dims, shape = tuple(t.dims), tuple(rec["shape"])
    if rec["dtype"] == t.data_type and shape == dims:
        return True
    return (
        t.data_type in _PACKED_4BIT
        and rec["dtype"] in _BYTES
        and len(dims) == len(shape) >= 1
        and dims[:-1] == shape[:-1]
        and (dims[-1] + 1) // 2 == shape[-1]
    )


def _is_external(t: TensorProto) -> bool:
    return t.data_location == TensorProto.EXTERNAL


class ExternalizeWeightsPass(Pass[onnx.ModelProto]):
    """Initializers ``<prefix><name>`` → external data at their offset in ``weights`` (in place).

    ``location`` is what the graph records (relative to the graph's folder). ``verify`` compares the inline
    bytes with the file's before dropping them (reads the file once; cheap next to the export itself).
    """

    def __init__(
        self,
        weights: Path,
        location: str = "weights.safetensors",
        prefix: str = "model.",
        verify: bool = True,
        max_inline_bytes: int = 64 * 1024,
    ) -> None:
        self.weights = Path(weights)
        self.location = location
        self.prefix = prefix
        self.verify = verify
        self.max_inline_bytes = max_inline_bytes
        self.layout = safetensors_layout(self.weights)

    def _key(self, name: str) -> str | None:
        key = name.removeprefix(self.prefix)
        return key if key in self.layout else None

    def call(self, target: onnx.ModelProto) -> PassResult[onnx.ModelProto]:
        data = self.weights.read_bytes() if self.verify else b""
        modified = False
        for t in target.graph.initializer:
            key = self._key(t.name)
            if key is None or _is_external(t):
                continue
            rec = self.layout[key]
            if not _same_storage(t, rec):
                raise PassConditionError(
                    f"{self.name}: {t.name} is {onnx.helper.tensor_dtype_to_np_dtype(t.data_type)}"
                    f"{tuple(t.dims)} in the graph but {rec['shape']} (type {rec['dtype']}) in the weight file"
                )
            if self.verify:
                stored = data[rec["offset"] : rec["offset"] + rec["length"]]
                if stored != _inline_bytes(t):
                    raise PassConditionError(f"{self.name}: {t.name} differs from the weight file's {key}")
            t.ClearField("raw_data")
            for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                t.ClearField(field)
            t.data_location = TensorProto.EXTERNAL
            del t.external_data[:]
            for k, v in (("location", self.location), ("offset", rec["offset"]), ("length", rec["length"])):
                entry = t.external_data.add()
                entry.key, entry.value = k, str(v)
            modified = True
        return PassResult(target, modified)

    def ensures(self, result: onnx.ModelProto) -> None:
        for t in result.graph.initializer:
            if _is_external(t) or t.name.startswith("adatsq_hadamard_"):  # rotation factors stay inline
                continue
            size = len(_inline_bytes(t))
            if size > self.max_inline_bytes:
                raise PassConditionError(
                    f"{self.name}: initializer {t.name} ({size} bytes) is not in {self.weights.name}; "
                    f"parameters must come from the weight file"
                )
            if self._key(t.name) is not None:
                raise PassConditionError(f"{self.name}: {t.name} left inline")

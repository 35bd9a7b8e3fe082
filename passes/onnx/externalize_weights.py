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

:func:`externalize_ir_initializers` does the same on an onnx-ir model (the exporter's), before any
ModelProto exists: a model of > 2 GB of parameters can never be serialised inline, and this way the bytes are
never copied out of the torch tensors. The pass then finds those initializers external already.

Initializers not in the file (the Hadamard factors ``adatsq_hadamard_<n>``, the exporter's small constants
and the ``constants`` the caller names: tables the model computes from its config, such as Wan's RoPE
frequencies, non-persistent buffers that no checkpoint holds) stay inline; anything else inline larger than
``max_inline_bytes`` is an error, so no parameter is ever duplicated into a graph silently.
"""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx
from onnx import TensorProto, numpy_helper

from adatsq.passes.base import Pass, PassConditionError, PassResult

if TYPE_CHECKING:
    import onnx_ir

__all__ = ["ExternalizeWeightsPass", "externalize_ir_initializers", "safetensors_layout"]

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


def _read_range(f: Any, rec: dict[str, Any]) -> bytes:
    f.seek(rec["offset"])
    return f.read(rec["length"])


_UPCAST_FROM = (TensorProto.BFLOAT16, TensorProto.FLOAT16)


def externalize_ir_initializers(
    model: onnx_ir.Model,
    weights: Path,
    location: str = "weights.safetensors",
    prefix: str = "model.",
    verify: bool = True,
) -> int:
    """Point every initializer ``<prefix><name>`` of an onnx-ir model whose ``name`` is in ``weights`` into
    that file (``ir.ExternalTensor`` at the stored offset; ``location`` as the graph records it), in place;
    returns how many. Shapes must match the stored tensor, and dtypes too, with one exception: a float32
    initializer stored as bfloat16/float16 (the unquantized parameters of a model quantized in bfloat16,
    which the export upcasts to float32) becomes the stored tensor plus a ``Cast`` to float32 (exact: the
    float32 values are the upcast stored ones, which ``verify`` checks). ``verify`` compares one tensor at a
    time with the file (never more than one tensor read at once). Initializers not in the file stay inline
    for :class:`ExternalizeWeightsPass` to check."""
    import numpy as np
    import onnx_ir as ir

    weights = Path(weights)
    layout = safetensors_layout(weights)
    graph = model.graph
    count = 0
    with open(weights, "rb") as f:
        for name, value in list(graph.initializers.items()):
            key = name.removeprefix(prefix)
            tensor = value.const_value
            if key not in layout or tensor is None or isinstance(tensor, ir.ExternalTensor):
                continue
            rec = layout[key]
            shape = tuple(int(d) for d in tensor.shape)
            stored_dtype = ir.DataType(rec["dtype"]) if rec["dtype"] > 0 else None
            upcast = tensor.dtype == ir.DataType.FLOAT and rec["dtype"] in _UPCAST_FROM
            if (rec["dtype"] != tensor.dtype.value and not upcast) or rec["shape"] != shape:
                raise PassConditionError(
                    f"externalize: {name} is {tensor.dtype}{shape} in the graph but {rec['shape']} "
                    f"(type {rec['dtype']}) in the weight file"
                )
            if verify:
                data = _read_range(f, rec)
                if upcast:
                    stored = np.frombuffer(data, dtype=stored_dtype.numpy()).astype(np.float32)
                    same = np.array_equal(stored.reshape(shape), tensor.numpy(), equal_nan=True)
                else:
                    same = data == tensor.tobytes()
                if not same:
                    raise PassConditionError(f"externalize: {name} differs from the weight file's {key}")
            external = ir.ExternalTensor(
                location, rec["offset"], rec["length"], stored_dtype, shape=ir.Shape(shape), name=name,
                base_dir=weights.parent,
            )  # fmt: skip
            if not upcast:
                value.const_value = external
            else:
                stored_value = ir.Value(
                    name=name, shape=ir.Shape(shape), type=ir.TensorType(stored_dtype), const_value=external
                )
                graph.initializers.pop(name)
                cast = ir.Node(
                    "", "Cast", [stored_value], [ir.AttrInt64("to", ir.DataType.FLOAT)], name=f"{name}/cast"
                )
                graph.register_initializer(stored_value)
                graph.insert_before(graph[0], cast)
                ir.convenience.replace_all_uses_with(value, cast.outputs[0])
                cast.outputs[0].name = f"{name}/float32"
                cast.outputs[0].shape = ir.Shape(shape)
                cast.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
            count += 1
    return count


class ExternalizeWeightsPass(Pass[onnx.ModelProto]):
    """Initializers ``<prefix><name>`` → external data at their offset in ``weights`` (in place).

    ``location`` is what the graph records (relative to the graph's folder). ``verify`` compares the inline
    bytes with the file's before dropping them (reading only those tensors' byte ranges, one at a time);
    initializers already external, as :func:`externalize_ir_initializers` leaves them, are skipped.
    ``constants``: initializer names allowed inline at any size (the model's computed tables, not parameters).
    """

    def __init__(
        self,
        weights: Path,
        location: str = "weights.safetensors",
        prefix: str = "model.",
        verify: bool = True,
        max_inline_bytes: int = 64 * 1024,
        constants: Collection[str] = (),
    ) -> None:
        self.weights = Path(weights)
        self.constants = frozenset(constants)
        self.location = location
        self.prefix = prefix
        self.verify = verify
        self.max_inline_bytes = max_inline_bytes
        self.layout = safetensors_layout(self.weights)

    def _key(self, name: str) -> str | None:
        key = name.removeprefix(self.prefix)
        return key if key in self.layout else None

    def call(self, target: onnx.ModelProto) -> PassResult[onnx.ModelProto]:
        modified = False
        todo = [t for t in target.graph.initializer if self._key(t.name) is not None and not _is_external(t)]
        with contextlib.ExitStack() as stack:
            f = stack.enter_context(open(self.weights, "rb")) if self.verify and todo else None
            for t in todo:
                key = self._key(t.name)
                assert key is not None
                rec = self.layout[key]
                if not _same_storage(t, rec):
                    raise PassConditionError(
                        f"{self.name}: {t.name} is {onnx.helper.tensor_dtype_to_np_dtype(t.data_type)}"
                        f"{tuple(t.dims)} in the graph but {rec['shape']} (type {rec['dtype']}) in the weight file"
                    )
                if f is not None and _read_range(f, rec) != _inline_bytes(t):
                    raise PassConditionError(f"{self.name}: {t.name} differs from the weight file's {key}")
                self._point(t, rec)
                modified = True
        return PassResult(target, modified)

    def _point(self, t: TensorProto, rec: dict[str, Any]) -> None:
        t.ClearField("raw_data")
        for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            t.ClearField(field)
        t.data_location = TensorProto.EXTERNAL
        del t.external_data[:]
        for k, v in (("location", self.location), ("offset", rec["offset"]), ("length", rec["length"])):
            entry = t.external_data.add()
            entry.key, entry.value = k, str(v)

    def ensures(self, result: onnx.ModelProto) -> None:
        for t in result.graph.initializer:
            if _is_external(t) or t.name.startswith("adatsq_hadamard_") or t.name in self.constants:
                continue  # rotation factors and the model's computed tables stay inline
            size = len(_inline_bytes(t))
            if size > self.max_inline_bytes:
                raise PassConditionError(
                    f"{self.name}: initializer {t.name} ({size} bytes) is not in {self.weights.name}; "
                    f"parameters must come from the weight file"
                )
            if self._key(t.name) is not None:
                raise PassConditionError(f"{self.name}: {t.name} left inline")

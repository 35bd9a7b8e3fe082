"""The buffer plan of the TensorRT backend: one copy of the weights, one scratch buffer, N engines.

Decision (shared by the export, this runner, the C++ runner and Triton): weights are engine INPUTS. Every
``onnx/config_NN.trt.onnx`` takes the tensors of ``weights.safetensors`` as graph inputs named in io.json's
``weight_inputs`` (name, safetensors key, dtype, static shape). So:

* each weight key is loaded ONCE into one device buffer, and that buffer's address is bound to the weight input
  of every engine that has it (engine i binds ``buffer[key(name)]`` for each of its weight inputs);
* the engines never run concurrently (one denoising step at a time on one stream), so their execution contexts
  are created with ``kUSER_MANAGED`` device memory and share one scratch buffer of
  ``max_i getDeviceMemorySizeV2(engine_i)`` bytes.

Device memory is then ``Σ_keys bytes(key) + max_i scratch_i`` instead of ``N·(Σ bytes + scratch)``.

This module holds the plan as plain data (:class:`BindingPlan`), built from io.json, the safetensors header and
a duck-typed description of each engine (:func:`engine_io`: the TensorRT ``ICudaEngine`` Python names
``num_io_tensors``, ``get_tensor_name``, ``get_tensor_mode``, ``get_tensor_dtype``, ``get_tensor_shape``,
``device_memory_size_v2``), so the plan is tested on the CPU with fake engines. The TensorRT calls that apply it
(runtime/runner.py, backend ``trt``) have not run: no TensorRT here.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "SAFETENSORS_DTYPES",
    "TRT_DTYPES",
    "BindingError",
    "BindingPlan",
    "EngineIO",
    "EnginePlan",
    "WeightInput",
    "engine_io",
    "load_weight_buffers",
    "read_safetensors_header",
]

#: safetensors dtype codes → the io.json dtype names
SAFETENSORS_DTYPES = {
    "U8": "uint8", "I8": "int8", "F16": "float16", "BF16": "bfloat16", "F32": "float32", "I32": "int32"
}  # fmt: skip
#: TensorRT ``DataType`` member names → io.json / torch dtype names
TRT_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "BF16": "bfloat16",
    "INT8": "int8",
    "UINT8": "uint8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
}


class BindingError(ValueError):
    """The engines, io.json and the weight file do not fit together; the message names the tensor at fault."""


@dataclasses.dataclass(frozen=True)
class WeightInput:
    name: str  # graph input name
    key: str  # tensor key in onnx/weights.safetensors
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        size = {"uint8": 1, "int8": 1, "float16": 2, "bfloat16": 2, "float32": 4, "int32": 4}[self.dtype]
        for d in self.shape:
            size *= d
        return size


@dataclasses.dataclass(frozen=True)
class EngineIO:
    """What the plan needs to know of one engine: its I/O tensors (dtype name, shape with -1 for dynamic)."""

    config: int
    inputs: Mapping[str, tuple[str, tuple[int, ...]]]
    outputs: Mapping[str, tuple[str, tuple[int, ...]]]
    device_memory: int


@dataclasses.dataclass(frozen=True)
class EnginePlan:
    config: int
    weights: Mapping[str, str]  # engine input name → weight key (its shared buffer)
    activations: tuple[str, ...]  # engine inputs fed per call (io.json "inputs")
    outputs: Mapping[str, str]  # output name → dtype asked from the engine
    device_memory: int


@dataclasses.dataclass(frozen=True)
class BindingPlan:
    weights: Mapping[str, WeightInput]  # key → the one buffer to allocate
    engines: Mapping[int, EnginePlan]
    ranges: Mapping[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]  # input → min, opt, max

    @property
    def scratch_bytes(self) -> int:
        """One scratch buffer for all contexts: the largest engine's device memory (they run one at a time)."""
        return max((e.device_memory for e in self.engines.values()), default=0)

    @property
    def weight_bytes(self) -> int:
        return sum(w.nbytes for w in self.weights.values())

    @classmethod
    def build(
        cls, io: Mapping[str, Any], engines: Sequence[EngineIO], header: Mapping[str, Any]
    ) -> BindingPlan:
        """The plan for ``engines``, checked against io.json (``io``) and the safetensors ``header``."""
        declared = [
            WeightInput(w["name"], w["key"], w["dtype"], tuple(int(d) for d in w["shape"]))
            for w in io.get("weight_inputs", [])
        ]
        by_name = {w.name: w for w in declared}
        for w in declared:
            entry = header.get(w.key)
            if entry is None:
                raise BindingError(f"weight input {w.name}: key {w.key!r} is not in weights.safetensors")
            got = (SAFETENSORS_DTYPES.get(entry["dtype"], entry["dtype"]), tuple(entry["shape"]))
            if got != (w.dtype, w.shape):
                raise BindingError(
                    f"weight input {w.name}: io.json says {w.dtype}{list(w.shape)}, weights.safetensors has "
                    f"{got[0]}{list(got[1])} for {w.key!r}"
                )
        activations = {i["name"]: i for i in io["inputs"]}
        per_config = io.get("weight_inputs_per_config", {})
        plans: dict[int, EnginePlan] = {}
        used: dict[str, WeightInput] = {}
        for e in engines:
            weights: dict[str, str] = {}
            acts: list[str] = []
            for name, (dtype, shape) in e.inputs.items():
                if name in by_name:
                    w = by_name[name]
                    if (dtype, tuple(shape)) != (w.dtype, w.shape):
                        raise BindingError(
                            f"engine of configuration {e.config}: weight input {name} is {dtype}{list(shape)}, "
                            f"io.json says {w.dtype}{list(w.shape)}"
                        )
                    weights[name] = w.key
                    used[w.key] = w
                elif name in activations:
                    acts.append(name)
                else:
                    raise BindingError(
                        f"engine of configuration {e.config}: input {name} is neither in io.json's inputs nor its "
                        f"weight_inputs"
                    )
            expected = per_config.get(str(e.config))
            if expected is not None and set(expected) != set(weights):
                missing = sorted(set(expected) - set(weights))
                extra = sorted(set(weights) - set(expected))
                raise BindingError(
                    f"engine of configuration {e.config}: weight inputs differ from io.json's "
                    f"weight_inputs_per_config (missing {missing[:3]}, unexpected {extra[:3]})"
                )
            missing_acts = sorted(set(activations) - set(acts))
            if missing_acts:
                raise BindingError(f"engine of configuration {e.config} lacks the inputs {missing_acts}")
            plans[e.config] = EnginePlan(
                e.config,
                weights,
                tuple(acts),
                {n: dt for n, (dt, _) in e.outputs.items()},
                int(e.device_memory),
            )
        ranges = {
            n: (tuple(i["min_shape"]), tuple(i["opt_shape"]), tuple(i["max_shape"]))
            for n, i in activations.items()
            if "min_shape" in i
        }
        return cls(dict(sorted(used.items())), plans, ranges)

    def check_shape(self, name: str, shape: Sequence[int]) -> None:
        """``shape`` of input ``name`` lies in io.json's min..max range (the engines' optimization profile)."""
        if name not in self.ranges:
            return
        lo, _, hi = self.ranges[name]
        if len(shape) != len(lo) or any(not a <= s <= b for s, a, b in zip(shape, lo, hi)):
            raise BindingError(
                f"input {name} has shape {list(shape)}, outside the engines' profile {list(lo)}..{list(hi)}"
            )

    def addresses(self, buffers: Mapping[str, int], scratch: int) -> dict[int, dict[str, int]]:
        """Per configuration, the address bound to each weight input (``buffers``: key → device address) and
        the scratch address under the key ``""`` (the context's ``set_device_memory``)."""
        out: dict[int, dict[str, int]] = {}
        for c, e in self.engines.items():
            missing = sorted(k for k in e.weights.values() if k not in buffers)
            if missing:
                raise BindingError(f"no buffer for weight keys {missing[:3]} (configuration {c})")
            out[c] = {name: buffers[key] for name, key in e.weights.items()}
            out[c][""] = scratch
        return out


def engine_io(
    config: int,
    engine: Any,
    is_input: Callable[[Any], bool],
    dtype_name: Callable[[Any], str] = lambda d: TRT_DTYPES[d.name],
) -> EngineIO:
    """:class:`EngineIO` of a TensorRT ``ICudaEngine`` (or anything with its Python attribute names);
    ``is_input(mode)`` tells an input's ``get_tensor_mode`` apart."""
    inputs: dict[str, tuple[str, tuple[int, ...]]] = {}
    outputs: dict[str, tuple[str, tuple[int, ...]]] = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        entry = (
            dtype_name(engine.get_tensor_dtype(name)),
            tuple(int(d) for d in engine.get_tensor_shape(name)),
        )
        (inputs if is_input(engine.get_tensor_mode(name)) else outputs)[name] = entry
    return EngineIO(config, inputs, outputs, int(engine.device_memory_size_v2))


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (8-byte little-endian length, then JSON), without
    ``__metadata__``."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header


def load_weight_buffers(path: Path, plan: BindingPlan, device: str) -> dict[str, Any]:
    """Each weight key of ``plan`` read once from ``path`` into one tensor on ``device``."""
    from safetensors import safe_open

    out: dict[str, Any] = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for key in plan.weights:
            out[key] = f.get_tensor(key).to(device).contiguous()
    return out

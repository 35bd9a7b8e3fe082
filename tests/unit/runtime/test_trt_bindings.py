"""The TensorRT backend's buffer plan (runtime/trt_bindings.py), with fake engines (CPU, no TensorRT).

Checked: each weight key gets one buffer, loaded once, and every engine's weight input is bound to that one
buffer's address; the scratch buffer is the largest engine's device memory and every context gets the same
one; mismatches between engines, io.json and weights.safetensors are errors naming the tensor; input shapes
are checked against io.json's min..max. The TensorRT calls that apply the plan are not exercised.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from adatsq.runtime.trt_bindings import (
    BindingError,
    BindingPlan,
    EngineIO,
    engine_io,
    load_weight_buffers,
    read_safetensors_header,
)

WEIGHTS = {
    "a.w_packed": torch.arange(24, dtype=torch.uint8).reshape(4, 6),
    "a.w_scale": torch.full((4, 1), 0.5, dtype=torch.float16),
    "b.w_packed": torch.arange(12, dtype=torch.uint8).reshape(2, 6),
    "b.bias": torch.ones(2),
}
WEIGHT_INPUTS = [
    {"name": "a.w_packed", "key": "a.w_packed", "dtype": "uint8", "shape": [4, 6]},
    {"name": "a.w_scale", "key": "a.w_scale", "dtype": "float16", "shape": [4, 1]},
    {"name": "b.w_packed", "key": "b.w_packed", "dtype": "uint8", "shape": [2, 6]},
    {"name": "b.bias", "key": "b.bias", "dtype": "float32", "shape": [2]},
]
X = {"name": "x", "dtype": "float32", "shape": ["batch", 16], "min_shape": [1, 16], "opt_shape": [1, 16],
     "max_shape": [4, 16]}  # fmt: skip


def _io(**over: Any) -> dict[str, Any]:
    io = {
        "inputs": [X],
        "weight_inputs": WEIGHT_INPUTS,
        "weight_inputs_per_config": {
            "0": [w["name"] for w in WEIGHT_INPUTS],
            "1": ["a.w_packed", "a.w_scale"],
        },
    }
    io.update(over)
    return io


def _engines() -> list[EngineIO]:
    w = {x["name"]: (x["dtype"], tuple(x["shape"])) for x in WEIGHT_INPUTS}
    e0 = EngineIO(0, {"x": ("float32", (-1, 16)), **w}, {"y": ("float32", (-1, 4))}, 3000)
    e1 = EngineIO(
        1, {"x": ("float32", (-1, 16)), "a.w_packed": w["a.w_packed"], "a.w_scale": w["a.w_scale"]},
        {"y": ("bfloat16", (-1, 4))}, 7000,
    )  # fmt: skip
    return [e0, e1]


@pytest.fixture
def weights_file(tmp_path: Path) -> Path:
    path = tmp_path / "weights.safetensors"
    save_file(WEIGHTS, str(path))
    return path


def test_one_buffer_per_key_bound_to_every_engine(weights_file: Path) -> None:
    plan = BindingPlan.build(_io(), _engines(), read_safetensors_header(weights_file))
    assert set(plan.weights) == set(WEIGHTS)
    assert plan.engines[1].weights == {"a.w_packed": "a.w_packed", "a.w_scale": "a.w_scale"}
    assert plan.engines[0].activations == ("x",) and plan.engines[1].activations == ("x",)
    assert plan.engines[1].outputs == {"y": "bfloat16"}  # asked from the engine, not assumed float32
    assert plan.weight_bytes == 24 + 8 + 12 + 8
    buffers = load_weight_buffers(weights_file, plan, "cpu")
    assert len(buffers) == len(WEIGHTS)
    for key, t in buffers.items():
        assert torch.equal(t, WEIGHTS[key])
    ptrs = {k: t.data_ptr() for k, t in buffers.items()}
    bound = plan.addresses(ptrs, scratch=0xABC0)
    # the same device address for a weight in every engine that takes it: no per-engine copy
    assert bound[0]["a.w_packed"] == bound[1]["a.w_packed"] == buffers["a.w_packed"].data_ptr()
    assert bound[0]["a.w_scale"] == bound[1]["a.w_scale"]
    assert "b.bias" not in bound[1]
    assert len({v for b in bound.values() for k, v in b.items() if k}) == len(WEIGHTS)


def test_scratch_is_the_largest_engines_device_memory_shared_by_all(weights_file: Path) -> None:
    plan = BindingPlan.build(_io(), _engines(), read_safetensors_header(weights_file))
    assert plan.scratch_bytes == 7000
    bound = plan.addresses({k: i + 1 for i, k in enumerate(plan.weights)}, scratch=0x1000)
    assert {b[""] for b in bound.values()} == {0x1000}


def test_engine_io_reads_the_tensorrt_names() -> None:
    @dataclasses.dataclass
    class Mode:
        name: str

    @dataclasses.dataclass
    class DType:
        name: str

    class FakeEngine:
        num_io_tensors = 3
        device_memory_size_v2 = 512
        _t = {"x": ("INPUT", "FLOAT", (-1, 16)), "a.w_packed": ("INPUT", "UINT8", (4, 6)), "y": ("OUTPUT", "BF16", (-1, 4))}  # fmt: skip

        def get_tensor_name(self, i: int) -> str:
            return list(self._t)[i]

        def get_tensor_mode(self, n: str) -> Mode:
            return Mode(self._t[n][0])

        def get_tensor_dtype(self, n: str) -> DType:
            return DType(self._t[n][1])

        def get_tensor_shape(self, n: str) -> tuple[int, ...]:
            return self._t[n][2]

    e = engine_io(3, FakeEngine(), is_input=lambda m: m.name == "INPUT")
    assert e.inputs == {"x": ("float32", (-1, 16)), "a.w_packed": ("uint8", (4, 6))}
    assert e.outputs == {"y": ("bfloat16", (-1, 4))}
    assert (e.config, e.device_memory) == (3, 512)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("unknown_input", "input z is neither in io.json's inputs nor its weight_inputs"),
        ("engine_dtype", "weight input a.w_packed is int8[4, 6], io.json says uint8[4, 6]"),
        ("header_dtype", "weight input b.bias: io.json says float16[2], weights.safetensors has float32[2]"),
        ("missing_key", "weight input a.w_scale: key 'nope' is not in weights.safetensors"),
        ("per_config", "weight inputs differ from io.json's weight_inputs_per_config"),
        ("missing_activation", "lacks the inputs ['x']"),
    ],
)
def test_mismatches_name_the_tensor(weights_file: Path, change: str, message: str) -> None:
    io, engines = _io(), _engines()
    e0 = engines[0]
    if change == "unknown_input":
        engines[0] = dataclasses.replace(e0, inputs={**e0.inputs, "z": ("float32", (1,))})
    elif change == "engine_dtype":
        engines[0] = dataclasses.replace(e0, inputs={**e0.inputs, "a.w_packed": ("int8", (4, 6))})
    elif change == "header_dtype":
        io["weight_inputs"] = [*WEIGHT_INPUTS[:3], {**WEIGHT_INPUTS[3], "dtype": "float16"}]
    elif change == "missing_key":
        io["weight_inputs"] = [WEIGHT_INPUTS[0], {**WEIGHT_INPUTS[1], "key": "nope"}, *WEIGHT_INPUTS[2:]]
    elif change == "per_config":
        io["weight_inputs_per_config"] = {"0": ["a.w_packed"], "1": ["a.w_packed", "a.w_scale"]}
    elif change == "missing_activation":
        engines[1] = dataclasses.replace(
            engines[1], inputs={k: v for k, v in engines[1].inputs.items() if k != "x"}
        )
    with pytest.raises(BindingError, match=message.replace("[", r"\[").replace("]", r"\]")):
        BindingPlan.build(io, engines, read_safetensors_header(weights_file))


def test_input_shapes_are_checked_against_the_profile_range(weights_file: Path) -> None:
    plan = BindingPlan.build(_io(), _engines(), read_safetensors_header(weights_file))
    plan.check_shape("x", (4, 16))
    with pytest.raises(BindingError, match=r"input x has shape \[5, 16\], outside the engines' profile"):
        plan.check_shape("x", (5, 16))
    with pytest.raises(BindingError, match=r"input x has shape \[16\]"):
        plan.check_shape("x", (16,))

"""The TensorRT backend's buffer plan (runtime/trt_bindings.py) applied on the GPU, with the torch backend
standing in for the engines (no TensorRT here).

Fixture: ``gpu_fixture/medium-flux`` (test_runner_gpu.py says how it is built); its TensorRT twins
``onnx/config_NN.trt.onnx`` take every tensor of the weight file as a graph input, and stand in for the
engines' I/O (name, dtype, shape with -1 where dynamic), each with its own device-memory size.

Checked on the device:
* the plan's weights are uploaded ONCE: the CUDA allocator grows by exactly the buffers' bytes (512-byte
  blocks), not by N copies, and every engine's weight input is bound to the one buffer of its key;
* one scratch buffer, the largest engine's, is the device memory of every context;
* the bindings are the right tensors: a QuantLinear model assembled from nothing but configuration c's bound
  addresses (the buffers found by address, assigned without a copy) gives the torch backend's own output at
  every call of a generation at c's bits, on the same kernels.
What TensorRT itself does with the addresses (``set_tensor_address``, ``set_device_memory``) is not run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers.gpu_fixture import FIXTURE
from helpers.runs import record_backend_calls

from adatsq.core.layout import OutputLayout
from adatsq.runtime import trt_bindings as tb

pytestmark = pytest.mark.gpu


def _dims(t: onnx.TypeProto) -> tuple[int, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.tensor_type.shape.dim)


def _dtype(t: onnx.TypeProto) -> str:
    return onnx.helper.tensor_dtype_to_np_dtype(t.tensor_type.elem_type).name


def fake_engines(root: Path, configs: list[int]) -> list[tb.EngineIO]:
    """Each configuration's twin graph as an engine's I/O; device memory 1, 2, 3 … MiB."""
    engines = []
    for i, c in enumerate(configs):
        graph = onnx.load(str(OutputLayout(root).trt_graph(c)), load_external_data=False).graph
        inputs = {v.name: (_dtype(v.type), _dims(v.type)) for v in graph.input}
        outputs = {v.name: (_dtype(v.type), _dims(v.type)) for v in graph.output}
        engines.append(tb.EngineIO(c, inputs, outputs, (i + 1) << 20))
    return engines


def model_from_bindings(root: Path, tensors: dict[str, torch.Tensor], device: str) -> torch.nn.Module:
    """The stored quantized model with every weight-store tensor taken from ``tensors`` (assigned, no copy);
    what the store holds beyond them is an error, so nothing silently falls back to the file."""
    from adatsq.export.onnx_export import load_quantized_model
    from adatsq.passes.weight_store import load_weight_store

    stored, _, _ = load_weight_store(root / "weights.safetensors")
    left = sorted(set(stored) - set(tensors))
    assert not left, f"weight-store tensors no engine input is bound to: {left[:3]}"
    return load_quantized_model(root, tensors).to(device).eval()


@pytest.fixture(scope="module")
def plan_and_buffers() -> tuple[tb.BindingPlan, dict[str, torch.Tensor], list[int]]:
    if not FIXTURE.is_dir():
        pytest.skip(f"no GPU fixture at {FIXTURE} (make gpu-fixture)")
    from adatsq.core.schedule import load_schedule

    configs = sorted(set(load_schedule(FIXTURE / "schedule.json").step_configs))
    weights = FIXTURE / "onnx" / "weights.safetensors"
    io = json.loads((FIXTURE / "onnx" / "io.json").read_text())
    plan = tb.BindingPlan.build(io, fake_engines(FIXTURE, configs), tb.read_safetensors_header(weights))
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    buffers = tb.load_weight_buffers(weights, plan, "cuda")
    torch.cuda.synchronize()
    grown = torch.cuda.memory_allocated() - before
    blocks = sum(-(-t.numel() * t.element_size() // 512) * 512 for t in buffers.values())
    assert grown == blocks, f"the allocator grew by {grown} B for {blocks} B of buffers: a copy too many"
    return plan, buffers, configs


def test_each_key_one_buffer_bound_to_every_engine(
    plan_and_buffers: tuple[tb.BindingPlan, dict[str, torch.Tensor], list[int]],
) -> None:
    plan, buffers, configs = plan_and_buffers
    assert len(configs) >= 2, "the fixture must switch configurations"
    header = tb.read_safetensors_header(FIXTURE / "onnx" / "weights.safetensors")
    assert set(buffers) == set(plan.weights) == set(header)  # every stored tensor, once
    assert sum(t.numel() * t.element_size() for t in buffers.values()) == plan.weight_bytes
    scratch = torch.empty(plan.scratch_bytes, dtype=torch.uint8, device="cuda")
    assert plan.scratch_bytes == len(configs) << 20  # the largest fake engine's
    bound = plan.addresses({k: t.data_ptr() for k, t in buffers.items()}, scratch.data_ptr())
    for c in configs:
        assert bound[c][""] == scratch.data_ptr()
        for name, key in plan.engines[c].weights.items():
            assert bound[c][name] == buffers[key].data_ptr()
    shared = set.intersection(*(set(plan.engines[c].weights.values()) for c in configs))
    assert shared, "no weight is common to the engines"
    for key in shared:  # one address per key across engines
        assert (
            len({bound[c][n] for c in configs for n, k in plan.engines[c].weights.items() if k == key}) == 1
        )


def test_bound_buffers_run_as_the_torch_backend(
    plan_and_buffers: tuple[tb.BindingPlan, dict[str, torch.Tensor], list[int]],
) -> None:
    from adatsq.export.graph_io import PREFIX
    from adatsq.passes.quant_linear import QuantLinear, set_activation_bits
    from adatsq.runtime.runner import EngineRunner, _to

    plan, buffers, configs = plan_and_buffers
    by_address = {t.data_ptr(): t for t in buffers.values()}
    bound = plan.addresses({k: t.data_ptr() for k, t in buffers.items()}, 0)
    runner = EngineRunner(FIXTURE, backend="torch", device="cuda", graphs=False)
    calls = record_backend_calls(runner)
    runner.generate(seed=0, n=1)
    checked = 0
    for c in configs:
        tensors = {name.removeprefix(PREFIX): by_address[a] for name, a in bound[c].items() if name}
        model = model_from_bindings(FIXTURE, tensors, "cuda")
        ptrs = {t.data_ptr() for t in buffers.values()}
        packed = [m.w_packed for m in model.modules() if isinstance(m, QuantLinear)]
        assert packed and all(p.data_ptr() in ptrs for p in packed), "a bound weight was copied"
        for call in (k for k in calls if k.config == c):
            set_activation_bits(model, runner.schedule.bits_at(call.step))
            with torch.no_grad():
                out = model(*_to(call.args, "cuda"), **_to({**call.kwargs, "return_dict": False}, "cuda"))[0]
            got = out.float().cpu().numpy()
            err = float(np.abs(got - call.output).max() / max(np.abs(call.output).max(), 1e-30))
            assert err <= 1e-6, (
                f"configuration {c}, step {call.step}: bound weights give rel. error {err:.2e}"
            )
            checked += 1
    assert checked == len(calls) == runner.schedule.steps

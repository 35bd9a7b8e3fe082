"""The torch backend's CUDA-graph path, on the CPU: it is off (results unchanged), its options are plumbed
(``graphs=`` and ``ADATSQ_RUNNER_GRAPHS``), and the per-configuration graph cache keys, replays and
invalidates as it should, checked with an emulated graph (a "replay" that re-runs the model on the static
input buffers and writes the static output, which is what a captured graph does)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from helpers.runs import record_backend_calls

from adatsq.runtime import runner as runner_mod
from adatsq.runtime.runner import GRAPHS_ENV, EngineRunner


def test_graphs_off_on_cpu_and_results_unchanged(
    compiled_tiny_flux: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(GRAPHS_ENV, raising=False)
    plain = EngineRunner(compiled_tiny_flux, backend="torch")
    asked = EngineRunner(compiled_tiny_flux, backend="torch", device="cpu", graphs=True)
    assert not plain.graphs and not asked.graphs and asked._graph_cache is None
    assert torch.equal(plain.generate(seed=3, n=1), asked.generate(seed=3, n=1))


@pytest.mark.parametrize(
    ("graphs", "env", "backend", "device", "expected"),
    [
        (None, None, "torch", "cuda", True),  # default: on for the CUDA torch backend
        (None, "0", "torch", "cuda", False),
        (None, "off", "torch", "cuda:1", False),
        (None, "1", "torch", "cuda:0", True),
        (False, None, "torch", "cuda", False),
        (True, "0", "torch", "cuda", True),  # the argument wins over the variable
        (True, None, "torch", "cpu", False),  # never on the CPU
        (True, None, "ort", "cuda", False),  # never for ONNX Runtime / TensorRT
        (True, None, "trt", "cuda", False),
    ],
)
def test_graph_option_plumbing(
    graphs: bool | None, env: str | None, backend: str, device: str, expected: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    if env is None:
        monkeypatch.delenv(GRAPHS_ENV, raising=False)
    else:
        monkeypatch.setenv(GRAPHS_ENV, env)
    assert runner_mod._graphs_enabled(graphs, backend, device) is expected


class _EmulatedGraph:
    """Stands in for a captured CUDA graph: replay re-runs the call on the static inputs into the static output."""

    def __init__(self, fn: Any, output: torch.Tensor) -> None:
        self.fn, self.output = fn, output

    def replay(self) -> None:
        self.output.copy_(self.fn())


def _emulated_capture(self: runner_mod._GraphCache, config: int, model: Any, leaves: list, spec: Any) -> Any:  # noqa: ANN401
    from torch.utils import _pytree

    static = [v.clone() if isinstance(v, torch.Tensor) else v for v in leaves]
    a, kw = _pytree.tree_unflatten(static, spec)
    bits = {n: m.a_bits for n, m in model.named_modules() if hasattr(m, "a_bits")}  # baked in at capture

    def call() -> torch.Tensor:
        for n, m in model.named_modules():
            if n in bits:
                m.a_bits = bits[n]
        with torch.no_grad():
            return model(*a, **kw)[0]

    self.captures += 1
    graph = _EmulatedGraph(call, call().clone())
    return runner_mod._Graph(graph, [v for v in static if isinstance(v, torch.Tensor)], graph.output)


def test_graph_cache_per_configuration(compiled_tiny_flux: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the cache (emulated graphs) every call equals the eager backend's exactly; one graph per
    configuration, replayed when the step's configuration comes back (each with ITS bits, even though the
    model's bits were switched since); a new input shape invalidates the graphs."""
    monkeypatch.setattr(runner_mod._GraphCache, "_capture", _emulated_capture)
    eager = EngineRunner(compiled_tiny_flux, backend="torch")
    calls = record_backend_calls(eager)
    eager.generate(seed=5, n=1)
    graphed = EngineRunner(compiled_tiny_flux, backend="torch")
    cache = graphed._graph_cache = runner_mod._GraphCache()
    configs = sorted({c.config for c in calls})
    assert len(configs) >= 2
    for call in [*calls, *reversed(calls)]:  # switching back and forth
        graphed.set_step(call.step)
        y = graphed.call(call.kwargs, call.args)
        assert torch.equal(y, torch.from_numpy(call.output)), f"step {call.step} config {call.config}"
    assert sorted(cache.graphs) == configs and cache.captures == len(configs)
    assert cache.replays == 2 * len(calls)

    eager2 = EngineRunner(compiled_tiny_flux, backend="torch")
    calls2 = record_backend_calls(eager2)
    eager2.generate(seed=5, n=2)  # batch 2: another signature
    graphed.set_step(calls2[0].step)
    y = graphed.call(calls2[0].kwargs, calls2[0].args)
    assert torch.equal(y, torch.from_numpy(calls2[0].output))
    assert list(cache.graphs) == [calls2[0].config] and cache.captures == len(configs) + 1


def test_dtype_option_casts_inputs_and_returns_float32(compiled_tiny_flux: Path) -> None:
    ref = EngineRunner(compiled_tiny_flux, backend="torch")
    calls = record_backend_calls(ref)
    ref.generate(seed=1, n=1)
    bf = EngineRunner(compiled_tiny_flux, backend="torch", dtype=torch.bfloat16)
    bf.set_step(calls[0].step)
    y = bf.call(calls[0].kwargs, calls[0].args)
    assert y.dtype == torch.float32 and y.device.type == "cpu"
    x = torch.from_numpy(calls[0].output)
    err = float((y - x).norm() / x.norm())
    print(f"bf16 vs float32 torch backend, one call: rel err {err:.2e}")
    assert err < 0.1

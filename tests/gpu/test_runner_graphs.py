"""CUDA graphs per configuration in the runner's torch backend: a replay equals the eager call exactly.

Fixture: ``gpu_fixture/medium-flux`` (``make gpu-fixture``; see tests/gpu/test_runner_gpu.py). An eager run
(``graphs=False``) records every transformer call of a generation; a graphed runner then replays each call,
in order and again in reverse (so the configurations switch back and forth), and must return the eager
output bit for bit: the same kernels run on the same inputs, only launched from a graph. One graph per
distinct configuration is captured, and the outputs of different configurations differ (so the check sees
which graph ran). A new batch size invalidates the graphs and recaptures.
"""

from __future__ import annotations

import pytest
import torch
from helpers.gpu_fixture import FIXTURE, require_gpu_fixture
from helpers.runs import record_backend_calls

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_graph_replay_equals_eager_per_configuration(dtype: torch.dtype | None) -> None:
    require_gpu_fixture()
    from adatsq.runtime.runner import EngineRunner

    eager = EngineRunner(FIXTURE, backend="torch", device="cuda", graphs=False, dtype=dtype)
    assert eager._graph_cache is None
    calls = record_backend_calls(eager)
    eager.generate(seed=0, n=2)
    graphed = EngineRunner(FIXTURE, backend="torch", device="cuda", dtype=dtype)
    cache = graphed._graph_cache
    assert graphed.graphs and cache is not None
    configs = sorted({c.config for c in calls})
    assert len(configs) >= 2, "the fixture's schedule should switch configurations"
    by_config: dict[int, torch.Tensor] = {}
    for call in [*calls, *reversed(calls)]:
        graphed.set_step(call.step)
        y = graphed.call(call.kwargs, call.args)
        want = torch.from_numpy(call.output)
        diff = float((y.float() - want.float()).abs().max())
        print(f"step {call.step} config {call.config}: graph vs eager max |diff| {diff:.3e}")
        assert torch.equal(y, want), f"step {call.step} config {call.config}: max |diff| {diff}"
        by_config.setdefault(call.config, y)
    assert not cache.errors, cache.errors
    assert sorted(cache.graphs) == configs and cache.captures == len(configs)
    assert cache.replays == 2 * len(calls)
    a, b = (by_config[c] for c in configs[:2])
    assert not torch.equal(a, b)  # the configurations differ, so replaying the wrong graph would show

    # another batch size: the graphs are invalidated and the new shape is captured
    calls1 = record_backend_calls(eager)
    eager.generate(seed=1, n=1)
    graphed.set_step(calls1[0].step)
    y = graphed.call(calls1[0].kwargs, calls1[0].args)
    assert torch.equal(y, torch.from_numpy(calls1[0].output))
    assert list(cache.graphs) == [calls1[0].config], cache.graphs
    assert cache.captures == len(configs) + 1, f"not recaptured at the new shape: {cache.errors}"


def test_graphed_generate_equals_eager_generate() -> None:
    """The whole engine-switching loop (``generate``) with graphs gives the eager loop's latents exactly."""
    require_gpu_fixture()
    from adatsq.runtime.runner import EngineRunner

    x_eager = EngineRunner(FIXTURE, backend="torch", device="cuda", graphs=False).generate(seed=2, n=1)
    r = EngineRunner(FIXTURE, backend="torch", device="cuda", graphs=True)
    x_graph = r.generate(seed=2, n=1)
    assert r.used_configs == list(r.schedule.step_configs)
    assert torch.equal(x_eager, x_graph)

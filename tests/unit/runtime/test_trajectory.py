"""Full denoising runs with engine switching through ONNX Runtime vs the torch reference, every tiny family.

Quantization is discontinuous: where x̃/s sits within float rounding of a half-integer, ORT's and torch's
summation orders can round one activation code differently (a "tie flip"; which codes flip depends on the
CPU, the ORT kernels and the thread counts). On these random tiny models one flipped 4-bit code moves a
step's output by up to ~1e-2 and the final latent by up to ~3e-2 (:mod:`helpers.ties`), and even ORT against
itself on inputs 1e-7 apart flips ties. A free-running final-latent bound therefore cannot tell a wiring error
from a tie. The test records the runner's own ORT run and checks it teacher-forced, call by call
(:mod:`helpers.runs`):

* the configuration each call used is the schedule's for that step, and every step is visited;
* torch graph arithmetic with the schedule's bits on the SAME inputs gives the same output (≤ STEP_MATCH),
  or the difference is certified as tie flips (:func:`helpers.ties.certify_outputs`): the schedule's
  configuration graph reproduces the engine's output; the first quantized layer whose codes differ has the
  same input in both (≤ INPUT_MATCH); only a few of its codes differ, by one step, each where torch's x̃/s is
  within the tie window of a half-integer; and with those codes set to ORT's, torch reproduces ORT's output
  (≤ STEP_MATCH) — so nothing but the certified flips separates the two.

The free-running final latents (ORT vs torch) are compared too, against :func:`helpers.ties.free_run_bound`:
a few times the largest final-latent change one forced tie flip causes in that family. That bound catches a
broken sampler loop or garbage outputs, not a wrong configuration (which the per-call certificates catch).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.ort_session import ort_session
from helpers.runs import GraphReference, certify_calls, recorded_ort_run
from helpers.ties import free_run_bound, rel

from adatsq.core.layout import OutputLayout
from adatsq.export.graph_io import adapter_for
from adatsq.export.onnx_export import load_quantized_model
from adatsq.passes.quant_linear import set_activation_bits
from adatsq.runtime.runner import EngineRunner


@pytest.mark.parametrize(
    "fixture",
    [
        "compiled_tiny_flux",
        pytest.param("compiled_tiny_wan", marks=pytest.mark.slow),
        "compiled_tiny_zimage",
    ],
)
def test_ort_trajectory_matches_torch(fixture: str, request: pytest.FixtureRequest) -> None:
    out: Path = request.getfixturevalue(fixture)
    runner, x_ort, calls = recorded_ort_run(out, seed=7, n=2)
    s = runner.schedule
    assert runner.used_configs == list(s.step_configs)
    assert [c.config for c in calls] == [s.step_configs[c.step] for c in calls]
    assert sorted({c.step for c in calls}) == list(range(s.steps))

    results = certify_calls(out, calls, GraphReference(out))
    for r in results:
        for f in r.flips:
            print(
                f"{out.name} step {r.call.step}: certified tie flip at {f}, step output differed by {r.err:.1e}"
            )

    # free-running torch trajectory (graph arithmetic, schedule's bits per step)
    reference = EngineRunner(out, backend="ort")
    model = load_quantized_model(out)
    wrapped = adapter_for(runner.family.name).wrap(model).eval()

    def torch_engine(config: int) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        bits = dict(zip(s.act_layers, s.configs[config]))

        def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
            set_activation_bits(model, bits)
            with torch.no_grad():
                return wrapped(**{k: torch.from_numpy(v) for k, v in feeds.items()}).numpy()

        return run

    reference._engine = torch_engine  # type: ignore[method-assign]
    x_ref = reference.generate(seed=7, n=2)
    err = rel(x_ort, x_ref)
    n_flips = sum(bool(r.flips) for r in results)
    print(
        f"{out.name}: per-call ORT vs torch max {max(r.err for r in results):.1e} over {len(results)} calls, "
        f"{n_flips} with certified tie flips; free-running final latent {err:.1e}"
    )
    assert err <= free_run_bound(s.model)


def test_certification_rejects_a_wrong_configuration(compiled_tiny_flux: Path) -> None:
    """The check can fail: an engine call answered by another configuration's graph is not a tie flip."""
    runner, _, calls = recorded_ort_run(compiled_tiny_flux, seed=3, n=1)
    s = runner.schedule
    call = calls[0]
    other = next(k for k in range(len(s.configs)) if k != call.config)
    call.output = ort_session(OutputLayout(compiled_tiny_flux).onnx_graph(other)).run(None, call.feeds)[0]
    with pytest.raises(AssertionError, match="not that of the schedule's configuration"):
        certify_calls(compiled_tiny_flux, [call], GraphReference(compiled_tiny_flux))

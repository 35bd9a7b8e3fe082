"""Full denoising runs with engine switching through ONNX Runtime vs the torch reference, every tiny family.

Quantization is discontinuous: where x̃/s sits within float rounding of a half-integer, ORT's and torch's
summation orders can round one activation code differently (a "tie flip"). On these random tiny models one
flipped 4-bit code can move a step's output by a few percent (tiny-zimage: 1 code of 12 288 at
x̃/s = −1.4999986 moves step 3 by 2.9e-2 and the final latent by 6.7e-3), and even ORT against itself on
inputs 1e-7 apart flips ties. A free-running final-latent bound alone therefore cannot tell a wiring error
from a tie. The test records the runner's own ORT run and checks it teacher-forced, call by call:

* the configuration each call used is the schedule's for that step, and every step is visited;
* torch graph arithmetic with the schedule's bits on the SAME inputs gives the same output (≤ 1e-4), or
  the difference is certified as a tie flip: the schedule's configuration graph reproduces the engine's
  output; in execution order, the first quantized layer whose activation codes differ between ORT and torch
  has the same input in both (≤ 1e-5); at most a handful of its codes differ; and at each one torch's x̃/s
  lies within 1e-4 of a half-integer.

The free-running final latents (ORT vs torch) must agree within 5e-3 whenever no flip was certified; with
a certified flip the free-running error is printed, not bounded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from adatsq.core.layout import OutputLayout
from adatsq.export.graph_io import adapter_for
from adatsq.export.onnx_export import load_quantized_model
from adatsq.passes.quant_linear import quant_linears, set_activation_bits
from adatsq.plugins import onnx_op
from adatsq.plugins.hadamard import rotate
from adatsq.plugins.reference import quantize_activation
from adatsq.runtime.runner import EngineRunner

STEP_MATCH = 1e-4  # step outputs closer than this need no explanation
INPUT_MATCH = 1e-5  # the flipped layer's inputs must agree this well
TIE_WINDOW = 1e-4  # |frac(|x̃/s|) − 0.5| at a flipped code
MAX_FLIPS_PER_LAYER = 3


@dataclass
class TieFlip:
    step: int
    layer: str
    codes: int  # flipped codes in that layer
    total: int  # codes of that layer
    ratios: list[float]  # torch's x̃/s at the flipped codes
    step_err: float  # the step output's relative difference it caused


def _rel(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _debug_session(path: Path) -> tuple[ort.InferenceSession, dict[str, tuple[str, str]]]:
    """ORT session of a configuration graph that also returns every activation-quantized QLinear's input
    and its activation codes, keyed by layer name."""
    m, taps = onnx_op.tap_activation_codes(onnx.load(str(path), load_external_data=False))
    tmp = path.with_name(f".tie_{path.name}")
    onnx.save(m, str(tmp))
    try:
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    finally:
        tmp.unlink()
    return sess, {name: (x, codes) for name, (x, codes, _a, _g) in taps.items()}


def _certify(
    step: int,
    step_err: float,
    torch_inputs: dict[str, torch.Tensor],
    ort_values: dict[str, np.ndarray],
    taps: dict[str, tuple[str, str]],
    modules: dict,
    bits: dict[str, int],
) -> TieFlip:
    for layer, x_t in torch_inputs.items():  # execution order
        if layer not in taps:
            continue
        mod = modules[layer]
        x_name, codes_name = taps[layer]
        x_t = x_t.reshape(-1, mod.in_features).float()
        x_o = torch.from_numpy(ort_values[x_name]).reshape(x_t.shape)
        x_rot = rotate(x_t) if mod.rotate_input else x_t
        q_t, s_t = quantize_activation(x_rot, bits[layer], mod.group_size)
        q_o = torch.from_numpy(ort_values[codes_name]).reshape(q_t.shape)
        flipped = (q_t != q_o).nonzero().tolist()
        if not flipped:
            continue
        in_err = _rel(x_o, x_t)
        assert in_err <= INPUT_MATCH, (
            f"step {step}: first code mismatch at {layer} but its inputs differ by {in_err:.1e} "
            f"(a divergence before any quantizer, not a tie flip)"
        )
        assert len(flipped) <= MAX_FLIPS_PER_LAYER, (
            f"step {step}: {len(flipped)} codes of {layer} differ with matching inputs (not a tie flip)"
        )
        g = q_t.shape[1] // s_t.shape[1]
        ratios = [float(x_rot[r, c] / s_t[r, c // g]) for r, c in flipped]
        for v in ratios:
            frac = abs(v) - int(abs(v))
            assert abs(frac - 0.5) <= TIE_WINDOW, f"step {step}: {layer} code flipped at x̃/s = {v} (no tie)"
        return TieFlip(step, layer, len(flipped), q_t.numel(), ratios, step_err)
    raise AssertionError(
        f"step {step}: ORT and torch step outputs differ by {step_err:.1e} but no activation code differs"
    )


def _keep_first_input(store: dict[str, torch.Tensor], name: str) -> Callable[..., None]:
    def hook(_m: torch.nn.Module, args: tuple, _out: torch.Tensor) -> None:
        store.setdefault(name, args[0].detach().clone())  # execution order = insertion order

    return hook


@dataclass
class StepCall:
    step: int
    config: int
    feeds: dict[str, np.ndarray]
    output: np.ndarray


def recorded_ort_run(out: Path, seed: int, n: int) -> tuple[EngineRunner, torch.Tensor, list[StepCall]]:
    """The runner's own ORT trajectory, recording what every engine call received and returned."""
    runner = EngineRunner(out, backend="ort")
    calls: list[StepCall] = []
    engine = runner._engine

    def recording(config: int) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        run = engine(config)

        def wrapped(feeds: dict[str, np.ndarray]) -> np.ndarray:
            y = run(feeds)
            calls.append(StepCall(runner._step, config, {k: v.copy() for k, v in feeds.items()}, y.copy()))
            return y

        return wrapped

    runner._engine = recording  # type: ignore[method-assign]
    return runner, runner.generate(seed=seed, n=n), calls


def certify_steps(runner: EngineRunner, calls: list[StepCall]) -> tuple[list[float], list[TieFlip]]:
    """Teacher-forced check of every recorded engine call: torch graph arithmetic with the schedule's bits
    of that step on the SAME feeds equals ORT's output, or the difference is a certified tie flip."""
    out, s = runner.root, runner.schedule
    model = load_quantized_model(out)
    wrapped = adapter_for(runner.family.name).wrap(model).eval()
    modules = quant_linears(model)
    sessions: dict[int, tuple[ort.InferenceSession, dict[str, tuple[str, str]]]] = {}
    errors: list[float] = []
    flips: list[TieFlip] = []
    for call in calls:
        bits = s.bits_at(call.step)  # what the schedule says, not what the runner chose
        set_activation_bits(model, bits, modules)
        inputs: dict[str, torch.Tensor] = {}
        hooks = [m.register_forward_hook(_keep_first_input(inputs, n)) for n, m in modules.items()]
        try:
            with torch.no_grad():
                y_t = wrapped(**{k: torch.from_numpy(v) for k, v in call.feeds.items()}).numpy()
        finally:
            for h in hooks:
                h.remove()
        err = _rel(call.output, y_t)
        errors.append(err)
        if err <= STEP_MATCH:
            continue
        config = s.step_configs[call.step]
        if config not in sessions:
            sessions[config] = _debug_session(OutputLayout(out).onnx_graph(config))
        sess, taps = sessions[config]
        names = [o.name for o in sess.get_outputs()]
        values = dict(zip(names, sess.run(None, call.feeds)))
        assert _rel(values[names[0]], call.output) <= 1e-6, (
            f"step {call.step}: the engine's output is not that of the schedule's configuration {config}"
        )
        flips.append(_certify(call.step, err, inputs, values, taps, modules, bits))
    return errors, flips


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

    errors, flips = certify_steps(runner, calls)
    for f in flips:
        print(
            f"{out.name} step {f.step}: certified tie flip at {f.layer} ({f.codes}/{f.total} codes, "
            f"x̃/s = {[round(v, 7) for v in f.ratios]}), step output differed by {f.step_err:.1e}"
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
    err = _rel(x_ort, x_ref)
    print(
        f"{out.name}: per-step ORT vs torch max {max(errors):.1e} over {len(errors)} calls, "
        f"{len(flips)} certified tie flip(s); free-running final latent {err:.1e}"
    )
    if not flips:
        assert err <= 5e-3
    assert len(flips) <= 1 + s.steps // 4  # flips are rare events, not the rule


def test_certification_rejects_a_wrong_configuration(compiled_tiny_flux: Path) -> None:
    """The check can fail: an engine call answered by another configuration's graph is not a tie flip."""
    runner, _, calls = recorded_ort_run(compiled_tiny_flux, seed=3, n=1)
    s = runner.schedule
    call = calls[0]
    other = next(k for k in range(len(s.configs)) if k != call.config)
    sess = ort.InferenceSession(str(OutputLayout(compiled_tiny_flux).onnx_graph(other)))
    call.output = sess.run(None, call.feeds)[0]
    with pytest.raises(AssertionError, match="not that of the schedule's configuration"):
        certify_steps(runner, [call])

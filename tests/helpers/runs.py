"""Recording the runner's engine calls and certifying each one teacher-forced (:mod:`helpers.ties`).

A free-running trajectory of one backend cannot be compared tightly with another's: a single tie flip at
step i moves every later step (module docstring of :mod:`helpers.ties`). What can be checked exactly is each
call on its OWN inputs: :func:`record_engine_calls` keeps what every engine call of an ORT runner received
(the transformer's keyword arguments and the graph feeds) and returned, and :func:`certify_calls` runs a
torch reference on exactly those inputs and certifies the two outputs (:func:`helpers.ties.certify_outputs`).
Two references:

* :class:`GraphReference`: torch graph arithmetic, i.e. the export wrapper around the QuantLinear model
  (the module the ONNX graphs were exported from) with the schedule's bits of that step, fed the graph
  feeds;
* :class:`BackendReference`: the runner's own torch backend, switched to the step by the runner itself
  (``set_step``) and fed the transformer's keyword arguments, i.e. the other backend under test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from adatsq.core.layout import OutputLayout
from adatsq.export.graph_io import adapter_for
from adatsq.export.onnx_export import load_quantized_model
from adatsq.passes.quant_linear import quant_linears, set_activation_bits
from adatsq.plugins import onnx_op
from adatsq.runtime.runner import EngineRunner
from helpers.ort_session import ort_session
from helpers.ties import Certificate, TieFlip, certify_outputs, traced_modules

__all__ = [
    "BackendReference",
    "CallCertificate",
    "GraphReference",
    "StepCall",
    "TappedGraph",
    "certify_calls",
    "record_backend_calls",
    "record_engine_calls",
    "recorded_ort_run",
    "tapped_session",
]


def _clone(value: Any) -> Any:
    """``value`` with every tensor and array in it (also inside lists, tuples and dicts) copied."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


@dataclass
class StepCall:
    """One engine call of a recorded run: its step, the configuration whose engine ran, what it got."""

    step: int
    config: int
    feeds: dict[str, np.ndarray]  # the graph's inputs
    output: np.ndarray
    kwargs: dict[str, Any] = field(default_factory=dict)  # the transformer's arguments (runner.call)
    args: tuple[Any, ...] = ()


def record_engine_calls(runner: EngineRunner) -> list[StepCall]:
    """Wrap ``runner`` (backend ort) so that every engine call is appended to the returned list."""
    calls: list[StepCall] = []
    engine, call = runner._engine, runner.call
    pending: dict[str, Any] = {}

    def recording_call(kwargs: Mapping[str, Any], args: tuple[Any, ...] = ()) -> torch.Tensor:
        pending.update(kwargs=_clone(dict(kwargs)), args=_clone(tuple(args)))
        return call(kwargs, args)

    def recording_engine(config: int) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
        run = engine(config)

        def wrapped(feeds: dict[str, np.ndarray]) -> np.ndarray:
            y = run(feeds)
            calls.append(
                StepCall(
                    runner._step,
                    config,
                    _clone(feeds),
                    y.copy(),
                    pending.get("kwargs", {}),
                    pending.get("args", ()),
                )
            )
            return y

        return wrapped

    runner.call = recording_call  # type: ignore[method-assign]
    runner._engine = recording_engine  # type: ignore[method-assign]
    return calls


def record_backend_calls(runner: EngineRunner) -> list[StepCall]:
    """Wrap ``runner`` (any backend) so that every transformer call (``runner.call``) is appended to the
    returned list with the configuration the runner was at; ``feeds`` stay empty (no graph involved)."""
    calls: list[StepCall] = []
    call = runner.call

    def recording_call(kwargs: Mapping[str, Any], args: tuple[Any, ...] = ()) -> torch.Tensor:
        kw, a = _clone(dict(kwargs)), _clone(tuple(args))
        y = call(kwargs, args)
        out = torch.stack(y) if isinstance(y, list) else y  # Z-Image: a list per sample
        calls.append(StepCall(runner._step, runner.current_config, {}, out.detach().cpu().numpy(), kw, a))
        return y

    runner.call = recording_call  # type: ignore[method-assign]
    return calls


def recorded_ort_run(out: Path, seed: int, n: int) -> tuple[EngineRunner, torch.Tensor, list[StepCall]]:
    """The runner's own ORT trajectory (``generate``), recording what every engine call received and returned."""
    runner = EngineRunner(out, backend="ort")
    calls = record_engine_calls(runner)
    return runner, runner.generate(seed=seed, n=n), calls


@dataclass
class TappedGraph:
    """An ORT session of a debug copy of a graph that also returns every activation-quantized QLinear's input
    and codes (``onnx_op.tap_activation_codes``); never shipped, created next to the graph's weights."""

    session: ort.InferenceSession
    taps: dict[str, tuple[str, str]]  # layer → (input value name, codes value name)

    def run(
        self, feeds: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
        names = [o.name for o in self.session.get_outputs()]
        inputs = {i.name for i in self.session.get_inputs()}
        values = dict(zip(names, self.session.run(None, {k: v for k, v in feeds.items() if k in inputs})))
        # a layer with several rotation blocks has one node per block (``<layer>``, ``<layer>#1``, ...; block
        # order): its input and codes are the blocks' side by side, as the torch trace records them
        blocks: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {}
        for node, (x, c) in self.taps.items():
            layer, _, b = node.partition("#")
            x_v = values[x].reshape(-1, values[x].shape[-1])  # (tokens, block width)
            c_v = values[c].reshape(x_v.shape[0], -1)  # the body's codes, whatever their layout, per token
            blocks.setdefault(layer, []).append((int(b or 0), x_v, c_v))
        out = {}
        for layer, parts in blocks.items():
            parts.sort(key=lambda part: part[0])
            if len(parts) == 1:
                out[layer] = (values[self.taps[layer][0]], values[self.taps[layer][1]])
            else:
                out[layer] = (
                    np.concatenate([x for _, x, _ in parts], -1),
                    np.concatenate([c for _, _, c in parts], -1),
                )
        return values[names[0]], out


def tapped_session(path: Path) -> TappedGraph:
    """:class:`TappedGraph` of the graph at ``path`` (external data read from its folder)."""
    m, taps = onnx_op.tap_activation_codes(onnx.load(str(path), load_external_data=False))
    tmp = path.with_name(f".tie_{path.name}")
    onnx.save(m, str(tmp))
    try:
        sess = ort_session(tmp)
    finally:
        tmp.unlink()
    return TappedGraph(sess, {name: (x, codes) for name, (x, codes, _a, _g) in taps.items()})


class GraphReference:
    """Torch graph arithmetic: the export wrapper of the QuantLinear model, fed the graph feeds, with the bits
    of configuration ``config_of(step)`` (default: the schedule's configuration of that step)."""

    def __init__(self, out: Path, config_of: Callable[[int], int] | None = None) -> None:
        runner = EngineRunner(out, backend="torch")
        self.schedule = runner.schedule
        self.model = load_quantized_model(out)
        self.wrapped = adapter_for(runner.family.name).wrap(self.model).eval()
        self.modules: dict[str, nn.Module] = dict(quant_linears(self.model))
        self.config_of = config_of or (lambda step: self.schedule.step_configs[step])

    def runner_for(self, call: StepCall) -> Callable[[], np.ndarray]:
        s = self.schedule

        def run() -> np.ndarray:
            set_activation_bits(self.model, dict(zip(s.act_layers, s.configs[self.config_of(call.step)])))
            with torch.no_grad():
                return self.wrapped(**{k: torch.from_numpy(v) for k, v in call.feeds.items()}).numpy()

        return run


class BackendReference:
    """The runner's torch backend: ``set_step(step)`` (the runner picks the bits), then ``call`` with the
    recorded transformer arguments. ``config_of`` overrides the bits (to show that another configuration is
    NOT certified); by default the backend's own choice is checked against the schedule."""

    def __init__(self, out: Path, config_of: Callable[[int], int] | None = None) -> None:
        self.runner = EngineRunner(out, backend="torch")
        self.schedule = self.runner.schedule
        self.modules: dict[str, nn.Module] = traced_modules(self.runner.torch_model)  # fused ops too
        self.config_of = config_of

    def runner_for(self, call: StepCall) -> Callable[[], np.ndarray]:
        s, r = self.schedule, self.runner

        def run() -> np.ndarray:
            r.set_step(call.step)
            assert r.steps[-1].config == s.step_configs[call.step], "torch backend: not the schedule's config"
            bits = {n: m.a_bits for n, m in self.modules.items() if n in s.bits_at(call.step)}
            assert bits == s.bits_at(call.step), (
                f"torch backend at step {call.step}: bits are not the schedule's"
            )
            if self.config_of is not None:
                set_activation_bits(
                    r.torch_model, dict(zip(s.act_layers, s.configs[self.config_of(call.step)]))
                )
            y = r.call(_clone(call.kwargs), _clone(call.args))
            return (torch.stack(y) if isinstance(y, list) else y).numpy()  # Z-Image: a list per sample

        return run


@dataclass
class CallCertificate:
    call: StepCall
    certificate: Certificate

    @property
    def err(self) -> float:
        return self.certificate.err

    @property
    def flips(self) -> list[TieFlip]:
        return self.certificate.flips


def certify_calls(
    out: Path, calls: list[StepCall], reference: GraphReference | BackendReference
) -> list[CallCertificate]:
    """Certify every recorded engine call against ``reference`` on the same inputs (module docstring); a
    call that needs an explanation is certified with the tapped graph of the SCHEDULE's configuration of its
    step, which must reproduce the engine's output (so the engine that ran was that configuration's)."""
    s = reference.schedule
    tapped: dict[int, TappedGraph] = {}

    def tap(call: StepCall) -> Callable[[], tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]]:
        def run() -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
            config = s.step_configs[call.step]
            if config not in tapped:
                tapped[config] = tapped_session(OutputLayout(out).onnx_graph(config))
            return tapped[config].run(call.feeds)

        return run

    results = []
    for i, call in enumerate(calls):
        what = f"{out.name} call {i} (step {call.step})"
        source = f"the schedule's configuration {s.step_configs[call.step]}"
        cert = certify_outputs(
            call.output, reference.runner_for(call), reference.modules, tap(call), what, source
        )
        results.append(CallCertificate(call, cert))
    return results

"""Certification of quantizer tie flips: what a comparison of two implementations of contract 1 may differ by.

Activation quantization is discontinuous. Where x̃/s sits within float rounding of a half-integer, two
implementations that sum in different orders (torch vs ONNX Runtime, CPU vs GPU kernels, one thread count vs
another) can round one activation code differently: a *tie flip*. On the random tiny models one flipped
4-bit code moves a step's output by up to ~1e-2 and the final latent of a 4-step trajectory by up to ~4e-2
(``SINGLE_FLIP_EFFECT``), as much as a wrong configuration does. A tolerance therefore cannot tell a tie
flip from a wiring error; this module certifies instead. A difference is accepted only as

* a **code-level tie flip** (:func:`check_code_flips`): the two code tensors differ in few places (at most
  ``max_flips``), by exactly one step each, and at every one the reference's x̃/s lies within
  :func:`tie_window` of a half-integer; or
* an **output-level certificate** (:func:`certify_outputs`): the output under test equals the torch
  reference's on the SAME inputs within ``STEP_MATCH``, or the torch reference reproduces it within
  ``STEP_MATCH`` once the codes of the layers of some inputs are set to the other implementation's (one
  input at a time, as many as it takes: each must be certified on its own, so their number needs no cap), each such layer being the first in execution order whose codes differ (with the
  layers that read the very same input), with inputs that agree within ``INPUT_MATCH`` and code
  differences that are tie flips. A wrong configuration fails this:
  its codes differ in bulk at the first layer whose bits differ.

Tie window. The ratio discrepancy between implementations measured here is ≤ 1.8e-6·qmax (ORT vs torch,
K = 256, 1.5 M codes, 1 and 2 threads); rounding errors of the rotation grow like √K. The window,
``TIE_REL``·qmax·max(1, √(K/256)) with ``TIE_REL`` = 2e-5, is 11× that and still ≤ 1/400 of a code step.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

import adatsq.plugins.reference as reference
from adatsq.plugins.reference import effective_group, qmax

STEP_MATCH = 1e-4  # outputs of two implementations on the same inputs closer than this need no explanation
INPUT_MATCH = 1e-5  # the first layer whose codes differ must see inputs this close in both
TIE_REL = 2e-5  # tie window per unit of qmax (module docstring)
MAX_FLIPS_PER_LAYER = 3  # flips allowed in any layer ...
FLIP_FRACTION = 2e-4  # ... or this fraction of its codes, whichever is larger
SAME_GRAPH = 1e-6  # a tapped (debug) copy of a graph reproduces the graph's output this well
_QUANTIZE = reference.quantize_activation  # the reference quantizer itself (QuantizerTrace patches the name)

__all__ = [
    "INPUT_MATCH",
    "STEP_MATCH",
    "Certificate",
    "LayerTrace",
    "QuantizerTrace",
    "TieFlip",
    "certify_outputs",
    "check_code_flips",
    "free_run_bound",
    "max_flips",
    "reference_codes",
    "rel",
    "tie_distance",
    "tie_window",
    "traced_modules",
]


# Largest final-latent change (relative) that ONE tie flip causes in a 4-step trajectory of each tiny family:
# in one engine call of a free-running torch-backend run (seed 7, 2 samples, and the real diffusers pipelines
# of tests/unit/runtime/test_pipelines.py), the code nearest to a rounding boundary was pushed across it, for
# 30–60 random calls per family and setting; this is the largest change seen, rounded up.
# (measured: generate 1.0e-3 / 1.8e-2 / 2.7e-2, pipelines 1.6e-3 / 2.6e-2 / 3.6e-2).
SINGLE_FLIP_EFFECT = {"tiny-flux": 2e-3, "tiny-zimage": 3e-2, "tiny-wan": 4e-2}
FREE_RUN_FLIPS = 5  # flips' worth a free-running comparison of two implementations may differ by


def free_run_bound(model: str) -> float:
    """Bound on the relative difference of two implementations' free-running final latents: FREE_RUN_FLIPS
    times the family's worst single-flip effect. It cannot tell a wrong configuration from a tie flip (their
    effects are of one size); it catches garbage, a wrong sampler loop or wrong conditioning (changes of
    order 1). Per-call certificates (:func:`certify_outputs`) are the exact check."""
    return FREE_RUN_FLIPS * SINGLE_FLIP_EFFECT[model]


def rel(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Norm-wise relative difference ‖a − b‖ / ‖b‖ in float64."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def tie_window(bits: int, k: int) -> float:
    """How close to a half-integer x̃/s must be for a flipped code to count as a tie (module docstring)."""
    return TIE_REL * qmax(bits) * max(1.0, math.sqrt(k / 256))


def tie_distance(ratios: torch.Tensor) -> torch.Tensor:
    """|frac(|x̃/s|) − ½|: the distance of each ratio to the nearest rounding boundary."""
    a = ratios.abs().double()
    return (a - a.floor() - 0.5).abs()


def max_flips(total: int) -> int:
    """Most flipped codes a comparison of ``total`` codes may certify: flips are rare."""
    return max(MAX_FLIPS_PER_LAYER, math.ceil(FLIP_FRACTION * total))


def reference_codes(
    x_rot: torch.Tensor, bits: int, group_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference's codes, scales and x̃/s (the pre-rounding value, shape of ``x_rot``) of rotated
    activations (M×K)."""
    codes, scale = _QUANTIZE(x_rot, bits, group_size)
    return codes, scale, _ratios(x_rot, scale, group_size)


def _ratios(x_rot: torch.Tensor, scale: torch.Tensor, group_size: int) -> torch.Tensor:
    k = x_rot.shape[-1]
    g = effective_group(k, group_size)
    xg = x_rot.float().reshape(*x_rot.shape[:-1], k // g, g)
    return (xg / scale.unsqueeze(-1)).reshape(x_rot.shape)


def check_code_flips(
    ref_codes: torch.Tensor,
    ref_ratios: torch.Tensor,
    codes: torch.Tensor | np.ndarray,
    bits: int,
    what: str,
    limit: int | None = None,
) -> list[float]:
    """Assert that ``codes`` equal the reference's ``ref_codes`` (M×K) except for tie flips: at most
    ``limit`` (default :func:`max_flips`) codes differ, each by one step, each where the reference's
    x̃/s (``ref_ratios``) is within :func:`tie_window` of a half-integer. Returns the ratios at the flips."""
    codes = torch.as_tensor(np.asarray(codes)).reshape(ref_codes.shape).to(ref_codes.dtype)
    diff = ref_codes != codes
    n = int(diff.sum())
    if n == 0:
        return []
    limit = max_flips(ref_codes.numel()) if limit is None else limit
    assert n <= limit, f"{what}: {n} of {ref_codes.numel()} codes differ (more than {limit}): not tie flips"
    steps = (ref_codes - codes).abs()[diff]
    assert bool((steps == 1).all()), f"{what}: codes differ by up to {float(steps.max())} steps (a flip is 1)"
    ratios = ref_ratios[diff]
    window = tie_window(bits, ref_codes.shape[-1])
    dist = tie_distance(ratios)
    worst = int(dist.argmax())
    assert float(dist[worst]) <= window, (
        f"{what}: a code differs where x̃/s = {float(ratios[worst])!r}, {float(dist[worst]):.1e} from a "
        f"rounding boundary (tie window {window:.1e} at {bits} bits): not a tie flip"
    )
    return [float(r) for r in ratios]


# ------------------------------------------------------------------------------------ the torch side


@dataclass
class LayerTrace:
    """What one activation-quantized layer saw and produced in a traced torch forward (its first call)."""

    x: torch.Tensor  # its input, (M, K) float32
    codes: torch.Tensor  # its activation codes, (M, K), after any override
    ratios: torch.Tensor  # x̃/s before rounding, (M, K)
    bits: int


@dataclass
class QuantizerTrace:
    """Context manager tracing the torch reference's activation quantizer per layer.

    ``modules`` maps layer names to the modules whose forward calls the reference op (QuantLinear, or any
    module calling ``torch.ops.adatsq.qlinear`` on the CPU). Inside, each module's first quantizer call is
    recorded in ``layers`` (execution order) and, for the layers in ``overrides`` (name → (flat indices,
    codes)), those codes are replaced before the product: the reference with another implementation's
    codes at certified flips. A layer whose quantizer runs twice in one forward is an error (the
    comparison with a graph's per-node values assumes one call per layer).

    A fused op of ``passes.fuse_projections`` (a module with ``members``) in ``modules`` quantizes its input
    once for all of its members, x·[W_1; …; W_n]ᵀ = [x·W_1ᵀ | … | x·W_nᵀ]: its call is recorded under the
    name of each member that ``modules`` also names (one input, one set of codes and bits, as the unfused
    members' separate calls on that x give), so the trace of a fused model has the per-layer records of the
    unfused model and of the exported graph. An override of a member applies to the fused call (members read
    one input, so certification overrides them together)."""

    modules: Mapping[str, nn.Module]
    overrides: Mapping[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    layers: dict[str, LayerTrace] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = {id(m): n for n, m in self.modules.items()}
        # a fused op's name → its members' names (column order): its one quantizer call stands for theirs
        self._members: dict[str, tuple[str, ...]] = {
            n: tuple(names[id(m)] for m in members if id(m) in names)
            for n, mod in self.modules.items()
            if (members := getattr(mod, "members", None)) is not None
        }
        self._current: str | None = None
        self._inputs: dict[str, torch.Tensor] = {}
        self._forwards: dict[str, int] = {}
        self._column: dict[str, int] = {}  # the next rotation block's first column in the layer's input

    def _quantize(self, x_rot: torch.Tensor, bits: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        codes, scale = self._original(x_rot, bits, group_size)
        name = self._current
        if name is None:
            return codes, scale
        assert self._forwards[name] == 1, f"{name}: its activation quantizer ran in two forwards"
        members = self._members.get(name, ())
        if members:  # recorded as the first overridden member (or the first), then copied to the others
            fused, name = name, next((m for m in members if m in self.overrides), members[0])
            for m in members:
                assert m not in self.layers, f"{fused}: its member {m} was quantized on its own too"
                self._inputs.setdefault(m, self._inputs[fused])
        # a layer with several rotation blocks quantizes block by block, left to right, in one forward: the
        # trace holds the whole width (the blocks' codes side by side), as the graph's taps are joined
        x = self._inputs[name]
        k, c0, w = x.shape[-1], self._column.get(name, 0), codes.shape[-1]
        if name in self.overrides:
            idx, values = self.overrides[name]
            row, col = idx // k, idx % k
            mine = (col >= c0) & (col < c0 + w)
            codes = codes.clone()
            codes.view(-1)[row[mine] * w + col[mine] - c0] = values[mine].to(codes.dtype)
        ratios = _ratios(x_rot, scale, group_size)
        if c0:
            prev = self.layers[name]
            codes_all, ratios_all = torch.cat([prev.codes, codes], -1), torch.cat([prev.ratios, ratios], -1)
            self.layers[name] = LayerTrace(x, codes_all, ratios_all, bits)
        else:
            assert name not in self.layers, f"{name}: its activation quantizer ran twice in one forward"
            self.layers[name] = LayerTrace(x, codes, ratios, bits)
        self._column[name] = c0 + w
        for m in members:  # a fused op (single-block members): each member's record is the fused call's
            self.layers[m] = self.layers[name]
        return codes, scale

    @contextlib.contextmanager
    def _hooks(self) -> Iterator[None]:
        handles = []
        for name, mod in self.modules.items():

            def pre(_m: nn.Module, args: tuple, _name: str = name) -> None:
                self._current = _name
                self._forwards[_name] = self._forwards.get(_name, 0) + 1
                x = args[0]
                x = _m.op_input(x) if hasattr(_m, "op_input") else x  # smoothing / CLQ's P (QuantLinear)
                self._inputs.setdefault(_name, x.detach().reshape(-1, x.shape[-1]).float().clone())

            def post(_m: nn.Module, _args: tuple, _out: torch.Tensor) -> None:
                self._current = None

            handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def __enter__(self) -> QuantizerTrace:
        self._original = reference.quantize_activation
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(self._hooks())
        reference.quantize_activation = self._quantize
        self._stack.callback(setattr, reference, "quantize_activation", self._original)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()


def traced_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The modules of ``model`` a :class:`QuantizerTrace` hooks: every QuantLinear, and every fused op of
    ``passes.fuse_projections`` (recorded under its members' names), by name."""
    from adatsq.passes.fuse_projections import FusedProjection
    from adatsq.passes.quant_linear import quant_linears

    fused = {n: m for n, m in model.named_modules() if isinstance(m, FusedProjection)}
    return {**quant_linears(model), **fused}


# ------------------------------------------------------------------------------------ certification


@dataclass
class TieFlip:
    layer: str
    codes: int  # flipped codes in that layer
    total: int  # codes of that layer
    ratios: list[float]  # the torch reference's x̃/s at the flipped codes

    def __str__(self) -> str:
        return f"{self.layer} ({self.codes}/{self.total} codes, x̃/s = {[round(v, 7) for v in self.ratios]})"


@dataclass
class Certificate:
    """The outcome of :func:`certify_outputs` (it raises when nothing can be certified)."""

    err: float  # output under test vs the torch reference on the same inputs
    flips: list[TieFlip]  # certified tie flips, in execution order (empty when err ≤ STEP_MATCH)
    residual: float  # vs the torch reference with the flipped codes aligned (≤ STEP_MATCH)


Tapped = Callable[[], tuple[np.ndarray, Mapping[str, tuple[np.ndarray, np.ndarray]]]]


def certify_outputs(
    y: np.ndarray | torch.Tensor,
    run_torch: Callable[[], np.ndarray | torch.Tensor],
    modules: Mapping[str, nn.Module],
    tapped: Tapped,
    what: str,
    source: str = "the tapped graph",
    match: float = STEP_MATCH,
) -> Certificate:
    """Certify the output ``y`` of another implementation against the torch reference on the same inputs.

    ``run_torch()`` runs the reference once (it is called under :class:`QuantizerTrace` on ``modules``);
    ``tapped()`` runs the other implementation's graph with every activation-quantized layer's input and
    codes exposed (:func:`helpers.runs.tapped_session`) and returns (its output, layer → (input, codes)); it
    is only called when ``y`` and the reference differ by more than ``STEP_MATCH``, and its output must be
    ``y`` (else ``y`` is not that of ``source``). ``match`` replaces ``STEP_MATCH`` as the agreement that
    needs no explanation (and that the aligned reference must reach). See the module docstring.
    """
    y = np.asarray(y)
    with QuantizerTrace(modules) as trace:
        y_t = run_torch()
    err = rel(y, np.asarray(y_t))
    if err <= match:
        return Certificate(err, [], err)
    y_tap, other = tapped()
    same = rel(y_tap, y)
    assert same <= SAME_GRAPH, (
        f"{what}: the output under test is not that of {source} (differs by {same:.1e})"
    )
    overrides: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    flips: list[TieFlip] = []
    residual = err
    for _ in range(len(modules)):  # at most one aligned input per quantized layer
        for name, flip, idx, values in _first_flips(what, residual, trace.layers, other):
            flips.append(flip)
            overrides[name] = (idx, values)
        with QuantizerTrace(modules, overrides) as trace:
            y_t = run_torch()
        residual = rel(y, np.asarray(y_t))
        if residual <= match:
            return Certificate(err, flips, residual)
    raise AssertionError(
        f"{what}: {residual:.1e} apart after aligning certified flips at every layer input "
        f"({'; '.join(map(str, flips))}): the difference is not explained by tie flips"
    )


def _first_flips(
    what: str,
    err: float,
    layers: Mapping[str, LayerTrace],
    other: Mapping[str, tuple[np.ndarray, np.ndarray]],
) -> list[tuple[str, TieFlip, torch.Tensor, torch.Tensor]]:
    """The first layer (execution order) whose codes differ, certified, with every other layer that reads
    the very same input (a unit: q/k/v, …, share one x, so one tie flips in all of them)."""
    assert set(layers) == set(other), (
        f"{what}: activation-quantized layers differ: only torch {sorted(set(layers) - set(other))}, "
        f"only the graph {sorted(set(other) - set(layers))}"
    )
    first: torch.Tensor | None = None
    found = []
    for name, t in layers.items():  # execution order
        if first is not None and not (t.x.shape == first.shape and torch.equal(t.x, first)):
            continue
        x_o, q_o = other[name]
        q_o = torch.from_numpy(np.asarray(q_o, dtype=np.float32)).reshape(t.codes.shape)
        diff = (t.codes != q_o).reshape(-1)
        if not bool(diff.any()):
            continue
        in_err = rel(np.asarray(x_o).reshape(t.x.shape), t.x)
        assert in_err <= INPUT_MATCH, (
            f"{what}: the first code mismatch is at {name}, but its inputs differ by {in_err:.1e} "
            f"(a divergence before any quantizer, not a tie flip)"
        )
        ratios = check_code_flips(t.codes, t.ratios, q_o, t.bits, f"{what}: {name}")
        idx = diff.nonzero().squeeze(1)
        found.append((name, TieFlip(name, len(idx), t.codes.numel(), ratios), idx, q_o.reshape(-1)[idx]))
        first = t.x
    if not found:
        raise AssertionError(
            f"{what}: outputs differ by {err:.1e} but no activation code differs (not a tie flip)"
        )
    return found

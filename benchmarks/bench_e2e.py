"""End-to-end denoising-step benchmark (issue 13): bf16 eager / torch.compile, an FP8 baseline, and ours.

One command, one run, one table (markdown, printed) and one JSON (``--out``):

    python benchmarks/bench_e2e.py --models flux-dev,z-image,wan2.1-1.3b --out results.json \\
        [--schedule-dir DIR] [--variants ...] [--iters 10] [--warmup 3] [--time-budget 480] [--force]
    python benchmarks/bench_e2e.py --smoke --out /tmp/e2e_smoke.json          # tiny models on the CPU

Models are the registry's full-size architectures with seeded random weights
(``build_architecture(get_spec(name), device, dtype=bfloat16, seed=0)``) at the spec's resolution (Flux-dev
and Z-Image 1024², Wan2.1-1.3B 81×480×832); inputs are the family's ``synthetic_conditioning`` /
``sample_noise``, and one *step* is the family's ``velocity`` (what the pipeline hands to ``scheduler.step``,
classifier-free guidance included: Wan calls the transformer twice, Z-Image on a doubled batch).

Variants (each independent: its own build, its own error record, memory freed after it):

* ``bf16-eager``, ``bf16-compile`` (``torch.compile``, default mode);
* ``fp8-compile``: every Role.ACT linear (418 in Flux-dev) as ``torch._scaled_mm`` e4m3 with dynamic
  per-token activation scales and per-output-channel weight scales, s_x = max|x_m|/448, s_w = max|W_n|/448,
  y = (q_x q_wᵀ)·s_x·s_wᵀ + b (torchao's float8 dynamic rowwise recipe, fast accumulation, written here),
  then ``torch.compile``;
* ``ours-a3`` / ``ours-a4`` / ``ours-a8``: InsertQuantLinearPass with RTN weights (``--weight-bits``, default
  3, for Role.ACT and weight-only layers alike, as the compile does below a 4-bit target) and every
  activation-quantized layer at a bits; timed eager and as one CUDA graph of the transformer call (the
  runner's ``_GraphCache``), plus the cost of switching between the a3 and a4 graphs;
* ``ours-a3-compile``: the all-A3 model under ``torch.compile`` (Inductor fusing the model's elementwise work
  around the custom op), timed compiled (``compiled_ms``) and as a CUDA graph of the compiled call (``ms``);
* ``ours-a3-fused`` / ``ours-a3-fused-compile``: the same with each attention's q/k/v (and Flux's text q/k/v;
  Flux's single blocks' q/k/v with proj_mlp, Z-Image's q/k/v and w1/w3: linears that read one tensor) as one
  op (``passes.fuse_projections``: one activation quantization and one GEMM per group);
* ``ours-w3a3.1``: the schedule of an ``adatsq-compile MODEL --random-weights`` output directory
  (``--schedule-dir``, one or several comma-separated; the one whose schedule names the model is used) run as
  a full ``--loop-steps`` (50) step sampling loop through the runner's torch backend (bf16, CUDA graph per
  configuration), step i on the schedule's configuration of step ⌊i·S/50⌋; also per configuration step time
  and the switch cost.

Per variant: median step ms over ``--iters`` (CUDA events after ``--warmup``), peak GPU memory (peak reset
before the variant), resident memory (``memory_allocated`` after the build) and the weight bytes, and a
per-kernel breakdown of one step (torch.profiler, grouped: GEMM, attention, activation rotate+quantize,
elementwise/copies, weight-only GEMV, weight expansion, layer norm, other). Resumable: a (model, variant)
already ``ok`` in ``--out`` is skipped unless ``--force``; ``--time-budget`` stops starting variants after
that many seconds (rerun the same command to continue), since one GPU command is limited to 10 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from e2e_measure import (
    Settings,
    cuda,
    free_memory,
    gib,
    kernel_breakdown,
    memory,
    model_dtype,
    reset_peak,
    time_ms,
    weight_bytes,
)
from e2e_report import to_markdown
from torch import nn

# the directory of this script is on sys.path when it runs as ``python benchmarks/bench_e2e.py``

VARIANTS = (
    "bf16-eager", "bf16-compile", "fp8-compile", "ours-a3", "ours-a4", "ours-a8", "ours-a3-compile", "ours-a3-fused",
    "ours-a3-fused-compile", "ours-w3a3.1",
)  # fmt: skip
FULL_MODELS = ("flux-dev", "z-image", "wan2.1-1.3b")
SMOKE_MODELS = {"flux-dev": "tiny-flux", "z-image": "tiny-zimage", "wan2.1-1.3b": "tiny-wan"}
FP8 = torch.float8_e4m3fn
E4M3_MAX = 448.0


@dataclasses.dataclass
class Case:
    """One model's fixed inputs: the step is ``family.velocity(model, latents, t, cond, spec)``."""

    name: str
    spec: Any
    family: Any
    resolution: tuple[int, ...]
    latents: torch.Tensor
    t: torch.Tensor
    cond: Any


# ----------------------------------------------------------------------------------------------- models
def make_case(name: str, settings: Settings, resolution: tuple[int, ...] | None = None) -> Case:
    from adatsq.core.models.base import timesteps_for
    from adatsq.core.models.registry import build_architecture, family_of, get_spec

    spec = get_spec(name)
    family = family_of(spec)
    meta = build_architecture(spec, device="meta")
    res = tuple(resolution or spec.resolution)
    g = torch.Generator().manual_seed(0)
    cond = family.synthetic_conditioning(spec, meta, 1, g)
    noise = family.sample_noise(spec, meta, res, 1, g)
    _, timesteps = timesteps_for(family, spec, spec.steps, tuple(noise.shape[1:]))
    dev = settings.device
    return Case(
        name, spec, family, res, noise.to(dev), timesteps[len(timesteps) // 2].to(dev),
        cond.to(dev, model_dtype(settings)),
    )  # fmt: skip


def build_bf16(case: Case, settings: Settings) -> nn.Module:
    from adatsq.core.models.registry import build_architecture

    return build_architecture(case.spec, device=settings.device, dtype=model_dtype(settings), seed=0)


def step_fn(case: Case, model: nn.Module) -> Callable[[], torch.Tensor]:
    return lambda: case.family.velocity(model, case.latents, case.t, case.cond, case.spec)


class Wrapped(nn.Module):
    """``call(*args, **kwargs)`` in place of a transformer, with its ``.config`` and an anchor parameter in
    the model's device and dtype (the families place their inputs by the first parameter)."""

    def __init__(self, inner: nn.Module, call: Callable[..., Any], device: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.config = inner.config
        self._call = call
        self._anchor = nn.Parameter(torch.zeros(1, device=device, dtype=dtype), requires_grad=False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)


def act_layers(case: Case, model: nn.Module) -> tuple[tuple[str, ...], tuple[str, ...]]:
    inv = case.family.inventory(model)
    return inv.act_layers, inv.weight_only


# ----------------------------------------------------------------------------------------------- FP8 baseline
class Fp8RowwiseLinear(nn.Module):
    """y = (q_x q_wᵀ) · s_x · s_wᵀ + b on ``torch._scaled_mm`` (e4m3, fast accumulation), with dynamic
    per-token s_x = max_k |x_mk| / 448 and static per-output-channel s_w = max_k |W_nk| / 448 (the float8
    dynamic rowwise recipe)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        s_w = (w.abs().amax(dim=1, keepdim=True) / E4M3_MAX).clamp_min(1e-12)
        self.register_buffer("w_fp8", (w / s_w).to(FP8))  # N×K
        self.register_buffer("s_w", s_w.t().contiguous())  # 1×N float32
        b = linear.bias
        self.register_buffer("bias", None if b is None else b.detach().to(torch.bfloat16))
        self.out_features = linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead, k = x.shape[:-1], x.shape[-1]
        x2 = x.reshape(-1, k)
        s_x = (x2.abs().amax(dim=1, keepdim=True).float() / E4M3_MAX).clamp_min(1e-12)  # M×1
        q = (x2.float() / s_x).clamp(-E4M3_MAX, E4M3_MAX).to(FP8)
        y = torch._scaled_mm(
            q, self.w_fp8.t(), scale_a=s_x, scale_b=self.s_w, bias=self.bias, out_dtype=torch.bfloat16,
            use_fast_accum=True,
        )  # fmt: skip
        return y.reshape(*lead, self.out_features).to(x.dtype)


def to_fp8(case: Case, model: nn.Module) -> int:
    from adatsq.passes.quant_linear import set_submodule

    names, _ = act_layers(case, model)
    modules = dict(model.named_modules())
    for n in names:
        set_submodule(model, n, Fp8RowwiseLinear(modules[n]))
        modules[n].weight = None  # the bf16 copy goes as soon as its FP8 one exists
    return len(names)


# ----------------------------------------------------------------------------------------------- ours
def quantize_ours(case: Case, model: nn.Module, settings: Settings) -> int:
    from adatsq.passes.quant_linear import InsertQuantLinearPass, LayerQuant

    act, wo = act_layers(case, model)
    g = case.spec.group_size
    layers = {n: LayerQuant(settings.weight_bits, True, g) for n in act}
    layers.update({n: LayerQuant(settings.weight_bits, False, g) for n in wo})
    InsertQuantLinearPass(layers)(model)
    return len(act)


def graph_key(a_bits: int, fused: bool) -> int:
    """The ``_GraphCache`` configuration id of a model at ``a_bits`` with or without fused projections."""
    return a_bits + 100 * fused


def graphed(
    model: nn.Module, cache: Any, key: Callable[[], int], prepare: Callable[[], None]
) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> tuple[Any]:
        return (cache.run(key(), prepare, model, args, kwargs),)

    return call


def switch_cost(
    step_a: Callable[[], object], step_b: Callable[[], object], settings: Settings
) -> dict[str, float]:
    """ms of a switch: a step alternating two configurations (a b a b …) against a step repeating one."""
    same = time_ms(lambda: (step_a(), step_a()), settings) / 2
    alt = time_ms(lambda: (step_a(), step_b()), settings) / 2
    return {
        "same_ms": round(same, 4),
        "alternating_ms": round(alt, 4),
        "switch_ms": round(max(alt - same, 0.0), 4),
    }


# ----------------------------------------------------------------------------------------------- variants
Record = dict[str, Any]


def skipped(reason: str) -> Record:
    return {"status": "skipped", "reason": reason}


def measure(fn: Callable[[], object], settings: Settings, rec: Record) -> None:
    rec["ms"] = round(time_ms(fn, settings), 4)
    if settings.profile:
        rec["kernels"] = kernel_breakdown(fn, settings)


def group_bf16(case: Case, settings: Settings, want: list[str], emit: Callable[[str, Record], None]) -> None:
    reset_peak(settings)
    model = build_bf16(case, settings)
    resident = {
        "resident_gib": memory(settings).get("allocated_gib"),
        "weights_gb": weight_bytes(model) / 1e9,
    }
    for v in want:
        rec: Record = dict(resident)
        if v == "bf16-compile" and not cuda(settings):
            emit(v, skipped("torch.compile on the CPU (--smoke): Inductor's C++ build is too slow here"))
            continue
        with variant(v, settings, rec, emit):
            fn_model = (
                model
                if v == "bf16-eager"
                else Wrapped(model, torch.compile(model), settings.device, torch.bfloat16)
            )
            measure(step_fn(case, fn_model), settings, rec)
    del model


def group_fp8(case: Case, settings: Settings, want: list[str], emit: Callable[[str, Record], None]) -> None:
    if not cuda(settings):
        emit("fp8-compile", skipped("needs CUDA (torch._scaled_mm e4m3 on an sm_89+ GPU)"))
        return
    rec: Record = {}
    with variant("fp8-compile", settings, rec, emit):
        reset_peak(settings)
        model = build_bf16(case, settings)
        rec["fp8_layers"] = to_fp8(case, model)
        free_memory(settings)
        rec.update(resident_gib=memory(settings)["allocated_gib"], weights_gb=weight_bytes(model) / 1e9)
        compiled = Wrapped(model, torch.compile(model), settings.device, torch.bfloat16)
        measure(step_fn(case, compiled), settings, rec)
        del compiled, model


def group_ours(case: Case, settings: Settings, want: list[str], emit: Callable[[str, Record], None]) -> None:
    from adatsq.passes.fuse_projections import FusedProjection, fuse_projections, use_fused
    from adatsq.passes.quant_linear import set_activation_bits
    from adatsq.runtime.runner import _GraphCache

    reset_peak(settings)
    model = build_bf16(case, settings)
    n_act = quantize_ours(case, model, settings)
    free_memory(settings)
    base: Record = {
        "resident_gib": memory(settings).get("allocated_gib"), "weights_gb": weight_bytes(model) / 1e9,
        "act_layers": n_act, "weight_bits": settings.weight_bits,
    }  # fmt: skip
    act, _ = act_layers_q(model)
    cache = _GraphCache() if cuda(settings) else None
    current = [0]
    steps: dict[int, Callable[[], torch.Tensor]] = {}
    for v in want:
        fused = "-fused" in v
        if fused and not any(isinstance(m, FusedProjection) for m in model.modules()):
            base["fused_ops"] = fuse_projections(model)  # one op per group of linears reading one tensor
        use_fused(model, fused)
        if v.endswith("-compile"):
            compiled_ours(case, model, act, settings, {**base, "fused": fused}, emit, v)
            continue
        a = int(v.removeprefix("ours-a").removesuffix("-fused"))
        rec: Record = {**base, "a_bits": a, "fused": fused}
        with variant(v, settings, rec, emit):
            set_activation_bits(model, dict.fromkeys(act, a))
            rec["eager_ms"] = round(time_ms(step_fn(case, model), settings), 4)
            if cache is None:
                rec["graph"] = "skipped: CUDA graphs need CUDA"
                rec["ms"] = rec["eager_ms"]
                if settings.profile:
                    rec["kernels"] = kernel_breakdown(step_fn(case, model), settings)
                continue

            def prepare(a: int = a) -> None:
                set_activation_bits(model, dict.fromkeys(act, a))

            def key(a: int = a, fused: bool = fused) -> int:
                return graph_key(a, fused)

            fn = step_fn(
                case, Wrapped(model, graphed(model, cache, key, prepare), settings.device, torch.bfloat16)
            )
            current[0] = a
            measure(fn, settings, rec)
            rec["graph_errors"] = dict(cache.errors)
            if fused:
                continue
            steps[a] = fn
            if len(steps) >= 2:
                (a1, f1), (a2, f2) = list(steps.items())[:2]
                rec["switch"] = {"between": [a1, a2], **switch_cost(f1, f2, settings)}


def compiled_ours(
    case: Case,
    model: nn.Module,
    act: list[str],
    settings: Settings,
    base: Record,
    emit: Callable[[str, Record], None],
    name: str = "ours-a3-compile",
) -> None:
    """``name``, ``ours-a3-compile`` or ``ours-a3-fused-compile`` (with the fused projections): the all-A3
    model under ``torch.compile`` (Inductor fuses the model's own elementwise work — modulate, GELU, RoPE,
    residual adds — around the ``adatsq::qlinear`` custom op, which it calls as an opaque kernel), timed as
    compiled and as one CUDA graph of the compiled call (the runner's ``_GraphCache``)."""
    from adatsq.passes.quant_linear import set_activation_bits
    from adatsq.runtime.runner import _GraphCache

    if not cuda(settings):
        emit(name, skipped("torch.compile on the CPU (--smoke): Inductor's C++ build is too slow here"))
        return
    rec: Record = {**base, "a_bits": 3}
    with variant(name, settings, rec, emit):
        set_activation_bits(model, dict.fromkeys(act, 3))
        compiled = torch.compile(model)
        rec["compiled_ms"] = round(
            time_ms(step_fn(case, Wrapped(model, compiled, settings.device, torch.bfloat16)), settings), 4
        )
        cache = _GraphCache()
        graph_of_compiled = graphed(
            compiled, cache, lambda: graph_key(3, bool(base.get("fused"))), lambda: None
        )
        measure(
            step_fn(case, Wrapped(model, graph_of_compiled, settings.device, torch.bfloat16)), settings, rec
        )
        rec["graph_errors"] = dict(cache.errors)


def act_layers_q(model: nn.Module) -> tuple[list[str], list[str]]:
    from adatsq.passes.quant_linear import quant_linears

    q = quant_linears(model)
    return [n for n, m in q.items() if m.act_quantized], [n for n, m in q.items() if not m.act_quantized]


def schedule_dir_for(model: str, settings: Settings) -> Path | None:
    from adatsq.core.schedule import load_schedule

    for d in settings.schedule_dirs:
        if (d / "schedule.json").is_file() and load_schedule(d / "schedule.json").model == model:
            return d
    return None


def group_schedule(
    case: Case, settings: Settings, want: list[str], emit: Callable[[str, Record], None]
) -> None:
    from adatsq.core.models.base import run_sampler
    from adatsq.runtime.runner import EngineRunner

    root = schedule_dir_for(case.name, settings)
    if root is None:
        emit("ours-w3a3.1", skipped(f"no --schedule-dir holds a schedule of {case.name}"))
        return
    rec: Record = {"schedule_dir": str(root)}
    with variant("ours-w3a3.1", settings, rec, emit):
        reset_peak(settings)
        dtype = torch.bfloat16 if cuda(settings) else None
        runner = EngineRunner(
            root, backend="torch", device=settings.device, graphs=cuda(settings), dtype=dtype
        )
        model = runner.torch_model
        s = runner.schedule
        rec.update(
            resident_gib=memory(settings).get("allocated_gib"), weights_gb=weight_bytes(model) / 1e9,
            graphs=runner.graphs, target=s.target_bits, achieved_bits=s.achieved_bits, schedule_steps=s.steps,
            configs=len(s.configs), loop_steps=settings.loop_steps,
        )  # fmt: skip
        case = make_case(case.name, settings, tuple(s.resolution))
        shim = Wrapped(
            model, lambda *a, **kw: (runner.call_device(kw, a),), settings.device, dtype or torch.float32
        )
        per_config: dict[str, float] = {}
        first_step = {c: s.step_configs.index(c) for c in sorted(set(s.step_configs))}
        fns = {}
        for c, i in first_step.items():

            def fn(i: int = i) -> torch.Tensor:
                runner.set_step(i)
                return step_fn(case, shim)()

            fns[c] = fn
            per_config[str(c)] = round(time_ms(fn, settings), 4)
        rec["per_config_ms"] = per_config
        mapping = [i * s.steps // settings.loop_steps for i in range(settings.loop_steps)]
        rec["switches_in_loop"] = sum(
            s.step_configs[a] != s.step_configs[b] for a, b in zip(mapping, mapping[1:], strict=False)
        )

        def loop() -> torch.Tensor:
            return run_sampler(
                case.family, case.spec, shim, case.latents, case.cond, settings.loop_steps,
                before_step=lambda i: runner.set_step(mapping[i]),
            )  # fmt: skip

        loop_ms = time_ms(
            loop, dataclasses.replace(settings, warmup=min(settings.warmup, 1)), iters=min(settings.iters, 3)
        )
        rec["loop_ms"] = round(loop_ms, 3)
        rec["ms"] = round(loop_ms / settings.loop_steps, 4)
        if len(fns) >= 2:
            (c1, f1), (c2, f2) = list(fns.items())[:2]
            rec["switch"] = {"between": [c1, c2], **switch_cost(f1, f2, settings)}
        if settings.profile:
            rec["kernels"] = kernel_breakdown(next(iter(fns.values())), settings)
        if runner._graph_cache is not None:
            rec["graph_captures"] = runner._graph_cache.captures
            rec["graph_errors"] = dict(runner._graph_cache.errors)


@contextlib.contextmanager
def variant(
    name: str, settings: Settings, rec: Record, emit: Callable[[str, Record], None]
) -> Iterator[None]:
    """Runs one variant: peak reset before, status/error/peak recorded after, memory freed; never raises."""
    reset_peak(settings)
    start = time.perf_counter()
    try:
        yield
        rec["status"] = "ok"
    except Exception as exc:  # a failing variant is recorded and the run goes on
        rec.update(
            status="error",
            error=f"{type(exc).__name__}: {str(exc)[:500]}",
            traceback=traceback.format_exc()[-3000:],
        )
        print(f"  {name}: {rec['error']}", flush=True)
    rec["wall_s"] = round(time.perf_counter() - start, 2)
    if cuda(settings):
        rec["peak_gib"] = gib(torch.cuda.max_memory_allocated())
    emit(name, rec)
    free_memory(settings)


GROUPS: tuple[tuple[tuple[str, ...], Callable[..., None]], ...] = (
    (("bf16-eager", "bf16-compile"), group_bf16),
    (("fp8-compile",), group_fp8),
    (
        ("ours-a3", "ours-a4", "ours-a8", "ours-a3-compile", "ours-a3-fused", "ours-a3-fused-compile"),
        group_ours,
    ),
    (("ours-w3a3.1",), group_schedule),
)


# ----------------------------------------------------------------------------------------------- results
def load_results(path: Path) -> dict[str, Any]:
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            print(f"warning: {path} is not JSON; starting afresh", flush=True)
    return {"runs": [], "results": {}}


def save_results(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def meta(settings: Settings) -> dict[str, Any]:
    return {
        "command": "python " + " ".join(sys.argv),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name() if cuda(settings) else "none (CPU)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": settings.device,
        "smoke": settings.smoke,
        "iters": settings.iters,
        "warmup": settings.warmup,
    }


# ----------------------------------------------------------------------------------------------- main
def run(
    models: list[str], variants: list[str], settings: Settings, out: Path, force: bool, budget: float | None
) -> dict[str, Any]:
    data = load_results(out)
    data["runs"].append(meta(settings))
    start = time.perf_counter()
    for m in models:
        for names, fn in GROUPS:
            want = [
                v
                for v in names
                if v in variants and (force or data["results"].get(f"{m}/{v}", {}).get("status") != "ok")
            ]
            if not want:
                continue
            if budget is not None and time.perf_counter() - start > budget:
                print(
                    f"time budget of {budget:.0f} s spent: stopping before {m} {want}; rerun to resume",
                    flush=True,
                )
                data["stopped"] = f"time budget before {m} {want}"
                save_results(out, data)
                return data
            data.pop("stopped", None)
            print(f"{m}: {', '.join(want)}", flush=True)

            def emit(v: str, rec: Record, m: str = m) -> None:
                data["results"][f"{m}/{v}"] = {
                    **rec,
                    "date": datetime.datetime.now().isoformat(timespec="seconds"),
                }
                save_results(out, data)
                print(
                    f"  {v}: {rec.get('status')} {rec.get('ms', '')} ms {rec.get('reason', '')}", flush=True
                )

            try:
                fn(make_case(m, settings), settings, want, emit)
            except Exception as exc:  # a group whose build failed: record it for each of its variants
                for v in want:
                    if data["results"].get(f"{m}/{v}", {}).get("status") != "ok":
                        emit(
                            v,
                            {
                                "status": "error",
                                "error": f"{type(exc).__name__}: {str(exc)[:500]}",
                                "traceback": traceback.format_exc()[-3000:],
                            },
                        )
            free_memory(settings)
    return data


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(FULL_MODELS))
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {','.join(VARIANTS)}")
    ap.add_argument("--out", default="benchmarks/results/bench_e2e.json")
    ap.add_argument(
        "--iters", type=int, default=None, help="timed steps per variant (median); default 10, smoke 1"
    )
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first; default 3, smoke 0")
    ap.add_argument(
        "--schedule-dir", default="", help="adatsq-compile --random-weights output dir(s), comma-separated"
    )
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--weight-bits", type=int, default=3, choices=(3, 4))
    ap.add_argument(
        "--loop-steps", type=int, default=None, help="steps of the schedule loop; default 50, smoke 4"
    )
    ap.add_argument("--no-profile", action="store_true", help="skip the per-kernel breakdown")
    ap.add_argument("--force", action="store_true", help="re-run (model, variant) pairs already ok in --out")
    ap.add_argument(
        "--time-budget", type=float, default=None, help="seconds after which no variant is started"
    )
    ap.add_argument("--smoke", action="store_true", help="tiny models on the CPU, tiny iteration counts")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"error: unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if a.smoke:
        models = [SMOKE_MODELS.get(m, m) for m in models]
        a.device = "cpu"
    settings = Settings(
        device=a.device, iters=a.iters or (1 if a.smoke else 10), warmup=a.warmup if a.warmup is not None else (0 if a.smoke else 3),
        smoke=a.smoke, weight_bits=a.weight_bits, loop_steps=a.loop_steps or (4 if a.smoke else 50),
        schedule_dirs=tuple(Path(p) for p in a.schedule_dir.split(",") if p), profile=not a.no_profile,
    )  # fmt: skip
    if cuda(settings):
        import adatsq.plugins.kernels  # noqa: F401  (the CUDA implementation of adatsq::qlinear)

        torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    data = run(models, variants, settings, Path(a.out), a.force, a.time_budget)
    md = to_markdown(data, models, variants)
    data["table_md"] = md
    save_results(Path(a.out), data)
    print(md)


if __name__ == "__main__":
    main()

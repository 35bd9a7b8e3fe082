"""Stage 3, search: per-step Fisher-guided candidates, their measured cost, Pareto beam search over steps,
and the final choice within the bit budget by an end-to-end metric; writes ``schedule.json``.

Candidate cost at step t: MSE between the quantized model's velocity and the full-precision velocity on the
calibration latents of step t (the first ``--search-samples`` of them), with weights quantized round-to-nearest at the compile's weight bits (the
GPTQ weights come after the search; weight bits are fixed, so this ranks activation configurations under the
same weight error). Candidate costs (per step and bit vector) and path metrics are cached in ``cache/search.pt``, so a new
``--target`` measures only the candidates it has not seen and re-runs the (cheap) beam and selection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from adatsq.compiler.context import CompileContext
from adatsq.compiler.metrics import PathBits, PathsMetric, score_paths
from adatsq.compiler.prompts import conditioning
from adatsq.compiler.search import (
    BEAM_RULES,
    BUDGET_TOL,
    Candidate,
    Path,
    generate_candidates,
    pareto_beam_search,
    select_path,
)
from adatsq.compiler.stages.calibrate import calibrate_key
from adatsq.core.atomic import atomic_write
from adatsq.core.contract import QUANTIZED_ACT_BITS
from adatsq.core.hashing import stable_hash
from adatsq.core.models.base import run_sampler
from adatsq.core.schedule import (
    SCHEDULE_VERSION,
    CalibrationProvenance,
    ParetoEntry,
    SamplerSpec,
    Schedule,
    save_schedule,
)
from adatsq.passes.fuse_projections import fuse_projections
from adatsq.passes.quant_linear import quant_linears, set_activation_bits

__all__ = ["latent_metric", "run_search", "search_key"]


def _frontier_key(ctx: CompileContext) -> dict[str, Any]:
    c = ctx.config
    return {
        "calibration": calibrate_key(ctx),
        "candidates": c.candidates,
        "clusters": c.clusters,
        "weight_bits": ctx.weight_bits,
        "group_size": ctx.group_size,
        "max_engines": c.max_engines,
        "metric": c.metric,
        "heldout": c.heldout_samples,
        "search_samples": c.resolved_search_samples(),
        # the search measures a round-to-nearest copy: its weights depend on these
        "rotation": c.rotation,
        "weight_scale": c.weight_scale,
        # only when not the default, so the keys of earlier outputs stay valid
        **({"weight_group": c.weight_group} if c.weight_group != "group" else {}),
        "static": c.static_schedule,
        "uniform": c.uniform_bits,
    }


def search_key(ctx: CompileContext) -> dict[str, Any]:
    c = ctx.config
    # weights/alpha are recorded in schedule.json (provenance of the quantize stage); a change re-runs the
    # search from its cached candidate costs and metrics, to rewrite the record
    return {
        **_frontier_key(ctx),
        "target": c.target,
        "weights": c.weights,
        "alpha": c.alpha,
        "method": c.method,
        "beam": BEAM_RULES,
    }


def _unit_bits_to_layers(ctx: CompileContext, bits: Sequence[int]) -> dict[str, int]:
    return {m: b for u, b in zip(ctx.inventory.units, bits) for m in u.members}


def _generated_candidates(ctx: CompileContext) -> list[list[Candidate]]:
    """Per step: Fisher-guided candidates within the step's share of the budget (``--uniform-bits``: the one
    all-equal configuration).

    A step can use at most target·steps − (steps − 1)·min_bits on average (every other step at its
    minimum), so candidates above that are never generated. ``--static-schedule``: every step gets the pool of
    all steps' candidates whose own average is within the target (a configuration used at every step must
    meet the target by itself), in first-generated order."""
    data = ctx.calibration
    inv = ctx.inventory
    col = {n: j for j, n in enumerate(data.layers)}
    sizes = inv.unit_sizes()
    if ctx.config.uniform_bits:  # one width everywhere: the largest within the target
        width = max(b for b in QUANTIZED_ACT_BITS if b <= ctx.config.target + BUDGET_TOL)
        return [[Candidate((width,) * len(inv.units))] for _ in range(ctx.steps)]
    cap = ctx.config.target * ctx.steps - (ctx.steps - 1) * min(QUANTIZED_ACT_BITS)
    per_step: list[list[Candidate]] = []
    for t in range(ctx.steps):
        scores = [float(sum(data.fisher[t, col[m]] for m in u.members)) for u in inv.units]
        per_step.append(
            generate_candidates(
                scores,
                sizes,
                m=ctx.config.candidates,
                bit_choices=QUANTIZED_ACT_BITS,
                n_clusters=ctx.config.clusters,
                max_average=cap,
            )
        )
    if not ctx.config.static_schedule:
        return per_step
    pool = {
        c.bits: c
        for cands in per_step
        for c in cands
        if c.average_bits(sizes) <= ctx.config.target + BUDGET_TOL
    }
    return [list(pool.values()) for _ in range(ctx.steps)]


def _step_candidates(
    ctx: CompileContext, qmodel: nn.Module, losses: dict[tuple[int, tuple[int, ...]], float]
) -> list[list[tuple[Candidate, float, float]]]:
    """Per step: the candidates of :func:`_generated_candidates` and their measured MSE against the
    full-precision output at that step. ``losses`` caches (step, unit bits) → MSE."""
    data = ctx.calibration
    sizes = ctx.inventory.unit_sizes()
    modules = quant_linears(qmodel)
    first = slice(0, ctx.config.resolved_search_samples())
    cond = data.cond.select(first)
    generated = _generated_candidates(ctx)
    out: list[list[tuple[Candidate, float, float]]] = []
    with (
        torch.no_grad(),
        ctx.progress("search: candidate costs", sum(len(c) for c in generated)) as advance,
    ):
        for t, cands in enumerate(generated):
            ts = _timestep(ctx, t)
            x, reference = data.latents[t, first], data.outputs[t, first].to(ctx.device)
            entries = []
            for cand in cands:
                if (t, cand.bits) not in losses:
                    set_activation_bits(qmodel, _unit_bits_to_layers(ctx, cand.bits), modules)
                    v = ctx.family.velocity(qmodel, x, ts, cond, ctx.spec)
                    losses[(t, cand.bits)] = float((v.float() - reference).pow(2).mean())
                entries.append((cand, cand.average_bits(sizes), losses[(t, cand.bits)]))
                advance(1)
            out.append(entries)
    return out


def _timestep(ctx: CompileContext, t: int) -> torch.Tensor:
    return ctx.family.scheduler_timestep(ctx.calibration.timesteps[t])


def latent_metric(ctx: CompileContext, qmodel: nn.Module) -> PathsMetric:
    """End-to-end metric: relative error ‖x0_q − x0_fp‖² / ‖x0_fp‖² of the final latents over held-out seeds
    (not the calibration seeds), with the quantized model switching bit configurations per step."""
    c = ctx.config
    generator = torch.Generator().manual_seed(c.seed + 10_000)
    cond, _ = conditioning(ctx, c.heldout_samples, c.calib_samples, generator)
    noise = ctx.family.sample_noise(ctx.spec, ctx.model, ctx.resolution, c.heldout_samples, generator)
    with torch.no_grad():
        reference = run_sampler(ctx.family, ctx.spec, ctx.model, noise, cond, ctx.steps).float()

    def score(final: torch.Tensor) -> float:
        return float((final.float() - reference).pow(2).sum() / reference.pow(2).sum())

    def metric(paths: Sequence[PathBits], advance: Callable[[int], None]) -> list[float]:
        return score_paths(ctx, qmodel, _unit_bits_to_layers, noise, cond, paths, score, advance)

    return metric


def _path_bits(
    path: Path, step_cands: Sequence[Sequence[tuple[Candidate, float, float]]]
) -> tuple[tuple[int, ...], ...]:
    return tuple(step_cands[t][c][0].bits for t, c in enumerate(path.choices))


def run_search(ctx: CompileContext) -> None:
    c = ctx.config
    qmodel = ctx.quantized_copy()
    # the runner's fused projections, x·[W_1; …; W_n]ᵀ = [x·W_1ᵀ | … | x·W_nᵀ] per unit (one activation
    # quantization and one GEMM for the linears reading one tensor): each column is its member's contract-1
    # result, so the costs and metrics are the unfused model's (bit for bit on the CPU), in fewer kernels
    fuse_projections(qmodel)
    cache = ctx.out.cache / "search.pt"
    fkey = stable_hash(_frontier_key(ctx))
    cached = ctx.read_cache(cache.name)  # None (after a warning) when damaged: measured again
    fresh = not isinstance(cached, dict) or cached.get("key") != fkey
    losses: dict[tuple[int, tuple[int, ...]], float] = {} if fresh else cached["losses"]
    metrics: dict[tuple[tuple[int, ...], ...], float] = {} if fresh else cached["metrics"]

    step_cands = _step_candidates(ctx, qmodel, losses)
    paths = pareto_beam_search(
        step_cands,
        beam_width=c.candidates,
        max_engines=1 if c.static_schedule or c.uniform_bits else c.max_engines,
        budget=c.target * ctx.steps,
    )
    feasible = [p for p in paths if p.average_bits(ctx.steps) <= c.target + BUDGET_TOL]
    # one schedule within the target (e.g. uniform bits) leaves nothing for the metric to pick: not sampled
    choice = len({_path_bits(p, step_cands) for p in feasible}) > 1
    if choice:
        todo = list(dict.fromkeys(b for p in feasible if (b := _path_bits(p, step_cands)) not in metrics))
        with ctx.progress("search: end-to-end metric of feasible paths", len(feasible)) as advance:
            advance(len(feasible) - len(todo))
            if todo:  # one sampling pass over the paths' trie: shared prefixes are sampled once
                metrics.update(zip(todo, _metric(ctx, qmodel)(todo, advance), strict=True))
    best, _evaluated = select_path(
        paths,
        ctx.steps,
        c.target,
        (lambda p: metrics[_path_bits(p, step_cands)]) if choice else (lambda p: 0.0),
    )
    atomic_write(cache, lambda p: torch.save({"key": fkey, "losses": losses, "metrics": metrics}, p))
    ctx.schedule = _build_schedule(ctx, best, paths, step_cands, metrics)
    save_schedule(ctx.out.schedule, ctx.schedule)


def _metric(ctx: CompileContext, qmodel: nn.Module) -> PathsMetric:
    if ctx.config.metric == "clip":
        from adatsq.compiler.metrics import clip_metric

        return clip_metric(ctx, qmodel, _unit_bits_to_layers)
    if ctx.config.metric == "geneval":
        from adatsq.compiler.geneval.metric import geneval_metric

        return geneval_metric(ctx, qmodel, _unit_bits_to_layers)
    return latent_metric(ctx, qmodel)


def _build_schedule(
    ctx: CompileContext,
    best: Path,
    paths: Sequence[Path],
    step_cands: Sequence[Sequence[tuple[Candidate, float, float]]],
    metrics: dict[tuple[tuple[int, ...], ...], float],
) -> Schedule:
    inv = ctx.inventory
    data = ctx.calibration
    best_bits = _path_bits(best, step_cands)
    configs: list[tuple[int, ...]] = []
    step_configs: list[int] = []
    for unit_bits in best_bits:
        layer_bits = _unit_bits_to_layers(ctx, unit_bits)
        vec = tuple(layer_bits[m] for m in inv.act_layers)
        if vec not in configs:
            configs.append(vec)
        step_configs.append(configs.index(vec))
    pareto = tuple(
        ParetoEntry(
            step_configs=_path_bits(p, step_cands),
            average_bits=p.average_bits(ctx.steps),
            cumulative_loss=p.cum_loss,
            metric=metrics.get(_path_bits(p, step_cands)),
            selected=p == best,
        )
        for p in paths
    )
    scheduler = ctx.family.make_scheduler(ctx.spec)
    c = ctx.config
    schedule = Schedule(
        format_version=SCHEDULE_VERSION,
        model=ctx.spec.name,
        model_id=(
            f"{ctx.spec.hf_id} architecture with random weights (seed {c.seed}): not a real model"
            if c.random_weights
            else c.model_path or ctx.spec.hf_id
        ),
        revision=ctx.spec.revision,
        model_fingerprint=ctx.fingerprint,
        steps=ctx.steps,
        resolution=tuple(ctx.resolution),
        sampler=SamplerSpec(
            scheduler=type(scheduler).__name__,
            scheduler_config=dict(ctx.spec.scheduler_config),
            guidance_scale=ctx.spec.guidance_scale,
            timesteps=tuple(round(float(t), 6) for t in data.timesteps),
        ),
        target_bits=c.target,
        achieved_bits=0.0,
        group_size=ctx.group_size,
        act_layers=inv.act_layers,
        units=tuple(u.members for u in inv.units),
        weight_bits={n: ctx.weight_bits for n in inv.quantized_layers},
        weight_only_layers=inv.weight_only,
        configs=tuple(configs),
        step_configs=tuple(step_configs),
        pareto=pareto,
        calibration=CalibrationProvenance(
            prompts=tuple(data.provenance["prompts"]) if data.provenance.get("prompts") else None,
            seed=c.seed,
            samples=c.calib_samples,
            heldout_seeds=(c.seed + 10_000,),
        ),
        search={
            "candidates": c.candidates,
            "max_engines": c.max_engines,
            "metric": c.metric,
            "beam_width": c.candidates,
            "search_samples": c.resolved_search_samples(),
            "static_schedule": c.static_schedule,
            "uniform_bits": c.uniform_bits,
            "method": c.method,
            # how the weights were made (the quality table's ablations); weights.safetensors records each
            # layer's rotation itself
            "weights": c.weights,
            "alpha": c.alpha,
            "weight_scale": c.weight_scale,
            "weight_group": c.weight_group,
            "rotation": c.rotation,
        },
        random_weights=c.random_weights,
    )
    return schedule.replace(achieved_bits=round(schedule.average_bits(), 6))

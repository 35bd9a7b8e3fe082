"""Stage 4, quantize weights: fold rotations (W ← W·R), Fisher-weighted GPTQ, pack, write
``weights.safetensors``.

Per layer l, H'_l = Σ_t α[t, l] · X̃_t,l X̃_t,lᵀ with X̃ the rotated inputs at step t on the calibration latents
and α[:, l] = softmax_t(Î[t, l]/τ) (calib/gptq.fisher_alpha). The Hessians are accumulated by replaying the
stored latents of every step through the full-precision model (no per-step Hessian is kept); layers are
processed in chunks whose K×K accumulators fit ``--hessian-memory``.

On the CPU the accumulators are float64 (the tiny models' GPTQ equals the reference GPTQ bit for bit). On the
GPU they are float32 on the device, fed by TF32 GEMMs (X̃ᵀX̃ of Flux-dev is ~130 TFLOP per sample-step, 2.6 s
in plain float32 against ~0.3 s in TF32; H only steers GPTQ's error feedback, and its 10-bit-mantissa
products are summed in float32), in chunks of 40 GB by default: Flux-dev's 75 GB of float32 Hessians take
two replays. GPTQ then runs on the device layer by layer, its Cholesky factorisation in float64.

Data-parallel (torchrun): each rank replays its shard of the calibration samples and the accumulators are
summed across ranks (calib/distributed); H is a plain sum, so the merge is exact up to summation order.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from adatsq.calib import distributed
from adatsq.calib.d2quant import DOWN_PROJECTION, dac_shift, dsq_scales
from adatsq.calib.gptq import (
    fisher_alpha,
    gptq_peak_bytes,
    gptq_quantize,
    uniform_alpha,
    weighted_reconstruction_error,
)
from adatsq.calib.group_alloc import allocate_group_sizes, candidate_groups, layer_group_errors
from adatsq.calib.hessian import HessianAccumulator
from adatsq.calib.lowrank import lowrank_split
from adatsq.calib.obs import clip_search, obs_block, obs_blocks, obs_permutation, outlier_scores
from adatsq.calib.smoothing import smooth_hessian, smoothing_scales, ssc_salience
from adatsq.compiler.context import CompileContext
from adatsq.compiler.settings import GPTQ_RESERVE_GB
from adatsq.compiler.stages.calibrate import calibrate_key
from adatsq.core.atomic import atomic_write_text
from adatsq.core.contract import UNQUANTIZED
from adatsq.core.errors import CompileError
from adatsq.core.hashing import stable_hash
from adatsq.passes.quant_linear import (
    InsertQuantLinearPass,
    rotation_blocks,
    set_activation_bits,
    set_submodule,
)
from adatsq.passes.weight_store import save_weight_store
from adatsq.plugins.hadamard import rotate_blocks
from adatsq.plugins.reference import (
    channel_scale_as_groups,
    dequantize_weight,
    granular_weight_scale,
    quantize_weight_rtn,
)

__all__ = ["quantize_key", "run_quantize"]


def quantize_key(ctx: CompileContext) -> dict[str, Any]:
    s = ctx.schedule
    c = ctx.config
    return {
        "calibration": calibrate_key(ctx),
        "tau": c.tau,
        "weights": c.weights,
        "alpha": c.alpha,
        "weight_scale": c.weight_scale,
        **({"weight_group": c.weight_group} if c.weight_group != "group" else {}),  # earlier keys stay valid
        "rotation": c.rotation,
        "smoothing": [c.smoothing, c.smooth_alpha],
        "lowrank": c.lowrank,
        "salience": c.salience,
        "group_alloc": [c.group_alloc, list(c.group_candidates)],
        "d2quant": [c.dsq, c.dac],
        "clq": [c.obs, c.obs_blocks, c.cbc, c.clip_search],
        # cross-block calibration replays through the quantized blocks: their activation bits matter
        "schedule": stable_hash(s.to_dict()) if c.cbc else None,
        "weight_bits": s.weight_bits,
        "group_size": s.group_size,
        "act_layers": list(s.act_layers),
    }


def _chunks(names: list[str], widths: dict[str, int], budget_bytes: float, itemsize: int) -> list[list[str]]:
    chunks: list[list[str]] = [[]]
    used = 0.0
    for n in names:
        need = widths[n] ** 2 * itemsize
        if chunks[-1] and used + need > budget_bytes:
            chunks.append([])
            used = 0.0
        chunks[-1].append(n)
        used += need
    return chunks


#: the block a layer belongs to (cross-block calibration quantizes block by block): its name up to the first
#: ModuleList index, ``transformer_blocks.3`` of ``transformer_blocks.3.attn.to_q`` (Wan ``blocks.3``, Z-Image
#: ``layers.3`` / ``noise_refiner.0``); a layer outside every block list is a block of its own
BLOCK = re.compile(r"^(.*?\.\d+)\.")


def _block_chunks(
    model: nn.Module, names: list[str], widths: dict[str, int], budget_bytes: float, itemsize: int
) -> list[list[str]]:
    """``names`` in the model's module order, one chunk per transformer block (split further by the memory
    budget): each chunk's replay then sees every block before it quantized."""
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    groups: dict[str, list[str]] = {}
    for n in sorted(names, key=order.__getitem__):
        m = BLOCK.match(n)
        groups.setdefault(m.group(1) if m else n, []).append(n)
    return [part for group in groups.values() for part in _chunks(group, widths, budget_bytes, itemsize)]


def _hessian_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "cuda" else torch.float64


@contextlib.contextmanager
def _tf32_on_gpu(device: torch.device) -> Iterator[None]:
    """TF32 float32 GEMMs for the GPU accumulators (module docstring); the CPU keeps exact float64."""
    if device.type != "cuda":
        yield
        return
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


@dataclasses.dataclass
class _ReplayStats:
    """What the replay collects next to the Hessians, per layer name.

    ``raw``: layers whose H is of the raw input x (smoothing, DSQ: their diag(s)⁻¹ and rotation are applied to H
    afterwards, once s is known: :func:`_smoothed_rotated`); ``absmax``: max|X_j| per step (steps × K) of the
    smoothed layers; ``sums``: Σ α·x per channel (K) in H's domain (DAC's mean); ``tokens``: a subsample of
    the raw inputs (Q-DiT's group allocation), at most ``token_cap`` rows per step."""

    raw: set[str] = dataclasses.field(default_factory=set)
    absmax: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    sums: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    tokens: dict[str, list[torch.Tensor]] = dataclasses.field(default_factory=dict)
    token_cap: int = 0


#: tokens per layer that Q-DiT's group allocation scores its candidates on (spread over the steps)
ALLOC_TOKENS = 512


def _accumulate(
    ctx: CompileContext,
    names: list[str],
    rotated: dict[str, tuple[int, ...]],
    alpha: torch.Tensor,
    col: dict[str, int],
    samples: list[int],
    advance: Callable[[int], None],
    stats: _ReplayStats | None = None,
    hessians: bool = True,
) -> dict[str, HessianAccumulator]:
    """Σ_t α[t, l]·X̃ᵀX̃ per layer of ``names`` over the replayed trajectories (``hessians=False``: none, only
    ``stats``), and what ``stats`` asks for (:class:`_ReplayStats`)."""
    data = ctx.calibration
    modules = dict(ctx.model.named_modules())
    device = ctx.device
    dtype = _hessian_dtype(device)
    accs = (
        {n: HessianAccumulator(modules[n].in_features, dtype=dtype, device=device) for n in names}
        if hessians
        else {}
    )
    stats = stats if stats is not None else _ReplayStats()
    state = {"t": 0}

    def hook_for(name: str):  # noqa: ANN202
        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().to(dtype)
            flat = x.reshape(-1, x.shape[-1])
            t = state["t"]
            if name in stats.tokens:
                stride = max(1, flat.shape[0] // max(stats.token_cap, 1))
                stats.tokens[name].append(flat[::stride][: stats.token_cap].float().cpu())
            if name in stats.absmax:  # on the device: no host sync per layer call
                step = stats.absmax[name][t]
                torch.maximum(step, flat.abs().amax(dim=0).to(step.dtype), out=step)
            if name not in stats.raw and name in rotated:
                x = rotate_blocks(x, rotated[name])
                flat = x.reshape(-1, x.shape[-1])
            weight = float(alpha[t, col[name]])
            if name in stats.sums:
                stats.sums[name].add_(flat.sum(dim=0).to(stats.sums[name].dtype), alpha=weight)
            if name in accs:
                accs[name].add(x, weight=weight)

        return hook

    handles = [modules[n].register_forward_pre_hook(hook_for(n)) for n in names]
    index = torch.tensor(samples, dtype=torch.long)
    cond = data.cond.select(index)
    try:
        with torch.no_grad(), _tf32_on_gpu(device):
            for t in range(data.steps):
                state["t"] = t
                if samples:
                    ts = ctx.family.scheduler_timestep(data.timesteps[t])
                    ctx.family.velocity(ctx.model, data.latents[t, index], ts, cond, ctx.spec)
                advance(1)
    finally:
        for h in handles:
            h.remove()
    for acc in accs.values():  # every rank's share of Σ α X̃ᵀX̃ (a no-op in one process)
        acc.all_reduce_()
    for amax in stats.absmax.values():
        distributed.all_reduce_max_(amax)
    for total in stats.sums.values():
        distributed.all_reduce_sum_(total)
    return accs


def _smoothed_rotated(
    h: torch.Tensor, s: torch.Tensor, blocks: tuple[int, ...] | None, perm: torch.Tensor | None = None
) -> torch.Tensor:
    """H of x̃ = x·diag(s)⁻¹·P·R from H of x: Rᵀ·Pᵀ·diag(s)⁻¹·H·diag(s)⁻¹·P·R (P: CLQ's permutation, x·P =
    x[..., perm], or none; R block-diagonal Hadamard, or none)."""
    h = smooth_hessian(h, s)
    if perm is not None:  # Pᵀ·H·P = H[perm][:, perm]
        p = perm.to(h.device)
        h = h[p][:, p]
    if blocks is None:
        return h
    return rotate_blocks(rotate_blocks(h, blocks).t().contiguous(), blocks)  # (H·R)ᵀ·R = Rᵀ·H·R (H symmetric)


def _min_act_bits(ctx: CompileContext) -> dict[str, int]:
    """Each activation-quantized layer's fewest activation bits over the schedule's configurations."""
    s = ctx.schedule
    return {n: min(cfg[j] for cfg in s.configs) for j, n in enumerate(s.act_layers)}


def _allocate_groups(
    ctx: CompileContext,
    names: list[str],
    alpha: torch.Tensor,
    col: dict[str, int],
    samples: list[int],
) -> dict[str, int]:
    """Q-DiT's G per layer (calib/group_alloc.py) from a replay that keeps :data:`ALLOC_TOKENS` raw inputs per
    layer; the errors are of the layer as loaded (before smoothing, low-rank and DSQ) with round-to-nearest
    weights at its fewest activation bits (16 for weight-only layers). Every rank replays; rank 0's tokens
    decide and its choice is broadcast."""
    c = ctx.config
    s = ctx.schedule
    modules = dict(ctx.model.named_modules())
    stats = _ReplayStats(tokens={n: [] for n in names}, token_cap=-(-ALLOC_TOKENS // max(ctx.steps, 1)))
    with ctx.progress(
        "quantize: group allocation (replay of the trajectories)", ctx.calibration.steps
    ) as advance:
        _accumulate(ctx, names, {}, alpha, col, samples, advance, stats, hessians=False)
    act = set(s.act_layers)
    bits = _min_act_bits(ctx)
    errors: dict[str, dict[int, float]] = {}
    shapes: dict[str, tuple[int, int]] = {}
    for n in names:
        lin = modules[n]
        k = lin.in_features
        groups = candidate_groups(k, s.group_size, c.group_candidates)
        split = ctx.family.input_split(ctx.model, n)
        blocks = {g: rotation_blocks(k, n in act, g, c.rotation, split) for g in groups}
        x = torch.cat(stats.tokens.pop(n)) if stats.tokens.get(n) else torch.zeros(0, k)
        errors[n] = layer_group_errors(
            x, lin.weight, s.weight_bits[n], bits.get(n, UNQUANTIZED), groups, blocks, c.weight_scale
        )
        shapes[n] = (lin.out_features, k)
    chosen = allocate_group_sizes(errors, shapes, s.group_size)
    picked = torch.tensor([chosen[n] for n in names], dtype=torch.long)
    distributed.broadcast_(picked, 0)
    chosen = {n: int(g) for n, g in zip(names, picked.tolist(), strict=True)}
    report = {n: {"group": chosen[n], "errors": {str(g): e for g, e in errors[n].items()}} for n in names}
    if distributed.is_main():
        text = json.dumps(report, indent=1, sort_keys=True) + "\n"
        atomic_write_text(ctx.out.cache / "group_sizes.json", text)
    return chosen


def _to_op_domain(v: torch.Tensor, s: torch.Tensor | None, blocks: tuple[int, ...] | None) -> torch.Tensor:
    """A per-channel row vector of raw x (the mean) in the op's domain: v·diag(s)⁻¹·R."""
    v = v / s.to(v) if s is not None else v
    return rotate_blocks(v[None, :], blocks)[0] if blocks is not None else v


@dataclasses.dataclass
class _Outputs:
    """What the stage produces per layer: codes (and scales) in the op's domain, the error record, and the
    layer's extras when a method made them (SmoothQuant's s, SVDQuant's branch, DAC's bias, CLQ's G)."""

    codes: dict[str, tuple[torch.Tensor, torch.Tensor]] = dataclasses.field(default_factory=dict)
    errors: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    smooth: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    lowrank: dict[str, tuple[torch.Tensor, torch.Tensor]] = dataclasses.field(default_factory=dict)
    biases: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    obs: dict[str, tuple[torch.Tensor, tuple[int, ...]]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _Replay:
    """What every chunk's replay and quantization share (fixed for the stage)."""

    quant: dict[str, Any]  # LayerQuant per layer
    rotated: dict[str, tuple[int, ...]]
    alpha: torch.Tensor
    col: dict[str, int]
    samples: list[int]
    widths: dict[str, int]
    dsq_layers: set[str]
    dtype: torch.dtype


@dataclasses.dataclass
class _Quantized:
    """One layer quantized both ways: W̃ (the op's domain), its Hessian there, the RTN and GPTQ codes and
    their trace(D·H·Dᵀ) errors; ``smooth``: the s of x̂ = x·diag(s)⁻¹ the codes are for (None: no Mul)."""

    w_rot: torch.Tensor
    hessian: torch.Tensor
    smooth: torch.Tensor | None
    rtn: tuple[torch.Tensor, torch.Tensor]
    gptq: tuple[torch.Tensor, torch.Tensor]
    errors: dict[str, float]


def _quantize_layer(
    w: torch.Tensor,
    s: torch.Tensor | None,
    h: torch.Tensor,
    raw: bool,
    blocks: tuple[int, ...] | None,
    bits: int,
    group: int,
    method: str,
    perm: torch.Tensor | None = None,
    clip: bool = False,
    granularity: str = "group",
) -> _Quantized:
    """Quantize W (already W·diag(s), and ·P with CLQ's ``perm``) for x̂ = x·diag(s)⁻¹·P·R; ``h``: the replay's Hessian
    (of the raw x when ``raw``, else of x·R already). ``clip``: the RTN codes by CLQ's clip search
    (calib/obs.clip_search) instead of ``method``'s scales. ``granularity``: the weight scales' (plugins/reference
    .WEIGHT_GRANULARITIES): ``channel`` runs GPTQ with one group of K and repeats its scales; ``pow2`` gives
    GPTQ the ladder's scales of the unupdated W·R, fixed (calib/gptq's ``fixed_scales``)."""
    if raw:
        ones = torch.ones(w.shape[1], dtype=torch.float64, device=h.device)
        h = _smoothed_rotated(h, (s if s is not None else ones).to(h.device), blocks, perm)
    w_rot = rotate_blocks(w, blocks) if blocks is not None else w
    errors: dict[str, float] = {}
    w32, k = w_rot.float(), w_rot.shape[1]
    # RTN's scales, and GPTQ's fixed ones for the pow2 ladder (the settings refuse --clip-search with it)
    scale = None if clip else granular_weight_scale(w32, bits, group, method, granularity)
    if clip:
        rc, rs, ratio, _ = clip_search(w_rot, h, bits, group)
        errors["clip_ratio"] = ratio
    else:
        rc, rs = quantize_weight_rtn(w32, bits, group, scale=scale)
    fixed = scale if granularity == "pow2" else None
    g_gptq = k if granularity == "channel" else group
    gc, gs = gptq_quantize(w32, h, bits, g_gptq, scale_method=method, fixed_scales=fixed)
    gs = channel_scale_as_groups(gs, k, group) if granularity == "channel" else gs
    errors["gptq"] = weighted_reconstruction_error(w_rot, dequantize_weight(gc, gs).double(), h)
    errors["rtn"] = weighted_reconstruction_error(w_rot, dequantize_weight(rc, rs).double(), h)
    return _Quantized(w_rot, h, s, (rc, rs), (gc, gs), errors)


def _free_gpu_gb(device: torch.device) -> float | None:
    """GiB the stage can still allocate on a CUDA ``device``: the driver's free memory plus what the caching
    allocator holds unused; None off the GPU."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return (free + cached) / 2**30


def gptq_reserve_gb(shapes: list[tuple[int, int]]) -> float:
    """GB the stage keeps free beside the Hessian accumulators for GPTQ of the widest of the (N, K) layers:
    GPTQ_RESERVE_GB, or gptq_peak_bytes of that layer plus a quarter and 2 GB where that is more."""
    widest = max(gptq_peak_bytes(n, k) for n, k in shapes)
    return max(GPTQ_RESERVE_GB, 1.25 * widest / 2**30 + 2.0)


def run_quantize(ctx: CompileContext) -> None:
    s = ctx.schedule
    data = ctx.calibration
    modules = dict(ctx.model.named_modules())
    names = list(s.act_layers) + list(s.weight_only_layers)
    col = {n: j for j, n in enumerate(data.layers)}
    c = ctx.config
    alpha = fisher_alpha(data.fisher, c.tau) if c.alpha == "fisher" else uniform_alpha(data.fisher)
    samples = distributed.shard(data.samples)
    groups = _allocate_groups(ctx, names, alpha, col, samples) if c.group_alloc else {}
    # how each layer is quantized: the search's copy and this stage agree
    quant = ctx.layer_quant(groups=groups)
    rotated = {n: b for n in names if (b := quant[n].blocks(modules[n].in_features)) is not None}
    widths = {n: modules[n].in_features for n in names}
    reserve = gptq_reserve_gb([(modules[n].out_features, widths[n]) for n in names])
    budget = ctx.config.resolved_hessian_memory_gb(ctx.device.type, _free_gpu_gb(ctx.device), reserve) * 2**30
    itemsize = _hessian_dtype(ctx.device).itemsize
    chunks = (
        _block_chunks(ctx.model, names, widths, budget, itemsize)
        if c.cbc
        else _chunks(names, widths, budget, itemsize)
    )
    if c.cbc and distributed.world_size() > 1:
        raise CompileError(
            "--cbc quantizes block after block and replays through the quantized ones in one process; "
            "run it without torchrun"
        )
    replay = _Replay(
        quant,
        rotated,
        alpha,
        col,
        samples,
        widths,
        {n for n in names if c.dsq and DOWN_PROJECTION.fullmatch(n)},
        _hessian_dtype(ctx.device),
    )
    out = _Outputs()
    with _cross_block(ctx, quant, enabled=c.cbc) as install:
        for i, chunk in enumerate(chunks):
            _quantize_chunk(ctx, f"quantize {i + 1}/{len(chunks)}", chunk, replay, out)
            install(chunk, out)
    if not distributed.is_main():
        return
    qmodel = ctx.quantized_copy(
        out.codes, out.smooth, out.lowrank, groups=groups, biases=out.biases, obs=out.obs
    )
    errors = out.errors
    del out
    save_weight_store(ctx.out.weights, qmodel, {"adatsq.schedule_hash": stable_hash(s.to_dict())})
    atomic_write_text(ctx.out.root / "transformer_config.json", _transformer_config_json(ctx.model))
    atomic_write_text(ctx.out.cache / "gptq_errors.json", json.dumps(errors, indent=1, sort_keys=True) + "\n")


@contextlib.contextmanager
def _cross_block(ctx: CompileContext, quant: dict[str, Any], enabled: bool) -> Iterator[Callable[..., None]]:
    """Cross-block calibration (``--cbc``): ``install(chunk, …)`` swaps the chunk's just-quantized layers into
    the model (QuantLinear at each layer's fewest activation bits of the schedule), so the next chunks'
    replays see their quantized output; the float layers are put back on exit, whatever happens."""
    if not enabled:
        yield lambda *_: None
        return
    modules = dict(ctx.model.named_modules())
    originals: dict[str, nn.Module] = {}
    bits = _min_act_bits(ctx)

    def install(chunk: list[str], out: _Outputs) -> None:
        layers = {}
        for n in chunk:
            lq = copy.copy(quant[n])
            lq.codes, lq.scale = out.codes[n]
            lq.smooth, lq.bias = out.smooth.get(n), out.biases.get(n)
            lq.obs_perm, lq.obs_blocks = out.obs.get(n, (None, None))
            layers[n] = lq
            originals[n] = modules[n]
        InsertQuantLinearPass(layers)(ctx.model)
        set_activation_bits(ctx.model, {n: bits[n] for n in chunk if n in bits})

    try:
        yield install
    finally:
        for n, m in originals.items():
            set_submodule(ctx.model, n, m)


def _quantize_chunk(ctx: CompileContext, label: str, chunk: list[str], r: _Replay, out: _Outputs) -> None:
    """One chunk: the replay's Hessians and statistics, then each layer's codes and extras into ``out``."""
    s, c, data = ctx.schedule, ctx.config, ctx.calibration
    modules = dict(ctx.model.named_modules())
    act = set(s.act_layers)
    quant, widths, dsq_layers, dtype = r.quant, r.widths, r.dsq_layers, r.dtype
    codes, errors, smooth, lowrank, biases, obs = (
        out.codes, out.errors, out.smooth, out.lowrank, out.biases, out.obs
    )  # fmt: skip
    smoothed = [n for n in chunk if (c.smoothing or c.obs) and n in act]
    stats = _ReplayStats(
        raw=set(smoothed) | (dsq_layers & set(chunk)),
        absmax={n: torch.zeros(data.steps, widths[n], dtype=dtype, device=ctx.device) for n in smoothed},
        sums={n: torch.zeros(widths[n], dtype=dtype, device=ctx.device) for n in chunk if c.dac},
    )
    with ctx.progress(f"{label}: Hessians (replay of the trajectories)", data.steps) as advance:
        accs = _accumulate(ctx, chunk, r.rotated, r.alpha, r.col, r.samples, advance, stats)
    if not distributed.is_main():  # the other ranks contributed their shard of the Hessians
        return
    with ctx.progress(f"{label}: Fisher-weighted GPTQ", len(chunk)) as advance:
        for n in chunk:
            w = modules[n].weight.detach().double()
            acc = accs.pop(n)
            h = acc.matrix
            bits, method, group = s.weight_bits[n], c.weight_scale, quant[n].group_size
            sn: torch.Tensor | None = None  # x̂ = x·diag(sn)⁻¹, Ŵ = W·diag(sn): x̂·Ŵᵀ = x·Wᵀ
            if c.smoothing and n in stats.absmax:
                amax = stats.absmax[n]
                salience = ssc_salience(amax, w) if c.salience == "ssc" else amax.amax(dim=0)
                sn = smoothing_scales(salience, w, c.smooth_alpha).to(w.device)
                w = w * sn[None, :]
            blocks = r.rotated.get(n)
            # CLQ's G = P·diag(R_b, …) (calib/obs.py): Ŵ = W·P, then ·R_b per block
            perm: torch.Tensor | None = None
            if c.obs and n in stats.absmax:
                assert n in stats.raw and blocks is None, n  # the replay's H is of the raw x (rotation off)
                b = obs_block(widths[n], group, c.obs_blocks)
                perm = obs_permutation(outlier_scores(stats.absmax[n].amax(dim=0), w), b).to(w.device)
                w, blocks = w[:, perm], obs_blocks(widths[n], b)
                obs[n] = (perm.cpu(), blocks)
            if c.lowrank and n in act:  # Ŵ = L_up·L_downᵀ + E: the branch in 16 bits, E quantized
                down, up, w = lowrank_split(w, min(c.lowrank, *w.shape))
                lowrank[n] = (down.float().cpu(), up.float().cpu())
            tried = [
                _quantize_layer(
                    w, sn, h, n in stats.raw, blocks, bits, group, method, perm, c.clip_search, c.weight_group
                )
            ]
            if n in dsq_layers:  # W ≈ Q(W·diag(η)⁻¹)·diag(η): x̂·diag(η), i.e. s ← s/η
                h_w = smooth_hessian(h, sn.to(h.device)) if sn is not None else h
                eta = dsq_scales(w, bits, group, blocks, method=method, hessian=h_w).to(w.device)
                s_dsq = 1.0 / eta if sn is None else sn / eta
                tried.append(_quantize_layer(w / eta[None, :], s_dsq, h, True, blocks, bits, group, method))
            # DSQ only where it lowers trace(D·H·Dᵀ) (invariant under x̂ = x·diag(s)⁻¹, Ŵ = W·diag(s))
            use_dsq = len(tried) > 1 and tried[1].errors[c.weights] < tried[0].errors[c.weights]
            q = tried[1] if use_dsq else tried[0]
            del tried
            w_rot, h = q.w_rot, q.hessian
            if q.smooth is not None:
                smooth[n] = q.smooth.cpu()
            errors[n] = dict(q.errors)
            if n in dsq_layers:
                errors[n]["dsq"] = float(use_dsq)
            codes[n] = q.gptq if c.weights == "gptq" else q.rtn
            if n in stats.sums:  # DAC: b ← b − μ, μ = E[x̃]·(Ŵ − W̃)ᵀ where it is mostly a shift
                raw = n in stats.raw
                mean = stats.sums[n].double() / max(acc.total_weight, 1e-300)
                mean = _to_op_domain(mean, q.smooth if raw else None, blocks if raw else None)
                delta = dequantize_weight(*codes[n]).double().to(w_rot.device) - w_rot
                mu = dac_shift(mean, h, acc.total_weight, delta)
                bias = modules[n].bias
                base = bias.detach().double() if bias is not None else torch.zeros_like(mu)
                biases[n] = (base.to(mu.device) - mu).float().cpu()
                errors[n]["dac_channels"] = float((mu != 0).sum())
            # the codes wait on the host (11 GB of int8 for Flux-dev, none of it in the GPU's budget)
            layer_codes, layer_scales = codes[n]
            codes[n] = (layer_codes.cpu(), layer_scales.cpu())
            del h, w_rot, acc, q
            advance(1)
    del accs


def _transformer_config_json(model: nn.Module) -> str:
    cfg = dict(model.config)
    cfg["_class_name"] = type(model).__name__

    def plain(value: object) -> object:  # tuples come out as lists; paths (``_name_or_path``) as strings
        return list(value) if isinstance(value, (tuple, set, frozenset)) else str(value)

    return json.dumps(cfg, indent=2, sort_keys=True, default=plain) + "\n"

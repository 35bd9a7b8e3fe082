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
import json
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from adatsq.calib import distributed
from adatsq.calib.gptq import fisher_alpha, gptq_quantize, uniform_alpha, weighted_reconstruction_error
from adatsq.calib.hessian import HessianAccumulator
from adatsq.calib.lowrank import lowrank_split
from adatsq.calib.smoothing import smooth_hessian, smoothing_scales
from adatsq.compiler.context import CompileContext
from adatsq.compiler.stages.calibrate import calibrate_key
from adatsq.core.atomic import atomic_write_text
from adatsq.core.hashing import stable_hash
from adatsq.passes.weight_store import save_weight_store
from adatsq.plugins.hadamard import rotate_blocks
from adatsq.plugins.reference import dequantize_weight, quantize_weight_rtn

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
        "rotation": c.rotation,
        "smoothing": [c.smoothing, c.smooth_alpha],
        "lowrank": c.lowrank,
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


def _accumulate(
    ctx: CompileContext,
    names: list[str],
    rotated: dict[str, tuple[int, ...]],
    alpha: torch.Tensor,
    col: dict[str, int],
    samples: list[int],
    advance: Callable[[int], None],
    absmax: dict[str, torch.Tensor] | None = None,
) -> dict[str, HessianAccumulator]:
    """Σ_t α[t, l]·X̃ᵀX̃ per layer of ``names`` over the replayed trajectories; with ``absmax`` (the layers to
    smooth → a zero K-vector each) also max|X_j| per input channel, and those layers' H of the raw input (its
    smoothing and rotation are applied to H afterwards, once s is known: :func:`_smoothed_rotated`)."""
    data = ctx.calibration
    modules = dict(ctx.model.named_modules())
    device = ctx.device
    dtype = _hessian_dtype(device)
    accs = {n: HessianAccumulator(modules[n].in_features, dtype=dtype, device=device) for n in names}
    absmax = absmax if absmax is not None else {}
    state = {"t": 0}

    def hook_for(name: str):  # noqa: ANN202
        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().to(dtype)
            if name in absmax:  # on the device: no host sync per layer call
                flat = x.reshape(-1, x.shape[-1]).abs().amax(dim=0).to(absmax[name].dtype)
                torch.maximum(absmax[name], flat, out=absmax[name])
            elif name in rotated:
                x = rotate_blocks(x, rotated[name])
            accs[name].add(x, weight=float(alpha[state["t"], col[name]]))

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
    for amax in absmax.values():
        distributed.all_reduce_max_(amax)
    return accs


def _smoothed_rotated(h: torch.Tensor, s: torch.Tensor, blocks: tuple[int, ...] | None) -> torch.Tensor:
    """H of x̃ = x·diag(s)⁻¹·R from H of x: Rᵀ·diag(s)⁻¹·H·diag(s)⁻¹·R (R block-diagonal Hadamard, or none)."""
    h = smooth_hessian(h, s)
    if blocks is None:
        return h
    return rotate_blocks(rotate_blocks(h, blocks).t().contiguous(), blocks)  # (H·R)ᵀ·R = Rᵀ·H·R (H symmetric)


def run_quantize(ctx: CompileContext) -> None:
    s = ctx.schedule
    data = ctx.calibration
    modules = dict(ctx.model.named_modules())
    names = list(s.act_layers) + list(s.weight_only_layers)
    col = {n: j for j, n in enumerate(data.layers)}
    c = ctx.config
    alpha = fisher_alpha(data.fisher, c.tau) if c.alpha == "fisher" else uniform_alpha(data.fisher)
    quant = ctx.layer_quant()  # how each layer is quantized: the search's copy and this stage agree
    rotated = {n: b for n in names if (b := quant[n].blocks(modules[n].in_features)) is not None}
    widths = {n: modules[n].in_features for n in names}
    codes: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    errors: dict[str, dict[str, float]] = {}
    budget = ctx.config.resolved_hessian_memory_gb(ctx.device.type) * 2**30
    chunks = _chunks(names, widths, budget, _hessian_dtype(ctx.device).itemsize)
    samples = distributed.shard(data.samples)
    act = set(s.act_layers)
    smooth: dict[str, torch.Tensor] = {}  # SmoothQuant's s per activation-quantized layer (--smoothing)
    lowrank: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # SVDQuant's branch per layer (--lowrank)
    for i, chunk in enumerate(chunks):
        label = f"quantize {i + 1}/{len(chunks)}"
        absmax = {
            n: torch.zeros(widths[n], dtype=_hessian_dtype(ctx.device), device=ctx.device)
            for n in chunk
            if c.smoothing and n in act
        }
        with ctx.progress(f"{label}: Hessians (replay of the trajectories)", data.steps) as advance:
            accs = _accumulate(ctx, chunk, rotated, alpha, col, samples, advance, absmax)
        if not distributed.is_main():  # the other ranks contributed their shard of the Hessians
            continue
        with ctx.progress(f"{label}: Fisher-weighted GPTQ", len(chunk)) as advance:
            for n in chunk:
                w = modules[n].weight.detach().double()
                h = accs.pop(n).matrix
                if n in absmax:  # x̂ = x·diag(s)⁻¹, Ŵ = W·diag(s): x̂·Ŵᵀ = x·Wᵀ
                    smooth[n] = smoothing_scales(absmax[n], w, c.smooth_alpha)
                    w = w * smooth[n].to(w.device)[None, :]
                    h = _smoothed_rotated(h, smooth[n].to(h.device), rotated.get(n))
                if c.lowrank and n in act:  # Ŵ = L_up·L_downᵀ + E: the branch in 16 bits, E quantized
                    down, up, w = lowrank_split(w, min(c.lowrank, *w.shape))
                    lowrank[n] = (down.float().cpu(), up.float().cpu())
                w_rot = rotate_blocks(w, rotated[n]) if n in rotated else w
                bits, method = s.weight_bits[n], c.weight_scale
                rc, rs = quantize_weight_rtn(w_rot.float(), bits, s.group_size, method=method)
                gc, gs = gptq_quantize(w_rot.float(), h, bits, s.group_size, scale_method=method)
                errors[n] = {
                    "gptq": weighted_reconstruction_error(w_rot, dequantize_weight(gc, gs).double(), h),
                    "rtn": weighted_reconstruction_error(w_rot, dequantize_weight(rc, rs).double(), h),
                }
                codes[n] = (gc, gs) if c.weights == "gptq" else (rc, rs)
                del h, w_rot
                advance(1)
        del accs
    if not distributed.is_main():
        return
    qmodel = ctx.quantized_copy(codes, smooth, lowrank)
    del codes
    save_weight_store(ctx.out.weights, qmodel, {"adatsq.schedule_hash": stable_hash(s.to_dict())})
    atomic_write_text(ctx.out.root / "transformer_config.json", _transformer_config_json(ctx.model))
    atomic_write_text(ctx.out.cache / "gptq_errors.json", json.dumps(errors, indent=1, sort_keys=True) + "\n")


def _transformer_config_json(model: nn.Module) -> str:
    cfg = dict(model.config)
    cfg["_class_name"] = type(model).__name__

    def plain(value: object) -> object:  # tuples come out as lists; paths (``_name_or_path``) as strings
        return list(value) if isinstance(value, (tuple, set, frozenset)) else str(value)

    return json.dumps(cfg, indent=2, sort_keys=True, default=plain) + "\n"

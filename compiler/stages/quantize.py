"""Stage 4, quantize weights: fold rotations (W ← W·R), Fisher-weighted GPTQ, pack, write
``weights.safetensors``.

Per layer l, H'_l = Σ_t α[t, l] · X̃_t,l X̃_t,lᵀ with X̃ the rotated inputs at step t on the calibration latents
and α[:, l] = softmax_t(Î[t, l]/τ) (calib/gptq.fisher_alpha). The Hessians are accumulated by replaying the
stored latents of every step through the full-precision model (no per-step Hessian is kept); layers are
processed in chunks whose K×K float64 accumulators fit ``--hessian-memory`` (Flux-dev holds ~65 GB of
Hessians in all, so it takes several replays of the 50 steps).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from adatsq.calib.gptq import fisher_alpha, gptq_quantize, weighted_reconstruction_error
from adatsq.calib.hessian import HessianAccumulator
from adatsq.compiler.context import CompileContext
from adatsq.compiler.stages.calibrate import calibrate_key
from adatsq.core.atomic import atomic_write_text
from adatsq.core.hashing import stable_hash
from adatsq.passes.quant_linear import rotated_weight, rotates_input
from adatsq.passes.weight_store import save_weight_store
from adatsq.plugins.hadamard import rotate
from adatsq.plugins.reference import dequantize_weight, quantize_weight_rtn

__all__ = ["quantize_key", "run_quantize"]


def quantize_key(ctx: CompileContext) -> dict[str, Any]:
    s = ctx.schedule
    return {
        "calibration": calibrate_key(ctx),
        "tau": ctx.config.tau,
        "weight_bits": s.weight_bits,
        "group_size": s.group_size,
        "act_layers": list(s.act_layers),
    }


def _chunks(names: list[str], widths: dict[str, int], budget_bytes: float) -> list[list[str]]:
    chunks: list[list[str]] = [[]]
    used = 0.0
    for n in names:
        need = widths[n] ** 2 * 8
        if chunks[-1] and used + need > budget_bytes:
            chunks.append([])
            used = 0.0
        chunks[-1].append(n)
        used += need
    return chunks


def _accumulate(
    ctx: CompileContext, names: list[str], rotated: set[str], alpha: torch.Tensor, col: dict[str, int]
) -> dict[str, HessianAccumulator]:
    data = ctx.calibration
    modules = dict(ctx.model.named_modules())
    accs = {n: HessianAccumulator(modules[n].in_features) for n in names}
    state = {"t": 0}

    def hook_for(name: str):  # noqa: ANN202
        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().double()
            x = rotate(x) if name in rotated else x
            accs[name].add(x, weight=float(alpha[state["t"], col[name]]))

        return hook

    handles = [modules[n].register_forward_pre_hook(hook_for(n)) for n in names]
    try:
        with torch.no_grad():
            for t in range(data.steps):
                state["t"] = t
                ts = ctx.family.scheduler_timestep(data.timesteps[t])
                ctx.family.velocity(ctx.model, data.latents[t], ts, data.cond, ctx.spec)
    finally:
        for h in handles:
            h.remove()
    return accs


def run_quantize(ctx: CompileContext) -> None:
    s = ctx.schedule
    data = ctx.calibration
    modules = dict(ctx.model.named_modules())
    names = list(s.act_layers) + list(s.weight_only_layers)
    col = {n: j for j, n in enumerate(data.layers)}
    alpha = fisher_alpha(data.fisher, ctx.config.tau)
    act = set(s.act_layers)
    rotated = {n for n in names if rotates_input(modules[n].in_features, n in act)}
    widths = {n: modules[n].in_features for n in names}
    codes: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    errors: dict[str, dict[str, float]] = {}
    chunks = _chunks(names, widths, ctx.config.hessian_memory_gb * 2**30)
    with ctx.progress("quantize weights (Fisher-weighted GPTQ)", len(names)) as advance:
        for chunk in chunks:
            accs = _accumulate(ctx, chunk, rotated, alpha, col)
            for n in chunk:
                w = modules[n].weight
                w_rot = rotated_weight(w) if n in rotated else w.detach().double()
                h = accs[n].matrix
                c, sc = gptq_quantize(w_rot.float(), h, s.weight_bits[n], s.group_size)
                rc, rs = quantize_weight_rtn(w_rot.float(), s.weight_bits[n], s.group_size)
                errors[n] = {
                    "gptq": weighted_reconstruction_error(w_rot, dequantize_weight(c, sc).double(), h),
                    "rtn": weighted_reconstruction_error(w_rot, dequantize_weight(rc, rs).double(), h),
                }
                codes[n] = (c, sc)
                advance(1)
            del accs
    qmodel = ctx.quantized_copy(codes)
    save_weight_store(ctx.out.weights, qmodel, {"adatsq.schedule_hash": stable_hash(s.to_dict())})
    atomic_write_text(ctx.out.root / "transformer_config.json", _transformer_config_json(ctx.model))
    import json

    atomic_write_text(ctx.out.cache / "gptq_errors.json", json.dumps(errors, indent=1, sort_keys=True) + "\n")
    ctx.quantized_model = qmodel


def _transformer_config_json(model: nn.Module) -> str:
    import json

    cfg = dict(model.config)
    cfg["_class_name"] = type(model).__name__

    def plain(value: object) -> object:  # tuples come out as lists; paths (``_name_or_path``) as strings
        return list(value) if isinstance(value, (tuple, set, frozenset)) else str(value)

    return json.dumps(cfg, indent=2, sort_keys=True, default=plain) + "\n"

"""Stage 7, package: plugins, trtexec scripts, Triton repository, report and manifest (the work is
export/package.py); the per-step error of the stored quantized model is measured here, since it runs the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from adatsq.compiler.context import CompileContext
from adatsq.export.package import package_files, package_inputs, write_package
from adatsq.passes.quant_linear import quant_linears, set_activation_bits
from adatsq.passes.weight_store import LoadQuantizedWeightsPass

__all__ = ["package_key", "package_outputs", "per_step_error", "run_package"]


def package_key(ctx: CompileContext) -> dict[str, Any]:
    return package_inputs(ctx.out)


def package_outputs(ctx: CompileContext) -> list[Path]:
    return package_files(ctx.out)


def per_step_error(ctx: CompileContext) -> list[dict[str, float]]:
    """Per step: relative MSE ‖v_q − v_fp‖² / ‖v_fp‖² of the stored quantized model (weights.safetensors
    loaded into a copy of the model, the schedule's bits at that step) on the step's calibration latents,
    against the stored full-precision outputs."""
    s = ctx.schedule
    data = ctx.calibration
    qmodel = ctx.copy_for_quantized_layers()
    LoadQuantizedWeightsPass(ctx.out.weights)(qmodel)
    qmodel.to(ctx.device).eval()
    modules = quant_linears(qmodel)
    rows = []
    with torch.no_grad():
        for t in range(min(s.steps, data.steps)):
            set_activation_bits(qmodel, s.bits_at(t), modules)
            ts = ctx.family.scheduler_timestep(data.timesteps[t])
            v = ctx.family.velocity(qmodel, data.latents[t], ts, data.cond, ctx.spec).float()
            ref = data.outputs[t].float().to(v.device)
            rel = float((v - ref).pow(2).sum() / ref.pow(2).sum().clamp_min(1e-30))
            rows.append(
                {
                    "step": t,
                    "timestep": float(data.timesteps[t]),
                    "config": s.step_configs[t],
                    "avg_bits": float(np.mean(s.configs[s.step_configs[t]])),
                    "relative_mse": rel,
                }
            )
    return rows


def run_package(ctx: CompileContext) -> None:
    data = ctx.calibration
    report = {
        "fisher": data.fisher.detach().double().numpy(),
        "fisher_layers": list(data.layers),
        "timesteps": [float(t) for t in data.timesteps],
        "step_errors": per_step_error(ctx) if ctx.out.weights.exists() else [],
    }
    write_package(ctx.out, ctx.schedule, ctx.spec.family, report, ctx.log)

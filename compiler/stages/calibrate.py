"""Stage 2, calibrate: full-precision trajectories and Fisher information, cached in
``cache/calibration.pt`` under a key of the model, its weights, steps, resolution, samples, seed, prompts.

Each finished sample is checkpointed in ``cache/calibration_samples/sample_NNN.pt`` under the same key, so a
killed calibration resumes from its finished samples; the folder is removed once ``calibration.pt`` is
written. Under torchrun every rank runs this stage on its shard of the samples (each rank writes its own
samples' checkpoints, on a filesystem all ranks share); rank 0 alone writes ``calibration.pt``."""

from __future__ import annotations

from typing import Any

import torch

from adatsq.calib import distributed
from adatsq.calib.calibrate import SampleCheckpoints, calibrate
from adatsq.compiler.context import CompileContext
from adatsq.compiler.prompts import conditioning, embeddings_key, uses_synthetic_conditioning
from adatsq.core.atomic import atomic_write
from adatsq.core.hashing import stable_hash

__all__ = ["SAMPLES_FOLDER", "calibrate_key", "run_calibrate"]

#: under ``cache/``: the per-sample checkpoints of an unfinished calibration
SAMPLES_FOLDER = "calibration_samples"


def calibrate_key(ctx: CompileContext) -> dict[str, Any]:
    c = ctx.config
    return {
        "model": c.model,
        "fingerprint": ctx.fingerprint,
        "steps": ctx.steps,
        "resolution": list(ctx.resolution),
        "samples": c.calib_samples,
        "seed": c.seed,
        "prompts": list(c.prompts) if c.prompts else None,
        # the conditioning: real prompts' embeddings depend on the text encoders, not only on the prompts
        "embeddings": None if uses_synthetic_conditioning(ctx) else stable_hash(embeddings_key(ctx)),
        "random_weights": c.random_weights,
        "device": ctx.device.type,  # bf16 on the GPU, float32 on the CPU: other numerics
    }


def run_calibrate(ctx: CompileContext) -> None:
    c = ctx.config
    generator = torch.Generator().manual_seed(c.seed)
    cond, prompts = conditioning(ctx, c.calib_samples, 0, generator)
    noise = ctx.family.sample_noise(ctx.spec, ctx.model, ctx.resolution, c.calib_samples, generator)
    provenance = {"prompts": prompts, "seed": c.seed, "samples": c.calib_samples}
    inventory = ctx.inventory
    checkpoints = SampleCheckpoints(ctx.out.cache / SAMPLES_FOLDER, stable_hash(calibrate_key(ctx)))
    # per sample of this rank: its trajectory (one tick per step), then its Fisher (one backward per step)
    total = 2 * ctx.steps * len(distributed.shard(c.calib_samples))
    with ctx.progress("calibrate (trajectories + Fisher)", total) as advance:
        data = calibrate(
            ctx.family,
            ctx.spec,
            ctx.model,
            inventory,
            cond,
            noise,
            ctx.steps,
            provenance,
            advance,
            checkpoints=checkpoints,
        )
    if distributed.is_main():
        atomic_write(ctx.out.cache / "calibration.pt", lambda p: torch.save(data.state_dict(), p))
        checkpoints.clear()  # every rank is past the gather: no rank writes a checkpoint any more
    ctx.calibration = data

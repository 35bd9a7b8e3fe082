"""Calibration: full-precision trajectories through the model's real scheduler and the Fisher information
I[t, l] per (step, layer).

Fisher. With x0 the full-precision sample and ε its starting noise, the flow-matching target at every step
is the constant velocity v* = ε − x0 (x_σ = (1−σ)·x0 + σ·ε ⇒ dx/dσ = ε − x0), in the convention each family's
pipeline passes to ``scheduler.step`` (Z-Image's negated output included). The loss at step t for sample n is

    L_t,n(W) = mean((v_W(x_t,n, t) − (ε_n − x0_n))²)

evaluated on the latent x_t,n that the sampler actually visited, and

    I[t, l] = E_n[ Σ_ij (∂L_t,n / ∂W_l,ij)² ]

the trace of layer l's block of the empirical Fisher at step t (per-sample gradients, squared, averaged over
samples). Unlike the loss against the full-precision *output* (zero gradient at the full-precision weights),
this is the training objective of a rectified-flow model and so is non-zero and meaningful at full precision;
it also needs no data set, since the target comes from the model's own sample. Layer scales differ, so
consumers normalise: per layer over steps for the GPTQ weights α (calib/gptq.fisher_alpha), and by ranking
(log-scale clustering) within a step for the bit candidates.

Memory: the trajectory pass keeps only latents and outputs (steps × samples × latent size: 1.6 GB for
Flux-dev at 1024², 50 steps, 32 samples, on the CPU); the Fisher pass back-propagates one sample at one step
at a time. No activations of all steps are held at once (the GPTQ Hessians replay the stored latents).

Work is per sample (:func:`calibrate_sample`: the sample's trajectory, batch 1, then its Fisher backward
passes), so a calibration of hours can checkpoint after every sample (:class:`SampleCheckpoints`: an
interruption loses at most one sample) and split its samples over the ranks of a torch.distributed launch
(:mod:`adatsq.calib.distributed`). Batch 1 instead of batch N changes only the float summation order of the
trajectories; the Fisher was per sample already and is summed in sample order whoever computed it.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adatsq.calib import distributed
from adatsq.core.atomic import atomic_write
from adatsq.core.models.base import (
    Conditioning,
    Family,
    LayerInventory,
    ModelSpec,
    run_sampler,
    timesteps_for,
)

__all__ = [
    "CalibrationData",
    "SampleCheckpoints",
    "SampleResult",
    "calibrate",
    "calibrate_sample",
    "fisher_information",
    "record_trajectories",
    "sample_fisher",
]

Progress = Callable[[int], None]

#: Fields of older caches that nothing read (per-(step, layer) input max |x| and RMS, two host syncs per layer
#: call); a cache holding them loads unchanged, since every field still kept is computed exactly as before.
_DROPPED_FIELDS = ("act_absmax", "act_rms")


@dataclasses.dataclass
class CalibrationData:
    """Everything later stages need from calibration (saved with torch.save as a plain dict)."""

    timesteps: torch.Tensor  # (T,)
    latents: torch.Tensor  # (T, N, *latent): input of the model at step t
    outputs: torch.Tensor  # (T, N, *latent): full-precision velocity at step t
    noise: torch.Tensor  # (N, *latent)
    final: torch.Tensor  # (N, *latent): full-precision sample x0
    cond: Conditioning  # N samples
    layers: list[str]  # quantized layers (activation-quantized, then weight-only)
    fisher: torch.Tensor  # (T, L) = I[t, l]
    provenance: dict[str, Any]

    def state_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cond"] = dict(self.cond.tensors)
        return d

    @staticmethod
    def from_state_dict(d: dict[str, Any]) -> CalibrationData:
        d = {k: v for k, v in d.items() if k not in _DROPPED_FIELDS}
        d["cond"] = Conditioning(dict(d["cond"]))
        return CalibrationData(**d)

    @property
    def steps(self) -> int:
        return int(self.timesteps.shape[0])

    @property
    def samples(self) -> int:
        return int(self.noise.shape[0])


@torch.no_grad()
def record_trajectories(
    family: Family,
    spec: ModelSpec,
    model: nn.Module,
    noise: torch.Tensor,
    cond: Conditioning,
    steps: int,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the real sampler; return (timesteps, latents, outputs, final)."""
    latents: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []
    timesteps: list[float] = []

    def on_step(i: int, t: torch.Tensor, x: torch.Tensor, v: torch.Tensor) -> None:
        latents.append(x.detach().float().cpu().clone())  # on the host: the device holds one step at a time
        outputs.append(v.detach().float().cpu().clone())
        timesteps.append(float(t))
        if progress is not None:
            progress(1)

    final = run_sampler(family, spec, model, noise, cond, steps, on_step=on_step)
    return (
        torch.tensor(timesteps, dtype=torch.float64),
        torch.stack(latents),
        torch.stack(outputs),
        final.float().cpu(),
    )


def fisher_information(
    family: Family,
    spec: ModelSpec,
    model: nn.Module,
    data: CalibrationData,
    layers: Sequence[str],
    progress: Progress | None = None,
) -> torch.Tensor:
    """I[t, l] = E_n[Σ (∂L_t,n/∂W_l)²] with L the flow-matching loss against v* = ε − x0 (module docstring).

    Each weight's gradient is consumed as backward produces it: a post-accumulate-grad hook adds Σ g² to a
    float64 accumulator on the weight's device and frees the gradient, so at most one layer's gradient exists
    at a time (never a full set: 24 GB for Flux-dev in bf16) and no host sync happens inside a backward pass.
    The stored latents are moved to the model's device one sample at a time."""
    target = data.noise - data.final
    per_sample = [
        sample_fisher(
            family,
            spec,
            model,
            data.timesteps,
            data.latents[:, n],
            target[n : n + 1],
            data.cond.select(slice(n, n + 1)),
            layers,
            progress,
        )
        for n in range(data.samples)
    ]
    return _mean_fisher(per_sample, data.steps, len(layers))


def sample_fisher(
    family: Family,
    spec: ModelSpec,
    model: nn.Module,
    timesteps: torch.Tensor,
    latents: torch.Tensor,
    target: torch.Tensor,
    cond: Conditioning,
    layers: Sequence[str],
    progress: Progress | None = None,
) -> torch.Tensor:
    """(T, L) float64: row t = Σ (∂L_t/∂W_l)² of ONE sample, from its latents (T, *latent) along the
    trajectory, its target ε − x0 (1, *latent) and its conditioning (one sample). One backward per step."""
    modules = dict(model.named_modules())
    weights = [modules[n].weight for n in layers]
    device = weights[0].device if weights else torch.device("cpu")
    saved = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for w in weights:
        w.requires_grad_(True)
    step_sum = torch.zeros(len(layers), dtype=torch.float64, device=device)

    def consume(j: int) -> Callable[[torch.Tensor], None]:
        def hook(w: torch.Tensor) -> None:
            assert w.grad is not None
            step_sum[j] += w.grad.double().pow(2).sum()
            w.grad = None

        return hook

    handles = [w.register_post_accumulate_grad_hook(consume(j)) for j, w in enumerate(weights)]
    # on the GPU, recompute each block's activations in backward instead of keeping all of them (Flux-dev at
    # 1024²: the saved activations of one sample exceed the H200's memory); the CPU path keeps them
    checkpoint = device.type == "cuda" and hasattr(model, "enable_gradient_checkpointing")
    was_checkpointing = bool(getattr(model, "is_gradient_checkpointing", False))
    if checkpoint:
        model.enable_gradient_checkpointing()
    fisher = torch.zeros(int(timesteps.shape[0]), len(layers), dtype=torch.float64)
    try:
        with _sdpa_without_cudnn():
            cond_d = cond.to(device)
            target_d = target.to(device)
            for ti in range(fisher.shape[0]):
                t = family.scheduler_timestep(timesteps[ti])
                step_sum.zero_()
                x = latents[ti : ti + 1].to(device)
                v = family.velocity(model, x, t.to(device), cond_d, spec)
                loss = (v.float() - target_d).pow(2).mean()
                loss.backward()
                fisher[ti] = step_sum.cpu()
                if progress is not None:
                    progress(1)
    finally:
        for h in handles:
            h.remove()
        if checkpoint and not was_checkpointing:
            model.disable_gradient_checkpointing()
        for p, flag in saved.items():
            p.requires_grad_(flag)
    return fisher


def _mean_fisher(per_sample: Sequence[torch.Tensor], steps: int, n_layers: int) -> torch.Tensor:
    """(Σ_n F_n) / N in float64, summed in sample order (whatever rank computed which sample), then float32."""
    total = torch.zeros(steps, n_layers, dtype=torch.float64)
    for f in per_sample:
        total += f
    return (total / max(1, len(per_sample))).float()


def calibrate_sample(
    family: Family,
    spec: ModelSpec,
    model: nn.Module,
    layers: Sequence[str],
    noise: torch.Tensor,
    cond: Conditioning,
    steps: int,
    progress: Progress | None = None,
) -> SampleResult:
    """One sample (``noise`` (1, *latent), ``cond`` of one sample): its trajectory through every step, then
    its Fisher backward passes over every step. ``2 * steps`` progress ticks."""
    timesteps, latents, outputs, final = record_trajectories(
        family, spec, model, noise, cond, steps, progress
    )
    target = noise.float() - final
    fisher = sample_fisher(family, spec, model, timesteps, latents[:, 0], target, cond, layers, progress)
    return SampleResult(timesteps, latents[:, 0], outputs[:, 0], final[0], fisher)


@dataclasses.dataclass
class SampleResult:
    """What calibration computes for one sample; :func:`calibrate` assembles them."""

    timesteps: torch.Tensor  # (T,) float64
    latents: torch.Tensor  # (T, *latent)
    outputs: torch.Tensor  # (T, *latent)
    final: torch.Tensor  # (*latent)
    fisher: torch.Tensor  # (T, L) float64: Σ of this sample's squared gradients


class SampleCheckpoints:
    """Finished samples of one calibration, one file each: ``<folder>/sample_NNN.pt``, written atomically.

    Each file records ``key`` (the digest of everything the calibration depends on: the compiler passes its
    stage key) and the sample's starting noise; a file whose key or noise differs, or that cannot be read, is
    ignored (recomputed and overwritten). So an interrupted calibration loses at most the sample in progress.
    Under torch.distributed each rank writes the files of its own samples (distinct names)."""

    def __init__(self, folder: Path, key: str) -> None:
        self.folder = Path(folder)
        self.key = key

    def path(self, index: int) -> Path:
        return self.folder / f"sample_{index:03d}.pt"

    def load(self, index: int, noise: torch.Tensor) -> SampleResult | None:
        path = self.path(index)
        if not path.exists():
            return None
        try:
            d = torch.load(path, weights_only=True)
            if d.get("key") != self.key or d.get("index") != index:
                return None
            if not torch.equal(d["noise"], noise.float().cpu()):
                return None
            return SampleResult(**{f.name: d[f.name] for f in dataclasses.fields(SampleResult)})
        except Exception:  # truncated, corrupt, another layout: recompute it
            return None

    def save(self, index: int, result: SampleResult, noise: torch.Tensor) -> None:
        state = {**dataclasses.asdict(result), "key": self.key, "index": index, "noise": noise.float().cpu()}
        atomic_write(self.path(index), lambda p: torch.save(state, p))

    def clear(self) -> None:
        """Remove the folder (once the assembled calibration is written)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def calibrate(
    family: Family,
    spec: ModelSpec,
    model: nn.Module,
    inventory: LayerInventory,
    cond: Conditioning,
    noise: torch.Tensor,
    steps: int,
    provenance: dict[str, Any],
    progress: Progress | None = None,
    checkpoints: SampleCheckpoints | None = None,
    on_sample: Callable[[int, bool], None] | None = None,
) -> CalibrationData:
    """Trajectories and Fisher information for ``inventory.quantized_layers``.

    Sample by sample (:func:`calibrate_sample`): each one's trajectory (batch 1; batched over samples only
    the float summation order would differ) and then its Fisher backward passes. With ``checkpoints`` each
    finished sample is saved at once and a sample saved by an earlier, interrupted run is loaded instead of
    recomputed. ``on_sample(n, loaded)`` runs after sample n is saved or loaded. ``2 * steps`` progress ticks
    per sample of this rank.

    Under torch.distributed (:mod:`adatsq.calib.distributed`) this rank computes its :func:`shard` of the
    samples; then every sample is broadcast from the rank that owns it, so every rank returns the whole
    CalibrationData, the same as one process computes (the Fisher mean is summed in sample order)."""
    layers = list(inventory.quantized_layers)
    n_samples = int(noise.shape[0])
    mine: dict[int, SampleResult] = {}
    for n in distributed.shard(n_samples):
        noise_n = noise[n : n + 1]
        result = checkpoints.load(n, noise_n) if checkpoints is not None else None
        loaded = result is not None
        if result is None:
            result = calibrate_sample(
                family, spec, model, layers, noise_n, cond.select(slice(n, n + 1)), steps, progress
            )
            if checkpoints is not None:
                checkpoints.save(n, result, noise_n)
        elif progress is not None:
            progress(2 * steps)
        mine[n] = result
        if on_sample is not None:
            on_sample(n, loaded)
    results = _gather_samples(mine, n_samples, steps, tuple(noise.shape[1:]), len(layers))
    timesteps = results[0].timesteps
    for r in results[1:]:
        if not torch.equal(r.timesteps, timesteps):
            raise RuntimeError("calibration samples disagree on the timestep sequence")
    return CalibrationData(
        timesteps=timesteps,
        latents=torch.stack([r.latents for r in results], dim=1),
        outputs=torch.stack([r.outputs for r in results], dim=1),
        noise=noise.float(),
        final=torch.stack([r.final for r in results]),
        cond=cond,
        layers=layers,
        fisher=_mean_fisher([r.fisher for r in results], steps, len(layers)),
        provenance=dict(provenance),
    )


def _gather_samples(
    mine: dict[int, SampleResult], n_samples: int, steps: int, latent: tuple[int, ...], n_layers: int
) -> list[SampleResult]:
    """Every sample's result on every rank: each broadcast from its owner, one sample at a time (the
    device holds one sample's tensors at a time under NCCL). In one process: ``mine`` in index order."""
    if distributed.world_size() == 1:
        return [mine[n] for n in range(n_samples)]
    out: list[SampleResult] = []
    for n in range(n_samples):
        r = mine.get(n)
        if r is None:
            r = SampleResult(
                timesteps=torch.zeros(steps, dtype=torch.float64),
                latents=torch.zeros(steps, *latent),
                outputs=torch.zeros(steps, *latent),
                final=torch.zeros(latent),
                fisher=torch.zeros(steps, n_layers, dtype=torch.float64),
            )
        elif r.timesteps.shape[0] != steps:
            raise RuntimeError(f"sample {n}: {r.timesteps.shape[0]} timesteps, expected {steps}")
        src = distributed.owner(n)
        for f in dataclasses.fields(SampleResult):
            distributed.broadcast_(getattr(r, f.name), src)
        out.append(r)
    return out


def expected_timesteps(
    family: Family, spec: ModelSpec, steps: int, latent_shape: tuple[int, ...]
) -> list[float]:
    """The sampler's timestep sequence for this model, steps and resolution (what the schedule records)."""
    _, ts = timesteps_for(family, spec, steps, latent_shape)
    return [float(t) for t in ts]


def _sdpa_without_cudnn() -> Any:
    """Scaled-dot-product attention without the cuDNN backend. On the H200 (torch 2.11, CUDA 13) the bf16
    backward of Flux-dev through cuDNN's SDPA corrupts memory: the next cuBLAS call fails with
    CUBLAS_STATUS_EXECUTION_FAILED, or an illegal memory access shows up later (it passes with
    CUDA_LAUNCH_BLOCKING=1); flash, memory-efficient and math attention all run it (BENCHMARKS.md)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

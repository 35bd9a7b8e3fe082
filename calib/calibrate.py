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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from adatsq.core.models.base import (
    Conditioning,
    Family,
    LayerInventory,
    ModelSpec,
    run_sampler,
    timesteps_for,
)

__all__ = ["CalibrationData", "calibrate", "fisher_information", "record_trajectories"]

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
    fisher = torch.zeros(data.steps, len(layers), dtype=torch.float64)
    target = data.noise - data.final
    try:
        with _sdpa_without_cudnn():
            _fisher_steps(family, spec, model, data, fisher, step_sum, target, device, progress)
    finally:
        for h in handles:
            h.remove()
        if checkpoint and not was_checkpointing:
            model.disable_gradient_checkpointing()
        for p, flag in saved.items():
            p.requires_grad_(flag)
    return (fisher / data.samples).float()


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
) -> CalibrationData:
    """Trajectories and Fisher information for ``inventory.quantized_layers``."""
    layers = list(inventory.quantized_layers)
    timesteps, latents, outputs, final = record_trajectories(
        family, spec, model, noise, cond, steps, progress
    )
    data = CalibrationData(
        timesteps=timesteps,
        latents=latents,
        outputs=outputs,
        noise=noise.float(),
        final=final,
        cond=cond,
        layers=layers,
        fisher=torch.zeros(steps, len(layers)),
        provenance=dict(provenance),
    )
    data.fisher = fisher_information(family, spec, model, data, layers, progress)
    return data


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


def _fisher_steps(
    family: Family,
    spec: ModelSpec,
    model: nn.Module,
    data: CalibrationData,
    fisher: torch.Tensor,
    step_sum: torch.Tensor,
    target: torch.Tensor,
    device: torch.device,
    progress: Progress | None,
) -> None:
    """Row t of ``fisher`` = Σ_n of the per-sample squared gradients (hooks of :func:`fisher_information`)."""
    for ti in range(data.steps):
        t = family.scheduler_timestep(data.timesteps[ti])
        step_sum.zero_()
        for n in range(data.samples):
            cond = data.cond.select(slice(n, n + 1)).to(device)
            x = data.latents[ti, n : n + 1].to(device)
            v = family.velocity(model, x, t.to(device), cond, spec)
            loss = (v.float() - target[n : n + 1].to(device)).pow(2).mean()
            loss.backward()
            if progress is not None:
                progress(1)
        fisher[ti] = step_sum.cpu()

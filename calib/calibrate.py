"""Calibration: full-precision trajectories through the model's real scheduler, activation statistics and
the Fisher information I[t, l] per (step, layer).

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
Flux-dev at 1024², 50 steps, 32 samples, on the CPU) and per-(step, layer) scalar statistics; the Fisher pass
back-propagates one sample at one step at a time. No activations of all steps are held at once.
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
    act_absmax: torch.Tensor  # (T, L) max |x| of each layer's input at step t
    act_rms: torch.Tensor  # (T, L) root-mean-square of each layer's input at step t
    provenance: dict[str, Any]

    def state_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["cond"] = dict(self.cond.tensors)
        return d

    @staticmethod
    def from_state_dict(d: dict[str, Any]) -> CalibrationData:
        d = dict(d)
        d["cond"] = Conditioning(dict(d["cond"]))
        return CalibrationData(**d)

    @property
    def steps(self) -> int:
        return int(self.timesteps.shape[0])

    @property
    def samples(self) -> int:
        return int(self.noise.shape[0])


class _InputStats:
    """Forward hooks recording max |x| and mean x² of each named linear's input at the current step."""

    def __init__(self, model: nn.Module, names: Sequence[str], steps: int) -> None:
        self.index = {n: i for i, n in enumerate(names)}
        self.absmax = torch.zeros(steps, len(names), dtype=torch.float64)
        self.sumsq = torch.zeros(steps, len(names), dtype=torch.float64)
        self.count = torch.zeros(steps, len(names), dtype=torch.float64)
        self.step = 0
        modules = dict(model.named_modules())
        self.handles = [modules[n].register_forward_pre_hook(self._hook(n)) for n in names]

    def _hook(self, name: str) -> Callable[..., None]:
        j = self.index[name]

        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().double()
            self.absmax[self.step, j] = max(float(self.absmax[self.step, j]), float(x.abs().max()))
            self.sumsq[self.step, j] += float(x.pow(2).sum())
            self.count[self.step, j] += x.numel()

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@torch.no_grad()
def record_trajectories(
    family: Family,
    spec: ModelSpec,
    model: nn.Module,
    noise: torch.Tensor,
    cond: Conditioning,
    steps: int,
    layers: Sequence[str],
    progress: Progress | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run the real sampler; return (timesteps, latents, outputs, final, act_absmax, act_rms)."""
    stats = _InputStats(model, layers, steps)
    latents: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []
    timesteps: list[float] = []

    def on_step(i: int, t: torch.Tensor, x: torch.Tensor, v: torch.Tensor) -> None:
        latents.append(x.detach().float().clone())
        outputs.append(v.detach().float().clone())
        timesteps.append(float(t))
        stats.step = min(i + 1, steps - 1)
        if progress is not None:
            progress(1)

    try:
        final = run_sampler(family, spec, model, noise, cond, steps, on_step=on_step)
    finally:
        stats.remove()
    rms = (stats.sumsq / stats.count.clamp_min(1)).sqrt()
    return (
        torch.tensor(timesteps, dtype=torch.float64),
        torch.stack(latents),
        torch.stack(outputs),
        final.float(),
        stats.absmax.float(),
        rms.float(),
    )


def fisher_information(
    family: Family,
    spec: ModelSpec,
    model: nn.Module,
    data: CalibrationData,
    layers: Sequence[str],
    progress: Progress | None = None,
) -> torch.Tensor:
    """I[t, l] = E_n[Σ (∂L_t,n/∂W_l)²] with L the flow-matching loss against v* = ε − x0 (module docstring)."""
    modules = dict(model.named_modules())
    weights = [modules[n].weight for n in layers]
    saved = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for w in weights:
        w.requires_grad_(True)
    fisher = torch.zeros(data.steps, len(layers), dtype=torch.float64)
    target = data.noise - data.final
    try:
        for ti in range(data.steps):
            t = family.scheduler_timestep(data.timesteps[ti])
            for n in range(data.samples):
                cond = data.cond.select(slice(n, n + 1))
                v = family.velocity(model, data.latents[ti, n : n + 1], t, cond, spec)
                loss = (v - target[n : n + 1]).pow(2).mean()
                grads = torch.autograd.grad(loss, weights, allow_unused=True)
                for j, g in enumerate(grads):
                    if g is not None:
                        fisher[ti, j] += float(g.double().pow(2).sum())
                if progress is not None:
                    progress(1)
    finally:
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
    """Trajectories, activation statistics and Fisher information for ``inventory.quantized_layers``."""
    layers = list(inventory.quantized_layers)
    timesteps, latents, outputs, final, absmax, rms = record_trajectories(
        family, spec, model, noise, cond, steps, layers, progress
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
        act_absmax=absmax,
        act_rms=rms,
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

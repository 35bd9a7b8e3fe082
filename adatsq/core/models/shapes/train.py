"""Train ``shapes-flux``: rectified flow on rendered 32×32 shapes, the text encoder jointly.

    python -m adatsq.core.models.shapes.train --out DIR [--device cuda] [--steps N] [--batch B] [--seed S]
        [--minutes M] [--stop-at STEP] [--export FOLDER] [--init-from CHECKPOINT]

Objective (Flux's convention, so the project's ``run_sampler`` samples the trained model as it is): for an
image x₀ ∈ [-1, 1]^{3×32×32}, noise ε ~ N(0, I) and σ ∈ (0, 1],

    x_σ = (1 − σ)·x₀ + σ·ε,   v* = dx_σ/dσ = ε − x₀,   L = E ‖v_θ(x_σ, σ, text) − v*‖²

with σ logit-normal (σ = sigmoid(n), n ~ N(0, 1), as SD3 trains rectified flow; ``--sigma uniform`` for
U(0, 1]). The model is called through :meth:`ShapesFluxFamily.velocity` with the scheduler's timestep
t = 1000·σ, exactly as ``run_sampler`` calls it: the family packs x_σ into 2×2 tokens and passes
``timestep = t/1000 = σ``. FlowMatchEulerDiscreteScheduler (shift 1) then steps x ← x + (σ_next − σ)·v from
σ = 1 (pure noise) to 0, which integrates dx/dσ = v back to an image.

Everything random is a function of (seed, step): the step's images and prompts are
``training_pairs(seed_of(seed, step), batch)``, its ε and σ come from a generator seeded the same way, and
nothing else draws random numbers (no dropout), so a run is deterministic on a fixed device and a resumed run
(``DIR/state.pt``) continues the very same sequence. AdamW, linear warm-up then cosine decay to 10 % over
``--steps``, gradient clipping at 1, bf16 autocast on CUDA, an EMA of the weights (decay 0.999) that is what
the checkpoint holds. ``--minutes`` stops cleanly at a wall budget (state and checkpoint saved), so separate
short runs continue one training. ``--stop-at STEP`` stops cleanly at that step (the learning-rate schedule
still runs to ``--steps``): it reproduces a checkpoint a run saved on its way (every ``--save-every`` steps)
before its end. ``--init-from CHECKPOINT`` continues a run whose ``state.pt`` is gone (e.g.
left on another machine) from its checkpoint: the EMA weights become both the weights and their EMA, a new
AdamW warms up again from that checkpoint's last step (``TrainConfig.start``) and the cosine runs to the new
``--steps``; the data sequence goes on from that step, and the record keeps the earlier runs and loss curve.

``DIR`` receives ``state.pt`` (resume), ``train_record.json`` (command, seeds, config, loss curve, wall time,
versions, device) and ``checkpoint/`` (``model_index.json``, ``transformer/`` in float16 by ``save_pretrained``,
``text_encoder/`` in float32, ``scheduler/``): what ``--model-path DIR/checkpoint`` loads. ``--export FOLDER``
also writes that checkpoint there (the registry's ``shapes-flux`` reads ``adatsq/core/models/shapes/checkpoint``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from adatsq.core.atomic import atomic_write, atomic_write_text, current_umask
from adatsq.core.models.base import Conditioning, ModelSpec
from adatsq.core.models.shapes.family import (
    SCHEDULER_CONFIG,
    TEXT_LEN,
    TRANSFORMER_CONFIG,
    ShapesFluxFamily,
    checkpoint_bytes,
)
from adatsq.core.models.shapes.text_encoder import (
    ShapesTextEncoder,
    TextEncoderConfig,
    WordTokenizer,
    shapes_vocabulary,
)

__all__ = ["TrainConfig", "flow_loss", "main", "seed_of", "step_batch", "train", "write_checkpoint"]

STATE = "state.pt"
RECORD = "train_record.json"
CHECKPOINT = "checkpoint"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What fixes the optimisation (a resumed run must match it; ``steps`` may grow)."""

    seed: int = 0
    steps: int = 20_000
    batch: int = 256
    size: int = 32
    lr: float = 5e-4
    text_lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: int = 500
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    ema: float = 0.999
    sigma: str = "logit_normal"
    start: int = 0  # the first step: > 0 when the run continues a checkpoint (--init-from)

    def __post_init__(self) -> None:
        if self.sigma not in ("logit_normal", "uniform"):
            raise ValueError(f"sigma sampling must be logit_normal or uniform, got {self.sigma!r}")
        if not 0 <= self.start < self.steps:
            raise ValueError(f"the first step {self.start} must lie in [0, steps = {self.steps})")

    def lr_factor(self, step: int) -> float:
        """Linear warm-up over ``warmup`` steps from ``start``, then cosine from 1 to ``min_lr_ratio`` at
        ``steps`` (a continued run warms up again: its optimizer moments start from zero)."""
        step -= self.start
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = self.steps - self.start
        progress = min(1.0, (step - self.warmup) / max(1, span - self.warmup))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def seed_of(seed: int, step: int) -> int:
    """The 63-bit seed of one step's data, noise and σ: a hash of (seed, step)."""
    return int(np.random.SeedSequence([seed, step]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def step_batch(config: TrainConfig, tokenizer: WordTokenizer, step: int) -> dict[str, torch.Tensor]:
    """Step ``step``'s batch on the CPU: images x₀, token ids and mask, noise ε and σ (all from (seed, step))."""
    from adatsq.core.models.shapes.scenes import training_pairs

    s = seed_of(config.seed, step)
    images, prompts = training_pairs(s, config.batch, config.size)
    ids, mask = tokenizer.encode(prompts)
    g = torch.Generator().manual_seed(s)
    noise = torch.randn(images.shape, generator=g)
    if config.sigma == "logit_normal":
        sigma = torch.sigmoid(torch.randn(config.batch, generator=g))
    else:
        sigma = 1.0 - torch.rand(config.batch, generator=g)  # (0, 1]
    return {"images": images, "ids": ids, "mask": mask, "noise": noise, "sigma": sigma.clamp(1e-4, 1.0)}


class _Batches(torch.utils.data.Dataset):
    """Batch ``i`` is step ``start + i``'s (so DataLoader workers make them in parallel, in order)."""

    def __init__(self, config: TrainConfig, tokenizer: WordTokenizer, start: int, stop: int) -> None:
        self.config, self.tokenizer, self.start, self.stop = config, tokenizer, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return step_batch(self.config, self.tokenizer, self.start + i)


def _spec() -> ModelSpec:
    from adatsq.core.models.registry import get_spec

    return get_spec("shapes-flux")


def flow_loss(
    family: ShapesFluxFamily,
    spec: ModelSpec,
    transformer: nn.Module,
    encoder: ShapesTextEncoder,
    batch: dict[str, torch.Tensor],
) -> torch.Tensor:
    """‖v_θ(x_σ, 1000·σ) − (ε − x₀)‖² (mean), the model called as ``run_sampler`` calls it."""
    x0, eps, sigma = batch["images"], batch["noise"], batch["sigma"]
    s = sigma.view(-1, 1, 1, 1)
    x_sigma = (1 - s) * x0 + s * eps
    hidden, pooled = encoder(batch["ids"], batch["mask"])
    cond = Conditioning({"prompt_embeds": hidden, "pooled_prompt_embeds": pooled})
    v = family.velocity(transformer, x_sigma, sigma * 1000, cond, spec)
    return torch.mean((v - (eps - x0)) ** 2)


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    ema_p = [p for p in ema.parameters()]
    torch._foreach_lerp_(ema_p, [p.detach() for p in model.parameters()], 1.0 - decay)


def _swap_folder(target: Path, write: Any) -> None:
    """Write a folder beside ``target`` with ``write(tmp)`` and move it into place (old one removed after)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def write_checkpoint(folder: Path, transformer: nn.Module, encoder: ShapesTextEncoder, record: dict) -> None:
    """The checkpoint layout in ``folder``, atomically: float16 transformer, float32 encoder, scheduler."""
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        half = copy.deepcopy(transformer).to("cpu")
        for p in half.parameters():  # cast in place: Module.to(float16) on a diffusers model warns
            p.data = p.data.half()
        half.save_pretrained(tmp / "transformer")
        encoder_cpu = copy.deepcopy(encoder).to("cpu")
        encoder_cpu.save(tmp / "text_encoder")
        FlowMatchEulerDiscreteScheduler.from_config(SCHEDULER_CONFIG).save_pretrained(tmp / "scheduler")
        index = {
            "_class_name": "ShapesFluxCheckpoint",
            "_diffusers_version": diffusers.__version__,
            "_adatsq_model": "shapes-flux",
            "transformer": ["diffusers", "FluxTransformer2DModel"],
            "text_encoder": ["adatsq.core.models.shapes.text_encoder", "ShapesTextEncoder"],
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        }
        (tmp / "model_index.json").write_text(json.dumps(index, indent=1) + "\n")
        (tmp / RECORD).write_text(json.dumps(record, indent=1) + "\n")
        for f in tmp.rglob("*"):  # safetensors writes 0o600 files
            if f.is_file():
                f.chmod(0o666 & ~current_umask())

    _swap_folder(folder, write)


def _record(
    config: TrainConfig,
    runs: list[dict],
    losses: list[list[float]],
    step: int,
    wall_s: float,
    device: str,
    encoder_cfg: TextEncoderConfig,
    transformer_config: dict[str, Any],
    nbytes: int,
    params: int,
) -> dict[str, Any]:
    import diffusers

    return {
        "model": "shapes-flux",
        "runs": runs,
        "seed": config.seed,
        "data": "training_pairs(seed_of(seed, step), batch); ε and σ from torch.Generator(seed_of(seed, step))",
        "objective": "rectified flow: x_σ = (1−σ)x₀ + σε, target v = ε − x₀, timestep 1000σ via family.velocity",
        "config": dataclasses.asdict(config),
        "transformer_config": transformer_config,
        "text_encoder_config": {k: v for k, v in encoder_cfg.to_json().items() if k != "vocab"},
        "vocab_size": len(encoder_cfg.vocab),
        "transformer_params": params,
        "checkpoint_weight_bytes": nbytes,
        "step": step,
        "loss": losses,  # [step, mean loss of the steps since the previous entry]
        "wall_s": round(wall_s, 2),
        "device": device,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
    }


def _earlier_run(folder: Path, config: TrainConfig) -> dict[str, Any]:
    """The record of the checkpoint ``folder`` continues, checked against ``config``: the same optimisation
    apart from the schedule's length and start, which must be that run's last step."""
    path = Path(folder) / RECORD
    if not path.is_file():
        raise FileNotFoundError(f"--init-from {folder}: no {RECORD} (a checkpoint folder this script wrote)")
    rec = json.loads(path.read_text())
    if rec["step"] != config.start:
        raise ValueError(
            f"--init-from {folder} ends at step {rec['step']}; this run must start there, not {config.start}"
        )
    mine = {k: v for k, v in dataclasses.asdict(config).items() if k not in ("steps", "start")}
    theirs = {k: v for k, v in rec["config"].items() if k not in ("steps", "start")}
    if mine != theirs:
        raise ValueError(f"--init-from {folder} was trained with {theirs}, not {mine}")
    return rec


def train(
    out: Path,
    config: TrainConfig,
    device: str = "cpu",
    minutes: float | None = None,
    log_every: int = 50,
    save_every: int = 1000,
    workers: int = 0,
    export: Path | None = None,
    command: Sequence[str] = (),
    transformer_config: dict[str, Any] | None = None,
    init_from: Path | None = None,
    stop_at: int | None = None,
) -> dict[str, Any]:
    """Train (or resume from ``out/state.pt``) up to ``config.steps`` or ``minutes``; returns the record.

    ``transformer_config`` replaces the registry's architecture (tests train a smaller one; the registry loads
    whatever ``checkpoint/transformer/config.json`` says). ``init_from``: a checkpoint folder of an earlier
    run (its EMA weights) to continue from, at ``config.start`` = that run's last step, with a new optimizer;
    its record's runs and loss curve head this run's record. ``stop_at``: stop (and save) at that step."""
    from adatsq.core.models.registry import load_text_encoders, load_transformer  # as _spec: lazily

    earlier = _earlier_run(init_from, config) if init_from is not None else None
    if earlier is not None and transformer_config is None:
        transformer_config = earlier["transformer_config"]
    transformer_config = dict(TRANSFORMER_CONFIG if transformer_config is None else transformer_config)
    started = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    family = ShapesFluxFamily()
    spec = _spec()

    state = (
        torch.load(out / STATE, map_location="cpu", weights_only=False) if (out / STATE).is_file() else None
    )
    if state is not None:
        saved = dict(state["config"], steps=config.steps)
        if saved != dataclasses.asdict(config):
            raise ValueError(
                f"{out / STATE} was trained with {state['config']}, not {dataclasses.asdict(config)}"
            )
        if state["transformer_config"] != transformer_config:
            raise ValueError(
                f"{out / STATE} holds a transformer of another config: {state['transformer_config']}"
            )
        encoder_cfg = TextEncoderConfig.from_json(state["text_encoder_config"])
    elif init_from is not None:  # the earlier run's encoder, with the vocabulary its checkpoint stores
        initial_encoder = load_text_encoders(spec, init_from)
        encoder_cfg = initial_encoder.config
    else:
        encoder_cfg = TextEncoderConfig(shapes_vocabulary(), text_len=TEXT_LEN)

    transformer = family.build(transformer_config, seed=config.seed).to(dev).train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + 1)
        encoder = ShapesTextEncoder(encoder_cfg).to(dev).train()
    ema_t, ema_e = copy.deepcopy(transformer).eval(), copy.deepcopy(encoder).eval()
    for p in (*ema_t.parameters(), *ema_e.parameters()):
        p.requires_grad_(False)
    decay, no_decay = [], []
    for p in transformer.parameters():
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "lr": config.lr, "weight_decay": config.weight_decay},
        {"params": no_decay, "lr": config.lr, "weight_decay": 0.0},
        {"params": list(encoder.parameters()), "lr": config.text_lr, "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.99), eps=1e-8)
    base_lrs = [g["lr"] for g in groups]
    step, losses, runs, wall_before = config.start, [], [], 0.0
    if state is None and earlier is not None:
        if earlier["transformer_config"] != transformer_config:
            raise ValueError(f"--init-from {init_from} holds a transformer of another config")
        # the checkpoint's float16 transformer and float32 encoder into the float32 training models
        transformer.load_state_dict(load_transformer(spec, init_from).state_dict())
        encoder.load_state_dict(initial_encoder.state_dict())
        ema_t.load_state_dict(transformer.state_dict())
        ema_e.load_state_dict(encoder.state_dict())
        losses, runs, wall_before = earlier["loss"], earlier["runs"], earlier["wall_s"]
    if state is not None:
        transformer.load_state_dict(state["transformer"])
        encoder.load_state_dict(state["text_encoder"])
        ema_t.load_state_dict(state["ema_transformer"])
        ema_e.load_state_dict(state["ema_text_encoder"])
        opt.load_state_dict(state["optimizer"])
        step, losses, runs, wall_before = state["step"], state["loss"], state["runs"], state["wall_s"]
    run = {
        "command": list(command),
        **({"init_from": str(init_from)} if init_from is not None and state is None else {}),
        "start_step": step,
        **({"stop_at": stop_at} if stop_at is not None else {}),
        "device": str(dev) if dev.type != "cuda" else f"cuda ({torch.cuda.get_device_name(dev)})",
    }
    runs = [*runs, run]
    nbytes = checkpoint_bytes(transformer, encoder)
    params = sum(p.numel() for p in transformer.parameters())

    def record_now() -> dict[str, Any]:
        wall = wall_before + time.monotonic() - started
        return _record(
            config, runs, losses, step, wall, run["device"], encoder_cfg, transformer_config, nbytes, params
        )

    def save() -> dict[str, Any]:
        run["end_step"] = step
        run["wall_s"] = round(time.monotonic() - started, 2)
        rec = record_now()
        payload = {
            "config": dataclasses.asdict(config),
            "transformer_config": transformer_config,
            "text_encoder_config": encoder_cfg.to_json(),
            "transformer": transformer.state_dict(),
            "text_encoder": encoder.state_dict(),
            "ema_transformer": ema_t.state_dict(),
            "ema_text_encoder": ema_e.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "loss": losses,
            "runs": runs,
            "wall_s": rec["wall_s"],
        }
        atomic_write(out / STATE, lambda p: torch.save(payload, p))
        for folder in (out / CHECKPOINT, *((export,) if export is not None else ())):
            write_checkpoint(Path(folder), ema_t, ema_e, rec)
        atomic_write_text(out / RECORD, json.dumps(rec, indent=1) + "\n")
        return rec

    loader = torch.utils.data.DataLoader(
        _Batches(config, encoder.tokenizer, step, config.steps),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda")
    # cuDNN's fused attention is left out: its sm90 backward of torch 2.11 faults or returns NaN on some shapes
    # (pytorch/pytorch#196678); flash and memory-efficient attention compute the same softmax(QKᵀ/√d)·V.
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    running, count, last_save = 0.0, 0, step
    budget = None if minutes is None else minutes * 60.0
    for batch in loader:
        if budget is not None and time.monotonic() - started >= budget:
            break
        if stop_at is not None and step >= stop_at:
            break
        batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
        factor = config.lr_factor(step)
        for g, lr in zip(opt.param_groups, base_lrs):
            g["lr"] = lr * factor
        with sdpa_kernel(backends):
            with autocast:
                loss = flow_loss(family, spec, transformer, encoder, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
        torch.nn.utils.clip_grad_norm_([*transformer.parameters(), *encoder.parameters()], config.grad_clip)
        opt.step()
        d = min(config.ema, (1 + step) / (10 + step))
        _ema_update(ema_t, transformer, d)
        _ema_update(ema_e, encoder, d)
        step += 1
        running += float(loss.detach())
        count += 1
        if step % log_every == 0 or step == config.steps:
            mean = running / count
            if not math.isfinite(mean):
                raise FloatingPointError(f"loss {mean} at step {step}")
            losses.append([step, round(mean, 6)])
            running, count = 0.0, 0
            print(
                f"step {step}/{config.steps} loss {mean:.4f} lr {base_lrs[0] * factor:.2e} "
                f"{time.monotonic() - started:.0f}s",
                flush=True,
            )
        if step - last_save >= save_every:
            save()
            last_save = step
    if count:
        losses.append([step, round(running / count, 6)])
    return save()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adatsq.core.models.shapes.train", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="run folder: state.pt, train_record.json, checkpoint/"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--steps", type=int, default=TrainConfig.steps, help="total steps (the LR schedule's length)"
    )
    parser.add_argument("--batch", type=int, default=TrainConfig.batch)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--warmup", type=int, default=TrainConfig.warmup)
    parser.add_argument("--sigma", choices=("logit_normal", "uniform"), default=TrainConfig.sigma)
    parser.add_argument("--minutes", type=float, default=None, help="stop cleanly after this wall time")
    parser.add_argument(
        "--stop-at",
        type=int,
        default=None,
        help="stop cleanly at this step (the schedule still runs to --steps)",
    )
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--save-every", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=None, help="data workers (default: CUDA 8, CPU 0)")
    parser.add_argument("--export", type=Path, default=None, help="also write the checkpoint to this folder")
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="continue an earlier run from its checkpoint folder (EMA weights, a new optimizer, a new warm-up; "
        "its record's runs and loss curve head this one's): --steps is then the new total",
    )
    args = parser.parse_args(argv)
    start = json.loads((args.init_from / RECORD).read_text())["step"] if args.init_from else 0
    config = TrainConfig(
        seed=args.seed,
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        text_lr=args.lr,
        warmup=args.warmup,
        sigma=args.sigma,
        start=start,
    )
    workers = (
        args.workers
        if args.workers is not None
        else (min(8, (os.cpu_count() or 2) - 1) if args.device.startswith("cuda") else 0)
    )
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    command = [
        sys.executable,
        "-m",
        "adatsq.core.models.shapes.train",
        *(sys.argv[1:] if argv is None else argv),
    ]
    rec = train(
        args.out,
        config,
        device=args.device,
        minutes=args.minutes,
        log_every=args.log_every,
        save_every=args.save_every,
        workers=workers,
        export=args.export,
        command=command,
        init_from=args.init_from,
        stop_at=args.stop_at,
    )
    last = rec["loss"][-1][1] if rec["loss"] else float("nan")
    print(f"step {rec['step']}/{config.steps}, last loss {last:.4f}, wall {rec['wall_s']:.0f}s -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

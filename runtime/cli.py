"""``adatsq-run DIR``: sample with the compiled schedule of DIR, switching engines per step.

Writes ``-o FILE`` (default ``DIR/samples.png``): for image models a PNG grid of the final latents, one
row per sample and one tile per latent channel (tiny models have no VAE, so these are latent channels,
each min-max normalised, not decoded images); for Wan a grid of frames (rows: sample × channel, columns:
latent frames). Beside it ``FILE.json`` holds per-step config id and wall time (also printed as a table).
Errors (bad manifest hashes, a missing engine, ``--steps`` different from the schedule's, a directory that
adatsq-compile is writing) print one line and exit with code 2, writing nothing: a ``RunnerError`` or any
other bad-input error (:class:`~adatsq.core.errors.InputError`). Anything else is an internal error and keeps
its traceback (exit code 1).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np
import torch

from adatsq.core.errors import InputError
from adatsq.runtime.runner import BACKENDS, EngineRunner, RunnerError

__all__ = ["latent_grid", "main"]


def latent_grid(latents: torch.Tensor) -> np.ndarray:
    """uint8 (H, W) grid: rows = samples (× channels for video), tiles = channels (or frames)."""
    x = latents.float()
    if x.ndim == 5:  # (B, C, F, H, W) → rows of frames per (sample, channel)
        b, c, f, h, w = x.shape
        tiles = x.reshape(b * c, f, h, w)
    else:
        tiles = x
    lo = tiles.amin(dim=(-2, -1), keepdim=True)
    hi = tiles.amax(dim=(-2, -1), keepdim=True)
    tiles = (tiles - lo) / (hi - lo).clamp_min(1e-12)
    r, n, h, w = tiles.shape
    pad = 1
    grid = torch.ones(r * (h + pad) - pad, n * (w + pad) - pad)
    for i in range(r):
        for j in range(n):
            grid[i * (h + pad) : i * (h + pad) + h, j * (w + pad) : j * (w + pad) + w] = tiles[i, j]
    return (grid.numpy() * 255).round().astype(np.uint8)


@click.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--backend", type=click.Choice(BACKENDS), default="ort", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--samples", type=int, default=1, show_default=True)
@click.option("--steps", type=int, default=None, help="must equal the schedule's step count")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None)
def main(
    directory: Path, backend: str, seed: int, samples: int, steps: int | None, output: Path | None
) -> None:
    """Run the compiled schedule in DIRECTORY and write the samples."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    try:
        runner = EngineRunner(directory, backend=backend)
        latents = runner.generate(seed=seed, n=samples, steps=steps)
    except (RunnerError, InputError) as exc:  # only bad input; an internal error keeps its traceback
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    output = output or directory / "samples.png"
    import matplotlib.image

    output.parent.mkdir(parents=True, exist_ok=True)
    matplotlib.image.imsave(str(output), latent_grid(latents), cmap="gray", vmin=0, vmax=255)
    record = {
        "directory": str(directory),
        "backend": backend,
        "seed": seed,
        "samples": samples,
        "used_configs": runner.used_configs,
        "steps": [
            {"step": s.step, "config": s.config, "seconds": s.seconds, "calls": s.calls} for s in runner.steps
        ],
        "total_seconds": sum(s.seconds for s in runner.steps),
        "note": "tiny models have no VAE: the PNG shows latent channels, not decoded images",
    }
    output.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    table = Table(title=f"{runner.spec.name}: {backend}")
    for col in ("step", "config", "calls", "ms"):
        table.add_column(col, justify="right")
    for s in runner.steps:
        table.add_row(str(s.step), f"{s.config:02d}", str(s.calls), f"{s.seconds * 1e3:.1f}")
    console.print(table)
    console.print(f"wrote {output} and {output.with_suffix('.json')}")


if __name__ == "__main__":
    main()

"""``adatsq-compile MODEL --target BITS -o DIR``: the command-line entry point (click)."""

from __future__ import annotations

import sys

import click

from adatsq.compiler.settings import STAGE_NAMES

__all__ = ["main"]


def _known_models() -> str:
    from adatsq.core.models.registry import MODELS

    return ", ".join(MODELS)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("model")
@click.option("--target", type=float, required=True, help="Average activation bits to stay within (3–16).")
@click.option("-o", "--out", "out", type=click.Path(file_okay=False), required=True, help="Output directory.")
@click.option("--steps", type=int, default=None, help="Denoising steps [model default].")
@click.option(
    "--resolution",
    type=int,
    multiple=True,
    help="HEIGHT WIDTH (or FRAMES HEIGHT WIDTH for Wan), repeat the flag.",
)
@click.option("--calib-samples", type=int, default=4, help="Calibration conditionings / seeds.")
@click.option("--candidates", type=int, default=8, help="M: candidates per step and beam width.")
@click.option("--clusters", type=int, default=4, help="Sensitivity clusters per step (candidate bit tuples).")
@click.option(
    "--tau", type=float, default=1.0, help="Temperature of the Fisher softmax over steps (GPTQ weights)."
)
@click.option(
    "--weight-bits",
    type=click.Choice(["3", "4"]),
    default=None,
    help="Weight bits [3 if target < 4, else 4].",
)
@click.option(
    "--group-size", type=int, default=None, help="Quantization group along K [model default, 128 real]."
)
@click.option("--seed", type=int, default=0)
@click.option(
    "--max-engines", type=int, default=None, help="Cap on distinct configurations (engines) [unlimited]."
)
@click.option(
    "--model-path",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Local save_pretrained folder of the named architecture.",
)
@click.option(
    "--prompts",
    "prompts_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Calibration prompts, one per line (real models).",
)
@click.option(
    "--metric",
    type=click.Choice(["latent", "clip"]),
    default="latent",
    help="End-to-end metric of the final selection.",
)
@click.option("--until", type=click.Choice(STAGE_NAMES), default="package", help="Stop after this stage.")
def main(
    model: str,
    target: float,
    out: str,
    steps: int | None,
    resolution: tuple[int, ...],
    calib_samples: int,
    candidates: int,
    clusters: int,
    tau: float,
    weight_bits: str | None,
    group_size: int | None,
    seed: int,
    max_engines: int | None,
    model_path: str | None,
    prompts_file: str | None,
    metric: str,
    until: str,
) -> None:
    """Compile MODEL (flux-dev, flux-schnell, z-image, wan2.1-1.3b, tiny-flux, tiny-wan, tiny-zimage) into
    per-timestep-configuration engines with an average of at most --target activation bits."""
    import os
    import warnings

    os.environ.setdefault(
        "TRANSFORMERS_VERBOSITY", "error"
    )  # diffusers' pipeline imports warn about torchvision
    warnings.filterwarnings("ignore", category=FutureWarning)
    from rich.console import Console

    from adatsq.core.config import ConfigError
    from adatsq.core.models.registry import ModelLoadError, get_spec

    console = Console(stderr=True)
    try:
        get_spec(model)
        prompts = None
        if prompts_file:
            with open(prompts_file) as fh:
                prompts = tuple(line.strip() for line in fh if line.strip())
            if not prompts:
                raise ConfigError(f"--prompts {prompts_file} holds no prompt")
        from adatsq.compiler.settings import CompileConfig

        config = CompileConfig(
            model=model,
            target=target,
            out=out,
            steps=steps,
            resolution=tuple(resolution) or None,
            calib_samples=calib_samples,
            candidates=candidates,
            clusters=clusters,
            tau=tau,
            weight_bits=int(weight_bits) if weight_bits else None,
            group_size=group_size,
            seed=seed,
            max_engines=max_engines,
            model_path=model_path,
            prompts=prompts,
            metric=metric,
            until=until,
        )
        from adatsq.compiler.context import CompileContext
        from adatsq.compiler.pipeline import run_pipeline
        from adatsq.compiler.summary import summary_table

        ctx = CompileContext(config, console=console)
        status = run_pipeline(ctx)
    except (ConfigError, ModelLoadError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished stages are kept; rerun the same command to resume")
        sys.exit(130)
    if "search" in status:
        Console().print(summary_table(ctx, status))


if __name__ == "__main__":
    main()

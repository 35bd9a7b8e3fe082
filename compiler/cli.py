"""``adatsq-compile MODEL --target BITS -o DIR``: the command-line entry point (click).

Defaults and choices come from :class:`~adatsq.compiler.settings.CompileConfig`. Bad input (an
:class:`~adatsq.core.errors.InputError`) prints one line and exits with code 2; anything else is an internal
error and keeps its traceback (exit code 1).
"""

from __future__ import annotations

import re
import sys
from typing import Any

import click

from adatsq.compiler.settings import (
    ALPHAS,
    METHOD_PRESETS,
    METHODS,
    METRICS,
    SALIENCES,
    STAGE_NAMES,
    WEIGHT_BITS,
    WEIGHT_GRANULARITIES,
    WEIGHT_METHODS,
    WEIGHT_SCALES,
    default_of,
)

__all__ = ["GreedyIntsOption", "ResolutionType", "main"]

_INT = re.compile(r"\d+")


class ResolutionType(click.ParamType):
    """``H W`` / ``F H W`` (the tokens after ``--resolution``, joined by :class:`GreedyIntsOption`) or
    ``HxW`` / ``FxHxW``, as a tuple of positive ints."""

    name = "resolution"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or isinstance(value, tuple):
            return value
        parts = [p for p in re.split(r"[x\s]+", str(value).strip().lower()) if p]
        dims = tuple(int(p) for p in parts) if all(_INT.fullmatch(p) for p in parts) else ()
        if len(dims) not in (2, 3) or min(dims) < 1:
            self.fail(
                f"{value!r}: give HEIGHT WIDTH (Wan: FRAMES HEIGHT WIDTH) as positive integers, "
                f"e.g. --resolution 1024 1024 or --resolution 1024x1024",
                param,
                ctx,
            )
        return dims


class GreedyIntsOption(click.Option):
    """An option whose value is its next token plus every plain integer token after it
    (``--resolution 128 128``, ``--resolution 5 64 64``): click's ``nargs`` is fixed, a resolution has two
    or three numbers. The joining is done by :class:`_GreedyCommand` before click parses."""


class _GreedyCommand(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _join_greedy(self.params, args))


def _join_greedy(params: list[click.Parameter], args: list[str]) -> list[str]:
    """``[..., "--resolution", "5", "64", "64", ...]`` → ``[..., "--resolution", "5 64 64", ...]``.

    Values of other options are skipped (so ``-o 128`` stays ``-o``'s), and nothing after ``--`` is touched.
    """
    options = [p for p in params if isinstance(p, click.Option)]
    greedy = {o for p in options if isinstance(p, GreedyIntsOption) for o in p.opts}
    takes_value = {o for p in options if not p.is_flag and not p.count for o in p.opts}
    out: list[str] = []
    i = 0
    while i < len(args):
        tok = args[i]
        i += 1
        if tok == "--":
            out += [tok, *args[i:]]
            break
        name, eq, attached = tok.partition("=")
        if name in greedy and (eq or i < len(args)):
            values = [attached] if eq else [args[i]]
            i += 0 if eq else 1
            while i < len(args) and _INT.fullmatch(args[i]):
                values.append(args[i])
                i += 1
            out += [name, " ".join(values)]
            continue
        out.append(tok)
        if tok in takes_value and i < len(args):
            out.append(args[i])
            i += 1
    return out


class _Multiples(click.ParamType):
    """``--group-candidates 0.5,1,2`` → (0.5, 1.0, 2.0) (a tuple, the config default, passes as it is)."""

    name = "M1,M2,..."

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        try:
            return tuple(float(part) for part in str(value).split(",") if part.strip())
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of numbers", param, ctx)


def _known_models() -> str:
    from adatsq.core.models.registry import MODELS

    return ", ".join(MODELS)


@click.command(
    cls=_GreedyCommand, context_settings={"help_option_names": ["-h", "--help"], "show_default": True}
)
@click.argument("model")
@click.option("--target", type=float, required=True, help="Average activation bits to stay within (3–16).")
@click.option("-o", "--out", "out", type=click.Path(file_okay=False), required=True, help="Output directory.")
@click.option("--steps", type=int, default=default_of("steps"), help="Denoising steps [model default].")
@click.option(
    "--resolution",
    cls=GreedyIntsOption,
    type=ResolutionType(),
    default=default_of("resolution"),
    metavar="H W | F H W",
    help="HEIGHT WIDTH (Wan: FRAMES HEIGHT WIDTH), e.g. 1024 1024 or 1024x1024 [model default].",
)
@click.option(
    "--calib-samples",
    type=int,
    default=default_of("calib_samples"),
    help="Calibration conditionings / seeds.",
)
@click.option(
    "--search-samples",
    type=int,
    default=default_of("search_samples"),
    help="Calibration samples the search's candidate costs run on (the first ones) [all].",
)
@click.option(
    "--heldout-samples",
    type=int,
    default=default_of("heldout_samples"),
    help="Held-out seeds the end-to-end metric samples for every feasible path.",
)
@click.option(
    "--hessian-memory",
    "hessian_memory_gb",
    type=float,
    default=default_of("hessian_memory_gb"),
    help="GB of Hessian accumulators per replay of the trajectories [8 on the CPU, 40 on the GPU].",
)
@click.option(
    "--candidates", type=int, default=default_of("candidates"), help="M: candidates per step and beam width."
)
@click.option(
    "--clusters",
    type=int,
    default=default_of("clusters"),
    help="Sensitivity clusters per step (candidate bit tuples).",
)
@click.option(
    "--tau",
    type=float,
    default=default_of("tau"),
    help="Temperature of the Fisher softmax over steps (GPTQ weights).",
)
@click.option(
    "--weight-bits",
    type=click.Choice([str(b) for b in WEIGHT_BITS]),
    default=default_of("weight_bits"),
    help="Weight bits [3 if target < 4, else 4].",
)
@click.option(
    "--group-size",
    type=int,
    default=default_of("group_size"),
    help="Quantization group along K [model default, 128 real].",
)
@click.option("--seed", type=int, default=default_of("seed"))
@click.option(
    "--max-engines",
    type=int,
    default=default_of("max_engines"),
    help="Cap on distinct configurations (engines) [unlimited].",
)
@click.option(
    "--model-path",
    type=click.Path(exists=True, file_okay=False),
    default=default_of("model_path"),
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
    type=click.Choice(METRICS),
    default=default_of("metric"),
    help="End-to-end metric of the final selection.",
)
@click.option(
    "--until", type=click.Choice(STAGE_NAMES), default=default_of("until"), help="Stop after this stage."
)
@click.option(
    "--device",
    default=default_of("device"),
    help="Where the compile runs: auto (the GPU if present, else the CPU), cpu, cuda, cuda:N.",
)
@click.option(
    "--random-weights",
    is_flag=True,
    default=default_of("random_weights"),
    help="Real architecture from its published config with seeded random weights and synthetic "
    "conditioning (speed and memory measurements; not a real model).",
)
@click.option(
    "--weights",
    type=click.Choice(WEIGHT_METHODS),
    default=default_of("weights"),
    help="How weights are quantized: Fisher-weighted GPTQ, or round-to-nearest (an ablation).",
)
@click.option(
    "--alpha",
    type=click.Choice(ALPHAS),
    default=default_of("alpha"),
    help="GPTQ's per-step Hessian weights: the Fisher softmax, or uniform (an ablation).",
)
@click.option(
    "--weight-scale",
    type=click.Choice(WEIGHT_SCALES),
    default=default_of("weight_scale"),
    help="Weight scales per group: absmax/qmax, or the least-squares shrink of it.",
)
@click.option(
    "--weight-group",
    type=click.Choice(WEIGHT_GRANULARITIES),
    default=default_of("weight_group"),
    help="Weight scale granularity along K: per group of G [group], or one scale per output channel.",
)
@click.option(
    "--rotation/--no-rotation",
    default=default_of("rotation"),
    help="Hadamard rotation of the activation-quantized layers [on]; off is an ablation.",
)
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default=default_of("method"),
    help="A named method: a preset of the options (rtn: RTN weights, no rotation, uniform bits; quarot: "
    "rotation + GPTQ, uniform bits; smoothquant: smoothing + RTN weights, uniform bits; svdquant: smoothing + "
    "a rank-32 16-bit branch + RTN residual, uniform bits; vidit-q: smoothing then rotation, RTN weights, "
    "uniform bits; q-dit: per-layer group sizes + GPTQ, no rotation, uniform bits; ptq4dit: salience balancing "
    "with Spearman-guided step weights + RTN weights, no rotation, uniform bits; clq: channel swap × block "
    "Hadamard + cross-block calibration + per-layer weight clip search, RTN weights, uniform bits).",
)
@click.option(
    "--smoothing/--no-smoothing",
    default=default_of("smoothing"),
    help="SmoothQuant's per-channel smoothing of the activation-quantized layers [off].",
)
@click.option(
    "--smooth-alpha",
    type=float,
    default=default_of("smooth_alpha"),
    help="SmoothQuant's migration strength α: s = max|X|^α / max|W|^(1−α).",
)
@click.option(
    "--lowrank",
    type=int,
    default=default_of("lowrank"),
    help="SVDQuant's 16-bit low-rank branch of rank R on the activation-quantized layers [0: none].",
)
@click.option(
    "--salience",
    type=click.Choice(SALIENCES),
    default=default_of("salience"),
    help="The smoothing's activation salience: max over all tokens, or PTQ4DiT's Spearman-ρ-weighted "
    "per-step maxima (ssc).",
)
@click.option(
    "--group-alloc/--no-group-alloc",
    default=default_of("group_alloc"),
    help="Q-DiT's per-layer group size: the least calibration output error within the model's G weight-scale "
    "bytes [off].",
)
@click.option(
    "--group-candidates",
    type=_Multiples(),
    default=default_of("group_candidates"),
    help="The candidate group sizes of --group-alloc, as multiples of the group size (comma-separated).",
)
@click.option(
    "--dsq/--no-dsq",
    default=default_of("dsq"),
    help="D²Quant's dual-scale quantizer on the down-projection-like layers (ff.net.2, single blocks' "
    "proj_out) [off].",
)
@click.option(
    "--dac/--no-dac",
    default=default_of("dac"),
    help="D²Quant's deviation-aware mean-shift correction folded into the quantized layers' biases [off].",
)
@click.option(
    "--obs/--no-obs",
    default=default_of("obs"),
    help="CLQ's orthogonal-based smoothing: channels swapped by outlier score, block Hadamard, x·G before "
    "the op (needs --no-rotation) [off].",
)
@click.option(
    "--obs-blocks",
    type=int,
    default=default_of("obs_blocks"),
    help="Blocks of --obs's Hadamard (K/blocks wide where that is a Hadamard width) [2].",
)
@click.option(
    "--cbc/--no-cbc",
    default=default_of("cbc"),
    help="Cross-block calibration: each block's Hessians from the quantized blocks' outputs (one replay per "
    "block) [off].",
)
@click.option(
    "--clip-search/--no-clip-search",
    default=default_of("clip_search"),
    help="A weight clip ratio per layer by its Hessian-weighted output error (needs --weights rtn) [off].",
)
@click.option(
    "--uniform-bits",
    is_flag=True,
    default=default_of("uniform_bits"),
    help="Every layer at every step at one width (the largest of 3/4/8 within the target).",
)
@click.option(
    "--static-schedule",
    is_flag=True,
    default=default_of("static_schedule"),
    help="One configuration for every step (the best static schedule; an ablation).",
)
def main(
    model: str,
    target: float,
    out: str,
    steps: int | None,
    resolution: tuple[int, ...] | None,
    calib_samples: int,
    search_samples: int | None,
    heldout_samples: int,
    hessian_memory_gb: float | None,
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
    device: str,
    random_weights: bool,
    weights: str,
    alpha: str,
    weight_scale: str,
    weight_group: str,
    rotation: bool,
    static_schedule: bool,
    method: str,
    uniform_bits: bool,
    smoothing: bool,
    smooth_alpha: float,
    lowrank: int,
    salience: str,
    group_alloc: bool,
    group_candidates: tuple[float, ...],
    dsq: bool,
    dac: bool,
    obs: bool,
    obs_blocks: int,
    cbc: bool,
    clip_search: bool,
) -> None:
    """Compile MODEL (flux-dev, flux-schnell, z-image, wan2.1-1.3b, tiny-flux, tiny-wan, tiny-zimage) into
    per-timestep-configuration engines with an average of at most --target activation bits."""
    import os
    import warnings

    os.environ.setdefault(
        "TRANSFORMERS_VERBOSITY", "error"
    )  # diffusers' pipeline imports warn about torchvision
    # the quantize stage frees and allocates GBs of Hessians per chunk: without expandable segments the
    # cached blocks fragment (Flux-dev on the H200: 71 GiB allocated, 96 GiB reserved)
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from rich.console import Console
    from rich.markup import escape

    from adatsq.core.errors import CompileError, InputError
    from adatsq.core.models.registry import get_spec

    console = Console(stderr=True)
    try:
        get_spec(model)
        prompts = None
        if prompts_file:
            with open(prompts_file) as fh:
                prompts = tuple(line.strip() for line in fh if line.strip())
            if not prompts:
                raise CompileError(f"--prompts {prompts_file} holds no prompt")
        from adatsq.compiler.settings import CompileConfig

        fields = dict(
            model=model,
            target=target,
            out=out,
            steps=steps,
            resolution=resolution,
            calib_samples=calib_samples,
            search_samples=search_samples,
            heldout_samples=heldout_samples,
            hessian_memory_gb=hessian_memory_gb,
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
            device=device,
            random_weights=random_weights,
            weights=weights,
            alpha=alpha,
            weight_scale=weight_scale,
            weight_group=weight_group,
            rotation=rotation,
            static_schedule=static_schedule,
            uniform_bits=uniform_bits,
            smoothing=smoothing,
            smooth_alpha=smooth_alpha,
            lowrank=lowrank,
            salience=salience,
            group_alloc=group_alloc,
            group_candidates=group_candidates,
            dsq=dsq,
            dac=dac,
            obs=obs,
            obs_blocks=obs_blocks,
            cbc=cbc,
            clip_search=clip_search,
        )
        # a --method preset fills the options it names, unless they were given (then they must agree)
        source = click.get_current_context().get_parameter_source
        given = {k: v for k, v in fields.items() if source(k) is not click.core.ParameterSource.DEFAULT}
        preset_keys = set(METHOD_PRESETS[method])
        config = CompileConfig.for_method(
            method, **{k: v for k, v in fields.items() if k not in preset_keys or k in given}
        )
        from adatsq.compiler.context import CompileContext
        from adatsq.compiler.pipeline import run_pipeline
        from adatsq.compiler.summary import summary_table

        ctx = CompileContext(config, console=console)
        status = run_pipeline(ctx)
    except InputError as exc:  # only bad input; an internal error keeps its traceback (exit 1)
        console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished stages are kept; rerun the same command to resume")
        sys.exit(130)
    if "search" in status:
        Console().print(summary_table(ctx, status))


if __name__ == "__main__":
    main()

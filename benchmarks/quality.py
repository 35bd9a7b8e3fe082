"""The quality table (issue 14): shapes-flux compiled at W4 (target 4.0) and W3 (target 3.1), each row scored
by GenEval-mini, with the method's ablations.

    python benchmarks/quality.py --quick --out benchmarks/results/quality_quick.json        # CPU, minutes
    python benchmarks/quality.py --device cuda --jobs 8 --out benchmarks/results/quality_full.json  # the full table

Rows per target: ``adatsq`` (the full method), ``adatsq+mse`` (least-squares weight scales), ``static``
(the best one-configuration schedule the search finds at the same target), ``gptq-uniform`` (GPTQ without
Fisher weighting), ``rtn`` (round-to-nearest weights), ``no-rotation``, ``adatsq+d2quant`` (D²Quant's
``--dsq --dac``), ``adatsq+lowrank`` (SVDQuant's rank-32 branch, ``--lowrank 32``, on AdaTSQ's GPTQ
residual) and ``svdquant-r2`` (SVDQuant's recipe with a rank-2 branch: rank 32 is 1 % of Flux-dev's width,
a sixth of shapes-flux's), ``adatsq+channel`` and ``adatsq+pow2`` (``--weight-group``: one weight scale per
output channel, or per channel × 2^e per group), the COMBINATIONS, left out of ``--quick`` unless named; plus ``fp`` once. The rows of one
target share one calibration and AdaTSQ's search: they are computed once per target (``--until search``,
into ``WORK/target_T/shared``), and each row compiles in its own copy of that folder, re-running only the
stages its options change (the search and/or quantize), so the rows of a target run in parallel once it is
done; a row's ``compile_s`` leaves the shared stages out (the JSON's ``shared`` entry has their time).
Then the baselines (issue 15), ``method:NAME@target`` for every ``--method`` preset (compiler/settings.py
METHOD_PRESETS), each compiled from scratch in its own folder, so its ``compile_s`` is that method's whole
compile; the uniform-bit presets give W4A4 at target 4.0 and W3A3 at 3.1 (the largest width within it).
Every row records its weight bytes (weights.safetensors) and its compile wall time. Groups of rows that share
no folder run in ``--jobs`` worker processes (on the CPU one per core, at most 2, a thread each: the tiny
model's rows are bound by Python, not by arithmetic); each row's compile time is then its own worker's.

Scoring: the evaluation prompts are ``evaluation_set(P, seed=EVAL_SEED)`` (P per GenEval category, eval-split
sentences; a different seed from the search's own selection prompts, seed 1234), ``--seeds`` noise seeds
each. Per row: GenEval per category and total with bootstrap 95 % intervals; the relative error of the final
images against the FP ones for the same noise and prompt; a Fréchet distance on 8×8-pooled pixels against
renders of training scenes (an FID-like distance at this scale). The run resumes: rows already in ``--out``
are kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adatsq.compiler.settings import METHOD_PRESETS

EVAL_SEED = 2026
ROWS: dict[str, list[str]] = {
    "adatsq": [],
    "adatsq+mse": ["--weight-scale", "mse"],
    "static": ["--static-schedule"],
    "gptq-uniform": ["--alpha", "uniform"],
    "rtn": ["--weights", "rtn"],
    "no-rotation": ["--no-rotation"],
    "adatsq+d2quant": ["--dsq", "--dac"],  # D²Quant's weight-side options on AdaTSQ's weights (issue 15)
}


def _preset_args(method: str, **override: object) -> list[str]:
    """A --method preset (compiler/settings.METHOD_PRESETS) as compile options, with ``override``'s fields
    changed: the preset itself refuses a contradicting option, so a variant of it is spelled this way."""
    args: list[str] = []
    for key, value in {**METHOD_PRESETS[method], **override}.items():
        flag = key.replace("_", "-")
        args += (
            [f"--{flag}" if value else f"--no-{flag}"]
            if isinstance(value, bool)
            else [f"--{flag}", str(value)]
        )
    return args


# rows beside the paper's (issue 15): in the full table by default, in the quick one only when --rows names
# them (the quick table stays within its 10 minutes)
COMBINATIONS: dict[str, list[str]] = {
    "adatsq+lowrank": ["--lowrank", "32"],  # SVDQuant's rank-32 16-bit branch under AdaTSQ's schedule
    # SVDQuant's recipe (method:svdquant) with its branch at Flux-dev's share of the width: rank 32 of 3072 is
    # rank 2 of shapes-flux's 192, where rank 32 is a sixth of the width and 2.6× the W3 model's weight bytes
    "svdquant-r2": _preset_args("svdquant", lowrank=2),
    # one weight scale per output channel, or per channel × a power of two per group (issue 13: granularities
    # at which the FP8 GEMM's promotion is one FMA per accumulator instead of two): what they cost in quality
    "adatsq+channel": ["--weight-group", "channel"],
    "adatsq+pow2": ["--weight-group", "pow2"],
}
ALL_ROWS = {**ROWS, **COMBINATIONS}


@dataclasses.dataclass(frozen=True)
class Settings:
    steps: int
    calib_samples: int
    heldout_samples: int
    prompts_per_category: int
    seeds: int
    candidates: int


QUICK = Settings(steps=8, calib_samples=2, heldout_samples=1, prompts_per_category=2, seeds=2, candidates=4)
FULL = Settings(steps=20, calib_samples=16, heldout_samples=4, prompts_per_category=16, seeds=4, candidates=8)


def _compile(
    out: Path, target: float, checkpoint: Path, device: str, s: Settings, extra: list[str], until: str
) -> None:
    from click.testing import CliRunner

    from adatsq.compiler.cli import main

    args = ["shapes-flux", "-o", str(out), "--target", str(target), "--model-path", str(checkpoint)]
    args += ["--steps", str(s.steps), "--calib-samples", str(s.calib_samples)]
    args += ["--heldout-samples", str(s.heldout_samples), "--candidates", str(s.candidates)]
    args += ["--metric", "geneval", "--device", device, "--until", until, *extra]
    result = CliRunner().invoke(main, args)
    if result.exit_code != 0:
        cause = ""
        if result.exc_info is not None and not isinstance(result.exception, SystemExit):
            cause = "".join(traceback.format_exception(*result.exc_info)[-6:])
        raise RuntimeError(
            f"adatsq-compile {' '.join(args)} failed ({result.exit_code}): {result.output[-1500:]}{cause}"
        )


def _inputs(
    checkpoint: Path, s: Settings, device: str
) -> tuple[Any, Any, Any, list[Any], list[str], Any, torch.Tensor]:
    """(spec, family, FP model, eval specs, their texts, conditioning, noise): seeds × prompts, prompt-major."""
    from adatsq.core.models import family_of, get_spec, load_text_encoders, load_transformer
    from adatsq.core.models.shapes.scenes import evaluation_set

    spec = get_spec("shapes-flux")
    fam = family_of(spec)
    model = load_transformer(spec, checkpoint).float().to(device)
    evals = evaluation_set(s.prompts_per_category, seed=EVAL_SEED)
    specs = [e for e, _ in evals for _ in range(s.seeds)]
    texts = [t for _, t in evals for _ in range(s.seeds)]
    cond = fam.encode_prompts(load_text_encoders(spec, checkpoint), texts, spec)
    noise = fam.sample_noise(
        spec, model, spec.resolution, len(texts), torch.Generator().manual_seed(EVAL_SEED)
    )
    return spec, fam, model, specs, texts, cond, noise


def _sample(
    fam: Any, spec: Any, model: Any, noise: torch.Tensor, cond: Any, steps: int, schedule: Any = None
) -> torch.Tensor:
    from adatsq.core.models import run_sampler
    from adatsq.passes.quant_linear import quant_linears, set_activation_bits

    modules = quant_linears(model)

    def before(i: int) -> None:
        if schedule is not None:
            set_activation_bits(model, schedule.bits_at(i), modules)

    out = []
    with torch.no_grad():
        for start in range(0, noise.shape[0], 64):
            part = slice(start, start + 64)
            out.append(
                run_sampler(fam, spec, model, noise[part], cond.select(part), steps, before_step=before).cpu()
            )
    return torch.cat(out).float()


def _pooled(images: list[np.ndarray]) -> np.ndarray:
    x = np.stack(images).astype(np.float64) / 255.0  # n × 32 × 32 × 3
    n, h, w, c = x.shape
    return x.reshape(n, 8, h // 8, 8, w // 8, c).mean(axis=(2, 4)).reshape(n, -1)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """‖μa − μb‖² + tr(Σa + Σb − 2(ΣaΣb)^½) between Gaussians fitted to the rows of ``a`` and ``b``."""
    from scipy import linalg

    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(sa @ sb)
    root = root.real if np.iscomplexobj(root) else root
    return float(mu @ mu + np.trace(sa + sb - 2 * root))


def write_grid(
    path: Path, columns: dict[str, list[np.ndarray]], texts: list[str], verdicts: dict[str, list[bool]]
) -> None:
    """A PNG: one row per prompt, one column per compile row (FP first), each image titled pass/fail by the
    detector's GenEval verdict for its prompt."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    names = list(columns)
    fig, axes = plt.subplots(
        len(texts), len(names), figsize=(2.2 * len(names), 2.3 * len(texts)), squeeze=False
    )
    for i, text in enumerate(texts):
        for j, name in enumerate(names):
            ax = axes[i][j]
            ax.imshow(columns[name][i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ok = verdicts[name][i]
            ax.set_title(f"{name}: {'pass' if ok else 'fail'}", fontsize=8, color="green" if ok else "red")
        axes[i][0].text(0.0, 1.28, f'"{text}"', transform=axes[i][0].transAxes, fontsize=8, ha="left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _score(
    fam: Any, final: torch.Tensor, fp: torch.Tensor, specs: list[Any], reference: np.ndarray
) -> dict[str, Any]:
    from adatsq.compiler.geneval import evaluate

    images = fam.decode_images(final)
    result = evaluate(images, specs, n_boot=1000, seed=0).to_dict()
    result.pop("correct")
    result["rel_error_vs_fp"] = float((final - fp).pow(2).sum() / fp.pow(2).sum())
    result["frechet_pixels"] = frechet_distance(_pooled(images), reference)
    return result


@dataclasses.dataclass(frozen=True)
class Job:
    """One row: ``name`` (a ROWS ablation or a --method preset) compiled at ``target`` into ``out``."""

    name: str
    key: str
    out: Path
    extra: tuple[str, ...]
    target: float
    #: a compiled folder copied to ``out`` first (the target's shared calibration and search), or None
    seed: Path | None = None
    until: str = "quantize"

    @property
    def shared(self) -> bool:
        """A target's shared job: compiled up to its search for the rows to copy, no row of its own."""
        return self.until != "quantize"


def _plan(args: argparse.Namespace, methods: list[str]) -> tuple[list[Job], dict[str, list[Job]], list[str]]:
    """(first jobs, jobs waiting for a first job's key, the table's row order). Per target: a shared job
    (calibration and AdaTSQ's search, ``--until search``) and, after it, each ablation row in its own copy of
    its folder; each method compiles from scratch in its own folder (its compile_s is that method's whole
    compile) at once."""
    first: list[Job] = []
    after: dict[str, list[Job]] = {}
    order: list[str] = []
    for target in (float(t) for t in args.targets.split(",")):
        shared = args.work / f"target_{target}" / "shared"
        rows = [
            Job(n, f"{n}@{target}", shared.parent / n, tuple(ALL_ROWS[n]), target, seed=shared)
            for n in args.rows.split(",")
            if n
        ]
        if rows:
            prelude = Job("shared", f"shared@{target}", shared, (), target, until="search")
            first.append(prelude)
            after[prelude.key] = rows
        order += [job.key for job in rows]
        for m in methods:
            job = Job(m, f"method:{m}@{target}", args.work / f"method_{m}_{target}", ("--method", m), target)
            first.append(job)
            order.append(job.key)
    return first, after, order


def _cost(job: Job) -> float:
    """A guess at a job's run time in rows (CLQ's block-by-block calibration counts as two; a shared job
    goes first: rows wait for it)."""
    return 10.0 if job.shared else 2.0 if job.name == "clq" else 1.0


_STATE: dict[str, Any] = {}


def _setup(
    checkpoint: Path,
    s: Settings,
    device: str,
    grid_prompts: int,
    threads: int,
    given: tuple[torch.Tensor, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The evaluation inputs, the FP samples and the FP row, once per process; a worker gets the main
    process's FP samples and reference features (``given``) instead of sampling them again."""
    from adatsq.core.models.shapes.scenes import training_pairs

    if threads:
        torch.set_num_threads(threads)
    spec, fam, fp_model, specs, texts, cond, noise = _inputs(checkpoint, s, device)
    start = time.perf_counter()
    if given is None:
        ref_images, _ = training_pairs(EVAL_SEED, 1000)
        reference = _pooled(fam.decode_images(ref_images))
        fp = _sample(fam, spec, fp_model, noise, cond, s.steps)
    else:
        fp, reference = given
    first: dict[str, int] = {}  # the grid's images: the first sample of each category, in category order
    for i, x in enumerate(specs):
        first.setdefault(x.category, i)
    pick = list(first.values())[:grid_prompts]
    fp_row = {
        **_score(fam, fp, fp, specs, reference),
        "bits": "W16A16",
        "seconds": time.perf_counter() - start,
    }
    _STATE.update(
        checkpoint=checkpoint, s=s, device=device, spec=spec, fam=fam, specs=specs, texts=texts, cond=cond,
        noise=noise, reference=reference, fp=fp, pick=pick, fp_row=fp_row, fp_shown=fam.decode_images(fp[pick]),
    )  # fmt: skip
    return _STATE


def _init_worker(
    checkpoint: Path,
    s: Settings,
    device: str,
    grid_prompts: int,
    threads: int,
    given: tuple[torch.Tensor, np.ndarray],
) -> None:
    _setup(checkpoint, s, device, grid_prompts, threads, given)


Done = tuple[str, dict[str, Any] | None, list[np.ndarray], float, str | None]
"""A finished job: (key, row or None for a shared job, the grid's images, compile seconds, error or None)."""


def _run_job_in_worker(job: Job) -> Done:
    return _run_job(job, _STATE)


def _seed_folder(job: Job) -> None:
    """Copy the target's shared folder to the row's (once: a folder of an interrupted run is kept, its
    stage cache resumes it); the writer's lock is not copied."""
    from adatsq.core.layout import OutputLayout

    if job.seed is None or OutputLayout(job.out).meta.exists():
        return
    lock = OutputLayout(job.seed).lock_file
    tmp = job.out.with_name(job.out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(
        job.seed, tmp, ignore=lambda folder, names: [n for n in names if Path(folder) / n == lock]
    )
    tmp.rename(job.out)


def _run_job(job: Job, st: dict[str, Any]) -> Done:
    """:func:`_run_one`, with a failure returned (its message and traceback) instead of raised: one row's
    failure does not stop the others."""
    try:
        return _run_one(job, st)
    except Exception as exc:  # any failure of a row is reported in the table's "failed" and the exit code
        return job.key, None, [], 0.0, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}"


def _run_one(job: Job, st: dict[str, Any]) -> Done:
    """Compile, sample and score one row: (key, row, the grid's images, compile seconds, None); a
    shared job returns (key, None, [], seconds, None) after its compile."""
    from adatsq.core.schedule import load_schedule
    from adatsq.export.onnx_export import load_quantized_model

    fam, s, device = st["fam"], st["s"], st["device"]
    t0 = time.perf_counter()
    _seed_folder(job)
    _compile(job.out, job.target, st["checkpoint"], device, s, list(job.extra), job.until)
    compile_s = time.perf_counter() - t0
    if job.shared:
        return job.key, None, [], compile_s, None
    schedule = load_schedule(job.out / "schedule.json")
    qmodel = load_quantized_model(job.out).to(device)
    final = _sample(fam, st["spec"], qmodel, st["noise"], st["cond"], s.steps, schedule)
    row = {
        **_score(fam, final, st["fp"], st["specs"], st["reference"]),
        "target": job.target,
        "achieved_bits": schedule.achieved_bits,
        "weight_bits": sorted(set(schedule.weight_bits.values())),
        "configs": len(schedule.configs),
        "method": job.name if job.name in METHOD_PRESETS else "adatsq",
        "compile_s": compile_s,
        "weight_bytes": (job.out / "weights.safetensors").stat().st_size,
        "seconds": time.perf_counter() - t0,
    }
    return job.key, row, fam.decode_images(final[st["pick"]]), compile_s, None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=None, help="shapes-flux checkpoint [the packaged one]")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/adatsq-quality"), help="compile output folders")
    ap.add_argument("--quick", action="store_true", help="CPU-sized settings (minutes)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--targets", default="4.0,3.1")
    ap.add_argument(
        "--rows",
        default=None,
        help=f"AdaTSQ, its ablations and the combination rows [all; --quick: all but {', '.join(COMBINATIONS)}]",
    )
    ap.add_argument(
        "--methods",
        default=",".join(m for m in METHOD_PRESETS if m != "adatsq"),
        help="the baselines (--method presets), each at every target (uniform methods: W4A4 at 4.0, W3A3 at 3.1)",
    )
    ap.add_argument("--force", action="store_true")
    ap.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="worker processes for independent rows [on the CPU one per core, at most 2; on a GPU 1]",
    )
    ap.add_argument("--grid", type=Path, default=None, help="PNG of FP vs each row computed in this run")
    ap.add_argument(
        "--grid-prompts", type=int, default=6, help="prompts in --grid (the first of each category)"
    )
    args = ap.parse_args(argv)

    from adatsq.core.models import get_spec

    s = QUICK if args.quick else FULL
    if args.rows is None:
        args.rows = ",".join(ROWS if args.quick else ALL_ROWS)
    unknown_rows = sorted({r for r in args.rows.split(",") if r} - set(ALL_ROWS))
    if unknown_rows:
        raise SystemExit(f"--rows: unknown {unknown_rows}; known: {', '.join(ALL_ROWS)}")
    checkpoint = args.checkpoint or Path(get_spec("shapes-flux").hf_id)
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() and not args.force else {}
    results.update(
        {"command": " ".join(sys.argv), "settings": dataclasses.asdict(s), "checkpoint": str(checkpoint)}
    )
    rows = results.setdefault("rows", {})

    setup = (checkpoint, s, args.device, args.grid_prompts)
    state = _setup(*setup, threads=0)
    if "fp" not in rows:
        rows["fp"] = {**state["fp_row"]}
    shown: dict[str, list[np.ndarray]] = {"fp": state["fp_shown"]}
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHOD_PRESETS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; known: {', '.join(METHOD_PRESETS)}")
    first, after, keys = _plan(args, methods)
    order = ["fp", *keys]
    results.pop("calibration", None)  # an older layout: calibration only
    shared = results.setdefault("shared", {})

    def pending(job: Job) -> bool:
        return any(j.key not in rows for j in after[job.key]) if job.key in after else job.key not in rows

    failed: dict[str, str] = {}  # this run's failures (a rerun retries them)
    results["failed"] = failed

    def save() -> None:
        results["rows"] = {k: rows[k] for k in order if k in rows} | {
            k: v for k, v in rows.items() if k not in order
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")

    def record(
        key: str, row: dict[str, Any] | None, images: list[np.ndarray], seconds: float, error: str | None
    ) -> list[Job]:
        """Keep a finished job's result; returns the jobs it unblocks (a shared job's rows)."""
        if error is not None:
            # a failed shared job fails its rows too
            for k in [key, *(j.key for j in after.get(key, []) if j.key not in rows)]:
                failed[k] = error if k == key else f"its shared job {key} failed"
            print(f"{key}: FAILED: {error.splitlines()[0][:400]}", flush=True)
            save()
            return []
        if row is None:
            shared[key] = {"compile_s": seconds}
            print(f"{key}: {seconds:.0f} s", flush=True)
            return [j for j in after.get(key, []) if j.key not in rows]
        rows[key] = row
        shown[key] = images
        print(f"{key}: total {row['total']['accuracy']:.3f}", flush=True)
        save()
        return []

    todo = sorted((j for j in first if pending(j)), key=_cost, reverse=True)  # shared jobs first
    jobs = args.jobs or (max(1, min(os.cpu_count() or 1, 2)) if args.device == "cpu" else 1)
    if jobs == 1:
        while todo:
            job = todo.pop(0)
            todo[:0] = record(*_run_job(job, state))
    else:  # independent jobs in worker processes, a thread each (the CPU's cores; rows are Python-bound)
        threads = max(1, (os.cpu_count() or 1) // jobs)
        ctx = multiprocessing.get_context("spawn")
        given = (state["fp"], state["reference"])
        with concurrent.futures.ProcessPoolExecutor(
            jobs, ctx, _init_worker, (*setup, threads, given)
        ) as pool:
            # at most `jobs` in flight, so the rows a finished shared job unblocks go before the methods
            # still waiting (a run cut short then holds the table's own rows first)
            running: set[concurrent.futures.Future] = set()
            while todo or running:
                while todo and len(running) < jobs:
                    running.add(pool.submit(_run_job_in_worker, todo.pop(0)))
                finished, running = concurrent.futures.wait(
                    running, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in finished:
                    todo[:0] = record(*future.result())
    save()
    print(table(results))
    if args.grid is not None:
        from adatsq.compiler.geneval import detect, score

        specs, texts, pick = state["specs"], state["texts"], state["pick"]
        verdicts = {k: [score(specs[i], detect(img)) for i, img in zip(pick, v)] for k, v in shown.items()}
        write_grid(args.grid, shown, [texts[i] for i in pick], verdicts)
        print(f"wrote {args.grid} ({', '.join(shown)})")
    if failed:
        print(
            f'{len(failed)} row(s) failed (the JSON\'s "failed"; a rerun retries them): {", ".join(failed)}'
        )
        return 1
    return 0


def table(results: dict[str, Any]) -> str:
    from adatsq.core.models.shapes.scenes import CATEGORIES

    head = (
        "| row | bits | total [95% CI] | "
        + " | ".join(CATEGORIES)
        + " | rel. error vs FP | Fréchet (pixels) | weight bytes | compile s |"
    )
    lines = [head, "|" + "---|" * (len(CATEGORIES) + 7)]
    fp_total = results["rows"]["fp"]["total"]["accuracy"]
    for key, r in results["rows"].items():
        t = r["total"]
        bits = r.get("bits") or f"W{r['weight_bits'][0]}A{r['achieved_bits']:.2f}"
        cats = " | ".join(
            f"{r['per_category'][c]['accuracy']:.2f}" if c in r["per_category"] else "–" for c in CATEGORIES
        )
        ratio = f" ({t['accuracy'] / fp_total:.2f}× FP)" if fp_total > 0 and key != "fp" else ""
        size = f"{r['weight_bytes']:,}" if "weight_bytes" in r else "–"
        took = f"{r['compile_s']:.1f}" if "compile_s" in r else "–"
        lines.append(
            f"| {key} | {bits} | {t['accuracy']:.3f} [{t['lo']:.3f}, {t['hi']:.3f}]{ratio} | {cats} | "
            f"{r['rel_error_vs_fp']:.4f} | {r['frechet_pixels']:.4f} | {size} | {took} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

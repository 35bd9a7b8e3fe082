"""The compile pipeline: one ordered list of stages (DESIGN.md), readable on one screen.

Each stage has a key of its inputs and the files it produces. ``run_pipeline`` skips a stage whose recorded
key matches and whose outputs exist and can be read (an interrupted compile resumes; a new ``--target``
re-runs from the search on; a damaged cache entry is recomputed) and stops after ``--until``.

Before anything is created, everything that can be checked is (options, model name and ``--model-path`` by
loading the model, the output directory); the whole compile then holds the directory's lock, and a compile
that fails on bad input in a directory it created removes it again.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adatsq.compiler.context import CompileContext
from adatsq.compiler.settings import STAGE_NAMES
from adatsq.compiler.stages.build import build_key, build_outputs, run_build
from adatsq.compiler.stages.calibrate import calibrate_key, run_calibrate
from adatsq.compiler.stages.export import export_key, export_outputs, run_export
from adatsq.compiler.stages.load import load_key, run_load
from adatsq.compiler.stages.package import package_key, package_outputs, run_package
from adatsq.compiler.stages.quantize import quantize_key, run_quantize
from adatsq.compiler.stages.search import run_search, search_key
from adatsq.core.errors import InputError
from adatsq.core.hashing import stable_hash

__all__ = ["STAGES", "Stage", "run_pipeline"]


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    key: Callable[[CompileContext], dict[str, Any]]
    run: Callable[[CompileContext], None]
    outputs: Callable[[CompileContext], list[Path]]
    #: False when a kept output (a cache entry) cannot be read, so the stage must run again.
    readable: Callable[[CompileContext], bool] = lambda _ctx: True


STAGES: tuple[Stage, ...] = (
    Stage("load", load_key, run_load, lambda c: [c.out.root / "compile_config.json"]),
    Stage(
        "calibrate",
        calibrate_key,
        run_calibrate,
        lambda c: [c.out.cache / "calibration.pt"],
        lambda c: c.cached_calibration() is not None,
    ),
    Stage("search", search_key, run_search, lambda c: [c.out.schedule]),
    Stage(
        "quantize",
        quantize_key,
        run_quantize,
        lambda c: [c.out.weights, c.out.cache / "gptq_errors.json"],
        lambda c: c.read_cache("gptq_errors.json") is not None,
    ),
    Stage("export", export_key, run_export, export_outputs),
    Stage("build", build_key, run_build, build_outputs),
    Stage("package", package_key, run_package, package_outputs),
)
assert tuple(s.name for s in STAGES) == STAGE_NAMES


def run_pipeline(ctx: CompileContext) -> dict[str, str]:
    """Run the stages up to ``--until``; returns stage → "ran" | "cached"."""
    ctx.out.check(ctx.spec.name)
    _ = ctx.model  # loading it checks the model name and --model-path
    created = ctx.out.create()
    lock = ctx.out.lock()
    try:
        ctx.out.claim(ctx.spec.name)
        return _run_stages(ctx)
    except InputError:
        # bad input into a directory this compile created, before any stage finished: leave nothing behind
        # (once a stage has finished, its results are kept, as after any interruption)
        if created is not None and not ctx.out.has_finished_stages():
            shutil.rmtree(created, ignore_errors=True)
        raise
    finally:
        lock.release()


def _run_stages(ctx: CompileContext) -> dict[str, str]:
    status: dict[str, str] = {}
    stop = STAGE_NAMES.index(ctx.config.until)
    for stage in STAGES:
        if STAGE_NAMES.index(stage.name) > stop:
            break
        key = stable_hash(stage.key(ctx))
        done = (
            ctx.out.stage_key(stage.name) == key
            and all(p.exists() for p in stage.outputs(ctx))
            and stage.readable(ctx)
        )
        if done:
            status[stage.name] = "cached"
            continue
        ctx.out.forget_stage(stage.name)
        start = time.perf_counter()
        stage.run(ctx)
        ctx.timings[stage.name] = time.perf_counter() - start
        ctx.out.record_stage(stage.name, key)
        status[stage.name] = "ran"
    return status

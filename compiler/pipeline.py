"""The compile pipeline: one ordered list of stages (DESIGN.md), readable on one screen.

Each stage has a key of its inputs and the files it produces. ``run_pipeline`` skips a stage whose recorded
key matches and whose outputs exist and can be read (an interrupted compile resumes; a new ``--target``
re-runs from the search on; a damaged cache entry is recomputed) and stops after ``--until``.

Before anything is created, everything that can be checked is (options, model name and ``--model-path`` by
loading the model, the output directory); the whole compile then holds the directory's lock, and a compile
that fails on bad input in a directory it created removes it again.

Data parallelism (``torchrun --nproc-per-node N adatsq-compile ...``, :mod:`adatsq.calib.distributed`): every
rank runs this same pipeline on the same output directory. Rank 0 alone checks, creates and locks the
directory, decides which stages are cached (its decision is broadcast) and records stage keys; the other ranks
print nothing. A stage marked ``collective`` runs on every rank (load: every rank holds the model;
calibrate: each computes its shard of the samples, and every rank ends with the whole calibration); its
``run`` must write its outputs on rank 0 only. The other stages run on rank 0 alone: the other ranks leave
after the last collective stage up to ``--until``, at a barrier rank 0 meets right after that stage, so no
rank waits on a collective while rank 0 searches or exports.

Quantize is collective too: each rank replays its shard of the samples for the Hessians, which are summed
across ranks (``all_reduce_sum_``); rank 0 runs GPTQ and writes. The other ranks wait for rank 0's search at
the stage decision's broadcast (the process group's timeout is generous: ``distributed.DEFAULT_TIMEOUT_S``).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adatsq.calib import distributed
from adatsq.compiler import prompts
from adatsq.compiler.context import CompileContext
from adatsq.compiler.settings import STAGE_NAMES
from adatsq.compiler.stages.build import build_key, build_outputs, run_build
from adatsq.compiler.stages.calibrate import calibrate_key, run_calibrate
from adatsq.compiler.stages.export import export_key, export_outputs, run_export
from adatsq.compiler.stages.load import load_key, run_load
from adatsq.compiler.stages.package import package_key, package_outputs, run_package
from adatsq.compiler.stages.quantize import quantize_key, run_quantize
from adatsq.compiler.stages.search import run_search, search_key
from adatsq.core.errors import CompileError, InputError
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
    #: under torch.distributed: True runs the stage on every rank (writing on rank 0 only), False on rank 0
    collective: bool = False


def _run_load(ctx: CompileContext) -> None:
    if distributed.is_main():
        run_load(ctx)
    # the other ranks hold the model already (``_follow``); rank 0 writes the record


STAGES: tuple[Stage, ...] = (
    Stage("load", load_key, _run_load, lambda c: [c.out.root / "compile_config.json"], collective=True),
    Stage(
        "calibrate",
        calibrate_key,
        run_calibrate,
        lambda c: [c.out.cache / "calibration.pt"],
        lambda c: c.cached_calibration() is not None,
        collective=True,
    ),
    Stage("search", search_key, run_search, lambda c: [c.out.schedule]),
    Stage(
        "quantize",
        quantize_key,
        run_quantize,
        lambda c: [c.out.weights, c.out.cache / "gptq_errors.json"],
        lambda c: c.read_cache("gptq_errors.json") is not None,
        collective=True,
    ),
    Stage("export", export_key, run_export, export_outputs),
    Stage("build", build_key, run_build, build_outputs),
    Stage("package", package_key, run_package, package_outputs),
)
assert tuple(s.name for s in STAGES) == STAGE_NAMES


def run_pipeline(ctx: CompileContext) -> dict[str, str]:
    """Run the stages up to ``--until``; returns stage → "ran" | "cached" (on a rank other than 0 under
    torch.distributed: the collective stages only)."""
    joined = distributed.init_from_env(ctx.device)
    succeeded = False
    try:
        if distributed.world_size() > 1:
            _place_on_local_device(ctx)
            if not distributed.is_main():
                ctx.console.quiet = True  # rank 0 reports
                status = _follow(ctx)
                succeeded = True
                return status
        status = _lead(ctx)
        succeeded = True
        return status
    finally:
        if joined:
            distributed.destroy(succeeded)


def _lead(ctx: CompileContext) -> dict[str, str]:
    """Rank 0 (or the only process): check, create and lock the directory, then run the stages."""
    announced = False
    created = lock = None
    try:
        ctx.out.check(ctx.spec.name)
        prompts.prepare(ctx)  # real prompts: the text encoders come and go before the transformer
        _ = ctx.model  # loading it checks the model name and --model-path
        created = ctx.out.create()
        lock = ctx.out.lock()
        ctx.out.claim(ctx.spec.name)
        prompts.save(ctx)  # before the other ranks are told the directory is ready: they read it
        _announce(None)
        announced = True
        return _run_stages(ctx)
    except BaseException as exc:
        if not announced and isinstance(exc, Exception):
            # the other ranks wait for the directory: tell them why it will not come (an interrupt reaches
            # them too: torchrun forwards it)
            _announce(str(exc) if isinstance(exc, InputError) else "rank 0 failed before the first stage")
        # bad input into a directory this compile created, before any stage finished: leave nothing behind
        # (once a stage has finished, its results are kept, as after any interruption)
        mine = lock is not None and created is not None  # never another compile's fresh directory
        if isinstance(exc, InputError) and mine and not ctx.out.has_finished_stages():
            shutil.rmtree(created, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            lock.release()


def _follow(ctx: CompileContext) -> dict[str, str]:
    """A rank other than 0: load the model, wait for rank 0's directory, run the collective stages (real
    prompts: their embeddings are read from the cache rank 0 wrote before it announced the directory)."""
    _ = ctx.model
    failure = distributed.broadcast_object(None)
    if failure is not None:
        raise CompileError(failure)
    return _run_stages(ctx)


def _announce(failure: str | None) -> None:
    """Rank 0 tells the other ranks whether the directory is ready (they wait for it before any stage)."""
    if distributed.world_size() > 1:
        distributed.broadcast_object(failure)


def _place_on_local_device(ctx: CompileContext) -> None:
    """Each rank on its own GPU (``LOCAL_RANK``, set current by ``init_from_env``); the CPU stays the CPU."""
    if ctx.device.type == "cuda":
        import torch

        ctx.device = torch.device("cuda", torch.cuda.current_device())


def _run_stages(ctx: CompileContext) -> dict[str, str]:
    status: dict[str, str] = {}
    stop = STAGE_NAMES.index(ctx.config.until)
    todo = [s for s in STAGES if STAGE_NAMES.index(s.name) <= stop]
    world = distributed.world_size()
    main = distributed.is_main()
    # with several ranks, all take part up to the last collective stage; then the others leave
    last_shared = max((i for i, s in enumerate(todo) if s.collective), default=-1) if world > 1 else -1
    for i, stage in enumerate(todo):
        if i > last_shared and not main:
            break
        done = None
        if main:
            key = stable_hash(stage.key(ctx))
            done = (
                ctx.out.stage_key(stage.name) == key
                and all(p.exists() for p in stage.outputs(ctx))
                and stage.readable(ctx)
            )
        if i <= last_shared:
            done = distributed.broadcast_object(done)  # rank 0 decides for all
        if done:
            status[stage.name] = "cached"
        elif main or stage.collective:
            if main:
                ctx.out.forget_stage(stage.name)
            start = time.perf_counter()
            stage.run(ctx)
            ctx.timings[stage.name] = time.perf_counter() - start
            if main:
                ctx.out.record_stage(stage.name, key)
            status[stage.name] = "ran"
        if i == last_shared:
            distributed.barrier()  # the other ranks leave here; rank 0 goes on alone
    return status

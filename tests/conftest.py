"""Shared session fixtures: tiny models compiled ONCE per test session.

``compiled_tiny_flux`` / ``compiled_tiny_wan`` / ``compiled_tiny_zimage`` each return the output directory
(a ``Path``) of ``adatsq.compile(model, target, until="quantize", steps=4, calib_samples=2,
heldout_samples=2)`` followed by the export stage (``run_export``), so ``onnx/config_NN.onnx``,
``onnx/io.json`` and ``onnx/weights.safetensors`` exist. Each schedule has two fixed configurations (all-A4 at
even steps, all-A8 at odd ones: ``_two_configurations``), whatever the search chose. Z-Image is exported too (tensor-input wrapper, real RoPE). Treat the directories as read-only; copy them to mutate.
Fixtures are lazy: a test session that does not use one does not compile it (tiny-wan takes ~1–2 min).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

TINY_TARGETS = {"tiny-flux": 5.0, "tiny-wan": 4.0, "tiny-zimage": 4.0}


def compile_tiny(root: Path, model: str, export: bool = True) -> Path:
    import adatsq
    from adatsq.compiler.context import CompileContext
    from adatsq.compiler.settings import CompileConfig

    out = root / model
    options = {"steps": 4, "calib_samples": 2, "heldout_samples": 2}
    adatsq.compile(model=model, target=TINY_TARGETS[model], out=str(out), until="search", **options)
    _two_configurations(out / "schedule.json")
    adatsq.compile(model=model, target=TINY_TARGETS[model], out=str(out), until="quantize", **options)
    if export:
        from adatsq.compiler.stages.export import run_export

        cfg = json.loads((out / "compile_config.json").read_text())
        ctx = CompileContext(CompileConfig(**cfg))
        with contextlib.redirect_stdout(None):
            run_export(ctx)
    return out


def _two_configurations(path: Path) -> None:
    """Give the searched schedule two fixed configurations, all-A4 at even steps and all-A8 at odd ones.

    Which path the search selects rests on end-to-end metrics a fraction of a percent apart on these random
    tiny models, so one tie flip on another machine could leave a single configuration; the export and
    runtime tests need several (the search has its own tests). The search stage's key is unchanged, so the
    rerun up to quantize keeps this file and quantizes for it."""
    import dataclasses

    from adatsq.core.schedule import load_schedule, save_schedule

    s = load_schedule(path)
    configs = ((4,) * len(s.act_layers), (8,) * len(s.act_layers))
    step_configs = tuple(i % 2 for i in range(s.steps))
    fixed = dataclasses.replace(s, configs=configs, step_configs=step_configs)
    save_schedule(path, dataclasses.replace(fixed, achieved_bits=fixed.average_bits()))


@pytest.fixture(scope="session")
def compiled_tiny_flux(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_tiny(tmp_path_factory.mktemp("compiled"), "tiny-flux")


@pytest.fixture(scope="session")
def compiled_tiny_wan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_tiny(tmp_path_factory.mktemp("compiled"), "tiny-wan")


@pytest.fixture(scope="session")
def compiled_tiny_zimage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_tiny(tmp_path_factory.mktemp("compiled"), "tiny-zimage")

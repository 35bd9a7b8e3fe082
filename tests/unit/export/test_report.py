"""Report: figures exist, are real images, and report.md states the schedule's bits and engine count."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_package import compiled_dir, make_ctx

from adatsq.compiler.stages.package import per_step_error
from adatsq.export.report import REPORT_FIGURES, write_report


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rep") / "out"
    shutil.copytree(compiled_dir(), out)
    ctx = make_ctx(out)
    data = ctx.calibration
    write_report(
        ctx.out,
        ctx.schedule,
        fisher=data.fisher.double().numpy(),
        fisher_layers=data.layers,
        timesteps=[float(t) for t in data.timesteps],
        step_errors=per_step_error(ctx),
    )
    return out


def test_figures_are_images(report_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.image as mpimg

    for name in (*REPORT_FIGURES, "gptq_errors.png"):
        path = report_dir / "report" / name
        assert path.stat().st_size > 10_000, name
        img = mpimg.imread(path)
        assert img.shape[0] > 200
        assert img.shape[1] > 300
        assert img.std() > 0.05, f"{name} looks blank"


def test_report_md_matches_schedule(report_dir: Path) -> None:
    s = json.loads((report_dir / "schedule.json").read_text())
    md = (report_dir / "report" / "report.md").read_text()
    assert f"**{s['achieved_bits']:.4f}**" in md
    assert f"engines (distinct configurations): **{len(s['configs'])}**" in md
    assert str(list(s["step_configs"])) in md
    for name in REPORT_FIGURES:
        assert f"({name})" in md


def test_step_errors_finite(report_dir: Path) -> None:
    rows = json.loads((report_dir / "report" / "step_error.json").read_text())
    s = json.loads((report_dir / "schedule.json").read_text())
    assert [r["config"] for r in rows] == s["step_configs"]
    assert all(0 < r["relative_mse"] < 10 for r in rows)


def test_random_weights_are_stated_as_not_a_real_model(report_dir: Path, tmp_path: Path) -> None:
    """--random-weights reaches report.md (and, through the schedule, manifest.json's real_model: false)."""
    ctx = make_ctx(report_dir)
    data = ctx.calibration
    md = (report_dir / "report" / "report.md").read_text()
    assert "not a real model" not in md
    out = tmp_path / "rw"
    shutil.copytree(report_dir, out)
    fake = make_ctx(out)
    write_report(
        fake.out,
        ctx.schedule.replace(random_weights=True),
        fisher=data.fisher.double().numpy(),
        fisher_layers=data.layers,
        timesteps=[float(t) for t in data.timesteps],
    )
    assert "**not a real model**: random weights" in (out / "report" / "report.md").read_text()

"""--metric geneval on shapes-flux (an untrained checkpoint: the scores mean nothing, the plumbing is what is
tested): the eval prompts are encoded with the others before the transformer loads, the metric is
−accuracy + a tie-break, and the search records it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers.shapes import untrained_checkpoint

from adatsq.compiler.cli import main
from adatsq.compiler.context import CompileContext
from adatsq.compiler.geneval.metric import TIE_BREAK, geneval_prompts
from adatsq.compiler.prompts import needed_prompts
from adatsq.compiler.settings import CompileConfig
from adatsq.core.errors import CompileError
from adatsq.core.models.shapes.family import CALIBRATION_PROMPTS
from adatsq.core.models.shapes.scenes import CATEGORIES
from adatsq.core.schedule import load_schedule


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return untrained_checkpoint(tmp_path_factory.mktemp("shapes"), num_layers=1, num_single_layers=1)


def _config(out: Path, checkpoint: Path, **kw: object) -> CompileConfig:
    base = {
        "model": "shapes-flux",
        "target": 3.5,
        "out": str(out),
        "model_path": str(checkpoint),
        "device": "cpu",
    }
    return CompileConfig(**{**base, "metric": "geneval", "heldout_samples": 1, "calib_samples": 2, **kw})


def test_geneval_prompts_are_encoded_with_the_calibration_ones(tmp_path: Path, checkpoint: Path) -> None:
    ctx = CompileContext(_config(tmp_path / "o", checkpoint))
    evals = geneval_prompts(ctx)
    assert [s.category for s, _ in evals] == list(CATEGORIES)  # one per category at --heldout-samples 1
    needed = needed_prompts(ctx)
    assert needed[:2] == list(CALIBRATION_PROMPTS[:2])  # the family's defaults calibrate
    assert {t for _, t in evals} <= set(needed)
    assert not {t for _, t in evals} & set(CALIBRATION_PROMPTS)  # eval sentences are not training ones


def test_search_selects_by_geneval(tmp_path: Path, checkpoint: Path) -> None:
    out = tmp_path / "out"
    args = ["shapes-flux", "-o", str(out), "--target", "3.5", "--steps", "2", "--calib-samples", "2"]
    args += [
        "--heldout-samples",
        "1",
        "--model-path",
        str(checkpoint),
        "--metric",
        "geneval",
        "--until",
        "search",
    ]
    result = CliRunner().invoke(main, [*args, "--device", "cpu", "--candidates", "3"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    schedule = load_schedule(out / "schedule.json")
    assert schedule.search["metric"] == "geneval"
    scored = [p.metric for p in schedule.pareto if p.metric is not None]
    assert scored
    for m in scored:  # −accuracy (a multiple of 1/6 here) plus a tie-break below one accuracy step
        accuracy = round(-m * 6) / 6
        assert 0.0 <= accuracy <= 1.0 and abs(-m - accuracy) <= TIE_BREAK * 10
    selected = [p for p in schedule.pareto if p.selected]
    assert len(selected) == 1 and selected[0].metric == min(scored)
    assert schedule.calibration.prompts == tuple(CALIBRATION_PROMPTS[:2])


def test_geneval_needs_shape_scenes() -> None:
    with pytest.raises(CompileError, match="--metric geneval scores rendered-shape scenes"):
        CompileContext(CompileConfig(model="tiny-flux", target=3.1, out="x", metric="geneval"))


def test_decode_images_is_the_latent() -> None:
    from adatsq.core.models import family_of, get_spec

    fam = family_of(get_spec("shapes-flux"))
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).reshape(1, 1, 2, 2).expand(1, 3, 2, 2)
    (img,) = fam.decode_images(x)
    assert img.shape == (2, 2, 3) and img.dtype.name == "uint8"
    assert img[..., 0].tolist() == [[0, 128], [255, 255]]  # clamped to [-1, 1]; 0 → 127.5 → 128 (half even)

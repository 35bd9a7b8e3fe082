"""The calibrate stage checkpoints every finished sample: a compile killed during calibration resumes from the
samples it finished, and ends with the same calibration.pt as an uninterrupted compile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import adatsq.compiler.stages.calibrate as stage
from adatsq.compiler.cli import main

ARGS = ["--target", "3.1", "--until", "calibrate", "--steps", "2", "--calib-samples", "2", "--device", "cpu"]


REAL_CALIBRATE = stage.calibrate


class Interrupted(Exception):
    pass


def _compile(out: Path) -> None:
    result = CliRunner().invoke(main, ["tiny-flux", "-o", str(out), *ARGS])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output


def _watch(monkeypatch: pytest.MonkeyPatch, on_sample) -> None:
    """Run the stage's calibrate with ``on_sample`` (the stage passes none)."""

    def calibrate(*args, **kwargs):
        return REAL_CALIBRATE(*args, **kwargs, on_sample=on_sample)

    monkeypatch.setattr(stage, "calibrate", calibrate)


def test_interrupted_calibrate_stage_resumes_from_its_finished_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def stop_after_sample_0(n: int, loaded: bool) -> None:
        if n == 0:
            raise Interrupted

    out = tmp_path / "out"
    samples = out / "cache" / stage.SAMPLES_FOLDER
    _watch(monkeypatch, stop_after_sample_0)
    with pytest.raises(Interrupted):
        _compile(out)
    assert [p.name for p in samples.iterdir()] == ["sample_000.pt"]
    assert not (out / "cache" / "calibration.pt").exists()
    stages = json.loads((out / ".adatsq" / "stages.json").read_text())
    assert "calibrate" not in stages
    saved_key = torch.load(samples / "sample_000.pt", weights_only=True)["key"]

    seen: list[tuple[int, bool]] = []
    _watch(monkeypatch, lambda n, loaded: seen.append((n, loaded)))
    _compile(out)
    assert seen == [(0, True), (1, False)]  # sample 0 loaded, not recomputed
    assert not samples.exists()  # removed once calibration.pt is written
    stages = json.loads((out / ".adatsq" / "stages.json").read_text())
    assert stages["calibrate"] == saved_key  # the checkpoints are keyed by the stage key

    seen.clear()
    reference = tmp_path / "reference"
    _compile(reference)
    assert seen == [(0, False), (1, False)]
    got = torch.load(out / "cache" / "calibration.pt", weights_only=False)
    ref = torch.load(reference / "cache" / "calibration.pt", weights_only=False)
    assert got.keys() == ref.keys()
    for name in ("timesteps", "latents", "outputs", "noise", "final", "fisher"):
        assert torch.equal(got[name], ref[name]), name
    assert got["layers"] == ref["layers"] and got["provenance"] == ref["provenance"]


def test_checkpoints_of_another_calibration_are_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint left by a calibration with other inputs (here: another seed) is recomputed."""
    out = tmp_path / "out"
    samples = out / "cache" / stage.SAMPLES_FOLDER

    def stop(n: int, loaded: bool) -> None:
        raise Interrupted

    _watch(monkeypatch, stop)
    result = CliRunner().invoke(main, ["tiny-flux", "-o", str(out), *ARGS, "--seed", "1"])
    assert isinstance(result.exception, Interrupted)
    assert (samples / "sample_000.pt").exists()
    seen: list[tuple[int, bool]] = []
    _watch(monkeypatch, lambda n, loaded: seen.append((n, loaded)))
    _compile(out)
    assert seen == [(0, False), (1, False)]

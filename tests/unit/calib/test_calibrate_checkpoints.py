"""Per-sample checkpoints of the calibration: an interrupted calibration resumes from its finished samples and
ends with the same CalibrationData as an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers.calibration import tiny_inputs

from adatsq.calib.calibrate import CalibrationData, SampleCheckpoints, calibrate

STEPS = 3
SAMPLES = 3


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def tiny_flux():
    return tiny_inputs(SAMPLES)


def _run(tiny_flux, checkpoints=None, on_sample=None, progress=None) -> CalibrationData:
    spec, fam, model, cond, noise = tiny_flux
    inv = fam.inventory(model)
    return calibrate(fam, spec, model, inv, cond, noise, STEPS, {"seed": 0}, progress, checkpoints, on_sample)


@pytest.fixture(scope="module")
def reference(tiny_flux) -> CalibrationData:
    return _run(tiny_flux)


def _assert_equal(a: CalibrationData, b: CalibrationData) -> None:
    for name in ("timesteps", "latents", "outputs", "noise", "final", "fisher"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.layers == b.layers and a.provenance == b.provenance
    assert all(torch.equal(a.cond[k], b.cond[k]) for k in a.cond.tensors)


def test_shapes_are_those_of_the_batched_calibration(reference: CalibrationData, tiny_flux) -> None:
    noise = tiny_flux[4]
    assert reference.latents.shape == (STEPS, SAMPLES, *noise.shape[1:]) == reference.outputs.shape
    assert reference.final.shape == noise.shape and reference.fisher.shape == (STEPS, len(reference.layers))
    assert torch.equal(reference.latents[0], noise)
    assert reference.fisher.dtype == torch.float32 and (reference.fisher > 0).all()


def test_interrupted_calibration_resumes_from_finished_samples(
    tmp_path: Path, tiny_flux, reference: CalibrationData
) -> None:
    store = SampleCheckpoints(tmp_path / "samples", "key-1")
    ticks: list[int] = []

    def stop_after_sample_1(n: int, loaded: bool) -> None:
        if n == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        _run(tiny_flux, store, stop_after_sample_1, ticks.append)
    assert sorted(p.name for p in store.folder.iterdir()) == ["sample_000.pt", "sample_001.pt"]
    assert sum(ticks) == 2 * 2 * STEPS  # two samples: trajectory and Fisher, one tick per step each

    seen: list[tuple[int, bool]] = []
    ticks.clear()
    resumed = _run(tiny_flux, store, lambda n, loaded: seen.append((n, loaded)), ticks.append)
    assert seen == [(0, True), (1, True), (2, False)]  # 0 and 1 loaded, not recomputed
    assert sum(ticks) == 2 * SAMPLES * STEPS  # the same total whether loaded or computed
    _assert_equal(resumed, reference)

    seen.clear()
    again = _run(tiny_flux, store, lambda n, loaded: seen.append((n, loaded)))
    assert seen == [(0, True), (1, True), (2, True)]
    _assert_equal(again, reference)
    store.clear()
    assert not store.folder.exists()


def test_checkpoints_of_another_key_or_unreadable_are_recomputed(
    tmp_path: Path, tiny_flux, reference: CalibrationData
) -> None:
    folder = tmp_path / "samples"
    _run(tiny_flux, SampleCheckpoints(folder, "old-key"))
    SampleCheckpoints(folder, "old-key").path(2).write_bytes(b"truncated")
    noise = tiny_flux[4]
    store = SampleCheckpoints(folder, "new-key")
    assert store.load(0, noise[0:1]) is None  # another key
    assert SampleCheckpoints(folder, "old-key").load(0, noise[1:2]) is None  # another sample's noise
    assert SampleCheckpoints(folder, "old-key").load(2, noise[2:3]) is None  # unreadable
    seen: list[tuple[int, bool]] = []
    result = _run(tiny_flux, store, lambda n, loaded: seen.append((n, loaded)))
    assert seen == [(0, False), (1, False), (2, False)]
    _assert_equal(result, reference)
    assert all(store.load(n, noise[n : n + 1]) is not None for n in range(SAMPLES))  # overwritten

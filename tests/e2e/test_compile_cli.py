"""adatsq-compile end to end on tiny models (CPU): stages, caching, determinism, bad inputs, a damaged cache,
file modes. Every compile of this module runs under umask 022."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import adatsq
from adatsq.compiler.cli import main
from adatsq.core.models import get_spec, load_transformer
from adatsq.core.schedule import load_schedule

pytestmark = pytest.mark.slow
FAST = ["--steps", "4", "--calib-samples", "2", "--candidates", "4"]


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(scope="module", autouse=True)
def _umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture(scope="module")
def zimage_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zimage")
    code, output = _run("tiny-zimage", "--target", "3.5", "-o", str(out), "--until", "quantize", *FAST)
    assert code == 0, output
    return out


def test_compile_writes_schedule_weights_and_summary(zimage_dir: Path) -> None:
    s = load_schedule(zimage_dir / "schedule.json")
    assert s.model == "tiny-zimage" and s.steps == 4 and s.target_bits == 3.5
    assert s.achieved_bits <= 3.5 + 1e-9 and s.achieved_bits == pytest.approx(s.average_bits())
    assert (zimage_dir / "weights.safetensors").stat().st_size > 0
    assert (zimage_dir / "cache" / "calibration.pt").exists()
    stages = json.loads((zimage_dir / ".adatsq" / "stages.json").read_text())
    assert set(stages) == {"load", "calibrate", "search", "quantize"}


def test_new_target_reuses_calibration(zimage_dir: Path) -> None:
    calib = zimage_dir / "cache" / "calibration.pt"
    before = calib.stat().st_mtime_ns
    code, output = _run("tiny-zimage", "--target", "4.5", "-o", str(zimage_dir), "--until", "search", *FAST)
    assert code == 0, output
    assert calib.stat().st_mtime_ns == before
    assert "calibrate (cached)" in output.replace("\n", " ") or "calibrate" not in output.split("stages")[0]
    s = load_schedule(zimage_dir / "schedule.json")
    assert s.target_bits == 4.5 and s.achieved_bits <= 4.5
    # and back: the schedule for 3.5 is reproduced from the cache, byte for byte
    code, _ = _run("tiny-zimage", "--target", "3.5", "-o", str(zimage_dir), "--until", "search", *FAST)
    assert code == 0 and load_schedule(zimage_dir / "schedule.json").target_bits == 3.5


@pytest.mark.parametrize("target", [3.0, 3.2, 4.0, 6.0, 8.0])
def test_achieved_never_exceeds_target(zimage_dir: Path, target: float) -> None:
    code, output = _run(
        "tiny-zimage", "--target", str(target), "-o", str(zimage_dir), "--until", "search", *FAST
    )
    assert code == 0, output
    s = load_schedule(zimage_dir / "schedule.json")
    assert s.achieved_bits <= target + 1e-9
    assert all(p.average_bits <= target + 1e-9 for p in s.pareto if p.selected)


@pytest.mark.parametrize("cap", [1, 2])
def test_max_engines_respected(zimage_dir: Path, cap: int) -> None:
    code, output = _run(
        "tiny-zimage",
        "--target",
        "5.0",
        "-o",
        str(zimage_dir),
        "--until",
        "search",
        "--max-engines",
        str(cap),
        *FAST,
    )
    assert code == 0, output
    assert len(load_schedule(zimage_dir / "schedule.json").configs) <= cap


def test_same_seed_gives_byte_identical_schedule(tmp_path: Path) -> None:
    for name in ("a", "b"):
        code, output = _run(
            "tiny-wan", "--target", "4.0", "-o", str(tmp_path / name), "--until", "search", *FAST
        )
        assert code == 0, output
    assert (tmp_path / "a" / "schedule.json").read_bytes() == (tmp_path / "b" / "schedule.json").read_bytes()


def test_model_path_and_python_api(tmp_path: Path) -> None:
    spec = get_spec("tiny-wan")
    model = load_transformer(spec, seed=7)
    model.save_pretrained(tmp_path / "ckpt" / "transformer")
    code, output = _run(
        "tiny-wan",
        "--target",
        "4.0",
        "-o",
        str(tmp_path / "cli"),
        "--model-path",
        str(tmp_path / "ckpt"),
        "--until",
        "quantize",  # through the stage that records the loaded model's config (its path included)
        *FAST,
    )
    assert code == 0, output
    schedule = adatsq.compile(
        model,
        model="tiny-wan",
        target=4.0,
        out=str(tmp_path / "api"),
        until="search",
        steps=4,
        calib_samples=2,
        candidates=4,
    )
    from_disk = load_schedule(tmp_path / "cli" / "schedule.json")
    assert schedule.model_fingerprint == from_disk.model_fingerprint  # the same weights, loaded from disk
    assert schedule.step_configs == from_disk.step_configs and schedule.configs == from_disk.configs
    with pytest.raises(ValueError, match="expects a WanTransformer3DModel"):
        adatsq.compile(torch.nn.Linear(2, 2), model="tiny-wan", target=4.0, out=str(tmp_path / "bad"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sdxl", "--target", "3.1"], "unknown model 'sdxl'; known models: flux-dev"),
        (["tiny-wan", "--target", "2.5"], "--target 2.5 is outside [3, 16]"),
        (["tiny-wan", "--target", "17"], "--target 17.0 is outside [3, 16]"),
        (["tiny-wan", "--target", "4", "--metric", "clip"], "--metric clip needs a real model"),
    ],
)
def test_bad_input_exit_2_nothing_written(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "out"
    code, output = _run(*args, "-o", str(out))
    assert code == 2
    assert message in " ".join(output.split())
    assert not out.exists()


def test_unwritable_output_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, output = _run("tiny-wan", "--target", "4", "-o", str(blocker / "out"), *FAST)
    assert code == 2 and "is not writable" in output


def test_other_models_artifacts_refused(zimage_dir: Path) -> None:
    before = sorted(p.name for p in zimage_dir.iterdir())
    code, output = _run("tiny-wan", "--target", "4", "-o", str(zimage_dir), *FAST)
    assert code == 2 and "holds artifacts of model 'tiny-zimage', not 'tiny-wan'" in " ".join(output.split())
    assert sorted(p.name for p in zimage_dir.iterdir()) == before


def test_corrupt_schedule_is_reported(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, output = _run("tiny-wan", "--target", "4", "-o", str(out), "--until", "search", *FAST)
    assert code == 0, output
    (out / "schedule.json").write_text('{"format_version": 1, "model": ')
    code, output = _run("tiny-wan", "--target", "4", "-o", str(out), "--until", "quantize", *FAST)
    assert code == 2 and "schedule.json: not valid JSON" in " ".join(output.split())
    assert not (out / "weights.safetensors").exists()


def test_damaged_cache_is_recomputed(zimage_dir: Path, tmp_path: Path) -> None:
    """Every cache entry cut short (a killed write, a full disk): a compile for another target warns once per
    file and recomputes it (the calibration too, although its key matches), instead of a torch traceback."""
    out = tmp_path / "out"
    shutil.copytree(zimage_dir, out, symlinks=True)
    damaged = sorted((out / "cache").iterdir())
    assert {p.name for p in damaged} >= {"calibration.pt", "search.pt", "gptq_errors.json"}
    for p in damaged:
        os.truncate(p, p.stat().st_size // 2)
    code, output = _run("tiny-zimage", "--target", "3.2", "-o", str(out), "--until", "quantize", *FAST)
    assert code == 0, output
    text = " ".join(output.split())
    for p in damaged:
        assert f"warning: cache entry {p} cannot be read" in text, p.name
        assert text.count(f"cache entry {p} ") == 1
    assert "calibrate (ran" in text and "quantize (ran" in text
    torch.load(out / "cache" / "calibration.pt", weights_only=False)  # rewritten whole
    json.loads((out / "cache" / "gptq_errors.json").read_text())
    assert load_schedule(out / "schedule.json").target_bits == 3.2


def test_outputs_follow_the_umask(zimage_dir: Path, tmp_path: Path) -> None:
    """Under umask 022 every file of a packaged output directory is 0644 (the trtexec scripts 0755) and every
    folder 0755: a Triton server or a colleague running as another user can read the engines."""
    out = tmp_path / "out"
    shutil.copytree(zimage_dir, out, symlinks=True)
    code, output = _run("tiny-zimage", "--target", "3.5", "-o", str(out), *FAST)  # through package
    assert code == 0, output
    assert (out / "manifest.json").is_file()
    wrong = []
    for p in out.rglob("*"):  # (``out`` itself is a copy of pytest's 0700 tmp folder)
        mode = stat.S_IMODE(p.lstat().st_mode)
        if p.is_symlink():
            continue
        expected = 0o755 if p.is_dir() or p.suffix == ".sh" else 0o644
        if mode != expected:
            wrong.append(f"{p.relative_to(out)}: {oct(mode)}")
    assert not wrong, wrong

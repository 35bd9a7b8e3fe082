"""The command lines: ``--resolution`` as documented, defaults from CompileConfig, exit codes (2 and one line
for bad input only, 1 with the traceback for an internal error), one writer per output directory, nothing
left behind on bad input. Runs stop after the ``load`` stage (a few seconds each)."""

from __future__ import annotations

import dataclasses
import traceback
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from helpers.lock_holder import holding_lock, kill

from adatsq.compiler import pipeline
from adatsq.compiler.cli import main
from adatsq.compiler.output_dir import OutputDir
from adatsq.compiler.settings import METRICS, STAGE_NAMES, CompileConfig
from adatsq.core.errors import CompileError
from adatsq.core.lock import DirectoryLock, lock_path

LOAD = ["--until", "load", "--steps", "4"]


def _parsed(*args: str) -> dict:
    with main.make_context("adatsq-compile", list(args)) as ctx:
        return ctx.params


def _invoke(main_: click.Command, *args: str) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(main_, list(args))
    exc = result.exception if not isinstance(result.exception, SystemExit) else None
    return result.exit_code, " ".join(result.output.split()), exc


# --- --resolution ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        (["--resolution", "128", "128"], (128, 128)),
        (["--resolution", "1024x1024"], (1024, 1024)),
        (["--resolution", "5", "64", "64"], (5, 64, 64)),
        (["--resolution", "5x64x64"], (5, 64, 64)),
        (["--resolution=96", "64"], (96, 64)),
    ],
)
def test_resolution_documented_forms(tokens: list[str], expected: tuple[int, ...]) -> None:
    # before and after the model argument, and followed by another option taking an integer
    for args in (["tiny-flux", *tokens, "--seed", "3"], [*tokens, "tiny-flux", "--seed", "3"]):
        params = _parsed(*args, "--target", "3.1", "-o", "d")
        assert params["resolution"] == expected
        assert params["model"] == "tiny-flux" and params["seed"] == 3 and params["out"] == "d"


def test_option_values_are_not_taken_as_resolution() -> None:
    params = _parsed("tiny-flux", "--target", "3.1", "-o", "128", "--resolution", "64", "64", "--steps", "4")
    assert params["out"] == "128" and params["resolution"] == (64, 64) and params["steps"] == 4
    assert _parsed("tiny-flux", "--target", "3.1", "-o", "d")["resolution"] is None


@pytest.mark.parametrize("value", [["12a"], ["128"], ["0", "64"], ["64x"], ["1", "2", "3", "4"]])
def test_bad_resolution_is_a_clear_usage_error(tmp_path: Path, value: list[str]) -> None:
    out = tmp_path / "out"
    code, output, _ = _invoke(main, "tiny-flux", "--target", "3.1", "-o", str(out), "--resolution", *value)
    assert code == 2, output
    assert "Invalid value for '--resolution'" in output
    assert "give HEIGHT WIDTH (Wan: FRAMES HEIGHT WIDTH) as positive integers" in output
    assert not out.exists()


def test_click_defaults_are_the_config_defaults() -> None:
    fields = {f.name: f for f in dataclasses.fields(CompileConfig)}
    options = {p.name: p for p in main.params if isinstance(p, click.Option)}
    shared = set(fields) & set(options)
    assert shared >= {
        "steps",
        "resolution",
        "calib_samples",
        "candidates",
        "clusters",
        "tau",
        "seed",
        "metric",
        "search_samples",
        "heldout_samples",
        "hessian_memory_gb",
    }
    for name in shared - {"target", "out"}:  # required on the command line
        assert options[name].default == fields[name].default, name
    assert tuple(options["metric"].type.choices) == METRICS
    assert tuple(options["until"].type.choices) == STAGE_NAMES


# --- exit codes -----------------------------------------------------------------------------------------------
def _failing_load(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def run(_ctx: object) -> None:
        raise exc

    stages = tuple(dataclasses.replace(s, run=run) if s.name == "load" else s for s in pipeline.STAGES)
    monkeypatch.setattr(pipeline, "STAGES", stages)


def test_internal_error_keeps_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_load(monkeypatch, ValueError("an internal bug"))
    code, output, exc = _invoke(main, "tiny-flux", "--target", "3.1", "-o", str(tmp_path / "out"), *LOAD)
    assert code == 1
    assert isinstance(exc, ValueError) and "error:" not in output  # not reported as bad input
    assert "in run" in "".join(traceback.format_exception(exc))  # raised where it happened
    assert (tmp_path / "out" / ".adatsq").is_dir()  # an internal error keeps what was written


def test_bad_input_from_the_pipeline_exit_2_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _failing_load(monkeypatch, CompileError("--steps 4 does not suit this model"))
    out = tmp_path / "new" / "out"
    code, output, exc = _invoke(main, "tiny-flux", "--target", "3.1", "-o", str(out), *LOAD)
    assert (code, output, exc) == (2, "error: --steps 4 does not suit this model", None)
    assert not (tmp_path / "new").exists()  # every folder this compile created is gone


def test_bad_input_after_a_finished_stage_keeps_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a stage has finished, bad input found later (say, in the build stage) is an interruption: what
    the finished stages wrote stays, so the fixed rerun resumes instead of starting over."""

    def run(_ctx: object) -> None:
        raise CompileError("the plugin library was not found")

    stages = tuple(dataclasses.replace(s, run=run) if s.name == "calibrate" else s for s in pipeline.STAGES)
    monkeypatch.setattr(pipeline, "STAGES", stages)
    out = tmp_path / "new" / "out"
    code, output, _ = _invoke(main, "tiny-flux", "--target", "3.1", "-o", str(out), "--until", "calibrate")
    assert code == 2 and output.endswith("error: the plugin library was not found")
    assert OutputDir(out).stage_key("load") is not None and (out / "compile_config.json").is_file()


def test_damaged_stage_record_reruns_every_stage(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _invoke(main, "tiny-flux", "--target", "3.1", "-o", str(out), *LOAD)[0] == 0
    (out / ".adatsq" / "stages.json").write_text('{"load": ')
    result = CliRunner().invoke(main, ["tiny-flux", "--target", "3.1", "-o", str(out), *LOAD])
    assert result.exit_code == 0, result.output
    assert "stages.json cannot be read" in result.output and "every stage runs again" in result.output
    assert OutputDir(out).stage_key("load") is not None  # recorded afresh


def test_empty_model_path_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    code, output, _ = _invoke(
        main, "tiny-flux", "--target", "3.1", "-o", str(out), "--model-path", str(tmp_path / "empty"), *LOAD
    )
    assert code == 2 and output.startswith("error: --model-path") and "no config.json" in output
    assert not out.exists()


# --- one writer per output directory --------------------------------------------------------------------------
def test_second_compile_into_a_locked_directory_fails_naming_the_pid(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with holding_lock(out) as holder:
        before = sorted(p.relative_to(out) for p in out.rglob("*"))
        code, output, _ = _invoke(main, "tiny-flux", "--target", "3.3", "-o", str(out), *LOAD)
        assert code == 2, output
        assert output == (
            f"error: output directory {out} is being written by another adatsq-compile (pid {holder.pid}); "
            f"wait for it to finish or use another -o"
        )
        assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_lock_taken_between_check_and_start_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two compiles started together: both pass the read-only check, only one gets the lock."""
    out = tmp_path / "out"
    with holding_lock(out) as holder:
        monkeypatch.setattr(OutputDir, "check", lambda self, model: None)
        code, output, _ = _invoke(main, "tiny-flux", "--target", "3.3", "-o", str(out), *LOAD)
        assert code == 2 and f"is being written by another adatsq-compile (pid {holder.pid})" in output
        assert not (out / "compile_config.json").exists()


def test_killed_holder_does_not_block_a_compile(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with holding_lock(out) as holder:
        kill(holder)
        code, output, _ = _invoke(main, "tiny-flux", "--target", "3.1", "-o", str(out), *LOAD)
        assert code == 0, output
    assert (out / "compile_config.json").is_file()
    with DirectoryLock(lock_path(out)):  # released at the end of the compile
        pass


# --- adatsq-run -----------------------------------------------------------------------------------------------
def test_run_refuses_a_directory_being_written(tmp_path: Path) -> None:
    from adatsq.runtime.cli import main as run_main

    out = tmp_path / "out"
    with holding_lock(out) as holder:
        code, output, _ = _invoke(run_main, str(out))
    assert code == 2
    assert output == (
        f"error: {out} is being written by adatsq-compile (pid {holder.pid}); "
        f"run it once that compile has finished"
    )
    assert sorted(p.name for p in out.rglob("*")) == [".adatsq", "lock"]  # nothing written


def test_run_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from adatsq.core.config import ConfigError
    from adatsq.runtime import cli as run_cli

    def runner(exc: BaseException) -> type:
        class Failing:
            def __init__(self, *_a: object, **_k: object) -> None:
                raise exc

        return Failing

    monkeypatch.setattr(run_cli, "EngineRunner", runner(ConfigError("schedule.json: bad key 'x'")))
    code, output, exc = _invoke(run_cli.main, str(tmp_path))
    assert (code, output, exc) == (2, "error: schedule.json: bad key 'x'", None)
    monkeypatch.setattr(run_cli, "EngineRunner", runner(ValueError("an internal bug")))
    code, output, exc = _invoke(run_cli.main, str(tmp_path))
    assert code == 1 and isinstance(exc, ValueError) and "error:" not in output

"""--method presets (issue 15's baselines that are this pipeline with other settings): rtn and quarot, and
uniform bits; every method at W8A8 stays within 2 % of full precision (tiny-flux, the CLI end to end)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from adatsq.compiler.cli import main
from adatsq.compiler.settings import METHOD_PRESETS, CompileConfig
from adatsq.core.errors import CompileError
from adatsq.core.models import family_of, get_spec, load_transformer, run_sampler
from adatsq.core.schedule import load_schedule
from adatsq.export.onnx_export import load_quantized_model
from adatsq.passes.quant_linear import quant_linears, set_activation_bits
from adatsq.passes.weight_store import load_weight_store

STEPS = 3


def _compile(out: Path, *args: str) -> CliRunner:
    base = [
        "tiny-flux",
        "-o",
        str(out),
        "--steps",
        str(STEPS),
        "--calib-samples",
        "1",
        "--heldout-samples",
        "1",
    ]
    result = CliRunner().invoke(main, [*base, "--device", "cpu", "--until", "quantize", *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_for_method_fills_the_preset_and_refuses_contradictions() -> None:
    c = CompileConfig.for_method("quarot", model="tiny-flux", target=4.0, out="x")
    assert (c.weights, c.alpha, c.rotation, c.uniform_bits, c.method) == (
        "gptq",
        "uniform",
        True,
        True,
        "quarot",
    )
    assert CompileConfig.from_dict(c.to_dict()) == c
    with pytest.raises(
        CompileError, match="--method rtn sets rotation = False; drop the rotation = True given"
    ):
        CompileConfig.for_method("rtn", model="tiny-flux", target=4.0, out="x", rotation=True)
    with pytest.raises(CompileError, match="--method rtn sets weights = 'rtn'"):
        CompileConfig(model="tiny-flux", target=4.0, out="x", method="rtn")  # the preset not filled in
    assert set(METHOD_PRESETS) >= {"adatsq", "rtn", "quarot"}


def test_cli_rtn_preset(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _compile(out, "--target", "3.1", "--method", "rtn")
    assert result.exit_code == 0, result.output
    schedule = load_schedule(out / "schedule.json")
    assert schedule.configs == (tuple(3 for _ in schedule.act_layers),)  # uniform: the largest width ≤ 3.1
    assert schedule.search["method"] == "rtn" and schedule.search["weights"] == "rtn"
    _, layers, _ = load_weight_store(out / "weights.safetensors")
    assert not any(rec["rotate"] for rec in layers.values())
    saved = json.loads((out / "compile_config.json").read_text())
    assert (saved["method"], saved["weights"], saved["rotation"], saved["uniform_bits"]) == (
        "rtn",
        "rtn",
        False,
        True,
    )


def test_cli_refuses_an_option_against_the_preset(tmp_path: Path) -> None:
    result = _compile(tmp_path / "out", "--target", "3.1", "--method", "rtn", "--rotation")
    assert result.exit_code == 2 and "--method rtn sets rotation = False" in result.output


@pytest.mark.parametrize("method", ["adatsq", "rtn", "quarot", "smoothquant", "svdquant", "vidit-q"])
def test_every_method_at_w8a8_is_within_two_percent_of_fp(tmp_path: Path, method: str) -> None:
    out = tmp_path / "out"
    result = _compile(out, "--target", "8", "--weight-bits", "8", "--method", method)
    assert result.exit_code == 0, result.output
    schedule = load_schedule(out / "schedule.json")
    assert set(schedule.weight_bits.values()) == {8}
    spec = get_spec("tiny-flux")
    fam = family_of(spec)
    fp = load_transformer(spec)
    q = load_quantized_model(out)
    modules = quant_linears(q)
    g = torch.Generator().manual_seed(123)
    cond = fam.synthetic_conditioning(spec, fp, 2, g)
    noise = fam.sample_noise(spec, fp, spec.resolution, 2, g)
    with torch.no_grad():
        ref = run_sampler(fam, spec, fp, noise, cond, STEPS)
        got = run_sampler(
            fam,
            spec,
            q,
            noise,
            cond,
            STEPS,
            before_step=lambda i: set_activation_bits(q, schedule.bits_at(i), modules),
        )
    err = float((got - ref).pow(2).sum() / ref.pow(2).sum())
    assert err < 0.02**2, f"{method} W8A8: relative squared error {err:.2e}"

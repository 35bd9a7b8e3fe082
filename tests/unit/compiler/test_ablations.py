"""The method's ablations as compile options (the quality table, BENCHMARKS.md): --weights rtn, --alpha
uniform, --weight-scale mse, --weight-group channel, --no-rotation, --static-schedule, each reaching the stage
that uses it, on tiny-flux through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import adatsq.compiler.stages.quantize as quantize_stage
from adatsq.calib.gptq import fisher_alpha, uniform_alpha
from adatsq.compiler.cli import main
from adatsq.compiler.context import CompileContext
from adatsq.compiler.settings import CompileConfig
from adatsq.core.errors import CompileError
from adatsq.core.schedule import load_schedule
from adatsq.passes.quant_linear import block_buffer, rotated_weight
from adatsq.passes.weight_store import load_weight_store
from adatsq.plugins.formats import format_for_bits
from adatsq.plugins.reference import quantize_weight_rtn

BASE = [
    "--target",
    "3.5",
    "--steps",
    "3",
    "--calib-samples",
    "1",
    "--heldout-samples",
    "1",
    "--device",
    "cpu",
]


def _compile(out: Path, *extra: str) -> None:
    result = CliRunner().invoke(main, ["tiny-flux", "-o", str(out), *BASE, "--until", "quantize", *extra])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output


def _ctx(out: Path) -> CompileContext:
    cfg = json.loads((out / "compile_config.json").read_text())
    return CompileContext(CompileConfig.from_dict(cfg))


def test_rtn_weights_without_rotation_and_mse_scales(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _compile(out, "--weights", "rtn", "--no-rotation", "--weight-scale", "mse")
    tensors, layers, _ = load_weight_store(out / "weights.safetensors")
    assert layers and not any(rec["rotate"] for rec in layers.values())  # no layer rotated
    model = dict(_ctx(out).model.named_modules())
    for name, rec in layers.items():
        w = model[name].weight.detach().float()
        codes, scale = quantize_weight_rtn(w, rec["w_bits"], rec["group_size"], method="mse")
        stored = format_for_bits(rec["w_bits"]).unpack(tensors[f"{name}.w_packed"], rec["in_features"])
        assert torch.equal(stored, codes) and torch.equal(tensors[f"{name}.w_scale"], scale), name
    record = load_schedule(out / "schedule.json").search
    assert (record["weights"], record["rotation"], record["weight_scale"]) == ("rtn", False, "mse")


def test_default_compile_rotates_and_runs_gptq(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _compile(out)
    tensors, layers, _ = load_weight_store(out / "weights.safetensors")
    rotated = [n for n, rec in layers.items() if rec["rotate"]]
    assert rotated  # the activation-quantized layers of supported widths
    assert any(len(layers[n]["blocks"]) == 2 for n in rotated)  # the single blocks' proj_out: two blocks
    model = dict(_ctx(out).model.named_modules())
    differs = 0
    for name in rotated:
        rec = layers[name]
        blocks = tuple(rec["blocks"])
        w_rot = rotated_weight(model[name].weight, blocks).float()
        codes, _ = quantize_weight_rtn(w_rot, rec["w_bits"], rec["group_size"])
        fmt = format_for_bits(rec["w_bits"])
        packed = [tensors[f"{name}.w_packed" + (f"_{i}" if i else "")] for i in range(len(blocks))]
        stored = torch.cat([fmt.unpack(p, w) for p, w in zip(packed, blocks, strict=True)], dim=1)
        differs += int(not torch.equal(stored, codes))
    assert differs > 0  # GPTQ moved codes off round-to-nearest


@pytest.mark.parametrize("weights", ["rtn", "gptq"])
def test_channel_weight_scales(tmp_path: Path, weights: str) -> None:
    """--weight-group channel: one scale per output channel, stored repeated over the groups (contract 1's
    layout); with RTN the codes are round-to-nearest on that one scale per row, with GPTQ they are GPTQ's on
    it (off round-to-nearest somewhere). The search's RTN copy uses the same scales."""
    out = tmp_path / "out"
    _compile(out, "--weights", weights, "--weight-group", "channel")
    tensors, layers, _ = load_weight_store(out / "weights.safetensors")
    model = dict(_ctx(out).model.named_modules())
    differs = 0
    for name, rec in layers.items():
        blocks = tuple(rec["blocks"]) if rec["rotate"] else None
        fmt = format_for_bits(rec["w_bits"])
        widths = blocks or (rec["in_features"],)
        scale = torch.cat(
            [tensors[f"{name}.{block_buffer('w_scale', i)}"] for i in range(len(widths))], dim=1
        )
        assert torch.equal(scale, scale[:, :1].expand_as(scale)), name  # one scale per row, G-grouped layout
        stored = torch.cat(
            [fmt.unpack(tensors[f"{name}.{block_buffer('w_packed', i)}"], w) for i, w in enumerate(widths)],
            dim=1,
        )
        w = model[name].weight.detach()
        w_rot = (rotated_weight(w, blocks) if blocks else w.double()).float()
        k = w_rot.shape[1]
        codes, ch_scale = quantize_weight_rtn(w_rot, rec["w_bits"], k)
        if weights == "rtn" and blocks is None:
            assert torch.equal(stored, codes), name
            assert torch.equal(scale, ch_scale.expand_as(scale)), name
        differs += int(not torch.equal(stored, codes))
    assert layers
    if weights == "gptq":
        assert differs > 0
    record = load_schedule(out / "schedule.json").search
    assert record["weight_group"] == "channel"


def test_pow2_weight_scales(tmp_path: Path) -> None:
    """--weight-group pow2: every stored group scale is its row's reference (the scale over all of K) times
    an integer power of two (plugins/reference.pow2_ladder_scale), per op of a rotation-blocked layer."""
    out = tmp_path / "out"
    _compile(out, "--weight-group", "pow2")
    tensors, layers, _ = load_weight_store(out / "weights.safetensors")
    assert layers
    for name, rec in layers.items():
        n_ops = len(rec["blocks"]) if rec["rotate"] else 1
        scale = torch.cat([tensors[f"{name}.{block_buffer('w_scale', i)}"] for i in range(n_ops)], dim=1)
        ratio = torch.log2(scale.double() / scale.double().amax(dim=1, keepdim=True))
        assert torch.equal(ratio, ratio.round()), name  # the row's largest step is 2^e·ref too
    assert load_schedule(out / "schedule.json").search["weight_group"] == "pow2"


def test_uniform_alpha_reaches_the_hessians(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[torch.Tensor] = []
    real = quantize_stage._accumulate

    def spy(ctx, chunk, rotated, alpha, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(alpha)
        return real(ctx, chunk, rotated, alpha, *args, **kwargs)

    monkeypatch.setattr(quantize_stage, "_accumulate", spy)
    out = tmp_path / "out"
    _compile(out, "--alpha", "uniform")
    fisher = _ctx(out).calibration.fisher
    assert seen and all(torch.equal(a, uniform_alpha(fisher)) for a in seen)
    assert not torch.allclose(fisher_alpha(fisher, 1.0), uniform_alpha(fisher))  # it is a different weighting


def test_static_schedule_uses_one_configuration(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _compile(out, "--static-schedule")
    schedule = load_schedule(out / "schedule.json")
    assert len(schedule.configs) == 1 and set(schedule.step_configs) == {0}
    assert schedule.achieved_bits <= 3.5 + 1e-9
    assert schedule.search["static_schedule"] is True
    # the pool held more than the all-minimum configuration: a static schedule above 3 bits was possible
    assert any(abs(p.average_bits - 3.0) > 1e-9 for p in schedule.pareto)


def test_uniform_alpha_check() -> None:
    a = uniform_alpha(torch.rand(5, 7))
    assert a.shape == (5, 7) and torch.allclose(a.sum(0), torch.ones(7, dtype=a.dtype))
    with pytest.raises(ValueError, match="T×L"):
        uniform_alpha(torch.rand(5))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"weights": "awq"}, "--weights must be one of"),
        ({"alpha": "x"}, "--alpha must be one of"),
        ({"weight_scale": "minmax"}, "--weight-scale must be one of"),
        ({"weight_group": "block"}, "--weight-group must be one of"),
        ({"weight_group": "channel", "group_alloc": True}, "fixes the weight scales. granularity"),
        ({"weight_group": "channel", "dsq": True}, "fixes the weight scales. granularity"),
        ({"static_schedule": True, "max_engines": 2}, "drop --max-engines"),
        ({"weights": "rtn", "alpha": "uniform"}, "drop --alpha"),
    ],
)
def test_bad_ablation_options_are_named(kw: dict, message: str) -> None:
    with pytest.raises(CompileError, match=message):
        CompileConfig(model="tiny-flux", target=3.1, out="x", **kw)

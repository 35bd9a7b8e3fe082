"""--method presets (issue 15's baselines that are this pipeline with other settings): rtn and quarot, and
uniform bits; every method at W8A8 stays within 2 % of full precision (tiny-flux, the CLI end to end); what
q-dit, ptq4dit, clq and D²Quant's --dsq/--dac put into the weight store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers.w8a8 import w8a8_error

from adatsq.calib.obs import obs_block, obs_blocks
from adatsq.compiler.cli import main
from adatsq.compiler.settings import METHOD_PRESETS, CompileConfig
from adatsq.core.errors import CompileError
from adatsq.core.models import get_spec, load_transformer
from adatsq.core.schedule import load_schedule
from adatsq.export.onnx_export import load_quantized_model
from adatsq.passes.quant_linear import quant_linears
from adatsq.passes.weight_store import load_weight_store
from adatsq.plugins.hadamard import rotate_blocks
from adatsq.plugins.reference import dequantize_weight

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
    # one schedule within the target: the end-to-end metric has nothing to pick, so it is not sampled
    assert [p.selected for p in schedule.pareto] == [True] and schedule.pareto[0].metric is None
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


# AdaTSQ with D²Quant's --dsq --dac: test_cli_dsq_and_dac_on_adatsq_at_w8a8
@pytest.mark.parametrize(
    "method", ["adatsq", "rtn", "quarot", "smoothquant", "svdquant", "vidit-q", "q-dit", "ptq4dit", "clq"]
)
def test_every_method_at_w8a8_is_within_two_percent_of_fp(tmp_path: Path, method: str) -> None:
    out = tmp_path / "out"
    result = _compile(out, "--target", "8", "--weight-bits", "8", "--method", method)
    assert result.exit_code == 0, result.output
    err = w8a8_error(out, STEPS)
    assert err < 0.02**2, f"{method} W8A8: relative squared error {err:.2e}"


def test_cli_q_dit_stores_the_allocated_group_sizes(tmp_path: Path) -> None:
    """--method q-dit: each layer's G from the allocation (cache/group_sizes.json) is the stored one, the
    weight-scale count stays within the model's G everywhere, and some layer uses another G than the model's."""
    out = tmp_path / "out"
    result = _compile(out, "--target", "4", "--method", "q-dit")
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "compile_config.json").read_text())
    assert (saved["group_alloc"], saved["rotation"], saved["weights"], saved["uniform_bits"]) == (
        True,
        False,
        "gptq",
        True,
    )
    chosen = json.loads((out / "cache" / "group_sizes.json").read_text())
    _, layers, _ = load_weight_store(out / "weights.safetensors")
    assert {n: rec["group_size"] for n, rec in layers.items()} == {n: v["group"] for n, v in chosen.items()}
    g = get_spec("tiny-flux").group_size
    assert {rec["group_size"] for rec in layers.values()} - {g}  # the allocation moved some layer
    scales = sum(rec["out_features"] * rec["in_features"] // rec["group_size"] for rec in layers.values())
    uniform = sum(
        rec["out_features"]
        * (rec["in_features"] // (g if rec["in_features"] % g == 0 else rec["in_features"]))
        for rec in layers.values()
    )
    assert scales <= uniform
    for n, v in chosen.items():  # the chosen G has the least error among those the budget allowed
        assert v["errors"][str(v["group"])] == min(v["errors"].values()) or v["group"] >= g, n
    q = quant_linears(load_quantized_model(out))
    assert all(q[n].group_size == rec["group_size"] for n, rec in layers.items())


def test_cli_ptq4dit_smooths_with_the_spearman_weighted_salience(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _compile(out, "--target", "4", "--method", "ptq4dit")
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "compile_config.json").read_text())
    assert (saved["salience"], saved["smoothing"], saved["smooth_alpha"], saved["rotation"]) == (
        "ssc",
        True,
        0.5,
        False,
    )
    schedule = load_schedule(out / "schedule.json")
    q = quant_linears(load_quantized_model(out))
    assert {n for n, m in q.items() if m.smooth_inv is not None} == set(schedule.act_layers)
    other = tmp_path / "sq"  # SmoothQuant's maxima over all tokens give other scales than SSC's weighting
    assert _compile(other, "--target", "4", "--method", "smoothquant").exit_code == 0
    sq = quant_linears(load_quantized_model(other))
    assert any(not torch.equal(q[n].smooth_inv, sq[n].smooth_inv) for n in schedule.act_layers)


def test_cli_dsq_and_dac_on_adatsq_at_w8a8(tmp_path: Path) -> None:
    """--dsq: only down-projection-like layers get a smooth_inv Mul (η), and only where it lowered the
    layer's H-weighted GPTQ error (cache/gptq_errors.json says which); --dac: the biases of the layers with
    corrected channels differ from the model's, the others' do not; at W8A8 within 2 % of full precision."""
    from adatsq.calib.d2quant import DOWN_PROJECTION

    out = tmp_path / "d2"
    assert _compile(out, "--target", "8", "--weight-bits", "8", "--dsq", "--dac").exit_code == 0
    q = quant_linears(load_quantized_model(out))
    fp = dict(load_transformer(get_spec("tiny-flux")).named_modules())
    errors = json.loads((out / "cache" / "gptq_errors.json").read_text())
    with_eta = {n for n, m in q.items() if m.smooth_inv is not None}
    assert with_eta and with_eta == {n for n, e in errors.items() if e.get("dsq")}
    assert all(DOWN_PROJECTION.fullmatch(n) for n in with_eta)
    moved = {n for n, m in q.items() if not torch.equal(m.bias, fp[n].bias.detach().float())}
    assert moved and moved == {n for n, e in errors.items() if e["dac_channels"] > 0}
    err = w8a8_error(out, STEPS)
    assert err < 0.02**2, f"adatsq --dsq --dac W8A8: relative squared error {err:.2e}"


def test_cli_clq_stores_g_searches_clips_and_calibrates_across_blocks(tmp_path: Path) -> None:
    """--method clq: every activation-quantized layer holds G = P·diag(R_b, …) as a permutation and its rotation
    blocks (K indices in the weight store, no K×K matrix), the codes are of W·G, every layer
    records its clip ratio, and cross-block calibration reaches the quantize stage: the first chunk (the first
    layer in module order sees the float model either way) keeps its codes without --cbc, later blocks' codes
    change."""
    out = tmp_path / "out"
    result = _compile(out, "--target", "4", "--method", "clq")
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "compile_config.json").read_text())
    assert (saved["obs"], saved["cbc"], saved["clip_search"], saved["rotation"], saved["weights"]) == (
        True,
        True,
        True,
        False,
        "rtn",
    )
    schedule = load_schedule(out / "schedule.json")
    q = quant_linears(load_quantized_model(out))
    assert {n for n, m in q.items() if m.obs_perm is not None} == set(schedule.act_layers)
    stored, _, _ = load_weight_store(out / "weights.safetensors")
    assert not [k for k in stored if k.endswith(".obs")]  # no dense G anywhere
    fp = dict(load_transformer(get_spec("tiny-flux")).named_modules())
    for n in schedule.act_layers:
        m = q[n]
        k = m.in_features
        assert m.rotate_input and m.blocks == obs_blocks(k, obs_block(k, m.group_size, 2))
        assert stored[f"{n}.obs_perm"].shape == (k,)
        assert torch.equal(torch.sort(m.obs_perm.long()).values, torch.arange(k))
        # Ŵ ≈ W·P·diag(R_b, …): the dequantized codes against the float weight taken to the op's domain
        w = fp[n].weight.detach().double()
        want = rotate_blocks(w[:, m.obs_perm.long()], m.blocks)
        got = dequantize_weight(m.codes, m.scales).double()
        assert float((got - want).pow(2).sum() / want.pow(2).sum()) < 0.02, n
    errors = json.loads((out / "cache" / "gptq_errors.json").read_text())
    assert set(errors) == set(q) and all("clip_ratio" in e for e in errors.values())
    assert any(e["clip_ratio"] < 1.0 for e in errors.values())
    plain = tmp_path / "no-cbc"
    same_without_cbc = ["--obs", "--clip-search", "--weights", "rtn", "--no-rotation", "--uniform-bits"]
    assert _compile(plain, "--target", "4", *same_without_cbc).exit_code == 0
    a, _, _ = load_weight_store(out / "weights.safetensors")
    b, _, _ = load_weight_store(plain / "weights.safetensors")
    order = [n for n, _ in load_quantized_model(out).named_modules() if n in q]
    first, later = order[0], [n for n in order if n.startswith("single_transformer_blocks.")]
    assert torch.equal(a[f"{first}.w_packed"], b[f"{first}.w_packed"])
    assert any(not torch.equal(a[f"{n}.w_packed"], b[f"{n}.w_packed"]) for n in later)


def test_cli_lowrank_branch_under_adatsq(tmp_path: Path) -> None:
    """--lowrank R on the default method (SVDQuant's branch under AdaTSQ's schedule, the quality table's
    ``adatsq+lowrank`` row): every activation-quantized layer keeps a rank-R branch next to its rotated GPTQ
    residual, weight-only layers none; the residual's H-weighted GPTQ error (cache/gptq_errors.json) is below
    the same layers' error without the branch, and at W8A8 the model stays within 2 % of full precision."""
    rank = 8
    plain, branched = tmp_path / "plain", tmp_path / "lowrank"
    assert _compile(plain, "--target", "4").exit_code == 0
    assert _compile(branched, "--target", "4", "--lowrank", str(rank)).exit_code == 0
    schedule = load_schedule(branched / "schedule.json")
    q = quant_linears(load_quantized_model(branched))
    with_branch = {n for n, m in q.items() if m.lowrank_down is not None}
    assert with_branch == set(schedule.act_layers)
    for n in with_branch:
        m = q[n]
        assert m.rotate_input and m.lowrank_down.shape[1] == m.lowrank_up.shape[1] == rank, n
    before = json.loads((plain / "cache" / "gptq_errors.json").read_text())
    after = json.loads((branched / "cache" / "gptq_errors.json").read_text())
    lower = sum(after[n]["gptq"] < before[n]["gptq"] for n in with_branch)
    total_before = sum(before[n]["gptq"] for n in with_branch)
    total_after = sum(after[n]["gptq"] for n in with_branch)
    print(
        f"W4 GPTQ error of the residual: {total_before:.4e} → {total_after:.4e} ({lower}/{len(with_branch)} lower)"
    )
    assert total_after < 0.95 * total_before and lower >= 0.8 * len(with_branch)
    w8 = tmp_path / "w8"
    assert _compile(w8, "--target", "8", "--weight-bits", "8", "--lowrank", str(rank)).exit_code == 0
    err = w8a8_error(w8, STEPS)
    assert err < 0.02**2, f"adatsq --lowrank {rank} W8A8: relative squared error {err:.2e}"

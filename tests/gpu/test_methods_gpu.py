"""Every --method preset and every ablation row of the quality table compiles on the GPU (`--device cuda`,
through quantize, tiny-flux) and its W8A8 result, sampled on the CPU, stays within 2 % of full precision, as on the CPU
(tests/unit/compiler/test_methods.py); and the two calibration helpers that once mixed host and device
tensors (Q-DiT's group errors from tokens kept on the host, PTQ4DiT's Spearman weights) give on the GPU
what they give on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers.w8a8 import w8a8_error

from adatsq.calib.group_alloc import layer_group_errors
from adatsq.calib.smoothing import ssc_salience
from adatsq.compiler.cli import main
from adatsq.compiler.settings import METHOD_PRESETS

pytestmark = pytest.mark.gpu

STEPS = 3
# the quality table's ablation rows (benchmarks/quality.py ROWS and COMBINATIONS) as compile options
ABLATIONS = {
    "static": ["--static-schedule"],
    "gptq-uniform": ["--alpha", "uniform"],
    "rtn-weights": ["--weights", "rtn"],
    "no-rotation": ["--no-rotation"],
    "mse-scales": ["--weight-scale", "mse"],
    "d2quant": ["--dsq", "--dac"],
    "lowrank": ["--lowrank", "4"],
}
CASES = {**{f"method:{m}": ["--method", m] for m in METHOD_PRESETS}, **ABLATIONS}


@pytest.mark.parametrize("case", list(CASES))
def test_every_method_and_ablation_compiles_on_the_gpu(tmp_path: Path, case: str) -> None:
    out = tmp_path / "out"
    args = [
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
    args += ["--device", "cuda", "--until", "quantize", "--target", "8", "--weight-bits", "8", *CASES[case]]
    result = CliRunner().invoke(main, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    err = w8a8_error(out, STEPS)
    assert err < 0.02**2, f"{case} W8A8 compiled on the GPU: relative squared error {err:.2e}"


def test_group_errors_from_host_tokens_equal_the_cpu_ones() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(256, 384, generator=g)
    x[:, :4] *= 12.0
    w = torch.randn(96, 384, generator=g)
    cpu = layer_group_errors(x, w, 4, 4, [32, 64, 128])
    gpu = layer_group_errors(x, w.cuda(), 4, 4, [32, 64, 128])  # tokens on the host, W on the device
    assert cpu.keys() == gpu.keys()
    for k in cpu:  # float64 products; a rare quantizer tie may flip between the devices' roundings
        assert gpu[k] == pytest.approx(cpu[k], rel=1e-3), k


def test_ssc_salience_on_the_gpu_equals_the_cpu() -> None:
    g = torch.Generator().manual_seed(5)
    amax = torch.rand(6, 64, generator=g, dtype=torch.float64)
    amax[2] = 0.0  # a step the calibration never ran
    w = torch.randn(32, 64, generator=g, dtype=torch.float64)
    cpu = ssc_salience(amax, w)
    gpu = ssc_salience(amax.cuda(), w.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-12, atol=0)

"""The runner's torch backend on the GPU dispatches every activation-quantized layer to the kernels.

Fixture: ``gpu_fixture/medium-flux`` (or ``$ADATSQ_GPU_FIXTURE``), a FluxTransformer2DModel of width 256
(2 heads × 128, FFN 1024, 1 + 1 blocks, random weights) compiled on the CPU with group 128 at 3.5 bits
(int3 weights, a ∈ {3, 4}), so every activation-quantized width is one the kernels take. Built with::

    adatsq-compile tiny-flux --model-path <save_pretrained folder> --target 3.5 --group-size 128 \
        --steps 4 --calib-samples 2 -o gpu_fixture/medium-flux --until export
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu

FIXTURE = Path(
    os.environ.get("ADATSQ_GPU_FIXTURE", Path(__file__).parents[2] / "gpu_fixture" / "medium-flux")
)


def test_runner_torch_backend_uses_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if not (FIXTURE / "schedule.json").exists():
        pytest.skip(f"no compiled GPU fixture at {FIXTURE}")
    pytest.importorskip("diffusers")
    from adatsq.plugins.kernels import api
    from adatsq.runtime.runner import EngineRunner

    calls = {"quantize": 0, "gemm": 0, "weight_only": 0, "fallback": 0}
    for name, key in (
        ("quantize_activations", "quantize"),
        ("qgemm", "gemm"),
        ("weight_only_gemv", "weight_only"),
        ("qlinear_reference_packed", "fallback"),
    ):
        real = getattr(api, name)

        def counted(*args, _real=real, _key=key, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls[_key] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(api, name, counted)

    gpu = EngineRunner(FIXTURE, backend="torch", device="cuda")
    s = gpu.schedule
    x_gpu = gpu.generate(seed=0, n=2)
    assert gpu.used_configs == list(s.step_configs)
    n_act = len(s.act_layers)
    print(f"kernel calls over {s.steps} steps × {n_act} activation-quantized layers: {calls}")
    assert (
        calls["quantize"] == calls["gemm"] == s.steps * n_act
    )  # every act layer, every step, on the kernels
    assert calls["weight_only"] > 0  # weight-only layers (a = 16): the GEMV kernel over packed weights
    assert calls["fallback"] == 0  # nothing falls back to the reference

    cpu = EngineRunner(FIXTURE, backend="torch", device="cpu")
    x_cpu = cpu.generate(seed=0, n=2)
    err = float((x_gpu - x_cpu).norm() / x_cpu.norm())
    print(f"final latent, torch backend GPU kernels vs CPU reference: rel err {err:.2e}")
    assert torch.isfinite(x_gpu).all()
    assert err <= 5e-3

"""The runner's torch backend on the GPU dispatches every activation-quantized layer to the kernels.

Fixture: ``gpu_fixture/medium-flux`` (or ``$ADATSQ_GPU_FIXTURE``), a FluxTransformer2DModel of width 256
(2 heads × 128, FFN 1024, 1 + 1 blocks, random weights) compiled on the CPU with group 128 at 3.5 bits
(int3 weights, a ∈ {3, 4}), so every activation-quantized width is one the kernels take. Built with::

    adatsq-compile tiny-flux --model-path <save_pretrained folder> --target 3.5 --group-size 128 \
        --steps 4 --calib-samples 2 -o gpu_fixture/medium-flux --until export

GPU vs CPU is checked teacher-forced, call by call, not on the free-running final latents alone: the kernels'
rotation sums in another order than torch's, so a code on a rounding tie may round the other way, and one
such flip moves every later step. Each GPU call is re-run with every activation-quantized layer's input and
kernel codes exposed, and the CPU reference (the torch backend on the CPU) on the SAME arguments must give the
same output, or differ by certified tie flips only (helpers.ties.certify_outputs). The free-running final
latents are compared within a few single-flip effects (helpers.ties.free_run_bound).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from helpers.gpu_fixture import FIXTURE, require_gpu_fixture
from helpers.runs import BackendReference, StepCall, record_backend_calls
from helpers.ties import certify_outputs, free_run_bound, rel

pytestmark = pytest.mark.gpu


@contextlib.contextmanager
def _kernel_codes(modules: dict[str, torch.nn.Module]) -> Iterator[dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Inside: layer → (input, the activation kernel's codes) of each module's first quantizer call."""
    from adatsq.plugins.kernels import api

    layers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    current: list[str | None] = [None]
    real = api.quantize_activations

    def traced(x2: torch.Tensor, a_bits: int, group: int, rotate: bool, fp8: bool) -> tuple:
        q, sx = real(x2, a_bits, group, rotate, fp8)
        if current[0] is not None and current[0] not in layers:
            layers[current[0]] = (x2.float().cpu().numpy(), q.float().cpu().numpy())
        return q, sx

    def pre(name: str):  # noqa: ANN202
        return lambda _m, _a: current.__setitem__(0, name)

    handles = [m.register_forward_pre_hook(pre(n)) for n, m in modules.items()]
    handles += [
        m.register_forward_hook(lambda _m, _a, _o: current.__setitem__(0, None)) for m in modules.values()
    ]
    api.quantize_activations = traced
    try:
        yield layers
    finally:
        api.quantize_activations = real
        for h in handles:
            h.remove()


def _gpu_call(gpu, call: StepCall) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:  # noqa: ANN001
    """The GPU backend's output of ``call`` again, with every activation-quantized layer's input and codes."""
    from adatsq.passes.quant_linear import quant_linears

    modules = {n: m for n, m in quant_linears(gpu.torch_model).items() if m.act_quantized}
    gpu.set_step(call.step)
    with _kernel_codes(modules) as layers:
        y = gpu.call(call.kwargs, call.args)
    return y.numpy(), layers


def test_runner_torch_backend_uses_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    require_gpu_fixture()
    from adatsq.passes.quant_linear import quant_linears
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

    # eager: a CUDA graph replays its kernels without calling Python, so only eager calls can be counted (the
    # graphed runner equals this eager one: tests/gpu/test_runner_graphs.py)
    # unfused (fuse_projections=False): one quantize + GEMM per layer, each layer's codes traced on its own
    gpu = EngineRunner(FIXTURE, backend="torch", device="cuda", graphs=False, fuse_projections=False)
    s = gpu.schedule
    recorded = record_backend_calls(gpu)
    x_gpu = gpu.generate(seed=0, n=2)
    assert gpu.used_configs == list(s.step_configs)
    assert [(c.step, c.config) for c in recorded] == list(enumerate(s.step_configs))
    n_act = len(s.act_layers)
    # one quantize + GEMM per rotation block: a split layer (Flux's single-block proj_out) makes one call per
    # block of diag(R_a, R_b)
    modules = quant_linears(gpu._torch_model)
    per_step = sum(len(modules[name].blocks) for name in s.act_layers)
    print(
        f"kernel calls over {s.steps} steps × {n_act} activation-quantized layers ({per_step} blocks): {calls}"
    )
    assert (
        calls["quantize"] == calls["gemm"] == s.steps * per_step
    )  # every act layer's every block, every step, on the kernels
    assert calls["weight_only"] > 0  # weight-only layers (a = 16): the GEMV kernel over packed weights
    assert calls["fallback"] == 0  # nothing falls back to the reference

    # teacher-forced: the CPU reference on each GPU call's own arguments, certified
    reference = BackendReference(FIXTURE)
    for call in list(recorded):  # the re-runs below are recorded too
        y, layers = _gpu_call(gpu, call)
        assert rel(y, call.output) <= 1e-5, "the GPU re-run is not the recorded call"
        cert = certify_outputs(
            y, reference.runner_for(call), reference.modules, lambda y=y, layers=layers: (y, layers),
            f"GPU step {call.step}", source="the traced GPU run",
        )  # fmt: skip
        flips = "; ".join(map(str, cert.flips)) or "none"
        print(f"step {call.step}: GPU vs CPU reference on the same inputs {cert.err:.1e}, tie flips: {flips}")

    cpu = EngineRunner(FIXTURE, backend="torch", device="cpu")
    x_cpu = cpu.generate(seed=0, n=2)
    err = float((x_gpu - x_cpu).norm() / x_cpu.norm())
    print(f"final latent, torch backend GPU kernels vs CPU reference: rel err {err:.2e}")
    assert torch.isfinite(x_gpu).all()
    assert err <= free_run_bound("tiny-flux")  # a medium Flux of the tiny-flux architecture

"""Fused attention projections on the GPU kernels: the runner's torch backend with ``fuse_projections=True``
(each attention's q/k/v one op; Flux's single blocks' q/k/v with proj_mlp) generates what the unfused one does,
with fewer activation-quantization launches.

Fixture: ``gpu_fixture/medium-flux`` (``make gpu-fixture``). Each column of a fused op is its member's: the
same quantized x, the same weight row; the FP8 path's per-group products of small integer codes are exact in
float32, so the two agree to the GEMM's group-promotion rounding at most (the bound below) and usually bit
for bit. The launches of the fused activation kernel are counted with torch.profiler.
"""

from __future__ import annotations

import pytest
import torch
from helpers.gpu_fixture import FIXTURE, require_gpu_fixture

pytestmark = pytest.mark.gpu


def _quantize_launches(fn) -> int:  # noqa: ANN001
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if "rotate_quant" in e.name and e.device_type.name == "CUDA")


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_fused_generation_equals_unfused(dtype: torch.dtype | None) -> None:
    require_gpu_fixture()
    from adatsq.passes.fuse_projections import FusedProjection
    from adatsq.runtime.runner import EngineRunner

    plain = EngineRunner(
        FIXTURE, backend="torch", device="cuda", graphs=False, dtype=dtype, fuse_projections=False
    )
    fused = EngineRunner(
        FIXTURE, backend="torch", device="cuda", graphs=False, dtype=dtype, fuse_projections=True
    )
    n_fused = sum(isinstance(m, FusedProjection) for m in fused.torch_model.modules())
    assert n_fused > 0
    a = plain.generate(seed=5)
    b = fused.generate(seed=5)
    err = float((b - a).norm() / a.norm())
    print(f"fused vs unfused final latents: {err:.1e} (bit-equal: {torch.equal(a, b)})")
    assert err <= (1e-6 if dtype is None else 1e-3), err
    launches_plain = _quantize_launches(lambda: plain.generate(seed=5))
    launches_fused = _quantize_launches(lambda: fused.generate(seed=5))
    print(f"activation quantize launches per generation: {launches_plain} unfused, {launches_fused} fused")
    assert launches_fused < launches_plain

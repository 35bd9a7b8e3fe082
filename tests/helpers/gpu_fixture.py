"""The compiled medium Flux the GPU runner tests share (``make gpu-fixture``, tests/gpu/make_fixture.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

#: ``gpu_fixture/medium-flux`` at the repository root, or ``$ADATSQ_GPU_FIXTURE``
FIXTURE = Path(
    os.environ.get("ADATSQ_GPU_FIXTURE", Path(__file__).parents[2] / "gpu_fixture" / "medium-flux")
)


def require_gpu_fixture() -> None:
    """Skip unless a CUDA GPU, the compiled fixture and diffusers are all there."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if not (FIXTURE / "schedule.json").exists():
        pytest.skip(f"no compiled GPU fixture at {FIXTURE}")
    pytest.importorskip("diffusers")
